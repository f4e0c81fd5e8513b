//! What the eviction manager shares with the pod workers: the pressure
//! conditions admission checks, and the pods the agent terminates itself
//! (evicted or rejected) with the status to write. The pod worker of each
//! UID does the kill and the status write, so nothing races its own sync.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Mutex, MutexGuard, PoisonError};

use tokio::sync::watch;

use super::pressure::Pressure;
use crate::kuberuntime::events::EventRecorder;

/// A pod the agent terminates, and the status it ends with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Termination {
    /// Stop the pod's containers (false: it never started, as a rejection).
    pub kill: bool,
    /// The grace period of the kill (`None`: the pod's own).
    pub grace_period: Option<i64>,
    pub reason: String,
    pub message: String,
    /// Add a `DisruptionTarget` condition (evictions, not rejections).
    pub disruption_target: bool,
}

#[derive(Default)]
struct State {
    terminations: HashMap<String, Termination>,
    killed: HashSet<String>,
    admitted: HashSet<String>,
    conditions: Vec<Pressure>,
    /// By kubelet's `eviction_signal` label.
    evictions: BTreeMap<&'static str, u64>,
}

/// Shared by the eviction manager (writer) and the pod workers.
pub struct EvictionHandle {
    state: Mutex<State>,
    wake: watch::Sender<u64>,
    /// Where `Evicted` events are written (none in unit tests).
    pub recorder: Option<EventRecorder>,
}

impl std::fmt::Debug for EvictionHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EvictionHandle")
            .field("evictions", &self.evictions())
            .finish_non_exhaustive()
    }
}

impl Default for EvictionHandle {
    fn default() -> Self {
        Self::new(None)
    }
}

impl EvictionHandle {
    pub fn new(recorder: Option<EventRecorder>) -> Self {
        Self {
            state: Mutex::default(),
            wake: watch::Sender::new(0),
            recorder,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Plain data: a panic elsewhere leaves it usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Asks the pod's worker to terminate it; wakes every worker.
    pub fn terminate(&self, uid: &str, termination: Termination) {
        self.lock()
            .terminations
            .entry(uid.to_owned())
            .or_insert(termination);
        self.wake.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// The termination asked for `uid`, if any.
    pub fn termination(&self, uid: &str) -> Option<Termination> {
        self.lock().terminations.get(uid).cloned()
    }

    /// Records that the pod's containers were stopped; true the first time.
    pub fn mark_killed(&self, uid: &str) -> bool {
        self.lock().killed.insert(uid.to_owned())
    }

    pub fn is_killed(&self, uid: &str) -> bool {
        self.lock().killed.contains(uid)
    }

    /// Records the pod as admitted; true when it was not yet.
    pub fn mark_admitted(&self, uid: &str) -> bool {
        self.lock().admitted.insert(uid.to_owned())
    }

    /// Forgets a pod that left the node.
    pub fn forget(&self, uid: &str) {
        let mut s = self.lock();
        s.terminations.remove(uid);
        s.killed.remove(uid);
        s.admitted.remove(uid);
    }

    /// Woken whenever a termination is asked for.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.wake.subscribe()
    }

    /// The pressure conditions on now.
    pub fn conditions(&self) -> Vec<Pressure> {
        self.lock().conditions.clone()
    }

    pub fn set_conditions(&self, conditions: Vec<Pressure>) {
        self.lock().conditions = conditions;
    }

    /// Counts one eviction for `kubelet_evictions`.
    pub fn count_eviction(&self, signal: &'static str) {
        *self.lock().evictions.entry(signal).or_default() += 1;
    }

    /// Evictions so far by signal.
    pub fn evictions(&self) -> BTreeMap<&'static str, u64> {
        self.lock().evictions.clone()
    }
}

/// `kubelet_evictions` in Prometheus text, as kubelet's counter.
pub fn render_metrics(evictions: &BTreeMap<&'static str, u64>) -> String {
    let mut out = String::from(
        "# HELP kubelet_evictions [ALPHA] Cumulative number of pod evictions by eviction signal\n# TYPE kubelet_evictions counter\n",
    );
    for (signal, n) in evictions {
        out += &format!("kubelet_evictions{{eviction_signal=\"{signal}\"}} {n}\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Signal;

    #[test]
    fn a_termination_wakes_workers_and_is_kept_until_forgotten() {
        let h = EvictionHandle::default();
        let mut rx = h.subscribe();
        h.terminate(
            "u1",
            Termination {
                kill: true,
                grace_period: Some(0),
                reason: "Evicted".to_owned(),
                message: "m".to_owned(),
                disruption_target: true,
            },
        );
        assert!(rx.has_changed().unwrap());
        rx.borrow_and_update();
        assert_eq!(h.termination("u1").unwrap().grace_period, Some(0));
        assert!(h.mark_killed("u1"));
        assert!(!h.mark_killed("u1"));
        h.forget("u1");
        assert!(h.termination("u1").is_none());
        assert!(!h.is_killed("u1"));
    }

    #[test]
    fn metrics_count_per_signal() {
        let h = EvictionHandle::default();
        h.count_eviction(Signal::NodeFsAvailable.as_str());
        h.count_eviction(Signal::NodeFsAvailable.as_str());
        let text = render_metrics(&h.evictions());
        assert!(text.contains("kubelet_evictions{eviction_signal=\"nodefs.available\"} 2\n"));
    }
}
