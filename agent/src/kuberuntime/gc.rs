//! Dead container garbage collection, as kubelet's `containerGC`
//! (pkg/kubelet/kuberuntime/kuberuntime_gc.go) in the form the eviction
//! manager runs before it evicts pods for disk (`DeleteAllUnusedContainers`):
//! every container that is not running goes, with its log files, except the
//! newest one of each container name of a pod that still runs; then every
//! sandbox that is neither ready nor holds a container, all of them for pods
//! that no longer run, all but the newest for the others. What goes is
//! decided by pure functions (`containers_to_remove`, `sandboxes_to_remove`);
//! removal goes through CRI only, so containerd's containers go the same way.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use cri::client::CriClient;
use cri::proto;
use k8s_openapi::api::core::v1::Pod;

use super::{MIN_GRACE_PERIOD_SECONDS, labels};
use crate::pod_worker::static_pods::CONFIG_MIRROR_ANNOTATION;

/// Dead containers kept per container name of a pod that still runs:
/// kubelet's `--maximum-dead-containers-per-container` default. Its other
/// limits default to nothing to enforce (`--minimum-container-ttl-duration`
/// 0, `--maximum-dead-containers` -1).
pub const MAX_DEAD_PER_CONTAINER: usize = 1;

/// Which pods still run on the node (kubelet's pod workers'
/// `ShouldPodRuntimeBeRemoved`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodStates {
    /// The node's pods could not be read (kubelet's sources not ready):
    /// every pod counts as running.
    Unknown,
    /// UIDs of the pods bound to the node that are neither Succeeded nor
    /// Failed; everything of any other pod (terminated, deleted, unknown)
    /// may go.
    Running(HashSet<String>),
}

impl PodStates {
    /// From the pods bound to the node. A mirror pod stands for its static
    /// pod, whose runtime objects carry the config hash as pod UID.
    pub fn from_pods(pods: &[Pod]) -> Self {
        let running = pods
            .iter()
            .filter(|p| {
                let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
                !matches!(phase, Some("Succeeded" | "Failed"))
            })
            .flat_map(|p| {
                let mirror_of = p
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(CONFIG_MIRROR_ANNOTATION));
                p.metadata.uid.iter().chain(mirror_of).cloned()
            })
            .collect();
        PodStates::Running(running)
    }

    /// Whether every container and sandbox of pod `uid` may go.
    pub fn runtime_removable(&self, uid: &str) -> bool {
        match self {
            PodStates::Unknown => false,
            PodStates::Running(uids) => !uids.contains(uid),
        }
    }
}

/// The pod of a runtime object kubelet made; objects without one are not
/// ours and never touched.
pub(super) fn pod_uid(labels: &HashMap<String, String>) -> Option<&str> {
    labels
        .get(labels::POD_UID)
        .map(String::as_str)
        .filter(|u| !u.is_empty())
}

fn container_name(c: &proto::Container) -> &str {
    c.labels
        .get(labels::CONTAINER_NAME)
        .map(String::as_str)
        .or_else(|| c.metadata.as_ref().map(|m| m.name.as_str()))
        .unwrap_or_default()
}

/// The containers to remove (kubelet's `evictContainers` with
/// `evictNonDeletedPods`): those not running, grouped by pod and container
/// name; all of a pod that no longer runs, all but the newest of the others.
pub fn containers_to_remove<'a>(
    containers: &'a [proto::Container],
    pods: &PodStates,
) -> Vec<&'a proto::Container> {
    let running = proto::ContainerState::ContainerRunning as i32;
    let mut units: BTreeMap<(&str, &str), Vec<&proto::Container>> = BTreeMap::new();
    for c in containers.iter().filter(|c| c.state != running) {
        if let Some(uid) = pod_uid(&c.labels) {
            units.entry((uid, container_name(c))).or_default().push(c);
        }
    }
    let mut out = Vec::new();
    for ((uid, _), mut unit) in units {
        unit.sort_by_key(|c| std::cmp::Reverse(c.created_at));
        let keep = if pods.runtime_removable(uid) {
            0
        } else {
            MAX_DEAD_PER_CONTAINER
        };
        out.extend(unit.into_iter().skip(keep));
    }
    out
}

