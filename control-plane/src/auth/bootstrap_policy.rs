//! The default RBAC policy written at every start (kube-apiserver's
//! `rbac/bootstrap-roles` post-start hook and kubeadm's bindings), reconciled
//! like upstream's auto-update: objects annotated
//! `rbac.authorization.kubernetes.io/autoupdate: "true"` get missing rules,
//! labels, aggregation selectors and subjects added back; `"false"` leaves
//! a user's changes alone.
//!
//! As upstream, the `system:node` ClusterRole is bound to nobody (the Node
//! authorizer grants nodes its rules, narrowed to their own objects), and
//! `system:node-proxier` to the user `system:kube-proxy`, which each agent's
//! in-process service proxy, cluster DNS and pod network act as (its
//! certificate comes by CSR, see `controllers::csrapproving`). A
//! `system:nodes` subject an older r8s bound these to is removed.

use agent::bootstrap::csr::KUBE_PROXY_USER;
use serde_json::{Value, json};

use crate::resources::{self, ResourceType};
use crate::server::Api;
use crate::server::objects::{DeleteOptions, UpdateMode, WriteOptions};
use crate::server::status::ApiError;

const AUTOUPDATE: &str = "rbac.authorization.kubernetes.io/autoupdate";
const RBAC: &str = "rbac.authorization.k8s.io";

/// Bindings an older r8s gave the `system:nodes` group.
const FORMER_NODE_BINDINGS: &[&str] = &[
    "system:node",
    "system:node-proxier",
    "system:r8s:cluster-dns-endpoints",
];

const READ: &[&str] = &["get", "list", "watch"];
const WRITE: &[&str] = &["create", "update", "patch", "delete", "deletecollection"];
const READ_WRITE: &[&str] = &[
    "get",
    "list",
    "watch",
    "create",
    "update",
    "patch",
    "delete",
    "deletecollection",
];

fn rule(verbs: &[&str], groups: &[&str], resources: &[&str]) -> Value {
    json!({"verbs": verbs, "apiGroups": groups, "resources": resources})
}

fn named_rule(verbs: &[&str], groups: &[&str], resources: &[&str], names: &[&str]) -> Value {
    json!({"verbs": verbs, "apiGroups": groups, "resources": resources, "resourceNames": names})
}

fn urls(verbs: &[&str], urls: &[&str]) -> Value {
    json!({"verbs": verbs, "nonResourceURLs": urls})
}

fn meta(name: &str, labels: &[(&str, &str)]) -> Value {
    let mut l = serde_json::Map::new();
    l.insert("kubernetes.io/bootstrapping".into(), "rbac-defaults".into());
    for (k, v) in labels {
        l.insert((*k).into(), (*v).into());
    }
    json!({"name": name, "labels": l, "annotations": {AUTOUPDATE: "true"}})
}

fn cluster_role(name: &str, labels: &[(&str, &str)], rules: Vec<Value>) -> Value {
    json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": meta(name, labels), "rules": rules})
}

fn aggregated(name: &str, labels: &[(&str, &str)], selector_label: &str) -> Value {
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": meta(name, labels),
        "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {selector_label: "true"}}]},
        "rules": [],
    })
}

fn subject(kind: &str, name: &str) -> Value {
    json!({"kind": kind, "apiGroup": RBAC, "name": name})
}

fn user(name: &str) -> Value {
    subject("User", name)
}

fn group(name: &str) -> Value {
    subject("Group", name)
}

fn cluster_binding(name: &str, role: &str, subjects: Vec<Value>) -> Value {
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": meta(name, &[]),
        "roleRef": {"apiGroup": RBAC, "kind": "ClusterRole", "name": role},
        "subjects": subjects,
    })
}

const TO_ADMIN: (&str, &str) = ("rbac.authorization.k8s.io/aggregate-to-admin", "true");
const TO_EDIT: (&str, &str) = ("rbac.authorization.k8s.io/aggregate-to-edit", "true");
const TO_VIEW: (&str, &str) = ("rbac.authorization.k8s.io/aggregate-to-view", "true");

