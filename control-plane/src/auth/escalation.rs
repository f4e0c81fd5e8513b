//! RBAC privilege-escalation prevention, checked by admission on every
//! create and update of a Role, ClusterRole, RoleBinding or
//! ClusterRoleBinding (kube-apiserver's `pkg/registry/rbac` policybased
//! storages and `pkg/registry/rbac/validation`): a user may only write a
//! role whose rules it already holds (unless it may `escalate` roles), and
//! only bind a role whose rules it holds (unless it may `bind` that role).
//! Rule coverage (`covers`), the missing-rule message and the GC-only
//! update test are pure; the authorizer and the rule index come from `Auth`.

use std::collections::{BTreeSet, HashMap, HashSet};

use k8s_openapi::api::rbac::v1::{PolicyRule, RoleRef};
use serde_json::Value;

use super::{Attributes, Auth, ResourceAttributes, UserInfo};
use crate::registry::field::go_quote;

pub const RBAC_GROUP: &str = "rbac.authorization.k8s.io";

/// Why a write would grant more than its author holds (answered 403).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EscalationError {
    /// Upstream `ConfirmNoEscalation`'s message.
    #[error(
        "user {user} (groups={groups}) is attempting to grant RBAC permissions not currently held:\n{missing}{resolution}"
    )]
    NotHeld {
        user: String,
        groups: String,
        missing: String,
        resolution: String,
    },
    /// An aggregationRule can gather any rule: only a holder of `*` may set it.
    #[error("must have cluster-admin privileges to use the aggregationRule")]
    AggregationRule,
}

/// The four RBAC kinds whose writes are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Role,
    ClusterRole,
    RoleBinding,
    ClusterRoleBinding,
}

impl Kind {
    /// The checked kind served at `group`/`plural`, if any.
    pub fn of(group: &str, plural: &str) -> Option<Self> {
        if group != RBAC_GROUP {
            return None;
        }
        match plural {
            "roles" => Some(Self::Role),
            "clusterroles" => Some(Self::ClusterRole),
            "rolebindings" => Some(Self::RoleBinding),
            "clusterrolebindings" => Some(Self::ClusterRoleBinding),
            _ => None,
        }
    }
}

/// Whether `user` is exempt from the checks: `system:masters` (the API
/// server's and the controllers' loopback identity), as upstream's
/// `EscalationAllowed`.
pub fn escalation_allowed(user: &UserInfo) -> bool {
    user.is_master()
}

/// Whether the authorizer lets `user` `escalate` the roles resource
/// `plural` (`roles` or `clusterroles`) named `name` in `namespace`
/// (upstream `RoleEscalationAuthorized`: the request's name, empty on a
/// create).
pub fn escalate_authorized(
    auth: &Auth,
    user: &UserInfo,
    plural: &str,
    namespace: &str,
    name: &str,
) -> bool {
    let attrs = Attributes::Resource(ResourceAttributes {
        verb: "escalate".into(),
        api_group: RBAC_GROUP.into(),
        resource: plural.into(),
        subresource: String::new(),
        namespace: namespace.into(),
        name: name.into(),
        ..Default::default()
    });
    auth.authorize(user, &attrs).allowed
}

/// Whether the authorizer lets `user` `bind` the role `role_ref` in
/// `namespace` (the binding's, "" for a ClusterRoleBinding), as upstream
/// `BindingAuthorized`.
pub fn bind_authorized(auth: &Auth, user: &UserInfo, role_ref: &RoleRef, namespace: &str) -> bool {
    let resource = match role_ref.kind.as_str() {
        "ClusterRole" => "clusterroles",
        "Role" => "roles",
        _ => return false,
    };
    let attrs = Attributes::Resource(ResourceAttributes {
        verb: "bind".into(),
        api_group: role_ref.api_group.clone(),
        resource: resource.into(),
        subresource: String::new(),
        namespace: namespace.into(),
        name: role_ref.name.clone(),
        ..Default::default()
    });
    auth.authorize(user, &attrs).allowed
}

