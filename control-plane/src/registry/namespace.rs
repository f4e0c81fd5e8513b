//! Namespaces (and Nodes): defaults and validation as upstream's namespace
//! strategy: the `kubernetes` finalizer, phase Active, finalizer names. No I/O.

use serde_json::{Value, json};

use super::Cause;
use super::field::{self, FieldPath};
use super::json::{default_str, get_array, obj_mut};
use super::meta::is_qualified_name;

/// The finalizer the namespace controller removes once a namespace is empty.
pub const KUBERNETES_FINALIZER: &str = "kubernetes";

/// The label every namespace carries with its own name.
pub const METADATA_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// `kubernetes.io/metadata.name` label, `spec.finalizers: [kubernetes]` and `status.phase: Active` on create.
pub fn default_namespace(ns: &mut Value) {
    let name = super::json::get_str(ns, &["metadata", "name"]).to_string();
    let Some(obj) = ns.as_object_mut() else {
        return;
    };
    if !name.is_empty()
        && let Some(labels) = obj_mut(obj, "metadata").and_then(|m| obj_mut(m, "labels"))
    {
        labels.insert(METADATA_NAME_LABEL.into(), json!(name));
    }
    if let Some(spec) = obj_mut(obj, "spec") {
        let empty = spec
            .get("finalizers")
            .and_then(Value::as_array)
            .is_none_or(Vec::is_empty);
        if empty {
            spec.insert("finalizers".into(), json!([KUBERNETES_FINALIZER]));
        }
    }
    if let Some(status) = obj_mut(obj, "status") {
        default_str(status, "phase", "Active");
    }
}

/// Upstream `validateFinalizerName` over `spec.finalizers`: a qualified
/// name, and a `/`-less one only if it is a standard finalizer.
pub fn validate_namespace(ns: &Value) -> Vec<Cause> {
    let mut errs = Vec::new();
    let path = FieldPath::new("spec").child("finalizers");
    for f in get_array(ns, &["spec", "finalizers"]) {
        let f = f.as_str().unwrap_or_default();
        for m in is_qualified_name(f) {
            errs.push(field::invalid(&path, f, &m));
        }
        if !f.contains('/')
            && f != KUBERNETES_FINALIZER
            && f != "orphan"
            && f != "foregroundDeletion"
        {
            errs.push(field::invalid(
                &path,
                f,
                "name is neither a standard finalizer name nor is it fully qualified",
            ));
        }
    }
    errs
}

/// Node validation beyond metadata: pod CIDRs must parse.
pub fn validate_node(node: &Value) -> Vec<Cause> {
    let mut errs = Vec::new();
    let path = FieldPath::new("spec");
    for (i, c) in get_array(node, &["spec", "podCIDRs"]).iter().enumerate() {
        let c = c.as_str().unwrap_or_default();
        let ok = c.split_once('/').is_some_and(|(ip, n)| {
            ip.parse::<std::net::IpAddr>().is_ok() && n.parse::<u8>().is_ok()
        });
        if !ok {
            errs.push(field::invalid(
                &path.child("podCIDRs").index(i),
                c,
                "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)",
            ));
        }
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_defaults() {
        let mut ns = json!({"metadata": {"name": "dev"}});
        default_namespace(&mut ns);
        assert_eq!(ns["spec"]["finalizers"], json!(["kubernetes"]));
        assert_eq!(ns["status"]["phase"], "Active");
        assert_eq!(ns["metadata"]["labels"][METADATA_NAME_LABEL], "dev");
        assert!(validate_namespace(&ns).is_empty());
    }

    #[test]
    fn unqualified_finalizers_are_rejected() {
        let ns = json!({"spec": {"finalizers": ["custom"]}});
        let errs = validate_namespace(&ns);
        assert_eq!(
            errs[0].message,
            "Invalid value: \"custom\": name is neither a standard finalizer name nor is it fully qualified"
        );
    }
}