/// The sandboxes to remove (kubelet's `evictSandboxes`): a sandbox is
/// active while ready or while one of `remaining` is in it; inactive ones
/// go, except the newest sandbox of a pod that still runs.
pub fn sandboxes_to_remove<'a>(
    sandboxes: &'a [proto::PodSandbox],
    remaining: &[&proto::Container],
    pods: &PodStates,
) -> Vec<&'a proto::PodSandbox> {
    let ready = proto::PodSandboxState::SandboxReady as i32;
    let holding: HashSet<&str> = remaining
        .iter()
        .map(|c| c.pod_sandbox_id.as_str())
        .collect();
    let mut by_pod: BTreeMap<&str, Vec<&proto::PodSandbox>> = BTreeMap::new();
    for s in sandboxes {
        if let Some(uid) = pod_uid(&s.labels) {
            by_pod.entry(uid).or_default().push(s);
        }
    }
    let mut out = Vec::new();
    for (uid, mut group) in by_pod {
        group.sort_by_key(|s| std::cmp::Reverse(s.created_at));
        let keep = usize::from(!pods.runtime_removable(uid));
        out.extend(
            group
                .into_iter()
                .skip(keep)
                .filter(|s| s.state != ready && !holding.contains(s.id.as_str())),
        );
    }
    out
}

/// Why a collection, or the removal of one container, failed.
#[derive(Debug, thiserror::Error)]
pub enum ContainerGcError {
    #[error("failed to list containers")]
    ListContainers(#[source] tonic::Status),
    #[error("failed to list pod sandboxes")]
    ListPodSandbox(#[source] tonic::Status),
    #[error("failed to get container status {id}")]
    ContainerStatus {
        id: String,
        #[source]
        source: tonic::Status,
    },
    #[error("failed to remove container log {}", path.display())]
    RemoveLog {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to stop container {id} in unknown state")]
    StopContainer {
        id: String,
        #[source]
        source: tonic::Status,
    },
    #[error("failed to remove container {id}")]
    RemoveContainer {
        id: String,
        #[source]
        source: tonic::Status,
    },
}

/// What one collection removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Removed {
    pub containers: usize,
    pub sandboxes: usize,
}

/// Kubelet's `DeleteAllUnusedContainers` through CRI. A container or
/// sandbox that fails to go is logged and left for the next time, as
/// kubelet does.
pub async fn delete_all_unused_containers(
    cri: &CriClient,
    pods: &PodStates,
) -> Result<Removed, ContainerGcError> {
    tracing::info!("attempting to delete unused containers");
    let mut rt = cri.runtime.clone();
    let containers = rt
        .list_containers(proto::ListContainersRequest { filter: None })
        .await
        .map_err(ContainerGcError::ListContainers)?
        .into_inner()
        .containers;
    let mut removed = HashSet::new();
    for c in containers_to_remove(&containers, pods) {
        match remove_dead_container(cri, c).await {
            Ok(()) => {
                removed.insert(c.id.as_str());
            }
            Err(err) => {
                tracing::warn!(container = %c.id, error = %err, source = ?std::error::Error::source(&err), "failed to remove dead container");
            }
        }
    }
    let remaining: Vec<&proto::Container> = containers
        .iter()
        .filter(|c| !removed.contains(c.id.as_str()))
        .collect();
    let sandboxes = rt
        .list_pod_sandbox(proto::ListPodSandboxRequest { filter: None })
        .await
        .map_err(ContainerGcError::ListPodSandbox)?
        .into_inner()
        .items;
    let mut gone = 0;
    for s in sandboxes_to_remove(&sandboxes, &remaining, pods) {
        let request = proto::RemovePodSandboxRequest {
            pod_sandbox_id: s.id.clone(),
        };
        match rt.remove_pod_sandbox(request).await {
            Ok(_) => {
                gone += 1;
                tracing::info!(sandbox = %s.id, "removed pod sandbox");
            }
            Err(err) => {
                tracing::warn!(sandbox = %s.id, error = %err.message(), "failed to remove pod sandbox");
            }
        }
    }
    Ok(Removed {
        containers: removed.len(),
        sandboxes: gone,
    })
}

/// One container that is not running; in an unknown state it might still
/// run, so it is stopped first (kubelet's `removeOldestN`).
async fn remove_dead_container(
    cri: &CriClient,
    c: &proto::Container,
) -> Result<(), ContainerGcError> {
    if c.state == proto::ContainerState::ContainerUnknown as i32 {
        cri.runtime
            .clone()
            .stop_container(proto::StopContainerRequest {
                container_id: c.id.clone(),
                timeout: MIN_GRACE_PERIOD_SECONDS,
            })
            .await
            .map_err(|source| ContainerGcError::StopContainer {
                id: c.id.clone(),
                source,
            })?;
    }
    remove_container(cri, &c.id).await
}

/// Removes a stopped container and its log files (kubelet's
/// `removeContainer`): the logs first, so that a container whose logs
/// could not go stays and is tried again. Gone already is success.
pub async fn remove_container(cri: &CriClient, id: &str) -> Result<(), ContainerGcError> {
    let mut rt = cri.runtime.clone();
    let status = rt
        .container_status(proto::ContainerStatusRequest {
            container_id: id.to_owned(),
            verbose: false,
        })
        .await;
    let log_path = match status {
        Ok(s) => s.into_inner().status.map(|s| s.log_path),
        Err(s) if s.code() == tonic::Code::NotFound => return Ok(()),
        Err(source) => {
            return Err(ContainerGcError::ContainerStatus {
                id: id.to_owned(),
                source,
            });
        }
    };
    if let Some(path) = log_path.map(PathBuf::from).filter(|p| p.is_absolute()) {
        tokio::task::spawn_blocking(move || remove_logs(&path))
            .await
            .unwrap_or(Ok(()))?;
    }
    rt.remove_container(proto::RemoveContainerRequest {
        container_id: id.to_owned(),
    })
    .await
    .map_err(|source| ContainerGcError::RemoveContainer {
        id: id.to_owned(),
        source,
    })?;
    tracing::info!(container = %id, "removed dead container");
    Ok(())
}

/// Removes a container's log file and its rotated ones (`<path>*`, as
/// kubelet's log manager `Clean`).
fn remove_logs(path: &Path) -> Result<(), ContainerGcError> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Ok(());
    };
    let name = name.to_string_lossy();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        if !entry.file_name().to_string_lossy().starts_with(&*name) {
            continue;
        }
        match std::fs::remove_file(entry.path()) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(ContainerGcError::RemoveLog {
                    path: entry.path(),
                    source: e,
                });
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use proto::ContainerState::{
        ContainerCreated, ContainerExited, ContainerRunning, ContainerUnknown,
    };
    use proto::PodSandboxState::{SandboxNotready, SandboxReady};

