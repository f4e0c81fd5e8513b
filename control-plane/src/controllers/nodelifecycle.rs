//! Node lifecycle (kube-controller-manager's nodelifecycle, taint-eviction
//! and pod GC controllers): a node whose Lease and Ready heartbeat stop for
//! `--node-monitor-grace-period` gets its conditions set Unknown; taints
//! follow the conditions (TaintNodesByCondition); pods on NoExecute-tainted
//! nodes are deleted after their tolerationSeconds; pods bound to a
//! deleted node are deleted.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, NodeCondition, Pod, Taint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use serde_json::json;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::scheduler::events::{Recorder, pod_reference};
use super::scheduler::matching::tolerates;
use super::store::Store;
use super::util::{Queue, Requeue};
use super::{ControllerContext, util};

pub const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";
pub const TAINT_NOT_READY: &str = "node.kubernetes.io/not-ready";
pub const TAINT_UNREACHABLE: &str = "node.kubernetes.io/unreachable";
const RECORDER: Recorder = Recorder {
    component: "node-controller",
};
const POD_GC_PERIOD: Duration = Duration::from_secs(20);
/// Nodes whose taints are updated at once (upstream's
/// `nodeUpdateWorkerSize`).
const TAINT_WORKERS: usize = 8;

/// Condition types the controller sets Unknown, as upstream.
const MONITORED: [&str; 4] = ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"];

/// Taint keys this controller owns, by condition.
const CONDITION_TAINTS: [(&str, &str, &str); 4] = [
    (
        "MemoryPressure",
        "True",
        "node.kubernetes.io/memory-pressure",
    ),
    ("DiskPressure", "True", "node.kubernetes.io/disk-pressure"),
    ("PIDPressure", "True", "node.kubernetes.io/pid-pressure"),
    (
        "NetworkUnavailable",
        "True",
        "node.kubernetes.io/network-unavailable",
    ),
];
const UNSCHEDULABLE_TAINT: &str = "node.kubernetes.io/unschedulable";

fn condition<'a>(node: &'a Node, type_: &str) -> Option<&'a NodeCondition> {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == type_))
}

/// The taints the node should carry from its conditions and
/// `spec.unschedulable`: `(key, effect)`.
pub fn desired_taints(node: &Node) -> Vec<(&'static str, &'static str)> {
    let mut out = Vec::new();
    match condition(node, "Ready").map(|c| c.status.as_str()) {
        Some("False") => {
            out.push((TAINT_NOT_READY, "NoSchedule"));
            out.push((TAINT_NOT_READY, "NoExecute"));
        }
        Some("Unknown") => {
            out.push((TAINT_UNREACHABLE, "NoSchedule"));
            out.push((TAINT_UNREACHABLE, "NoExecute"));
        }
        Some(_) => {}
        None => out.push((TAINT_NOT_READY, "NoSchedule")),
    }
    for (type_, status, key) in CONDITION_TAINTS {
        if condition(node, type_).is_some_and(|c| c.status == status) {
            out.push((key, "NoSchedule"));
        }
    }
    if node.spec.as_ref().and_then(|s| s.unschedulable) == Some(true) {
        out.push((UNSCHEDULABLE_TAINT, "NoSchedule"));
    }
    out
}

fn managed_key(key: &str) -> bool {
    key == TAINT_NOT_READY
        || key == TAINT_UNREACHABLE
        || key == UNSCHEDULABLE_TAINT
        || CONDITION_TAINTS.iter().any(|(_, _, k)| *k == key)
}

/// The node's taints with the managed ones replaced by `desired`; `None`
/// when nothing changes.
pub fn reconcile_taints(node: &Node, now: Timestamp) -> Option<Vec<Taint>> {
    let current: Vec<Taint> = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    let desired = desired_taints(node);
    let mut out: Vec<Taint> = current
        .iter()
        .filter(|t| {
            !managed_key(&t.key) || desired.iter().any(|(k, e)| *k == t.key && *e == t.effect)
        })
        .cloned()
        .collect();
    for (key, effect) in &desired {
        if !out.iter().any(|t| t.key == *key && t.effect == *effect) {
            out.push(Taint {
                key: (*key).into(),
                effect: (*effect).into(),
                time_added: (*effect == "NoExecute").then_some(Time(now)),
                value: None,
            });
        }
    }
    (out != current).then_some(out)
}