/// Upstream `ConfirmNoEscalation`: `rules` must be covered by the rules
/// `user` holds in `namespace` (cluster-wide ones plus, for a namespace,
/// its RoleBindings').
pub fn confirm_no_escalation(
    auth: &Auth,
    user: &UserInfo,
    namespace: &str,
    rules: &[PolicyRule],
) -> Result<(), EscalationError> {
    let (owned, errors) = auth.rules_for(user, namespace);
    let missing = covers(&owned, rules);
    if missing.is_empty() {
        return Ok(());
    }
    if !errors.is_empty() {
        tracing::debug!(user = %user.username, ?errors, "non-fatal errors resolving the user's rules");
    }
    Err(not_held(user, missing, &errors))
}

/// Upstream `ConfirmNoEscalation` with the aggregationRule's `fullAuthority`.
pub fn confirm_full_authority(
    auth: &Auth,
    user: &UserInfo,
    namespace: &str,
) -> Result<(), EscalationError> {
    confirm_no_escalation(auth, user, namespace, &full_authority())
        .map_err(|_| EscalationError::AggregationRule)
}

/// `*` on everything: what setting an aggregationRule requires.
fn full_authority() -> [PolicyRule; 2] {
    [
        PolicyRule {
            verbs: vec!["*".into()],
            api_groups: Some(vec!["*".into()]),
            resources: Some(vec!["*".into()]),
            ..Default::default()
        },
        PolicyRule {
            verbs: vec!["*".into()],
            non_resource_urls: Some(vec!["*".into()]),
            ..Default::default()
        },
    ]
}

/// Whether a ClusterRole object has an aggregationRule with selectors.
pub fn has_aggregation_rule(cluster_role: &Value) -> bool {
    cluster_role
        .pointer("/aggregationRule/clusterRoleSelectors")
        .and_then(Value::as_array)
        .is_some_and(|s| !s.is_empty())
}

/// The message of `ConfirmNoEscalation` for the `missing` rules.
fn not_held(user: &UserInfo, missing: Vec<PolicyRule>, errors: &[String]) -> EscalationError {
    let missing: BTreeSet<String> = compact_rules(missing).iter().map(compact_string).collect();
    let resolution = if errors.is_empty() {
        String::new()
    } else {
        // Upstream's `%v` of a one-element `[]error` holding the aggregate.
        let errors: Vec<String> = errors.iter().map(|e| registry_wording(e)).collect();
        format!("; resolution errors: [{}]", aggregate(&errors))
    };
    EscalationError::NotHeld {
        user: go_quote(&user.username),
        groups: go_quote_list(&user.groups),
        missing: missing.into_iter().collect::<Vec<_>>().join("\n"),
        resolution,
    }
}

/// The rule index says `clusterrole.rbac.authorization.k8s.io "x" not
/// found` (the authorizer's listers); the escalation check's resolver
/// reads through the registry, whose NotFound names the plural.
fn registry_wording(error: &str) -> String {
    for (singular, plural) in [
        ("clusterrole.rbac.authorization.k8s.io ", "clusterroles"),
        ("role.rbac.authorization.k8s.io ", "roles"),
    ] {
        if let Some(rest) = error.strip_prefix(singular) {
            return format!("{plural}.{RBAC_GROUP} {rest}");
        }
    }
    error.to_string()
}

/// `utilerrors.NewAggregate(errs).Error()`: one message alone, else the
/// distinct ones in brackets.
fn aggregate(errors: &[String]) -> String {
    let mut seen = HashSet::new();
    let distinct: Vec<&str> = errors
        .iter()
        .filter(|e| seen.insert(e.as_str()))
        .map(String::as_str)
        .collect();
    match distinct.as_slice() {
        [one] => (*one).to_string(),
        many => format!("[{}]", many.join(", ")),
    }
}

fn list(v: &Option<Vec<String>>) -> &[String] {
    v.as_deref().unwrap_or(&[])
}

fn has(set: &[String], item: &str) -> bool {
    set.iter().any(|s| s == item)
}

fn has_all(set: &[String], items: &[String]) -> bool {
    items.iter().all(|i| has(set, i))
}

