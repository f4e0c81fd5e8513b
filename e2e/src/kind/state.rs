//! What a kind cluster has created, written to `<dir>/state.json` before
//! each thing is made, so that `r8s-e2e down` (or the next run) removes a
//! cluster whose owner died, also when it was only partly up. Removal
//! checks every recorded pid against its command line before killing.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::netns;
use super::node::Role;
use crate::cleanup::CgroupRoot;

/// The root of every kind cluster's directory.
pub const BASE_DIR: &str = "/var/lib/r8s-e2e";
const FILE: &str = "state.json";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeState {
    pub name: String,
    pub role: Role,
    pub netns: String,
    pub dir: PathBuf,
    pub cgroup_root: String,
    pub init_pid: Option<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    pub id: String,
    pub dir: PathBuf,
    /// The process holding the cluster (test or `r8s-e2e up` daemon).
    pub owner_pid: u32,
    pub network_netns: String,
    pub nodes: Vec<NodeState>,
    pub registry_pid: Option<u32>,
    /// `https://127.0.0.1:<port>` once the forwarder runs.
    pub api: Option<String>,
    pub kubeconfig: Option<PathBuf>,
}

impl State {
    pub fn path(dir: &Path) -> PathBuf {
        dir.join(FILE)
    }

    pub fn save(&self) -> anyhow::Result<()> {
        let tmp = self.dir.join(format!("{FILE}.tmp"));
        std::fs::write(&tmp, serde_json::to_vec_pretty(self)?)?;
        std::fs::rename(tmp, Self::path(&self.dir))?;
        Ok(())
    }

    pub fn load(dir: &Path) -> anyhow::Result<Self> {
        Ok(serde_json::from_slice(&std::fs::read(Self::path(dir))?)?)
    }

    /// Every cluster recorded under `base`.
    pub fn all(base: &Path) -> Vec<Self> {
        std::fs::read_dir(base)
            .map(|d| {
                d.flatten()
                    .filter_map(|e| Self::load(&e.path()).ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Whether the owner process still runs.
    pub fn owner_alive(&self) -> bool {
        cmdline(self.owner_pid).is_some()
    }

    /// Removes everything recorded (processes, cgroups, namespaces, the
    /// directory). Idempotent, best effort.
    pub fn remove(&self) {
        for node in &self.nodes {
            if let Some(pid) = node.init_pid {
                kill_if(pid, &["node-init", &node.dir.display().to_string()]);
            }
        }
        if let Some(pid) = self.registry_pid {
            kill_if(pid, &["docker-registry", &self.dir.display().to_string()]);
        }
        for node in &self.nodes {
            remove_cgroups(&CgroupRoot(node.cgroup_root.clone()));
            netns::delete(&node.netns);
        }
        netns::delete(&self.network_netns);
        crate::cleanup::unmount_below(&self.dir);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `/proc/<pid>/cmdline` with NULs as spaces; `None` once it is gone (or a
/// zombie).
fn cmdline(pid: u32) -> Option<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    (!raw.is_empty()).then(|| String::from_utf8_lossy(&raw).replace('\0', " "))
}

/// SIGKILLs `pid` if its command line has all of `markers` (so a reused pid
/// is never hit), then waits for it to go.
fn kill_if(pid: u32, markers: &[&str]) {
    let Some(cmd) = cmdline(pid) else { return };
    if !markers.iter().all(|m| cmd.contains(m)) {
        return;
    }
    if let Ok(raw) = i32::try_from(pid) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(raw),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let _ = crate::wait_for("a killed process to exit", Duration::from_secs(10), || {
        cmdline(pid).is_none().then_some(())
    });
}

/// Kills what is left in a node's cgroups and removes them once empty.
pub fn remove_cgroups(root: &CgroupRoot) {
    let _ = crate::wait_for(
        &format!("cgroup {} to be removed", root.0),
        Duration::from_secs(10),
        || {
            root.kill_processes();
            root.remove();
            (!root.exists()).then_some(())
        },
    );
}