/// Conditions after the node stopped posting status: monitored conditions
/// become Unknown (added when missing); `None` when already so.
pub fn unknown_conditions(node: &Node, now: Timestamp) -> Option<Vec<NodeCondition>> {
    let mut conditions: Vec<NodeCondition> = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    let mut changed = false;
    for type_ in MONITORED {
        match conditions.iter_mut().find(|c| c.type_ == type_) {
            Some(c) if c.status == "Unknown" => {}
            Some(c) => {
                c.status = "Unknown".into();
                c.reason = Some("NodeStatusUnknown".into());
                c.message = Some("Kubelet stopped posting node status.".into());
                c.last_transition_time = Some(Time(now));
                changed = true;
            }
            None => {
                conditions.push(NodeCondition {
                    type_: type_.into(),
                    status: "Unknown".into(),
                    reason: Some("NodeStatusNeverUpdated".into()),
                    message: Some("Kubelet never posted node status.".into()),
                    last_transition_time: Some(Time(now)),
                    last_heartbeat_time: None,
                });
                changed = true;
            }
        }
    }
    changed.then_some(conditions)
}

/// When a pod must leave a node with these NoExecute taints: `Some(ZERO)`
/// now, `Some(d)` after `d` from the taint time, `None` never.
pub fn eviction_delay(pod: &Pod, taints: &[Taint], now: Timestamp) -> Option<Duration> {
    let tolerations = pod
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.as_deref())
        .unwrap_or(&[]);
    let mut deadline: Option<Duration> = None;
    for taint in taints.iter().filter(|t| t.effect == "NoExecute") {
        let matching: Vec<_> = tolerations.iter().filter(|t| tolerates(t, taint)).collect();
        if matching.is_empty() {
            return Some(Duration::ZERO);
        }
        // Without tolerationSeconds the pod tolerates the taint forever.
        let Some(seconds) = matching.iter().filter_map(|t| t.toleration_seconds).min() else {
            continue;
        };
        let added = taint.time_added.as_ref().map_or(now, |t| t.0);
        let elapsed = (now.as_millisecond() - added.as_millisecond()).max(0);
        let remaining_ms = (seconds.max(0) * 1000 - elapsed).max(0);
        let remaining = Duration::from_millis(u64::try_from(remaining_ms).unwrap_or(0));
        deadline = Some(deadline.map_or(remaining, |d: Duration| d.min(remaining)));
    }
    deadline
}

/// The local time a node's heartbeat (lease renewal or Ready heartbeat)
/// last changed: upstream compares against its own clock, not the
/// kubelet's, to tolerate skew.
#[derive(Default)]
struct Health {
    seen: HashMap<String, (String, Instant)>,
}

impl Health {
    fn observe(&mut self, node: &str, heartbeat: String, now: Instant) -> Instant {
        let entry = self
            .seen
            .entry(node.to_string())
            .or_insert_with(|| (heartbeat.clone(), now));
        if entry.0 != heartbeat {
            *entry = (heartbeat, now);
        }
        entry.1
    }
}

fn heartbeat(node: &Node, lease: Option<&Arc<Lease>>) -> String {
    let ready = condition(node, "Ready")
        .and_then(|c| c.last_heartbeat_time.as_ref())
        .map(|t| t.0.to_string())
        .unwrap_or_default();
    let renew = lease
        .and_then(|l| l.spec.as_ref())
        .and_then(|s| s.renew_time.as_ref())
        .map(|t| t.0.to_string())
        .unwrap_or_default();
    format!("{ready}|{renew}")
}

async fn run(
    ctx: ControllerContext,
    nodes: Store<Node>,
    leases: Store<Lease>,
    pods: Store<Pod>,
    token: CancellationToken,
) {
    let client = ctx.client.clone();
    let ready = async {
        nodes.wait_until_ready().await;
        leases.wait_until_ready().await;
        pods.wait_until_ready().await;
    };
    tokio::select! {
        () = token.cancelled() => return,
        () = ready => {}
    }
    let grace = ctx.config.node_monitor_grace_period;
    let mut tick = tokio::time::interval(
        ctx.config
            .node_monitor_period
            .max(Duration::from_millis(100)),
    );
    let mut health = Health::default();
    let mut orphans: HashSet<String> = HashSet::new();
    let mut last_gc = Instant::now();
    loop {
        tokio::select! {
            () = token.cancelled() => break,
            _ = tick.tick() => {}
        }
        monitor_nodes(&client, &nodes, &leases, &mut health, grace).await;
        evict_tainted(&client, &nodes, &pods).await;
        if last_gc.elapsed() >= POD_GC_PERIOD.min(grace) {
            last_gc = Instant::now();
            orphans = gc_orphans(&client, &nodes, &pods, &orphans).await;
        }
    }
}

