//! Object metadata validation (names, namespace, labels, annotations) and
//! the string validators of `k8s.io/apimachinery/pkg/util/validation`, with
//! their upstream messages. No I/O.

use serde_json::Value;

use super::Cause;
use super::field::{self, BadValue, FieldPath};
use super::json::get_str;

const DNS1123_LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character";
const DNS1123_LABEL_FMT: &str = "[a-z0-9]([-a-z0-9]*[a-z0-9])?";
const DNS1123_SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character";
const DNS1123_SUBDOMAIN_FMT: &str =
    "[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*";
const DNS1035_LABEL_MSG: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character";
const DNS1035_LABEL_FMT: &str = "[a-z]([-a-z0-9]*[a-z0-9])?";
const QUALIFIED_NAME_MSG: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const QUALIFIED_NAME_FMT: &str = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";
const LABEL_VALUE_MSG: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const LABEL_VALUE_FMT: &str = "(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?";
const CONFIG_KEY_MSG: &str =
    "a valid config key must consist of alphanumeric characters, '-', '_' or '.'";
const CONFIG_KEY_FMT: &str = "[-._a-zA-Z0-9]+";

/// Upstream `TotalAnnotationSizeLimitB`.
pub const TOTAL_ANNOTATION_SIZE_LIMIT: usize = 256 * 1024;

/// Upstream `validation.RegexError`, double space before "or" included.
pub fn regex_error(msg: &str, fmt: &str, examples: &[&str]) -> String {
    if examples.is_empty() {
        return format!("{msg} (regex used for validation is '{fmt}')");
    }
    let mut out = format!("{msg} (e.g. ");
    for (i, e) in examples.iter().enumerate() {
        if i > 0 {
            out.push_str(" or ");
        }
        out.push_str(&format!("'{e}', "));
    }
    out.push_str(&format!("regex used for validation is '{fmt}')"));
    out
}

/// Upstream `validation.MaxLenError`.
pub fn max_len_error(n: usize) -> String {
    format!("must be no more than {n} characters")
}

/// Upstream `validation.InclusiveRangeError`.
pub fn inclusive_range_error(lo: i64, hi: i64) -> String {
    format!("must be between {lo} and {hi}, inclusive")
}

fn is_lower_alnum(c: u8) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

fn matches_dns1123_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && is_lower_alnum(b[0])
        && is_lower_alnum(b[b.len() - 1])
        && b.iter().all(|&c| is_lower_alnum(c) || c == b'-')
}

fn matches_dns1123_subdomain(s: &str) -> bool {
    s.split('.').all(matches_dns1123_label)
}

/// Upstream `IsDNS1123Label`.
pub fn is_dns1123_label(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > 63 {
        errs.push(max_len_error(63));
    }
    if !matches_dns1123_label(s) {
        if matches_dns1123_subdomain(s) {
            errs.push("must not contain dots".to_string());
        } else {
            errs.push(regex_error(
                DNS1123_LABEL_MSG,
                DNS1123_LABEL_FMT,
                &["my-name", "123-abc"],
            ));
        }
    }
    errs
}

/// Upstream `IsDNS1123Subdomain`.
pub fn is_dns1123_subdomain(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > 253 {
        errs.push(max_len_error(253));
    }
    if !matches_dns1123_subdomain(s) {
        errs.push(regex_error(
            DNS1123_SUBDOMAIN_MSG,
            DNS1123_SUBDOMAIN_FMT,
            &["example.com"],
        ));
    }
    errs
}

/// Upstream `IsDNS1035Label`.
pub fn is_dns1035_label(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > 63 {
        errs.push(max_len_error(63));
    }
    let b = s.as_bytes();
    let ok = !b.is_empty()
        && b[0].is_ascii_lowercase()
        && is_lower_alnum(b[b.len() - 1])
        && b.iter().all(|&c| is_lower_alnum(c) || c == b'-');
    if !ok {
        errs.push(regex_error(
            DNS1035_LABEL_MSG,
            DNS1035_LABEL_FMT,
            &["my-name", "abc-123"],
        ));
    }
    errs
}

fn matches_qualified_name_part(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|&c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_' || c == b'.')
}

