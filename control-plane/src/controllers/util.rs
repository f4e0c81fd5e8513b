//! Shared plumbing of the workload controllers (their informers are in
//! `informers`): a deduplicating work queue run by one or more
//! workers per controller, and small helpers on owner references, label selectors and
//! pod readiness that mirror kube-controller-manager's `controller_utils`.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;
use kube::{Resource, ResourceExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// A work item: namespace ("" for cluster-scoped objects) and name.
pub type Key = (String, String);

/// The key of an object.
pub fn key_of<K: Resource>(obj: &K) -> Key {
    (obj.namespace().unwrap_or_default(), obj.name_any())
}

/// The sending side of a controller's work queue.
#[derive(Clone)]
pub struct Queue {
    tx: mpsc::UnboundedSender<Key>,
}

impl Queue {
    /// A queue and the receiver its worker reads.
    pub fn new() -> (Self, mpsc::UnboundedReceiver<Key>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Self { tx }, rx)
    }

    pub fn add(&self, ns: &str, name: &str) {
        let _ = self.tx.send((ns.to_string(), name.to_string()));
    }

    pub fn add_key(&self, key: Key) {
        let _ = self.tx.send(key);
    }

    /// Adds `key` once `delay` has passed.
    pub fn add_after(&self, key: Key, delay: Duration) {
        let tx = self.tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = tx.send(key);
        });
    }
}

/// What a reconcile asks of the queue.
pub type Requeue = Option<Duration>;

/// Runs `reconcile` for every key sent to the queue on up to `workers` keys
/// at once, as client-go's work queue: a key waiting is queued once, and a
/// key is never reconciled by two workers at a time (sent again while being
/// reconciled, it runs again afterwards). Failures are retried with
/// exponential back-off. On shutdown, the reconciles under way finish.
pub async fn run_workers<F, Fut, E>(
    controller: &'static str,
    workers: usize,
    mut rx: mpsc::UnboundedReceiver<Key>,
    queue: Queue,
    shutdown: CancellationToken,
    reconcile: F,
) where
    F: Fn(Key) -> Fut,
    Fut: Future<Output = Result<Requeue, E>>,
    E: Display,
{
    let mut work = WorkSet::default();
    let mut failures: HashMap<Key, u32> = HashMap::new();
    let mut running = FuturesUnordered::new();
    loop {
        while running.len() < workers.max(1)
            && let Some(key) = work.next()
        {
            let run = reconcile(key.clone());
            running.push(async move { (key, run.await) });
        }
        tokio::select! {
            () = shutdown.cancelled() => {
                // A reconcile that began runs to its end (a sync cut
                // between two writes is left to no one); no new one starts.
                while running.next().await.is_some() {}
                return;
            }
            key = rx.recv() => match key {
                Some(key) => work.add(key),
                None => return,
            },
            Some((key, result)) = running.next(), if !running.is_empty() => {
                match result {
                    Ok(requeue) => {
                        failures.remove(&key);
                        if let Some(after) = requeue {
                            queue.add_after(key.clone(), after);
                        }
                    }
                    Err(err) => {
                        let n = failures.entry(key.clone()).or_insert(0);
                        *n = n.saturating_add(1);
                        let delay = backoff(*n);
                        tracing::debug!(controller, ns = %key.0, name = %key.1, %err, ?delay, "sync failed; retrying");
                        queue.add_after(key.clone(), delay);
                    }
                }
                work.done(key);
            }
        }
    }
}

/// The keys of a work queue: waiting in order, each at most once, and the
/// ones being reconciled (a key sent again meanwhile waits until then).
#[derive(Default)]
struct WorkSet {
    waiting: VecDeque<Key>,
    queued: HashSet<Key>,
    running: HashSet<Key>,
    dirty: HashSet<Key>,
}

impl WorkSet {
    fn add(&mut self, key: Key) {
        if self.running.contains(&key) {
            self.dirty.insert(key);
        } else if self.queued.insert(key.clone()) {
            self.waiting.push_back(key);
        }
    }

    fn next(&mut self) -> Option<Key> {
        let key = self.waiting.pop_front()?;
        self.queued.remove(&key);
        self.running.insert(key.clone());
        Some(key)
    }

    fn done(&mut self, key: Key) {
        self.running.remove(&key);
        if self.dirty.remove(&key) {
            self.add(key);
        }
    }
}

/// 5 ms doubling up to 60 s, like client-go's default controller rate limiter
/// (but starting a little higher: the retries here are mostly conflicts).
fn backoff(failures: u32) -> Duration {
    let ms = 50u64.saturating_mul(1u64 << failures.min(12));
    Duration::from_millis(ms.min(60_000))
}

/// The controlling owner reference of an object.
pub fn controller_ref(refs: Option<&Vec<OwnerReference>>) -> Option<&OwnerReference> {
    refs?.iter().find(|r| r.controller == Some(true))
}

