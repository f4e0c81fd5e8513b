//! Container probes (kubelet's `prober` workers): the settings of a probe and
//! the threshold state machine that turns single probe outcomes into the
//! readiness/liveness/startup results the pod worker acts on. Running the
//! probe itself (exec/HTTP/TCP/gRPC) comes with the runtime.

use std::time::Duration;

use k8s_openapi::api::core::v1::Probe;

/// Which probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeKind {
    Liveness,
    Readiness,
    Startup,
}

/// The outcome of one probe run, and the published result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeResult {
    Unknown,
    Success,
    Failure,
}

/// A probe's timing and thresholds with the API defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeSettings {
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
}

fn secs(v: Option<i32>, default: u64) -> Duration {
    Duration::from_secs(v.map_or(default, |s| u64::from(s.max(0).unsigned_abs())))
}

fn count(v: Option<i32>, default: u32) -> u32 {
    v.map_or(default, |c| c.max(1).unsigned_abs())
}

impl ProbeSettings {
    /// Settings of `probe` (period 10 s, timeout 1 s, success 1, failure 3
    /// unless set).
    pub fn from_probe(probe: &Probe) -> Self {
        Self {
            initial_delay: secs(probe.initial_delay_seconds, 0),
            period: secs(probe.period_seconds, 10),
            timeout: secs(probe.timeout_seconds, 1),
            success_threshold: count(probe.success_threshold, 1),
            failure_threshold: count(probe.failure_threshold, 3),
        }
    }
}

/// The published result before any probe ran: readiness starts failed,
/// liveness succeeded, startup unknown (kubelet's `initialValue`).
pub fn initial_result(kind: ProbeKind) -> ProbeResult {
    match kind {
        ProbeKind::Readiness => ProbeResult::Failure,
        ProbeKind::Liveness => ProbeResult::Success,
        ProbeKind::Startup => ProbeResult::Unknown,
    }
}

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
    fn defaults_match_the_api() {
        let s = ProbeSettings::from_probe(&Probe::default());
        assert_eq!(s.period, Duration::from_secs(10));
        assert_eq!(s.timeout, Duration::from_secs(1));
        assert_eq!((s.success_threshold, s.failure_threshold), (1, 3));
        assert_eq!(s.initial_delay, Duration::ZERO);
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
