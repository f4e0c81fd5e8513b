//! Which thresholds are met (kubelet's `thresholdsMet`,
//! `thresholdsFirstObservedAt`, `thresholdsMetGracePeriod`): a threshold
//! is met when its quantity exceeds what is available; once met it stays
//! met until the minimum reclaim is also available; a soft threshold acts
//! only after it was met for its grace period. No I/O.

use std::time::Duration;

use tokio::time::Instant;

use super::signals::{Observation, Observations};
use crate::config::{Config, Signal, ThresholdValue};
use crate::quantity::{Format, ParsedQuantity};

/// One hard or soft threshold with its minimum reclaim.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EvictionThreshold {
    pub signal: Signal,
    pub value: ThresholdValue,
    /// `None` for a hard threshold.
    pub grace_period: Option<Duration>,
    pub min_reclaim: Option<ThresholdValue>,
}

impl EvictionThreshold {
    pub fn is_hard(&self) -> bool {
        self.grace_period.is_none()
    }

    /// The threshold as a quantity for `capacity` (upstream
    /// `GetThresholdQuantity`), printed in eviction messages.
    pub fn quantity(&self, capacity: i64) -> ParsedQuantity {
        value_quantity(&self.value, capacity)
    }
}

fn value_quantity(value: &ThresholdValue, capacity: i64) -> ParsedQuantity {
    match value {
        ThresholdValue::Quantity(q) => *q,
        ThresholdValue::Percentage(p) => {
            ParsedQuantity::from_i64((capacity as f64 * p) as i64, Format::BinarySI)
        }
    }
}

/// Hard thresholds, then soft ones, each with its minimum reclaim (upstream
/// `ParseThresholdConfig`).
pub fn from_config(config: &Config) -> Vec<EvictionThreshold> {
    let min_reclaim = |s: Signal| config.eviction.minimum_reclaim.get(&s).copied();
    let hard = config.eviction_hard.iter().map(|t| EvictionThreshold {
        signal: t.signal,
        value: t.value,
        grace_period: None,
        min_reclaim: min_reclaim(t.signal),
    });
    let soft = config.eviction.soft.iter().map(|(t, g)| EvictionThreshold {
        signal: t.signal,
        value: t.value,
        grace_period: Some(*g),
        min_reclaim: min_reclaim(t.signal),
    });
    hard.chain(soft).collect()
}

fn is_met(t: &EvictionThreshold, o: &Observation, enforce_min_reclaim: bool) -> bool {
    let mut quantity = t.quantity(o.capacity).value();
    if enforce_min_reclaim && let Some(r) = &t.min_reclaim {
        quantity = quantity.saturating_add(value_quantity(r, o.capacity).value());
    }
    quantity > o.available
}

/// The thresholds met by `observations` (upstream `thresholdsMet`).
pub fn thresholds_met(
    thresholds: &[EvictionThreshold],
    observations: &Observations,
    enforce_min_reclaim: bool,
) -> Vec<EvictionThreshold> {
    thresholds
        .iter()
        .filter(|t| {
            observations
                .get(&t.signal)
                .is_some_and(|o| is_met(t, o, enforce_min_reclaim))
        })
        .copied()
        .collect()
}

/// Remembers when each met threshold was first seen.
#[derive(Debug, Default)]
pub struct ThresholdTracker {
    first_observed: Vec<(EvictionThreshold, Instant)>,
    /// The thresholds acted on at the last synchronize.
    pub met: Vec<EvictionThreshold>,
}

impl ThresholdTracker {
    /// One observation round: returns every threshold met now (for node
    /// conditions) and those past their grace period (to act on).
    pub fn observe(
        &mut self,
        thresholds: &[EvictionThreshold],
        observations: &Observations,
        now: Instant,
    ) -> (Vec<EvictionThreshold>, Vec<EvictionThreshold>) {
        let mut met = thresholds_met(thresholds, observations, false);
        for t in thresholds_met(&self.met, observations, true) {
            if !met.contains(&t) {
                met.push(t);
            }
        }
        self.first_observed = met
            .iter()
            .map(|t| {
                let since = self
                    .first_observed
                    .iter()
                    .find(|(o, _)| o == t)
                    .map_or(now, |(_, at)| *at);
                (*t, since)
            })
            .collect();
        let actionable: Vec<EvictionThreshold> = self
            .first_observed
            .iter()
            .filter(|(t, since)| {
                t.grace_period
                    .is_none_or(|g| now.saturating_duration_since(*since) >= g)
            })
            .map(|(t, _)| *t)
            .collect();
        self.met = actionable.clone();
        (met, actionable)
    }
}