/// The bootstrap ClusterRoles (upstream `bootstrappolicy.ClusterRoles()`,
/// the parts r8s serves).
pub fn cluster_roles() -> Vec<Value> {
    vec![
        cluster_role(
            "cluster-admin",
            &[],
            vec![rule(&["*"], &["*"], &["*"]), urls(&["*"], &["*"])],
        ),
        cluster_role(
            "system:discovery",
            &[],
            vec![urls(
                &["get"],
                &[
                    "/api",
                    "/api/*",
                    "/apis",
                    "/apis/*",
                    "/healthz",
                    "/livez",
                    "/openapi",
                    "/openapi/*",
                    "/readyz",
                    "/version",
                    "/version/",
                ],
            )],
        ),
        cluster_role(
            "system:monitoring",
            &[],
            vec![urls(
                &["get"],
                &[
                    "/healthz",
                    "/healthz/*",
                    "/livez",
                    "/livez/*",
                    "/readyz",
                    "/readyz/*",
                    "/metrics",
                    "/metrics/slis",
                ],
            )],
        ),
        cluster_role(
            "system:basic-user",
            &[],
            vec![
                rule(
                    &["create"],
                    &["authorization.k8s.io"],
                    &["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
                ),
                rule(
                    &["create"],
                    &["authentication.k8s.io"],
                    &["selfsubjectreviews"],
                ),
            ],
        ),
        cluster_role(
            "system:public-info-viewer",
            &[],
            vec![urls(
                &["get"],
                &["/healthz", "/livez", "/readyz", "/version", "/version/"],
            )],
        ),
        cluster_role(
            "system:service-account-issuer-discovery",
            &[],
            vec![urls(
                &["get"],
                &[
                    "/.well-known/openid-configuration",
                    "/.well-known/openid-configuration/",
                    "/openid/v1/jwks",
                    "/openid/v1/jwks/",
                ],
            )],
        ),
        aggregated("admin", &[], TO_ADMIN.0),
        aggregated("edit", &[TO_ADMIN], TO_EDIT.0),
        aggregated("view", &[TO_EDIT], TO_VIEW.0),
        cluster_role(
            "system:aggregate-to-admin",
            &[TO_ADMIN],
            vec![
                rule(
                    &["create"],
                    &["authorization.k8s.io"],
                    &["localsubjectaccessreviews"],
                ),
                rule(READ_WRITE, &[RBAC], &["roles", "rolebindings"]),
            ],
        ),
        cluster_role("system:aggregate-to-edit", &[TO_EDIT], edit_rules()),
        cluster_role("system:aggregate-to-view", &[TO_VIEW], view_rules()),
        cluster_role(
            "system:auth-delegator",
            &[],
            vec![
                rule(&["create"], &["authentication.k8s.io"], &["tokenreviews"]),
                rule(
                    &["create"],
                    &["authorization.k8s.io"],
                    &["subjectaccessreviews"],
                ),
            ],
        ),
        cluster_role("system:node", &[], node_rules()),
        cluster_role(
            "system:node-bootstrapper",
            &[],
            vec![rule(
                &["create", "get", "list", "watch"],
                &["certificates.k8s.io"],
                &["certificatesigningrequests"],
            )],
        ),
        cluster_role(
            "system:certificates.k8s.io:certificatesigningrequests:nodeclient",
            &[],
            vec![rule(
                &["create"],
                &["certificates.k8s.io"],
                &["certificatesigningrequests/nodeclient"],
            )],
        ),
        cluster_role(
            "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient",
            &[],
            vec![rule(
                &["create"],
                &["certificates.k8s.io"],
                &["certificatesigningrequests/selfnodeclient"],
            )],
        ),
        cluster_role(
            "system:node-proxier",
            &[],
            vec![
                rule(&["list", "watch"], &[""], &["services", "endpoints"]),
                rule(&["get", "list", "watch"], &[""], &["nodes"]),
                rule(
                    &["create", "patch", "update"],
                    &["", "events.k8s.io"],
                    &["events"],
                ),
                rule(
                    &["list", "watch"],
                    &["discovery.k8s.io"],
                    &["endpointslices"],
                ),
            ],
        ),
        cluster_role("system:kube-scheduler", &[], scheduler_rules()),
        cluster_role(
            "system:kube-controller-manager",
            &[],
            controller_manager_rules(),
        ),
    ]
}

fn edit_rules() -> Vec<Value> {
    vec![
        rule(
            READ,
            &[""],
            &[
                "pods/attach",
                "pods/proxy",
                "pods/exec",
                "pods/portforward",
                "secrets",
                "services/proxy",
            ],
        ),
        rule(&["impersonate"], &[""], &["serviceaccounts"]),
        rule(
            WRITE,
            &[""],
            &[
                "pods",
                "pods/attach",
                "pods/proxy",
                "pods/exec",
                "pods/portforward",
            ],
        ),
        rule(&["create"], &[""], &["pods/eviction"]),
        rule(
            WRITE,
            &[""],
            &[
                "replicationcontrollers",
                "replicationcontrollers/scale",
                "serviceaccounts",
                "services",
                "services/proxy",
                "persistentvolumeclaims",
                "configmaps",
                "secrets",
                "events",
            ],
        ),
        rule(&["create"], &[""], &["serviceaccounts/token"]),
        rule(
            WRITE,
            &["apps"],
            &[
                "statefulsets",
                "statefulsets/scale",
                "daemonsets",
                "deployments",
                "deployments/scale",
                "deployments/rollback",
                "replicasets",
                "replicasets/scale",
            ],
        ),
        rule(WRITE, &["autoscaling"], &["horizontalpodautoscalers"]),
        rule(WRITE, &["batch"], &["jobs", "cronjobs"]),
        rule(WRITE, &["policy"], &["poddisruptionbudgets"]),
        rule(
            WRITE,
            &["networking.k8s.io"],
            &["networkpolicies", "ingresses"],
        ),
        rule(READ_WRITE, &["coordination.k8s.io"], &["leases"]),
    ]
}

fn view_rules() -> Vec<Value> {
    vec![
        rule(
            READ,
            &[""],
            &[
                "pods",
                "replicationcontrollers",
                "replicationcontrollers/scale",
                "serviceaccounts",
                "services",
                "services/status",
                "endpoints",
                "persistentvolumeclaims",
                "persistentvolumeclaims/status",
                "configmaps",
            ],
        ),
        rule(
            READ,
            &[""],
            &[
                "limitranges",
                "resourcequotas",
                "bindings",
                "events",
                "pods/status",
                "resourcequotas/status",
                "namespaces/status",
                "replicationcontrollers/status",
                "pods/log",
            ],
        ),
        rule(READ, &[""], &["namespaces"]),
        rule(READ, &["discovery.k8s.io"], &["endpointslices"]),
        rule(
            READ,
            &["apps"],
            &[
                "controllerrevisions",
                "statefulsets",
                "statefulsets/status",
                "statefulsets/scale",
                "daemonsets",
                "daemonsets/status",
                "deployments",
                "deployments/status",
                "deployments/scale",
                "replicasets",
                "replicasets/status",
                "replicasets/scale",
            ],
        ),
        rule(
            READ,
            &["autoscaling"],
            &[
                "horizontalpodautoscalers",
                "horizontalpodautoscalers/status",
            ],
        ),
        rule(
            READ,
            &["batch"],
            &["jobs", "cronjobs", "cronjobs/status", "jobs/status"],
        ),
        rule(
            READ,
            &["policy"],
            &["poddisruptionbudgets", "poddisruptionbudgets/status"],
        ),
        rule(
            READ,
            &["networking.k8s.io"],
            &["networkpolicies", "ingresses", "ingresses/status"],
        ),
    ]
}

/// Upstream's `NodeRules()`: the rules of `system:node`, also the static
/// rules of the Node authorizer.
pub fn node_rules() -> Vec<Value> {
    vec![
        rule(&["create"], &["authentication.k8s.io"], &["tokenreviews"]),
        rule(
            &["create"],
            &["authorization.k8s.io"],
            &["subjectaccessreviews", "localsubjectaccessreviews"],
        ),
        rule(READ, &[""], &["services"]),
        rule(
            &[
                "create", "get", "list", "watch", "delete", "update", "patch",
            ],
            &[""],
            &["nodes"],
        ),
        rule(&["update", "patch"], &[""], &["nodes/status"]),
        rule(&["update", "patch"], &[""], &["nodes"]),
        rule(
            &["create", "update", "patch"],
            &["", "events.k8s.io"],
            &["events"],
        ),
        rule(READ, &[""], &["pods"]),
        rule(&["create", "delete"], &[""], &["pods"]),
        rule(&["update", "patch"], &[""], &["pods/status"]),
        rule(&["create"], &[""], &["pods/eviction"]),
        rule(&["get"], &[""], &["secrets", "configmaps"]),
        rule(
            &["get"],
            &[""],
            &["persistentvolumeclaims", "persistentvolumes"],
        ),
        rule(&["get"], &[""], &["endpoints"]),
        rule(
            &["update", "patch"],
            &[""],
            &["persistentvolumeclaims/status"],
        ),
        rule(&["create"], &[""], &["serviceaccounts/token"]),
        rule(
            &["create", "get", "list", "watch"],
            &["certificates.k8s.io"],
            &["certificatesigningrequests"],
        ),
        rule(
            &["get", "create", "update", "patch", "delete"],
            &["coordination.k8s.io"],
            &["leases"],
        ),
        rule(&["get"], &["storage.k8s.io"], &["volumeattachments"]),
        rule(READ, &["storage.k8s.io"], &["csidrivers"]),
        rule(
            &["get", "create", "update", "patch", "delete"],
            &["storage.k8s.io"],
            &["csinodes"],
        ),
        rule(READ, &["node.k8s.io"], &["runtimeclasses"]),
        rule(READ, &["discovery.k8s.io"], &["endpointslices"]),
    ]
}

fn scheduler_rules() -> Vec<Value> {
    vec![
        rule(
            &["create", "patch", "update"],
            &["", "events.k8s.io"],
            &["events"],
        ),
        rule(&["create"], &["coordination.k8s.io"], &["leases"]),
        named_rule(
            &["get", "update"],
            &["coordination.k8s.io"],
            &["leases"],
            &["kube-scheduler"],
        ),
        rule(&["create"], &[""], &["endpoints"]),
        named_rule(
            &["get", "update"],
            &[""],
            &["endpoints"],
            &["kube-scheduler"],
        ),
        rule(READ, &[""], &["nodes"]),
        rule(&["get", "list", "watch", "delete"], &[""], &["pods"]),
        rule(&["create"], &[""], &["bindings", "pods/binding"]),
        rule(&["patch", "update"], &[""], &["pods/status"]),
        rule(
            READ,
            &[""],
            &[
                "replicationcontrollers",
                "services",
                "namespaces",
                "persistentvolumeclaims",
                "persistentvolumes",
            ],
        ),
        rule(READ, &["apps"], &["replicasets", "statefulsets"]),
        rule(READ, &["policy"], &["poddisruptionbudgets"]),
        rule(
            READ,
            &["storage.k8s.io"],
            &[
                "storageclasses",
                "csinodes",
                "csidrivers",
                "csistoragecapacities",
            ],
        ),
        rule(&["create"], &["authentication.k8s.io"], &["tokenreviews"]),
        rule(
            &["create"],
            &["authorization.k8s.io"],
            &["subjectaccessreviews"],
        ),
    ]
}

fn controller_manager_rules() -> Vec<Value> {
    vec![
        rule(
            &["create", "patch", "update"],
            &["", "events.k8s.io"],
            &["events"],
        ),
        rule(&["create"], &["coordination.k8s.io"], &["leases"]),
        named_rule(
            &["get", "update"],
            &["coordination.k8s.io"],
            &["leases"],
            &["kube-controller-manager"],
        ),
        rule(&["create"], &[""], &["secrets", "serviceaccounts"]),
        rule(&["delete"], &[""], &["secrets"]),
        rule(
            &["get"],
            &[""],
            &["configmaps", "namespaces", "secrets", "serviceaccounts"],
        ),
        rule(&["update"], &[""], &["secrets", "serviceaccounts"]),
        rule(&["create"], &["authentication.k8s.io"], &["tokenreviews"]),
        rule(
            &["create"],
            &["authorization.k8s.io"],
            &["subjectaccessreviews"],
        ),
        // Every shared informer.
        rule(&["list", "watch"], &["*"], &["*"]),
        rule(&["create"], &[""], &["serviceaccounts/token"]),
    ]
}

/// The bootstrap ClusterRoleBindings.
pub fn cluster_role_bindings() -> Vec<Value> {
    vec![
        cluster_binding(
            "cluster-admin",
            "cluster-admin",
            vec![group("system:masters")],
        ),
        cluster_binding(
            "system:monitoring",
            "system:monitoring",
            vec![group("system:monitoring")],
        ),
        cluster_binding(
            "system:discovery",
            "system:discovery",
            vec![group("system:authenticated")],
        ),
        cluster_binding(
            "system:basic-user",
            "system:basic-user",
            vec![group("system:authenticated")],
        ),
        cluster_binding(
            "system:public-info-viewer",
            "system:public-info-viewer",
            vec![
                group("system:authenticated"),
                group("system:unauthenticated"),
            ],
        ),
        cluster_binding(
            "system:service-account-issuer-discovery",
            "system:service-account-issuer-discovery",
            vec![group("system:serviceaccounts")],
        ),
        cluster_binding("system:node", "system:node", vec![]),
        cluster_binding(
            "system:node-proxier",
            "system:node-proxier",
            vec![user(KUBE_PROXY_USER)],
        ),
        cluster_binding(
            "system:kube-scheduler",
            "system:kube-scheduler",
            vec![user("system:kube-scheduler")],
        ),
        cluster_binding(
            "system:kube-controller-manager",
            "system:kube-controller-manager",
            vec![user("system:kube-controller-manager")],
        ),
        // kubeadm's node join bindings, for every bootstrap token.
        cluster_binding(
            "kubeadm:kubelet-bootstrap",
            "system:node-bootstrapper",
            vec![group("system:bootstrappers")],
        ),
        cluster_binding(
            "kubeadm:node-autoapprove-bootstrap",
            "system:certificates.k8s.io:certificatesigningrequests:nodeclient",
            vec![group("system:bootstrappers")],
        ),
        cluster_binding(
            "kubeadm:node-autoapprove-certificate-rotation",
            "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient",
            vec![group("system:nodes")],
        ),
    ]
}

/// A Role and its RoleBinding of the same name in `namespace`.
fn namespaced_role(
    namespace: &str,
    name: &str,
    rules: Value,
    subjects: Vec<Value>,
) -> (Value, Value) {
    let mut role_meta = meta(name, &[]);
    role_meta["namespace"] = namespace.into();
    let role = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": role_meta.clone(),
        "rules": rules,
    });
    let binding = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": role_meta,
        "roleRef": {"apiGroup": RBAC, "kind": "Role", "name": name},
        "subjects": subjects,
    });
    (role, binding)
}

