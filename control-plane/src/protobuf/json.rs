//! Converts a decoded protobuf message into the JSON form of the same
//! object, as the Go types would marshal it (special apimachinery types,
//! omitted empty optionals).

use base64::Engine as _;
use serde_json::{Map, Number, Value};

use super::ProtobufError;
use super::descriptors::{Field, Kind, Label, Table};
use super::wire::{Reader, WireValue};

const TIME: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Time";
const MICRO_TIME: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.MicroTime";
const DURATION: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Duration";
const FIELDS_V1: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.FieldsV1";
const INT_OR_STRING: &str = "io.k8s.apimachinery.pkg.util.intstr.IntOrString";
const QUANTITY: &str = "io.k8s.apimachinery.pkg.api.resource.Quantity";
const RAW_EXTENSION: &str = "io.k8s.apimachinery.pkg.runtime.RawExtension";
const APIEXT: &str = "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.";

/// `metav1.Time{}` marshalled by older encoders: 0001-01-01T00:00:00Z.
const ZERO_TIME_SECONDS: i64 = -62_135_596_800;

/// Optional pointer fields whose zero value means something else than
/// unset (`replicas: 0`, `automountServiceAccountToken: false`...). The wire
/// cannot tell a Go pointer to zero from a non-pointer zero, which Go's JSON
/// would omit; other zero scalars are omitted unless required.
const MEANINGFUL_ZERO: &[&str] = &[
    "activeDeadlineSeconds",
    "allowPrivilegeEscalation",
    "automountServiceAccountToken",
    "backoffLimit",
    "backoffLimitPerIndex",
    "completions",
    "enableServiceLinks",
    "expirationSeconds",
    "failedJobsHistoryLimit",
    "fsGroup",
    "hostUsers",
    "maxFailedIndexes",
    "parallelism",
    "privileged",
    "progressDeadlineSeconds",
    "readOnlyRootFilesystem",
    "replicas",
    "revisionHistoryLimit",
    "runAsGroup",
    "runAsNonRoot",
    "runAsUser",
    "shareProcessNamespace",
    "startingDeadlineSeconds",
    "successfulJobsHistoryLimit",
    "suspend",
    "terminationGracePeriodSeconds",
    "ttlSecondsAfterFinished",
];

/// Nesting deeper than this is refused (recursive types such as
/// JSONSchemaProps could otherwise exhaust the stack).
const MAX_DEPTH: usize = 100;

fn decode_error(message: &str, reason: impl Into<String>) -> ProtobufError {
    ProtobufError::Decode {
        kind: message.rsplit('.').next().unwrap_or(message).to_owned(),
        reason: reason.into(),
    }
}

/// Converts the bytes of message `name` into JSON.
pub(crate) fn message_to_json(
    table: &Table,
    name: &str,
    bytes: &[u8],
) -> Result<Value, ProtobufError> {
    convert_message(table, name, bytes, 0)
}

fn convert_message(
    table: &Table,
    name: &str,
    bytes: &[u8],
    depth: usize,
) -> Result<Value, ProtobufError> {
    if depth > MAX_DEPTH {
        return Err(decode_error(name, "the message is nested too deeply"));
    }
    if let Some(special) = convert_special(table, name, bytes, depth)? {
        return Ok(special);
    }
    let message = table
        .messages
        .get(name)
        .ok_or_else(|| decode_error(name, "no descriptor for the message"))?;
    let mut out = Map::new();
    let mut reader = Reader::new(bytes);
    while let Some((tag, wire)) = reader.next_field()? {
        let Some(field) = message.fields.get(&tag) else {
            tracing::debug!(message = name, tag, "skipping unknown protobuf field");
            continue;
        };
        match field.label {
            Label::One if field.inline => {
                if let Value::Object(inner) = value(table, name, field, wire, depth)? {
                    out.extend(inner);
                }
            }
            Label::One => {
                out.insert(
                    field.json_name.clone(),
                    value(table, name, field, wire, depth)?,
                );
            }
            Label::Repeated => {
                let items = out
                    .entry(field.json_name.clone())
                    .or_insert_with(|| Value::Array(Vec::new()));
                if let Value::Array(items) = items {
                    push_repeated(table, name, field, wire, depth, items)?;
                }
            }
            Label::Map => {
                let entries = out
                    .entry(field.json_name.clone())
                    .or_insert_with(|| Value::Object(Map::new()));
                let WireValue::Bytes(entry) = wire else {
                    return Err(decode_error(
                        name,
                        format!("map field {} is not length-delimited", field.json_name),
                    ));
                };
                let (key, val) = map_entry(table, name, field, entry, depth)?;
                if let Value::Object(entries) = entries {
                    entries.insert(key, val);
                }
            }
        }
    }
    // Status fields are never set by clients: no pointer zero to keep there.
    let in_status = name.ends_with("Status");
    out.retain(|key, v| {
        let Some(field) = message.fields.values().find(|f| f.json_name == *key) else {
            return true;
        };
        if v.is_null() {
            return false;
        }
        // Embedded messages are Go pointers or structs: present means set
        // (`maxUnavailable: 0`, `strategy: {}`).
        let scalar = !matches!(field.kind, Kind::Message(_));
        field.label != Label::One
            || !scalar
            || field.required
            || !is_zero(v)
            || (!in_status && MEANINGFUL_ZERO.contains(&key.as_str()))
    });
    Ok(Value::Object(out))
}

