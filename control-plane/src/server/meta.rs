//! Object metadata helpers of the handlers: storage keys, timestamps, names,
//! unknown-field detection and the shapes derived from an object
//! (PartialObjectMetadata, label selector strings). No I/O.

use serde_json::{Value, json};

use crate::registry::Cause;
use crate::resources::ResourceType;

/// `/registry/{plural}/{ns}/{name}` or `/registry/{plural}/{name}`.
pub fn key(resource: &ResourceType, namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(ns) if resource.namespaced => {
            format!("/registry/{}/{}/{}", resource.storage_plural, ns, name)
        }
        _ => format!("/registry/{}/{}", resource.storage_plural, name),
    }
}

/// The namespace and name a key of `resource` was made of (`key`'s inverse).
pub fn split_key<'k>(resource: &ResourceType, key: &'k str) -> Option<(Option<&'k str>, &'k str)> {
    let rest = key
        .strip_prefix("/registry/")?
        .strip_prefix(resource.storage_plural)?
        .strip_prefix('/')?;
    if resource.namespaced {
        let (ns, name) = rest.split_once('/')?;
        Some((Some(ns), name))
    } else {
        Some((None, rest))
    }
}

/// The key prefix of a list: one namespace, or the whole resource.
pub fn prefix(resource: &ResourceType, namespace: Option<&str>) -> String {
    match namespace {
        Some(ns) if resource.namespaced => format!("/registry/{}/{}/", resource.storage_plural, ns),
        _ => format!("/registry/{}/", resource.storage_plural),
    }
}

/// The current time as Kubernetes writes it: RFC 3339, seconds, `Z`.
pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

pub fn str_at<'a>(obj: &'a Value, pointer: &str) -> Option<&'a str> {
    obj.pointer(pointer).and_then(Value::as_str)
}

pub fn name(obj: &Value) -> &str {
    str_at(obj, "/metadata/name").unwrap_or("")
}

/// Sets `metadata.<field>` of an object (callers have checked it is a JSON object).
pub fn set_meta(obj: &mut Value, field: &str, value: Value) {
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = json!({});
    }
    obj["metadata"][field] = value;
}

/// Removes `metadata.<field>`.
pub fn remove_meta(obj: &mut Value, field: &str) {
    if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove(field);
    }
}