/// kubeadm's Role and RoleBinding that let anyone read the `cluster-info`
/// ConfigMap in kube-public (the join discovery document).
pub fn cluster_info_role() -> (Value, Value) {
    namespaced_role(
        "kube-public",
        "kubeadm:bootstrap-signer-clusterinfo",
        json!([named_rule(
            &["get"],
            &[""],
            &["configmaps"],
            &["cluster-info"]
        )]),
        vec![user("system:anonymous")],
    )
}

/// r8s runs cluster DNS on every node (k3s runs CoreDNS as pods): each
/// node's agent publishes the EndpointSlice of its DNS server behind
/// `kube-system/kube-dns` (which it reads first), as `system:kube-proxy`.
pub fn cluster_dns_endpoints_role() -> (Value, Value) {
    namespaced_role(
        "kube-system",
        "system:r8s:cluster-dns-endpoints",
        json!([
            rule(
                &["get", "create", "update", "patch"],
                &["discovery.k8s.io"],
                &["endpointslices"]
            ),
            named_rule(&["get"], &[""], &["services"], &["kube-dns"]),
        ]),
        vec![user(KUBE_PROXY_USER)],
    )
}

fn res(plural: &str) -> Result<&'static ResourceType, ApiError> {
    resources::find(RBAC, "v1", plural)
        .ok_or_else(|| ApiError::internal(format!("{plural} are not served")))
}

