//! The ReplicaSet controller: watches ReplicaSets and their pods, adopts and
//! releases pods by selector, creates or deletes pods until the active ones
//! match `spec.replicas`, and writes the status (upstream
//! pkg/controller/replicaset).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetCondition, ReplicaSetStatus};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use serde_json::json;

use super::ControllerContext;
use super::store::Store;
use super::util::{self, Key, Queue, Requeue};

/// How many pods one sync creates or deletes at most (upstream `BurstReplicas`).
const BURST_REPLICAS: usize = 500;
/// After this long unmet expectations are given up on (upstream: 5 minutes).
const EXPECTATIONS_TTL: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum ReplicaSetError {
    #[error("failed to {action} for replica set {name}")]
    Api {
        action: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
}

/// Creations and deletions issued but not yet seen in the pod store; syncs
/// wait for them so a lagging watch never causes extra pods (upstream
/// `ControllerExpectations`).
#[derive(Default)]
pub struct Expectations {
    pending: Mutex<HashMap<String, Pending>>,
}

struct Pending {
    created: HashSet<String>,
    deleted: HashSet<String>,
    since: Instant,
}

impl Expectations {
    pub fn expect(&self, owner: &str, created: Vec<String>, deleted: Vec<String>) {
        if created.is_empty() && deleted.is_empty() {
            return;
        }
        if let Ok(mut m) = self.pending.lock() {
            m.insert(
                owner.to_string(),
                Pending {
                    created: created.into_iter().collect(),
                    deleted: deleted.into_iter().collect(),
                    since: Instant::now(),
                },
            );
        }
    }

    /// Whether the store has caught up with what `owner` issued.
    pub fn satisfied(&self, owner: &str, pods: &Store<Pod>, ns: &str) -> bool {
        let Ok(mut m) = self.pending.lock() else {
            return true;
        };
        let Some(p) = m.get_mut(owner) else {
            return true;
        };
        p.created
            .retain(|name| pods.get(&ObjectRef::new(name).within(ns)).is_none());
        p.deleted.retain(|uid| {
            pods.find(|pod| pod.uid().as_deref() == Some(uid.as_str()) && util::is_pod_active(pod))
                .is_some()
        });
        if (p.created.is_empty() && p.deleted.is_empty()) || p.since.elapsed() > EXPECTATIONS_TTL {
            m.remove(owner);
            true
        } else {
            false
        }
    }

    pub fn forget(&self, owner: &str) {
        if let Ok(mut m) = self.pending.lock() {
            m.remove(owner);
        }
    }
}

struct Ctx {
    client: kube::Client,
    sets: Store<ReplicaSet>,
    pods: Store<Pod>,
    expectations: Expectations,
    events: util::Events,
}

/// Starts the controller.
pub fn spawn(ctx: &ControllerContext) {
    let (queue, rx) = Queue::new();
    let q = queue.clone();
    let sets = ctx.informers.informer(
        Api::<ReplicaSet>::all(ctx.client.clone()),
        watcher::Config::default(),
        move |rs: &ReplicaSet| q.add_key(util::key_of(rs)),
    );
    let q = queue.clone();
    let set_store = sets.clone();
    let pods = ctx.informers.informer(
        Api::<Pod>::all(ctx.client.clone()),
        watcher::Config::default(),
        move |pod: &Pod| enqueue_owners(&q, &set_store, pod),
    );
    let c = Arc::new(Ctx {
        client: ctx.client.clone(),
        sets,
        pods,
        expectations: Expectations::default(),
        events: util::Events::new(ctx.client.clone(), "replicaset-controller"),
    });
    let shutdown = ctx.shutdown.clone();
    tokio::spawn(async move {
        c.sets.wait_until_ready().await;
        c.pods.wait_until_ready().await;
        util::run_workers("replicaset", 1, rx, queue, shutdown, |key| {
            let c = c.clone();
            async move { sync(&c, key).await }
        })
        .await;
    });
}

/// Queues the controller of a pod, or for an orphan every set whose
/// selector matches it.
fn enqueue_owners(queue: &Queue, sets: &Store<ReplicaSet>, pod: &Pod) {
    let ns = pod.namespace().unwrap_or_default();
    if let Some(r) = util::controller_ref(pod.metadata.owner_references.as_ref()) {
        if r.kind == "ReplicaSet" {
            queue.add(&ns, &r.name);
        }
        return;
    }
    let labels = pod.labels();
    for rs in sets.state() {
        if rs.namespace().as_deref() == Some(ns.as_str())
            && util::selector_matches(
                &rs.spec
                    .as_ref()
                    .map(|s| s.selector.clone())
                    .unwrap_or_default(),
                labels,
            )
        {
            queue.add(&ns, &rs.name_any());
        }
    }
}

async fn sync(c: &Ctx, (ns, name): Key) -> Result<Requeue, ReplicaSetError> {
    let Some(rs) = c.sets.get(&ObjectRef::new(&name).within(&ns)) else {
        return Ok(None);
    };
    let uid = rs.uid().unwrap_or_default();
    let Some(spec) = rs.spec.as_ref() else {
        return Ok(None);
    };
    let pods_api: Api<Pod> = Api::namespaced(c.client.clone(), &ns);
    let api_err = |action: &'static str| {
        let name = name.clone();
        move |source| ReplicaSetError::Api {
            action,
            name,
            source,
        }
    };
    let deleting = rs.metadata.deletion_timestamp.is_some();
    let mut owned: Vec<Arc<Pod>> = Vec::new();
    for pod in c.pods.state() {
        if pod.namespace().as_deref() != Some(ns.as_str()) {
            continue;
        }
        let matches = util::selector_matches(&spec.selector, pod.labels());
        match util::controller_ref(pod.metadata.owner_references.as_ref()) {
            Some(r) if r.uid == uid => {
                if matches {
                    owned.push(pod);
                } else if pod.metadata.deletion_timestamp.is_none() {
                    release(&pods_api, &pod, &uid)
                        .await
                        .map_err(api_err("release a pod"))?;
                }
            }
            None if matches && !deleting && pod.metadata.deletion_timestamp.is_none() => {
                adopt(&pods_api, &pod, &rs)
                    .await
                    .map_err(api_err("adopt a pod"))?;
                owned.push(pod);
            }
            _ => {}
        }
    }
    let active: Vec<Arc<Pod>> = owned
        .iter()
        .filter(|p| util::is_pod_active(p))
        .cloned()
        .collect();
    let mut failure = None;
    if !deleting && c.expectations.satisfied(&uid, &c.pods, &ns) {
        failure = manage(c, &rs, &active, &pods_api).await;
    }
    if deleting {
        c.expectations.forget(&uid);
    }
    let status = calculate_status(&rs, &active, failure);
    if rs.status.as_ref() != Some(&status) {
        let api: Api<ReplicaSet> = Api::namespaced(c.client.clone(), &ns);
        let mut status_json = serde_json::to_value(&status).unwrap_or_default();
        if status.conditions.is_none() {
            status_json["conditions"] = serde_json::Value::Null;
        }
        match api
            .patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": status_json})),
            )
            .await
        {
            Ok(_) => {}
            Err(e) if util::is_not_found(&e) => return Ok(None),
            Err(e) => return Err(api_err("update status")(e)),
        }
    }
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    if min_ready > 0 {
        let now = util::now_secs();
        if let Some(wait) = active
            .iter()
            .filter_map(|p| util::secs_until_available(p, min_ready, now))
            .min()
        {
            return Ok(Some(Duration::from_secs(
                u64::try_from(wait).unwrap_or(1) + 1,
            )));
        }
    }
    Ok(None)
}