pub fn finalizers(obj: &Value) -> Vec<String> {
    obj.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|f| f.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

pub fn is_deleting(obj: &Value) -> bool {
    str_at(obj, "/metadata/deletionTimestamp").is_some()
}

/// Puts `condition` last in `status.conditions` in place of the one of its
/// `type` (`status` becomes an object if it is not one), as the binding and
/// eviction subresources set PodScheduled and DisruptionTarget.
pub fn set_condition(status: &mut Value, condition: Value) {
    if !status.is_object() {
        *status = json!({});
    }
    let mut conditions = match status["conditions"].take() {
        Value::Array(conditions) => conditions,
        _ => Vec::new(),
    };
    conditions.retain(|c| {
        c.get("type")
            .is_none_or(|t| Some(t) != condition.get("type"))
    });
    conditions.push(condition);
    status["conditions"] = Value::Array(conditions);
}

/// A random `generateName` suffix, from upstream's alphabet (no vowels).
pub fn name_suffix() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    (0..5)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// Field paths present in `input` but dropped by the typed roundtrip:
/// the unknown fields of a strict decoding error.
pub fn unknown_fields(input: &Value, typed: &Value) -> Vec<String> {
    let mut out = Vec::new();
    walk_unknown(input, typed, "", &mut out);
    out
}

fn walk_unknown(input: &Value, typed: &Value, path: &str, out: &mut Vec<String>) {
    match (input, typed) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in a {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match b.get(k) {
                    Some(tv) => walk_unknown(v, tv, &p, out),
                    None if is_empty(v) => {}
                    None => out.push(p),
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            for (i, (v, tv)) in a.iter().zip(b.iter()).enumerate() {
                walk_unknown(v, tv, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    }
}

/// Whether anything besides `metadata` and `status` differs (a generation bump).
pub fn spec_changed(old: &Value, new: &Value) -> bool {
    !same_fields(
        old,
        new,
        &["metadata", "status", "apiVersion", "kind"],
        |_, a, b| a == b,
    )
}

/// Whether two versions are the same object apart from resourceVersion
/// (managedFields count: a new owner of unchanged fields is a write).
pub fn same_object(a: &Value, b: &Value) -> bool {
    same_fields(a, b, &[], |key, a, b| match key {
        "metadata" => same_fields(a, b, &["resourceVersion"], |_, a, b| a == b),
        _ => a == b,
    })
}

/// Whether two objects have the same fields apart from those named in
/// `skip`, comparing each kept field with `eq`, without copying either
/// (every update compares the whole object). Non-objects compare as values.
fn same_fields(
    a: &Value,
    b: &Value,
    skip: &[&str],
    eq: impl Fn(&str, &Value, &Value) -> bool,
) -> bool {
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
        return a == b;
    };
    let kept = |m: &'_ serde_json::Map<String, Value>| {
        m.keys().filter(|k| !skip.contains(&k.as_str())).count()
    };
    kept(a) == kept(b)
        && a.iter()
            .filter(|(k, _)| !skip.contains(&k.as_str()))
            .all(|(k, v)| b.get(k).is_some_and(|w| eq(k, v, w)))
}

/// A `meta.k8s.io` PartialObjectMetadata of `obj`.
pub fn partial_metadata(obj: &Value, api_version: &str) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": api_version,
        "metadata": obj.get("metadata").cloned().unwrap_or_else(|| json!({})),
    })
}

/// A label selector (`metav1.LabelSelector` or an RC's map) as a string.
pub fn selector_string(selector: &Value) -> String {
    let mut parts = Vec::new();
    let labels = selector.get("matchLabels").unwrap_or(selector);
    if let Some(m) = labels.as_object() {
        for (k, v) in m {
            if let Some(v) = v.as_str() {
                parts.push(format!("{k}={v}"));
            }
        }
    }
    if let Some(exprs) = selector.get("matchExpressions").and_then(Value::as_array) {
        for e in exprs {
            let key = e.get("key").and_then(Value::as_str).unwrap_or("");
            let values: Vec<&str> = e
                .get("values")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            match e.get("operator").and_then(Value::as_str).unwrap_or("") {
                "In" => parts.push(format!("{key} in ({})", values.join(","))),
                "NotIn" => parts.push(format!("{key} notin ({})", values.join(","))),
                "Exists" => parts.push(key.to_string()),
                "DoesNotExist" => parts.push(format!("!{key}")),
                _ => {}
            }
        }
    }
    parts.join(",")
}

const SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";

fn is_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_label)
}

