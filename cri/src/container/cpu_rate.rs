//! `usageNanoCores` for ContainerStats: the CPU rate between two samples of
//! a container's cumulative CPU time, as containerd's CRI computes it from
//! the previous sample it keeps per container.

use std::collections::HashMap;
use std::sync::Mutex;

/// Samples closer together than this keep the last rate (too noisy).
const MIN_WINDOW_NANOS: u64 = 1_000_000_000;

#[derive(Debug, Clone, Copy)]
struct Sample {
    time: u64,
    core_nanos: u64,
    rate: Option<u64>,
}

/// The last sample per container id.
#[derive(Debug, Default)]
pub struct CpuRates {
    last: Mutex<HashMap<String, Sample>>,
}

impl CpuRates {
    /// Records `core_nanos` (cumulative CPU time) at `time` (nanoseconds) and
    /// returns the rate in nanocores since the previous sample; `None` on the
    /// first sample.
    pub fn rate(&self, id: &str, time: u64, core_nanos: u64) -> Option<u64> {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let rate = match last.get(id) {
            Some(prev) if time.saturating_sub(prev.time) < MIN_WINDOW_NANOS => return prev.rate,
            Some(prev) if core_nanos >= prev.core_nanos => {
                let cores = u128::from(core_nanos - prev.core_nanos) * 1_000_000_000
                    / u128::from(time - prev.time);
                Some(u64::try_from(cores).unwrap_or(u64::MAX))
            }
            // A restarted container's counter went back: start over.
            _ => None,
        };
        last.insert(
            id.to_owned(),
            Sample {
                time,
                core_nanos,
                rate,
            },
        );
        rate
    }

    /// Drops a removed container's sample.
    pub fn forget(&self, id: &str) {
        self.last
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_is_cpu_time_over_wall_time_between_samples() {
        let rates = CpuRates::default();
        assert_eq!(rates.rate("c", 10_000_000_000, 5_000_000_000), None);
        // 1 s of CPU in 2 s: half a core.
        assert_eq!(
            rates.rate("c", 12_000_000_000, 6_000_000_000),
            Some(500_000_000)
        );
        // Too soon after: the last rate again.
        assert_eq!(
            rates.rate("c", 12_100_000_000, 6_100_000_000),
            Some(500_000_000)
        );
        // The counter went back (restart): no rate until the next sample.
        assert_eq!(rates.rate("c", 14_000_000_000, 1_000), None);
        rates.forget("c");
        assert_eq!(rates.rate("c", 20_000_000_000, 2_000_000_000), None);
    }
}
