//! The probe manager (kubelet's `prober_manager` + `results.Manager`): starts
//! one worker per (container, probe kind) of each pod the runtime reports,
//! keeps their published results by container id, answers the started/ready/
//! must-restart questions of the runtime, and wakes the pod worker when a
//! result changes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::jiff::Timestamp;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use super::exec::ContainerExec;
use super::{ProbeKind, ProbeResult, worker};

/// What the runtime saw of one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerTarget {
    pub name: String,
    /// The runtime's container id (no scheme).
    pub id: String,
    pub running: bool,
    pub started_at: Option<Timestamp>,
}

/// What the workers of one pod probe.
#[derive(Debug, Clone, Default)]
pub struct PodTarget {
    pub pod: Pod,
    pub pod_ip: Option<String>,
    pub containers: HashMap<String, ContainerTarget>,
}

/// Writes the Warning events of probes (`Unhealthy`, `ProbeWarning`).
pub trait ProbeEvents: Send + Sync {
    fn warning(&self, pod: &Pod, container: &str, reason: &str, message: &str);
}

/// (pod uid, container name, kind).
pub(super) type Key = (String, String, ProbeKind);

/// What the workers share with the manager.
pub(super) struct Shared {
    pub exec: Arc<dyn ContainerExec>,
    pub events: Arc<dyn ProbeEvents>,
    /// Published results with the container id they are about.
    results: Mutex<HashMap<Key, (String, ProbeResult)>>,
    wakes: Mutex<HashMap<String, Arc<Notify>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Plain maps: a panic elsewhere leaves them consistent.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    /// The published result of `key` for container `id`.
    pub fn result(&self, key: &Key, id: &str) -> Option<ProbeResult> {
        lock(&self.results)
            .get(key)
            .filter(|(cid, _)| cid == id)
            .map(|(_, r)| *r)
    }

    /// Publishes a result and wakes the pod's worker.
    pub fn publish(&self, key: &Key, id: &str, result: ProbeResult) {
        lock(&self.results).insert(key.clone(), (id.to_owned(), result));
        self.wake(&key.0);
    }

    pub fn forget(&self, key: &Key) {
        lock(&self.results).remove(key);
    }

    fn wake(&self, uid: &str) {
        if let Some(n) = lock(&self.wakes).get(uid) {
            n.notify_one();
        }
    }
}

struct PodEntry {
    target: watch::Sender<Arc<PodTarget>>,
    workers: Vec<(String, ProbeKind)>,
    cancel: CancellationToken,
}

/// Runs the probes of every pod on the node.
pub struct ProbeManager {
    shared: Arc<Shared>,
    pods: Mutex<HashMap<String, PodEntry>>,
}

/// The containers of a pod that are probed: regular ones and sidecars
/// (init containers with `restartPolicy: Always`).
pub fn probed_container<'a>(pod: &'a Pod, name: &str) -> Option<&'a Container> {
    let spec = pod.spec.as_ref()?;
    spec.containers.iter().find(|c| c.name == name).or_else(|| {
        spec.init_containers
            .iter()
            .flatten()
            .find(|c| c.name == name && c.restart_policy.as_deref() == Some("Always"))
    })
}

fn has_probe(pod: &Pod, name: &str, kind: ProbeKind) -> bool {
    probed_container(pod, name).is_some_and(|c| kind.of(c).is_some())
}

fn uid_of(pod: &Pod) -> String {
    pod.metadata.uid.clone().unwrap_or_default()
}

impl ProbeManager {
    pub fn new(exec: Arc<dyn ContainerExec>, events: Arc<dyn ProbeEvents>) -> Self {
        Self {
            shared: Arc::new(Shared {
                exec,
                events,
                results: Mutex::default(),
                wakes: Mutex::default(),
            }),
            pods: Mutex::default(),
        }
    }

