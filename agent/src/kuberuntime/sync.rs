//! One pod sync (kubelet's `computePodActions` + `SyncPod`): volumes, one
//! ready sandbox, init containers in order, then the regular containers,
//! restarting exited ones with back-off.

use cri::proto;
use k8s_openapi::api::core::v1::{Container, Pod};

use super::*;

impl CriRuntime {
    pub(super) fn sandbox_config(
        &self,
        pod: &Pod,
        attempt: u32,
    ) -> Result<proto::PodSandboxConfig, RuntimeError> {
        let dns = self
            .config
            .dns
            .pod_dns(pod)
            .map_err(|e| RuntimeError::Call {
                call: "GetPodDNS",
                message: e.to_string(),
            })?;
        Ok(sandbox::sandbox_config(
            pod,
            &sandbox::SandboxInputs {
                log_root: &self.config.pod_log_dir,
                cgroup_root: &self.config.cgroup_root,
                dns: &dns,
                attempt,
            },
        ))
    }

    /// Whether the pod has run to completion and must not get a new sandbox.
    pub(super) fn finished(pod: &Pod, statuses: &[proto::ContainerStatus]) -> bool {
        let spec = pod.spec.clone().unwrap_or_default();
        let groups = observe::group_by_name(statuses.to_vec());
        !statuses.is_empty()
            && spec.containers.iter().all(|c| {
                groups
                    .get(&c.name)
                    .and_then(|r| r.first())
                    .is_some_and(|s| observe::is_exited(s) && !should_restart(pod, s.exit_code))
            })
    }

    pub(super) async fn sync(&self, pod: &Pod) -> Result<(), RuntimeError> {
        let uid =
            pod.metadata.uid.clone().ok_or_else(|| {
                RuntimeError::NoUid(pod.metadata.name.clone().unwrap_or_default())
            })?;
        self.lock().pods.insert(uid.clone(), pod.clone());
        let spec = pod.spec.clone().unwrap_or_default();

        let (payload_sources, mut env_sources) =
            sources::fetch(&self.client, pod)
                .await
                .map_err(|e| RuntimeError::Call {
                    call: "fetch pod sources",
                    message: e.to_string(),
                })?;
        env_sources.node_name = self.config.node_name.clone();
        env_sources.host_ip = self.config.host_ip.to_string();
        let root = self.config.root_dir.clone();
        let p = pod.clone();
        let volumes =
            tokio::task::spawn_blocking(move || volumes::prepare(&root, &p, &payload_sources))
                .await
                .map_err(|e| RuntimeError::Call {
                    call: "prepare volumes",
                    message: e.to_string(),
                })?;
        let volumes = match volumes {
            Ok(v) => v,
            Err(err) => {
                self.recorder.record(
                    pod,
                    None,
                    EventType::Warning,
                    "FailedMount",
                    &err.to_string(),
                );
                return Err(RuntimeError::Call {
                    call: "prepare volumes",
                    message: err.to_string(),
                });
            }
        };

        let sandboxes = self.sandboxes(&uid).await?;
        let ready = sandboxes
            .iter()
            .find(|s| s.state == proto::PodSandboxState::SandboxReady as i32)
            .cloned();
        let (sandbox_id, attempt) = match ready {
            Some(s) => (s.id.clone(), s.metadata.map_or(0, |m| m.attempt)),
            None => {
                let all = self.container_statuses(&uid, None).await?;
                if Self::finished(pod, &all) {
                    return Ok(());
                }
                let attempt = sandboxes
                    .iter()
                    .filter_map(|s| s.metadata.as_ref().map(|m| m.attempt + 1))
                    .max()
                    .unwrap_or(0);
                if !sandboxes.is_empty() {
                    self.recorder.record(
                        pod,
                        None,
                        EventType::Normal,
                        "SandboxChanged",
                        "Pod sandbox changed, it will be killed and re-created.",
                    );
                    for s in all.iter().filter(|s| !observe::is_exited(s)) {
                        self.stop_container(None, s, MIN_GRACE_PERIOD_SECONDS, "")
                            .await;
                    }
                    self.remove_sandboxes(&sandboxes).await;
                }
                let config = self.sandbox_config(pod, attempt)?;
                // kubelet makes the pod's log directory before the sandbox.
                if let Err(err) = tokio::fs::create_dir_all(&config.log_directory).await {
                    tracing::warn!(dir = %config.log_directory, %err, "cannot create the pod log directory");
                }
                let id = self
                    .cri
                    .runtime
                    .clone()
                    .run_pod_sandbox(proto::RunPodSandboxRequest {
                        config: Some(config),
                        runtime_handler: spec.runtime_class_name.clone().unwrap_or_default(),
                    })
                    .await
                    .map_err(|s| {
                        self.recorder.record(
                            pod,
                            None,
                            EventType::Warning,
                            "FailedCreatePodSandBox",
                            &format!("Failed to create pod sandbox: {}", s.message()),
                        );
                        call_err("RunPodSandbox")(s)
                    })?
                    .into_inner()
                    .pod_sandbox_id;
                tracing::info!(pod = %uid, sandbox = %id, attempt, "pod sandbox started");
                (id, attempt)
            }
        };
        let sandbox_config = self.sandbox_config(pod, attempt)?;
        let pod_ips = self.pod_ips(&sandbox_id).await;
        let statuses = self.container_statuses(&uid, Some(&sandbox_id)).await?;
        let groups = observe::group_by_name(statuses);
        macro_rules! start {
            ($c:expr, $attempt:expr) => {
                self.start_container(
                    pod,
                    $c,
                    $attempt,
                    &sandbox_id,
                    &sandbox_config,
                    &volumes,
                    &env_sources,
                    &pod_ips,
                )
                .await
            };
        }

        // Init containers, one at a time, each to a successful exit.
        for c in spec.init_containers.iter().flatten() {
            let runs = groups.get(&c.name).map(Vec::as_slice).unwrap_or_default();
            let sidecar = c.restart_policy.as_deref() == Some("Always");
            match runs.first() {
                None => {
                    let _ = start!(c, self.first_attempt(pod, c).await);
                    return Ok(());
                }
                Some(s) if !observe::is_exited(s) => {
                    if sidecar {
                        if let Some(restart) = self.kill_unhealthy(pod, c, s, true).await {
                            if restart && self.restart_allowed(pod, c) {
                                let _ = start!(c, observe::attempt_of(s) + 1);
                            }
                            return Ok(());
                        }
                        // The next init container waits for the sidecar's
                        // startup probe (kubelet's sidecar ordering).
                        if !self.probes.started(pod, &c.name, &s.id) {
                            return Ok(());
                        }
                        continue;
                    }
                    return Ok(());
                }
                Some(s) if s.exit_code == 0 && !sidecar => continue,
                Some(s) => {
                    let never = spec.restart_policy.as_deref() == Some("Never") && !sidecar;
                    if never {
                        // The pod has failed: nothing more starts.
                        return Ok(());
                    }
                    let next = observe::attempt_of(s) + 1;
                    if self.restart_allowed(pod, c) {
                        let _ = start!(c, next);
                    }
                    self.prune_dead(runs).await;
                    return Ok(());
                }
            }
        }

        for c in &spec.containers {
            let runs = groups.get(&c.name).map(Vec::as_slice).unwrap_or_default();
            match runs.first() {
                None => {
                    let _ = start!(c, self.first_attempt(pod, c).await);
                }
                Some(s) if s.state == proto::ContainerState::ContainerRunning as i32 => {
                    if let Some(restart) = self.kill_unhealthy(pod, c, s, false).await {
                        if restart && self.restart_allowed(pod, c) {
                            let _ = start!(c, observe::attempt_of(s) + 1);
                        }
                        continue;
                    }
                    let hash = s.annotations.get(labels::CONTAINER_HASH);
                    if hash.is_some_and(|h| *h != labels::container_hash(c)) {
                        let msg =
                            format!("Container {} definition changed, will be restarted", c.name);
                        self.stop_container(Some(pod), s, grace_period(Some(pod), None), &msg)
                            .await;
                        let _ = start!(c, observe::attempt_of(s) + 1);
                    }
                }
                Some(s) if observe::is_exited(s) => {
                    if should_restart(pod, s.exit_code) {
                        if self.restart_allowed(pod, c) {
                            let _ = start!(c, observe::attempt_of(s) + 1);
                        }
                    } else {
                        self.clear_waiting(&uid, &c.name);
                    }
                    self.prune_dead(runs).await;
                }
                Some(s) => {
                    // Created but never started (the agent stopped in between).
                    let _ = self
                        .cri
                        .runtime
                        .clone()
                        .start_container(proto::StartContainerRequest {
                            container_id: s.id.clone(),
                        })
                        .await;
                }
            }
        }
        Ok(())
    }