/// Upstream `IsQualifiedName` (label keys, annotation keys).
pub fn is_qualified_name(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    let parts: Vec<&str> = s.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                errs.push("prefix part must be non-empty".to_string());
            } else {
                errs.extend(
                    is_dns1123_subdomain(prefix)
                        .into_iter()
                        .map(|m| format!("prefix part {m}")),
                );
            }
            *name
        }
        _ => {
            errs.push(format!(
                "a qualified name {} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')",
                regex_error(QUALIFIED_NAME_MSG, QUALIFIED_NAME_FMT, &["MyName", "my.name", "123-abc"])
            ));
            return errs;
        }
    };
    if name.is_empty() {
        errs.push("name part must be non-empty".to_string());
    } else if name.len() > 63 {
        errs.push(format!("name part {}", max_len_error(63)));
    }
    if !matches_qualified_name_part(name) {
        errs.push(format!(
            "name part {}",
            regex_error(
                QUALIFIED_NAME_MSG,
                QUALIFIED_NAME_FMT,
                &["MyName", "my.name", "123-abc"]
            )
        ));
    }
    errs
}

/// Upstream `IsValidLabelValue`.
pub fn is_valid_label_value(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > 63 {
        errs.push(max_len_error(63));
    }
    if !s.is_empty() && !matches_qualified_name_part(s) {
        errs.push(regex_error(
            LABEL_VALUE_MSG,
            LABEL_VALUE_FMT,
            &["MyValue", "my_value", "12345"],
        ));
    }
    errs
}

/// Upstream `IsConfigMapKey` (ConfigMap and Secret data keys).
pub fn is_config_map_key(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > 253 {
        errs.push(max_len_error(253));
    }
    let ok = !s.is_empty()
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_' || c == b'.');
    if !ok {
        errs.push(regex_error(
            CONFIG_KEY_MSG,
            CONFIG_KEY_FMT,
            &["key.name", "KEY_NAME", "key-name"],
        ));
    }
    if s == "." {
        errs.push("must not be '.'".to_string());
    } else if s == ".." {
        errs.push("must not be '..'".to_string());
    } else if s.starts_with("..") {
        errs.push("must not start with '..'".to_string());
    }
    errs
}

/// Upstream `IsValidPortName` (IANA_SVC_NAME).
pub fn is_valid_port_name(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > 15 {
        errs.push(max_len_error(15));
    }
    if s.is_empty()
        || !s
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
    {
        errs.push(
            "must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)".to_string(),
        );
    }
    if !s.bytes().any(|c| c.is_ascii_lowercase()) {
        errs.push("must contain at least one letter (a-z)".to_string());
    }
    if s.contains("--") {
        errs.push("must not contain consecutive hyphens".to_string());
    }
    if s.starts_with('-') || s.ends_with('-') {
        errs.push("must not begin or end with a hyphen".to_string());
    }
    errs
}

/// Upstream `IsValidPortNum`.
pub fn is_valid_port_num(port: i64) -> Vec<String> {
    if (1..=65535).contains(&port) {
        Vec::new()
    } else {
        vec![inclusive_range_error(1, 65535)]
    }
}

/// Upstream `path.IsValidPathSegmentName` (RBAC names).
pub fn is_valid_path_segment_name(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s == "." || s == ".." {
        errs.push(format!("may not be '{s}'"));
        return errs;
    }
    for illegal in ["/", "%"] {
        if s.contains(illegal) {
            errs.push(format!("may not contain '{illegal}'"));
        }
    }
    errs
}

/// How an object's name is validated (upstream `ValidateNameFunc`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameRule {
    Dns1123Subdomain,
    Dns1123Label,
    Dns1035Label,
    PathSegment,
}

impl NameRule {
    /// Validates a name; `prefix` is a generateName, whose trailing dashes
    /// are allowed since a random suffix follows.
    pub fn check(self, name: &str, prefix: bool) -> Vec<String> {
        let name = if prefix {
            name.trim_end_matches('-')
        } else {
            name
        };
        // A generateName that is only dashes masks to "": checked as "a".
        let name = if prefix && name.is_empty() { "a" } else { name };
        match self {
            NameRule::Dns1123Subdomain => is_dns1123_subdomain(name),
            NameRule::Dns1123Label => is_dns1123_label(name),
            NameRule::Dns1035Label => is_dns1035_label(name),
            NameRule::PathSegment => is_valid_path_segment_name(name),
        }
    }
}