/// The threshold to reclaim first (upstream `byEvictionPriority`): memory
/// signals, then the others in configuration order.
pub fn to_reclaim(thresholds: &[EvictionThreshold]) -> Option<EvictionThreshold> {
    thresholds
        .iter()
        .find(|t| {
            matches!(
                t.signal,
                Signal::MemoryAvailable | Signal::AllocatableMemoryAvailable
            )
        })
        .or_else(|| thresholds.first())
        .copied()
}

/// The observation of each signal, for the messages.
pub fn observed_quantity(signal: Signal, o: &Observation) -> ParsedQuantity {
    let format = match signal {
        Signal::NodeFsInodesFree
        | Signal::ImageFsInodesFree
        | Signal::ContainerFsInodesFree
        | Signal::PidAvailable => Format::DecimalSI,
        _ => Format::BinarySI,
    };
    ParsedQuantity::from_i64(o.available, format)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hard(signal: Signal, value: ThresholdValue) -> EvictionThreshold {
        EvictionThreshold {
            signal,
            value,
            grace_period: None,
            min_reclaim: None,
        }
    }

    fn q(s: &str) -> ThresholdValue {
        ThresholdValue::Quantity(ParsedQuantity::parse(s).unwrap())
    }

    fn obs(signal: Signal, available: i64, capacity: i64) -> Observations {
        Observations::from([(
            signal,
            Observation {
                available,
                capacity,
            },
        )])
    }

    #[test]
    fn quantity_threshold_is_met_below_the_quantity() {
        let t = [hard(Signal::MemoryAvailable, q("100Mi"))];
        assert_eq!(
            thresholds_met(&t, &obs(Signal::MemoryAvailable, 50 << 20, 1 << 30), false).len(),
            1
        );
        assert!(
            thresholds_met(&t, &obs(Signal::MemoryAvailable, 100 << 20, 1 << 30), false).is_empty()
        );
        assert!(thresholds_met(&t, &Observations::new(), false).is_empty());
    }

    #[test]
    fn percentage_threshold_is_a_share_of_capacity() {
        let t = [hard(
            Signal::NodeFsAvailable,
            ThresholdValue::Percentage(0.1),
        )];
        assert_eq!(t[0].quantity(1000).value(), 100);
        assert_eq!(
            thresholds_met(&t, &obs(Signal::NodeFsAvailable, 99, 1000), false).len(),
            1
        );
        assert!(thresholds_met(&t, &obs(Signal::NodeFsAvailable, 100, 1000), false).is_empty());
    }

    #[test]
    fn met_threshold_stays_met_until_the_minimum_reclaim_is_free() {
        let mut t = hard(Signal::MemoryAvailable, q("100"));
        t.min_reclaim = Some(q("50"));
        let mut tracker = ThresholdTracker::default();
        let now = Instant::now();
        let (met, act) = tracker.observe(&[t], &obs(Signal::MemoryAvailable, 90, 1000), now);
        assert_eq!((met.len(), act.len()), (1, 1));
        let (met, _) = tracker.observe(&[t], &obs(Signal::MemoryAvailable, 120, 1000), now);
        assert_eq!(met.len(), 1, "120 < 100 + 50: still reclaiming");
        let (met, act) = tracker.observe(&[t], &obs(Signal::MemoryAvailable, 160, 1000), now);
        assert!(met.is_empty() && act.is_empty());
    }

    #[test]
    fn soft_threshold_acts_only_after_its_grace_period() {
        let mut t = hard(Signal::MemoryAvailable, q("100"));
        t.grace_period = Some(Duration::from_secs(30));
        let mut tracker = ThresholdTracker::default();
        let start = Instant::now();
        let o = obs(Signal::MemoryAvailable, 10, 1000);
        let (met, act) = tracker.observe(&[t], &o, start);
        assert_eq!(met.len(), 1, "pressure shows at once");
        assert!(act.is_empty());
        let (_, act) = tracker.observe(&[t], &o, start + Duration::from_secs(29));
        assert!(act.is_empty());
        let (_, act) = tracker.observe(&[t], &o, start + Duration::from_secs(30));
        assert_eq!(act.len(), 1);
        // Recovery resets the clock.
        tracker.observe(&[t], &obs(Signal::MemoryAvailable, 500, 1000), start);
        let (_, act) = tracker.observe(&[t], &o, start + Duration::from_secs(40));
        assert!(act.is_empty());
    }

    #[test]
    fn memory_is_reclaimed_before_disk() {
        let disk = hard(Signal::NodeFsAvailable, q("1"));
        let mem = hard(Signal::MemoryAvailable, q("1"));
        assert_eq!(to_reclaim(&[disk, mem]), Some(mem));
        assert_eq!(to_reclaim(&[disk]), Some(disk));
        assert_eq!(to_reclaim(&[]), None);
    }
}
