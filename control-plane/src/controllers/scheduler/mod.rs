//! kube-scheduler's default profile inside r8s-server, as an API client:
//! node and pod watchers feed the cache and the queue; one loop pops the
//! highest-priority pending pod, runs the cycle (`algorithm`) against the
//! cache, assumes the pod on its node and binds it concurrently through
//! `pods/binding`; failures patch PodScheduled=False and record events.

pub mod algorithm;
pub mod cache;
pub mod events;
pub mod filter;
pub mod fit_error;
pub mod matching;
pub mod queue;
pub mod resources;
pub mod score;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Binding, Node, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use serde_json::json;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;

use self::algorithm::Outcome;
use self::cache::{Cache, PodInfo, pod_key};
use self::events::{EventSink, Foreground, Recorder, Underway, pod_reference};
use self::queue::SchedulingQueue;
use super::ControllerContext;
use super::leader::{self, SCHEDULER_LEASE};
use super::lean;
use crate::metrics::AttemptResult;

pub const SCHEDULER_NAME: &str = "default-scheduler";
const RECORDER: Recorder = Recorder {
    component: SCHEDULER_NAME,
};
/// Bindings in flight at once.
const PARALLEL_BINDINGS: usize = 256;
/// How long the scheduling loop runs cycles before it yields to the
/// server's other tasks. A yield puts the loop behind every runnable task:
/// yielding after each pod, a burst's hundreds of binding tasks left it
/// one cycle per round of them, and the bindings in flight kept running
/// dry (docs/benchmarks.md).
const LOOP_SLICE: Duration = Duration::from_millis(1);
/// Failure writes (PodScheduled=False, preemption) in flight at once, so a
/// burst of unschedulable pods does not flood the API server.
const PARALLEL_FAILURE_WRITES: usize = 16;

/// State shared by the watchers and the scheduling loop.
#[derive(Default)]
struct Shared {
    cache: Mutex<Cache>,
    queue: Mutex<SchedulingQueue>,
    wake: Notify,
    /// A cluster event asked to move the unschedulable pods back; the
    /// scheduling loop does it once before its next pop, however many
    /// events came meanwhile (a burst of node updates would otherwise
    /// walk every pending pod once per event).
    move_requested: AtomicBool,
}

impl Shared {
    // A poisoned lock only means another task panicked mid-update; the
    // cache is rebuilt from the next relist, so keep going.
    fn cache(&self) -> MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn queue(&self) -> MutexGuard<'_, SchedulingQueue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn move_all(&self) {
        self.move_requested.store(true, Ordering::Release);
        self.wake.notify_one();
    }

    /// The next pod to schedule, after the moves asked for since the last.
    fn pop(&self) -> Option<Arc<Pod>> {
        let mut queue = self.queue();
        if self.move_requested.swap(false, Ordering::AcqRel) {
            queue.move_all(Instant::now());
        }
        queue.pop()
    }
}

/// Starts the scheduler under the `kube-scheduler` lease.
/// As kube-scheduler, the watches run whether or not this server holds the
/// lease: a standby takes over with its cache and queue already filled,
/// instead of listing every pod and node first.
pub fn spawn(ctx: &ControllerContext) {
    let ctx = ctx.clone();
    tokio::spawn(async move {
        let shared = Arc::new(Shared::default());
        let (nodes_synced, nodes_synced_rx) = tokio::sync::watch::channel(false);
        let (pods_synced, pods_synced_rx) = tokio::sync::watch::channel(false);
        let mut watches = tokio::task::JoinSet::new();
        watches.spawn(watch_nodes(
            ctx.client.clone(),
            shared.clone(),
            nodes_synced,
        ));
        watches.spawn(watch_pods(ctx.client.clone(), shared.clone(), pods_synced));
        let flusher = shared.clone();
        let metrics = ctx.scheduler_metrics.clone();
        watches.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            loop {
                tick.tick().await;
                let (flushed, (active, backoff, unschedulable)) = {
                    let mut queue = flusher.queue();
                    (queue.flush(Instant::now()), queue.pending_counts())
                };
                if flushed {
                    flusher.wake.notify_one();
                }
                metrics.set_pending(active, backoff, unschedulable);
            }
        });
        let run_ctx = ctx.clone();
        leader::run_when_leader(ctx, SCHEDULER_LEASE, move |token| {
            let synced = [nodes_synced_rx.clone(), pods_synced_rx.clone()];
            run(run_ctx.clone(), shared.clone(), synced, token)
        })
        .await;
        watches.abort_all();
    });
}

