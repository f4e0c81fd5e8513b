//! Pod sandboxes without a pause process: namespaces held by bind mounts
//! (`namespaces`), pod files (`files`), and the persisted `SandboxRecord`.
pub mod files;
pub mod namespaces;

use std::path::PathBuf;

use prost::Message;
use serde::{Deserialize, Serialize};

use crate::proto;

/// Sandbox lifecycle state, as the CRI reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SandboxState {
    Ready,
    NotReady,
}

impl SandboxState {
    pub fn to_proto(self) -> proto::PodSandboxState {
        match self {
            Self::Ready => proto::PodSandboxState::SandboxReady,
            Self::NotReady => proto::PodSandboxState::SandboxNotready,
        }
    }
}

/// Persisted state of one sandbox (`root/sandboxes/<id>.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SandboxRecord {
    pub id: String,
    /// prost-encoded `PodSandboxConfig`, hex.
    pub config: String,
    pub runtime_handler: String,
    pub state: SandboxState,
    /// Unix nanoseconds.
    pub created_at: i64,
    pub ip: Option<String>,
    pub host_veth: Option<String>,
    pub netns: Option<PathBuf>,
    pub ipc: Option<PathBuf>,
    pub uts: Option<PathBuf>,
    /// Directory holding hosts, resolv.conf and hostname.
    pub files_dir: PathBuf,
    /// cgroup parent of this pod's containers.
    pub cgroup_parent: String,
    /// Whether r8s-cri created the pod cgroup (and so removes it).
    #[serde(default)]
    pub cgroup_owned: bool,
}

impl SandboxRecord {
    /// Decodes the stored `PodSandboxConfig` (default if unreadable).
    pub fn config(&self) -> proto::PodSandboxConfig {
        hex::decode(&self.config)
            .ok()
            .and_then(|b| proto::PodSandboxConfig::decode(b.as_slice()).ok())
            .unwrap_or_default()
    }

    /// Encodes a `PodSandboxConfig` for storage.
    pub fn encode_config(config: &proto::PodSandboxConfig) -> String {
        hex::encode(config.encode_to_vec())
    }

    /// The sandbox as `ListPodSandbox` reports it.
    pub fn to_proto(&self) -> proto::PodSandbox {
        let c = self.config();
        proto::PodSandbox {
            id: self.id.clone(),
            metadata: c.metadata,
            state: self.state.to_proto() as i32,
            created_at: self.created_at,
            labels: c.labels,
            annotations: c.annotations,
            runtime_handler: self.runtime_handler.clone(),
        }
    }

    /// The sandbox as `PodSandboxStatus` reports it.
    pub fn to_status(&self) -> proto::PodSandboxStatus {
        let c = self.config();
        let ns = c
            .linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref())
            .and_then(|s| s.namespace_options.clone());
        proto::PodSandboxStatus {
            id: self.id.clone(),
            metadata: c.metadata,
            state: self.state.to_proto() as i32,
            created_at: self.created_at,
            network: Some(proto::PodSandboxNetworkStatus {
                ip: self.ip.clone().unwrap_or_default(),
                additional_ips: Vec::new(),
            }),
            linux: Some(proto::LinuxPodSandboxStatus {
                namespaces: Some(proto::Namespace { options: ns }),
            }),
            labels: c.labels,
            annotations: c.annotations,
            runtime_handler: self.runtime_handler.clone(),
        }
    }

    /// Whether the pod uses the node's network namespace.
    pub fn host_network(&self) -> bool {
        host_network(&self.config())
    }
}

/// Namespace options of a pod config (defaults when absent).
pub fn namespace_options(c: &proto::PodSandboxConfig) -> proto::NamespaceOption {
    c.linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.clone())
        .unwrap_or_default()
}

/// Whether a pod config asks for the node's network namespace.
pub fn host_network(c: &proto::PodSandboxConfig) -> bool {
    namespace_options(c).network == proto::NamespaceMode::Node as i32
}

/// Matches a sandbox against a `ListPodSandbox` filter.
pub fn matches_filter(s: &SandboxRecord, f: &proto::PodSandboxFilter) -> bool {
    if !f.id.is_empty() && !s.id.starts_with(&f.id) {
        return false;
    }
    if let Some(st) = &f.state
        && st.state != s.state.to_proto() as i32
    {
        return false;
    }
    let labels = s.config().labels;
    f.label_selector
        .iter()
        .all(|(k, v)| labels.get(k) == Some(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(labels: &[(&str, &str)]) -> SandboxRecord {
        let config = proto::PodSandboxConfig {
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        };
        SandboxRecord {
            id: "abcdef".into(),
            config: SandboxRecord::encode_config(&config),
            runtime_handler: String::new(),
            state: SandboxState::Ready,
            created_at: 1,
            ip: None,
            host_veth: None,
            netns: None,
            ipc: None,
            uts: None,
            files_dir: PathBuf::new(),
            cgroup_parent: String::new(),
            cgroup_owned: false,
        }
    }

    #[test]
    fn filter_matches_id_prefix_state_and_labels() {
        let s = record(&[("app", "web")]);
        let mut f = proto::PodSandboxFilter {
            id: "abc".into(),
            ..Default::default()
        };
        f.label_selector.insert("app".into(), "web".into());
        assert!(matches_filter(&s, &f));
        f.label_selector.insert("app".into(), "db".into());
        assert!(!matches_filter(&s, &f));
        let f = proto::PodSandboxFilter {
            state: Some(proto::PodSandboxStateValue {
                state: proto::PodSandboxState::SandboxNotready as i32,
            }),
            ..Default::default()
        };
        assert!(!matches_filter(&s, &f));
    }
}
