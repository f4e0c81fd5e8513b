//! Containers: the persisted `ContainerRecord` and its state machine; the OCI spec
//! (`spec`, `user`, `seccomp`), the overlay rootfs (`rootfs`), libcontainer calls
//! (`libct`), log copying (`logs`), tty consoles kept across restarts (`console`),
//! exit watching (`exit`, `taskstats`), stats from cgroup files (`stats`) and
//! exec (`exec`, its process and seccomp filter in `exec_spec`).
pub mod console;
pub mod cpu_rate;
pub mod exec;
pub mod exec_spec;
pub mod exit;
pub mod layer_usage;
pub mod libct;
pub mod logs;
pub mod rootfs;
pub mod seccomp;
pub mod spec;
pub mod stats;
pub mod taskstats;
pub mod user;

use std::path::PathBuf;

use prost::Message;
use serde::{Deserialize, Serialize};

use crate::proto;

/// Container lifecycle state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ContainerState {
    Created,
    Running,
    Exited,
}

impl ContainerState {
    pub fn to_proto(self) -> proto::ContainerState {
        match self {
            Self::Created => proto::ContainerState::ContainerCreated,
            Self::Running => proto::ContainerState::ContainerRunning,
            Self::Exited => proto::ContainerState::ContainerExited,
        }
    }

    /// Only a created container can be started.
    pub fn can_start(self) -> bool {
        self == Self::Created
    }
}

/// Persisted state of one container (`root/containers/<id>.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub id: String,
    pub sandbox_id: String,
    /// prost-encoded `ContainerConfig`, hex.
    pub config: String,
    /// The image as requested.
    pub image_ref: String,
    /// The resolved image id.
    pub image_id: String,
    pub state: ContainerState,
    /// Unix nanoseconds; 0 = not yet.
    pub created_at: i64,
    pub started_at: i64,
    pub finished_at: i64,
    pub exit_code: i32,
    pub reason: String,
    pub message: String,
    /// Host pid of the container init.
    pub pid: i32,
    /// Absolute path of the CRI log file, if any.
    pub log_path: Option<PathBuf>,
    /// cgroups path given to libcontainer.
    pub cgroup_path: String,
    /// Signal from the image's STOPSIGNAL.
    pub stop_signal: Option<String>,
    /// Pid of the process holding a tty container's console (0: none).
    #[serde(default)]
    pub console_holder: i32,
}

impl ContainerRecord {
    /// Decodes the stored `ContainerConfig` (default if unreadable).
    pub fn config(&self) -> proto::ContainerConfig {
        hex::decode(&self.config)
            .ok()
            .and_then(|b| proto::ContainerConfig::decode(b.as_slice()).ok())
            .unwrap_or_default()
    }

    pub fn encode_config(config: &proto::ContainerConfig) -> String {
        hex::encode(config.encode_to_vec())
    }

    /// The container as `ListContainers` reports it.
    pub fn to_proto(&self) -> proto::Container {
        let c = self.config();
        proto::Container {
            id: self.id.clone(),
            pod_sandbox_id: self.sandbox_id.clone(),
            metadata: c.metadata,
            image: Some(proto::ImageSpec {
                image: self.image_ref.clone(),
                ..Default::default()
            }),
            image_ref: self.image_id.clone(),
            state: self.state.to_proto() as i32,
            created_at: self.created_at,
            labels: c.labels,
            annotations: c.annotations,
            image_id: self.image_id.clone(),
        }
    }

    /// The container as `ContainerStatus` reports it.
    pub fn to_status(&self) -> proto::ContainerStatus {
        let c = self.config();
        proto::ContainerStatus {
            id: self.id.clone(),
            metadata: c.metadata,
            state: self.state.to_proto() as i32,
            created_at: self.created_at,
            started_at: self.started_at,
            finished_at: self.finished_at,
            exit_code: self.exit_code,
            image: Some(proto::ImageSpec {
                image: self.image_ref.clone(),
                ..Default::default()
            }),
            image_ref: self.image_id.clone(),
            reason: self.reason.clone(),
            message: self.message.clone(),
            labels: c.labels,
            annotations: c.annotations,
            mounts: c.mounts,
            log_path: self
                .log_path
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            image_id: self.image_id.clone(),
            ..Default::default()
        }
    }
}

/// Exit reason as containerd reports it.
pub fn exit_reason(exit_code: i32, oom_killed: bool) -> &'static str {
    if oom_killed {
        "OOMKilled"
    } else if exit_code == 0 {
        "Completed"
    } else {
        "Error"
    }
}

/// Matches a container against a `ListContainers` filter.
pub fn matches_filter(r: &ContainerRecord, f: &proto::ContainerFilter) -> bool {
    if !f.id.is_empty() && !r.id.starts_with(&f.id) {
        return false;
    }
    if !f.pod_sandbox_id.is_empty() && !r.sandbox_id.starts_with(&f.pod_sandbox_id) {
        return false;
    }
    if let Some(s) = &f.state
        && s.state != r.state.to_proto() as i32
    {
        return false;
    }
    let labels = r.config().labels;
    f.label_selector
        .iter()
        .all(|(k, v)| labels.get(k) == Some(v))
}

/// Current time as unix nanoseconds.
pub fn now_nanos() -> i64 {
    chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_follow_containerd() {
        assert_eq!(exit_reason(0, false), "Completed");
        assert_eq!(exit_reason(1, false), "Error");
        assert_eq!(exit_reason(137, true), "OOMKilled");
    }

    #[test]
    fn only_created_can_start() {
        assert!(ContainerState::Created.can_start());
        assert!(!ContainerState::Running.can_start());
        assert!(!ContainerState::Exited.can_start());
    }
}