/// The JSON zero values Go's `omitempty` drops, and `null`.
fn is_zero(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::String(s) => s.is_empty(),
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::Array(_) | Value::Object(_) => false,
    }
}

fn push_repeated(
    table: &Table,
    message: &str,
    field: &Field,
    wire: WireValue<'_>,
    depth: usize,
    items: &mut Vec<Value>,
) -> Result<(), ProtobufError> {
    match (&field.kind, wire) {
        (Kind::Int32 | Kind::Int64 | Kind::Bool, WireValue::Bytes(packed)) => {
            let mut reader = Reader::new(packed);
            while !reader_done(&reader, packed) {
                let v = reader.varint()?;
                items.push(scalar(message, field, WireValue::Varint(v))?);
            }
        }
        (Kind::Double, WireValue::Bytes(packed)) => {
            for chunk in packed.chunks(8) {
                let raw: [u8; 8] = chunk
                    .try_into()
                    .map_err(|_| decode_error(message, "truncated packed double"))?;
                items.push(scalar(
                    message,
                    field,
                    WireValue::Fixed64(u64::from_le_bytes(raw)),
                )?);
            }
        }
        _ => items.push(value(table, message, field, wire, depth)?),
    }
    Ok(())
}

fn reader_done(reader: &Reader<'_>, buf: &[u8]) -> bool {
    reader.position() >= buf.len()
}

fn map_entry(
    table: &Table,
    message: &str,
    field: &Field,
    entry: &[u8],
    depth: usize,
) -> Result<(String, Value), ProtobufError> {
    let mut key = String::new();
    let mut val = None;
    let mut reader = Reader::new(entry);
    while let Some((tag, wire)) = reader.next_field()? {
        match (tag, wire) {
            (1, WireValue::Bytes(k)) => {
                key = String::from_utf8(k.to_vec())
                    .map_err(|_| decode_error(message, "map key is not UTF-8"))?;
            }
            (2, wire) => val = Some(value(table, message, field, wire, depth)?),
            _ => {}
        }
    }
    // An absent value is the zero value of its kind.
    let val = match val {
        Some(v) => v,
        None => match &field.kind {
            Kind::String | Kind::Bytes => Value::String(String::new()),
            Kind::Message(name) => convert_message(table, name, &[], depth + 1)?,
            Kind::Bool => Value::Bool(false),
            _ => Value::Number(0.into()),
        },
    };
    Ok((key, val))
}

/// One value of a field: a scalar or an embedded message.
fn value(
    table: &Table,
    message: &str,
    field: &Field,
    wire: WireValue<'_>,
    depth: usize,
) -> Result<Value, ProtobufError> {
    match (&field.kind, wire) {
        (Kind::Message(name), WireValue::Bytes(bytes)) => {
            convert_message(table, name, bytes, depth + 1)
        }
        (Kind::Message(_), _) => Err(decode_error(
            message,
            format!("field {} is not length-delimited", field.json_name),
        )),
        _ => scalar(message, field, wire),
    }
}

