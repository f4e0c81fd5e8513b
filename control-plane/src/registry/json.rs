//! Small helpers to read and default fields of JSON objects, with Go's
//! "zero value means unset" rule where upstream defaulting uses it. No I/O.

use serde_json::{Map, Value};

/// The value at a path of object keys.
pub fn get<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    let mut cur = v;
    for key in path {
        cur = cur.get(*key)?;
    }
    Some(cur)
}

/// The string at a path, or "" when missing or not a string.
pub fn get_str<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    get(v, path).and_then(Value::as_str).unwrap_or("")
}

/// The integer at a path.
pub fn get_i64(v: &Value, path: &[&str]) -> Option<i64> {
    get(v, path).and_then(Value::as_i64)
}

/// The array at a path, or an empty slice.
pub fn get_array<'a>(v: &'a Value, path: &[&str]) -> &'a [Value] {
    get(v, path)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// The object at `key` of `map`, created (replacing a null) when missing.
/// Returns `None` when the key holds a non-object value.
pub fn obj_mut<'a>(
    map: &'a mut Map<String, Value>,
    key: &str,
) -> Option<&'a mut Map<String, Value>> {
    let entry = map
        .entry(key.to_string())
        .or_insert_with(|| Value::Object(Map::new()));
    if entry.is_null() {
        *entry = Value::Object(Map::new());
    }
    entry.as_object_mut()
}

/// The object at `key` of `map`, when it exists and is an object.
pub fn existing_obj_mut<'a>(
    map: &'a mut Map<String, Value>,
    key: &str,
) -> Option<&'a mut Map<String, Value>> {
    map.get_mut(key).and_then(Value::as_object_mut)
}

fn is_unset(v: Option<&Value>) -> bool {
    matches!(v, None | Some(Value::Null))
}

/// Sets `key` when missing or null (a Go pointer field).
pub fn default_value(map: &mut Map<String, Value>, key: &str, value: Value) {
    if is_unset(map.get(key)) {
        map.insert(key.to_string(), value);
    }
}

/// Sets `key` when missing, null or "" (a Go string field).
pub fn default_str(map: &mut Map<String, Value>, key: &str, value: &str) {
    let unset = match map.get(key) {
        None | Some(Value::Null) => true,
        Some(Value::String(s)) => s.is_empty(),
        _ => false,
    };
    if unset {
        map.insert(key.to_string(), Value::String(value.to_string()));
    }
}

/// Sets `key` when missing, null or 0 (a Go integer field).
pub fn default_nonzero(map: &mut Map<String, Value>, key: &str, value: i64) {
    let unset = match map.get(key) {
        None | Some(Value::Null) => true,
        Some(Value::Number(n)) => n.as_i64() == Some(0),
        _ => false,
    };
    if unset {
        map.insert(key.to_string(), Value::from(value));
    }
}

/// Calls `f` on every object of the array at `key`.
pub fn for_each_obj(
    map: &mut Map<String, Value>,
    key: &str,
    mut f: impl FnMut(&mut Map<String, Value>),
) {
    if let Some(items) = map.get_mut(key).and_then(Value::as_array_mut) {
        for item in items.iter_mut().filter_map(Value::as_object_mut) {
            f(item);
        }
    }
}

/// A JSON object of strings as ordered pairs (labels, selectors).
pub fn str_map(v: Option<&Value>) -> std::collections::BTreeMap<String, String> {
    v.and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default()
}