/// The generic name check of `metadata.name` (upstream's ValidateObjectMeta):
/// path-segment names for RBAC, DNS labels for namespaces, subdomains elsewhere.
pub fn validate_name(resource: &ResourceType, name: &str) -> Option<Cause> {
    let invalid = |msg: &str| Cause {
        reason: "FieldValueInvalid".into(),
        message: format!("Invalid value: \"{name}\": {msg}"),
        field: "metadata.name".into(),
    };
    if resource.group == "rbac.authorization.k8s.io" {
        if name == "." || name == ".." {
            return Some(invalid(&format!("may not be '{name}'")));
        }
        for bad in ["/", "%"] {
            if name.contains(bad) {
                return Some(invalid(&format!("may not contain '{bad}'")));
            }
        }
        return None;
    }
    if resource.plural == "namespaces" {
        return (!is_label(name)).then(|| invalid(LABEL_MSG));
    }
    (!is_subdomain(name)).then(|| invalid(SUBDOMAIN_MSG))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_condition_replaces_the_one_of_its_type_and_goes_last() {
        let mut status = json!({"phase": "Running", "conditions": [
            {"type": "DisruptionTarget", "status": "False"},
            {"type": "Ready", "status": "True"},
            {"status": "True"},
        ]});
        set_condition(
            &mut status,
            json!({"type": "DisruptionTarget", "status": "True"}),
        );
        assert_eq!(
            status,
            json!({"phase": "Running", "conditions": [
                {"type": "Ready", "status": "True"},
                {"status": "True"},
                {"type": "DisruptionTarget", "status": "True"},
            ]})
        );
        for mut status in [Value::Null, json!("odd"), json!({"conditions": 3})] {
            set_condition(
                &mut status,
                json!({"type": "PodScheduled", "status": "True"}),
            );
            assert_eq!(
                status["conditions"],
                json!([{"type": "PodScheduled", "status": "True"}])
            );
        }
    }

    #[test]
    fn same_object_ignores_only_the_resource_version() {
        let a = json!({"metadata": {"name": "p", "resourceVersion": "1"}, "spec": {"x": 1}});
        let same = json!({"metadata": {"name": "p", "resourceVersion": "2"}, "spec": {"x": 1}});
        let no_rv = json!({"metadata": {"name": "p"}, "spec": {"x": 1}});
        assert!(same_object(&a, &same) && same_object(&a, &no_rv));
        let labelled = json!({"metadata": {"name": "p", "labels": {}}, "spec": {"x": 1}});
        let changed = json!({"metadata": {"name": "p"}, "spec": {"x": 2}});
        let more = json!({"metadata": {"name": "p"}, "spec": {"x": 1}, "status": {}});
        for b in [labelled, changed, more] {
            assert!(!same_object(&a, &b) && !same_object(&b, &a), "{b}");
        }
    }

    #[test]
    fn spec_changed_looks_past_metadata_and_status() {
        let a = json!({"kind": "Pod", "metadata": {"name": "p"}, "spec": {"x": 1}, "status": {}});
        let b =
            json!({"metadata": {"name": "q"}, "spec": {"x": 1}, "status": {"phase": "Running"}});
        assert!(!spec_changed(&a, &b));
        assert!(spec_changed(&a, &json!({"spec": {"x": 2}})));
        assert!(spec_changed(
            &a,
            &json!({"metadata": {}, "spec": {"x": 1}, "data": {}})
        ));
    }

    #[test]
    fn unknown_fields_are_the_keys_the_roundtrip_drops() {
        let input =
            json!({"spec": {"foo": 1, "containers": [{"name": "a", "bar": true}]}, "x": null});
        let typed = json!({"spec": {"containers": [{"name": "a"}]}});
        assert_eq!(
            unknown_fields(&input, &typed),
            vec!["spec.containers[0].bar", "spec.foo"]
        );
    }

    #[test]
    fn keys_are_namespaced_or_cluster_scoped() {
        let pods = crate::resources::find("", "v1", "pods").unwrap();
        assert_eq!(
            key(pods, Some("default"), "web"),
            "/registry/pods/default/web"
        );
        let ns = crate::resources::find("", "v1", "namespaces").unwrap();
        assert_eq!(key(ns, None, "x"), "/registry/namespaces/x");
        assert_eq!(prefix(pods, None), "/registry/pods/");
    }

    #[test]
    fn selector_strings_match_kubectl() {
        let sel = json!({"matchLabels": {"app": "web"}, "matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]}]});
        assert_eq!(selector_string(&sel), "app=web,tier in (a,b)");
    }

    #[test]
    fn names_are_validated_like_upstream() {
        let cm = crate::resources::find("", "v1", "configmaps").unwrap();
        assert!(validate_name(cm, "ok.name-1").is_none());
        assert!(validate_name(cm, "Bad_Name").is_some());
        let role =
            crate::resources::find("rbac.authorization.k8s.io", "v1", "clusterroles").unwrap();
        assert!(validate_name(role, "system:controller:x").is_none());
    }
}
