//! The Node authorizer (kube-apiserver `--authorization-mode=Node`,
//! upstream `plugin/pkg/auth/authorizer/node`): a user `system:node:<name>`
//! in group `system:nodes` may read the secrets, configmaps, PVCs, PVs and
//! create tokens of the ServiceAccounts its bound pods reference (the
//! `node_graph`), reach its own Lease, and otherwise do what the static
//! rules of the `system:node` ClusterRole (`NodeRules()`) allow. Pods are
//! and Nodes are read as with AuthorizeNodeWithSelectors (on by default
//! since 1.32): its own, and pod lists scoped to it (the agent's service
//! proxy and pod network read all Nodes as `system:kube-proxy`). Which
//! Node, pods and Lease it may write is narrowed further by the
//! NodeRestriction admission plugin. No I/O.

use std::sync::{Arc, RwLock};

use k8s_openapi::api::rbac::v1::PolicyRule;

use super::attributes::{Attributes, ResourceAttributes};
use super::node_graph::{Graph, Kind};
use super::rbac::{Decision, rule_allows};
use super::{UserInfo, bootstrap_policy};

pub const NODES_GROUP: &str = "system:nodes";
pub const NODE_USER_PREFIX: &str = "system:node:";
/// The namespace of node Leases.
pub const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";

/// The node a user is (upstream `NodeIdentity`): `Some(name)` for a user
/// `system:node:<name>` in `system:nodes` (the name may be empty).
pub fn node_identity(user: &UserInfo) -> Option<&str> {
    node_name(&user.username, &user.groups)
}

/// [`node_identity`] of a user given by name and groups (a CSR's requester).
pub fn node_name<'a>(username: &'a str, groups: &[String]) -> Option<&'a str> {
    let name = username.strip_prefix(NODE_USER_PREFIX)?;
    groups.iter().any(|g| g == NODES_GROUP).then_some(name)
}

/// The Node authorizer's answer: allow, or no opinion with a reason (the
/// next authorizer of the chain decides).
pub struct NodeAuthorizer {
    graph: Arc<RwLock<Graph>>,
    rules: Vec<PolicyRule>,
}

fn no_opinion(reason: impl Into<String>) -> Option<Decision> {
    Some(Decision::deny(reason))
}

impl NodeAuthorizer {
    pub fn new(graph: Arc<RwLock<Graph>>) -> Self {
        let rules = bootstrap_policy::node_rules()
            .into_iter()
            .filter_map(|r| serde_json::from_value(r).ok())
            .collect();
        Self { graph, rules }
    }

    /// `None` when the user is not a node (no opinion, no reason); else
    /// the decision.
    pub fn authorize(&self, user: &UserInfo, attrs: &Attributes) -> Option<Decision> {
        let node = node_identity(user)?;
        if node.is_empty() {
            return no_opinion(format!("unknown node for user {:?}", user.username));
        }
        if let Attributes::Resource(r) = attrs {
            let decision = match (r.api_group.as_str(), r.resource.as_str()) {
                ("", "secrets") => Some(self.read_namespaced(node, Kind::Secret, r)),
                ("", "configmaps") => Some(self.read_namespaced(node, Kind::ConfigMap, r)),
                ("", "persistentvolumeclaims") if r.subresource == "status" => {
                    Some(self.status_update(node, Kind::PersistentVolumeClaim, r))
                }
                ("", "persistentvolumeclaims") => {
                    Some(self.get(node, Kind::PersistentVolumeClaim, r))
                }
                ("", "persistentvolumes") => Some(self.get(node, Kind::PersistentVolume, r)),
                ("", "serviceaccounts") => Some(self.create_token(node, r)),
                ("", "pods") => Some(self.pod(node, attrs, r)),
                ("", "nodes") => Some(node_object(node, r)),
                ("coordination.k8s.io", "leases") => Some(lease(node, r)),
                _ => None,
            };
            if let Some(d) = decision {
                return Some(d);
            }
        }
        if self.rules.iter().any(|rule| rule_allows(attrs, rule)) {
            return Some(Decision::allow(""));
        }
        no_opinion("")
    }

