//! Eviction thresholds as kubelet's `eviction.ParseThresholdConfig`:
//! `--eviction-hard` (node allocatable subtracts them), `--eviction-soft`
//! with `--eviction-soft-grace-period`, `--eviction-minimum-reclaim`; the
//! eviction manager (`crate::eviction`) acts on them.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use crate::quantity::ParsedQuantity;

/// An eviction signal kubelet knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Signal {
    MemoryAvailable,
    NodeFsAvailable,
    NodeFsInodesFree,
    ImageFsAvailable,
    ImageFsInodesFree,
    ContainerFsAvailable,
    ContainerFsInodesFree,
    AllocatableMemoryAvailable,
    PidAvailable,
}

impl Signal {
    /// The upstream signal name.
    pub fn as_str(self) -> &'static str {
        match self {
            Signal::MemoryAvailable => "memory.available",
            Signal::NodeFsAvailable => "nodefs.available",
            Signal::NodeFsInodesFree => "nodefs.inodesFree",
            Signal::ImageFsAvailable => "imagefs.available",
            Signal::ImageFsInodesFree => "imagefs.inodesFree",
            Signal::ContainerFsAvailable => "containerfs.available",
            Signal::ContainerFsInodesFree => "containerfs.inodesFree",
            Signal::AllocatableMemoryAvailable => "allocatableMemory.available",
            Signal::PidAvailable => "pid.available",
        }
    }

    /// The signal named `name`, if kubelet knows it.
    pub fn from_name(name: &str) -> Option<Self> {
        [
            Signal::MemoryAvailable,
            Signal::NodeFsAvailable,
            Signal::NodeFsInodesFree,
            Signal::ImageFsAvailable,
            Signal::ImageFsInodesFree,
            Signal::ContainerFsAvailable,
            Signal::ContainerFsInodesFree,
            Signal::AllocatableMemoryAvailable,
            Signal::PidAvailable,
        ]
        .into_iter()
        .find(|s| s.as_str() == name)
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The amount below which a signal triggers eviction.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ThresholdValue {
    Quantity(ParsedQuantity),
    /// A fraction of capacity in `(0, 1)`.
    Percentage(f64),
}

impl ThresholdValue {
    /// The threshold in units of `capacity`, as upstream `GetThresholdQuantity`.
    pub fn amount(&self, capacity: &ParsedQuantity) -> ParsedQuantity {
        match self {
            ThresholdValue::Quantity(q) => *q,
            ThresholdValue::Percentage(p) => ParsedQuantity::from_i64(
                (capacity.value() as f64 * p) as i64,
                crate::quantity::Format::BinarySI,
            ),
        }
    }
}

/// One hard eviction threshold (`signal<value`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Threshold {
    pub signal: Signal,
    pub value: ThresholdValue,
}

/// Why an eviction threshold was rejected; messages are upstream's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvictionError {
    #[error("{0}")]
    Malformed(String),
    #[error("unsupported eviction signal {0}")]
    UnsupportedSignal(String),
    #[error("eviction percentage threshold {0} must be >= 0%: {1}")]
    NegativePercentage(Signal, String),
    #[error("eviction percentage threshold {0} must be <= 100%: {1}")]
    PercentageTooLarge(Signal, String),
    #[error("invalid percentage {0}")]
    BadPercentage(String),
    #[error("eviction threshold {0} must be positive: {1}")]
    NotPositive(Signal, String),
    #[error(transparent)]
    Quantity(#[from] crate::quantity::QuantityError),
}

/// Parses `--eviction-hard` (`memory.available<100Mi,nodefs.available<10%`).
/// `0%` and `100%` disable a signal, as upstream.
pub fn parse_eviction_hard(s: &str) -> Result<Vec<Threshold>, EvictionError> {
    parse_thresholds(s)
}