    use super::*;

    fn container(
        id: &str,
        uid: &str,
        name: &str,
        state: proto::ContainerState,
        created_at: i64,
    ) -> proto::Container {
        proto::Container {
            id: id.to_owned(),
            pod_sandbox_id: format!("sandbox-{uid}"),
            metadata: Some(proto::ContainerMetadata {
                name: name.to_owned(),
                attempt: 0,
            }),
            state: state as i32,
            created_at,
            labels: HashMap::from([
                (labels::POD_UID.to_owned(), uid.to_owned()),
                (labels::CONTAINER_NAME.to_owned(), name.to_owned()),
            ]),
            ..proto::Container::default()
        }
    }

    fn sandbox(
        id: &str,
        uid: &str,
        state: proto::PodSandboxState,
        created_at: i64,
    ) -> proto::PodSandbox {
        proto::PodSandbox {
            id: id.to_owned(),
            state: state as i32,
            created_at,
            labels: HashMap::from([(labels::POD_UID.to_owned(), uid.to_owned())]),
            ..proto::PodSandbox::default()
        }
    }

    fn running(uids: &[&str]) -> PodStates {
        PodStates::Running(uids.iter().map(|u| (*u).to_owned()).collect())
    }

    fn ids<'a, T>(items: &[&'a T], id: impl Fn(&'a T) -> &'a str) -> Vec<&'a str> {
        let mut out: Vec<&str> = items.iter().map(|i| id(i)).collect();
        out.sort_unstable();
        out
    }

    #[test]
    fn a_running_pod_keeps_its_newest_dead_container_of_each_name() {
        let containers = vec![
            container("app-now", "web", "app", ContainerRunning, 30),
            container("app-2", "web", "app", ContainerExited, 20),
            container("app-1", "web", "app", ContainerExited, 10),
            container("app-0", "web", "app", ContainerUnknown, 5),
            container("init-0", "web", "init", ContainerExited, 1),
        ];
        let gone = containers_to_remove(&containers, &running(&["web"]));
        assert_eq!(ids(&gone, |c| &c.id), ["app-0", "app-1"]);
    }

    #[test]
    fn every_dead_container_of_a_pod_that_no_longer_runs_goes() {
        let containers = vec![
            container("done-app", "done", "app", ContainerExited, 20),
            container("done-init", "done", "init", ContainerExited, 10),
            container("gone-created", "deleted", "app", ContainerCreated, 5),
            container("web-app", "web", "app", ContainerExited, 20),
        ];
        let gone = containers_to_remove(&containers, &running(&["web"]));
        assert_eq!(
            ids(&gone, |c| &c.id),
            ["done-app", "done-init", "gone-created"]
        );
    }

    #[test]
    fn running_containers_and_containers_not_made_by_the_agent_stay() {
        let mut foreign = container("foreign", "x", "app", ContainerExited, 1);
        foreign.labels.clear();
        let containers = vec![
            container("done-still-running", "done", "app", ContainerRunning, 20),
            foreign,
        ];
        assert!(containers_to_remove(&containers, &running(&[])).is_empty());
    }

    #[test]
    fn without_the_pod_list_every_pod_counts_as_running() {
        let containers = vec![
            container("b", "done", "app", ContainerExited, 20),
            container("a", "done", "app", ContainerExited, 10),
        ];
        let gone = containers_to_remove(&containers, &PodStates::Unknown);
        assert_eq!(ids(&gone, |c| &c.id), ["a"]);
        let sandboxes = vec![
            sandbox("new", "done", SandboxNotready, 20),
            sandbox("old", "done", SandboxNotready, 10),
        ];
        let gone = sandboxes_to_remove(&sandboxes, &[], &PodStates::Unknown);
        assert_eq!(ids(&gone, |s| &s.id), ["old"]);
    }

    #[test]
    fn sandboxes_go_when_neither_ready_nor_holding_containers() {
        let sandboxes = vec![
            sandbox("done-empty", "done", SandboxNotready, 20),
            sandbox("done-ready", "done", SandboxReady, 30),
            sandbox("sandbox-held", "held", SandboxNotready, 20),
            sandbox("web-new", "web", SandboxNotready, 20),
            sandbox("web-old", "web", SandboxNotready, 10),
        ];
        let kept = container("kept", "held", "app", ContainerExited, 20);
        let mut held = kept.clone();
        held.pod_sandbox_id = "sandbox-held".to_owned();
        let gone = sandboxes_to_remove(&sandboxes, &[&held], &running(&["web"]));
        assert_eq!(
            ids(&gone, |s| &s.id),
            ["done-empty", "web-old"],
            "ready and held sandboxes stay; a running pod keeps its newest"
        );
    }

    #[test]
    fn pod_states_count_pods_that_are_not_terminal_as_running() {
        use k8s_openapi::api::core::v1::PodStatus;
        let pod = |uid: &str, phase: Option<&str>| {
            let mut p = Pod::default();
            p.metadata.uid = Some(uid.to_owned());
            p.status = Some(PodStatus {
                phase: phase.map(str::to_owned),
                ..PodStatus::default()
            });
            p
        };
        let mut mirror = pod("mirror", Some("Running"));
        mirror.metadata.annotations =
            Some([(CONFIG_MIRROR_ANNOTATION.to_owned(), "static".to_owned())].into());
        let states = PodStates::from_pods(&[
            pod("pending", None),
            pod("web", Some("Running")),
            pod("done", Some("Succeeded")),
            pod("failed", Some("Failed")),
            mirror,
        ]);
        assert_eq!(states, running(&["pending", "web", "mirror", "static"]));
        assert!(states.runtime_removable("done"));
        assert!(states.runtime_removable("deleted"));
        assert!(!states.runtime_removable("web"));
    }

    #[test]
    fn a_container_log_goes_with_its_rotated_files_only() {
        let dir = tempfile::tempdir().unwrap();
        for f in ["0.log", "0.log.20240101-000000", "1.log"] {
            std::fs::write(dir.path().join(f), "x").unwrap();
        }
        remove_logs(&dir.path().join("0.log")).unwrap();
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["1.log"]);
        remove_logs(&dir.path().join("missing.log")).unwrap();
    }
}