    /// Tells the workers of `pod` what runs now, starting workers for probes
    /// not yet running. Call from within the tokio runtime.
    pub fn update_pod(&self, pod: &Pod, pod_ip: Option<String>, containers: Vec<ContainerTarget>) {
        let uid = uid_of(pod);
        let target = Arc::new(PodTarget {
            pod: pod.clone(),
            pod_ip,
            containers: containers
                .into_iter()
                .map(|c| (c.name.clone(), c))
                .collect(),
        });
        let mut pods = lock(&self.pods);
        let entry = pods.entry(uid.clone()).or_insert_with(|| PodEntry {
            target: watch::channel(target.clone()).0,
            workers: Vec::new(),
            cancel: CancellationToken::new(),
        });
        entry.target.send_replace(target);
        let spec = pod.spec.clone().unwrap_or_default();
        let names = spec
            .init_containers
            .iter()
            .flatten()
            .filter(|c| c.restart_policy.as_deref() == Some("Always"))
            .chain(spec.containers.iter());
        for c in names {
            for kind in ProbeKind::ALL {
                let key = (c.name.clone(), kind);
                if kind.of(c).is_none() || entry.workers.contains(&key) {
                    continue;
                }
                entry.workers.push(key);
                tokio::spawn(worker::run(
                    self.shared.clone(),
                    (uid.clone(), c.name.clone(), kind),
                    entry.target.subscribe(),
                    entry.cancel.child_token(),
                ));
            }
        }
    }

    /// Stops the workers of a removed pod and forgets its results.
    pub fn remove_pod(&self, uid: &str) {
        if let Some(entry) = lock(&self.pods).remove(uid) {
            entry.cancel.cancel();
        }
        lock(&self.shared.results).retain(|(u, _, _), _| u != uid);
        lock(&self.shared.wakes).remove(uid);
    }

    /// Notified when a probe result of the pod changes.
    pub fn sync_signal(&self, uid: &str) -> Arc<Notify> {
        lock(&self.shared.wakes)
            .entry(uid.to_owned())
            .or_default()
            .clone()
    }

    /// Whether running container `id` has started: its startup probe
    /// succeeded, or it has none.
    pub fn started(&self, pod: &Pod, name: &str, id: &str) -> bool {
        if !has_probe(pod, name, ProbeKind::Startup) {
            return true;
        }
        let key = (uid_of(pod), name.to_owned(), ProbeKind::Startup);
        self.shared.result(&key, id) == Some(ProbeResult::Success)
    }

    /// Whether running container `id` is ready: started, and its readiness
    /// probe succeeded or it has none.
    pub fn ready(&self, pod: &Pod, name: &str, id: &str) -> bool {
        if !self.started(pod, name, id) {
            return false;
        }
        if !has_probe(pod, name, ProbeKind::Readiness) {
            return true;
        }
        let key = (uid_of(pod), name.to_owned(), ProbeKind::Readiness);
        self.shared.result(&key, id) == Some(ProbeResult::Success)
    }