/// Upstream `BreakdownRule`: one rule per (group, resource, verb,
/// resourceName) and per (nonResourceURL, verb).
pub fn breakdown_rule(rule: &PolicyRule) -> Vec<PolicyRule> {
    let one = |s: &String| Some(vec![s.clone()]);
    let mut out = Vec::new();
    for group in list(&rule.api_groups) {
        for resource in list(&rule.resources) {
            for verb in &rule.verbs {
                let base = PolicyRule {
                    api_groups: one(group),
                    resources: one(resource),
                    verbs: vec![verb.clone()],
                    ..Default::default()
                };
                let names = list(&rule.resource_names);
                if names.is_empty() {
                    out.push(base);
                } else {
                    out.extend(names.iter().map(|n| PolicyRule {
                        resource_names: one(n),
                        ..base.clone()
                    }));
                }
            }
        }
    }
    for url in list(&rule.non_resource_urls) {
        for verb in &rule.verbs {
            out.push(PolicyRule {
                non_resource_urls: one(url),
                verbs: vec![verb.clone()],
                ..Default::default()
            });
        }
    }
    out
}

/// Upstream `resourceCoversAll`: `*`, exact names, or `*/sub` for any
/// resource's subresource `sub`.
fn resource_covers_all(owner: &[String], wanted: &[String]) -> bool {
    if has(owner, "*") || has_all(owner, wanted) {
        return true;
    }
    wanted.iter().all(|path| {
        has(owner, path)
            || path
                .split_once('/')
                .is_some_and(|(_, sub)| has(owner, &format!("*/{sub}")))
    })
}

/// Upstream `nonResourceURLCovers`: exact, or a prefix ending in `*`.
fn non_resource_url_covers(owner: &str, path: &str) -> bool {
    owner == path
        || owner
            .strip_suffix('*')
            .is_some_and(|_| path.starts_with(owner.trim_end_matches('*')))
}

/// Upstream `ruleCovers`: whether `owner` covers `sub`, a broken-down rule.
fn rule_covers(owner: &PolicyRule, sub: &PolicyRule) -> bool {
    let verbs = has(&owner.verbs, "*") || has_all(&owner.verbs, &sub.verbs);
    let groups = has(list(&owner.api_groups), "*")
        || has_all(list(&owner.api_groups), list(&sub.api_groups));
    let resources = resource_covers_all(list(&owner.resources), list(&sub.resources));
    let urls = list(&sub.non_resource_urls).iter().all(|path| {
        list(&owner.non_resource_urls)
            .iter()
            .any(|o| non_resource_url_covers(o, path))
    });
    let owner_names = list(&owner.resource_names);
    let names = owner_names.is_empty()
        || (!list(&sub.resource_names).is_empty()
            && has_all(owner_names, list(&sub.resource_names)));
    verbs && groups && resources && urls && names
}

/// Upstream `validation.Covers`: the broken-down parts of `servant` that no
/// rule of `owner` covers (empty: all covered).
pub fn covers(owner: &[PolicyRule], servant: &[PolicyRule]) -> Vec<PolicyRule> {
    servant
        .iter()
        .flat_map(breakdown_rule)
        .filter(|sub| !owner.iter().any(|o| rule_covers(o, sub)))
        .collect()
}

/// Upstream `CompactRules`: rules on one group and one resource (at most
/// one name) that differ only by verb become one rule with the verbs in
/// order of appearance.
pub fn compact_rules(rules: Vec<PolicyRule>) -> Vec<PolicyRule> {
    type Simple = (String, String, Option<String>);
    let simple = |r: &PolicyRule| -> Option<Simple> {
        let names = list(&r.resource_names);
        if names.len() > 1 || !list(&r.non_resource_urls).is_empty() {
            return None;
        }
        match (list(&r.api_groups), list(&r.resources)) {
            ([group], [resource]) => {
                Some((group.clone(), resource.clone(), names.first().cloned()))
            }
            _ => None,
        }
    };
    let mut out = Vec::new();
    let mut merged: Vec<PolicyRule> = Vec::new();
    let mut index: HashMap<Simple, usize> = HashMap::new();
    for rule in rules {
        let Some(key) = simple(&rule) else {
            out.push(rule);
            continue;
        };
        match index.get(&key).copied() {
            Some(i) => {
                let verbs = &mut merged[i].verbs;
                for v in rule.verbs {
                    if !verbs.contains(&v) {
                        verbs.push(v);
                    }
                }
            }
            None => {
                index.insert(key, merged.len());
                merged.push(rule);
            }
        }
    }
    out.extend(merged);
    out
}