/// Creates or deletes pods; returns the create error message, if any.
async fn manage(c: &Ctx, rs: &ReplicaSet, active: &[Arc<Pod>], api: &Api<Pod>) -> Option<String> {
    let uid = rs.uid().unwrap_or_default();
    let want = usize::try_from(rs.spec.as_ref()?.replicas.unwrap_or(1)).unwrap_or(0);
    if active.len() < want {
        let n = (want - active.len()).min(BURST_REPLICAS);
        let mut created = Vec::new();
        let mut failure = None;
        for _ in 0..n {
            match api
                .create(&PostParams::default(), &pod_from_template(rs))
                .await
            {
                Ok(pod) => {
                    c.events.normal(
                        rs,
                        "SuccessfulCreate",
                        format!("Created pod: {}", pod.name_any()),
                    );
                    created.push(pod.name_any());
                }
                Err(err) => {
                    tracing::warn!(rs = %rs.name_any(), %err, "failed to create pod");
                    c.events
                        .warning(rs, "FailedCreate", format!("Error creating: {err}"));
                    failure = Some(err.to_string());
                    break;
                }
            }
        }
        c.expectations.expect(&uid, created, Vec::new());
        return failure;
    }
    if active.len() > want {
        let mut ranked: Vec<&Arc<Pod>> = active.iter().collect();
        let colocated = colocation_counts(active);
        ranked.sort_by_key(|p| deletion_rank(p, &colocated));
        let mut deleted = Vec::new();
        for pod in ranked
            .into_iter()
            .take((active.len() - want).min(BURST_REPLICAS))
        {
            match api.delete(&pod.name_any(), &DeleteParams::default()).await {
                Ok(_) => {
                    c.events.normal(
                        rs,
                        "SuccessfulDelete",
                        format!("Deleted pod: {}", pod.name_any()),
                    );
                    deleted.push(pod.uid().unwrap_or_default());
                }
                Err(e) if util::is_not_found(&e) => {}
                Err(err) => tracing::warn!(rs = %rs.name_any(), %err, "failed to delete pod"),
            }
        }
        c.expectations.expect(&uid, Vec::new(), deleted);
    }
    None
}

