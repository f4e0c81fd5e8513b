//! Small flag-value parsers with kubelet's (pflag's) wording: maps, taints,
//! label validation and Go durations. No I/O.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Taint;

const QUALIFIED_NAME_MSG: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
const LABEL_VALUE_MSG: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";
const DNS1123_SUBDOMAIN_MSG: &str = "prefix part a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";

/// Parses `k1<sep>v1,k2<sep>v2` as pflag's `MapStringString` (sep `=`) or
/// `LangleSeparatedMapStringString` (sep `<`). Later keys win.
pub fn parse_map(s: &str, sep: char) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for pair in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((k, v)) = pair.split_once(sep) else {
            return Err(format!("malformed pair, expect string{sep}string"));
        };
        out.insert(k.trim().to_owned(), v.trim().to_owned());
    }
    Ok(out)
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.'
}

fn is_label_shaped(s: &str) -> bool {
    s.chars().all(is_name_char)
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric())
}

fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|part| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !part.starts_with('-')
                && !part.ends_with('-')
        })
}

/// Upstream `validation.IsQualifiedName`: the error messages, empty when valid.
pub fn qualified_name_errors(key: &str) -> Vec<String> {
    let mut errs = Vec::new();
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if name.contains('/') {
        errs.push(format!("a qualified name {QUALIFIED_NAME_MSG_SHORT}"));
        return errs;
    }
    if let Some(p) = prefix {
        if p.is_empty() {
            errs.push("prefix part must be non-empty".to_owned());
        } else if !is_dns1123_subdomain(p) {
            errs.push(DNS1123_SUBDOMAIN_MSG.to_owned());
        }
    }
    if name.is_empty() {
        errs.push("name part must be non-empty".to_owned());
    } else if name.len() > 63 {
        errs.push("name part must be no more than 63 characters".to_owned());
    }
    if !name.is_empty() && !is_label_shaped(name) {
        errs.push(QUALIFIED_NAME_MSG.to_owned());
    }
    errs
}

const QUALIFIED_NAME_MSG_SHORT: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]') with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')";

/// Upstream `validation.IsValidLabelValue`: the error messages, empty when valid.
pub fn label_value_errors(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > 63 {
        errs.push("must be no more than 63 characters".to_owned());
    }
    if !value.is_empty() && !is_label_shaped(value) {
        errs.push(LABEL_VALUE_MSG.to_owned());
    }
    errs
}

/// Parses one taint as upstream `taints.parseTaint` (`key=value:Effect`,
/// `key:Effect` or `key`).
pub fn parse_taint(spec: &str) -> Result<Taint, String> {
    let parts: Vec<&str> = spec.split(':').collect();
    let (kv, effect) = match parts.as_slice() {
        [kv] => (*kv, String::new()),
        [kv, effect] => {
            if !matches!(*effect, "NoSchedule" | "PreferNoSchedule" | "NoExecute") {
                return Err(format!(
                    "invalid taint effect: {effect}, unsupported taint effect"
                ));
            }
            (*kv, (*effect).to_owned())
        }
        _ => return Err(format!("invalid taint spec: {spec}")),
    };
    let kv_parts: Vec<&str> = kv.split('=').collect();
    let (key, value) = match kv_parts.as_slice() {
        [k] => (*k, None),
        [k, v] if parts.len() == 2 => {
            let errs = label_value_errors(v);
            if !errs.is_empty() {
                return Err(format!("invalid taint spec: {spec}, {}", errs.join("; ")));
            }
            (*k, Some((*v).to_owned()))
        }
        _ => return Err(format!("invalid taint spec: {spec}")),
    };
    let errs = qualified_name_errors(key);
    if !errs.is_empty() {
        return Err(format!("invalid taint spec: {spec}, {}", errs.join("; ")));
    }
    Ok(Taint {
        key: key.to_owned(),
        value,
        effect,
        time_added: None,
    })
}

