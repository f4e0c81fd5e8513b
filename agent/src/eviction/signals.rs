//! Eviction signals observed on the node (kubelet's `makeSignalObservations`):
//! memory from /proc/meminfo, the pods cgroup's working set, filesystem
//! bytes and inodes from statfs, and PIDs from /proc. Read by the manager
//! once per monitoring period.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::config::Signal;

/// What one signal measured: how much is left of how much there is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observation {
    pub available: i64,
    pub capacity: i64,
}

/// Every signal observed at one instant; missing signals could not be read.
pub type Observations = BTreeMap<Signal, Observation>;

/// Where the node's signals come from.
pub trait NodeSignals: Send + Sync {
    /// Reads every signal it can; blocking file-system work.
    fn observe(&self) -> Observations;
}

/// Capacity and free space of one file system.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsStats {
    pub bytes: Observation,
    pub inodes: Observation,
}

fn saturate(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// statfs of the file system holding `path`.
pub fn fs_stats(path: &Path) -> Option<FsStats> {
    let s = nix::sys::statvfs::statvfs(path).ok()?;
    let frsize = s.fragment_size();
    Some(FsStats {
        bytes: Observation {
            available: saturate(s.blocks_available().saturating_mul(frsize)),
            capacity: saturate(s.blocks().saturating_mul(frsize)),
        },
        inodes: Observation {
            available: saturate(s.files_free()),
            capacity: saturate(s.files()),
        },
    })
}

/// `memory.available` from /proc/meminfo: capacity is `MemTotal`; the root
/// working set (usage minus inactive file pages) is `MemTotal - MemFree -
/// Inactive(file)`, so available is `MemFree + Inactive(file)` (the value
/// kubelet's cAdvisor root container gives, without needing a root cgroup
/// on this hybrid v1/v2 host).
pub fn memory_from_meminfo(text: &str) -> Option<Observation> {
    let field = |name: &str| {
        text.lines().find_map(|l| {
            let rest = l.strip_prefix(name)?.strip_prefix(':')?;
            rest.split_whitespace().next()?.parse::<u64>().ok()
        })
    };
    let total = field("MemTotal")?.saturating_mul(1024);
    let free = field("MemFree")?.saturating_mul(1024);
    let inactive_file = field("Inactive(file)").unwrap_or(0).saturating_mul(1024);
    Some(Observation {
        available: saturate(free.saturating_add(inactive_file).min(total)),
        capacity: saturate(total),
    })
}

/// The working set of a cgroup directory (v2 `memory.current` or v1
/// `memory.usage_in_bytes`, minus inactive file pages).
pub fn cgroup_working_set(dir: &Path) -> Option<u64> {
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).ok();
    let stat_field = |text: &str, key: &str| {
        text.lines().find_map(|l| {
            let (k, v) = l.split_once(' ')?;
            (k == key).then(|| v.trim().parse::<u64>().ok())?
        })
    };
    if let Some(usage) = read("memory.current").and_then(|s| s.trim().parse::<u64>().ok()) {
        let inactive = read("memory.stat")
            .and_then(|s| stat_field(&s, "inactive_file"))
            .unwrap_or(0);
        return Some(usage.saturating_sub(inactive));
    }
    let usage = read("memory.usage_in_bytes")?.trim().parse::<u64>().ok()?;
    let inactive = read("memory.stat")
        .and_then(|s| stat_field(&s, "total_inactive_file"))
        .unwrap_or(0);
    Some(usage.saturating_sub(inactive))
}

/// `pid.available`: the smaller of `pid_max` and `threads-max` (as
/// kubelet's `pidlimit`) minus the tasks running now (`/proc/loadavg`'s
/// total, the same count as `sysinfo().procs`).
pub fn pids_from_proc(
    pid_max: &str,
    threads_max: Option<&str>,
    loadavg: &str,
) -> Option<Observation> {
    let mut max = pid_max.trim().parse::<i64>().ok()?;
    if let Some(t) = threads_max.and_then(|t| t.trim().parse::<i64>().ok()) {
        max = max.min(t);
    }
    let running = loadavg
        .split_whitespace()
        .nth(3)?
        .split_once('/')?
        .1
        .parse::<i64>()
        .ok()?;
    Some(Observation {
        available: max - running,
        capacity: max,
    })
}

