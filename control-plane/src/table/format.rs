//! Cell formatting shared by the printers: JSON field access with Go zero
//! values, ages (`duration.HumanDuration`), label sets and selectors, the
//! container name/image columns. Mirrors the helpers of upstream
//! `pkg/printers/internalversion/printers.go` and apimachinery.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

/// The string at `pointer`, or `""` (Go's zero value) when absent.
pub fn s<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

/// The string at `pointer` if present (a Go `*string`).
pub fn opt_s<'a>(v: &'a Value, pointer: &str) -> Option<&'a str> {
    v.pointer(pointer).and_then(Value::as_str)
}

/// The integer at `pointer`, or 0.
pub fn i(v: &Value, pointer: &str) -> i64 {
    opt_i(v, pointer).unwrap_or(0)
}

/// The integer at `pointer` if present (a Go `*int32`).
pub fn opt_i(v: &Value, pointer: &str) -> Option<i64> {
    v.pointer(pointer).and_then(Value::as_i64)
}

/// The boolean at `pointer`, or false.
pub fn b(v: &Value, pointer: &str) -> bool {
    v.pointer(pointer).and_then(Value::as_bool).unwrap_or(false)
}

/// The array at `pointer`, or an empty slice.
pub fn arr<'a>(v: &'a Value, pointer: &str) -> &'a [Value] {
    v.pointer(pointer)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// The object at `pointer`, if any.
pub fn obj<'a>(v: &'a Value, pointer: &str) -> Option<&'a Map<String, Value>> {
    v.pointer(pointer).and_then(Value::as_object)
}

/// Number of entries of the object at `pointer` (0 when absent).
pub fn len_obj(v: &Value, pointer: &str) -> i64 {
    obj(v, pointer).map_or(0, |m| m.len() as i64)
}

/// Parses an RFC 3339 timestamp (`metav1.Time` or `metav1.MicroTime`).
pub fn time(v: &Value, pointer: &str) -> Option<DateTime<Utc>> {
    let raw = opt_s(v, pointer)?;
    DateTime::parse_from_rfc3339(raw)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// `translateTimestampSince`: the age of a timestamp, `<unknown>` when unset.
pub fn since(t: Option<DateTime<Utc>>, now: DateTime<Utc>) -> String {
    match t {
        Some(t) => human_duration(now - t),
        None => "<unknown>".to_string(),
    }
}

/// The age of the timestamp at `pointer`.
pub fn age_at(v: &Value, pointer: &str, now: DateTime<Utc>) -> String {
    since(time(v, pointer), now)
}

/// The AGE cell of an object.
pub fn age(v: &Value, now: DateTime<Utc>) -> String {
    age_at(v, "/metadata/creationTimestamp", now)
}

/// apimachinery `duration.HumanDuration`: ~2-3 significant figures.
pub fn human_duration(d: chrono::TimeDelta) -> String {
    // Go truncates toward zero at each step; integer division on the
    // millisecond count does the same.
    let ms = d.num_milliseconds();
    let seconds = ms / 1000;
    if seconds < -1 {
        return "<invalid>".to_string();
    } else if seconds < 0 {
        return "0s".to_string();
    } else if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let s = seconds % 60;
        if s == 0 {
            return format!("{minutes}m");
        }
        return format!("{minutes}m{s}s");
    } else if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = minutes / 60;
    if hours < 8 {
        let m = minutes % 60;
        if m == 0 {
            return format!("{hours}h");
        }
        format!("{hours}h{m}m")
    } else if hours < 48 {
        format!("{hours}h")
    } else if hours < 24 * 8 {
        let h = hours % 24;
        if h == 0 {
            return format!("{}d", hours / 24);
        }
        format!("{}d{}h", hours / 24, h)
    } else if hours < 24 * 365 * 2 {
        format!("{}d", hours / 24)
    } else if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        if dy == 0 {
            return format!("{}y", hours / 24 / 365);
        }
        format!("{}y{}d", hours / 24 / 365, dy)
    } else {
        format!("{}y", hours / 24 / 365)
    }
}

/// `labels.FormatLabels`: sorted `k=v` pairs joined by commas, `<none>` if empty.
pub fn format_labels(map: Option<&Map<String, Value>>) -> String {
    let text = label_set_string(map);
    if text.is_empty() {
        "<none>".to_string()
    } else {
        text
    }
}

/// `labels.Set(map).String()`: sorted `k=v` pairs, empty string if empty.
pub fn label_set_string(map: Option<&Map<String, Value>>) -> String {
    let Some(map) = map else {
        return String::new();
    };
    let mut pairs: Vec<String> = map
        .iter()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
        .collect();
    pairs.sort();
    pairs.join(",")
}

/// `metav1.LabelSelectorAsSelector(sel).String()`; `None` when the
/// selector is invalid (an unknown operator).
pub fn selector_string(selector: Option<&Value>) -> Option<String> {
    let Some(selector) = selector.filter(|s| !s.is_null()) else {
        return Some(String::new());
    };
    let mut reqs: Vec<(String, String)> = Vec::new();
    if let Some(labels) = selector.get("matchLabels").and_then(Value::as_object) {
        for (k, v) in labels {
            reqs.push((k.clone(), format!("{k}={}", v.as_str().unwrap_or(""))));
        }
    }
    for expr in selector
        .get("matchExpressions")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
    {
        let key = s(expr, "/key");
        let mut values: Vec<&str> = arr(expr, "/values")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        values.sort_unstable();
        values.dedup();
        let text = match s(expr, "/operator") {
            "In" => format!("{key} in ({})", values.join(",")),
            "NotIn" => format!("{key} notin ({})", values.join(",")),
            "Exists" => key.to_string(),
            "DoesNotExist" => format!("!{key}"),
            _ => return None,
        };
        reqs.push((key.to_string(), text));
    }
    reqs.sort_by(|a, b| a.0.cmp(&b.0));
    Some(
        reqs.into_iter()
            .map(|(_, t)| t)
            .collect::<Vec<_>>()
            .join(","),
    )
}

