//! The RBAC authorizer: an in-memory index of Roles, ClusterRoles,
//! RoleBindings and ClusterRoleBindings (fed by `policy_cache` from the
//! watch cache) evaluated against request attributes, with upstream's rule
//! matching (`rbac/v1/helpers.go`) and allow/deny reasons. No I/O.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};

use super::UserInfo;
use super::attributes::Attributes;

/// The storage prefixes the index follows.
pub const CLUSTER_ROLES: &str = "/registry/clusterroles/";
pub const ROLES: &str = "/registry/roles/";
pub const CLUSTER_ROLE_BINDINGS: &str = "/registry/clusterrolebindings/";
pub const ROLE_BINDINGS: &str = "/registry/rolebindings/";

/// An authorizer's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// Why (allowed), or what went wrong while evaluating (denied); may be empty.
    pub reason: String,
}

impl Decision {
    pub fn allow(reason: impl Into<String>) -> Self {
        Self {
            allowed: true,
            reason: reason.into(),
        }
    }

    pub fn deny(reason: impl Into<String>) -> Self {
        Self {
            allowed: false,
            reason: reason.into(),
        }
    }
}

#[derive(Debug, Clone)]
struct Binding {
    role_ref: RoleRef,
    subjects: Vec<Subject>,
}

/// Every RBAC object, indexed for evaluation.
#[derive(Debug, Default)]
pub struct Policy {
    cluster_roles: HashMap<String, Arc<[PolicyRule]>>,
    roles: HashMap<String, HashMap<String, Arc<[PolicyRule]>>>,
    cluster_role_bindings: BTreeMap<String, Binding>,
    role_bindings: HashMap<String, BTreeMap<String, Binding>>,
}

fn rules_of(rules: Option<Vec<PolicyRule>>) -> Arc<[PolicyRule]> {
    rules.unwrap_or_default().into()
}

/// `ns/name` or `name` after a storage prefix.
fn split_key<'a>(key: &'a str, prefix: &str) -> Option<(Option<&'a str>, &'a str)> {
    let rest = key.strip_prefix(prefix)?;
    Some(match rest.split_once('/') {
        Some((ns, name)) => (Some(ns), name),
        None => (None, rest),
    })
}

impl Policy {
    /// Applies a stored value (`None`: deleted) under `key`; values that do
    /// not parse are dropped (with a log line), as if deleted.
    pub fn apply(&mut self, key: &str, value: Option<&[u8]>) {
        fn parse<T: serde::de::DeserializeOwned>(key: &str, v: Option<&[u8]>) -> Option<T> {
            let v = v?;
            match serde_json::from_slice(v) {
                Ok(t) => Some(t),
                Err(err) => {
                    tracing::warn!(%key, %err, "stored RBAC object does not parse; ignored");
                    None
                }
            }
        }
        if let Some((_, name)) = split_key(key, CLUSTER_ROLES) {
            match parse::<ClusterRole>(key, value) {
                Some(r) => {
                    self.cluster_roles.insert(name.into(), rules_of(r.rules));
                }
                None => {
                    self.cluster_roles.remove(name);
                }
            }
        } else if let Some((Some(ns), name)) = split_key(key, ROLES) {
            match parse::<Role>(key, value) {
                Some(r) => {
                    self.roles
                        .entry(ns.into())
                        .or_default()
                        .insert(name.into(), rules_of(r.rules));
                }
                None => {
                    if let Some(m) = self.roles.get_mut(ns) {
                        m.remove(name);
                    }
                }
            }
        } else if let Some((_, name)) = split_key(key, CLUSTER_ROLE_BINDINGS) {
            match parse::<ClusterRoleBinding>(key, value) {
                Some(b) => {
                    self.cluster_role_bindings.insert(
                        name.into(),
                        Binding {
                            role_ref: b.role_ref,
                            subjects: b.subjects.unwrap_or_default(),
                        },
                    );
                }
                None => {
                    self.cluster_role_bindings.remove(name);
                }
            }
        } else if let Some((Some(ns), name)) = split_key(key, ROLE_BINDINGS) {
            match parse::<RoleBinding>(key, value) {
                Some(b) => {
                    self.role_bindings.entry(ns.into()).or_default().insert(
                        name.into(),
                        Binding {
                            role_ref: b.role_ref,
                            subjects: b.subjects.unwrap_or_default(),
                        },
                    );
                }
                None => {
                    if let Some(m) = self.role_bindings.get_mut(ns) {
                        m.remove(name);
                    }
                }
            }
        }
    }