fn union_into(existing: &mut Value, desired: &Value) -> bool {
    let (Some(have), Some(want)) = (existing.as_array_mut(), desired.as_array()) else {
        return false;
    };
    let mut changed = false;
    for w in want {
        if !have.contains(w) {
            have.push(w.clone());
            changed = true;
        }
    }
    changed
}

fn merge_map(existing: &mut Value, desired: &Value) -> bool {
    let mut changed = false;
    if let Some(want) = desired.as_object() {
        if !existing.is_object() {
            *existing = json!({});
        }
        for (k, v) in want {
            if existing.get(k) != Some(v) {
                existing[k] = v.clone();
                changed = true;
            }
        }
    }
    changed
}

/// The reconciled object, or `None` when `existing` needs nothing (or is
/// not to be auto-updated).
pub fn reconcile(existing: &Value, desired: &Value) -> Option<Value> {
    if existing.pointer(&format!(
        "/metadata/annotations/{}",
        AUTOUPDATE.replace('/', "~1")
    )) == Some(&json!("false"))
    {
        return None;
    }
    let mut out = existing.clone();
    let mut changed = false;
    for field in ["labels", "annotations"] {
        let want = &desired["metadata"][field];
        changed |= merge_map(&mut out["metadata"][field], want);
    }
    if let Some(want) = desired.get("aggregationRule") {
        let have = &mut out["aggregationRule"]["clusterRoleSelectors"];
        if !have.is_array() {
            *have = json!([]);
        }
        changed |= union_into(have, &want["clusterRoleSelectors"]);
    } else if let Some(want) = desired.get("rules") {
        if !out["rules"].is_array() {
            out["rules"] = json!([]);
        }
        changed |= union_into(&mut out["rules"], want);
    }
    if let Some(want) = desired.get("subjects") {
        if !out["subjects"].is_array() {
            out["subjects"] = json!([]);
        }
        changed |= union_into(&mut out["subjects"], want);
    }
    changed.then_some(out)
}

