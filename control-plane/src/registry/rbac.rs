//! RBAC roles and bindings: rule shape, roleRef and subjects, and the
//! immutable roleRef of a binding. No I/O.

use serde_json::Value;

use super::Cause;
use super::field::{self, BadValue, FieldPath};
use super::json::{get_array, get_str};

const RBAC_GROUP: &str = "rbac.authorization.k8s.io";

/// Validates the rules of a Role (`namespaced`) or ClusterRole.
pub fn validate_role(role: &Value, namespaced: bool) -> Vec<Cause> {
    let mut errs = Vec::new();
    for (i, rule) in get_array(role, &["rules"]).iter().enumerate() {
        let rp = FieldPath::new("rules").index(i);
        if get_array(rule, &["verbs"]).is_empty() {
            errs.push(field::required(
                &rp.child("verbs"),
                "verbs must contain at least one value",
            ));
        }
        let urls = get_array(rule, &["nonResourceURLs"]);
        if !urls.is_empty() {
            if namespaced {
                errs.push(field::invalid(
                    &rp.child("nonResourceURLs"),
                    BadValue::from_json(rule.get("nonResourceURLs").unwrap_or(&Value::Null)),
                    "namespaced rules cannot apply to non-resource URLs",
                ));
            }
            if !get_array(rule, &["apiGroups"]).is_empty()
                || !get_array(rule, &["resources"]).is_empty()
                || !get_array(rule, &["resourceNames"]).is_empty()
            {
                errs.push(field::invalid(
                    &rp.child("nonResourceURLs"),
                    BadValue::from_json(rule.get("nonResourceURLs").unwrap_or(&Value::Null)),
                    "rules cannot apply to both regular resources and non-resource URLs",
                ));
            }
        } else {
            if get_array(rule, &["apiGroups"]).is_empty() {
                errs.push(field::required(
                    &rp.child("apiGroups"),
                    "resource rules must supply at least one api group",
                ));
            }
            if get_array(rule, &["resources"]).is_empty() {
                errs.push(field::required(
                    &rp.child("resources"),
                    "resource rules must supply at least one resource",
                ));
            }
        }
    }
    errs
}

/// Go's `%#v` of a `rbac.RoleRef`.
fn role_ref_repr(binding: &Value) -> BadValue {
    BadValue::Raw(format!(
        "rbac.RoleRef{{APIGroup:{}, Kind:{}, Name:{}}}",
        field::go_quote(get_str(binding, &["roleRef", "apiGroup"])),
        field::go_quote(get_str(binding, &["roleRef", "kind"])),
        field::go_quote(get_str(binding, &["roleRef", "name"])),
    ))
}

/// Validates a RoleBinding (`namespaced`) or ClusterRoleBinding.
pub fn validate_binding(binding: &Value, namespaced: bool) -> Vec<Cause> {
    let mut errs = Vec::new();
    let rr = FieldPath::new("roleRef");
    let group = get_str(binding, &["roleRef", "apiGroup"]);
    if group != RBAC_GROUP {
        errs.push(field::not_supported(
            &rr.child("apiGroup"),
            group,
            &[RBAC_GROUP],
        ));
    }
    let kind = get_str(binding, &["roleRef", "kind"]);
    let kinds: &[&str] = if namespaced {
        &["Role", "ClusterRole"]
    } else {
        &["ClusterRole"]
    };
    if !kinds.contains(&kind) {
        errs.push(field::not_supported(&rr.child("kind"), kind, kinds));
    }
    let name = get_str(binding, &["roleRef", "name"]);
    if name.is_empty() {
        errs.push(field::required(&rr.child("name"), ""));
    } else {
        for m in super::meta::is_valid_path_segment_name(name) {
            errs.push(field::invalid(&rr.child("name"), name, &m));
        }
    }
    for (i, s) in get_array(binding, &["subjects"]).iter().enumerate() {
        let sp = FieldPath::new("subjects").index(i);
        let sname = get_str(s, &["name"]);
        if sname.is_empty() {
            errs.push(field::required(&sp.child("name"), ""));
        }
        match get_str(s, &["kind"]) {
            "ServiceAccount" => {
                let g = get_str(s, &["apiGroup"]);
                if !g.is_empty() {
                    errs.push(field::not_supported(&sp.child("apiGroup"), g, &[""]));
                }
                if !namespaced && get_str(s, &["namespace"]).is_empty() {
                    errs.push(field::required(&sp.child("namespace"), ""));
                }
            }
            "User" | "Group" => {
                let g = get_str(s, &["apiGroup"]);
                if g != RBAC_GROUP {
                    errs.push(field::not_supported(
                        &sp.child("apiGroup"),
                        g,
                        &[RBAC_GROUP],
                    ));
                }
            }
            other => errs.push(field::not_supported(
                &sp.child("kind"),
                other,
                &["ServiceAccount", "User", "Group"],
            )),
        }
    }
    errs
}

/// A binding update: valid, with an unchanged roleRef.
pub fn validate_binding_update(new: &Value, old: &Value, namespaced: bool) -> Vec<Cause> {
    let mut errs = validate_binding(new, namespaced);
    if new.get("roleRef") != old.get("roleRef") {
        errs.push(field::invalid(
            &FieldPath::new("roleRef"),
            role_ref_repr(new),
            "cannot change roleRef",
        ));
    }
    errs
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn binding(role: &str) -> Value {
        json!({"roleRef": {"apiGroup": RBAC_GROUP, "kind": "Role", "name": role},
            "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": "d"}]})
    }

    #[test]
    fn role_rules_need_verbs() {
        let role = json!({"rules": [{"apiGroups": [""], "resources": ["pods"]}]});
        let errs = validate_role(&role, true);
        assert_eq!(
            errs[0].to_string(),
            "rules[0].verbs: Required value: verbs must contain at least one value"
        );
    }

    #[test]
    fn role_ref_cannot_change() {
        assert!(validate_binding(&binding("a"), true).is_empty());
        let errs = validate_binding_update(&binding("b"), &binding("a"), true);
        assert_eq!(
            errs[0].to_string(),
            "roleRef: Invalid value: rbac.RoleRef{APIGroup:\"rbac.authorization.k8s.io\", Kind:\"Role\", Name:\"b\"}: cannot change roleRef"
        );
    }

    #[test]
    fn cluster_role_binding_needs_cluster_role() {
        let errs = validate_binding(&binding("a"), false);
        assert_eq!(
            errs[0].to_string(),
            "roleRef.kind: Unsupported value: \"Role\": supported values: \"ClusterRole\""
        );
    }
}