/// Parses a comma-separated list of taints.
pub fn parse_taints(s: &str) -> Result<Vec<Taint>, String> {
    s.split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(parse_taint)
        .collect()
}

/// Labels kubelet may set in the `kubernetes.io` namespaces (sorted, as upstream prints them).
pub const KUBELET_LABELS: [&str; 11] = [
    "beta.kubernetes.io/arch",
    "beta.kubernetes.io/instance-type",
    "beta.kubernetes.io/os",
    "failure-domain.beta.kubernetes.io/region",
    "failure-domain.beta.kubernetes.io/zone",
    "kubernetes.io/arch",
    "kubernetes.io/hostname",
    "kubernetes.io/os",
    "node.kubernetes.io/instance-type",
    "topology.kubernetes.io/region",
    "topology.kubernetes.io/zone",
];

/// Label namespaces kubelet may set freely.
pub const KUBELET_LABEL_NAMESPACES: [&str; 2] = ["kubelet.kubernetes.io", "node.kubernetes.io"];

fn label_namespace(key: &str) -> &str {
    key.split_once('/').map_or("", |(ns, _)| ns)
}

fn is_kubernetes_label(key: &str) -> bool {
    let ns = label_namespace(key);
    ns == "kubernetes.io"
        || ns.ends_with(".kubernetes.io")
        || ns == "k8s.io"
        || ns.ends_with(".k8s.io")
}

fn is_kubelet_label(key: &str) -> bool {
    let ns = label_namespace(key);
    KUBELET_LABELS.contains(&key)
        || KUBELET_LABEL_NAMESPACES
            .iter()
            .any(|allowed| ns == *allowed || ns.ends_with(&format!(".{allowed}")))
}

/// Validates `--node-labels` as kubelet's `ValidateKubeletFlags`.
pub fn validate_node_labels(labels: &BTreeMap<String, String>) -> Result<(), String> {
    let unknown: Vec<&str> = labels
        .keys()
        .filter(|k| is_kubernetes_label(k) && !is_kubelet_label(k))
        .map(String::as_str)
        .collect();
    if !unknown.is_empty() {
        return Err(format!(
            "unknown 'kubernetes.io' or 'k8s.io' labels specified with --node-labels: [{}]\n--node-labels in the 'kubernetes.io' namespace must begin with an allowed prefix ({}) or be in the specifically allowed set ({})",
            unknown.join(" "),
            KUBELET_LABEL_NAMESPACES.join(", "),
            KUBELET_LABELS.join(", ")
        ));
    }
    let mut invalid = Vec::new();
    for (k, v) in labels {
        let errs = qualified_name_errors(k);
        if !errs.is_empty() {
            invalid.push(format!("''{k}'' - {}", errs.join(", ")));
        }
        let errs = label_value_errors(v);
        if !errs.is_empty() {
            invalid.push(format!("''{v}'' - {}", errs.join(", ")));
        }
    }
    if invalid.is_empty() {
        Ok(())
    } else {
        Err(format!("invalid node labels: {}", invalid.join("; ")))
    }
}

