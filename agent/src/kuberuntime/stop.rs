//! Stopping (kubelet's `killContainer`/`killPodWithSyncResult`): one
//! container after its preStop hook within the grace period, a whole pod with
//! its sandboxes, volumes and cgroups, and pruning of dead container runs
//! (removed with their logs by `gc`).

use cri::proto;
use k8s_openapi::api::core::v1::Pod;

use super::*;

impl CriRuntime {
    pub(super) async fn stop_container(
        &self,
        pod: Option<&Pod>,
        status: &proto::ContainerStatus,
        grace: i64,
        reason: &str,
    ) {
        let name = status
            .metadata
            .as_ref()
            .map(|m| m.name.clone())
            .unwrap_or_default();
        let mut timeout = grace;
        if let Some(pod) = pod {
            self.recorder
                .record(pod, Some(&name), EventType::Normal, "Killing", reason);
            let started = Instant::now();
            self.run_pre_stop(pod, &name, &status.id, grace).await;
            timeout = (grace - i64::try_from(started.elapsed().as_secs()).unwrap_or(0))
                .max(MIN_GRACE_PERIOD_SECONDS);
        }
        if let Err(err) = self
            .cri
            .runtime
            .clone()
            .stop_container(proto::StopContainerRequest {
                container_id: status.id.clone(),
                timeout,
            })
            .await
        {
            tracing::warn!(container = %status.id, error = %err.message(), "failed to stop container");
        }
    }

    /// Stops and removes the sandboxes (and with them the containers) of a pod.
    pub(super) async fn remove_sandboxes(&self, sandboxes: &[proto::PodSandbox]) {
        let mut rt = self.cri.runtime.clone();
        for s in sandboxes {
            if let Err(err) = rt
                .stop_pod_sandbox(proto::StopPodSandboxRequest {
                    pod_sandbox_id: s.id.clone(),
                })
                .await
            {
                tracing::warn!(sandbox = %s.id, error = %err.message(), "failed to stop sandbox");
            }
            if let Err(err) = rt
                .remove_pod_sandbox(proto::RemovePodSandboxRequest {
                    pod_sandbox_id: s.id.clone(),
                })
                .await
            {
                tracing::warn!(sandbox = %s.id, error = %err.message(), "failed to remove sandbox");
            }
        }
    }

    /// Removes the dead runs of one container beyond the newest two, with
    /// their logs (as kubelet's container GC).
    pub(super) async fn prune_dead(&self, runs: &[proto::ContainerStatus]) {
        for old in runs.iter().skip(2).filter(|s| observe::is_exited(s)) {
            if let Err(err) = gc::remove_container(&self.cri, &old.id).await {
                tracing::debug!(container = %old.id, error = %err, "failed to remove dead container");
            }
        }
    }

    /// Stops the pod's running containers, each given `grace` seconds (`None`:
    /// the pod's own) after its stop signal.
    async fn stop_running(&self, uid: &str, grace: Option<i64>) -> Result<(), RuntimeError> {
        let cached = self.lock().pods.get(uid).cloned();
        let pod = cached.as_ref();
        let grace = grace_period(pod, grace);
        let statuses = self.container_statuses(uid, None).await?;
        let running: Vec<_> = statuses.iter().filter(|s| !observe::is_exited(s)).collect();
        futures::future::join_all(running.iter().map(|s| {
            let name = s
                .metadata
                .as_ref()
                .map(|m| m.name.clone())
                .unwrap_or_default();
            async move {
                self.stop_container(pod, s, grace, &format!("Stopping container {name}"))
                    .await;
            }
        }))
        .await;
        Ok(())
    }

    /// Stops a pod that reached a terminal phase (kubelet's
    /// SyncTerminatingPod): what still runs is stopped, then the sandboxes
    /// (network down, address free) and the probes. The dead containers
    /// and their logs stay for `kubectl logs` until the pod is deleted or
    /// the container GC removes them.
    pub(super) async fn terminate(&self, uid: &str) -> Result<(), RuntimeError> {
        self.stop_running(uid, None).await?;
        let mut rt = self.cri.runtime.clone();
        for s in self.sandboxes(uid).await? {
            if s.state == proto::PodSandboxState::SandboxReady as i32
                && let Err(err) = rt
                    .stop_pod_sandbox(proto::StopPodSandboxRequest {
                        pod_sandbox_id: s.id.clone(),
                    })
                    .await
            {
                tracing::warn!(sandbox = %s.id, error = %err.message(), "failed to stop sandbox");
            }
        }
        self.probes.remove_pod(uid);
        Ok(())
    }

    pub(super) async fn kill(&self, uid: &str, grace: Option<i64>) -> Result<(), RuntimeError> {
        self.stop_running(uid, grace).await?;
        let sandboxes = self.sandboxes(uid).await?;
        self.remove_sandboxes(&sandboxes).await;
        let dir = crate::volume::pod_dir(&self.config.root_dir, uid);
        let cgroups = pod_cgroups(&self.config.cgroup_root, uid);
        // Its logs go with its containers (kubelet's container GC removes the
        // log directories of deleted or evicted pods).
        let (log_root, pod_uid) = (self.config.pod_log_dir.clone(), uid.to_owned());
        let _ = tokio::task::spawn_blocking(move || {
            // Memory-backed emptyDirs are mounts: remove_dir_all would
            // empty them but leave the tmpfs mounted.
            crate::volume::tmpfs::unmount_under(&dir);
            let _ = std::fs::remove_dir_all(dir);
            for d in super::sandbox::pod_log_dirs_of(&log_root, &pod_uid) {
                let _ = std::fs::remove_dir_all(d);
            }
            remove_empty_cgroups(&cgroups);
        })
        .await;
        let mut state = self.lock();
        state.restart_backoff.forget_pod(uid);
        state.image_backoff.forget_pod(uid);
        state.waiting.retain(|(u, _), _| u != uid);
        state.pods.remove(uid);
        drop(state);
        self.probes.remove_pod(uid);
        Ok(())
    }
}

/// The pod's cgroup in each QoS class (the class of a pod seen before an
/// agent restart is not known).
pub(super) fn pod_cgroups(cgroup_root: &str, uid: &str) -> Vec<String> {
    use crate::qos::QosClass;
    [
        QosClass::Guaranteed,
        QosClass::Burstable,
        QosClass::BestEffort,
    ]
    .into_iter()
    .map(|q| crate::cm::pod_cgroup_name(cgroup_root, q, uid).to_cgroupfs())
    .collect()
}

/// Removes a stopped pod's cgroups in every hierarchy, as kubelet's pod
/// container manager does; `rmdir` only succeeds on empty cgroups.
pub(super) fn remove_empty_cgroups(paths: &[String]) {
    let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") else {
        return;
    };
    let mut roots: Vec<PathBuf> = hierarchies.flatten().map(|e| e.path()).collect();
    roots.push(PathBuf::from("/sys/fs/cgroup"));
    for root in roots {
        for p in paths {
            let dir = root.join(p.trim_start_matches('/'));
            if dir.is_dir() {
                if let Ok(children) = std::fs::read_dir(&dir) {
                    for child in children.flatten().filter(|c| c.path().is_dir()) {
                        let _ = std::fs::remove_dir(child.path());
                    }
                }
                let _ = std::fs::remove_dir(&dir);
            }
        }
    }
}
