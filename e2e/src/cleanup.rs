//! Removal of everything a node of a test created on the host: container
//! processes (by cgroup), mounts under the test dir, the veths and bridge,
//! the nftables tables (the service proxy's, and the hostPort and masquerade
//! tables named after the bridge), and the cgroups. Best effort and
//! idempotent; runs on drop, also after the node was killed with SIGKILL.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// What one test node may leave behind.
#[derive(Debug, Clone)]
pub struct NodeResources {
    /// Every mount below this directory is removed.
    pub dir: PathBuf,
    pub bridge: String,
    /// The node's cgroup root (e.g. `/r8s-e2e-1234`), in every hierarchy.
    pub cgroup_root: String,
    /// The service proxy's nftables table (family `ip`), which the proxy
    /// leaves in place when it stops, as kube-proxy does.
    pub nft_table: String,
}

fn cgroup_roots() -> Vec<PathBuf> {
    let mut roots: Vec<PathBuf> = std::fs::read_dir("/sys/fs/cgroup")
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| p.is_dir())
                .collect()
        })
        .unwrap_or_default();
    roots.push(PathBuf::from("/sys/fs/cgroup"));
    roots
}

fn walk(dir: &Path, f: &mut dyn FnMut(&Path)) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                walk(&e.path(), f);
            }
        }
    }
    f(dir);
}

/// A cgroup subtree of a test (e.g. `/r8s-e2e-1234`), in every hierarchy.
#[derive(Debug, Clone)]
pub struct CgroupRoot(pub String);

impl CgroupRoot {
    fn dirs(&self) -> Vec<PathBuf> {
        let rel = self.0.trim_start_matches('/');
        if rel.is_empty() {
            // Never touch the root cgroup.
            return Vec::new();
        }
        cgroup_roots()
            .into_iter()
            .map(|r| r.join(rel))
            .filter(|p| p.is_dir())
            .collect()
    }

    /// Whether any hierarchy still has the subtree.
    pub fn exists(&self) -> bool {
        !self.dirs().is_empty()
    }

    /// Kills every process in the subtree.
    pub fn kill_processes(&self) {
        for dir in self.dirs() {
            walk(&dir, &mut |d| {
                let procs = std::fs::read_to_string(d.join("cgroup.procs")).unwrap_or_default();
                for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            });
        }
    }

    /// Removes the subtree's (empty) cgroups, deepest first.
    pub fn remove(&self) {
        for dir in self.dirs() {
            walk(&dir, &mut |d| {
                let _ = std::fs::remove_dir(d);
            });
        }
    }
}

/// Unmounts every host mount below `dir`, deepest first.
pub fn unmount_below(dir: &Path) {
    let base = dir.display().to_string();
    let mut mounts: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_owned))
        .filter(|m| m.starts_with(&base))
        .collect();
    mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for m in mounts {
        let _ = nix::mount::umount2(m.as_str(), nix::mount::MntFlags::MNT_DETACH);
    }
}

impl NodeResources {
    fn cgroups(&self) -> CgroupRoot {
        CgroupRoot(self.cgroup_root.clone())
    }

    /// Kills every process in the node's cgroups.
    pub fn kill_processes(&self) {
        self.cgroups().kill_processes();
    }

    /// Unmounts everything below `dir`, deepest first.
    pub fn unmount(&self) {
        unmount_below(&self.dir);
    }

    /// Deletes the veths on the bridge, then the bridge.
    pub fn delete_links(&self) {
        if let Ok(out) = Command::new("ip")
            .args(["-o", "link", "show", "master", &self.bridge])
            .output()
        {
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                if let Some(name) = line.split(": ").nth(1) {
                    let name = name.split('@').next().unwrap_or(name);
                    let _ = Command::new("ip").args(["link", "del", name]).status();
                }
            }
        }
        if Path::new("/sys/class/net").join(&self.bridge).exists() {
            let _ = Command::new("ip")
                .args(["link", "del", &self.bridge])
                .status();
        }
    }

    /// Deletes the node's nftables tables (the proxy's and its twin, which a
    /// full resync builds beside it: `netproxy::rules::twin_table`; the
    /// runtime's hostPort and the agent's masquerade table, named after the
    /// bridge); only ever tables r8s owns.
    pub fn delete_nft_table(&self) {
        let tables = [
            self.nft_table.clone(),
            format!("{}-b", self.nft_table),
            format!("{}-hostport", self.bridge),
            format!("{}-masq", self.bridge),
        ];
        for table in tables.iter().filter(|t| t.starts_with("r8s")) {
            let listed = Command::new("nft")
                .args(["list", "table", "ip", table])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
            if listed.is_ok_and(|s| s.success()) {
                let _ = Command::new("nft")
                    .args(["delete", "table", "ip", table])
                    .status();
            }
        }
    }

    /// Removes the node's cgroups (after their processes are gone).
    pub fn remove_cgroups(&self) {
        self.cgroups().remove();
    }

    /// Everything, in order.
    pub fn remove_all(&self) {
        self.kill_processes();
        std::thread::sleep(Duration::from_millis(300));
        self.unmount();
        self.delete_links();
        self.delete_nft_table();
        self.remove_cgroups();
    }
}
