//! The NodeRestriction admission plugin (upstream
//! `plugin/pkg/admission/noderestriction`): after the Node authorizer let a
//! node's request through, this narrows its writes to its own objects: its
//! own Node (no taint changes, no `node-restriction.kubernetes.io/` or
//! unknown kubernetes.io labels), mirror pods bound to itself, status of
//! and deletion/eviction of pods bound to itself, tokens bound to its
//! pods, its own Lease. `check` decides from the request and the objects
//! looked up for it (no I/O); `mod.rs` does the look-ups.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

/// The kind of write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Create,
    Update,
    Delete,
}

impl Operation {
    /// Upstream's name (`CREATE`, ...), used in messages.
    fn as_str(self) -> &'static str {
        match self {
            Self::Create => "CREATE",
            Self::Update => "UPDATE",
            Self::Delete => "DELETE",
        }
    }
}

/// One write by a node.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The node's name (from `system:node:<name>`).
    pub node: &'a str,
    pub group: &'a str,
    pub resource: &'a str,
    pub subresource: &'a str,
    pub operation: Operation,
    pub namespace: &'a str,
    /// The object's name (for a create, the new object's).
    pub name: &'a str,
    /// The new object (create, update) or the request body (subresources).
    pub object: Option<&'a Value>,
    /// The stored object (update, delete).
    pub old: Option<&'a Value>,
}

/// What `check` needs looked up: the pod a delete, eviction or token
/// request is about, and the node's own UID (mirror pods).
#[derive(Debug, Clone, Default)]
pub struct Facts {
    pub pod: Option<Value>,
    pub node_uid: Option<String>,
}

/// Which look-ups a request needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Needs {
    /// The pod `namespace/name`.
    Pod(String),
    /// The node's UID.
    NodeUid,
}

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// 403 with this reason (after `<resource> "<name>" is forbidden: `).
    Forbidden(String),
    /// 404: the pod looked up does not exist.
    PodNotFound(String),
    /// 404: the node looked up does not exist.
    NodeNotFound(String),
}