/// Upstream `ValidateLabels`: every key a qualified name, every value a label value.
pub fn validate_labels(labels: Option<&Value>, path: &FieldPath) -> Vec<Cause> {
    let mut errs = Vec::new();
    let Some(map) = labels.and_then(Value::as_object) else {
        return errs;
    };
    for (k, v) in map {
        for msg in is_qualified_name(k) {
            errs.push(field::invalid(path, k.as_str(), &msg));
        }
        let v = v.as_str().unwrap_or_default();
        for msg in is_valid_label_value(v) {
            errs.push(field::invalid(path, v, &msg));
        }
    }
    errs
}

/// Upstream `ValidateAnnotations`: keys are qualified names (case-insensitive),
/// and the total size is at most 256 KiB.
pub fn validate_annotations(annotations: Option<&Value>, path: &FieldPath) -> Vec<Cause> {
    let mut errs = Vec::new();
    let Some(map) = annotations.and_then(Value::as_object) else {
        return errs;
    };
    let mut total = 0usize;
    for (k, v) in map {
        for msg in is_qualified_name(&k.to_lowercase()) {
            errs.push(field::invalid(path, k.as_str(), &msg));
        }
        total += k.len() + v.as_str().map(str::len).unwrap_or_default();
    }
    if total > TOTAL_ANNOTATION_SIZE_LIMIT {
        errs.push(field::too_long(path, TOTAL_ANNOTATION_SIZE_LIMIT));
    }
    errs
}

/// Upstream `ValidateObjectMeta` for create.
pub fn validate_object_meta(object: &Value, namespaced: bool, rule: NameRule) -> Vec<Cause> {
    let meta = FieldPath::new("metadata");
    let mut errs = Vec::new();
    let name = get_str(object, &["metadata", "name"]);
    let generate_name = get_str(object, &["metadata", "generateName"]);
    if !generate_name.is_empty() {
        for msg in rule.check(generate_name, true) {
            errs.push(field::invalid(
                &meta.child("generateName"),
                generate_name,
                &msg,
            ));
        }
    }
    if name.is_empty() {
        if generate_name.is_empty() {
            errs.push(field::required(
                &meta.child("name"),
                "name or generateName is required",
            ));
        }
    } else {
        for msg in rule.check(name, false) {
            errs.push(field::invalid(&meta.child("name"), name, &msg));
        }
    }
    let namespace = get_str(object, &["metadata", "namespace"]);
    if namespaced {
        if namespace.is_empty() {
            errs.push(field::required(&meta.child("namespace"), ""));
        } else {
            for msg in is_dns1123_label(namespace) {
                errs.push(field::invalid(&meta.child("namespace"), namespace, &msg));
            }
        }
    } else if !namespace.is_empty() {
        errs.push(field::forbidden(
            &meta.child("namespace"),
            "not allowed on this type",
        ));
    }
    if let Some(g) = object
        .pointer("/metadata/generation")
        .and_then(Value::as_i64)
        && g < 0
    {
        errs.push(field::invalid(
            &meta.child("generation"),
            g,
            "must be greater than or equal to 0",
        ));
    }
    errs.extend(validate_labels(
        object.pointer("/metadata/labels"),
        &meta.child("labels"),
    ));
    errs.extend(validate_annotations(
        object.pointer("/metadata/annotations"),
        &meta.child("annotations"),
    ));
    errs.extend(validate_finalizers(object));
    errs
}

fn validate_finalizers(object: &Value) -> Vec<Cause> {
    let path = FieldPath::new("metadata").child("finalizers");
    let mut errs = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for f in super::json::get_array(object, &["metadata", "finalizers"]) {
        let f = f.as_str().unwrap_or_default();
        for msg in is_qualified_name(f) {
            errs.push(field::invalid(&path, f, &msg));
        }
        if !seen.insert(f) {
            errs.push(field::duplicate(&path, f));
        }
    }
    errs
}

