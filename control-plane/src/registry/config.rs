//! ConfigMaps and Secrets: data keys, total size, secret types, `immutable`,
//! and Secret `stringData` folded into `data`. No I/O.

use base64::Engine as _;
use serde_json::{Map, Value, json};

use super::Cause;
use super::field::{self, FieldPath};
use super::json::{default_str, get_str};
use super::meta::is_config_map_key;

/// Upstream `MaxSecretSize` (also the ConfigMap limit).
pub const MAX_SIZE: usize = 1024 * 1024;

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

/// `type: Opaque` and `stringData` merged into `data` (base64), as the v1
/// conversion does.
pub fn default_secret(secret: &mut Value) {
    let Some(obj) = secret.as_object_mut() else {
        return;
    };
    default_str(obj, "type", "Opaque");
    if let Some(Value::Object(string_data)) = obj.remove("stringData") {
        let data = obj
            .entry("data")
            .or_insert_with(|| Value::Object(Map::new()));
        if data.is_null() {
            *data = Value::Object(Map::new());
        }
        if let Some(data) = data.as_object_mut() {
            for (k, v) in string_data {
                let s = v.as_str().unwrap_or_default();
                data.insert(k, json!(b64().encode(s)));
            }
        }
    }
}

fn keys(obj: &Value, key: &str) -> Vec<(String, usize)> {
    obj.get(key)
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().map(str::len).unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default()
}

fn decoded_len(s: &str) -> usize {
    b64().decode(s).map(|b| b.len()).unwrap_or(s.len())
}

/// Upstream `ValidateConfigMap` (past metadata).
pub fn validate_config_map(cm: &Value) -> Vec<Cause> {
    let mut errs = Vec::new();
    let mut total = 0;
    let binary: Vec<String> = keys(cm, "binaryData").into_iter().map(|(k, _)| k).collect();
    for (k, len) in keys(cm, "data") {
        let p = FieldPath::new("data").key(&k);
        for m in is_config_map_key(&k) {
            errs.push(field::invalid(&p, k.as_str(), &m));
        }
        if binary.contains(&k) {
            errs.push(field::invalid(
                &p,
                k.as_str(),
                "duplicate of key present in binaryData",
            ));
        }
        total += len;
    }
    if let Some(m) = cm.get("binaryData").and_then(Value::as_object) {
        for (k, v) in m {
            let p = FieldPath::new("binaryData").key(k);
            for msg in is_config_map_key(k) {
                errs.push(field::invalid(&p, k.as_str(), &msg));
            }
            total += decoded_len(v.as_str().unwrap_or_default());
        }
    }
    if total > MAX_SIZE {
        errs.push(field::too_long(&FieldPath::new(""), MAX_SIZE));
    }
    errs
}

/// Upstream `ValidateSecret` (past metadata).
pub fn validate_secret(secret: &Value) -> Vec<Cause> {
    let mut errs = Vec::new();
    let data_path = FieldPath::new("data");
    let data = secret
        .get("data")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let mut total = 0;
    for (k, v) in &data {
        for m in is_config_map_key(k) {
            errs.push(field::invalid(&data_path.key(k), k.as_str(), &m));
        }
        total += decoded_len(v.as_str().unwrap_or_default());
    }
    if total > MAX_SIZE {
        errs.push(field::too_long(&data_path, MAX_SIZE));
    }
    let has = |k: &str| data.contains_key(k);
    let non_empty = |k: &str| {
        data.get(k)
            .and_then(Value::as_str)
            .is_some_and(|s| !s.is_empty())
    };
    match get_str(secret, &["type"]) {
        "kubernetes.io/service-account-token" => {
            let name = secret
                .pointer("/metadata/annotations/kubernetes.io~1service-account.name")
                .and_then(Value::as_str)
                .unwrap_or("");
            if name.is_empty() {
                errs.push(field::required(
                    &FieldPath::new("metadata")
                        .child("annotations")
                        .key("kubernetes.io/service-account.name"),
                    "",
                ));
            }
        }
        "kubernetes.io/dockercfg" if !non_empty(".dockercfg") => {
            errs.push(field::required(&data_path.key(".dockercfg"), ""));
        }
        "kubernetes.io/dockerconfigjson" => {
            if !non_empty(".dockerconfigjson") {
                errs.push(field::required(&data_path.key(".dockerconfigjson"), ""));
            } else {
                let raw = data
                    .get(".dockerconfigjson")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                let parsed = b64()
                    .decode(raw)
                    .ok()
                    .and_then(|b| serde_json::from_slice::<Value>(&b).ok());
                if parsed.is_none() {
                    errs.push(field::invalid(
                        &data_path.key(".dockerconfigjson"),
                        "<secret contents redacted>",
                        "invalid character",
                    ));
                }
            }
        }
        "kubernetes.io/basic-auth" if !has("username") && !has("password") => {
            errs.push(field::required(&data_path.key("username"), ""));
            errs.push(field::required(&data_path.key("password"), ""));
        }
        "kubernetes.io/ssh-auth" if !non_empty("ssh-privatekey") => {
            errs.push(field::required(&data_path.key("ssh-privatekey"), ""));
        }
        "kubernetes.io/tls" => {
            for k in ["tls.key", "tls.crt"] {
                if !has(k) {
                    errs.push(field::required(&data_path.key(k), ""));
                }
            }
        }
        _ => {}
    }
    errs
}

