//! The DaemonSet controller: one pod per eligible node (node selector,
//! required node affinity, taints with the tolerations upstream adds to
//! daemon pods), each pinned with a `metadata.name` matchFields term so the
//! scheduler binds it there; ControllerRevisions per template, RollingUpdate
//! with maxUnavailable, and the status `kubectl rollout status` reads.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet, DaemonSetStatus};
use k8s_openapi::api::core::v1::{
    Node, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Pod,
    PodTemplateSpec, Toleration,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Api;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use sha2::Digest;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::ControllerContext;
use super::scheduler::matching::{node_taints, pod_matches_node, untolerated_taint};
use super::store::Store;

pub const REVISION_HASH_LABEL: &str = "controller-revision-hash";
pub const TEMPLATE_GENERATION_LABEL: &str = "pod-template-generation";
const RESYNC: Duration = Duration::from_secs(10);
/// How long a create or delete is expected to show up in the caches.
const EXPECTATION_TTL: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum DaemonSetError {
    #[error("failed to call the API")]
    Api(#[from] kube::Error),
    #[error("failed to encode the pod template")]
    Encode(#[from] serde_json::Error),
}

/// Tolerations every daemon pod gets (upstream `AddOrUpdateDaemonPodTolerations`).
pub fn daemon_tolerations(host_network: bool) -> Vec<Toleration> {
    let mut out: Vec<Toleration> = [
        ("node.kubernetes.io/not-ready", "NoExecute"),
        ("node.kubernetes.io/unreachable", "NoExecute"),
        ("node.kubernetes.io/disk-pressure", "NoSchedule"),
        ("node.kubernetes.io/memory-pressure", "NoSchedule"),
        ("node.kubernetes.io/pid-pressure", "NoSchedule"),
        ("node.kubernetes.io/unschedulable", "NoSchedule"),
    ]
    .into_iter()
    .map(|(key, effect)| Toleration {
        key: Some(key.into()),
        operator: Some("Exists".into()),
        effect: Some(effect.into()),
        ..Toleration::default()
    })
    .collect();
    if host_network {
        out.push(Toleration {
            key: Some("node.kubernetes.io/network-unavailable".into()),
            operator: Some("Exists".into()),
            effect: Some("NoSchedule".into()),
            ..Toleration::default()
        });
    }
    out
}

/// A pod from the DaemonSet's template with the daemon tolerations (no
/// node yet): what eligibility is checked with.
pub fn template_pod(ds: &DaemonSet) -> Pod {
    let template = ds
        .spec
        .as_ref()
        .map(|s| s.template.clone())
        .unwrap_or_default();
    let mut spec = template.spec.unwrap_or_default();
    let host_network = spec.host_network == Some(true);
    let tolerations = spec.tolerations.get_or_insert_with(Vec::new);
    for t in daemon_tolerations(host_network) {
        if !tolerations
            .iter()
            .any(|e| e.key == t.key && e.effect == t.effect)
        {
            tolerations.push(t);
        }
    }
    Pod {
        metadata: template.metadata.unwrap_or_default(),
        spec: Some(spec),
        status: None,
    }
}

/// Upstream `NodeShouldRunDaemonPod`: (should run, should continue running).
pub fn node_should_run(pod: &Pod, node: &Node) -> (bool, bool) {
    if !pod_matches_node(pod, node) {
        return (false, false);
    }
    let tolerations = pod
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.as_deref())
        .unwrap_or(&[]);
    let taints = node_taints(node);
    if untolerated_taint(taints, tolerations, &["NoExecute"]).is_some() {
        return (false, false);
    }
    if untolerated_taint(taints, tolerations, &["NoSchedule"]).is_some() {
        return (false, true);
    }
    (true, true)
}

/// The template's hash (`controller-revision-hash`).
pub fn template_hash(template: &PodTemplateSpec) -> Result<String, DaemonSetError> {
    let bytes = serde_json::to_vec(template)?;
    let digest = sha2::Sha256::digest(&bytes);
    Ok(hex::encode(&digest[..5]))
}

/// The node a daemon pod is for: its nodeName, else its matchFields term.
pub fn pod_node(pod: &Pod) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    if let Some(n) = spec.node_name.as_ref().filter(|n| !n.is_empty()) {
        return Some(n.clone());
    }
    spec.affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?
        .node_selector_terms
        .iter()
        .flat_map(|t| t.match_fields.iter().flatten())
        .find(|f| f.key == "metadata.name" && f.operator == "In")
        .and_then(|f| f.values.as_ref()?.first().cloned())
}

fn owner_reference(ds: &DaemonSet) -> OwnerReference {
    OwnerReference {
        api_version: "apps/v1".into(),
        kind: "DaemonSet".into(),
        name: ds.metadata.name.clone().unwrap_or_default(),
        uid: ds.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

fn controlled_by(meta: &ObjectMeta, uid: &str) -> bool {
    meta.owner_references
        .iter()
        .flatten()
        .any(|o| o.controller == Some(true) && o.uid == uid)
}

/// The daemon pod for `node` (upstream `NewPod` + node affinity replacement).
pub fn new_pod(ds: &DaemonSet, node: &str, hash: &str) -> Pod {
    let mut pod = template_pod(ds);
    let name = ds.metadata.name.clone().unwrap_or_default();
    let generation = ds.metadata.generation.unwrap_or(1);
    pod.metadata.generate_name = Some(format!("{name}-"));
    pod.metadata.namespace = ds.metadata.namespace.clone();
    pod.metadata.owner_references = Some(vec![owner_reference(ds)]);
    let labels = pod.metadata.labels.get_or_insert_with(BTreeMap::new);
    labels.insert(REVISION_HASH_LABEL.into(), hash.into());
    labels.insert(TEMPLATE_GENERATION_LABEL.into(), generation.to_string());
    if let Some(spec) = pod.spec.as_mut() {
        let affinity = spec.affinity.get_or_insert_with(Default::default);
        let node_affinity = affinity
            .node_affinity
            .get_or_insert_with(NodeAffinity::default);
        node_affinity.required_during_scheduling_ignored_during_execution = Some(NodeSelector {
            node_selector_terms: vec![NodeSelectorTerm {
                match_expressions: None,
                match_fields: Some(vec![NodeSelectorRequirement {
                    key: "metadata.name".into(),
                    operator: "In".into(),
                    values: Some(vec![node.into()]),
                }]),
            }],
        });
    }
    pod
}

fn max_unavailable(ds: &DaemonSet, desired: i64) -> i64 {
    let value = ds
        .spec
        .as_ref()
        .and_then(|s| s.update_strategy.as_ref())
        .and_then(|u| u.rolling_update.as_ref())
        .and_then(|r| r.max_unavailable.clone())
        .unwrap_or(IntOrString::Int(1));
    let n = match value {
        IntOrString::Int(i) => i64::from(i),
        IntOrString::String(s) => {
            let pct: i64 = s.trim_end_matches('%').parse().unwrap_or(0);
            (desired * pct + 99) / 100
        }
    };
    n.max(if desired > 0 { 1 } else { 0 })
}

fn is_rolling_update(ds: &DaemonSet) -> bool {
    ds.spec
        .as_ref()
        .and_then(|s| s.update_strategy.as_ref())
        .and_then(|u| u.type_.as_deref())
        .is_none_or(|t| t == "RollingUpdate")
}

/// Creates and deletes in flight, so a lagging cache does not double them.
#[derive(Default)]
struct Expectations {
    creating: HashMap<(String, String), Instant>,
    deleting: HashMap<String, Instant>,
}

impl Expectations {
    fn expire(&mut self) {
        self.creating.retain(|_, t| t.elapsed() < EXPECTATION_TTL);
        self.deleting.retain(|_, t| t.elapsed() < EXPECTATION_TTL);
    }
}

/// What to do for one DaemonSet, computed without I/O.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    pub create_on: Vec<String>,
    pub delete: Vec<String>,
    pub status: DaemonSetStatus,
}

/// Upstream `manage` + `rollingUpdate` + `updateDaemonSetStatus`.
pub fn plan(ds: &DaemonSet, hash: &str, nodes: &[Arc<Node>], pods: &[Arc<Pod>]) -> Plan {
    let template = template_pod(ds);
    let mut by_node: HashMap<String, Vec<&Arc<Pod>>> = HashMap::new();
    for p in pods {
        if let Some(n) = pod_node(p) {
            by_node.entry(n).or_default().push(p);
        }
    }
    let mut out = Plan::default();
    let (mut desired, mut current, mut misscheduled, mut ready, mut updated) = (0, 0, 0, 0, 0);
    let mut old_ready: Vec<&Arc<Pod>> = Vec::new();
    let mut unavailable = 0i64;
    for node in nodes {
        let name = node.metadata.name.clone().unwrap_or_default();
        let (should_run, should_continue) = node_should_run(&template, node);
        let mut node_pods: Vec<&Arc<Pod>> = by_node.remove(&name).unwrap_or_default();
        // Failed daemon pods are replaced.
        node_pods.retain(|p| {
            let failed = p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Failed");
            if failed && p.metadata.deletion_timestamp.is_none() {
                out.delete.push(p.metadata.name.clone().unwrap_or_default());
            }
            !failed
        });
        if should_run {
            desired += 1;
        }
        if node_pods.is_empty() {
            if should_run {
                out.create_on.push(name);
                unavailable += 1;
            }
            continue;
        }
        if !should_continue {
            misscheduled += 1;
            for p in &node_pods {
                if p.metadata.deletion_timestamp.is_none() {
                    out.delete.push(p.metadata.name.clone().unwrap_or_default());
                }
            }
            continue;
        }
        if !should_run {
            misscheduled += 1;
            continue;
        }
        current += 1;
        // Keep the oldest pod; delete duplicates.
        node_pods.sort_by_key(|p| p.metadata.creation_timestamp.as_ref().map(|t| t.0));
        for extra in &node_pods[1..] {
            out.delete
                .push(extra.metadata.name.clone().unwrap_or_default());
        }
        let pod = node_pods[0];
        let is_new = pod
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(REVISION_HASH_LABEL))
            == Some(&hash.to_string());
        let pod_ready = super::util::is_pod_ready(pod) && pod.metadata.deletion_timestamp.is_none();
        if pod_ready {
            ready += 1;
        } else {
            unavailable += 1;
        }
        if is_new {
            updated += 1;
        } else if is_rolling_update(ds) && pod.metadata.deletion_timestamp.is_none() {
            if pod_ready {
                old_ready.push(pod);
            } else {
                // An old pod that is not available anyway goes at once.
                out.delete
                    .push(pod.metadata.name.clone().unwrap_or_default());
            }
        }
    }
    // Pods for nodes that no longer exist.
    for pods in by_node.values() {
        for p in pods {
            if p.metadata.deletion_timestamp.is_none() {
                out.delete.push(p.metadata.name.clone().unwrap_or_default());
            }
        }
    }
    let budget = (max_unavailable(ds, desired) - unavailable).max(0);
    old_ready.sort_by_key(|p| p.metadata.name.clone());
    for p in old_ready
        .into_iter()
        .take(usize::try_from(budget).unwrap_or(0))
    {
        out.delete.push(p.metadata.name.clone().unwrap_or_default());
    }
    let to_i32 = |v: i64| i32::try_from(v).unwrap_or(i32::MAX);
    out.status = DaemonSetStatus {
        current_number_scheduled: to_i32(current),
        desired_number_scheduled: to_i32(desired),
        number_misscheduled: to_i32(misscheduled),
        number_ready: to_i32(ready),
        number_available: Some(to_i32(ready)),
        number_unavailable: Some(to_i32((desired - ready).max(0))),
        updated_number_scheduled: Some(to_i32(updated)),
        observed_generation: ds.metadata.generation,
        collision_count: ds.status.as_ref().and_then(|s| s.collision_count),
        conditions: ds.status.as_ref().and_then(|s| s.conditions.clone()),
    };
    out
}

/// Makes sure the ControllerRevision of the current template exists.
async fn ensure_revision(
    client: &kube::Client,
    ds: &DaemonSet,
    hash: &str,
) -> Result<(), DaemonSetError> {
    let ns = ds.metadata.namespace.clone().unwrap_or_default();
    let name = ds.metadata.name.clone().unwrap_or_default();
    let uid = ds.metadata.uid.clone().unwrap_or_default();
    let api: Api<ControllerRevision> = Api::namespaced(client.clone(), &ns);
    let revision_name = format!("{name}-{hash}");
    let owned: Vec<ControllerRevision> = api
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|r| controlled_by(&r.metadata, &uid))
        .collect();
    let max = owned.iter().map(|r| r.revision).max().unwrap_or(0);
    if let Some(existing) = owned
        .iter()
        .find(|r| r.metadata.name.as_deref() == Some(&revision_name))
    {
        if existing.revision != max {
            // Rolled back to an older template: it becomes the newest revision.
            let patch = json!({"revision": max + 1});
            api.patch(
                &revision_name,
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await?;
        }
        return Ok(());
    }
    let template = ds
        .spec
        .as_ref()
        .map(|s| s.template.clone())
        .unwrap_or_default();
    let mut template = serde_json::to_value(&template)?;
    template["$patch"] = json!("replace");
    let mut labels: BTreeMap<String, String> = ds
        .spec
        .as_ref()
        .and_then(|s| s.selector.match_labels.clone())
        .unwrap_or_default();
    labels.insert(REVISION_HASH_LABEL.into(), hash.into());
    let revision = ControllerRevision {
        metadata: ObjectMeta {
            name: Some(revision_name),
            namespace: Some(ns),
            labels: Some(labels),
            owner_references: Some(vec![owner_reference(ds)]),
            ..ObjectMeta::default()
        },
        data: Some(RawExtension(json!({"spec": {"template": template}}))),
        revision: max + 1,
    };
    match api.create(&PostParams::default(), &revision).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

async fn sync(
    client: &kube::Client,
    ds: &DaemonSet,
    nodes: &[Arc<Node>],
    all_pods: &Store<Pod>,
    expect: &mut Expectations,
) -> Result<(), DaemonSetError> {
    if ds.metadata.deletion_timestamp.is_some() {
        return Ok(());
    }
    let ns = ds.metadata.namespace.clone().unwrap_or_default();
    let uid = ds.metadata.uid.clone().unwrap_or_default();
    let template = ds
        .spec
        .as_ref()
        .map(|s| s.template.clone())
        .unwrap_or_default();
    let hash = template_hash(&template)?;
    ensure_revision(client, ds, &hash).await?;
    let pods = all_pods.state_filter(|p| {
        p.metadata.namespace.as_deref() == Some(&ns) && controlled_by(&p.metadata, &uid)
    });
    let plan = plan(ds, &hash, nodes, &pods);
    let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    for node in &plan.create_on {
        let key = (uid.clone(), node.clone());
        if expect.creating.contains_key(&key) {
            continue;
        }
        let pod = new_pod(ds, node, &hash);
        match api.create(&PostParams::default(), &pod).await {
            Ok(_) => {
                expect.creating.insert(key, Instant::now());
            }
            Err(err) => {
                tracing::warn!(daemonset = ?ds.metadata.name, node, %err, "failed to create daemon pod")
            }
        }
    }
    // Pods that showed up satisfy their creation expectation.
    for p in &pods {
        if let Some(n) = pod_node(p) {
            expect.creating.remove(&(uid.clone(), n));
        }
    }
    for name in &plan.delete {
        let key = format!("{ns}/{name}");
        if expect.deleting.contains_key(&key) {
            continue;
        }
        match api.delete(name, &DeleteParams::default()).await {
            Ok(_) => {
                expect.deleting.insert(key, Instant::now());
            }
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(err) => tracing::warn!(pod = %key, %err, "failed to delete daemon pod"),
        }
    }
    if ds.status.as_ref() != Some(&plan.status) {
        let ds_api: Api<DaemonSet> = Api::namespaced(client.clone(), &ns);
        let patch = json!({"status": plan.status});
        ds_api
            .patch_status(
                ds.metadata.name.as_deref().unwrap_or(""),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await?;
    }
    Ok(())
}

/// The stores the controller reads, and the signal that one of them changed.
struct Informed {
    daemonsets: Store<DaemonSet>,
    nodes: Store<Node>,
    pods: Store<Pod>,
    changed: Arc<Notify>,
}

async fn run(client: kube::Client, informed: Informed, token: CancellationToken) {
    let Informed {
        daemonsets,
        nodes,
        pods,
        changed,
    } = informed;
    let ready = async {
        daemonsets.wait_until_ready().await;
        nodes.wait_until_ready().await;
        pods.wait_until_ready().await;
    };
    let mut expect = Expectations::default();
    tokio::select! {
        () = token.cancelled() => {}
        () = async {
            ready.await;
            loop {
                expect.expire();
                let sets = daemonsets.state();
                // Listing thousands of nodes on every pod change is a visible
                // share of the server's CPU while pods are bound in bulk.
                let node_list = if sets.is_empty() { Vec::new() } else { nodes.state() };
                for ds in sets {
                    if let Err(err) = sync(&client, &ds, &node_list, &pods, &mut expect).await {
                        tracing::warn!(daemonset = ?ds.metadata.name, %err, "daemonset sync failed");
                    }
                }
                tokio::select! {
                    () = changed.notified() => {
                        // Let a burst of events settle into one pass.
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    () = tokio::time::sleep(RESYNC) => {}
                }
            }
        } => {}
    }
}

/// Starts the controller under the controller-manager lease.
pub fn spawn(ctx: &ControllerContext) {
    let changed = Arc::new(Notify::new());
    let informed = Informed {
        daemonsets: ctx.informers.informer(
            Api::all(ctx.client.clone()),
            kube::runtime::watcher::Config::default(),
            notify_on::<DaemonSet>(&changed),
        ),
        nodes: ctx.informers.informer(
            Api::all(ctx.client.clone()),
            kube::runtime::watcher::Config::default(),
            notify_on::<Node>(&changed),
        ),
        pods: ctx.informers.informer(
            Api::all(ctx.client.clone()),
            kube::runtime::watcher::Config::default(),
            notify_on::<Pod>(&changed),
        ),
        changed,
    };
    tokio::spawn(run(ctx.client.clone(), informed, ctx.shutdown.clone()));
}

/// A change handler that wakes the controller.
fn notify_on<K>(changed: &Arc<Notify>) -> impl FnMut(&K) + Send + 'static {
    let changed = changed.clone();
    move |_: &K| changed.notify_one()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ds() -> DaemonSet {
        serde_json::from_value(json!({
            "metadata": {"name": "agent", "namespace": "default", "uid": "ds-uid", "generation": 2},
            "spec": {"selector": {"matchLabels": {"app": "agent"}},
                "template": {"metadata": {"labels": {"app": "agent"}}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}
        }))
        .unwrap()
    }

    fn node(name: &str, extra: serde_json::Value) -> Arc<Node> {
        let mut n = json!({"metadata": {"name": name}, "spec": {}});
        json_patch::merge(&mut n, &extra);
        Arc::new(serde_json::from_value(n).unwrap())
    }

    fn daemon_pod(ds: &DaemonSet, node: &str, hash: &str, ready: bool) -> Arc<Pod> {
        let mut p = new_pod(ds, node, hash);
        p.metadata.name = Some(format!("agent-{node}"));
        p.status = Some(serde_json::from_value(json!({"conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]})).unwrap());
        Arc::new(p)
    }

    #[test]
    fn one_pod_per_eligible_node() {
        let d = ds();
        let nodes = vec![
            node("n1", json!({})),
            node(
                "n2",
                json!({"spec": {"taints": [{"key": "dedicated", "effect": "NoSchedule"}]}}),
            ),
            node(
                "n3",
                json!({"spec": {"unschedulable": true, "taints": [{"key": "node.kubernetes.io/unreachable", "effect": "NoExecute"}]}}),
            ),
        ];
        let p = plan(&d, "h1", &nodes, &[]);
        assert_eq!(p.create_on, vec!["n1", "n3"]);
        assert_eq!(p.status.desired_number_scheduled, 2);
    }

    #[test]
    fn new_pod_is_pinned_by_match_fields_and_tolerates_node_problems() {
        let p = new_pod(&ds(), "n1", "h1");
        assert_eq!(pod_node(&p).as_deref(), Some("n1"));
        assert!(p.spec.as_ref().unwrap().node_name.is_none());
        let tolerations = p.spec.as_ref().unwrap().tolerations.as_ref().unwrap();
        assert_eq!(tolerations.len(), 6);
        let owner = &p.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(owner.controller, Some(true));
        assert_eq!(
            p.metadata.labels.as_ref().unwrap()[REVISION_HASH_LABEL],
            "h1"
        );
    }

    #[test]
    fn rolling_update_replaces_one_ready_pod_at_a_time() {
        let d = ds();
        let nodes = vec![node("n1", json!({})), node("n2", json!({}))];
        let pods = vec![
            daemon_pod(&d, "n1", "old", true),
            daemon_pod(&d, "n2", "old", true),
        ];
        let p = plan(&d, "new", &nodes, &pods);
        assert_eq!(p.delete, vec!["agent-n1"]);
        assert_eq!(p.status.updated_number_scheduled, Some(0));
        assert_eq!(p.status.number_ready, 2);
    }

    #[test]
    fn status_counts_match_upstream() {
        let d = ds();
        let nodes = vec![node("n1", json!({})), node("n2", json!({}))];
        let pods = vec![
            daemon_pod(&d, "n1", "h", true),
            daemon_pod(&d, "n2", "h", false),
        ];
        let p = plan(&d, "h", &nodes, &pods);
        assert!(p.create_on.is_empty() && p.delete.is_empty());
        assert_eq!(p.status.current_number_scheduled, 2);
        assert_eq!(p.status.number_ready, 1);
        assert_eq!(p.status.number_available, Some(1));
        assert_eq!(p.status.number_unavailable, Some(1));
        assert_eq!(p.status.updated_number_scheduled, Some(2));
        assert_eq!(p.status.observed_generation, Some(2));
    }

    #[test]
    fn pods_on_nodes_that_no_longer_match_are_deleted() {
        let mut d = ds();
        d.spec
            .as_mut()
            .unwrap()
            .template
            .spec
            .as_mut()
            .unwrap()
            .node_selector = Some([("role".to_string(), "edge".to_string())].into());
        let nodes = vec![node("n1", json!({}))];
        let p = plan(&d, "h", &nodes, &[daemon_pod(&d, "n1", "h", true)]);
        assert_eq!(p.delete, vec!["agent-n1"]);
        assert_eq!(p.status.number_misscheduled, 1);
    }
}