async fn monitor_nodes(
    client: &kube::Client,
    nodes: &Store<Node>,
    leases: &Store<Lease>,
    health: &mut Health,
    grace: Duration,
) {
    let api: Api<Node> = Api::all(client.clone());
    let lease_by_node: HashMap<String, Arc<Lease>> = leases
        .state()
        .into_iter()
        .map(|l| (l.metadata.name.clone().unwrap_or_default(), l))
        .collect();
    let now = Instant::now();
    let live: HashSet<String> = nodes
        .state()
        .iter()
        .filter_map(|n| n.metadata.name.clone())
        .collect();
    health.seen.retain(|k, _| live.contains(k));
    for node in nodes.state() {
        let name = node.metadata.name.clone().unwrap_or_default();
        let last = health.observe(&name, heartbeat(&node, lease_by_node.get(&name)), now);
        if now.duration_since(last) > grace
            && let Some(conditions) = unknown_conditions(&node, Timestamp::now())
        {
            // The taints follow from the node's update event (`sync_taints`).
            tracing::info!(node = %name, "node stopped posting status; marking it Unknown");
            let patch = json!({"status": {"conditions": conditions}});
            if let Err(err) = api
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                tracing::warn!(node = %name, %err, "failed to update node conditions");
            }
        }
    }
}

/// Brings the node's managed taints in line with its conditions and
/// `spec.unschedulable` (upstream's `doNoScheduleTaintingPass`, run from
/// the node's update events). The patch carries the resourceVersion the
/// taints were computed from: a node changed since then fails with a
/// conflict and comes back with its newer version's event.
async fn sync_taints(
    api: &Api<Node>,
    nodes: &Store<Node>,
    name: &str,
) -> Result<Requeue, kube::Error> {
    let Some(node) = nodes.get(&ObjectRef::new(name)) else {
        return Ok(None);
    };
    let Some(taints) = reconcile_taints(&node, Timestamp::now()) else {
        return Ok(None);
    };
    let patch = json!({
        "metadata": {"resourceVersion": node.metadata.resource_version},
        "spec": {"taints": taints},
    });
    match api
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(None),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(None),
        Err(err) => {
            tracing::warn!(node = %name, %err, "failed to update node taints");
            Err(err)
        }
    }
}

async fn delete_pod(client: &kube::Client, pod: &Pod, grace: Option<u32>) {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let name = pod.metadata.name.as_deref().unwrap_or("");
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let dp = DeleteParams {
        grace_period_seconds: grace,
        ..DeleteParams::default()
    };
    if let Err(err) = api.delete(name, &dp).await {
        tracing::debug!(pod = name, %err, "failed to delete pod");
    }
}

async fn evict_tainted(client: &kube::Client, nodes: &Store<Node>, pods: &Store<Pod>) {
    let tainted: HashMap<String, Vec<Taint>> = nodes
        .state()
        .iter()
        .filter_map(|n| {
            let taints: Vec<Taint> = n
                .spec
                .as_ref()
                .and_then(|s| s.taints.as_ref())?
                .iter()
                .filter(|t| t.effect == "NoExecute")
                .cloned()
                .collect();
            (!taints.is_empty()).then(|| (n.metadata.name.clone().unwrap_or_default(), taints))
        })
        .collect();
    if tainted.is_empty() {
        return;
    }
    let now = Timestamp::now();
    for pod in pods.state() {
        if pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let Some(taints) = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_ref())
            .and_then(|n| tainted.get(n))
        else {
            continue;
        };
        if eviction_delay(&pod, taints, now) == Some(Duration::ZERO) {
            let key = format!(
                "{}/{}",
                pod.metadata.namespace.as_deref().unwrap_or(""),
                pod.metadata.name.as_deref().unwrap_or("")
            );
            tracing::info!(pod = %key, "evicting pod from a NoExecute-tainted node");
            RECORDER
                .record(
                    client,
                    pod_reference(&pod),
                    "Normal",
                    "TaintManagerEviction",
                    "Evicting",
                    format!("Marking for deletion Pod {key}"),
                )
                .await;
            delete_pod(client, &pod, None).await;
        }
    }
}

/// Deletes pods bound to nodes that no longer exist, once they were seen
/// orphaned twice (a grace against a node being re-created).
async fn gc_orphans(
    client: &kube::Client,
    nodes: &Store<Node>,
    pods: &Store<Pod>,
    previous: &HashSet<String>,
) -> HashSet<String> {
    let names: HashSet<String> = nodes
        .state()
        .iter()
        .filter_map(|n| n.metadata.name.clone())
        .collect();
    let mut orphans = HashSet::new();
    for pod in pods.state() {
        let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) else {
            continue;
        };
        if node.is_empty() || names.contains(node) {
            continue;
        }
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        if previous.contains(&uid) {
            tracing::info!(pod = ?pod.metadata.name, node, "deleting pod bound to a deleted node");
            delete_pod(client, &pod, Some(0)).await;
        } else {
            orphans.insert(uid);
        }
    }
    orphans
}