async fn ensure(api: &Api, r: &ResourceType, desired: Value) -> Result<(), ApiError> {
    let ns = desired
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .map(str::to_string);
    let ns = ns.as_deref();
    let name = desired["metadata"]["name"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let opts = WriteOptions::default();
    let Some((existing, _)) = api.read(r, ns, &name).await? else {
        return match api.create(r, ns, desired, &opts).await {
            Ok(_) => {
                tracing::info!(kind = r.kind, %name, "created bootstrap RBAC object");
                Ok(())
            }
            Err(e) if e.code == 409 => Ok(()),
            Err(e) => Err(e),
        };
    };
    // A binding's roleRef cannot change: recreate it.
    if let Some(role_ref) = desired.get("roleRef")
        && existing.get("roleRef") != Some(role_ref)
    {
        if existing.pointer("/metadata/annotations/rbac.authorization.kubernetes.io~1autoupdate")
            == Some(&json!("false"))
        {
            return Ok(());
        }
        api.delete(r, ns, &name, &DeleteOptions::default()).await?;
        api.create(r, ns, desired, &opts).await?;
        return Ok(());
    }
    let cleaned = drop_former_node_subject(existing.clone());
    let dropped = cleaned != existing;
    if let Some(updated) = reconcile(&cleaned, &desired).or(dropped.then_some(cleaned)) {
        api.update(r, ns, &name, updated, UpdateMode::Main, &opts)
            .await?;
        tracing::info!(kind = r.kind, %name, "reconciled bootstrap RBAC object");
    }
    Ok(())
}

/// A binding of [`FORMER_NODE_BINDINGS`] without the `system:nodes` group
/// an older r8s bound it to (the Node authorizer and `system:kube-proxy`
/// took its place); other objects, and bindings a user keeps with
/// autoupdate `"false"`, are left as they are.
fn drop_former_node_subject(mut existing: Value) -> Value {
    let name = existing.pointer("/metadata/name").and_then(Value::as_str);
    if !name.is_some_and(|n| FORMER_NODE_BINDINGS.contains(&n))
        || existing.get("roleRef").is_none()
        || existing.pointer("/metadata/annotations/rbac.authorization.kubernetes.io~1autoupdate")
            == Some(&json!("false"))
    {
        return existing;
    }
    let nodes = group("system:nodes");
    if let Some(subjects) = existing.get_mut("subjects").and_then(Value::as_array_mut) {
        subjects
            .retain(|s| s.get("kind") != nodes.get("kind") || s.get("name") != nodes.get("name"));
    }
    existing
}

/// Creates or reconciles the whole bootstrap policy.
pub async fn run(api: &Api) -> Result<(), ApiError> {
    let (cluster_roles, bindings) = (res("clusterroles")?, res("clusterrolebindings")?);
    for role in self::cluster_roles() {
        ensure(api, cluster_roles, role).await?;
    }
    for binding in cluster_role_bindings() {
        ensure(api, bindings, binding).await?;
    }
    for (role, binding) in [cluster_info_role(), cluster_dns_endpoints_role()] {
        ensure(api, res("roles")?, role).await?;
        ensure(api, res("rolebindings")?, binding).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconcile_adds_missing_rules_and_subjects_only() {
        let desired = cluster_roles()
            .into_iter()
            .find(|r| r["metadata"]["name"] == "system:basic-user")
            .unwrap();
        assert!(reconcile(&desired, &desired).is_none());
        let mut edited = desired.clone();
        edited["rules"] = json!([rule(&["get"], &[""], &["pods"])]);
        let out = reconcile(&edited, &desired).unwrap();
        assert_eq!(out["rules"].as_array().unwrap().len(), 3);
        edited["metadata"]["annotations"][AUTOUPDATE] = "false".into();
        assert!(reconcile(&edited, &desired).is_none());

        let binding = cluster_role_bindings().remove(4);
        let mut lost = binding.clone();
        lost["subjects"] = json!([group("system:authenticated")]);
        let out = reconcile(&lost, &binding).unwrap();
        assert_eq!(out["subjects"], binding["subjects"]);
    }

    #[test]
    fn aggregated_roles_keep_their_filled_rules() {
        let desired = aggregated("view", &[TO_EDIT], TO_VIEW.0);
        let mut filled = desired.clone();
        filled["rules"] = json!([rule(READ, &[""], &["pods"])]);
        assert!(reconcile(&filled, &desired).is_none());
    }

    #[test]
    fn every_bootstrap_object_passes_validation() {
        use crate::registry::rbac::{validate_binding, validate_role};
        for r in cluster_roles() {
            assert!(
                validate_role(&r, false).is_empty(),
                "{}",
                r["metadata"]["name"]
            );
        }
        for b in cluster_role_bindings() {
            assert!(
                validate_binding(&b, false).is_empty(),
                "{}",
                b["metadata"]["name"]
            );
        }
        for (role, binding) in [cluster_info_role(), cluster_dns_endpoints_role()] {
            assert!(validate_role(&role, true).is_empty());
            assert!(validate_binding(&binding, true).is_empty());
        }
    }

    #[test]
    fn the_former_system_nodes_subjects_are_dropped() {
        let mut old = cluster_binding("system:node", "system:node", vec![group("system:nodes")]);
        old["metadata"]["annotations"] = json!({AUTOUPDATE: "true"});
        let cleaned = drop_former_node_subject(old);
        assert_eq!(cleaned["subjects"], json!([]));
        let mut kept = cluster_binding("system:node", "system:node", vec![group("system:nodes")]);
        kept["metadata"]["annotations"] = json!({AUTOUPDATE: "false"});
        assert_eq!(drop_former_node_subject(kept.clone()), kept);
        let proxier = cluster_role_bindings()
            .into_iter()
            .find(|b| b["metadata"]["name"] == "system:node-proxier")
            .unwrap();
        assert_eq!(proxier["subjects"], json!([user(KUBE_PROXY_USER)]));
        let mut old_proxier = proxier.clone();
        old_proxier["subjects"] = json!([user(KUBE_PROXY_USER), group("system:nodes")]);
        assert_eq!(drop_former_node_subject(old_proxier), proxier);
        let (_, dns) = cluster_dns_endpoints_role();
        let mut old_dns = dns.clone();
        old_dns["subjects"] = json!([group("system:nodes")]);
        assert_eq!(drop_former_node_subject(old_dns)["subjects"], json!([]));
        // Nobody else's binding of the group is touched.
        let bootstrap = cluster_role_bindings()
            .into_iter()
            .find(|b| b["metadata"]["name"] == "kubeadm:node-autoapprove-certificate-rotation")
            .unwrap();
        assert_eq!(drop_former_node_subject(bootstrap.clone()), bootstrap);
    }
}