fn forbidden(reason: impl Into<String>) -> Result<(), Refusal> {
    Err(Refusal::Forbidden(reason.into()))
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

/// What must be looked up before `check`.
pub fn needs(req: &Request<'_>) -> Option<Needs> {
    match (req.group, req.resource, req.subresource, req.operation) {
        ("", "pods", "", Operation::Create) => Some(Needs::NodeUid),
        ("", "pods", "eviction", Operation::Create) => {
            let name = if req.name.is_empty() {
                req.object
                    .map(|o| str_at(o, "/metadata/name"))
                    .unwrap_or("")
            } else {
                req.name
            };
            Some(Needs::Pod(name.to_string()))
        }
        ("", "serviceaccounts", "token", Operation::Create) => req
            .object
            .map(|o| str_at(o, "/spec/boundObjectRef/name"))
            .filter(|n| !n.is_empty())
            .map(|n| Needs::Pod(n.to_string())),
        _ => None,
    }
}

/// Whether the node may make this write (upstream `Validate`).
pub fn check(req: &Request<'_>, facts: &Facts) -> Result<(), Refusal> {
    if req.node.is_empty() {
        return forbidden("could not determine node from user");
    }
    match (req.group, req.resource) {
        ("", "pods") => match req.subresource {
            "" => pod(req, facts),
            "status" => pod_status(req),
            "eviction" => pod_eviction(req, facts),
            other => forbidden(format!(
                "unexpected pod subresource {other:?}, only 'status' and 'eviction' are allowed"
            )),
        },
        ("", "nodes") => node(req),
        ("", "persistentvolumeclaims") => match req.subresource {
            "status" => Ok(()),
            _ => forbidden("may only update PVC status"),
        },
        ("", "serviceaccounts") => service_account_token(req, facts),
        ("coordination.k8s.io", "leases") => lease(req),
        _ => Ok(()),
    }
}

fn pod(req: &Request<'_>, facts: &Facts) -> Result<(), Refusal> {
    let node = req.node;
    match req.operation {
        Operation::Create => mirror_pod_create(req, facts),
        Operation::Delete => {
            let bound = req.old.map(|p| str_at(p, "/spec/nodeName")).unwrap_or("");
            if bound != node {
                return forbidden(format!(
                    "node {node:?} can only delete pods with spec.nodeName set to itself"
                ));
            }
            Ok(())
        }
        Operation::Update => forbidden(format!(
            "unexpected operation {:?}, node {node:?} can only create and delete mirror pods",
            req.operation.as_str()
        )),
    }
}

fn has_any(v: &Value, pointers: &[&str]) -> bool {
    pointers
        .iter()
        .any(|p| v.pointer(p).is_some_and(|x| !x.is_null()))
}

fn containers(pod: &Value) -> impl Iterator<Item = &Value> {
    ["containers", "initContainers", "ephemeralContainers"]
        .into_iter()
        .flat_map(move |list| {
            pod.pointer(&format!("/spec/{list}"))
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
        })
}

fn volumes(pod: &Value) -> impl Iterator<Item = &Value> {
    pod.pointer("/spec/volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

fn references_secrets(pod: &Value) -> bool {
    let pull = pod
        .pointer("/spec/imagePullSecrets")
        .and_then(Value::as_array)
        .is_some_and(|a| !a.is_empty());
    let env = containers(pod).any(|c| {
        let from = c
            .get("envFrom")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .any(|f| has_any(f, &["/secretRef"]));
        let vars = c
            .get("env")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .any(|e| has_any(e, &["/valueFrom/secretKeyRef"]));
        from || vars
    });
    let vols = volumes(pod).any(|v| {
        has_any(
            v,
            &[
                "/secret",
                "/azureFile",
                "/cephfs/secretRef",
                "/cinder/secretRef",
                "/flexVolume/secretRef",
                "/rbd/secretRef",
                "/scaleIO/secretRef",
                "/iscsi/secretRef",
                "/storageos/secretRef",
                "/csi/nodePublishSecretRef",
            ],
        ) || v
            .pointer("/projected/sources")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .any(|s| has_any(s, &["/secret"]))
    });
    pull || env || vols
}

fn references_configmaps(pod: &Value) -> bool {
    let env = containers(pod).any(|c| {
        let from = c
            .get("envFrom")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .any(|f| has_any(f, &["/configMapRef"]));
        let vars = c
            .get("env")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .any(|e| has_any(e, &["/valueFrom/configMapKeyRef"]));
        from || vars
    });
    let vols = volumes(pod).any(|v| {
        has_any(v, &["/configMap"])
            || v.pointer("/projected/sources")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .any(|s| has_any(s, &["/configMap"]))
    });
    env || vols
}

fn mirror_pod_create(req: &Request<'_>, facts: &Facts) -> Result<(), Refusal> {
    let node = req.node;
    let Some(pod) = req.object else {
        return forbidden("unexpected type <nil>");
    };
    if pod
        .pointer("/metadata/annotations/kubernetes.io~1config.mirror")
        .is_none()
    {
        return forbidden(format!(
            "pod does not have \"kubernetes.io/config.mirror\" annotation, node {node:?} can only create mirror pods"
        ));
    }
    if str_at(pod, "/spec/nodeName") != node {
        return forbidden(format!(
            "node {node:?} can only create pods with spec.nodeName set to itself"
        ));
    }
    let owners = pod
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let owner = match owners.as_slice() {
        [] => {
            return forbidden(format!(
                "node {node:?} can only create pods with an owner reference set to itself"
            ));
        }
        [owner] => owner,
        _ => {
            return forbidden(format!(
                "node {node:?} can only create pods with a single owner reference set to itself"
            ));
        }
    };
    if str_at(owner, "/apiVersion") != "v1"
        || str_at(owner, "/kind") != "Node"
        || str_at(owner, "/name") != node
    {
        return forbidden(format!(
            "node {node:?} can only create pods with an owner reference set to itself"
        ));
    }
    if owner.get("controller") != Some(&Value::Bool(true)) {
        return forbidden(format!(
            "node {node:?} can only create pods with a controller owner reference set to itself"
        ));
    }
    if owner.get("blockOwnerDeletion") == Some(&Value::Bool(true)) {
        return forbidden(format!(
            "node {node:?} must not set blockOwnerDeletion on an owner reference"
        ));
    }
    let Some(uid) = facts.node_uid.as_deref() else {
        return Err(Refusal::NodeNotFound(node.to_string()));
    };
    let owner_uid = str_at(owner, "/uid");
    if owner_uid != uid {
        return forbidden(format!(
            "node {node} UID mismatch: expected {uid} got {owner_uid}"
        ));
    }
    // r8s defaults serviceAccountName to "default" before admission;
    // upstream's ServiceAccount admission leaves mirror pods without one.
    let sa = str_at(pod, "/spec/serviceAccountName");
    if !sa.is_empty() && sa != "default" {
        return forbidden(format!(
            "node {node:?} can not create pods that reference a service account"
        ));
    }
    if references_secrets(pod) {
        return forbidden(format!(
            "node {node:?} can not create pods that reference secrets"
        ));
    }
    if references_configmaps(pod) {
        return forbidden(format!(
            "node {node:?} can not create pods that reference configmaps"
        ));
    }
    if volumes(pod).any(|v| has_any(v, &["/persistentVolumeClaim"])) {
        return forbidden(format!(
            "node {node:?} can not create pods that reference persistentvolumeclaims"
        ));
    }
    Ok(())
}

fn labels(v: Option<&Value>) -> BTreeMap<String, Value> {
    v.and_then(|v| v.pointer("/metadata/labels"))
        .and_then(Value::as_object)
        .map(|m: &Map<String, Value>| m.clone().into_iter().collect())
        .unwrap_or_default()
}

fn pod_status(req: &Request<'_>) -> Result<(), Refusal> {
    let node = req.node;
    if req.operation != Operation::Update {
        return forbidden(format!("unexpected operation {:?}", req.operation.as_str()));
    }
    let bound = req.old.map(|p| str_at(p, "/spec/nodeName")).unwrap_or("");
    if bound != node {
        return forbidden(format!(
            "node {node:?} can only update pod status for pods with spec.nodeName set to itself"
        ));
    }
    if labels(req.old) != labels(req.object) {
        return forbidden(format!(
            "node {node:?} cannot update labels through pod status"
        ));
    }
    Ok(())
}

fn pod_eviction(req: &Request<'_>, facts: &Facts) -> Result<(), Refusal> {
    let node = req.node;
    if req.operation != Operation::Create {
        return forbidden(format!("unexpected operation {}", req.operation.as_str()));
    }
    let name = match needs(req) {
        Some(Needs::Pod(name)) if !name.is_empty() => name,
        _ => return forbidden("could not determine pod from request data"),
    };
    let Some(pod) = &facts.pod else {
        return Err(Refusal::PodNotFound(name));
    };
    if str_at(pod, "/spec/nodeName") != node {
        return forbidden(format!(
            "node {node} can only evict pods with spec.nodeName set to itself"
        ));
    }
    Ok(())
}

fn service_account_token(req: &Request<'_>, facts: &Facts) -> Result<(), Refusal> {
    if req.operation != Operation::Create || req.subresource != "token" {
        return Ok(());
    }
    let r = req
        .object
        .and_then(|o| o.pointer("/spec/boundObjectRef"))
        .filter(|r| !r.is_null());
    let Some(r) = r.filter(|r| {
        str_at(r, "/apiVersion") == "v1"
            && str_at(r, "/kind") == "Pod"
            && !str_at(r, "/name").is_empty()
    }) else {
        return forbidden("node requested token not bound to a pod");
    };
    let uid = str_at(r, "/uid");
    if uid.is_empty() {
        return forbidden("node requested token with a pod binding without a uid");
    }
    let Some(pod) = &facts.pod else {
        return Err(Refusal::PodNotFound(str_at(r, "/name").to_string()));
    };
    if str_at(pod, "/metadata/uid") != uid {
        return forbidden(format!(
            "the UID in the bound object reference ({uid}) does not match the UID in record. The object might have been deleted and then recreated"
        ));
    }
    if str_at(pod, "/spec/nodeName") != req.node {
        return forbidden("node requested token bound to a pod scheduled on a different node");
    }
    Ok(())
}

fn lease(req: &Request<'_>) -> Result<(), Refusal> {
    if req.namespace != crate::auth::node::NODE_LEASE_NAMESPACE {
        return forbidden(format!(
            "can only access leases in the \"{}\" system namespace",
            crate::auth::node::NODE_LEASE_NAMESPACE
        ));
    }
    if req.name != req.node {
        return forbidden("can only access node lease with the same name as the requesting node");
    }
    Ok(())
}

/// `kubernetes.io/hostname` -> `kubernetes.io`.
fn label_namespace(key: &str) -> &str {
    key.split_once('/').map(|(ns, _)| ns).unwrap_or("")
}

fn in_namespace(namespace: &str, domain: &str) -> bool {
    namespace == domain || namespace.ends_with(&format!(".{domain}"))
}

/// Upstream `kubeletapis.IsKubeletLabel`: the labels a kubelet may set.
fn is_kubelet_label(key: &str) -> bool {
    const LABELS: &[&str] = &[
        "kubernetes.io/hostname",
        "topology.kubernetes.io/zone",
        "topology.kubernetes.io/region",
        "failure-domain.beta.kubernetes.io/zone",
        "failure-domain.beta.kubernetes.io/region",
        "beta.kubernetes.io/instance-type",
        "node.kubernetes.io/instance-type",
        "kubernetes.io/os",
        "kubernetes.io/arch",
        "beta.kubernetes.io/os",
        "beta.kubernetes.io/arch",
    ];
    let ns = label_namespace(key);
    LABELS.contains(&key)
        || in_namespace(ns, "kubelet.kubernetes.io")
        || in_namespace(ns, "node.kubernetes.io")
}

/// The label keys a node may not add, change or remove.
fn forbidden_labels(modified: &BTreeSet<String>) -> Vec<String> {
    modified
        .iter()
        .filter(|key| {
            let ns = label_namespace(key);
            let restricted = in_namespace(ns, "node-restriction.kubernetes.io");
            let kubernetes = in_namespace(ns, "kubernetes.io") || in_namespace(ns, "k8s.io");
            restricted || (kubernetes && !is_kubelet_label(key))
        })
        .cloned()
        .collect()
}

fn modified_labels(a: &BTreeMap<String, Value>, b: &BTreeMap<String, Value>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (k, v) in a {
        if b.get(k) != Some(v) {
            out.insert(k.clone());
        }
    }
    for (k, v) in b {
        if a.get(k) != Some(v) {
            out.insert(k.clone());
        }
    }
    out
}

fn taints(v: Option<&Value>) -> Vec<Value> {
    v.and_then(|v| v.pointer("/spec/taints"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn node(req: &Request<'_>) -> Result<(), Refusal> {
    let node = req.node;
    if req.name != node {
        return forbidden(format!(
            "node {node:?} is not allowed to modify node {:?}",
            req.name
        ));
    }
    let config_source = |v: Option<&Value>| {
        v.and_then(|v| v.pointer("/spec/configSource"))
            .filter(|c| !c.is_null())
            .cloned()
    };
    match req.operation {
        Operation::Create => {
            if config_source(req.object).is_some() {
                return forbidden(format!(
                    "node {node:?} is not allowed to create pods with a non-nil configSource"
                ));
            }
            let bad = forbidden_labels(&modified_labels(&labels(req.object), &BTreeMap::new()));
            if !bad.is_empty() {
                return forbidden(format!(
                    "node {node:?} is not allowed to set the following labels: {}",
                    bad.join(", ")
                ));
            }
        }
        Operation::Update => {
            let new_source = config_source(req.object);
            if new_source.is_some() && new_source != config_source(req.old) {
                return forbidden(format!(
                    "node {node:?} is not allowed to update configSource to a new non-nil configSource"
                ));
            }
            if taints(req.object) != taints(req.old) {
                return forbidden(format!("node {node:?} is not allowed to modify taints"));
            }
            let bad = forbidden_labels(&modified_labels(&labels(req.object), &labels(req.old)));
            if !bad.is_empty() {
                return forbidden(format!(
                    "is not allowed to modify labels: {}",
                    bad.join(", ")
                ));
            }
        }
        Operation::Delete => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn req<'a>(
        resource: &'a str,
        subresource: &'a str,
        operation: Operation,
        name: &'a str,
        object: Option<&'a Value>,
        old: Option<&'a Value>,
    ) -> Request<'a> {
        Request {
            node: "a",
            group: "",
            resource,
            subresource,
            operation,
            namespace: "default",
            name,
            object,
            old,
        }
    }

    fn reason(r: Result<(), Refusal>) -> String {
        match r {
            Err(Refusal::Forbidden(m)) => m,
            other => panic!("not forbidden: {other:?}"),
        }
    }

    fn bound(node: &str) -> Value {
        json!({"metadata": {"name": "p", "uid": "u1", "labels": {"app": "x"}}, "spec": {"nodeName": node}})
    }

    #[test]
    fn pod_status_only_for_pods_bound_to_the_node() {
        let mine = bound("a");
        let theirs = bound("b");
        let ok = req(
            "pods",
            "status",
            Operation::Update,
            "p",
            Some(&mine),
            Some(&mine),
        );
        assert_eq!(check(&ok, &Facts::default()), Ok(()));
        let other = req(
            "pods",
            "status",
            Operation::Update,
            "p",
            Some(&theirs),
            Some(&theirs),
        );
        assert_eq!(
            reason(check(&other, &Facts::default())),
            "node \"a\" can only update pod status for pods with spec.nodeName set to itself"
        );
        let mut relabeled = mine.clone();
        relabeled["metadata"]["labels"]["app"] = json!("y");
        let labels = req(
            "pods",
            "status",
            Operation::Update,
            "p",
            Some(&relabeled),
            Some(&mine),
        );
        assert_eq!(
            reason(check(&labels, &Facts::default())),
            "node \"a\" cannot update labels through pod status"
        );
    }

    #[test]
    fn pods_are_deleted_and_evicted_only_when_bound_to_the_node() {
        let theirs = bound("b");
        let del = req("pods", "", Operation::Delete, "p", None, Some(&theirs));
        assert_eq!(
            reason(check(&del, &Facts::default())),
            "node \"a\" can only delete pods with spec.nodeName set to itself"
        );
        let eviction = json!({"metadata": {"name": "p"}});
        let ev = req(
            "pods",
            "eviction",
            Operation::Create,
            "p",
            Some(&eviction),
            None,
        );
        assert_eq!(needs(&ev), Some(Needs::Pod("p".into())));
        let facts = Facts {
            pod: Some(theirs),
            ..Facts::default()
        };
        assert_eq!(
            reason(check(&ev, &facts)),
            "node a can only evict pods with spec.nodeName set to itself"
        );
        let facts = Facts {
            pod: Some(bound("a")),
            ..Facts::default()
        };
        assert_eq!(check(&ev, &facts), Ok(()));
        assert_eq!(
            check(&ev, &Facts::default()),
            Err(Refusal::PodNotFound("p".into()))
        );
    }

    fn mirror() -> Value {
        json!({
            "metadata": {
                "name": "etcd-a",
                "annotations": {"kubernetes.io/config.mirror": "h"},
                "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": "a", "uid": "node-uid", "controller": true}],
            },
            "spec": {"nodeName": "a", "serviceAccountName": "default", "containers": [{"name": "c", "image": "i"}]},
        })
    }

    #[test]
    fn only_mirror_pods_owned_by_and_bound_to_the_node_are_created() {
        let facts = Facts {
            node_uid: Some("node-uid".into()),
            ..Facts::default()
        };
        let pod = mirror();
        assert_eq!(
            check(
                &req("pods", "", Operation::Create, "etcd-a", Some(&pod), None),
                &facts
            ),
            Ok(())
        );
        let mut plain = mirror();
        plain["metadata"]["annotations"] = json!({});
        assert!(
            reason(check(
                &req("pods", "", Operation::Create, "x", Some(&plain), None),
                &facts
            ))
            .starts_with("pod does not have \"kubernetes.io/config.mirror\" annotation")
        );
        let mut elsewhere = mirror();
        elsewhere["spec"]["nodeName"] = json!("b");
        assert_eq!(
            reason(check(
                &req("pods", "", Operation::Create, "x", Some(&elsewhere), None),
                &facts
            )),
            "node \"a\" can only create pods with spec.nodeName set to itself"
        );
        let mut secret = mirror();
        secret["spec"]["volumes"] = json!([{"name": "s", "secret": {"secretName": "x"}}]);
        assert_eq!(
            reason(check(
                &req("pods", "", Operation::Create, "x", Some(&secret), None),
                &facts
            )),
            "node \"a\" can not create pods that reference secrets"
        );
        let other_uid = Facts {
            node_uid: Some("other".into()),
            ..Facts::default()
        };
        assert_eq!(
            reason(check(
                &req("pods", "", Operation::Create, "x", Some(&pod), None),
                &other_uid
            )),
            "node a UID mismatch: expected other got node-uid"
        );
    }

    #[test]
    fn a_node_modifies_only_itself_and_not_its_taints_or_restricted_labels() {
        let old = json!({"metadata": {"name": "a", "labels": {"kubernetes.io/hostname": "a"}}, "spec": {}});
        let other = req("nodes", "", Operation::Update, "b", Some(&old), Some(&old));
        assert_eq!(
            reason(check(&other, &Facts::default())),
            "node \"a\" is not allowed to modify node \"b\""
        );
        let mut tainted = old.clone();
        tainted["spec"]["taints"] = json!([{"key": "k", "effect": "NoSchedule"}]);
        assert_eq!(
            reason(check(
                &req(
                    "nodes",
                    "",
                    Operation::Update,
                    "a",
                    Some(&tainted),
                    Some(&old)
                ),
                &Facts::default()
            )),
            "node \"a\" is not allowed to modify taints"
        );
        let mut relabeled = old.clone();
        relabeled["metadata"]["labels"]["node-restriction.kubernetes.io/secure"] = json!("true");
        relabeled["metadata"]["labels"]["node-role.kubernetes.io/control-plane"] = json!("");
        relabeled["metadata"]["labels"]["node.kubernetes.io/pool"] = json!("p");
        relabeled["metadata"]["labels"]["example.com/x"] = json!("y");
        assert_eq!(
            reason(check(
                &req(
                    "nodes",
                    "",
                    Operation::Update,
                    "a",
                    Some(&relabeled),
                    Some(&old)
                ),
                &Facts::default()
            )),
            "is not allowed to modify labels: node-restriction.kubernetes.io/secure, node-role.kubernetes.io/control-plane"
        );
        assert_eq!(
            reason(check(
                &req("nodes", "", Operation::Create, "a", Some(&relabeled), None),
                &Facts::default()
            )),
            "node \"a\" is not allowed to set the following labels: node-restriction.kubernetes.io/secure, node-role.kubernetes.io/control-plane"
        );
        let mut status = old.clone();
        status["status"] = json!({"phase": "Running"});
        assert_eq!(
            check(
                &req(
                    "nodes",
                    "status",
                    Operation::Update,
                    "a",
                    Some(&status),
                    Some(&old)
                ),
                &Facts::default()
            ),
            Ok(())
        );
    }

    #[test]
    fn leases_only_the_nodes_own_in_kube_node_lease() {
        let lease = json!({"metadata": {"name": "b"}});
        let mut r = req("leases", "", Operation::Create, "b", Some(&lease), None);
        r.group = "coordination.k8s.io";
        r.namespace = "kube-node-lease";
        assert_eq!(
            reason(check(&r, &Facts::default())),
            "can only access node lease with the same name as the requesting node"
        );
        r.name = "a";
        assert_eq!(check(&r, &Facts::default()), Ok(()));
        r.namespace = "default";
        assert_eq!(
            reason(check(&r, &Facts::default())),
            "can only access leases in the \"kube-node-lease\" system namespace"
        );
    }

    #[test]
    fn tokens_only_for_pods_on_the_node() {
        let body = json!({"spec": {"boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": "p", "uid": "u1"}}});
        let r = req(
            "serviceaccounts",
            "token",
            Operation::Create,
            "default",
            Some(&body),
            None,
        );
        assert_eq!(needs(&r), Some(Needs::Pod("p".into())));
        let facts = |node: &str| Facts {
            pod: Some(bound(node)),
            ..Facts::default()
        };
        assert_eq!(check(&r, &facts("a")), Ok(()));
        assert_eq!(
            reason(check(&r, &facts("b"))),
            "node requested token bound to a pod scheduled on a different node"
        );
        let unbound = json!({"spec": {}});
        let r = req(
            "serviceaccounts",
            "token",
            Operation::Create,
            "default",
            Some(&unbound),
            None,
        );
        assert_eq!(
            reason(check(&r, &Facts::default())),
            "node requested token not bound to a pod"
        );
    }
}