    /// Drops every object under `prefix` (before a re-list).
    pub fn clear(&mut self, prefix: &str) {
        match prefix {
            CLUSTER_ROLES => self.cluster_roles.clear(),
            ROLES => self.roles.clear(),
            CLUSTER_ROLE_BINDINGS => self.cluster_role_bindings.clear(),
            ROLE_BINDINGS => self.role_bindings.clear(),
            _ => {}
        }
    }

    fn role_rules(&self, role_ref: &RoleRef, namespace: &str) -> Result<Arc<[PolicyRule]>, String> {
        match role_ref.kind.as_str() {
            "ClusterRole" => self
                .cluster_roles
                .get(&role_ref.name)
                .cloned()
                .ok_or_else(|| {
                    format!(
                        "clusterrole.rbac.authorization.k8s.io \"{}\" not found",
                        role_ref.name
                    )
                }),
            "Role" => self
                .roles
                .get(namespace)
                .and_then(|m| m.get(&role_ref.name))
                .cloned()
                .ok_or_else(|| {
                    format!(
                        "role.rbac.authorization.k8s.io \"{}\" not found",
                        role_ref.name
                    )
                }),
            other => Err(format!("unsupported role reference kind: \"{other}\"")),
        }
    }

    /// Visits the rules that apply to `user` in `namespace` ("" for cluster
    /// scope only), binding by binding, as upstream's `VisitRulesFor`: the
    /// visitor gets a description of the grant and the rules, and returns
    /// `false` to stop. Returns the errors met (missing roles).
    fn visit(
        &self,
        user: &UserInfo,
        namespace: &str,
        mut visitor: impl FnMut(&dyn Fn() -> String, &[PolicyRule]) -> bool,
    ) -> Vec<String> {
        let mut errors = Vec::new();
        for (name, b) in &self.cluster_role_bindings {
            let Some(subject) = b.subjects.iter().find(|s| applies_to(user, s, "")) else {
                continue;
            };
            match self.role_rules(&b.role_ref, "") {
                Ok(rules) => {
                    let describe = || {
                        format!(
                            "ClusterRoleBinding \"{name}\" of {} \"{}\" to {}",
                            b.role_ref.kind,
                            b.role_ref.name,
                            describe_subject(subject, "")
                        )
                    };
                    if !visitor(&describe, &rules) {
                        return errors;
                    }
                }
                Err(e) => errors.push(e),
            }
        }
        if namespace.is_empty() {
            return errors;
        }
        let Some(bindings) = self.role_bindings.get(namespace) else {
            return errors;
        };
        for (name, b) in bindings {
            let Some(subject) = b.subjects.iter().find(|s| applies_to(user, s, namespace)) else {
                continue;
            };
            match self.role_rules(&b.role_ref, namespace) {
                Ok(rules) => {
                    let describe = || {
                        format!(
                            "RoleBinding \"{name}/{namespace}\" of {} \"{}\" to {}",
                            b.role_ref.kind,
                            b.role_ref.name,
                            describe_subject(subject, namespace)
                        )
                    };
                    if !visitor(&describe, &rules) {
                        return errors;
                    }
                }
                Err(e) => errors.push(e),
            }
        }
        errors
    }