    /// The probe (liveness or startup) whose failure means container `id`
    /// must be killed.
    pub fn failed(&self, pod: &Pod, name: &str, id: &str) -> Option<ProbeKind> {
        [ProbeKind::Liveness, ProbeKind::Startup]
            .into_iter()
            .find(|kind| {
                let key = (uid_of(pod), name.to_owned(), *kind);
                self.shared.result(&key, id) == Some(ProbeResult::Failure)
            })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use k8s_openapi::api::core::v1::{ExecAction, PodSpec, Probe};

    use super::*;
    use crate::probe::exec::fake::{FakeExec, exited};

    #[derive(Default)]
    struct Events(Mutex<Vec<(String, String, String)>>);

    impl ProbeEvents for Events {
        fn warning(&self, _pod: &Pod, container: &str, reason: &str, message: &str) {
            self.0.lock().unwrap().push((
                container.to_owned(),
                reason.to_owned(),
                message.to_owned(),
            ));
        }
    }

    fn exec_probe(failure_threshold: i32) -> Probe {
        Probe {
            exec: Some(ExecAction {
                command: Some(vec!["check".to_owned()]),
            }),
            period_seconds: Some(1),
            failure_threshold: Some(failure_threshold),
            ..Probe::default()
        }
    }

    fn pod(c: Container) -> Pod {
        let mut p = Pod::default();
        p.metadata.uid = Some("u1".to_owned());
        p.spec = Some(PodSpec {
            containers: vec![c],
            ..PodSpec::default()
        });
        p
    }

    fn running(id: &str) -> Vec<ContainerTarget> {
        vec![ContainerTarget {
            name: "app".to_owned(),
            id: id.to_owned(),
            running: true,
            started_at: Some(Timestamp::now()),
        }]
    }

    async fn until(what: &str, mut f: impl FnMut() -> bool) {
        for _ in 0..200 {
            if f() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("timed out waiting for {what}");
    }

    #[test]
    fn containers_without_probes_are_started_and_ready() {
        let exec = Arc::new(FakeExec::default());
        let m = ProbeManager::new(exec, Arc::new(Events::default()));
        let p = pod(Container {
            name: "app".to_owned(),
            ..Container::default()
        });
        assert!(m.started(&p, "app", "c1"));
        assert!(m.ready(&p, "app", "c1"));
        assert_eq!(m.failed(&p, "app", "c1"), None);
    }

    #[tokio::test]
    async fn readiness_follows_the_probe_and_records_unhealthy_events() {
        let exec = Arc::new(FakeExec::new(vec![exited(1, "not yet"), exited(0, "")]));
        let events = Arc::new(Events::default());
        let m = ProbeManager::new(exec.clone(), events.clone());
        let p = pod(Container {
            name: "app".to_owned(),
            readiness_probe: Some(exec_probe(3)),
            ..Container::default()
        });
        let wake = m.sync_signal("u1");
        m.update_pod(&p, Some("10.42.0.5".to_owned()), running("c1"));
        assert!(!m.ready(&p, "app", "c1"));
        until("ready", || m.ready(&p, "app", "c1")).await;
        wake.notified().await;
        assert_eq!(
            events.0.lock().unwrap()[0],
            (
                "app".to_owned(),
                "Unhealthy".to_owned(),
                "Readiness probe failed: not yet".to_owned()
            )
        );
        // A new container of the same name starts unready again.
        assert!(!m.ready(&p, "app", "c2"));
        m.remove_pod("u1");
        assert!(!m.ready(&p, "app", "c1"));
    }

    #[tokio::test]
    async fn liveness_fails_after_the_threshold_and_startup_gates_it() {
        let exec = Arc::new(FakeExec::new(vec![exited(1, "dead")]));
        let events = Arc::new(Events::default());
        let m = ProbeManager::new(exec.clone(), events.clone());
        let p = pod(Container {
            name: "app".to_owned(),
            liveness_probe: Some(exec_probe(2)),
            ..Container::default()
        });
        m.update_pod(&p, None, running("c1"));
        until("liveness failure", || {
            m.failed(&p, "app", "c1") == Some(ProbeKind::Liveness)
        })
        .await;
        assert!(events.0.lock().unwrap().len() >= 2);
        m.remove_pod("u1");

        // With a failing startup probe, liveness never runs; startup fails.
        let exec = Arc::new(FakeExec::new(vec![exited(1, "starting")]));
        let events = Arc::new(Events::default());
        let m = ProbeManager::new(exec, events.clone());
        let mut c = Container {
            name: "app".to_owned(),
            liveness_probe: Some(exec_probe(1)),
            startup_probe: Some(exec_probe(2)),
            ..Container::default()
        };
        c.liveness_probe.as_mut().unwrap().exec = Some(ExecAction {
            command: Some(vec!["live".to_owned()]),
        });
        let p = pod(c);
        m.update_pod(&p, None, running("c1"));
        until("startup failure", || {
            m.failed(&p, "app", "c1") == Some(ProbeKind::Startup)
        })
        .await;
        assert!(!m.started(&p, "app", "c1"));
        assert!(
            events
                .0
                .lock()
                .unwrap()
                .iter()
                .all(|(_, _, msg)| msg == "Startup probe failed: starting")
        );
        m.remove_pod("u1");
    }
}
