//! Field errors as upstream's `k8s.io/apimachinery/pkg/util/validation/field`
//! renders them: the cause reason, `ErrorBody()` text and field path that a
//! 422 Invalid carries. No I/O.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::Value;

use super::Cause;

/// A field path being built: `spec.containers[0].image`, `data[key]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldPath(String);

impl FieldPath {
    /// A path starting at a top-level field (`metadata`, `spec`).
    pub fn new(root: &str) -> Self {
        FieldPath(root.to_string())
    }

    /// `path.child`.
    pub fn child(&self, name: &str) -> Self {
        if self.0.is_empty() {
            FieldPath(name.to_string())
        } else {
            FieldPath(format!("{}.{}", self.0, name))
        }
    }

    /// `path[i]`.
    pub fn index(&self, i: usize) -> Self {
        FieldPath(format!("{}[{}]", self.0, i))
    }

    /// `path[key]`.
    pub fn key(&self, key: &str) -> Self {
        FieldPath(format!("{}[{}]", self.0, key))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for FieldPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The bad value of an Invalid/NotSupported/Duplicate error, printed as Go's
/// `%q`, `%v` or `%#v` would print the upstream Go value.
#[derive(Debug, Clone, PartialEq)]
pub enum BadValue {
    Str(String),
    Int(i64),
    Bool(bool),
    /// `map[string]string{"a":"b"}`.
    StrMap(BTreeMap<String, String>),
    /// `[]string{"a", "b"}`.
    StrList(Vec<String>),
    /// Printed verbatim.
    Raw(String),
}

impl From<&str> for BadValue {
    fn from(s: &str) -> Self {
        BadValue::Str(s.to_string())
    }
}
impl From<String> for BadValue {
    fn from(s: String) -> Self {
        BadValue::Str(s)
    }
}
impl From<i64> for BadValue {
    fn from(i: i64) -> Self {
        BadValue::Int(i)
    }
}
impl From<bool> for BadValue {
    fn from(b: bool) -> Self {
        BadValue::Bool(b)
    }
}

impl BadValue {
    /// A JSON value as the Go value it decodes to would print.
    pub fn from_json(v: &Value) -> Self {
        match v {
            Value::String(s) => BadValue::Str(s.clone()),
            Value::Bool(b) => BadValue::Bool(*b),
            Value::Number(n) => match n.as_i64() {
                Some(i) => BadValue::Int(i),
                None => BadValue::Raw(n.to_string()),
            },
            Value::Null => BadValue::Raw("null".to_string()),
            Value::Object(m) if m.values().all(Value::is_string) => BadValue::StrMap(
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect(),
            ),
            Value::Array(a) if a.iter().all(Value::is_string) => BadValue::StrList(
                a.iter()
                    .map(|v| v.as_str().unwrap_or_default().to_string())
                    .collect(),
            ),
            other => BadValue::Raw(other.to_string()),
        }
    }

    /// The value as Go prints it in a field error.
    pub fn to_go(&self) -> String {
        match self {
            BadValue::Str(s) => go_quote(s),
            BadValue::Int(i) => i.to_string(),
            BadValue::Bool(b) => b.to_string(),
            BadValue::StrMap(m) => {
                let items: Vec<String> = m
                    .iter()
                    .map(|(k, v)| format!("{}:{}", go_quote(k), go_quote(v)))
                    .collect();
                format!("map[string]string{{{}}}", items.join(", "))
            }
            BadValue::StrList(l) => {
                let items: Vec<String> = l.iter().map(|s| go_quote(s)).collect();
                format!("[]string{{{}}}", items.join(", "))
            }
            BadValue::Raw(s) => s.clone(),
        }
    }
}

/// Go's `strconv.Quote`: a double-quoted string with Go escapes.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn cause(reason: &str, path: &FieldPath, message: String) -> Cause {
    Cause {
        reason: reason.to_string(),
        message,
        field: path.0.clone(),
    }
}

fn with_detail(mut s: String, detail: &str) -> String {
    if !detail.is_empty() {
        s.push_str(": ");
        s.push_str(detail);
    }
    s
}

/// `Required value[: detail]`.
pub fn required(path: &FieldPath, detail: &str) -> Cause {
    cause(
        "FieldValueRequired",
        path,
        with_detail("Required value".to_string(), detail),
    )
}

/// `Invalid value: <value>[: detail]`.
pub fn invalid(path: &FieldPath, value: impl Into<BadValue>, detail: &str) -> Cause {
    let v = value.into();
    cause(
        "FieldValueInvalid",
        path,
        with_detail(format!("Invalid value: {}", v.to_go()), detail),
    )
}

/// `Unsupported value: "X": supported values: "A", "B"`.
pub fn not_supported(path: &FieldPath, value: impl Into<BadValue>, supported: &[&str]) -> Cause {
    let v = value.into();
    let detail = if supported.is_empty() {
        String::new()
    } else {
        let quoted: Vec<String> = supported.iter().map(|s| go_quote(s)).collect();
        format!("supported values: {}", quoted.join(", "))
    };
    cause(
        "FieldValueNotSupported",
        path,
        with_detail(format!("Unsupported value: {}", v.to_go()), &detail),
    )
}

/// `Duplicate value: <value>`.
pub fn duplicate(path: &FieldPath, value: impl Into<BadValue>) -> Cause {
    let v = value.into();
    cause(
        "FieldValueDuplicate",
        path,
        format!("Duplicate value: {}", v.to_go()),
    )
}

/// `Not found: <value>`.
pub fn not_found(path: &FieldPath, value: impl Into<BadValue>) -> Cause {
    let v = value.into();
    cause(
        "FieldValueNotFound",
        path,
        format!("Not found: {}", v.to_go()),
    )
}

/// `Forbidden[: detail]`.
pub fn forbidden(path: &FieldPath, detail: &str) -> Cause {
    cause(
        "FieldValueForbidden",
        path,
        with_detail("Forbidden".to_string(), detail),
    )
}

/// `Too long: may not be more than N bytes`.
pub fn too_long(path: &FieldPath, max: usize) -> Cause {
    let unit = if max == 1 { "byte" } else { "bytes" };
    cause(
        "FieldValueTooLong",
        path,
        format!("Too long: may not be more than {max} {unit}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_render_like_upstream() {
        let p = FieldPath::new("spec")
            .child("containers")
            .index(0)
            .child("image");
        assert_eq!(p.as_str(), "spec.containers[0].image");
        assert_eq!(FieldPath::new("data").key("a.b").as_str(), "data[a.b]");
    }

    #[test]
    fn messages_render_go_values() {
        let p = FieldPath::new("x");
        assert_eq!(
            invalid(&p, "a\"b", "bad").message,
            "Invalid value: \"a\\\"b\": bad"
        );
        assert_eq!(invalid(&p, 5i64, "").message, "Invalid value: 5");
        let mut m = BTreeMap::new();
        m.insert("b".to_string(), "2".to_string());
        m.insert("a".to_string(), "1".to_string());
        assert_eq!(
            invalid(&p, BadValue::StrMap(m), "d").message,
            "Invalid value: map[string]string{\"a\":\"1\", \"b\":\"2\"}: d"
        );
        assert_eq!(
            not_supported(&p, "X", &["A", "B"]).message,
            "Unsupported value: \"X\": supported values: \"A\", \"B\""
        );
        assert_eq!(required(&p, "").message, "Required value");
        assert_eq!(
            too_long(&p, 262144).message,
            "Too long: may not be more than 262144 bytes"
        );
        assert_eq!(duplicate(&p, "n").message, "Duplicate value: \"n\"");
        assert_eq!(duplicate(&p, "n").reason, "FieldValueDuplicate");
    }
}