fn scalar(message: &str, field: &Field, wire: WireValue<'_>) -> Result<Value, ProtobufError> {
    let wrong = || {
        decode_error(
            message,
            format!("field {} has the wrong wire type", field.json_name),
        )
    };
    Ok(match (&field.kind, wire) {
        (Kind::String, WireValue::Bytes(b)) => {
            Value::String(String::from_utf8(b.to_vec()).map_err(|_| {
                decode_error(message, format!("field {} is not UTF-8", field.json_name))
            })?)
        }
        (Kind::Bytes, WireValue::Bytes(b)) => {
            Value::String(base64::engine::general_purpose::STANDARD.encode(b))
        }
        // int32 is sign-extended to 64 bits on the wire: truncation is the decoding.
        (Kind::Int32, WireValue::Varint(v)) => Value::Number((v as i32).into()),
        (Kind::Int64, WireValue::Varint(v)) => Value::Number((v as i64).into()),
        (Kind::Bool, WireValue::Varint(v)) => Value::Bool(v != 0),
        (Kind::Double, WireValue::Fixed64(v)) => {
            Number::from_f64(f64::from_bits(v)).map_or(Value::Null, Value::Number)
        }
        _ => return Err(wrong()),
    })
}

/// The scalar fields of a small message, by number (for the special types).
fn fields(bytes: &[u8]) -> Result<Vec<(u32, WireValue<'_>)>, ProtobufError> {
    let mut out = Vec::new();
    let mut reader = Reader::new(bytes);
    while let Some(field) = reader.next_field()? {
        out.push(field);
    }
    Ok(out)
}

fn last_varint(fields: &[(u32, WireValue<'_>)], tag: u32) -> Option<u64> {
    fields.iter().rev().find_map(|(t, w)| match (t, w) {
        (t, WireValue::Varint(v)) if *t == tag => Some(*v),
        _ => None,
    })
}

fn last_bytes<'a>(fields: &[(u32, WireValue<'a>)], tag: u32) -> Option<&'a [u8]> {
    fields.iter().rev().find_map(|(t, w)| match (t, w) {
        (t, WireValue::Bytes(b)) if *t == tag => Some(*b),
        _ => None,
    })
}

fn utf8(name: &str, b: &[u8]) -> Result<String, ProtobufError> {
    String::from_utf8(b.to_vec()).map_err(|_| decode_error(name, "string is not UTF-8"))
}

/// The types whose JSON form is not their message structure.
fn convert_special(
    table: &Table,
    name: &str,
    bytes: &[u8],
    depth: usize,
) -> Result<Option<Value>, ProtobufError> {
    let f = || fields(bytes);
    let value = match name {
        TIME | MICRO_TIME => {
            let f = f()?;
            let seconds = last_varint(&f, 1).map(|v| v as i64);
            let nanos = last_varint(&f, 2).map_or(0, |v| v as i32);
            match seconds {
                // Go encodes the zero time as an empty message; it marshals to null.
                None if nanos == 0 => Value::Null,
                Some(ZERO_TIME_SECONDS) if nanos == 0 => Value::Null,
                seconds => {
                    let seconds = seconds.unwrap_or(0);
                    // metav1.Time keeps whole seconds only, as upstream's decoder.
                    let nanos = if name == TIME {
                        0
                    } else {
                        u32::try_from(nanos).unwrap_or(0)
                    };
                    let time = chrono::DateTime::from_timestamp(seconds, nanos)
                        .ok_or_else(|| decode_error(name, "time out of range"))?;
                    let format = if name == TIME {
                        "%Y-%m-%dT%H:%M:%SZ"
                    } else {
                        "%Y-%m-%dT%H:%M:%S%.6fZ"
                    };
                    Value::String(time.format(format).to_string())
                }
            }
        }
        INT_OR_STRING => {
            let f = f()?;
            if last_varint(&f, 1) == Some(1) {
                Value::String(utf8(name, last_bytes(&f, 3).unwrap_or_default())?)
            } else {
                Value::Number((last_varint(&f, 2).unwrap_or(0) as i32).into())
            }
        }
        QUANTITY => Value::String(utf8(name, last_bytes(&f()?, 1).unwrap_or_default())?),
        DURATION => Value::String(go_duration(last_varint(&f()?, 1).unwrap_or(0) as i64)),
        RAW_EXTENSION | FIELDS_V1 => embedded_json(name, last_bytes(&f()?, 1))?,
        n if n == format!("{APIEXT}JSON") => embedded_json(name, last_bytes(&f()?, 1))?,
        n if n.ends_with(".ExtraValue") || n == "io.k8s.apimachinery.pkg.apis.meta.v1.Verbs" => {
            let items = f()?
                .into_iter()
                .filter_map(|(t, w)| match (t, w) {
                    (1, WireValue::Bytes(b)) => Some(utf8(name, b).map(Value::String)),
                    _ => None,
                })
                .collect::<Result<Vec<_>, _>>()?;
            Value::Array(items)
        }
        n if n.starts_with(APIEXT) && n.to_lowercase().contains(".jsonschemapropsor") => {
            json_schema_props_or(table, name, bytes, depth)?
        }
        _ => return Ok(None),
    };
    Ok(Some(value))
}

