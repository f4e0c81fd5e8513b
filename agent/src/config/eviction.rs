//! Hard eviction thresholds (`--eviction-hard`) as kubelet's
//! `eviction.ParseThresholdConfig`; node allocatable subtracts them.

use std::fmt;

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

    fn from_name(name: &str) -> Option<Self> {
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
}