/// Upstream `ValidateObjectMetaUpdate`: identity fields are immutable, and
/// the new metadata must still be valid.
pub fn validate_object_meta_update(new: &Value, old: &Value, namespaced: bool) -> Vec<Cause> {
    let meta = FieldPath::new("metadata");
    let mut errs = Vec::new();
    for key in ["name", "namespace", "uid", "creationTimestamp"] {
        let n = get_str(new, &["metadata", key]);
        let o = get_str(old, &["metadata", key]);
        // An update may omit uid/creationTimestamp: the server fills them in.
        if n != o && !(n.is_empty() && (key == "uid" || key == "creationTimestamp")) {
            errs.push(field::invalid(&meta.child(key), n, "field is immutable"));
        }
    }
    if namespaced && get_str(new, &["metadata", "namespace"]).is_empty() {
        errs.push(field::required(&meta.child("namespace"), ""));
    }
    errs.extend(validate_labels(
        new.pointer("/metadata/labels"),
        &meta.child("labels"),
    ));
    errs.extend(validate_annotations(
        new.pointer("/metadata/annotations"),
        &meta.child("annotations"),
    ));
    errs.extend(validate_finalizers(new));
    errs
}

/// A JSON string map as the Go `map[string]string` bad value.
pub fn map_value(v: Option<&Value>) -> BadValue {
    BadValue::StrMap(super::json::str_map(v))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn subdomain_message_is_upstream() {
        assert_eq!(
            is_dns1123_subdomain("A"),
            vec![
                "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
            ]
        );
        assert!(is_dns1123_subdomain("a.b-c").is_empty());
    }

    #[test]
    fn label_message_has_upstream_double_space() {
        assert_eq!(
            is_dns1123_label("Foo"),
            vec![
                "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
            ]
        );
        assert_eq!(is_dns1123_label("a.b"), vec!["must not contain dots"]);
        assert_eq!(
            is_dns1123_label(&"a".repeat(64)),
            vec!["must be no more than 63 characters"]
        );
    }

    #[test]
    fn dns1035_rejects_leading_digit() {
        assert_eq!(
            is_dns1035_label("1abc"),
            vec![
                "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')"
            ]
        );
    }

    #[test]
    fn qualified_names_and_label_values() {
        assert!(is_qualified_name("app.kubernetes.io/name").is_empty());
        assert_eq!(
            is_qualified_name("/a"),
            vec!["prefix part must be non-empty"]
        );
        assert_eq!(
            is_qualified_name("a b"),
            vec![
                "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
            ]
        );
        assert!(is_valid_label_value("").is_empty());
        assert_eq!(
            is_valid_label_value("-x"),
            vec![
                "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
            ]
        );
    }

    #[test]
    fn object_meta_requires_name_and_namespace() {
        let errs = validate_object_meta(&json!({"metadata": {}}), true, NameRule::Dns1123Subdomain);
        assert_eq!(errs[0].field, "metadata.name");
        assert_eq!(
            errs[0].message,
            "Required value: name or generateName is required"
        );
        assert_eq!(errs[1].field, "metadata.namespace");
        let errs = validate_object_meta(
            &json!({"metadata": {"name": "n", "namespace": "x"}}),
            false,
            NameRule::Dns1123Subdomain,
        );
        assert_eq!(errs[0].message, "Forbidden: not allowed on this type");
        let ok = validate_object_meta(
            &json!({"metadata": {"generateName": "web-", "namespace": "d"}}),
            true,
            NameRule::Dns1123Label,
        );
        assert!(ok.is_empty(), "{ok:?}");
    }

    #[test]
    fn annotations_size_is_limited() {
        let big = "x".repeat(TOTAL_ANNOTATION_SIZE_LIMIT);
        let errs = validate_annotations(
            Some(&json!({"a": big})),
            &FieldPath::new("metadata").child("annotations"),
        );
        assert_eq!(
            errs[0].message,
            "Too long: may not be more than 262144 bytes"
        );
        assert_eq!(errs[0].reason, "FieldValueTooLong");
    }

    #[test]
    fn config_keys() {
        assert!(is_config_map_key("a.b_C-1").is_empty());
        assert_eq!(
            is_config_map_key("a/b"),
            vec![
                "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')"
            ]
        );
        assert_eq!(is_config_map_key("..a"), vec!["must not start with '..'"]);
    }

    #[test]
    fn port_names() {
        assert!(is_valid_port_name("http").is_empty());
        assert_eq!(
            is_valid_port_name("80"),
            vec!["must contain at least one letter (a-z)"]
        );
        assert_eq!(
            is_valid_port_name("a--b"),
            vec!["must not contain consecutive hyphens"]
        );
    }
}
