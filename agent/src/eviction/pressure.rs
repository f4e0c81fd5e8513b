//! Node pressure conditions from met thresholds (kubelet's `nodeConditions`,
//! `nodeConditionsLastObservedAt`, `nodeConditionsObservedSince`): a
//! condition stays on until no threshold has held it for
//! `--eviction-pressure-transition-period`. No I/O.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use tokio::time::Instant;

use super::thresholds::EvictionThreshold;
use crate::config::Signal;
use crate::node::NodeHealth;

/// A node pressure condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Pressure {
    Memory,
    Disk,
    Pid,
}

impl Pressure {
    /// The node condition type.
    pub fn as_str(self) -> &'static str {
        match self {
            Pressure::Memory => "MemoryPressure",
            Pressure::Disk => "DiskPressure",
            Pressure::Pid => "PIDPressure",
        }
    }

    /// The condition a signal's threshold sets (upstream `signalToNodeCondition`).
    pub fn of(signal: Signal) -> Self {
        match signal {
            Signal::MemoryAvailable | Signal::AllocatableMemoryAvailable => Pressure::Memory,
            Signal::PidAvailable => Pressure::Pid,
            Signal::NodeFsAvailable
            | Signal::NodeFsInodesFree
            | Signal::ImageFsAvailable
            | Signal::ImageFsInodesFree
            | Signal::ContainerFsAvailable
            | Signal::ContainerFsInodesFree => Pressure::Disk,
        }
    }
}

impl fmt::Display for Pressure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The conditions on now, in a stable order.
pub type Conditions = Vec<Pressure>;

/// Sets the pressure flags of `health` to `conditions`; true when changed.
pub fn apply_to_health(health: &mut NodeHealth, conditions: &[Pressure]) -> bool {
    let before = health.clone();
    health.memory_pressure = conditions.contains(&Pressure::Memory);
    health.disk_pressure = conditions.contains(&Pressure::Disk);
    health.pid_pressure = conditions.contains(&Pressure::Pid);
    *health != before
}

/// When each condition was last held by a met threshold.
#[derive(Debug, Default)]
pub struct PressureTracker {
    last_observed: BTreeMap<Pressure, Instant>,
}

impl PressureTracker {
    /// The conditions on at `now` given the thresholds met now.
    pub fn observe(
        &mut self,
        met: &[EvictionThreshold],
        transition_period: Duration,
        now: Instant,
    ) -> Conditions {
        for t in met {
            self.last_observed.insert(Pressure::of(t.signal), now);
        }
        self.last_observed
            .retain(|_, at| now.saturating_duration_since(*at) < transition_period);
        self.last_observed.keys().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ThresholdValue;

    fn met(signal: Signal) -> EvictionThreshold {
        EvictionThreshold {
            signal,
            value: ThresholdValue::Percentage(0.5),
            grace_period: None,
            min_reclaim: None,
        }
    }

    #[test]
    fn condition_stays_for_the_transition_period_after_recovery() {
        let mut p = PressureTracker::default();
        let period = Duration::from_secs(300);
        let t0 = Instant::now();
        assert_eq!(
            p.observe(&[met(Signal::NodeFsInodesFree)], period, t0),
            vec![Pressure::Disk]
        );
        assert_eq!(
            p.observe(&[], period, t0 + Duration::from_secs(299)),
            vec![Pressure::Disk]
        );
        assert!(
            p.observe(&[], period, t0 + Duration::from_secs(300))
                .is_empty()
        );
    }

    #[test]
    fn signals_map_to_upstream_conditions() {
        let mut p = PressureTracker::default();
        let now = Instant::now();
        let c = p.observe(
            &[
                met(Signal::PidAvailable),
                met(Signal::AllocatableMemoryAvailable),
                met(Signal::ImageFsAvailable),
            ],
            Duration::from_secs(1),
            now,
        );
        assert_eq!(c, vec![Pressure::Memory, Pressure::Disk, Pressure::Pid]);
        let mut h = NodeHealth::default();
        assert!(apply_to_health(&mut h, &c));
        assert!(h.memory_pressure && h.disk_pressure && h.pid_pressure);
        assert!(!apply_to_health(&mut h, &c));
    }
}