/// Parses a Go duration (`time.ParseDuration`): `10s`, `1m30s`, `1.5h`, `500ms`.
pub fn parse_go_duration(s: &str) -> Result<Duration, String> {
    let invalid = || format!("time: invalid duration \"{s}\"");
    let body = s.strip_prefix('+').unwrap_or(s);
    if body.starts_with('-') {
        return if body == "-0" {
            Ok(Duration::ZERO)
        } else {
            Err(invalid())
        };
    }
    if body == "0" {
        return Ok(Duration::ZERO);
    }
    if body.is_empty() {
        return Err(invalid());
    }
    let mut rest = body;
    let mut total = 0f64;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("time: missing unit in duration \"{s}\""))?;
        let num: f64 = rest[..num_len].parse().map_err(|_| invalid())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let nanos_per = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            "" => return Err(format!("time: missing unit in duration \"{s}\"")),
            unit => return Err(format!("time: unknown unit \"{unit}\" in duration \"{s}\"")),
        };
        total += num * nanos_per;
        rest = &rest[unit_len..];
    }
    if !total.is_finite() || total > 9.2e18 {
        return Err(invalid());
    }
    Ok(Duration::from_nanos(total.round() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_pairs_need_their_separator() {
        let m = parse_map("cpu=100m, memory=256Mi", '=').unwrap();
        assert_eq!(m["cpu"], "100m");
        assert_eq!(m["memory"], "256Mi");
        assert_eq!(
            parse_map("cpu", '=').unwrap_err(),
            "malformed pair, expect string=string"
        );
        assert_eq!(
            parse_map("memory.available=1", '<').unwrap_err(),
            "malformed pair, expect string<string"
        );
        assert!(parse_map("", '=').unwrap().is_empty());
    }

    #[test]
    fn taints_parse_key_value_and_effect() {
        let t = parse_taint("dedicated=gpu:NoSchedule").unwrap();
        assert_eq!(t.key, "dedicated");
        assert_eq!(t.value.as_deref(), Some("gpu"));
        assert_eq!(t.effect, "NoSchedule");
        let t = parse_taint("node-role.kubernetes.io/control-plane:NoExecute").unwrap();
        assert_eq!(t.value, None);
        assert_eq!(
            parse_taint("a=b:Sometimes").unwrap_err(),
            "invalid taint effect: Sometimes, unsupported taint effect"
        );
        assert_eq!(
            parse_taint("a:b:NoSchedule").unwrap_err(),
            "invalid taint spec: a:b:NoSchedule"
        );
        assert!(
            parse_taint("-bad:NoSchedule")
                .unwrap_err()
                .starts_with("invalid taint spec: -bad:NoSchedule, name part must")
        );
        assert_eq!(parse_taints("a=b:NoSchedule,c:NoExecute").unwrap().len(), 2);
    }

    #[test]
    fn node_labels_in_kubernetes_namespace_must_be_allowed() {
        let mut labels = BTreeMap::new();
        labels.insert("node.kubernetes.io/pool".to_owned(), "a".to_owned());
        labels.insert("topology.kubernetes.io/zone".to_owned(), "z1".to_owned());
        labels.insert("example.com/team".to_owned(), "x".to_owned());
        assert!(validate_node_labels(&labels).is_ok());
        labels.insert("node-role.kubernetes.io/master".to_owned(), String::new());
        let err = validate_node_labels(&labels).unwrap_err();
        assert!(err.starts_with(
            "unknown 'kubernetes.io' or 'k8s.io' labels specified with --node-labels: [node-role.kubernetes.io/master]\n--node-labels in the 'kubernetes.io' namespace must begin with an allowed prefix (kubelet.kubernetes.io, node.kubernetes.io)"
        ));
    }

    #[test]
    fn node_labels_with_bad_values_are_invalid() {
        let mut labels = BTreeMap::new();
        labels.insert("team".to_owned(), "-x".to_owned());
        let err = validate_node_labels(&labels).unwrap_err();
        assert!(err.starts_with("invalid node labels: ''-x'' - a valid label must be"));
    }

    #[test]
    fn go_durations_parse_like_time_parse_duration() {
        assert_eq!(parse_go_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_go_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(
            parse_go_duration("500ms").unwrap(),
            Duration::from_millis(500)
        );
        assert_eq!(
            parse_go_duration("1.5h").unwrap(),
            Duration::from_secs(5400)
        );
        assert_eq!(parse_go_duration("0").unwrap(), Duration::ZERO);
        assert_eq!(
            parse_go_duration("10").unwrap_err(),
            "time: missing unit in duration \"10\""
        );
        assert_eq!(
            parse_go_duration("10x").unwrap_err(),
            "time: unknown unit \"x\" in duration \"10x\""
        );
        assert_eq!(
            parse_go_duration("abc").unwrap_err(),
            "time: invalid duration \"abc\""
        );
    }
}