    /// Whether RBAC allows the request, with upstream's reasons.
    pub fn authorize(&self, user: &UserInfo, attrs: &Attributes) -> Decision {
        let mut allowed_by = None;
        let errors = self.visit(user, attrs.namespace(), |describe, rules| {
            if rules.iter().any(|r| rule_allows(attrs, r)) {
                allowed_by = Some(describe());
                false
            } else {
                true
            }
        });
        match allowed_by {
            Some(how) => Decision::allow(format!("RBAC: allowed by {how}")),
            None if errors.is_empty() => Decision::deny(""),
            None => Decision::deny(format!("RBAC: {}", aggregate(&errors))),
        }
    }

    /// Every rule that applies to `user` in `namespace` (SelfSubjectRulesReview),
    /// and the errors met while collecting them.
    pub fn rules_for(&self, user: &UserInfo, namespace: &str) -> (Vec<PolicyRule>, Vec<String>) {
        let mut all = Vec::new();
        let errors = self.visit(user, namespace, |_, rules| {
            all.extend(rules.iter().cloned());
            true
        });
        (all, errors)
    }
}

/// `utilerrors.NewAggregate(errs).Error()`.
fn aggregate(errors: &[String]) -> String {
    match errors {
        [one] => one.clone(),
        many => format!("[{}]", many.join(", ")),
    }
}

fn describe_subject(s: &Subject, binding_namespace: &str) -> String {
    if s.kind == "ServiceAccount" {
        let ns = s
            .namespace
            .as_deref()
            .filter(|n| !n.is_empty())
            .unwrap_or(binding_namespace);
        format!("{} \"{}/{}\"", s.kind, s.name, ns)
    } else {
        format!("{} \"{}\"", s.kind, s.name)
    }
}

/// Whether `subject` names `user` (upstream `appliesToUser`); `namespace` is
/// the binding's, the default for ServiceAccount subjects.
pub fn applies_to(user: &UserInfo, subject: &Subject, namespace: &str) -> bool {
    match subject.kind.as_str() {
        "User" => user.username == subject.name,
        "Group" => user.groups.contains(&subject.name),
        "ServiceAccount" => {
            let ns = subject
                .namespace
                .as_deref()
                .filter(|n| !n.is_empty())
                .unwrap_or(namespace);
            !ns.is_empty()
                && user
                    .username
                    .strip_prefix("system:serviceaccount:")
                    .and_then(|rest| rest.split_once(':'))
                    .is_some_and(|(n, name)| n == ns && name == subject.name)
        }
        _ => false,
    }
}

fn list(v: &Option<Vec<String>>) -> &[String] {
    v.as_deref().unwrap_or(&[])
}

pub fn verb_matches(rule: &PolicyRule, verb: &str) -> bool {
    rule.verbs.iter().any(|v| v == "*" || v == verb)
}

pub fn api_group_matches(rule: &PolicyRule, group: &str) -> bool {
    list(&rule.api_groups)
        .iter()
        .any(|g| g == "*" || g == group)
}

/// `resource` is `pods` or `pods/log`; a rule's `*/log` matches any
/// resource's `log` subresource.
pub fn resource_matches(rule: &PolicyRule, combined: &str, subresource: &str) -> bool {
    list(&rule.resources).iter().any(|r| {
        r == "*"
            || r == combined
            || (!subresource.is_empty()
                && r.len() == subresource.len() + 2
                && r.starts_with("*/")
                && r.ends_with(subresource))
    })
}

pub fn resource_name_matches(rule: &PolicyRule, name: &str) -> bool {
    let names = list(&rule.resource_names);
    names.is_empty() || names.iter().any(|n| n == name)
}

/// `*`, an exact path, or a prefix ending in `*`.
pub fn non_resource_url_matches(rule: &PolicyRule, path: &str) -> bool {
    list(&rule.non_resource_urls).iter().any(|u| {
        u == "*"
            || u == path
            || u.strip_suffix('*')
                .is_some_and(|prefix| path.starts_with(prefix))
    })
}