/// Parses `signal<value` statements (`--eviction-hard`, `--eviction-soft`).
pub fn parse_thresholds(s: &str) -> Result<Vec<Threshold>, EvictionError> {
    let map = super::parse::parse_map(s, '<').map_err(EvictionError::Malformed)?;
    let mut out = Vec::new();
    for (name, val) in map {
        let signal = Signal::from_name(&name)
            .ok_or_else(|| EvictionError::UnsupportedSignal(name.clone()))?;
        if let Some(pct) = val.strip_suffix('%') {
            if val == "0%" || val == "100%" {
                continue;
            }
            let p: f64 = pct
                .parse()
                .map_err(|_| EvictionError::BadPercentage(val.clone()))?;
            let p = p / 100.0;
            if p < 0.0 {
                return Err(EvictionError::NegativePercentage(signal, val));
            }
            if p > 1.0 {
                return Err(EvictionError::PercentageTooLarge(signal, val));
            }
            out.push(Threshold {
                signal,
                value: ThresholdValue::Percentage(p),
            });
            continue;
        }
        let q = ParsedQuantity::parse(&val)?;
        if q.is_negative() || q.is_zero() {
            return Err(EvictionError::NotPositive(signal, q.to_string()));
        }
        out.push(Threshold {
            signal,
            value: ThresholdValue::Quantity(q),
        });
    }
    Ok(out)
}

/// Why `--eviction-soft-grace-period` or `--eviction-minimum-reclaim` was
/// rejected; messages are upstream's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvictionSettingError {
    #[error(transparent)]
    Threshold(#[from] EvictionError),
    #[error("invalid eviction grace period specified: {0}, must be a positive value")]
    NegativeGracePeriod(String),
    #[error("{0}")]
    Duration(String),
    #[error("grace period must be specified for the soft eviction threshold {0}")]
    MissingGracePeriod(Signal),
    #[error("eviction percentage minimum reclaim {0} must be positive: {1}")]
    MinReclaimNotPositive(Signal, String),
    #[error("eviction percentage minimum reclaim {0} must be less than or equal to 100%: {1}")]
    MinReclaimTooLarge(Signal, String),
    #[error("negative eviction minimum reclaim specified for {0}")]
    NegativeMinReclaim(Signal),
}

fn signal(name: &str) -> Result<Signal, EvictionError> {
    Signal::from_name(name).ok_or_else(|| EvictionError::UnsupportedSignal(name.to_owned()))
}

/// Parses `--eviction-soft-grace-period` (`memory.available=1m30s`).
pub fn parse_grace_periods(s: &str) -> Result<BTreeMap<Signal, Duration>, EvictionSettingError> {
    let map = super::parse::parse_map(s, '=').map_err(EvictionError::Malformed)?;
    let mut out = BTreeMap::new();
    for (name, val) in map {
        let signal = signal(&name)?;
        if val.starts_with('-') && val != "-0" {
            return Err(EvictionSettingError::NegativeGracePeriod(val));
        }
        let d = super::parse::parse_go_duration(&val).map_err(EvictionSettingError::Duration)?;
        out.insert(signal, d);
    }
    Ok(out)
}

/// Parses `--eviction-minimum-reclaim` (`memory.available=0Mi,nodefs.available=5%`).
pub fn parse_minimum_reclaims(
    s: &str,
) -> Result<BTreeMap<Signal, ThresholdValue>, EvictionSettingError> {
    let map = super::parse::parse_map(s, '=').map_err(EvictionError::Malformed)?;
    let mut out = BTreeMap::new();
    for (name, val) in map {
        let signal = signal(&name)?;
        if let Some(pct) = val.strip_suffix('%') {
            let p: f64 = pct
                .parse()
                .map_err(|_| EvictionError::BadPercentage(val.clone()))?;
            if p <= 0.0 {
                return Err(EvictionSettingError::MinReclaimNotPositive(signal, val));
            }
            if p > 100.0 {
                return Err(EvictionSettingError::MinReclaimTooLarge(signal, val));
            }
            out.insert(signal, ThresholdValue::Percentage(p / 100.0));
            continue;
        }
        let q = ParsedQuantity::parse(&val).map_err(EvictionError::from)?;
        if q.is_negative() {
            return Err(EvictionSettingError::NegativeMinReclaim(signal));
        }
        out.insert(signal, ThresholdValue::Quantity(q));
    }
    Ok(out)
}

/// Every setting of the eviction manager beyond `--eviction-hard`.
#[derive(Debug, Clone, PartialEq)]
pub struct EvictionSettings {
    /// `--eviction-soft`, each with its `--eviction-soft-grace-period`.
    pub soft: Vec<(Threshold, Duration)>,
    /// `--eviction-minimum-reclaim`.
    pub minimum_reclaim: BTreeMap<Signal, ThresholdValue>,
    /// `--eviction-max-pod-grace-period`: the most a soft eviction waits for a pod.
    pub max_pod_grace_period: i64,
    /// `--eviction-pressure-transition-period`.
    pub pressure_transition_period: Duration,
    /// How often thresholds are checked (kubelet's 10 s `evictionMonitoringPeriod`).
    pub monitoring_period: Duration,
}