/// The controller owner reference pointing at `owner`.
pub fn owner_ref<K: Resource<DynamicType = ()>>(owner: &K) -> OwnerReference {
    OwnerReference {
        api_version: K::api_version(&()).into_owned(),
        kind: K::kind(&()).into_owned(),
        name: owner.name_any(),
        uid: owner.uid().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// Whether `labels` satisfy `selector`; an empty selector matches nothing, as
/// controllers treat it (upstream `metav1.LabelSelectorAsSelector` +
/// `selector.Empty()` checks).
pub fn selector_matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let ml = selector.match_labels.as_ref();
    let me = selector.match_expressions.as_ref();
    if ml.is_none_or(|m| m.is_empty()) && me.is_none_or(|e| e.is_empty()) {
        return false;
    }
    if let Some(ml) = ml
        && !ml.iter().all(|(k, v)| labels.get(k) == Some(v))
    {
        return false;
    }
    me.into_iter().flatten().all(|req| {
        let values = req.values.as_deref().unwrap_or_default();
        match req.operator.as_str() {
            "In" => labels.get(&req.key).is_some_and(|v| values.contains(v)),
            "NotIn" => labels.get(&req.key).is_none_or(|v| !values.contains(v)),
            "Exists" => labels.contains_key(&req.key),
            "DoesNotExist" => !labels.contains_key(&req.key),
            _ => false,
        }
    })
}

/// A label selector string for list/watch calls (`a=b,c in (d)`).
pub fn selector_string(selector: &LabelSelector) -> String {
    let mut parts: Vec<String> = selector
        .match_labels
        .iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    for req in selector.match_expressions.iter().flatten() {
        let values = req.values.as_deref().unwrap_or_default().join(",");
        parts.push(match req.operator.as_str() {
            "In" => format!("{} in ({values})", req.key),
            "NotIn" => format!("{} notin ({values})", req.key),
            "Exists" => req.key.clone(),
            _ => format!("!{}", req.key),
        });
    }
    parts.join(",")
}

pub fn now() -> Time {
    Time(Timestamp::now())
}

/// Seconds since the epoch of a timestamp.
pub fn secs(t: &Time) -> i64 {
    t.0.as_second()
}

pub fn now_secs() -> i64 {
    Timestamp::now().as_second()
}

/// Whether the pod is neither terminated nor being deleted
/// (upstream `controller.IsPodActive`).
pub fn is_pod_active(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    !matches!(phase, Some("Succeeded") | Some("Failed"))
        && pod.metadata.deletion_timestamp.is_none()
}

/// The pod's Ready condition, if true.
fn ready_condition(pod: &Pod) -> Option<&k8s_openapi::api::core::v1::PodCondition> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready" && c.status == "True")
}

pub fn is_pod_ready(pod: &Pod) -> bool {
    ready_condition(pod).is_some()
}

/// Ready for at least `min_ready_seconds` (upstream `podutil.IsPodAvailable`).
pub fn is_pod_available(pod: &Pod, min_ready_seconds: i32, now: i64) -> bool {
    let Some(c) = ready_condition(pod) else {
        return false;
    };
    if min_ready_seconds <= 0 {
        return true;
    }
    c.last_transition_time
        .as_ref()
        .is_some_and(|t| secs(t) + i64::from(min_ready_seconds) <= now)
}

/// Seconds until a ready pod becomes available, if it is not yet.
pub fn secs_until_available(pod: &Pod, min_ready_seconds: i32, now: i64) -> Option<i64> {
    let c = ready_condition(pod)?;
    let at = secs(c.last_transition_time.as_ref()?) + i64::from(min_ready_seconds);
    (at > now).then_some(at - now)
}

/// Whether an API error is a 404.
pub fn is_not_found(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(s) if s.code == 404)
}

pub fn is_conflict(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(s) if s.code == 409)
}

/// Whether the object's labels contain all of `wanted`.
pub fn labels_contain(
    labels: &BTreeMap<String, String>,
    wanted: &BTreeMap<String, String>,
) -> bool {
    wanted.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// The kube-rs description of a served resource type.
pub fn api_resource(r: &crate::resources::ResourceType) -> kube::api::ApiResource {
    kube::api::ApiResource {
        group: r.group.into(),
        version: r.version.into(),
        api_version: r.api_version.into(),
        kind: r.kind.into(),
        plural: r.plural.into(),
    }
}

/// Every stored resource type once (aliases sharing storage with another
/// version are left out), that can be listed, watched and deleted.
pub fn stored_kinds() -> Vec<&'static crate::resources::ResourceType> {
    crate::resources::catalog()
        .iter()
        .filter(|r| {
            r.has_verb("watch")
                && r.has_verb("delete")
                && r.group != "events.k8s.io"
                && !(r.group == "autoscaling" && r.version == "v1")
        })
        .collect()
}

/// Records Events about objects as one controller (`deployment-controller`,
/// `replicaset-controller`...), without holding up the caller.
#[derive(Clone)]
pub struct Events {
    recorder: kube::runtime::events::Recorder,
}