/// Upstream `CompactString`: `{APIGroups:[""], Resources:["pods"], Verbs:["get"]}`,
/// with only the fields that are set.
pub fn compact_string(rule: &PolicyRule) -> String {
    let mut parts = Vec::new();
    for (name, values) in [
        ("APIGroups", list(&rule.api_groups)),
        ("Resources", list(&rule.resources)),
        ("NonResourceURLs", list(&rule.non_resource_urls)),
        ("ResourceNames", list(&rule.resource_names)),
        ("Verbs", rule.verbs.as_slice()),
    ] {
        if !values.is_empty() {
            parts.push(format!("{name}:{}", go_quote_list(values)));
        }
    }
    format!("{{{}}}", parts.join(", "))
}

/// Go's `%q` of a `[]string`: `["a" "b"]`.
fn go_quote_list(values: &[String]) -> String {
    let quoted: Vec<String> = values.iter().map(|v| go_quote(v)).collect();
    format!("[{}]", quoted.join(" "))
}

/// Upstream `IsOnlyMutatingGCFields`: whether `new` differs from `old` only
/// in what the garbage collector writes (ownerReferences, finalizers).
/// Fields the server sets after admission (resourceVersion, generation,
/// managedFields) and the type's apiVersion/kind are not compared either;
/// absent, null and empty values are equal, as upstream's semantic equality.
pub fn is_only_mutating_gc_fields(new: &Value, old: &Value) -> bool {
    const IGNORED: [&str; 6] = [
        "ownerReferences",
        "finalizers",
        "selfLink",
        "managedFields",
        "resourceVersion",
        "generation",
    ];
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(obj) = v.as_object_mut() {
            obj.remove("apiVersion");
            obj.remove("kind");
            if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
                for f in IGNORED {
                    meta.remove(f);
                }
            }
        }
        normalize(v)
    };
    strip(new) == strip(old)
}