fn responsible(pod: &Pod) -> bool {
    let spec = pod.spec.as_ref();
    let name = spec
        .and_then(|s| s.scheduler_name.as_deref())
        .unwrap_or(SCHEDULER_NAME);
    name == SCHEDULER_NAME
}

fn is_terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// Pods with `spec.schedulingGates` wait until every gate is removed
/// (upstream's SchedulingGates PreEnqueue plugin).
fn is_gated(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.scheduling_gates.as_ref())
        .is_some_and(|g| !g.is_empty())
}

fn node_name(pod: &Pod) -> Option<&str> {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .filter(|n| !n.is_empty())
}

fn on_pod(shared: &Shared, pod: Pod) {
    let key = pod_key(&pod);
    if let Some(node) = node_name(&pod).map(str::to_string) {
        shared.queue().done(&key);
        let mut cache = shared.cache();
        if is_terminal(&pod) {
            if cache.remove_pod(&key).is_some() {
                drop(cache);
                shared.move_all();
            }
        } else {
            cache.add_pod(PodInfo::new(Arc::new(pod)), &node, false);
        }
        return;
    }
    if shared.cache().is_assumed(&key) {
        return;
    }
    if responsible(&pod)
        && pod.metadata.deletion_timestamp.is_none()
        && !is_terminal(&pod)
        && !is_gated(&pod)
    {
        shared.queue().add_or_update(Arc::new(pod));
        shared.wake.notify_one();
    } else {
        shared.queue().delete(&key);
    }
}

fn on_pod_deleted(shared: &Shared, pod: &Pod) {
    let key = pod_key(pod);
    shared.queue().delete(&key);
    if shared.cache().remove_pod(&key).is_some() {
        shared.move_all();
    }
}

async fn watch_pods(
    client: kube::Client,
    shared: Arc<Shared>,
    synced: tokio::sync::watch::Sender<bool>,
) {
    let api: Api<Pod> = Api::all(client);
    let mut stream =
        lean::watcher_with::<_, cache::SchedulingPod>(api, &(), watcher::Config::default())
            .default_backoff()
            .boxed();
    let mut seen: HashSet<String> = HashSet::new();
    while let Some(event) = stream.next().await {
        match event {
            Ok(Event::Apply(pod)) => on_pod(&shared, pod),
            Ok(Event::Delete(pod)) => on_pod_deleted(&shared, &pod),
            Ok(Event::Init) => seen.clear(),
            Ok(Event::InitApply(pod)) => {
                seen.insert(pod_key(&pod));
                on_pod(&shared, pod);
            }
            Ok(Event::InitDone) => {
                // Pods deleted while the watch was down.
                let stale: Vec<String> = {
                    let cache = shared.cache();
                    cache
                        .pod_keys()
                        .into_iter()
                        .filter(|k| !seen.contains(k) && !cache.is_assumed(k))
                        .collect()
                };
                for key in stale {
                    shared.cache().remove_pod(&key);
                    shared.queue().delete(&key);
                }
                seen.clear();
                synced.send_replace(true);
                shared.move_all();
            }
            Err(err) => tracing::warn!(%err, "scheduler pod watch failed"),
        }
    }
}