    fn related(&self, node: &str, kind: Kind, r: &ResourceAttributes) -> Decision {
        if r.name.is_empty() {
            return Decision::deny("No Object name found");
        }
        let graph = self.graph.read().unwrap_or_else(|e| e.into_inner());
        if graph.has_path(node, kind, &r.namespace, &r.name) {
            Decision::allow("")
        } else {
            Decision::deny(format!(
                "no relationship found between node '{node}' and this object"
            ))
        }
    }

    /// get/list/watch of one named object (list and watch name it by a
    /// `metadata.name` field selector), as upstream's kubelet watches them.
    fn read_namespaced(&self, node: &str, kind: Kind, r: &ResourceAttributes) -> Decision {
        if !matches!(r.verb.as_str(), "get" | "list" | "watch") {
            return Decision::deny("can only read resources of this type");
        }
        if !r.subresource.is_empty() {
            return Decision::deny("cannot read subresource");
        }
        if r.namespace.is_empty() {
            return Decision::deny("can only read namespaced object of this type");
        }
        self.related(node, kind, r)
    }

    fn get(&self, node: &str, kind: Kind, r: &ResourceAttributes) -> Decision {
        if r.verb != "get" {
            return Decision::deny("can only get individual resources of this type");
        }
        if !r.subresource.is_empty() {
            return Decision::deny("cannot get subresource");
        }
        self.related(node, kind, r)
    }

    fn status_update(&self, node: &str, kind: Kind, r: &ResourceAttributes) -> Decision {
        if !matches!(r.verb.as_str(), "update" | "patch") {
            return Decision::deny("can only get/update/patch this type");
        }
        self.related(node, kind, r)
    }

    /// Pods as upstream's `authorizePod` (AuthorizeNodeWithSelectors, on
    /// by default since 1.32): get of a pod bound to the node; list/watch
    /// only scoped by `spec.nodeName=<node>`; create/delete (mirror pods),
    /// status writes and evictions, all narrowed by NodeRestriction.
    fn pod(&self, node: &str, attrs: &Attributes, r: &ResourceAttributes) -> Decision {
        match (r.subresource.as_str(), r.verb.as_str()) {
            ("", "get") => self.related(node, Kind::Pod, r),
            ("", "list" | "watch") => {
                if attrs.selects_field("spec.nodeName", node) {
                    Decision::allow("")
                } else {
                    Decision::deny("can only list/watch pods with spec.nodeName field selector")
                }
            }
            ("", "create" | "delete") | ("status", "update" | "patch") | ("eviction", "create") => {
                Decision::allow("")
            }
            _ => Decision::deny(""),
        }
    }

    fn create_token(&self, node: &str, r: &ResourceAttributes) -> Decision {
        if r.verb != "create" || r.name.is_empty() {
            return Decision::deny("can only create tokens for individual service accounts");
        }
        if r.subresource != "token" {
            return Decision::deny("can only create token subresource of serviceaccount");
        }
        self.related(node, Kind::ServiceAccount, r)
    }
}

/// Nodes as upstream's `authorizeNode`: reads of its own Node only (by
/// name, so before it exists too; lists and watches name it by a
/// `metadata.name` field selector); writes are NodeRestriction's to narrow.
fn node_object(node: &str, r: &ResourceAttributes) -> Decision {
    if !matches!(r.verb.as_str(), "get" | "list" | "watch") {
        return Decision::allow("");
    }
    match r.name.as_str() {
        n if n == node => Decision::allow(""),
        "" => Decision::deny(format!(
            "node '{node}' cannot read all nodes, only its own Node object"
        )),
        other => Decision::deny(format!(
            "node '{node}' cannot read '{other}', only its own Node object"
        )),
    }
}