/// `metav1.FormatLabelSelector`: `<none>` when empty, `<error>` when invalid.
pub fn format_label_selector(selector: Option<&Value>) -> String {
    match selector_string(selector) {
        None => "<error>".to_string(),
        Some(t) if t.is_empty() => "<none>".to_string(),
        Some(t) => t,
    }
}

/// `layoutContainerCells`: container names and images, comma separated.
pub fn containers(containers: &[Value]) -> (String, String) {
    let names: Vec<&str> = containers.iter().map(|c| s(c, "/name")).collect();
    let images: Vec<&str> = containers.iter().map(|c| s(c, "/image")).collect();
    (names.join(","), images.join(","))
}

/// `GetAccessModesAsString`: RWO, ROX, RWX, RWOP in this order.
pub fn access_modes(modes: &[Value]) -> String {
    let has = |m: &str| modes.iter().any(|v| v.as_str() == Some(m));
    [
        ("ReadWriteOnce", "RWO"),
        ("ReadOnlyMany", "ROX"),
        ("ReadWriteMany", "RWX"),
        ("ReadWriteOncePod", "RWOP"),
    ]
    .iter()
    .filter(|(mode, _)| has(mode))
    .map(|(_, short)| *short)
    .collect::<Vec<_>>()
    .join(",")
}

/// `Quantity.String()` of the quantity at `pointer`; a missing quantity is `0`.
/// Stored quantities are already canonical, so they are printed as stored.
pub fn quantity(v: &Value, pointer: &str) -> String {
    match v.pointer(pointer) {
        Some(Value::String(q)) => q.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => "0".to_string(),
    }
}

/// `intstr.IntOrString.String()`.
pub fn int_or_string(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => String::new(),
    }
}

/// `printBoolPtr`: `True`, `False` or `<unset>`.
pub fn bool_ptr(v: Option<bool>) -> String {
    match v {
        Some(true) => "True".to_string(),
        Some(false) => "False".to_string(),
        None => "<unset>".to_string(),
    }
}

/// The `status` of the first condition of `kind` in `conditions`.
pub fn condition<'a>(conditions: &'a [Value], kind: &str) -> Option<&'a Value> {
    conditions.iter().find(|c| s(c, "/type") == kind)
}

/// Whether the first condition of `kind` has status `True`.
pub fn condition_true(conditions: &[Value], kind: &str) -> bool {
    condition(conditions, kind).is_some_and(|c| s(c, "/status") == "True")
}

/// `"<none>"` for an empty string.
pub fn or_none(text: &str) -> String {
    if text.is_empty() {
        "<none>".to_string()
    } else {
        text.to_string()
    }
}

/// The list joined with commas, `+ N more...` past `max` items, `<unset>` if
/// empty (`listWithMoreString`).
pub fn list_with_more(list: &[String], count: usize, max: usize) -> String {
    let text = list.join(",");
    if count > max {
        return format!("{text} + {} more...", count - max);
    }
    if text.is_empty() {
        "<unset>".to_string()
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeDelta;
    use serde_json::json;

    #[test]
    fn human_duration_matches_apimachinery() {
        let cases = [
            (-5, "<invalid>"),
            (-1, "0s"),
            (0, "0s"),
            (119, "119s"),
            (120, "2m"),
            (123, "2m3s"),
            (599, "9m59s"),
            (600, "10m"),
            (3 * 3600 - 1, "179m"),
            (3 * 3600, "3h"),
            (3 * 3600 + 600, "3h10m"),
            (8 * 3600, "8h"),
            (47 * 3600 + 3599, "47h"),
            (48 * 3600, "2d"),
            (51 * 3600, "2d3h"),
            (8 * 86400, "8d"),
            (729 * 86400, "729d"),
            (730 * 86400, "2y"),
            (731 * 86400, "2y1d"),
            (8 * 365 * 86400, "8y"),
        ];
        for (secs, want) in cases {
            assert_eq!(human_duration(TimeDelta::seconds(secs)), want, "{secs}s");
        }
        assert_eq!(human_duration(TimeDelta::milliseconds(-1500)), "0s");
    }

    #[test]
    fn labels_and_selectors_format_like_apimachinery() {
        let labels = json!({"b": "2", "a": "1"});
        assert_eq!(format_labels(labels.as_object()), "a=1,b=2");
        assert_eq!(format_labels(None), "<none>");
        let sel = json!({"matchLabels": {"app": "web"}, "matchExpressions": [
            {"key": "tier", "operator": "In", "values": ["b", "a"]},
            {"key": "env", "operator": "DoesNotExist"}
        ]});
        assert_eq!(
            format_label_selector(Some(&sel)),
            "app=web,!env,tier in (a,b)"
        );
        assert_eq!(format_label_selector(Some(&json!({}))), "<none>");
        assert_eq!(
            format_label_selector(Some(
                &json!({"matchExpressions": [{"key": "a", "operator": "Bad"}]})
            )),
            "<error>"
        );
    }

    #[test]
    fn access_modes_use_upstream_order() {
        let modes = json!(["ReadWriteMany", "ReadWriteOnce"]);
        assert_eq!(access_modes(modes.as_array().unwrap()), "RWO,RWX");
    }
}