async fn watch_nodes(
    client: kube::Client,
    shared: Arc<Shared>,
    synced: tokio::sync::watch::Sender<bool>,
) {
    let api: Api<Node> = Api::all(client);
    // As kube-scheduler's informers: managedFields are never read here.
    let mut stream = lean::watcher(api, &(), watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut seen: HashSet<String> = HashSet::new();
    while let Some(event) = stream.next().await {
        match event {
            Ok(Event::Apply(node)) => {
                let relevant = shared.cache().upsert_node(node);
                if relevant {
                    shared.move_all();
                }
            }
            Ok(Event::Delete(node)) => {
                shared
                    .cache()
                    .remove_node(node.metadata.name.as_deref().unwrap_or(""));
            }
            Ok(Event::Init) => seen.clear(),
            Ok(Event::InitApply(node)) => {
                seen.insert(node.metadata.name.clone().unwrap_or_default());
                shared.cache().upsert_node(node);
            }
            Ok(Event::InitDone) => {
                {
                    let mut cache = shared.cache();
                    let stale: Vec<String> = cache
                        .known_nodes()
                        .filter(|n| !seen.contains(&n.name))
                        .map(|n| n.name.clone())
                        .collect();
                    for n in stale {
                        cache.remove_node(&n);
                    }
                }
                seen.clear();
                synced.send_replace(true);
                shared.move_all();
            }
            Err(err) => tracing::warn!(%err, "scheduler node watch failed"),
        }
    }
}

/// Schedules pods until `token` is cancelled, once both watches have
/// synced.
async fn run(
    ctx: ControllerContext,
    shared: Arc<Shared>,
    mut synced: [tokio::sync::watch::Receiver<bool>; 2],
    token: CancellationToken,
) {
    let [nodes, pods] = &mut synced;
    tokio::select! {
        () = token.cancelled() => return,
        r = async { nodes.wait_for(|s| *s).await?; pods.wait_for(|s| *s).await.map(drop) } => {
            if r.is_err() {
                return;
            }
        }
    }
    tracing::info!("scheduler caches synced");
    // The Scheduled events are written behind the bindings.
    let bindings = Foreground::default();
    let events = EventSink::spawn(
        ctx.client.clone(),
        RECORDER,
        bindings.clone(),
        token.clone(),
    );
    tokio::select! {
        () = token.cancelled() => {}
        () = schedule_loop(&ctx, &shared, &events, &bindings) => {}
    }
}

async fn next_pod(shared: &Shared) -> Arc<Pod> {
    loop {
        if let Some(pod) = shared.pop() {
            return pod;
        }
        tokio::select! {
            () = shared.wake.notified() => {}
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

async fn schedule_loop(
    ctx: &ControllerContext,
    shared: &Arc<Shared>,
    events: &EventSink,
    bindings: &Foreground,
) {
    let permits = Arc::new(Semaphore::new(PARALLEL_BINDINGS));
    let failures = spawn_failure_writers(ctx.client.clone(), events.clone());
    let mut next_start = algorithm::NextStart::default();
    // Held from the first pod popped until the queue runs dry: the
    // bindings in flight alone go to none now and then during a burst
    // (each time the cycles fall behind them), and the event writes that
    // waited all started then, beside the rest of the burst.
    let mut working: Option<Underway> = None;
    let mut slice_start = Instant::now();
    loop {
        // A cycle is CPU work with no await in it: without a yield every
        // `LOOP_SLICE`, a queue of pods keeps this worker thread from the
        // server's other tasks (the watches that would make the pods
        // schedulable).
        if slice_start.elapsed() >= LOOP_SLICE {
            tokio::task::yield_now().await;
            slice_start = Instant::now();
        }
        // The binding slot is taken before the pod is popped: the loop
        // stops at an await when leadership is lost, and no await may
        // come between popping and assuming a pod and its binding task,
        // since the queue and cache outlive this loop.
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let pod = match shared.pop() {
            Some(pod) => pod,
            None => {
                working = None;
                next_pod(shared).await
            }
        };
        working.get_or_insert_with(|| bindings.start());
        let started = Instant::now();
        let key = pod_key(&pod);
        let outcome = {
            let cache = shared.cache();
            if cache.has_pod(&key) {
                shared.queue().done(&key);
                continue;
            }
            algorithm::schedule(pod.clone(), &cache, &mut next_start)
        };
        match outcome {
            Outcome::Fit(node, info) => {
                // The cache places the assumed pod on `node` by itself;
                // the pod's own spec.nodeName is never read there, so the
                // pod is shared rather than copied to set it.
                shared.cache().add_pod(info, &node, true);
                let client = ctx.client.clone();
                let shared = shared.clone();
                let events = events.clone();
                let metrics = ctx.scheduler_metrics.clone();
                let underway = bindings.start();
                tokio::spawn(async move {
                    let result = if bind(&client, &shared, &events, &pod, &node).await {
                        AttemptResult::Scheduled
                    } else {
                        AttemptResult::Error
                    };
                    metrics.attempt(SCHEDULER_NAME, result, started.elapsed().as_secs_f64());
                    drop((permit, underway));
                });
            }
            Outcome::Unschedulable {
                message,
                preemption,
            } => {
                ctx.scheduler_metrics.attempt(
                    SCHEDULER_NAME,
                    AttemptResult::Unschedulable,
                    started.elapsed().as_secs_f64(),
                );
                tracing::debug!(pod = %key, %message, "unschedulable");
                shared.queue().unschedulable(&key, Instant::now());
                let _ = failures.send(Failure {
                    pod,
                    message,
                    preemption,
                });
            }
        }
    }
}

/// A failed cycle's writes, queued as data: a burst of thousands of
/// unschedulable pods must not become thousands of spawned tasks, each
/// holding a whole request future while it waits its turn.
struct Failure {
    pod: Arc<Pod>,
    message: String,
    preemption: Option<(String, Vec<Arc<PodInfo>>)>,
}

/// `PARALLEL_FAILURE_WRITES` workers that preempt and write the
/// PodScheduled=False condition and event of each queued failure.
fn spawn_failure_writers(
    client: kube::Client,
    events: EventSink,
) -> tokio::sync::mpsc::UnboundedSender<Failure> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Failure>();
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    for _ in 0..PARALLEL_FAILURE_WRITES {
        let (client, events, rx) = (client.clone(), events.clone(), rx.clone());
        tokio::spawn(async move {
            loop {
                let Some(f) = rx.lock().await.recv().await else {
                    return;
                };
                if let Some((node, victims)) = &f.preemption {
                    preempt(&client, &events, &f.pod, node, victims).await;
                }
                mark_unschedulable(&client, &events, &f.pod, &f.message).await;
            }
        });
    }
    tx
}

/// Binds `pod` to `node`; whether it was bound.
async fn bind(
    client: &kube::Client,
    shared: &Shared,
    events: &EventSink,
    pod: &Pod,
    node: &str,
) -> bool {
    let key = pod_key(pod);
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let name = pod.metadata.name.as_deref().unwrap_or("");
    let binding = Binding {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(ns.into()),
            uid: pod.metadata.uid.clone(),
            ..ObjectMeta::default()
        },
        target: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Node".into()),
            name: Some(node.into()),
            ..ObjectReference::default()
        },
    };
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let result: Result<serde_json::Value, _> = api
        .create_subresource("binding", name, &PostParams::default(), &binding)
        .await;
    match result {
        Ok(_) => {
            shared.queue().done(&key);
            tracing::debug!(pod = %key, node, "bound");
            events.emit(
                pod_reference(pod),
                "Normal",
                "Scheduled",
                "Binding",
                format!("Successfully assigned {ns}/{name} to {node}"),
            );
            true
        }
        Err(err) => {
            let gone = matches!(&err, kube::Error::Api(s) if s.code == 404 || s.code == 409);
            tracing::debug!(pod = %key, node, %err, "binding failed");
            {
                let mut cache = shared.cache();
                if cache.is_assumed(&key) {
                    cache.remove_pod(&key);
                }
            }
            if gone {
                shared.queue().done(&key);
            } else {
                shared.queue().retry(&key, Instant::now());
            }
            shared.move_all();
            false
        }
    }
}

/// Evicts the victims and nominates the node (upstream DefaultPreemption's
/// `prepareCandidate`).
async fn preempt(
    client: &kube::Client,
    events: &EventSink,
    pod: &Pod,
    node: &str,
    victims: &[Arc<PodInfo>],
) {
    let preemptor = format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or("default"),
        pod.metadata.name.as_deref().unwrap_or("")
    );
    for v in victims {
        let api: Api<Pod> = Api::namespaced(client.clone(), v.namespace());
        let name = v.pod.metadata.name.as_deref().unwrap_or("");
        events.emit(
            pod_reference(&v.pod),
            "Normal",
            "Preempted",
            "Preempting",
            format!(
                "Preempted by pod {} on node {node}",
                pod.metadata.uid.as_deref().unwrap_or(&preemptor)
            ),
        );
        if let Err(err) = api.delete(name, &DeleteParams::default()).await {
            tracing::warn!(victim = %v.key, %err, "failed to preempt");
        }
    }
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let patch = json!({"status": {"nominatedNodeName": node}});
    if let Err(err) = api
        .patch_status(
            pod.metadata.name.as_deref().unwrap_or(""),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        tracing::debug!(pod = %preemptor, %err, "failed to set nominatedNodeName");
    }
}

/// PodScheduled=False/Unschedulable with the fit error, and a
/// FailedScheduling event.
async fn mark_unschedulable(client: &kube::Client, events: &EventSink, pod: &Pod, message: &str) {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let name = pod.metadata.name.as_deref().unwrap_or("");
    let already = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| {
            c.type_ == "PodScheduled"
                && c.status == "False"
                && c.message.as_deref() == Some(message)
        });
    if !already {
        let now = k8s_openapi::jiff::Timestamp::now();
        let patch = json!({"status": {"conditions": [{
            "type": "PodScheduled",
            "status": "False",
            "reason": "Unschedulable",
            "message": message,
            "lastProbeTime": null,
            "lastTransitionTime": now.to_string(),
        }]}});
        let api: Api<Pod> = Api::namespaced(client.clone(), ns);
        if let Err(err) = api
            .patch_status(name, &PatchParams::default(), &Patch::Strategic(&patch))
            .await
        {
            tracing::debug!(pod = name, %err, "failed to update the PodScheduled condition");
        }
    }
    events.emit(
        pod_reference(pod),
        "Warning",
        "FailedScheduling",
        "Scheduling",
        message.to_string(),
    );
}