/// Update rules shared by both: `immutable: true` freezes data and itself;
/// a Secret's type never changes.
pub fn validate_config_update(new: &Value, old: &Value, is_secret: bool) -> Vec<Cause> {
    let mut errs = if is_secret {
        validate_secret(new)
    } else {
        validate_config_map(new)
    };
    if is_secret && get_str(new, &["type"]) != get_str(old, &["type"]) {
        errs.push(field::invalid(
            &FieldPath::new("type"),
            get_str(new, &["type"]),
            "field is immutable",
        ));
    }
    if old.get("immutable").and_then(Value::as_bool) == Some(true) {
        if new.get("immutable").and_then(Value::as_bool) != Some(true) {
            errs.push(field::forbidden(
                &FieldPath::new("immutable"),
                "field is immutable when `immutable` is set",
            ));
        }
        let fields: &[&str] = if is_secret {
            &["data"]
        } else {
            &["data", "binaryData"]
        };
        for f in fields {
            let n = new
                .get(*f)
                .filter(|v| !v.is_null())
                .cloned()
                .unwrap_or(json!({}));
            let o = old
                .get(*f)
                .filter(|v| !v.is_null())
                .cloned()
                .unwrap_or(json!({}));
            if n != o {
                errs.push(field::forbidden(
                    &FieldPath::new(f),
                    "field is immutable when `immutable` is set",
                ));
            }
        }
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_map_keys_are_checked() {
        let cm = json!({"data": {"good.key": "v", "bad/key": "v"}});
        let errs = validate_config_map(&cm);
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].field, "data[bad/key]");
        assert!(errs[0].message.starts_with("Invalid value: \"bad/key\": a valid config key must consist of alphanumeric characters, '-', '_' or '.'"));
    }

    #[test]
    fn config_map_size_is_limited() {
        let cm = json!({"data": {"a": "x".repeat(MAX_SIZE + 1)}});
        let errs = validate_config_map(&cm);
        assert_eq!(
            errs[0].message,
            "Too long: may not be more than 1048576 bytes"
        );
    }

    #[test]
    fn secret_defaults_and_string_data() {
        let mut s = json!({"metadata": {"name": "s"}, "stringData": {"user": "admin"}});
        default_secret(&mut s);
        assert_eq!(s["type"], "Opaque");
        assert_eq!(s["data"]["user"], "YWRtaW4=");
        assert!(s.get("stringData").is_none());
        assert!(validate_secret(&s).is_empty());
    }

    #[test]
    fn tls_secret_needs_both_keys() {
        let s = json!({"type": "kubernetes.io/tls", "data": {"tls.crt": "eA=="}});
        let errs = validate_secret(&s);
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].field, "data[tls.key]");
    }

    #[test]
    fn immutable_data_cannot_change() {
        let old = json!({"immutable": true, "data": {"a": "1"}});
        let new = json!({"immutable": true, "data": {"a": "2"}});
        let errs = validate_config_update(&new, &old, false);
        assert_eq!(
            errs[0].message,
            "Forbidden: field is immutable when `immutable` is set"
        );
        let s_old = json!({"type": "Opaque"});
        let s_new = json!({"type": "kubernetes.io/tls", "data": {"tls.key": "", "tls.crt": ""}});
        assert_eq!(
            validate_config_update(&s_new, &s_old, true)[0].field,
            "type"
        );
    }
}