    /// The restart back-off gate (kubelet's `doBackOff`): false, with a
    /// CrashLoopBackOff waiting reason, while the container backs off.
    pub(super) fn restart_allowed(&self, pod: &Pod, c: &Container) -> bool {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let now = Instant::now();
        let delay = self
            .lock()
            .restart_backoff
            .in_backoff_since(&uid, &c.name, now);
        if let Some(delay) = delay {
            let m = &pod.metadata;
            let msg = RestartBackoff::message(
                delay,
                &c.name,
                m.name.as_deref().unwrap_or_default(),
                m.namespace.as_deref().unwrap_or_default(),
                &uid,
            );
            self.recorder.record(
                pod,
                Some(&c.name),
                EventType::Warning,
                "BackOff",
                &format!(
                    "Back-off restarting failed container {} in pod {}_{}({uid})",
                    c.name,
                    m.name.as_deref().unwrap_or_default(),
                    m.namespace.as_deref().unwrap_or_default()
                ),
            );
            self.set_waiting(&uid, &c.name, "CrashLoopBackOff", Some(msg));
            return false;
        }
        self.lock().restart_backoff.next(&uid, &c.name, now);
        true
    }
}

impl CriRuntime {
    /// The attempt of a container that has no run in the sandbox: 0, or one
    /// past its last log file when runs of it were removed (kubelet's
    /// `calcRestartCountByLogDir`).
    async fn first_attempt(&self, pod: &Pod, c: &Container) -> u32 {
        let dir = super::sandbox::pod_log_dir(&self.config.pod_log_dir, pod).join(&c.name);
        tokio::task::spawn_blocking(move || super::sandbox::restart_count_from_logs(&dir))
            .await
            .unwrap_or(0)
    }
}
