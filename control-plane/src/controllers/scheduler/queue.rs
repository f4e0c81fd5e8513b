//! The scheduling queue: pending pods ordered by priority then creation
//! time (upstream PrioritySort), with per-pod exponential backoff and an
//! unschedulable set that cluster events move back (upstream
//! `internal/queue`). No I/O.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;

use super::cache::pod_key;

pub const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// Unschedulable pods are retried at least this often even without events.
pub const UNSCHEDULABLE_FLUSH: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Active,
    InFlight,
    Backoff(Instant),
    Unschedulable(Instant),
}

#[derive(Debug)]
struct Entry {
    pod: Arc<Pod>,
    attempts: u32,
    seq: u64,
    state: State,
    /// The queue's move count when the pod was popped: a cluster event
    /// that arrived while it was in flight sends it to backoff, not to the
    /// unschedulable set.
    moves_at_pop: u64,
}

type HeapKey = (i32, Reverse<i64>, Reverse<u64>, String);

/// Pending pods this scheduler is responsible for. The unschedulable and
/// backing-off pods are kept apart from the active heap, as upstream's
/// `unschedulablePods` and `podBackoffQ`, so that a cluster event costs
/// the pods that failed since the last one, not every pending pod.
#[derive(Debug, Default)]
pub struct SchedulingQueue {
    heap: BinaryHeap<HeapKey>,
    entries: HashMap<String, Entry>,
    unschedulable: HashSet<String>,
    /// Backoff deadlines; an entry whose pod has moved on is skipped.
    backoff: BinaryHeap<Reverse<(Instant, String)>>,
    seq: u64,
    moves: u64,
}

fn priority(pod: &Pod) -> i32 {
    pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0)
}

fn created(pod: &Pod) -> i64 {
    pod.metadata
        .creation_timestamp
        .as_ref()
        .map_or(0, |t| t.0.as_millisecond())
}

fn backoff(attempts: u32) -> Duration {
    let shift = attempts.saturating_sub(1).min(8);
    (INITIAL_BACKOFF * (1u32 << shift)).min(MAX_BACKOFF)
}

impl SchedulingQueue {
    fn push_active(&mut self, key: &str) {
        self.seq += 1;
        let seq = self.seq;
        if let Some(e) = self.entries.get_mut(key) {
            if matches!(e.state, State::Unschedulable(_)) {
                self.unschedulable.remove(key);
            }
            e.state = State::Active;
            e.seq = seq;
            self.heap.push((
                priority(&e.pod),
                Reverse(created(&e.pod)),
                Reverse(seq),
                key.to_string(),
            ));
        }
    }

    fn push_backoff(&mut self, key: &str, until: Instant) {
        if let Some(e) = self.entries.get_mut(key) {
            if matches!(e.state, State::Unschedulable(_)) {
                self.unschedulable.remove(key);
            }
            e.state = State::Backoff(until);
            self.backoff.push(Reverse((until, key.to_string())));
        }
    }

    /// A pending pod was added or changed.
    pub fn add_or_update(&mut self, pod: Arc<Pod>) {
        let key = pod_key(&pod);
        match self.entries.get_mut(&key) {
            None => {
                self.entries.insert(
                    key.clone(),
                    Entry {
                        pod,
                        attempts: 0,
                        seq: 0,
                        state: State::Active,
                        moves_at_pop: 0,
                    },
                );
                self.push_active(&key);
            }
            Some(e) => {
                // Our own status writes must not requeue the pod; a change
                // of its spec or labels may make it schedulable.
                let changed =
                    e.pod.spec != pod.spec || e.pod.metadata.labels != pod.metadata.labels;
                e.pod = pod;
                if changed && matches!(e.state, State::Unschedulable(_) | State::Backoff(_)) {
                    self.push_active(&key);
                }
            }
        }
    }

    pub fn delete(&mut self, key: &str) {
        self.entries.remove(key);
        self.unschedulable.remove(key);
    }

    pub fn contains(&self, key: &str) -> bool {
        self.entries.contains_key(key)
    }

    /// The next pod to schedule, marked in flight.
    pub fn pop(&mut self) -> Option<Arc<Pod>> {
        while let Some((_, _, Reverse(seq), key)) = self.heap.pop() {
            if let Some(e) = self.entries.get_mut(&key)
                && e.seq == seq
                && e.state == State::Active
            {
                e.state = State::InFlight;
                e.moves_at_pop = self.moves;
                return Some(e.pod.clone());
            }
        }
        None
    }

    /// The pod was bound (or is no longer ours).
    pub fn done(&mut self, key: &str) {
        self.delete(key);
    }

    /// The pod did not fit: park it until a cluster event, with backoff.
    pub fn unschedulable(&mut self, key: &str, now: Instant) {
        let moves = self.moves;
        let Some(e) = self.entries.get_mut(key) else {
            return;
        };
        e.attempts += 1;
        if e.moves_at_pop != moves {
            let until = now + backoff(e.attempts);
            self.push_backoff(key, until);
        } else {
            e.state = State::Unschedulable(now);
            self.unschedulable.insert(key.to_string());
        }
    }

    /// A transient error (binding failed): retry after backoff.
    pub fn retry(&mut self, key: &str, now: Instant) {
        if let Some(e) = self.entries.get_mut(key) {
            e.attempts += 1;
            let until = now + backoff(e.attempts);
            self.push_backoff(key, until);
        }
    }

