//! `PodSandboxConfig` from a pod, as kubelet's `generatePodSandboxConfig`:
//! metadata, hostname, log directory, DNS, host ports, labels, the pod cgroup
//! and the namespace options.

use std::path::Path;

use cri::proto;
use k8s_openapi::api::core::v1::Pod;

use super::labels;
use crate::cm::pod_cgroup_name;
use crate::pod_worker::dns::DnsConfig;
use crate::qos::get_pod_qos;

/// `<log-dir>/<namespace>_<name>_<uid>` (kubelet's `BuildPodLogsDirectory`).
pub fn pod_log_dir(log_root: &Path, pod: &Pod) -> std::path::PathBuf {
    let m = &pod.metadata;
    log_root.join(format!(
        "{}_{}_{}",
        m.namespace.as_deref().unwrap_or_default(),
        m.name.as_deref().unwrap_or_default(),
        m.uid.as_deref().unwrap_or_default()
    ))
}

/// The restart count of a container with no status left in the runtime,
/// from its log directory (kubelet's `calcRestartCountByLogDir`): one past
/// the highest `N` of its `N.log` files (rotated `N.log.*` too), else 0, so
/// that a new run neither restarts the count nor appends to an old log.
pub fn restart_count_from_logs(container_log_dir: &Path) -> u32 {
    std::fs::read_dir(container_log_dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| !t.is_dir()))
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let (n, rest) = name.split_once(".log")?;
            (rest.is_empty() || rest.starts_with('.')).then_some(())?;
            n.parse::<u32>().ok()
        })
        .map(|n| n.saturating_add(1))
        .max()
        .unwrap_or(0)
}

/// The log directories of pod `uid` under `log_root` (`<ns>_<name>_<uid>`;
/// the pod's name is not needed, so a pod gone from the API is found too).
pub fn pod_log_dirs_of(log_root: &Path, uid: &str) -> Vec<std::path::PathBuf> {
    if uid.is_empty() {
        return Vec::new();
    }
    std::fs::read_dir(log_root)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_str().and_then(log_dir_uid) == Some(uid))
        .map(|e| e.path())
        .collect()
}

/// The pod UID of a log directory `<namespace>_<name>_<uid>` (UIDs hold no `_`).
pub fn log_dir_uid(name: &str) -> Option<&str> {
    let (_, uid) = name.rsplit_once('_')?;
    (!uid.is_empty()).then_some(uid)
}

/// The pod's hostname and domain (kubelet's `GeneratePodHostNameAndDomain`):
/// `spec.hostname` or the pod name, truncated to 63 characters.
pub fn hostname(pod: &Pod) -> String {
    let spec = pod.spec.as_ref();
    let name = spec
        .and_then(|s| s.hostname.clone())
        .filter(|h| !h.is_empty())
        .or_else(|| pod.metadata.name.clone())
        .unwrap_or_default();
    let mut h: String = name.chars().take(63).collect();
    while h.ends_with(['-', '.']) {
        h.pop();
    }
    h
}

fn port_mappings(pod: &Pod) -> Vec<proto::PortMapping> {
    let spec = pod.spec.clone().unwrap_or_default();
    spec.containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| {
            let host_port = p.host_port.filter(|hp| *hp > 0)?;
            let protocol = match p.protocol.as_deref().unwrap_or("TCP") {
                "UDP" => proto::Protocol::Udp,
                "SCTP" => proto::Protocol::Sctp,
                _ => proto::Protocol::Tcp,
            };
            Some(proto::PortMapping {
                protocol: protocol as i32,
                container_port: p.container_port,
                host_port,
                host_ip: p.host_ip.clone().unwrap_or_default(),
            })
        })
        .collect()
}

fn mode(node: bool) -> i32 {
    if node {
        proto::NamespaceMode::Node as i32
    } else {
        proto::NamespaceMode::Pod as i32
    }
}

/// The sandbox's namespace options (`namespacesForPod`).
pub fn namespace_options(pod: &Pod) -> proto::NamespaceOption {
    let spec = pod.spec.clone().unwrap_or_default();
    let pid = if spec.host_pid == Some(true) {
        proto::NamespaceMode::Node as i32
    } else if spec.share_process_namespace == Some(true) {
        proto::NamespaceMode::Pod as i32
    } else {
        proto::NamespaceMode::Container as i32
    };
    proto::NamespaceOption {
        network: mode(spec.host_network == Some(true)),
        pid,
        ipc: mode(spec.host_ipc == Some(true)),
        ..proto::NamespaceOption::default()
    }
}

/// What a sandbox config is built from besides the pod.
pub struct SandboxInputs<'a> {
    pub log_root: &'a Path,
    pub cgroup_root: &'a str,
    pub dns: &'a DnsConfig,
    pub attempt: u32,
}

