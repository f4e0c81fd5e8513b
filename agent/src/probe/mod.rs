//! Container probes (kubelet's `prober`): the settings of a probe and its
//! threshold state machine (`tracker`), the probe handlers resolved against
//! the pod (`target`) and run over exec, HTTP, TCP or gRPC (`run`), one task
//! per (container, probe kind) (`worker`), and the `manager` the runtime asks
//! whether a container is started, ready or has to be restarted.

pub mod exec;
pub mod grpc;
pub mod http;
pub mod manager;
pub mod run;
pub mod target;
pub mod tcp;
pub mod tracker;
mod worker;

use std::time::Duration;

use k8s_openapi::api::core::v1::Probe;

pub use exec::{ContainerExec, ExecError, ExecOutput};
pub use manager::{ContainerTarget, ProbeEvents, ProbeManager};
pub use run::Outcome;
pub use target::{ProbeAction, TargetError};
pub use tracker::ProbeTracker;

/// Which probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProbeKind {
    Liveness,
    Readiness,
    Startup,
}

impl ProbeKind {
    /// Every kind, startup first.
    pub const ALL: [ProbeKind; 3] = [Self::Startup, Self::Liveness, Self::Readiness];

    /// The word kubelet's events use (`Liveness probe failed: ...`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Liveness => "Liveness",
            Self::Readiness => "Readiness",
            Self::Startup => "Startup",
        }
    }

    /// This kind's probe of a container, if it has one.
    pub fn of(self, c: &k8s_openapi::api::core::v1::Container) -> Option<&Probe> {
        match self {
            Self::Liveness => c.liveness_probe.as_ref(),
            Self::Readiness => c.readiness_probe.as_ref(),
            Self::Startup => c.startup_probe.as_ref(),
        }
    }
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
    /// The probe-level `terminationGracePeriodSeconds` (liveness/startup).
    pub termination_grace_period: Option<i64>,
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
            period: secs(probe.period_seconds, 10).max(Duration::from_secs(1)),
            timeout: secs(probe.timeout_seconds, 1).max(Duration::from_secs(1)),
            success_threshold: count(probe.success_threshold, 1),
            failure_threshold: count(probe.failure_threshold, 3),
            termination_grace_period: probe.termination_grace_period_seconds,
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

/// `kube-probe/<major>.<minor>`, the User-Agent of HTTP probes.
pub fn user_agent() -> String {
    let v = crate::node::object::KUBELET_VERSION.trim_start_matches('v');
    let mut parts = v.split(['.', '-']);
    let major = parts.next().unwrap_or("1");
    let minor = parts.next().unwrap_or("0");
    format!("kube-probe/{major}.{minor}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_api() {
        let s = ProbeSettings::from_probe(&Probe::default());
        assert_eq!(s.period, Duration::from_secs(10));
        assert_eq!(s.timeout, Duration::from_secs(1));
        assert_eq!((s.success_threshold, s.failure_threshold), (1, 3));
        assert_eq!(s.initial_delay, Duration::ZERO);
    }

    #[test]
    fn user_agent_carries_major_and_minor() {
        assert_eq!(user_agent(), "kube-probe/1.32");
    }
}