/// The real node: /proc, statfs of the agent's and the runtime's dirs, and
/// the pods cgroup.
pub struct SystemSignals {
    /// `--root-dir`: nodefs.
    pub root_dir: PathBuf,
    /// The runtime's image store: imagefs (the same file system gives the
    /// same values).
    pub image_dir: PathBuf,
    /// The pods cgroup in each hierarchy it may live in.
    pub pods_cgroups: Vec<PathBuf>,
    /// Node allocatable memory in bytes, for `allocatableMemory.available`.
    pub allocatable_memory: Option<i64>,
}

impl NodeSignals for SystemSignals {
    fn observe(&self) -> Observations {
        let mut obs = Observations::new();
        if let Some(m) = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|t| memory_from_meminfo(&t))
        {
            obs.insert(Signal::MemoryAvailable, m);
        }
        if let Some(alloc) = self.allocatable_memory
            && let Some(ws) = self.pods_cgroups.iter().find_map(|d| cgroup_working_set(d))
        {
            obs.insert(
                Signal::AllocatableMemoryAvailable,
                Observation {
                    available: alloc - saturate(ws),
                    capacity: alloc,
                },
            );
        }
        if let Some(fs) = fs_stats(&self.root_dir) {
            obs.insert(Signal::NodeFsAvailable, fs.bytes);
            obs.insert(Signal::NodeFsInodesFree, fs.inodes);
        }
        let image_dir = if self.image_dir.exists() {
            &self.image_dir
        } else {
            &self.root_dir
        };
        if let Some(fs) = fs_stats(image_dir) {
            obs.insert(Signal::ImageFsAvailable, fs.bytes);
            obs.insert(Signal::ImageFsInodesFree, fs.inodes);
            obs.insert(Signal::ContainerFsAvailable, fs.bytes);
            obs.insert(Signal::ContainerFsInodesFree, fs.inodes);
        }
        let read = |p: &str| std::fs::read_to_string(p).ok();
        if let (Some(pid_max), Some(loadavg)) =
            (read("/proc/sys/kernel/pid_max"), read("/proc/loadavg"))
            && let Some(p) = pids_from_proc(
                &pid_max,
                read("/proc/sys/kernel/threads-max").as_deref(),
                &loadavg,
            )
        {
            obs.insert(Signal::PidAvailable, p);
        }
        obs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_available_is_free_plus_inactive_file() {
        let text = "MemTotal:        1000 kB\nMemFree:          200 kB\nMemAvailable:     600 kB\nActive(file):     100 kB\nInactive(file):   300 kB\n";
        assert_eq!(
            memory_from_meminfo(text),
            Some(Observation {
                available: 500 * 1024,
                capacity: 1000 * 1024
            })
        );
    }

    #[test]
    fn pids_use_the_smaller_limit_minus_running_tasks() {
        let o =
            pids_from_proc("4194304\n", Some("1000\n"), "0.00 0.01 0.05 2/250 12345\n").unwrap();
        assert_eq!(o.capacity, 1000);
        assert_eq!(o.available, 750);
    }

    #[test]
    fn cgroup_v2_working_set_drops_inactive_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("memory.current"), "1000\n").unwrap();
        std::fs::write(
            dir.path().join("memory.stat"),
            "anon 600\ninactive_file 300\n",
        )
        .unwrap();
        assert_eq!(cgroup_working_set(dir.path()), Some(700));
    }

    #[test]
    fn statfs_of_a_real_dir_has_space_and_inodes() {
        let dir = tempfile::tempdir().unwrap();
        let fs = fs_stats(dir.path()).unwrap();
        assert!(fs.bytes.capacity > 0);
        assert!(fs.bytes.available <= fs.bytes.capacity);
    }
}
