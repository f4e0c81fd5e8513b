//! Virtual create-only APIs that store nothing: authentication.k8s.io
//! reviews (`kubectl auth whoami`) and authorization.k8s.io access reviews
//! (`kubectl auth can-i`); plus the catalog entry of core `bindings`.

use serde_json::{Value, json};

use crate::auth::UserInfo;

/// A served resource that is not in the storage catalog.
#[derive(Debug, Clone, Copy)]
pub struct VirtualResource {
    pub group: &'static str,
    pub version: &'static str,
    pub api_version: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
}

macro_rules! virt {
    ($g:expr, $av:expr, $plural:expr, $singular:expr, $kind:expr, $ns:expr) => {
        VirtualResource {
            group: $g,
            version: "v1",
            api_version: $av,
            plural: $plural,
            singular: $singular,
            kind: $kind,
            namespaced: $ns,
        }
    };
}

const AUTHN: &str = "authentication.k8s.io";
const AUTHZ: &str = "authorization.k8s.io";

pub const VIRTUAL: &[VirtualResource] = &[
    virt!("", "v1", "bindings", "binding", "Binding", true),
    virt!(
        AUTHN,
        "authentication.k8s.io/v1",
        "selfsubjectreviews",
        "selfsubjectreview",
        "SelfSubjectReview",
        false
    ),
    virt!(
        AUTHN,
        "authentication.k8s.io/v1",
        "tokenreviews",
        "tokenreview",
        "TokenReview",
        false
    ),
    virt!(
        AUTHZ,
        "authorization.k8s.io/v1",
        "localsubjectaccessreviews",
        "localsubjectaccessreview",
        "LocalSubjectAccessReview",
        true
    ),
    virt!(
        AUTHZ,
        "authorization.k8s.io/v1",
        "selfsubjectaccessreviews",
        "selfsubjectaccessreview",
        "SelfSubjectAccessReview",
        false
    ),
    virt!(
        AUTHZ,
        "authorization.k8s.io/v1",
        "selfsubjectrulesreviews",
        "selfsubjectrulesreview",
        "SelfSubjectRulesReview",
        false
    ),
    virt!(
        AUTHZ,
        "authorization.k8s.io/v1",
        "subjectaccessreviews",
        "subjectaccessreview",
        "SubjectAccessReview",
        false
    ),
];

/// Looks a virtual resource up by group, version and plural.
pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static VirtualResource> {
    VIRTUAL
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

fn allowed(username: &str, groups: &[String]) -> bool {
    // No RBAC yet: every authenticated user may do everything.
    !username.is_empty() && username != crate::auth::ANONYMOUS
        || groups.iter().any(|g| g == "system:masters")
}

/// Answers a review `body` posted by `user`; `None` for `bindings`, which
/// the object handlers serve.
pub fn review(resource: &VirtualResource, user: &UserInfo, body: &Value) -> Option<Value> {
    let mut out = json!({
        "kind": resource.kind,
        "apiVersion": resource.api_version,
        "metadata": body.get("metadata").cloned().unwrap_or_else(|| json!({})),
    });
    if out["metadata"].get("creationTimestamp").is_none() {
        out["metadata"]["creationTimestamp"] = Value::Null;
    }
    if let Some(spec) = body.get("spec") {
        out["spec"] = spec.clone();
    }
    let status = match resource.plural {
        "selfsubjectreviews" => {
            json!({"userInfo": {"username": user.username, "groups": user.groups}})
        }
        "tokenreviews" => {
            json!({"authenticated": false, "user": {}, "error": "token authentication is not enabled"})
        }
        "selfsubjectaccessreviews" => access(allowed(&user.username, &user.groups)),
        "subjectaccessreviews" | "localsubjectaccessreviews" => {
            let username = body
                .pointer("/spec/user")
                .and_then(Value::as_str)
                .unwrap_or("");
            let groups: Vec<String> = body
                .pointer("/spec/groups")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|g| g.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            access(allowed(username, &groups))
        }
        "selfsubjectrulesreviews" => {
            if allowed(&user.username, &user.groups) {
                json!({
                    "resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}],
                    "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
                    "incomplete": false,
                })
            } else {
                json!({"resourceRules": [], "nonResourceRules": [], "incomplete": false})
            }
        }
        _ => return None,
    };
    out["status"] = status;
    Some(out)
}

fn access(allowed: bool) -> Value {
    if allowed {
        json!({"allowed": true})
    } else {
        json!({"allowed": false, "reason": "anonymous requests are not authorized"})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whoami_returns_the_callers_user_info() {
        let user = UserInfo {
            username: "admin".into(),
            groups: vec!["system:masters".into(), "system:authenticated".into()],
        };
        let r = find("authentication.k8s.io", "v1", "selfsubjectreviews").unwrap();
        let out = review(
            r,
            &user,
            &json!({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}),
        )
        .unwrap();
        assert_eq!(out["status"]["userInfo"]["username"], "admin");
        assert_eq!(out["status"]["userInfo"]["groups"][0], "system:masters");
    }

    #[test]
    fn can_i_is_allowed_for_masters() {
        let user = UserInfo {
            username: "admin".into(),
            groups: vec!["system:masters".into()],
        };
        let r = find("authorization.k8s.io", "v1", "selfsubjectaccessreviews").unwrap();
        let body = json!({"spec": {"resourceAttributes": {"verb": "get", "resource": "pods"}}});
        assert_eq!(review(r, &user, &body).unwrap()["status"]["allowed"], true);
        assert_eq!(
            review(r, &UserInfo::anonymous(), &body).unwrap()["status"]["allowed"],
            false
        );
    }
}
