//! Container stats and OOM detection from cgroup files, for cgroup v1 (and hybrid)
//! and v2 hosts; plus removal of cgroup directories libcgroups leaves behind.
use std::path::{Path, PathBuf};

const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Whether the host uses the unified (v2-only) hierarchy.
pub fn is_unified() -> bool {
    Path::new(CGROUP_ROOT).join("cgroup.controllers").exists()
}

fn rel(path: &str) -> &str {
    path.trim_start_matches('/')
}

fn v1(controller: &str, path: &str, file: &str) -> PathBuf {
    Path::new(CGROUP_ROOT)
        .join(controller)
        .join(rel(path))
        .join(file)
}

fn v2(path: &str, file: &str) -> PathBuf {
    Path::new(CGROUP_ROOT).join(rel(path)).join(file)
}

fn read_u64(p: &Path) -> Option<u64> {
    std::fs::read_to_string(p).ok()?.trim().parse().ok()
}

fn keyed(p: &Path, key: &str) -> Option<u64> {
    std::fs::read_to_string(p)
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse().ok())
}

/// A sample of a cgroup's usage.
#[derive(Debug, Default, Clone, Copy)]
pub struct Usage {
    pub cpu_usage_nanos: u64,
    pub memory_usage_bytes: u64,
    pub working_set_bytes: u64,
}

/// Reads the usage of the cgroup at `path` (missing files read as zero).
pub fn usage(path: &str) -> Usage {
    if is_unified() {
        let mem = read_u64(&v2(path, "memory.current")).unwrap_or(0);
        let inactive = keyed(&v2(path, "memory.stat"), "inactive_file").unwrap_or(0);
        Usage {
            cpu_usage_nanos: keyed(&v2(path, "cpu.stat"), "usage_usec").unwrap_or(0) * 1000,
            memory_usage_bytes: mem,
            working_set_bytes: mem.saturating_sub(inactive),
        }
    } else {
        let mem = read_u64(&v1("memory", path, "memory.usage_in_bytes")).unwrap_or(0);
        let inactive =
            keyed(&v1("memory", path, "memory.stat"), "total_inactive_file").unwrap_or(0);
        Usage {
            cpu_usage_nanos: read_u64(&v1("cpuacct", path, "cpuacct.usage")).unwrap_or(0),
            memory_usage_bytes: mem,
            working_set_bytes: mem.saturating_sub(inactive),
        }
    }
}

/// Number of OOM kills in the cgroup (read before the cgroup is deleted).
pub fn oom_kills(path: &str) -> u64 {
    if is_unified() {
        keyed(&v2(path, "memory.events"), "oom_kill").unwrap_or(0)
    } else {
        keyed(&v1("memory", path, "memory.oom_control"), "oom_kill").unwrap_or(0)
    }
}

/// The hierarchy roots: the unified root on v2, every v1 controller otherwise.
fn hierarchies() -> Vec<PathBuf> {
    let mut roots = vec![PathBuf::from(CGROUP_ROOT)];
    if !is_unified()
        && let Ok(entries) = std::fs::read_dir(CGROUP_ROOT)
    {
        roots.extend(entries.flatten().map(|e| e.path()).filter(|p| p.is_dir()));
        roots.remove(0);
    }
    roots
}

/// SIGKILLs every process in the cgroup at `path` (in any hierarchy); returns
/// their pids. Frees a container init stuck while being created.
pub fn kill_all(path: &str) -> Vec<i32> {
    if rel(path).is_empty() {
        return Vec::new();
    }
    let mut pids: Vec<i32> = hierarchies()
        .iter()
        .filter_map(|root| std::fs::read_to_string(root.join(rel(path)).join("cgroup.procs")).ok())
        .flat_map(|procs| {
            procs
                .lines()
                .filter_map(|l| l.trim().parse().ok())
                .collect::<Vec<i32>>()
        })
        .collect();
    pids.sort_unstable();
    pids.dedup();
    for pid in &pids {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(*pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    pids
}

/// Removes the cgroup at `path` (and any child cgroups) in every hierarchy.
pub fn remove(path: &str) {
    for root in hierarchies() {
        let dir = root.join(rel(path));
        if rel(path).is_empty() || !dir.is_dir() {
            continue;
        }
        remove_tree(&dir);
    }
}

fn remove_tree(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&e.path());
            }
        }
    }
    if let Err(err) = std::fs::remove_dir(dir)
        && err.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(path = %dir.display(), ?err, "failed to remove cgroup");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_reads_named_counter() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("memory.oom_control");
        std::fs::write(&p, "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n").unwrap();
        assert_eq!(keyed(&p, "oom_kill"), Some(2));
        assert_eq!(keyed(&p, "missing"), None);
    }
}