/// A new pod for the set: the template's labels, annotations and spec, a
/// generated name and the controller reference.
pub fn pod_from_template(rs: &ReplicaSet) -> Pod {
    let template = rs
        .spec
        .as_ref()
        .and_then(|s| s.template.clone())
        .unwrap_or_default();
    let tm = template.metadata.unwrap_or_default();
    let mut pod = Pod {
        metadata: kube::api::ObjectMeta {
            generate_name: Some(format!("{}-", rs.name_any())),
            namespace: rs.namespace(),
            labels: tm.labels,
            annotations: tm.annotations,
            finalizers: tm.finalizers,
            owner_references: Some(vec![util::owner_ref(rs)]),
            ..Default::default()
        },
        spec: template.spec,
        status: None,
    };
    if pod.metadata.labels.as_ref().is_some_and(BTreeMap::is_empty) {
        pod.metadata.labels = None;
    }
    pod
}

async fn adopt(api: &Api<Pod>, pod: &Pod, rs: &ReplicaSet) -> Result<(), kube::Error> {
    let mut refs = pod.metadata.owner_references.clone().unwrap_or_default();
    refs.push(util::owner_ref(rs));
    let patch = json!({"metadata": {"ownerReferences": refs, "uid": pod.uid()}});
    match api
        .patch(
            &pod.name_any(),
            &PatchParams::default(),
            &Patch::Merge(patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if util::is_not_found(&e) => Ok(()),
        Err(e) => Err(e),
    }
}

async fn release(api: &Api<Pod>, pod: &Pod, owner_uid: &str) -> Result<(), kube::Error> {
    let refs: Vec<_> = pod
        .metadata
        .owner_references
        .iter()
        .flatten()
        .filter(|r| r.uid != owner_uid)
        .cloned()
        .collect();
    let patch = json!({"metadata": {"ownerReferences": if refs.is_empty() { serde_json::Value::Null } else { json!(refs) }, "uid": pod.uid()}});
    match api
        .patch(
            &pod.name_any(),
            &PatchParams::default(),
            &Patch::Merge(patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if util::is_not_found(&e) => Ok(()),
        Err(e) => Err(e),
    }
}

fn colocation_counts(pods: &[Arc<Pod>]) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for p in pods {
        if let Some(node) = p.spec.as_ref().and_then(|s| s.node_name.clone()) {
            *m.entry(node).or_insert(0) += 1;
        }
    }
    m
}

/// The order in which surplus pods go, smallest first (upstream
/// `ActivePodsWithRanks.Less`): unscheduled, pending, not ready, more pods
/// on the same node, lower deletion cost, ready for less time, more
/// restarts, newer.
pub fn deletion_rank(pod: &Pod, colocated: &HashMap<String, usize>) -> impl Ord + use<> {
    let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
    let scheduled = node.is_some();
    let phase_rank = match pod.status.as_ref().and_then(|s| s.phase.as_deref()) {
        Some("Pending") | None => 0,
        Some("Unknown") => 1,
        Some("Running") => 2,
        _ => 3,
    };
    let ready = util::is_pod_ready(pod);
    let same_node = node.and_then(|n| colocated.get(&n).copied()).unwrap_or(0);
    let cost: i64 = pod
        .annotations()
        .get("controller.kubernetes.io/pod-deletion-cost")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let ready_since = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready" && c.status == "True"))
        .and_then(|c| c.last_transition_time.as_ref())
        .map(util::secs)
        .unwrap_or(0);
    let restarts: i32 = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .map(|cs| cs.iter().map(|c| c.restart_count).sum())
        .unwrap_or(0);
    let created = pod
        .metadata
        .creation_timestamp
        .as_ref()
        .map(util::secs)
        .unwrap_or(0);
    (
        scheduled,
        phase_rank,
        ready,
        std::cmp::Reverse(same_node),
        cost,
        std::cmp::Reverse(if ready { ready_since } else { 0 }),
        std::cmp::Reverse(restarts),
        std::cmp::Reverse(created),
    )
}

fn calculate_status(
    rs: &ReplicaSet,
    active: &[Arc<Pod>],
    failure: Option<String>,
) -> ReplicaSetStatus {
    let spec = rs.spec.clone().unwrap_or_default();
    let template_labels = spec
        .template
        .as_ref()
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let now = util::now_secs();
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let count = |f: &dyn Fn(&Pod) -> bool| {
        i32::try_from(active.iter().filter(|p| f(p)).count()).unwrap_or(i32::MAX)
    };
    let old = rs.status.clone().unwrap_or_default();
    let mut conditions: Vec<ReplicaSetCondition> = old.conditions.clone().unwrap_or_default();
    match failure {
        Some(msg) => {
            if !conditions.iter().any(|c| c.type_ == "ReplicaFailure") {
                conditions.push(ReplicaSetCondition {
                    type_: "ReplicaFailure".into(),
                    status: "True".into(),
                    reason: Some("FailedCreate".into()),
                    message: Some(msg),
                    last_transition_time: Some(util::now()),
                });
            }
        }
        None => {
            let want = usize::try_from(spec.replicas.unwrap_or(1)).unwrap_or(0);
            if active.len() == want {
                conditions.retain(|c| c.type_ != "ReplicaFailure");
            }
        }
    }
    ReplicaSetStatus {
        replicas: count(&|_| true),
        fully_labeled_replicas: Some(count(&|p| {
            util::labels_contain(p.labels(), &template_labels)
        })),
        ready_replicas: Some(count(&util::is_pod_ready)),
        available_replicas: Some(count(&|p| util::is_pod_available(p, min_ready, now))),
        observed_generation: rs.meta().generation,
        conditions: (!conditions.is_empty()).then_some(conditions),
        terminating_replicas: old.terminating_replicas,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodCondition, PodSpec, PodStatus};

    fn pod(name: &str, node: Option<&str>, phase: &str, ready: bool) -> Pod {
        Pod {
            metadata: kube::api::ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: node.map(String::from),
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: Some(phase.into()),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn deletion_prefers_unscheduled_then_pending_then_not_ready() {
        let pods = [
            pod("ready", Some("n"), "Running", true),
            pod("unscheduled", None, "Pending", false),
            pod("not-ready", Some("n"), "Running", false),
            pod("pending", Some("n"), "Pending", false),
        ];
        let colocated = HashMap::new();
        let mut ranked: Vec<&Pod> = pods.iter().collect();
        ranked.sort_by_key(|p| deletion_rank(p, &colocated));
        let names: Vec<_> = ranked.iter().map(|p| p.name_any()).collect();
        assert_eq!(names, ["unscheduled", "pending", "not-ready", "ready"]);
    }

    #[test]
    fn pods_from_template_carry_labels_and_controller_ref() {
        let rs: ReplicaSet = serde_json::from_value(json!({
            "metadata": {"name": "web-abc", "namespace": "d", "uid": "u1"},
            "spec": {"selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "c", "image": "i"}]}}}
        }))
        .unwrap();
        let pod = pod_from_template(&rs);
        assert_eq!(pod.metadata.generate_name.as_deref(), Some("web-abc-"));
        assert_eq!(pod.labels().get("app").map(String::as_str), Some("web"));
        let r = &pod.metadata.owner_references.unwrap()[0];
        assert_eq!(
            (
                r.kind.as_str(),
                r.uid.as_str(),
                r.controller,
                r.block_owner_deletion
            ),
            ("ReplicaSet", "u1", Some(true), Some(true))
        );
    }
}
