//! The threshold state machine of one probe worker (kubelet's `worker`
//! counters): consecutive outcomes become the published result.

use std::time::Duration;

use super::{ProbeKind, ProbeResult, ProbeSettings, initial_result};

/// One probe worker's state: consecutive outcomes and the published result.
#[derive(Debug, Clone)]
pub struct ProbeTracker {
    pub kind: ProbeKind,
    pub settings: ProbeSettings,
    last: ProbeResult,
    run: u32,
    published: ProbeResult,
    /// After a liveness/startup failure the container is being restarted;
    /// probing pauses until a new container id shows up.
    on_hold: bool,
}

impl ProbeTracker {
    pub fn new(kind: ProbeKind, settings: ProbeSettings) -> Self {
        Self {
            kind,
            settings,
            last: ProbeResult::Unknown,
            run: 0,
            published: initial_result(kind),
            on_hold: false,
        }
    }

    /// The result the pod worker should use now.
    pub fn result(&self) -> ProbeResult {
        self.published
    }

    /// Whether probing is paused for a restart.
    pub fn on_hold(&self) -> bool {
        self.on_hold
    }

    /// Whether a probe should run for a container running for `running_for`.
    pub fn should_probe(&self, running_for: Duration) -> bool {
        !self.on_hold && running_for >= self.settings.initial_delay
    }

    /// Feeds one outcome; returns the new published result when it changed.
    /// A result is published only after `successThreshold` consecutive
    /// successes or `failureThreshold` consecutive failures.
    pub fn observe(&mut self, outcome: ProbeResult) -> Option<ProbeResult> {
        if self.on_hold {
            return None;
        }
        if outcome == self.last {
            self.run = self.run.saturating_add(1);
        } else {
            self.last = outcome;
            self.run = 1;
        }
        let threshold = match outcome {
            ProbeResult::Success => self.settings.success_threshold,
            ProbeResult::Failure => self.settings.failure_threshold,
            ProbeResult::Unknown => return None,
        };
        if self.run < threshold {
            return None;
        }
        if outcome == ProbeResult::Failure && self.kind != ProbeKind::Readiness {
            // The container will be killed: start counting afresh for its successor.
            self.on_hold = true;
            self.run = 0;
        }
        if self.published == outcome {
            return None;
        }
        self.published = outcome;
        Some(outcome)
    }

    /// A new container replaced the probed one (after a restart).
    pub fn container_restarted(&mut self) {
        self.on_hold = false;
        self.last = ProbeResult::Unknown;
        self.run = 0;
        self.published = initial_result(self.kind);
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::Probe;

    use super::*;

    fn tracker(kind: ProbeKind, success: i32, failure: i32) -> ProbeTracker {
        let probe = Probe {
            success_threshold: Some(success),
            failure_threshold: Some(failure),
            ..Probe::default()
        };
        ProbeTracker::new(kind, ProbeSettings::from_probe(&probe))
    }

    #[test]
    fn readiness_starts_failed_and_flips_after_thresholds() {
        let mut t = tracker(ProbeKind::Readiness, 2, 3);
        assert_eq!(t.result(), ProbeResult::Failure);
        assert_eq!(t.observe(ProbeResult::Success), None);
        assert_eq!(t.observe(ProbeResult::Success), Some(ProbeResult::Success));
        assert_eq!(t.observe(ProbeResult::Failure), None);
        assert_eq!(t.observe(ProbeResult::Success), None);
        assert_eq!(t.observe(ProbeResult::Failure), None);
        assert_eq!(t.observe(ProbeResult::Failure), None);
        assert_eq!(t.observe(ProbeResult::Failure), Some(ProbeResult::Failure));
        assert!(!t.on_hold());
    }

    #[test]
    fn liveness_failure_holds_until_the_container_restarts() {
        let mut t = tracker(ProbeKind::Liveness, 1, 2);
        assert_eq!(t.result(), ProbeResult::Success);
        assert_eq!(t.observe(ProbeResult::Failure), None);
        assert_eq!(t.observe(ProbeResult::Failure), Some(ProbeResult::Failure));
        assert!(t.on_hold());
        assert!(!t.should_probe(Duration::from_secs(100)));
        assert_eq!(t.observe(ProbeResult::Failure), None);
        t.container_restarted();
        assert_eq!(t.result(), ProbeResult::Success);
        assert!(t.should_probe(Duration::ZERO));
    }

    #[test]
    fn initial_delay_gates_probing() {
        let probe = Probe {
            initial_delay_seconds: Some(5),
            ..Probe::default()
        };
        let t = ProbeTracker::new(ProbeKind::Readiness, ProbeSettings::from_probe(&probe));
        assert!(!t.should_probe(Duration::from_secs(4)));
        assert!(t.should_probe(Duration::from_secs(5)));
    }
}
