//! Writable-layer usage of containers (a `du` walk of the overlay upper dir),
//! measured at most once per `MAX_AGE` per container, as containerd's CRI
//! refreshes snapshot usage every 10 s (`stats_collect_period`): the agent's
//! eviction rounds, `/stats/summary` and `/metrics/resource` share one walk.
use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::fs_usage::{self, DirUsage};

/// How long a measurement is served again.
pub const MAX_AGE: Duration = Duration::from_secs(10);

/// One measurement of a writable layer.
#[derive(Debug, Clone, Copy)]
pub struct Measured {
    pub usage: DirUsage,
    /// When it was taken (Unix nanoseconds), the stats' timestamp.
    pub at_nanos: i64,
    taken: Instant,
}

/// The last measurement of each container's writable layer.
#[derive(Debug)]
pub struct LayerUsage {
    max_age: Duration,
    cache: Mutex<HashMap<String, Measured>>,
}

impl Default for LayerUsage {
    fn default() -> Self {
        Self::new(MAX_AGE)
    }
}

impl LayerUsage {
    pub fn new(max_age: Duration) -> Self {
        Self {
            max_age,
            cache: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Measured>> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The usage of container `id`'s writable layer `upper`, walked only when
    /// its last measurement is older than the maximum age. Blocking.
    pub fn measure(&self, id: &str, upper: &Path) -> Measured {
        let fresh = self
            .lock()
            .get(id)
            .filter(|m| m.taken.elapsed() < self.max_age)
            .copied();
        fresh.unwrap_or_else(|| {
            let m = Measured {
                usage: fs_usage::dir_usage(upper),
                at_nanos: super::now_nanos(),
                taken: Instant::now(),
            };
            self.lock().insert(id.to_owned(), m);
            m
        })
    }

    /// Drops a removed container's measurement.
    pub fn forget(&self, id: &str) {
        self.lock().remove(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_layer_is_walked_again_only_after_the_maximum_age() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), vec![1u8; 8192]).unwrap();

        let cached = LayerUsage::new(Duration::from_secs(3600));
        let first = cached.measure("c1", dir.path());
        std::fs::write(dir.path().join("b"), vec![1u8; 8192]).unwrap();
        let again = cached.measure("c1", dir.path());
        assert_eq!(again.usage, first.usage, "served from the cache");
        assert_eq!(again.at_nanos, first.at_nanos);
        cached.forget("c1");
        let after_forget = cached.measure("c1", dir.path());
        assert_eq!(after_forget.usage.inodes, first.usage.inodes + 1);

        let uncached = LayerUsage::new(Duration::ZERO);
        let a = uncached.measure("c1", dir.path());
        std::fs::write(dir.path().join("c"), vec![1u8; 8192]).unwrap();
        let b = uncached.measure("c1", dir.path());
        assert_eq!(b.usage.inodes, a.usage.inodes + 1);
        assert!(b.usage.bytes > a.usage.bytes);
    }
}
