//! Container restart back-off (CrashLoopBackOff) as kubelet's
//! `flowcontrol.Backoff` use in `doBackOff`: 10 s doubling to 5 min per
//! container, forgotten after 10 min without a restart.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// kubelet's `backOffPeriod`.
pub const INITIAL_BACKOFF: Duration = Duration::from_secs(10);
/// kubelet's `MaxContainerBackOff`.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, Copy)]
struct Entry {
    backoff: Duration,
    last_update: Instant,
}

/// Per-container restart delays, keyed by pod UID and container name.
#[derive(Debug, Default)]
pub struct RestartBackoff {
    entries: HashMap<(String, String), Entry>,
}

fn expired(now: Instant, last_update: Instant) -> bool {
    now.saturating_duration_since(last_update) > MAX_BACKOFF * 2
}

/// Go's `time.Duration.String()` for whole seconds: `10s`, `1m20s`, `5m0s`.
pub fn go_duration(d: Duration) -> String {
    let secs = d.as_secs();
    match (secs / 3600, secs / 60 % 60, secs % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, s) => format!("{m}m{s}s"),
        (h, m, s) => format!("{h}h{m}m{s}s"),
    }
}

impl RestartBackoff {
    fn key(pod_uid: &str, container: &str) -> (String, String) {
        (pod_uid.to_owned(), container.to_owned())
    }

    /// The delay still owed before restarting, if the container is backing
    /// off after its last exit at `finished_at` (`IsInBackOffSince`).
    pub fn in_backoff_since(
        &self,
        pod_uid: &str,
        container: &str,
        finished_at: Instant,
    ) -> Option<Duration> {
        let e = self.entries.get(&Self::key(pod_uid, container))?;
        if expired(finished_at, e.last_update) {
            return None;
        }
        (finished_at.saturating_duration_since(e.last_update) < e.backoff).then_some(e.backoff)
    }

    /// Records a restart at `now` and grows the delay (`Next`).
    pub fn next(&mut self, pod_uid: &str, container: &str, now: Instant) {
        let key = Self::key(pod_uid, container);
        let backoff = match self.entries.get(&key) {
            Some(e) if !expired(now, e.last_update) => (e.backoff * 2).min(MAX_BACKOFF),
            _ => INITIAL_BACKOFF,
        };
        self.entries.insert(
            key,
            Entry {
                backoff,
                last_update: now,
            },
        );
    }

    /// Drops every entry of a pod (when its worker stops).
    pub fn forget_pod(&mut self, pod_uid: &str) {
        self.entries.retain(|(uid, _), _| uid != pod_uid);
    }

    /// The waiting message of a container in back-off, as kubelet's.
    pub fn message(
        delay: Duration,
        container: &str,
        pod_name: &str,
        namespace: &str,
        pod_uid: &str,
    ) -> String {
        format!(
            "back-off {} restarting failed container={container} pod={pod_name}_{namespace}({pod_uid})",
            go_duration(delay)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_from_10s_to_5m() {
        let mut b = RestartBackoff::default();
        let t0 = Instant::now();
        let mut seen = Vec::new();
        let mut t = t0;
        for _ in 0..7 {
            b.next("u", "c", t);
            seen.push(b.in_backoff_since("u", "c", t).unwrap().as_secs());
            t += Duration::from_secs(1);
        }
        assert_eq!(seen, [10, 20, 40, 80, 160, 300, 300]);
    }

    #[test]
    fn backoff_ends_after_the_delay_and_resets_after_long_quiet() {
        let mut b = RestartBackoff::default();
        let t0 = Instant::now();
        b.next("u", "c", t0);
        assert!(
            b.in_backoff_since("u", "c", t0 + Duration::from_secs(5))
                .is_some()
        );
        assert!(
            b.in_backoff_since("u", "c", t0 + Duration::from_secs(11))
                .is_none()
        );
        b.next("u", "c", t0 + Duration::from_secs(20));
        let later = t0 + Duration::from_secs(20) + MAX_BACKOFF * 2 + Duration::from_secs(1);
        b.next("u", "c", later);
        assert_eq!(b.in_backoff_since("u", "c", later), Some(INITIAL_BACKOFF));
        b.forget_pod("u");
        assert!(b.in_backoff_since("u", "c", later).is_none());
    }

    #[test]
    fn message_matches_kubelet() {
        assert_eq!(
            RestartBackoff::message(Duration::from_secs(80), "app", "web", "default", "u1"),
            "back-off 1m20s restarting failed container=app pod=web_default(u1)"
        );
        assert_eq!(go_duration(Duration::from_secs(300)), "5m0s");
        assert_eq!(go_duration(Duration::from_secs(10)), "10s");
    }
}