/// A node's own Lease in kube-node-lease (its name is checked by
/// NodeRestriction on create, when the authorizer does not know it yet).
fn lease(node: &str, r: &ResourceAttributes) -> Decision {
    if !matches!(
        r.verb.as_str(),
        "get" | "create" | "update" | "patch" | "delete"
    ) {
        return Decision::deny("can only get, create, update, patch, or delete a node lease");
    }
    if r.namespace != NODE_LEASE_NAMESPACE {
        return Decision::deny(format!(
            "can only access leases in the \"{NODE_LEASE_NAMESPACE}\" system namespace"
        ));
    }
    if r.verb != "create" && r.name != node {
        return Decision::deny(
            "can only access node lease with the same name as the requesting node",
        );
    }
    Decision::allow("")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn node(name: &str) -> UserInfo {
        UserInfo {
            username: format!("system:node:{name}"),
            groups: vec![NODES_GROUP.into(), "system:authenticated".into()],
        }
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

    fn authorizer() -> NodeAuthorizer {
        let mut graph = Graph::default();
        graph.set_pod(
            "default",
            "web",
            Some(
                &serde_json::from_value(json!({
                    "nodeName": "a",
                    "volumes": [{"name": "s", "secret": {"secretName": "db"}}],
                }))
                .unwrap(),
            ),
        );
        NodeAuthorizer::new(Arc::new(RwLock::new(graph)))
    }

    fn allowed(a: &NodeAuthorizer, user: &UserInfo, attrs: &Attributes) -> bool {
        a.authorize(user, attrs).is_some_and(|d| d.allowed)
    }

    #[test]
    fn only_users_named_system_node_in_system_nodes_are_nodes() {
        assert_eq!(node_identity(&node("a")), Some("a"));
        let mut not_in_group = node("a");
        not_in_group.groups.clear();
        assert_eq!(node_identity(&not_in_group), None);
        let other = UserInfo {
            username: "jane".into(),
            groups: vec![NODES_GROUP.into()],
        };
        assert_eq!(node_identity(&other), None);
        let a = authorizer();
        assert!(
            a.authorize(&other, &res("get", "", "secrets", "", "default", "db"))
                .is_none()
        );
    }

    #[test]
    fn a_secret_is_readable_only_by_the_node_of_a_pod_referencing_it() {
        let a = authorizer();
        assert!(allowed(
            &a,
            &node("a"),
            &res("get", "", "secrets", "", "default", "db")
        ));
        assert!(allowed(
            &a,
            &node("a"),
            &res("watch", "", "secrets", "", "default", "db")
        ));
        let other = a
            .authorize(&node("b"), &res("get", "", "secrets", "", "default", "db"))
            .unwrap();
        assert!(!other.allowed);
        assert_eq!(
            other.reason,
            "no relationship found between node 'b' and this object"
        );
        assert!(!allowed(
            &a,
            &node("a"),
            &res("get", "", "secrets", "", "default", "x")
        ));
        let list = a
            .authorize(&node("a"), &res("list", "", "secrets", "", "default", ""))
            .unwrap();
        assert_eq!(list.reason, "No Object name found");
        let update = a
            .authorize(
                &node("a"),
                &res("update", "", "secrets", "", "default", "db"),
            )
            .unwrap();
        assert_eq!(update.reason, "can only read resources of this type");
    }

    #[test]
    fn a_node_reads_only_its_own_node() {
        let a = authorizer();
        let n = |verb: &str, sub: &str, name: &str| res(verb, "", "nodes", sub, "", name);
        for verb in ["get", "list", "watch"] {
            assert!(allowed(&a, &node("a"), &n(verb, "", "a")), "{verb}");
        }
        let all = a.authorize(&node("a"), &n("list", "", "")).unwrap();
        assert!(!all.allowed);
        assert_eq!(
            all.reason,
            "node 'a' cannot read all nodes, only its own Node object"
        );
        let other = a.authorize(&node("a"), &n("get", "", "b")).unwrap();
        assert_eq!(
            other.reason,
            "node 'a' cannot read 'b', only its own Node object"
        );
        // Writes are NodeRestriction's to narrow.
        assert!(allowed(&a, &node("a"), &n("create", "", "a")));
        assert!(allowed(&a, &node("a"), &n("patch", "status", "a")));
    }

    #[test]
    fn leases_are_the_nodes_own_in_kube_node_lease() {
        let a = authorizer();
        let l = |verb: &str, ns: &str, name: &str| {
            res(verb, "coordination.k8s.io", "leases", "", ns, name)
        };
        assert!(allowed(
            &a,
            &node("a"),
            &l("update", "kube-node-lease", "a")
        ));
        assert!(allowed(&a, &node("a"), &l("create", "kube-node-lease", "")));
        let other = a
            .authorize(&node("a"), &l("update", "kube-node-lease", "b"))
            .unwrap();
        assert_eq!(
            other.reason,
            "can only access node lease with the same name as the requesting node"
        );
        assert!(!allowed(&a, &node("a"), &l("get", "default", "a")));
        assert!(!allowed(&a, &node("a"), &l("list", "kube-node-lease", "")));
    }

    fn scoped(verb: &str, selector: &str) -> Attributes {
        let Attributes::Resource(mut r) = res(verb, "", "pods", "", "", "") else {
            unreachable!()
        };
        r.field_selector = selector.into();
        Attributes::Resource(r)
    }

    #[test]
    fn a_node_reads_its_own_pods_and_lists_them_only_by_its_node_name() {
        let a = authorizer();
        let me = node("a");
        assert!(allowed(
            &a,
            &me,
            &res("get", "", "pods", "", "default", "web")
        ));
        let other = a
            .authorize(&node("b"), &res("get", "", "pods", "", "default", "web"))
            .unwrap();
        assert!(!other.allowed);
        assert_eq!(
            other.reason,
            "no relationship found between node 'b' and this object"
        );
        for selector in [
            "spec.nodeName=a",
            "spec.nodeName==a",
            "status.phase=Running,spec.nodeName=a",
        ] {
            assert!(allowed(&a, &me, &scoped("watch", selector)), "{selector}");
            assert!(allowed(&a, &me, &scoped("list", selector)), "{selector}");
        }
        for selector in [
            "",
            "spec.nodeName=b",
            "spec.nodeName!=a",
            "metadata.name=web",
        ] {
            let d = a.authorize(&me, &scoped("list", selector)).unwrap();
            assert!(!d.allowed, "{selector}");
            assert_eq!(
                d.reason,
                "can only list/watch pods with spec.nodeName field selector"
            );
        }
        for (verb, sub) in [
            ("create", ""),
            ("delete", ""),
            ("patch", "status"),
            ("update", "status"),
            ("create", "eviction"),
        ] {
            assert!(
                allowed(&a, &me, &res(verb, "", "pods", sub, "default", "web")),
                "{verb} {sub}"
            );
        }
        for (verb, sub) in [
            ("update", ""),
            ("patch", ""),
            ("get", "log"),
            ("create", "exec"),
        ] {
            assert!(
                !allowed(&a, &me, &res(verb, "", "pods", sub, "default", "web")),
                "{verb} {sub}"
            );
        }
    }

    #[test]
    fn other_requests_follow_the_system_node_rules() {
        let a = authorizer();
        assert!(allowed(
            &a,
            &node("a"),
            &res("patch", "", "nodes", "status", "", "a")
        ));
        assert!(allowed(
            &a,
            &node("a"),
            &res("watch", "", "nodes", "", "", "a")
        ));
        assert!(allowed(
            &a,
            &node("a"),
            &res("list", "", "services", "", "", "")
        ));
        assert!(allowed(
            &a,
            &node("a"),
            &res(
                "create",
                "certificates.k8s.io",
                "certificatesigningrequests",
                "",
                "",
                ""
            )
        ));
        assert!(!allowed(
            &a,
            &node("a"),
            &res("create", "", "namespaces", "", "", "")
        ));
        assert!(!allowed(
            &a,
            &node("a"),
            &res("delete", "apps", "deployments", "", "d", "x")
        ));
    }

    #[test]
    fn tokens_only_for_service_accounts_of_bound_pods() {
        let a = authorizer();
        assert!(allowed(
            &a,
            &node("a"),
            &res(
                "create",
                "",
                "serviceaccounts",
                "token",
                "default",
                "default"
            )
        ));
        assert!(!allowed(
            &a,
            &node("b"),
            &res(
                "create",
                "",
                "serviceaccounts",
                "token",
                "default",
                "default"
            )
        ));
        assert!(!allowed(
            &a,
            &node("a"),
            &res("get", "", "serviceaccounts", "", "default", "default")
        ));
    }
}
