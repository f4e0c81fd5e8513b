//! Writable-layer usage of containers (a `du` walk of the overlay upper dir),
//! measured at most once per `MAX_AGE` per container, as containerd's CRI
//! refreshes snapshot usage every 10 s (`stats_collect_period`): the agent's
//! eviction rounds, `/stats/summary` and `/metrics/resource` share one walk.
use std::collections::HashMap;
use std::path::PathBuf;
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

    /// The usage of each container `(id, upper dir)`, walking only the dirs
    /// whose last measurement is older than the maximum age. Blocking.
    pub fn usage(&self, dirs: Vec<(String, PathBuf)>) -> Vec<(String, Measured)> {
        dirs.into_iter()
            .map(|(id, dir)| {
                let fresh = self
                    .lock()
                    .get(&id)
                    .filter(|m| m.taken.elapsed() < self.max_age)
                    .copied();
                let m = fresh.unwrap_or_else(|| {
                    let m = Measured {
                        usage: fs_usage::dir_usage(&dir),
                        at_nanos: super::now_nanos(),
                        taken: Instant::now(),
                    };
                    self.lock().insert(id.clone(), m);
                    m
                });
                (id, m)
            })
            .collect()
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
        let dirs = || vec![("c1".to_string(), dir.path().to_path_buf())];

        let cached = LayerUsage::new(Duration::from_secs(3600));
        let first = cached.usage(dirs())[0].1;
        std::fs::write(dir.path().join("b"), vec![1u8; 8192]).unwrap();
        let again = cached.usage(dirs())[0].1;
        assert_eq!(again.usage, first.usage, "served from the cache");
        assert_eq!(again.at_nanos, first.at_nanos);
        cached.forget("c1");
        let after_forget = cached.usage(dirs())[0].1;
        assert_eq!(after_forget.usage.inodes, first.usage.inodes + 1);

        let uncached = LayerUsage::new(Duration::ZERO);
        let a = uncached.usage(dirs())[0].1;
        std::fs::write(dir.path().join("c"), vec![1u8; 8192]).unwrap();
        let b = uncached.usage(dirs())[0].1;
        assert_eq!(b.usage.inodes, a.usage.inodes + 1);
        assert!(b.usage.bytes > a.usage.bytes);
    }
}