impl Events {
    pub fn new(client: kube::Client, controller: &str) -> Self {
        let reporter = kube::runtime::events::Reporter {
            controller: controller.to_string(),
            instance: None,
        };
        Self {
            recorder: kube::runtime::events::Recorder::new(client, reporter),
        }
    }

    /// A Normal event with `reason` and `note` about `obj`.
    pub fn normal<K: Resource<DynamicType = ()>>(&self, obj: &K, reason: &str, note: String) {
        self.publish(obj, kube::runtime::events::EventType::Normal, reason, note);
    }

    pub fn warning<K: Resource<DynamicType = ()>>(&self, obj: &K, reason: &str, note: String) {
        self.publish(obj, kube::runtime::events::EventType::Warning, reason, note);
    }

    fn publish<K: Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        type_: kube::runtime::events::EventType,
        reason: &str,
        note: String,
    ) {
        let reference = obj.object_ref(&());
        let event = kube::runtime::events::Event {
            type_,
            reason: reason.to_string(),
            note: Some(note),
            action: reason.to_string(),
            secondary: None,
        };
        let recorder = self.recorder.clone();
        tokio::spawn(async move {
            if let Err(err) = recorder.publish(&event, &reference).await {
                tracing::debug!(%err, "failed to record an event");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    /// Keys run on several workers at once, a key never on two, and a key
    /// sent while it runs runs once more afterwards.
    #[tokio::test]
    async fn workers_run_keys_at_once_but_never_one_key_twice_at_a_time() {
        use std::sync::{Arc, Mutex};
        #[derive(Default)]
        struct Seen {
            running: HashSet<Key>,
            peak: usize,
            overlap: bool,
            runs: HashMap<Key, u32>,
        }
        let seen = Arc::new(Mutex::new(Seen::default()));
        let (queue, rx) = Queue::new();
        let shutdown = CancellationToken::new();
        let worker = tokio::spawn({
            let (seen, queue, shutdown) = (seen.clone(), queue.clone(), shutdown.clone());
            async move {
                run_workers("test", 4, rx, queue, shutdown, |key: Key| {
                    let seen = seen.clone();
                    async move {
                        {
                            let mut s = seen.lock().unwrap();
                            s.overlap |= !s.running.insert(key.clone());
                            s.peak = s.peak.max(s.running.len());
                            *s.runs.entry(key.clone()).or_default() += 1;
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        seen.lock().unwrap().running.remove(&key);
                        Ok::<_, String>(None)
                    }
                })
                .await;
            }
        });
        for name in ["a", "b", "c", "d"] {
            queue.add("", name);
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
        // "a" is running: sent twice more, it runs once more, after.
        queue.add("", "a");
        queue.add("", "a");
        tokio::time::sleep(Duration::from_millis(400)).await;
        shutdown.cancel();
        worker.await.unwrap();
        let s = seen.lock().unwrap();
        assert_eq!(s.peak, 4, "the four keys ran at once");
        assert!(!s.overlap, "a key ran on two workers at once");
        assert_eq!(s.runs[&(String::new(), "a".to_string())], 2);
        assert_eq!(s.runs[&(String::new(), "b".to_string())], 1);
    }

    /// Shutdown lets a reconcile that began finish, and starts no other.
    #[tokio::test]
    async fn shutdown_lets_running_reconciles_finish() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicU32, Ordering};
        let finished = Arc::new(AtomicU32::new(0));
        let (queue, rx) = Queue::new();
        let shutdown = CancellationToken::new();
        let worker = tokio::spawn({
            let (finished, queue, shutdown) = (finished.clone(), queue.clone(), shutdown.clone());
            async move {
                run_workers("test", 1, rx, queue, shutdown, |_: Key| {
                    let finished = finished.clone();
                    async move {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        finished.fetch_add(1, Ordering::SeqCst);
                        Ok::<_, String>(None)
                    }
                })
                .await;
            }
        });
        queue.add("", "a");
        queue.add("", "b");
        tokio::time::sleep(Duration::from_millis(30)).await;
        shutdown.cancel();
        worker.await.unwrap();
        assert_eq!(finished.load(Ordering::SeqCst), 1);
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn selector_matches_labels_and_expressions() {
        let sel = LabelSelector {
            match_labels: Some(labels(&[("app", "web")])),
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "tier".into(),
                operator: "In".into(),
                values: Some(vec!["a".into(), "b".into()]),
            }]),
        };
        assert!(selector_matches(
            &sel,
            &labels(&[("app", "web"), ("tier", "a")])
        ));
        assert!(!selector_matches(
            &sel,
            &labels(&[("app", "web"), ("tier", "c")])
        ));
        assert!(!selector_matches(&sel, &labels(&[("tier", "a")])));
        assert_eq!(selector_string(&sel), "app=web,tier in (a,b)");
    }

    #[test]
    fn empty_selector_matches_nothing() {
        assert!(!selector_matches(
            &LabelSelector::default(),
            &labels(&[("a", "b")])
        ));
    }
}