impl Default for EvictionSettings {
    fn default() -> Self {
        Self {
            soft: Vec::new(),
            minimum_reclaim: BTreeMap::new(),
            max_pod_grace_period: 0,
            pressure_transition_period: Duration::from_secs(5 * 60),
            monitoring_period: Duration::from_secs(10),
        }
    }
}

/// Pairs soft thresholds with their grace periods as upstream: each needs one.
pub fn soft_thresholds(
    soft: &str,
    grace_periods: &str,
) -> Result<Vec<(Threshold, Duration)>, EvictionSettingError> {
    let thresholds = parse_thresholds(soft)?;
    let periods = parse_grace_periods(grace_periods)?;
    thresholds
        .into_iter()
        .map(|t| {
            periods
                .get(&t.signal)
                .map(|d| (t, *d))
                .ok_or(EvictionSettingError::MissingGracePeriod(t.signal))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_quantity_and_nodefs_percentage_parse() {
        let t = parse_eviction_hard("memory.available<100Mi,nodefs.available<10%").unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].signal, Signal::MemoryAvailable);
        assert_eq!(
            t[0].value,
            ThresholdValue::Quantity(ParsedQuantity::parse("100Mi").unwrap())
        );
        assert_eq!(t[1].signal, Signal::NodeFsAvailable);
        assert_eq!(t[1].value, ThresholdValue::Percentage(0.1));
        let cap = ParsedQuantity::parse("1000").unwrap();
        assert_eq!(t[1].value.amount(&cap).value(), 100);
    }

    #[test]
    fn zero_and_full_percentages_disable_the_signal() {
        assert!(
            parse_eviction_hard("nodefs.available<0%")
                .unwrap()
                .is_empty()
        );
        assert!(
            parse_eviction_hard("memory.available<100%")
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn bad_thresholds_give_kubelet_errors() {
        assert_eq!(
            parse_eviction_hard("disk.available<1Gi")
                .unwrap_err()
                .to_string(),
            "unsupported eviction signal disk.available"
        );
        assert_eq!(
            parse_eviction_hard("memory.available<0")
                .unwrap_err()
                .to_string(),
            "eviction threshold memory.available must be positive: 0"
        );
        assert_eq!(
            parse_eviction_hard("nodefs.available<120%")
                .unwrap_err()
                .to_string(),
            "eviction percentage threshold nodefs.available must be <= 100%: 120%"
        );
        assert_eq!(
            parse_eviction_hard("memory.available=1Gi")
                .unwrap_err()
                .to_string(),
            "malformed pair, expect string<string"
        );
        assert!(parse_eviction_hard("memory.available<1x").is_err());
    }

    #[test]
    fn soft_thresholds_need_a_grace_period() {
        let soft = soft_thresholds("memory.available<1Gi", "memory.available=1m30s").unwrap();
        assert_eq!(soft[0].0.signal, Signal::MemoryAvailable);
        assert_eq!(soft[0].1, Duration::from_secs(90));
        assert_eq!(
            soft_thresholds("memory.available<1Gi", "nodefs.available=1m")
                .unwrap_err()
                .to_string(),
            "grace period must be specified for the soft eviction threshold memory.available"
        );
        assert_eq!(
            parse_grace_periods("memory.available=-1s")
                .unwrap_err()
                .to_string(),
            "invalid eviction grace period specified: -1s, must be a positive value"
        );
    }

    #[test]
    fn minimum_reclaims_take_quantities_and_percentages() {
        let m = parse_minimum_reclaims("memory.available=0Mi,nodefs.available=5%").unwrap();
        assert_eq!(
            m[&Signal::MemoryAvailable],
            ThresholdValue::Quantity(ParsedQuantity::parse("0").unwrap())
        );
        assert_eq!(
            m[&Signal::NodeFsAvailable],
            ThresholdValue::Percentage(0.05)
        );
        assert_eq!(
            parse_minimum_reclaims("nodefs.available=0%")
                .unwrap_err()
                .to_string(),
            "eviction percentage minimum reclaim nodefs.available must be positive: 0%"
        );
        assert_eq!(
            parse_minimum_reclaims("memory.available=-1Mi")
                .unwrap_err()
                .to_string(),
            "negative eviction minimum reclaim specified for memory.available"
        );
    }
}
