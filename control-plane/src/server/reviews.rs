//! Virtual create-only APIs that store nothing: authentication.k8s.io
//! reviews (`kubectl auth whoami`) and authorization.k8s.io access reviews
//! (`kubectl auth can-i`); plus the catalog entry of core `bindings`.

use serde_json::{Value, json};

use crate::auth::{Attributes, Auth, Decision, ResourceAttributes, UserInfo};

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

/// The user a SubjectAccessReview asks about.
fn spec_user(body: &Value) -> UserInfo {
    let username = body
        .pointer("/spec/user")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let groups = body
        .pointer("/spec/groups")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|g| g.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    UserInfo { username, groups }
}

/// The attributes of an access review's `spec` (resourceAttributes or
/// nonResourceAttributes); `namespace` overrides (LocalSubjectAccessReview).
fn spec_attributes(body: &Value, namespace: Option<&str>) -> Attributes {
    let s = |p: &str| {
        body.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    if body.pointer("/spec/resourceAttributes").is_none()
        && body.pointer("/spec/nonResourceAttributes").is_some()
    {
        return Attributes::NonResource {
            verb: s("/spec/nonResourceAttributes/verb"),
            path: s("/spec/nonResourceAttributes/path"),
        };
    }
    let ra = "/spec/resourceAttributes";
    Attributes::Resource(ResourceAttributes {
        verb: s(&format!("{ra}/verb")),
        api_group: s(&format!("{ra}/group")),
        resource: s(&format!("{ra}/resource")),
        subresource: s(&format!("{ra}/subresource")),
        namespace: namespace
            .map(str::to_string)
            .unwrap_or_else(|| s(&format!("{ra}/namespace"))),
        name: s(&format!("{ra}/name")),
        field_selector: s(&format!("{ra}/fieldSelector/rawSelector")),
    })
}

fn access(decision: &Decision) -> Value {
    let mut v = json!({"allowed": decision.allowed});
    if !decision.reason.is_empty() {
        v["reason"] = decision.reason.clone().into();
    }
    v
}

fn rule_json(values: Option<&Vec<String>>) -> Value {
    json!(values.cloned().unwrap_or_default())
}

/// `SelfSubjectRulesReview` status: the rules `user` has in `namespace`.
fn rules_review(auth: &Auth, user: &UserInfo, namespace: &str) -> Value {
    let (mut rules, errors) = auth.rules_for(user, namespace);
    if user.is_master() {
        rules.insert(
            0,
            serde_json::from_value(json!({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}))
                .unwrap_or_default(),
        );
        rules.insert(
            1,
            serde_json::from_value(json!({"verbs": ["*"], "nonResourceURLs": ["*"]}))
                .unwrap_or_default(),
        );
    }
    let mut resource_rules = Vec::new();
    let mut non_resource_rules = Vec::new();
    for r in rules {
        if r.non_resource_urls.as_ref().is_some_and(|u| !u.is_empty()) {
            non_resource_rules.push(json!({"verbs": r.verbs, "nonResourceURLs": rule_json(r.non_resource_urls.as_ref())}));
        } else {
            let mut v = json!({"verbs": r.verbs, "apiGroups": rule_json(r.api_groups.as_ref()), "resources": rule_json(r.resources.as_ref())});
            if let Some(names) = r.resource_names.filter(|n| !n.is_empty()) {
                v["resourceNames"] = json!(names);
            }
            resource_rules.push(v);
        }
    }
    let mut status = json!({
        "resourceRules": resource_rules,
        "nonResourceRules": non_resource_rules,
        "incomplete": !errors.is_empty(),
    });
    if !errors.is_empty() {
        status["evaluationError"] = errors.join(", ").into();
    }
    status
}

/// Answers a review `body` posted by `user` (in `namespace` for the
/// namespaced LocalSubjectAccessReview); `None` for `bindings`, which the
/// object handlers serve.
pub async fn review(
    auth: &Auth,
    resource: &VirtualResource,
    user: &UserInfo,
    namespace: Option<&str>,
    body: &Value,
) -> Option<Value> {
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
            let token = body
                .pointer("/spec/token")
                .and_then(Value::as_str)
                .unwrap_or("");
            match auth.authenticate_token(token).await {
                Ok(u) => json!({
                    "authenticated": true,
                    "user": {"username": u.username, "groups": u.groups},
                    "audiences": [crate::auth::sa_token::ISSUER],
                }),
                Err(err) => json!({"user": {}, "error": err.to_string()}),
            }
        }
        "selfsubjectaccessreviews" => access(&auth.authorize(user, &spec_attributes(body, None))),
        "subjectaccessreviews" | "localsubjectaccessreviews" => {
            let subject = spec_user(body);
            access(&auth.authorize(&subject, &spec_attributes(body, namespace)))
        }
        "selfsubjectrulesreviews" => {
            let ns = body
                .pointer("/spec/namespace")
                .and_then(Value::as_str)
                .unwrap_or("");
            rules_review(auth, user, ns)
        }
        _ => return None,
    };
    out["status"] = status;
    Some(out)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::storage::Store;
    use crate::storage::embedded::EmbeddedStore;
    use crate::watch_cache::WatchCache;

    async fn auth() -> (tempfile::TempDir, Auth) {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(&dir.path().join("db")).unwrap());
        let cache = WatchCache::start(store).await.unwrap();
        (dir, Auth::new(cache))
    }

    #[tokio::test]
    async fn whoami_returns_the_callers_user_info() {
        let (_dir, auth) = auth().await;
        let user = UserInfo {
            username: "admin".into(),
            groups: vec!["system:masters".into(), "system:authenticated".into()],
        };
        let r = find("authentication.k8s.io", "v1", "selfsubjectreviews").unwrap();
        let out = review(
            &auth,
            r,
            &user,
            None,
            &json!({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}),
        )
        .await
        .unwrap();
        assert_eq!(out["status"]["userInfo"]["username"], "admin");
        assert_eq!(out["status"]["userInfo"]["groups"][0], "system:masters");
    }

    #[tokio::test]
    async fn can_i_is_allowed_for_masters_only_without_bindings() {
        let (_dir, auth) = auth().await;
        let user = UserInfo {
            username: "admin".into(),
            groups: vec!["system:masters".into()],
        };
        let r = find("authorization.k8s.io", "v1", "selfsubjectaccessreviews").unwrap();
        let body = json!({"spec": {"resourceAttributes": {"verb": "get", "resource": "pods"}}});
        assert_eq!(
            review(&auth, r, &user, None, &body).await.unwrap()["status"]["allowed"],
            true
        );
        assert_eq!(
            review(&auth, r, &UserInfo::anonymous(), None, &body)
                .await
                .unwrap()["status"]["allowed"],
            false
        );
        let sar = find("authorization.k8s.io", "v1", "subjectaccessreviews").unwrap();
        let body = json!({"spec": {"user": "x", "groups": ["system:masters"], "nonResourceAttributes": {"verb": "get", "path": "/foo"}}});
        assert_eq!(
            review(&auth, sar, &UserInfo::anonymous(), None, &body)
                .await
                .unwrap()["status"]["allowed"],
            true
        );
    }
}