fn embedded_json(name: &str, raw: Option<&[u8]>) -> Result<Value, ProtobufError> {
    match raw {
        None | Some([]) => Ok(Value::Null),
        Some(raw) => serde_json::from_slice(raw)
            .map_err(|e| decode_error(name, format!("embedded object is not JSON: {e}"))),
    }
}

/// JSONSchemaPropsOrArray / OrBool / OrStringArray: one of two forms.
fn json_schema_props_or(
    table: &Table,
    name: &str,
    bytes: &[u8],
    depth: usize,
) -> Result<Value, ProtobufError> {
    let props = format!("{APIEXT}JSONSchemaProps");
    let props = if table.messages.contains_key(&props) {
        props
    } else {
        format!("{APIEXT}JsonSchemaProps")
    };
    let f = fields(bytes)?;
    let convert = |b: &[u8]| convert_message(table, &props, b, depth + 1);
    if name.ends_with("OrBool") {
        return match last_bytes(&f, 2) {
            Some(schema) => convert(schema),
            None => Ok(Value::Bool(last_varint(&f, 1).is_some_and(|v| v != 0))),
        };
    }
    if name.ends_with("OrStringArray") {
        let property: Vec<Value> = f
            .iter()
            .filter_map(|(t, w)| match (t, w) {
                (2, WireValue::Bytes(b)) => Some(utf8(name, b).map(Value::String)),
                _ => None,
            })
            .collect::<Result<_, _>>()?;
        return match last_bytes(&f, 1) {
            Some(schema) if property.is_empty() => convert(schema),
            _ => Ok(Value::Array(property)),
        };
    }
    match last_bytes(&f, 1) {
        Some(schema) => convert(schema),
        None => f
            .iter()
            .filter_map(|(t, w)| match (t, w) {
                (2, WireValue::Bytes(b)) => Some(convert(b)),
                _ => None,
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array),
    }
}

/// Go's `time.Duration.String()` of a nanosecond count (`1h0m0s`, `1.5s`).
fn go_duration(nanos: i64) -> String {
    if nanos == 0 {
        return "0s".into();
    }
    let sign = if nanos < 0 { "-" } else { "" };
    let n = nanos.unsigned_abs();
    if n < 1_000_000_000 {
        let (unit, div) = if n < 1_000 {
            ("ns", 1)
        } else if n < 1_000_000 {
            ("µs", 1_000)
        } else {
            ("ms", 1_000_000)
        };
        return format!("{sign}{}{unit}", trim_fraction(n, div));
    }
    let total_secs = n / 1_000_000_000;
    let (h, m) = (total_secs / 3600, (total_secs / 60) % 60);
    let secs = trim_fraction(n % 60_000_000_000, 1_000_000_000);
    if h > 0 {
        format!("{sign}{h}h{m}m{secs}s")
    } else if m > 0 {
        format!("{sign}{m}m{secs}s")
    } else {
        format!("{sign}{secs}s")
    }
}

/// `value / div` with the fraction's trailing zeros trimmed.
fn trim_fraction(value: u64, div: u64) -> String {
    let whole = value / div;
    let frac = value % div;
    if frac == 0 {
        return whole.to_string();
    }
    let width = div.to_string().len() - 1;
    let frac = format!("{frac:0width$}");
    format!("{whole}.{}", frac.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_print_as_go_does() {
        assert_eq!(go_duration(0), "0s");
        assert_eq!(go_duration(3_600_000_000_000), "1h0m0s");
        assert_eq!(go_duration(1_500_000_000), "1.5s");
        assert_eq!(go_duration(90_000_000_000), "1m30s");
        assert_eq!(go_duration(2_000_000), "2ms");
    }

    #[test]
    fn zero_scalars_count_as_empty() {
        assert!(is_zero(&Value::String(String::new())));
        assert!(is_zero(&serde_json::json!(0)));
        assert!(!is_zero(&serde_json::json!({})));
    }
}