/// Drops nulls, empty arrays and empty objects, recursively.
fn normalize(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .map(|(k, v)| (k, normalize(v)))
                .filter(|(_, v)| !is_empty(v))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.into_iter().map(normalize).collect()),
        other => other,
    }
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Array(a) => a.is_empty(),
        Value::Object(m) => m.is_empty(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn rule(v: Value) -> PolicyRule {
        serde_json::from_value(v).unwrap()
    }

    fn rules(v: Value) -> Vec<PolicyRule> {
        serde_json::from_value(v).unwrap()
    }

    fn covered(owner: Value, servant: Value) -> bool {
        covers(&rules(owner), &rules(servant)).is_empty()
    }

    #[test]
    fn verbs_groups_and_resources_are_covered_exactly_or_by_star() {
        let owner = json!([{"verbs": ["get", "list"], "apiGroups": ["", "apps"], "resources": ["pods", "deployments"]}]);
        assert!(covered(
            owner.clone(),
            json!([{"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}])
        ));
        assert!(covered(
            owner.clone(),
            json!([{"verbs": ["list", "get"], "apiGroups": ["apps"], "resources": ["deployments", "pods"]}])
        ));
        assert!(!covered(
            owner.clone(),
            json!([{"verbs": ["watch"], "apiGroups": [""], "resources": ["pods"]}])
        ));
        assert!(!covered(
            owner.clone(),
            json!([{"verbs": ["get"], "apiGroups": ["batch"], "resources": ["pods"]}])
        ));
        assert!(!covered(
            owner,
            json!([{"verbs": ["get"], "apiGroups": [""], "resources": ["secrets"]}])
        ));
        let star = json!([{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}]);
        assert!(covered(
            star.clone(),
            json!([{"verbs": ["escalate", "bind"], "apiGroups": ["rbac.authorization.k8s.io"], "resources": ["clusterroles", "roles/status"], "resourceNames": ["x"]}])
        ));
        // A star in the servant is only covered by a star.
        assert!(!covered(
            json!([{"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods"]}]),
            json!([{"verbs": ["*"], "apiGroups": [""], "resources": ["pods"]}])
        ));
        assert!(covered(
            star,
            json!([{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}])
        ));
    }

    #[test]
    fn subresources_are_covered_by_name_or_by_star_slash_subresource() {
        let owner =
            json!([{"verbs": ["get"], "apiGroups": [""], "resources": ["pods", "*/status"]}]);
        assert!(covered(
            owner.clone(),
            json!([{"verbs": ["get"], "apiGroups": [""], "resources": ["nodes/status", "pods"]}])
        ));
        // The resource does not cover its subresources.
        assert!(!covered(
            owner.clone(),
            json!([{"verbs": ["get"], "apiGroups": [""], "resources": ["pods/log"]}])
        ));
        assert!(!covered(
            owner,
            json!([{"verbs": ["get"], "apiGroups": [""], "resources": ["nodes"]}])
        ));
    }

    #[test]
    fn resource_names_narrow_what_is_covered() {
        let named = json!([{"verbs": ["get"], "apiGroups": [""], "resources": ["secrets"], "resourceNames": ["a", "b"]}]);
        assert!(covered(
            named.clone(),
            json!([{"verbs": ["get"], "apiGroups": [""], "resources": ["secrets"], "resourceNames": ["b"]}])
        ));
        assert!(!covered(
            named.clone(),
            json!([{"verbs": ["get"], "apiGroups": [""], "resources": ["secrets"], "resourceNames": ["c"]}])
        ));
        // Named access does not cover access to every object.
        assert!(!covered(
            named,
            json!([{"verbs": ["get"], "apiGroups": [""], "resources": ["secrets"]}])
        ));
        assert!(covered(
            json!([{"verbs": ["get"], "apiGroups": [""], "resources": ["secrets"]}]),
            json!([{"verbs": ["get"], "apiGroups": [""], "resources": ["secrets"], "resourceNames": ["c"]}])
        ));
    }

    #[test]
    fn non_resource_urls_are_covered_exactly_or_by_trailing_star() {
        let owner =
            json!([{"verbs": ["get"], "nonResourceURLs": ["/healthz", "/apis/*", "/logs**"]}]);
        assert!(covered(
            owner.clone(),
            json!([{"verbs": ["get"], "nonResourceURLs": ["/healthz", "/apis/apps/v1", "/apis/*", "/logs/x"]}])
        ));
        assert!(!covered(
            owner.clone(),
            json!([{"verbs": ["get"], "nonResourceURLs": ["/healthz/ping"]}])
        ));
        assert!(!covered(
            owner.clone(),
            json!([{"verbs": ["post"], "nonResourceURLs": ["/healthz"]}])
        ));
        // Resource rules never cover URLs, nor URLs resources.
        assert!(!covered(
            json!([{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}]),
            json!([{"verbs": ["get"], "nonResourceURLs": ["/healthz"]}])
        ));
        assert!(!covered(
            owner,
            json!([{"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}])
        ));
        assert!(covered(
            json!([{"verbs": ["*"], "nonResourceURLs": ["*"]}]),
            json!([{"verbs": ["get", "post"], "nonResourceURLs": ["/anything/at/all"]}])
        ));
    }

    #[test]
    fn the_union_of_owner_rules_covers_a_servant_rule_part_by_part() {
        let owner = json!([
            {"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]},
            {"verbs": ["list"], "apiGroups": [""], "resources": ["pods"]}
        ]);
        assert!(covered(
            owner,
            json!([{"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods"]}])
        ));
        assert!(covered(json!([]), json!([])));
    }

    #[test]
    fn breakdown_gives_one_rule_per_group_resource_verb_and_name() {
        let parts = breakdown_rule(&rule(
            json!({"verbs": ["get", "list"], "apiGroups": ["", "apps"], "resources": ["pods"], "resourceNames": ["a", "b"], "nonResourceURLs": ["/x"]}),
        ));
        assert_eq!(parts.len(), 2 * 2 * 2 + 2);
        assert_eq!(
            compact_string(&parts[0]),
            r#"{APIGroups:[""], Resources:["pods"], ResourceNames:["a"], Verbs:["get"]}"#
        );
        assert_eq!(
            compact_string(&parts[9]),
            r#"{NonResourceURLs:["/x"], Verbs:["list"]}"#
        );
    }

    #[test]
    fn missing_rules_are_compacted_by_verb_and_sorted_in_the_message() {
        let missing = covers(
            &[],
            &rules(json!([
                {"verbs": ["get", "list"], "apiGroups": [""], "resources": ["secrets", "pods"]},
                {"verbs": ["get"], "nonResourceURLs": ["/metrics"]}
            ])),
        );
        let user = UserInfo {
            username: "bob".into(),
            groups: vec!["devs".into(), "system:authenticated".into()],
        };
        let err = not_held(&user, missing, &[]);
        assert_eq!(
            err.to_string(),
            "user \"bob\" (groups=[\"devs\" \"system:authenticated\"]) is attempting to grant RBAC permissions not currently held:\n\
             {APIGroups:[\"\"], Resources:[\"pods\"], Verbs:[\"get\" \"list\"]}\n\
             {APIGroups:[\"\"], Resources:[\"secrets\"], Verbs:[\"get\" \"list\"]}\n\
             {NonResourceURLs:[\"/metrics\"], Verbs:[\"get\"]}"
        );
        let with_errors = not_held(
            &user,
            covers(
                &[],
                &rules(json!([{"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}])),
            ),
            &["clusterrole.rbac.authorization.k8s.io \"gone\" not found".into()],
        );
        assert!(
            with_errors.to_string().ends_with(
                "Verbs:[\"get\"]}; resolution errors: [clusterroles.rbac.authorization.k8s.io \"gone\" not found]"
            ),
            "{with_errors}"
        );
    }

    #[test]
    fn compaction_keeps_named_and_multi_resource_rules_apart() {
        let compact = compact_rules(vec![
            rule(
                json!({"verbs": ["get"], "apiGroups": [""], "resources": ["secrets"], "resourceNames": ["a"]}),
            ),
            rule(
                json!({"verbs": ["list"], "apiGroups": [""], "resources": ["secrets"], "resourceNames": ["a"]}),
            ),
            rule(json!({"verbs": ["get"], "apiGroups": [""], "resources": ["secrets"]})),
            rule(json!({"verbs": ["get"], "apiGroups": ["", "apps"], "resources": ["pods"]})),
        ]);
        let strings: Vec<String> = compact.iter().map(compact_string).collect();
        assert_eq!(
            strings,
            [
                r#"{APIGroups:["" "apps"], Resources:["pods"], Verbs:["get"]}"#,
                r#"{APIGroups:[""], Resources:["secrets"], ResourceNames:["a"], Verbs:["get" "list"]}"#,
                r#"{APIGroups:[""], Resources:["secrets"], Verbs:["get"]}"#,
            ]
        );
    }

    #[test]
    fn go_quoting_escapes_like_strconv_quote() {
        assert_eq!(go_quote("a\"b\\c\n\u{1}é"), r#""a\"b\\c\n\x01é""#);
        assert_eq!(go_quote_list(&[]), "[]");
    }

    #[test]
    fn only_gc_field_changes_skip_the_check() {
        let old = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": "r", "namespace": "d", "resourceVersion": "5", "uid": "u"},
            "rules": [{"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}]});
        let mut gc = old.clone();
        gc["metadata"]["finalizers"] = json!(["x"]);
        gc["metadata"]["ownerReferences"] =
            json!([{"apiVersion": "v1", "kind": "ConfigMap", "name": "o", "uid": "1"}]);
        gc["metadata"]["resourceVersion"] = json!(null);
        assert!(is_only_mutating_gc_fields(&gc, &old));
        let mut labels = old.clone();
        labels["metadata"]["labels"] = json!({"a": "b"});
        assert!(!is_only_mutating_gc_fields(&labels, &old));
        let mut rules = old.clone();
        rules["rules"][0]["verbs"] = json!(["get", "list"]);
        assert!(!is_only_mutating_gc_fields(&rules, &old));
        let mut empty = old.clone();
        empty["metadata"]["labels"] = json!({});
        assert!(is_only_mutating_gc_fields(&empty, &old));
    }

    #[test]
    fn only_the_four_rbac_kinds_are_checked() {
        assert_eq!(Kind::of(RBAC_GROUP, "roles"), Some(Kind::Role));
        assert_eq!(
            Kind::of(RBAC_GROUP, "clusterrolebindings"),
            Some(Kind::ClusterRoleBinding)
        );
        assert_eq!(Kind::of("", "roles"), None);
        assert_eq!(Kind::of(RBAC_GROUP, "other"), None);
        assert!(has_aggregation_rule(
            &json!({"aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"a": "b"}}]}})
        ));
        assert!(!has_aggregation_rule(
            &json!({"aggregationRule": {"clusterRoleSelectors": []}})
        ));
    }
}