/// kubelet's `generatePodSandboxConfig`.
pub fn sandbox_config(pod: &Pod, inputs: &SandboxInputs<'_>) -> proto::PodSandboxConfig {
    let m = &pod.metadata;
    let spec = pod.spec.clone().unwrap_or_default();
    let uid = m.uid.clone().unwrap_or_default();
    let psc = spec.security_context.clone().unwrap_or_default();
    let cgroup = pod_cgroup_name(inputs.cgroup_root, get_pod_qos(pod), &uid);
    proto::PodSandboxConfig {
        metadata: Some(proto::PodSandboxMetadata {
            name: m.name.clone().unwrap_or_default(),
            uid,
            namespace: m.namespace.clone().unwrap_or_default(),
            attempt: inputs.attempt,
        }),
        hostname: hostname(pod),
        log_directory: pod_log_dir(inputs.log_root, pod).display().to_string(),
        dns_config: Some(proto::DnsConfig {
            servers: inputs.dns.servers.clone(),
            searches: inputs.dns.searches.clone(),
            options: inputs.dns.options.clone(),
        }),
        port_mappings: port_mappings(pod),
        labels: labels::pod_labels(pod),
        annotations: m
            .annotations
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect(),
        linux: Some(proto::LinuxPodSandboxConfig {
            cgroup_parent: cgroup.to_cgroupfs(),
            security_context: Some(proto::LinuxSandboxSecurityContext {
                namespace_options: Some(namespace_options(pod)),
                run_as_user: psc.run_as_user.map(|value| proto::Int64Value { value }),
                run_as_group: psc.run_as_group.map(|value| proto::Int64Value { value }),
                supplemental_groups: psc.supplemental_groups.unwrap_or_default(),
                ..proto::LinuxSandboxSecurityContext::default()
            }),
            sysctls: psc
                .sysctls
                .unwrap_or_default()
                .into_iter()
                .map(|s| (s.name, s.value))
                .collect(),
            ..proto::LinuxPodSandboxConfig::default()
        }),
        ..proto::PodSandboxConfig::default()
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{Container, ContainerPort, PodSpec};

    use super::*;

    #[test]
    fn restart_count_continues_after_the_highest_log_file() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(restart_count_from_logs(&dir.path().join("missing")), 0);
        assert_eq!(restart_count_from_logs(dir.path()), 0);
        for f in [
            "0.log",
            "2.log.20261127-010203",
            "x.log",
            "1.logs",
            "10.txt",
        ] {
            std::fs::write(dir.path().join(f), "").unwrap();
        }
        std::fs::create_dir(dir.path().join("7.log")).unwrap();
        assert_eq!(restart_count_from_logs(dir.path()), 3);
    }

    #[test]
    fn a_log_directory_names_its_pod_uid_last() {
        assert_eq!(log_dir_uid("default_web_1234-abcd"), Some("1234-abcd"));
        assert_eq!(log_dir_uid("kube-system_my_pod_uid9"), Some("uid9"));
        assert_eq!(log_dir_uid("nouid"), None);
        assert_eq!(log_dir_uid("ns_name_"), None);
    }

    #[test]
    fn log_dirs_of_a_pod_are_found_by_uid_alone() {
        let root = tempfile::tempdir().unwrap();
        for d in [
            "default_web_u1",
            "kube-system_dns_u1",
            "default_web_u12",
            "default_u1_x",
        ] {
            std::fs::create_dir(root.path().join(d)).unwrap();
        }
        let mut found: Vec<_> = pod_log_dirs_of(root.path(), "u1")
            .into_iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        found.sort();
        assert_eq!(found, ["default_web_u1", "kube-system_dns_u1"]);
        assert!(pod_log_dirs_of(root.path(), "").is_empty());
        assert!(pod_log_dirs_of(&root.path().join("missing"), "u1").is_empty());
    }

    #[test]
    fn sandbox_config_follows_kubelet() {
        let mut p = Pod::default();
        p.metadata.name = Some("web".to_owned());
        p.metadata.namespace = Some("ns".to_owned());
        p.metadata.uid = Some("u1".to_owned());
        p.spec = Some(PodSpec {
            host_network: Some(true),
            containers: vec![Container {
                name: "a".to_owned(),
                ports: Some(vec![
                    ContainerPort {
                        container_port: 80,
                        host_port: Some(8080),
                        ..ContainerPort::default()
                    },
                    ContainerPort {
                        container_port: 81,
                        ..ContainerPort::default()
                    },
                ]),
                ..Container::default()
            }],
            ..PodSpec::default()
        });
        let c = sandbox_config(
            &p,
            &SandboxInputs {
                log_root: Path::new("/var/log/pods"),
                cgroup_root: "/",
                dns: &DnsConfig::default(),
                attempt: 2,
            },
        );
        assert_eq!(c.log_directory, "/var/log/pods/ns_web_u1");
        assert_eq!(c.hostname, "web");
        assert_eq!(c.metadata.unwrap().attempt, 2);
        assert_eq!(c.port_mappings.len(), 1);
        assert_eq!(c.port_mappings[0].host_port, 8080);
        let linux = c.linux.unwrap();
        assert_eq!(linux.cgroup_parent, "/kubepods/besteffort/podu1");
        let ns = linux.security_context.unwrap().namespace_options.unwrap();
        assert_eq!(ns.network, proto::NamespaceMode::Node as i32);
        assert_eq!(ns.pid, proto::NamespaceMode::Container as i32);
    }
}