    /// A cluster event may have made unschedulable pods schedulable. The
    /// backoff runs from the failed attempt, as upstream's
    /// `isPodBackingoff`: a pod that failed long ago goes straight back to
    /// the active queue.
    pub fn move_all(&mut self, now: Instant) {
        self.moves += 1;
        for key in std::mem::take(&mut self.unschedulable) {
            if let Some(e) = self.entries.get(&key)
                && let State::Unschedulable(since) = e.state
            {
                let until = since + backoff(e.attempts);
                self.push_backoff(&key, until);
            }
        }
        self.flush(now);
    }

    /// Moves pods whose backoff expired, and long-unschedulable ones, to
    /// the active queue; returns whether any became active.
    pub fn flush(&mut self, now: Instant) -> bool {
        let mut due: Vec<String> = Vec::new();
        while let Some(Reverse((until, _))) = self.backoff.peek()
            && *until <= now
        {
            let Some(Reverse((until, key))) = self.backoff.pop() else {
                break;
            };
            if self
                .entries
                .get(&key)
                .is_some_and(|e| e.state == State::Backoff(until))
            {
                due.push(key);
            }
        }
        due.extend(
            self.unschedulable
                .iter()
                .filter(|k| {
                    self.entries.get(*k).is_some_and(|e| {
                        matches!(e.state, State::Unschedulable(since)
                            if now.duration_since(since) >= UNSCHEDULABLE_FLUSH)
                    })
                })
                .cloned(),
        );
        for key in &due {
            self.push_active(key);
        }
        !due.is_empty()
    }

    /// Pods waiting as active, backing off and unschedulable (not those
    /// being scheduled or bound).
    pub fn pending_counts(&self) -> (usize, usize, usize) {
        let (mut active, mut backoff, mut unschedulable) = (0, 0, 0);
        for e in self.entries.values() {
            match e.state {
                State::Active => active += 1,
                State::Backoff(_) => backoff += 1,
                State::Unschedulable(_) => unschedulable += 1,
                State::InFlight => {}
            }
        }
        (active, backoff, unschedulable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, priority: i32, created: &str) -> Arc<Pod> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "default", "creationTimestamp": created},
                "spec": {"containers": [], "priority": priority}
            }))
            .unwrap(),
        )
    }

    #[test]
    fn pops_by_priority_then_creation_time() {
        let mut q = SchedulingQueue::default();
        q.add_or_update(pod("late", 0, "2024-01-01T00:00:02Z"));
        q.add_or_update(pod("early", 0, "2024-01-01T00:00:01Z"));
        q.add_or_update(pod("high", 10, "2024-01-01T00:00:03Z"));
        let names: Vec<_> = std::iter::from_fn(|| q.pop())
            .map(|p| p.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(names, vec!["high", "early", "late"]);
    }

    #[test]
    fn unschedulable_pods_wait_for_a_cluster_event_and_backoff() {
        let mut q = SchedulingQueue::default();
        q.add_or_update(pod("a", 0, "2024-01-01T00:00:00Z"));
        let now = Instant::now();
        assert!(q.pop().is_some());
        q.unschedulable("default/a", now);
        assert!(q.pop().is_none());
        q.move_all(now);
        assert!(q.pop().is_none(), "still backing off");
        q.flush(now + MAX_BACKOFF);
        assert!(q.pop().is_some());
    }

    #[test]
    fn a_pod_that_failed_long_ago_moves_straight_to_active() {
        let mut q = SchedulingQueue::default();
        q.add_or_update(pod("a", 0, "2024-01-01T00:00:00Z"));
        let failed = Instant::now();
        assert!(q.pop().is_some());
        q.unschedulable("default/a", failed);
        q.move_all(failed + INITIAL_BACKOFF);
        assert!(q.pop().is_some());
    }

    #[test]
    fn an_event_while_in_flight_sends_a_failed_pod_to_backoff() {
        let mut q = SchedulingQueue::default();
        q.add_or_update(pod("a", 0, "2024-01-01T00:00:00Z"));
        q.add_or_update(pod("b", 0, "2024-01-01T00:00:01Z"));
        let now = Instant::now();
        assert!(q.pop().is_some());
        q.unschedulable("default/a", now);
        assert!(q.pop().is_some());
        q.move_all(now);
        q.unschedulable("default/b", now);
        // "a" went to backoff with the move; "b" failed after it began,
        // so it backs off too instead of waiting for the next event.
        q.flush(now + MAX_BACKOFF);
        let mut names: Vec<_> = std::iter::from_fn(|| q.pop())
            .map(|p| p.metadata.name.clone().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, vec!["a", "b"]);
    }

    #[test]
    fn status_only_updates_do_not_requeue() {
        let mut q = SchedulingQueue::default();
        let p = pod("a", 0, "2024-01-01T00:00:00Z");
        q.add_or_update(p.clone());
        q.pop();
        q.unschedulable("default/a", Instant::now());
        q.add_or_update(p);
        assert!(q.pop().is_none());
    }

    #[test]
    fn backoff_doubles_up_to_the_max() {
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(2), Duration::from_secs(2));
        assert_eq!(backoff(10), MAX_BACKOFF);
    }
}