/// Starts the controller under the controller-manager lease.
pub fn spawn(ctx: &ControllerContext) {
    let client = &ctx.client;
    let config = watcher::Config::default;
    let (queue, rx) = Queue::new();
    let q = queue.clone();
    let nodes = ctx
        .informers
        .informer(Api::all(client.clone()), config(), move |node: &Node| {
            q.add_key(util::key_of(node));
        });
    let leases = ctx.informers.informer(
        Api::namespaced(client.clone(), NODE_LEASE_NAMESPACE),
        config(),
        |_: &Lease| {},
    );
    let pods = ctx
        .informers
        .informer(Api::all(client.clone()), config(), |_: &Pod| {});
    tokio::spawn(run(
        ctx.clone(),
        nodes.clone(),
        leases,
        pods,
        ctx.shutdown.clone(),
    ));
    let api: Api<Node> = Api::all(client.clone());
    let shutdown = ctx.shutdown.clone();
    tokio::spawn(async move {
        nodes.wait_until_ready().await;
        util::run_workers(
            "node-lifecycle",
            TAINT_WORKERS,
            rx,
            queue,
            shutdown,
            |(_, name)| {
                let (api, nodes) = (api.clone(), nodes.clone());
                async move { sync_taints(&api, &nodes, &name).await }
            },
        )
        .await;
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(v: serde_json::Value) -> Node {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn unknown_ready_gets_unreachable_taints() {
        let n = node(
            json!({"metadata": {"name": "n"}, "spec": {"taints": [{"key": "custom", "effect": "NoSchedule"}]},
            "status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}}),
        );
        let taints = reconcile_taints(&n, Timestamp::now()).unwrap();
        let keys: Vec<_> = taints
            .iter()
            .map(|t| (t.key.as_str(), t.effect.as_str()))
            .collect();
        assert_eq!(
            keys,
            vec![
                ("custom", "NoSchedule"),
                (TAINT_UNREACHABLE, "NoSchedule"),
                (TAINT_UNREACHABLE, "NoExecute")
            ]
        );
        assert!(taints[2].time_added.is_some());
    }

    #[test]
    fn ready_node_loses_managed_taints() {
        let n = node(
            json!({"metadata": {"name": "n"}, "spec": {"taints": [{"key": TAINT_NOT_READY, "effect": "NoSchedule"}]},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}}),
        );
        assert_eq!(
            reconcile_taints(&n, Timestamp::now()).unwrap(),
            Vec::<Taint>::new()
        );
        let clean = node(
            json!({"metadata": {"name": "n"}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}}),
        );
        assert!(reconcile_taints(&clean, Timestamp::now()).is_none());
    }

    #[test]
    fn stale_node_conditions_become_unknown() {
        let n = node(json!({"metadata": {"name": "n"}, "status": {"conditions": [
            {"type": "Ready", "status": "True", "reason": "KubeletReady"}]}}));
        let c = unknown_conditions(&n, Timestamp::now()).unwrap();
        let ready = c.iter().find(|c| c.type_ == "Ready").unwrap();
        assert_eq!(ready.status, "Unknown");
        assert_eq!(ready.reason.as_deref(), Some("NodeStatusUnknown"));
        assert_eq!(
            ready.message.as_deref(),
            Some("Kubelet stopped posting node status.")
        );
        assert_eq!(c.len(), 4);
    }

    #[test]
    fn eviction_waits_for_toleration_seconds() {
        let now = Timestamp::now();
        let taint = Taint {
            key: TAINT_UNREACHABLE.into(),
            effect: "NoExecute".into(),
            time_added: Some(Time(now)),
            value: None,
        };
        let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": {"containers": [],
            "tolerations": [{"key": TAINT_UNREACHABLE, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 5}]}})).unwrap();
        assert_eq!(
            eviction_delay(&pod, std::slice::from_ref(&taint), now),
            Some(Duration::from_secs(5))
        );
        let later = Timestamp::from_second(now.as_second() + 6).unwrap();
        assert_eq!(
            eviction_delay(&pod, std::slice::from_ref(&taint), later),
            Some(Duration::ZERO)
        );
        let intolerant: Pod =
            serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": {"containers": []}}))
                .unwrap();
        assert_eq!(
            eviction_delay(&intolerant, &[taint], now),
            Some(Duration::ZERO)
        );
    }
}