/// Upstream `RuleAllows`.
pub fn rule_allows(attrs: &Attributes, rule: &PolicyRule) -> bool {
    match attrs {
        Attributes::Resource(r) => {
            let combined = if r.subresource.is_empty() {
                r.resource.clone()
            } else {
                format!("{}/{}", r.resource, r.subresource)
            };
            verb_matches(rule, &r.verb)
                && api_group_matches(rule, &r.api_group)
                && resource_matches(rule, &combined, &r.subresource)
                && resource_name_matches(rule, &r.name)
        }
        Attributes::NonResource { verb, path } => {
            verb_matches(rule, verb) && non_resource_url_matches(rule, path)
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::auth::attributes::ResourceAttributes;

    fn rule(v: serde_json::Value) -> PolicyRule {
        serde_json::from_value(v).unwrap()
    }

    fn res(verb: &str, group: &str, resource: &str, sub: &str, ns: &str, name: &str) -> Attributes {
        Attributes::Resource(ResourceAttributes {
            verb: verb.into(),
            api_group: group.into(),
            resource: resource.into(),
            subresource: sub.into(),
            namespace: ns.into(),
            name: name.into(),
            ..Default::default()
        })
    }

    fn user(name: &str, groups: &[&str]) -> UserInfo {
        UserInfo {
            username: name.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        }
    }

    #[test]
    fn verbs_groups_and_resources_match_exactly_or_by_wildcard() {
        let r = rule(json!({"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods"]}));
        assert!(rule_allows(&res("get", "", "pods", "", "d", "x"), &r));
        assert!(rule_allows(&res("list", "", "pods", "", "d", ""), &r));
        assert!(!rule_allows(&res("watch", "", "pods", "", "d", ""), &r));
        assert!(!rule_allows(&res("get", "apps", "pods", "", "d", ""), &r));
        assert!(!rule_allows(&res("get", "", "secrets", "", "d", ""), &r));
        let all = rule(json!({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}));
        assert!(rule_allows(
            &res("deletecollection", "apps", "deployments", "scale", "", ""),
            &all
        ));
    }

    #[test]
    fn subresources_need_their_own_rule_or_a_star_prefix() {
        let pods = rule(json!({"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}));
        assert!(!rule_allows(
            &res("get", "", "pods", "log", "d", "x"),
            &pods
        ));
        let log = rule(json!({"verbs": ["get"], "apiGroups": [""], "resources": ["pods/log"]}));
        assert!(rule_allows(&res("get", "", "pods", "log", "d", "x"), &log));
        assert!(!rule_allows(&res("get", "", "pods", "", "d", "x"), &log));
        let any_status =
            rule(json!({"verbs": ["update"], "apiGroups": ["*"], "resources": ["*/status"]}));
        assert!(rule_allows(
            &res("update", "apps", "deployments", "status", "d", "x"),
            &any_status
        ));
        assert!(!rule_allows(
            &res("update", "apps", "deployments", "scale", "d", "x"),
            &any_status
        ));
    }

    #[test]
    fn resource_names_restrict_to_the_named_objects() {
        let r = rule(
            json!({"verbs": ["get"], "apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["cluster-info"]}),
        );
        assert!(rule_allows(
            &res("get", "", "configmaps", "", "kube-public", "cluster-info"),
            &r
        ));
        assert!(!rule_allows(
            &res("get", "", "configmaps", "", "kube-public", "other"),
            &r
        ));
        assert!(!rule_allows(
            &res("list", "", "configmaps", "", "kube-public", ""),
            &r
        ));
    }

    #[test]
    fn non_resource_urls_match_exactly_or_by_star_suffix() {
        let r = rule(json!({"verbs": ["get"], "nonResourceURLs": ["/healthz", "/apis/*"]}));
        let get = |p: &str| Attributes::NonResource {
            verb: "get".into(),
            path: p.into(),
        };
        assert!(rule_allows(&get("/healthz"), &r));
        assert!(!rule_allows(&get("/healthz/ping"), &r));
        assert!(rule_allows(&get("/apis/apps/v1"), &r));
        assert!(!rule_allows(&get("/api"), &r));
        let post = Attributes::NonResource {
            verb: "post".into(),
            path: "/healthz".into(),
        };
        assert!(!rule_allows(&post, &r));
        // A resource rule never matches a non-resource request.
        let resource = rule(json!({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}));
        assert!(!rule_allows(&get("/healthz"), &resource));
    }

    fn policy() -> Policy {
        let mut p = Policy::default();
        let put = |p: &mut Policy, key: &str, v: serde_json::Value| {
            p.apply(key, Some(&serde_json::to_vec(&v).unwrap()));
        };
        put(
            &mut p,
            "/registry/clusterroles/view",
            json!({"metadata": {"name": "view"}, "rules": [{"verbs": ["get", "list", "watch"], "apiGroups": [""], "resources": ["pods"]}]}),
        );
        put(
            &mut p,
            "/registry/rolebindings/dev/jane-view",
            json!({"metadata": {"name": "jane-view", "namespace": "dev"}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"}, "subjects": [{"kind": "User", "name": "jane"}]}),
        );
        put(
            &mut p,
            "/registry/clusterrolebindings/sa-view",
            json!({"metadata": {"name": "sa-view"}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"}, "subjects": [{"kind": "ServiceAccount", "name": "bot", "namespace": "ci"}]}),
        );
        put(
            &mut p,
            "/registry/rolebindings/dev/dangling",
            json!({"metadata": {"name": "dangling", "namespace": "dev"}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "gone"}, "subjects": [{"kind": "Group", "name": "devs"}]}),
        );
        p
    }

    #[test]
    fn role_bindings_grant_only_in_their_namespace() {
        let p = policy();
        let jane = user("jane", &["system:authenticated"]);
        let d = p.authorize(&jane, &res("list", "", "pods", "", "dev", ""));
        assert!(d.allowed);
        assert_eq!(
            d.reason,
            "RBAC: allowed by RoleBinding \"jane-view/dev\" of ClusterRole \"view\" to User \"jane\""
        );
        assert!(
            !p.authorize(&jane, &res("list", "", "pods", "", "prod", ""))
                .allowed
        );
        assert!(
            !p.authorize(&jane, &res("list", "", "pods", "", "", ""))
                .allowed
        );
        assert!(
            !p.authorize(&jane, &res("delete", "", "pods", "", "dev", "x"))
                .allowed
        );
    }

    #[test]
    fn service_account_subjects_match_their_username() {
        let p = policy();
        let bot = user("system:serviceaccount:ci:bot", &["system:serviceaccounts"]);
        assert!(
            p.authorize(&bot, &res("get", "", "pods", "", "any", "x"))
                .allowed
        );
        let other = user("system:serviceaccount:dev:bot", &[]);
        assert!(
            !p.authorize(&other, &res("get", "", "pods", "", "any", "x"))
                .allowed
        );
    }

    #[test]
    fn missing_roles_are_the_denial_reason_and_deletes_revoke() {
        let mut p = policy();
        let dev = user("joe", &["devs"]);
        let d = p.authorize(&dev, &res("get", "", "pods", "", "dev", "x"));
        assert_eq!(
            d,
            Decision::deny("RBAC: role.rbac.authorization.k8s.io \"gone\" not found")
        );
        p.apply("/registry/rolebindings/dev/jane-view", None);
        let jane = user("jane", &[]);
        assert!(
            !p.authorize(&jane, &res("list", "", "pods", "", "dev", ""))
                .allowed
        );
    }

    #[test]
    fn rules_for_lists_cluster_and_namespace_rules() {
        let p = policy();
        let jane = user("jane", &[]);
        assert_eq!(p.rules_for(&jane, "dev").0.len(), 1);
        assert!(p.rules_for(&jane, "prod").0.is_empty());
    }
}
