//! The CRI-backed `PodRuntime` (kubelet's `kuberuntime_manager`): each sync
//! sets up volumes, keeps one ready sandbox, pulls images, runs init
//! containers in order and then the regular containers, restarting exited
//! ones with back-off; `observed` reads everything back from the runtime by
//! the pod-uid label, so a restarted agent adopts what is running.

pub mod container;
pub mod env;
pub mod events;
pub mod images;
pub mod labels;
pub mod observe;
pub mod sandbox;
pub mod sources;
pub mod volumes;

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use cri::client::CriClient;
use cri::proto;
use k8s_openapi::api::core::v1::{Container, Pod};

use self::events::{EventRecorder, EventType};
use self::observe::{Runs, Waiting};
use crate::pod_worker::dns::DnsConfigurer;
use crate::pod_worker::restart_backoff::RestartBackoff;
use crate::pod_worker::{ObservedPod, PodRuntime, RuntimeError};

/// kubelet's `minimumGracePeriodInSeconds`.
pub const MIN_GRACE_PERIOD_SECONDS: i64 = 2;
/// The grace period when neither the deletion nor the spec gives one.
pub const DEFAULT_GRACE_PERIOD_SECONDS: i64 = 30;

/// Node-side settings of the CRI runtime.
#[derive(Debug, Clone)]
pub struct CriRuntimeConfig {
    pub node_name: String,
    /// `--root-dir`: pod volumes and termination message files.
    pub root_dir: PathBuf,
    /// Where pod log directories go (`/var/log/pods`).
    pub pod_log_dir: PathBuf,
    /// `--cgroup-root`: pod cgroups are `<root>/kubepods/<qos>/pod<uid>`.
    pub cgroup_root: String,
    pub dns: DnsConfigurer,
    pub host_ip: IpAddr,
}

#[derive(Default)]
struct State {
    restart_backoff: RestartBackoff,
    image_backoff: RestartBackoff,
    /// Waiting reasons decided by the last sync, by (pod uid, container).
    waiting: HashMap<(String, String), Waiting>,
    /// The last synced version of each pod.
    pods: HashMap<String, Pod>,
}

/// Runs pods through a CRI runtime (r8s-cri in-process, or containerd).
pub struct CriRuntime {
    cri: CriClient,
    client: kube::Client,
    /// `runtime_name` of CRI `Version`: the scheme of container IDs.
    runtime_name: String,
    config: CriRuntimeConfig,
    recorder: EventRecorder,
    state: Mutex<State>,
}

fn call_err(call: &'static str) -> impl FnOnce(tonic::Status) -> RuntimeError {
    move |s| RuntimeError::Call {
        call,
        message: s.message().to_owned(),
    }
}

/// The result of one step of a sync that cannot go on (a container is
/// waiting on something); not an error of the sync itself.
struct Blocked;

/// Whether an exited container is started again (kubelet's
/// `ShouldContainerBeRestarted`).
fn should_restart(pod: &Pod, exit_code: i32) -> bool {
    match pod
        .spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        .unwrap_or("Always")
    {
        "Never" => false,
        "OnFailure" => exit_code != 0,
        _ => true,
    }
}

fn grace_period(pod: Option<&Pod>, requested: Option<i64>) -> i64 {
    requested
        .or_else(|| pod.and_then(|p| p.metadata.deletion_grace_period_seconds))
        .or_else(|| {
            pod.and_then(|p| p.spec.as_ref())
                .and_then(|s| s.termination_grace_period_seconds)
        })
        .unwrap_or(DEFAULT_GRACE_PERIOD_SECONDS)
        .max(MIN_GRACE_PERIOD_SECONDS)
}

impl CriRuntime {
    /// A runtime over `cri`; asks it for its name (`Version`).
    pub async fn new(
        cri: CriClient,
        client: kube::Client,
        config: CriRuntimeConfig,
    ) -> Result<Self, RuntimeError> {
        let version = cri
            .runtime
            .clone()
            .version(proto::VersionRequest::default())
            .await
            .map_err(call_err("Version"))?
            .into_inner();
        Ok(Self {
            cri,
            recorder: EventRecorder::new(client.clone(), config.node_name.clone()),
            client,
            runtime_name: version.runtime_name,
            config,
            state: Mutex::new(State::default()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is plain data; a panic elsewhere does not invalidate it.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn set_waiting(&self, uid: &str, name: &str, reason: &str, message: Option<String>) {
        self.lock().waiting.insert(
            (uid.to_owned(), name.to_owned()),
            Waiting {
                reason: reason.to_owned(),
                message,
            },
        );
    }

    fn clear_waiting(&self, uid: &str, name: &str) {
        self.lock()
            .waiting
            .remove(&(uid.to_owned(), name.to_owned()));
    }

    async fn sandboxes(&self, uid: &str) -> Result<Vec<proto::PodSandbox>, RuntimeError> {
        let mut items = self
            .cri
            .runtime
            .clone()
            .list_pod_sandbox(proto::ListPodSandboxRequest {
                filter: Some(proto::PodSandboxFilter {
                    label_selector: labels::pod_selector(uid),
                    ..proto::PodSandboxFilter::default()
                }),
            })
            .await
            .map_err(call_err("ListPodSandbox"))?
            .into_inner()
            .items;
        items.sort_by_key(|s| std::cmp::Reverse(s.created_at));
        Ok(items)
    }

    /// Statuses of every container of the pod (in `sandbox` when given).
    async fn container_statuses(
        &self,
        uid: &str,
        sandbox: Option<&str>,
    ) -> Result<Vec<proto::ContainerStatus>, RuntimeError> {
        let mut rt = self.cri.runtime.clone();
        let list = rt
            .list_containers(proto::ListContainersRequest {
                filter: Some(proto::ContainerFilter {
                    label_selector: labels::pod_selector(uid),
                    pod_sandbox_id: sandbox.unwrap_or_default().to_owned(),
                    ..proto::ContainerFilter::default()
                }),
            })
            .await
            .map_err(call_err("ListContainers"))?
            .into_inner()
            .containers;
        let mut out = Vec::with_capacity(list.len());
        for c in list {
            match rt
                .container_status(proto::ContainerStatusRequest {
                    container_id: c.id.clone(),
                    verbose: false,
                })
                .await
            {
                Ok(r) => out.extend(r.into_inner().status),
                // Removed between the list and the status call.
                Err(s) if s.code() == tonic::Code::NotFound => {}
                Err(s) => return Err(call_err("ContainerStatus")(s)),
            }
        }
        Ok(out)
    }

    async fn stop_container(
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

    /// Runs an exec preStop hook (kubelet's `executePreStopHook`), bounded by
    /// the grace period.
    async fn run_pre_stop(&self, pod: &Pod, name: &str, id: &str, grace: i64) {
        let hook = pod
            .spec
            .as_ref()
            .and_then(|s| s.containers.iter().find(|c| c.name == name))
            .and_then(|c| c.lifecycle.as_ref())
            .and_then(|l| l.pre_stop.as_ref())
            .and_then(|h| h.exec.as_ref())
            .and_then(|e| e.command.clone());
        let Some(cmd) = hook else { return };
        let result = self
            .cri
            .runtime
            .clone()
            .exec_sync(proto::ExecSyncRequest {
                container_id: id.to_owned(),
                cmd,
                timeout: grace,
            })
            .await;
        match result {
            Ok(r) if r.get_ref().exit_code == 0 => {}
            Ok(r) => {
                let msg = format!(
                    "PreStopHook failed: command exited with {}",
                    r.get_ref().exit_code
                );
                self.recorder.record(
                    pod,
                    Some(name),
                    EventType::Warning,
                    "FailedPreStopHook",
                    &msg,
                );
            }
            Err(s) => {
                let msg = format!("PreStopHook failed: {}", s.message());
                self.recorder.record(
                    pod,
                    Some(name),
                    EventType::Warning,
                    "FailedPreStopHook",
                    &msg,
                );
            }
        }
    }

    /// Stops and removes the sandboxes (and with them the containers) of a pod.
    async fn remove_sandboxes(&self, sandboxes: &[proto::PodSandbox]) {
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

    fn sandbox_config(
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

    /// Makes sure the image of `c` is present (kubelet's `EnsureImageExists`);
    /// on failure the container waits with ErrImagePull/ImagePullBackOff.
    async fn ensure_image(&self, pod: &Pod, c: &Container) -> Result<String, Blocked> {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let image = c.image.clone().unwrap_or_default();
        let spec = proto::ImageSpec {
            image: image.clone(),
            ..proto::ImageSpec::default()
        };
        let present = self
            .cri
            .image
            .clone()
            .image_status(proto::ImageStatusRequest {
                image: Some(spec.clone()),
                verbose: false,
            })
            .await
            .ok()
            .and_then(|r| r.into_inner().image)
            .is_some();
        let policy = images::pull_policy(c);
        match policy {
            images::PullPolicy::Never if !present => {
                let msg =
                    format!("Container image \"{image}\" is not present with pull policy of Never");
                self.recorder.record(
                    pod,
                    Some(&c.name),
                    EventType::Warning,
                    "ErrImageNeverPull",
                    &msg,
                );
                self.set_waiting(&uid, &c.name, "ErrImageNeverPull", Some(msg));
                return Err(Blocked);
            }
            images::PullPolicy::Never | images::PullPolicy::IfNotPresent if present => {
                let msg = format!("Container image \"{image}\" already present on machine");
                self.recorder
                    .record(pod, Some(&c.name), EventType::Normal, "Pulled", &msg);
                return Ok(image);
            }
            _ => {}
        }
        let backoff_key = format!("image:{image}");
        let backing_off = self
            .lock()
            .image_backoff
            .in_backoff_since(&uid, &backoff_key, Instant::now())
            .is_some();
        if backing_off {
            let msg = format!("Back-off pulling image \"{image}\"");
            self.recorder
                .record(pod, Some(&c.name), EventType::Normal, "BackOff", &msg);
            self.set_waiting(&uid, &c.name, "ImagePullBackOff", Some(msg));
            return Err(Blocked);
        }
        self.recorder.record(
            pod,
            Some(&c.name),
            EventType::Normal,
            "Pulling",
            &format!("Pulling image \"{image}\""),
        );
        let secrets = sources::pull_secrets(&self.client, pod).await;
        let started = Instant::now();
        let sandbox_config = self.sandbox_config(pod, 0).ok();
        let result = self
            .cri
            .image
            .clone()
            .pull_image(proto::PullImageRequest {
                image: Some(spec),
                auth: images::auth_for(&image, &secrets),
                sandbox_config,
            })
            .await;
        match result {
            Ok(_) => {
                let took = started.elapsed();
                self.recorder.record(
                    pod,
                    Some(&c.name),
                    EventType::Normal,
                    "Pulled",
                    &format!(
                        "Successfully pulled image \"{image}\" in {:.3}s",
                        took.as_secs_f64()
                    ),
                );
                Ok(image)
            }
            Err(s) => {
                let msg = format!("Failed to pull image \"{image}\": {}", s.message());
                tracing::warn!(pod = %uid, container = %c.name, error = %s.message(), "image pull failed");
                self.recorder
                    .record(pod, Some(&c.name), EventType::Warning, "Failed", &msg);
                self.recorder.record(
                    pod,
                    Some(&c.name),
                    EventType::Warning,
                    "Failed",
                    "Error: ErrImagePull",
                );
                self.lock()
                    .image_backoff
                    .next(&uid, &backoff_key, Instant::now());
                self.set_waiting(&uid, &c.name, "ErrImagePull", Some(msg));
                Err(Blocked)
            }
        }
    }

    /// Pulls, creates and starts one run of `c` (kubelet's `startContainer`).
    #[allow(clippy::too_many_arguments)]
    async fn start_container(
        &self,
        pod: &Pod,
        c: &Container,
        attempt: u32,
        sandbox_id: &str,
        sandbox_config: &proto::PodSandboxConfig,
        volumes: &HashMap<String, PathBuf>,
        env_sources: &env::EnvSources,
        pod_ips: &[String],
    ) -> Result<(), Blocked> {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let image = self.ensure_image(pod, c).await?;
        let mut env_sources = env_sources.clone();
        env_sources.pod_ips = pod_ips.to_vec();
        let config_error = |msg: String| {
            self.recorder.record(
                pod,
                Some(&c.name),
                EventType::Warning,
                "Failed",
                &format!("Error: {msg}"),
            );
            self.set_waiting(&uid, &c.name, "CreateContainerConfigError", Some(msg));
            Blocked
        };
        let env =
            env::make_environment(pod, c, &env_sources).map_err(|e| config_error(e.to_string()))?;
        let tm_file =
            container::termination_message_file(&self.config.root_dir, &uid, &c.name, attempt);
        let tm = tm_file.clone();
        let created = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            use std::os::unix::fs::PermissionsExt;
            if let Some(dir) = tm.parent() {
                std::fs::create_dir_all(dir)?;
            }
            std::fs::write(&tm, b"")?;
            std::fs::set_permissions(&tm, std::fs::Permissions::from_mode(0o666))
        })
        .await;
        if let Ok(Err(err)) | Err(err) = created.map_err(std::io::Error::other) {
            return Err(config_error(format!(
                "failed to create the termination message file: {err}"
            )));
        }
        let config = container::container_config(
            pod,
            c,
            &container::ContainerInputs {
                attempt,
                env: &env,
                volumes,
                termination_message_file: &tm_file,
                image: &image,
            },
        )
        .map_err(|e| config_error(e.to_string()))?;
        let mut rt = self.cri.runtime.clone();
        let create_failed = |msg: String| {
            self.recorder.record(
                pod,
                Some(&c.name),
                EventType::Warning,
                "Failed",
                &format!("Error: {msg}"),
            );
            Blocked
        };
        let id = match rt
            .create_container(proto::CreateContainerRequest {
                pod_sandbox_id: sandbox_id.to_owned(),
                config: Some(config),
                sandbox_config: Some(sandbox_config.clone()),
            })
            .await
        {
            Ok(r) => r.into_inner().container_id,
            Err(s) => {
                self.set_waiting(
                    &uid,
                    &c.name,
                    "CreateContainerError",
                    Some(s.message().to_owned()),
                );
                return Err(create_failed(s.message().to_owned()));
            }
        };
        self.recorder.record(
            pod,
            Some(&c.name),
            EventType::Normal,
            "Created",
            &format!("Created container: {}", c.name),
        );
        if let Err(s) = rt
            .start_container(proto::StartContainerRequest {
                container_id: id.clone(),
            })
            .await
        {
            self.set_waiting(
                &uid,
                &c.name,
                "RunContainerError",
                Some(s.message().to_owned()),
            );
            return Err(create_failed(s.message().to_owned()));
        }
        self.clear_waiting(&uid, &c.name);
        self.recorder.record(
            pod,
            Some(&c.name),
            EventType::Normal,
            "Started",
            &format!("Started container {}", c.name),
        );
        tracing::info!(pod = %uid, container = %c.name, attempt, id = %id, "container started");
        Ok(())
    }

    /// Removes the runs of a container older than the previous one (kept
    /// for `kubectl logs --previous`).
    async fn prune_dead(&self, runs: &[proto::ContainerStatus]) {
        let mut rt = self.cri.runtime.clone();
        for old in runs.iter().skip(2).filter(|s| observe::is_exited(s)) {
            if let Err(err) = rt
                .remove_container(proto::RemoveContainerRequest {
                    container_id: old.id.clone(),
                })
                .await
            {
                tracing::debug!(container = %old.id, error = %err.message(), "failed to remove dead container");
            }
        }
    }

    /// Whether the pod has run to completion and must not get a new sandbox.
    fn finished(pod: &Pod, statuses: &[proto::ContainerStatus]) -> bool {
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

    async fn sync(&self, pod: &Pod) -> Result<(), RuntimeError> {
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
                    let _ = start!(c, 0);
                    return Ok(());
                }
                Some(s) if !observe::is_exited(s) => {
                    if sidecar {
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
                    let _ = start!(c, 0);
                }
                Some(s) if s.state == proto::ContainerState::ContainerRunning as i32 => {
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
    fn restart_allowed(&self, pod: &Pod, c: &Container) -> bool {
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

    async fn pod_ips(&self, sandbox_id: &str) -> Vec<String> {
        let status = self
            .cri
            .runtime
            .clone()
            .pod_sandbox_status(proto::PodSandboxStatusRequest {
                pod_sandbox_id: sandbox_id.to_owned(),
                verbose: false,
            })
            .await
            .ok()
            .and_then(|r| r.into_inner().status);
        let Some(net) = status.and_then(|s| s.network) else {
            return Vec::new();
        };
        std::iter::once(net.ip)
            .chain(net.additional_ips.into_iter().map(|i| i.ip))
            .filter(|ip| !ip.is_empty())
            .collect()
    }

    /// Reads a termination message the container wrote to its file (or the
    /// tail of its log for `FallbackToLogsOnError`).
    fn termination_message(status: &proto::ContainerStatus) -> Option<String> {
        if !observe::is_exited(status) {
            return None;
        }
        let path = status
            .annotations
            .get(labels::TERMINATION_MESSAGE_HOST_PATH)?;
        let data = std::fs::read(path).ok()?;
        let mut msg =
            String::from_utf8_lossy(&data[..data.len().min(observe::MAX_TERMINATION_MESSAGE)])
                .into_owned();
        let fallback = status
            .annotations
            .get(labels::TERMINATION_MESSAGE_POLICY)
            .is_some_and(|p| p == "FallbackToLogsOnError");
        if msg.is_empty() && fallback && status.exit_code != 0 && !status.log_path.is_empty() {
            msg = log_tail(&status.log_path);
        }
        Some(msg)
    }

    async fn kill(&self, uid: &str, grace: Option<i64>) -> Result<(), RuntimeError> {
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
        let sandboxes = self.sandboxes(uid).await?;
        self.remove_sandboxes(&sandboxes).await;
        let dir = crate::volume::pod_dir(&self.config.root_dir, uid);
        let cgroups = pod_cgroups(&self.config.cgroup_root, uid);
        let _ = tokio::task::spawn_blocking(move || {
            let _ = std::fs::remove_dir_all(dir);
            remove_empty_cgroups(&cgroups);
        })
        .await;
        let mut state = self.lock();
        state.restart_backoff.forget_pod(uid);
        state.image_backoff.forget_pod(uid);
        state.waiting.retain(|(u, _), _| u != uid);
        state.pods.remove(uid);
        Ok(())
    }

    async fn observe(&self, uid: &str) -> Result<ObservedPod, RuntimeError> {
        let sandboxes = self.sandboxes(uid).await?;
        let Some(sandbox) = sandboxes.first() else {
            return Ok(self.waiting_only(uid));
        };
        let sandbox_ready = sandbox.state == proto::PodSandboxState::SandboxReady as i32;
        let pod_ips = self
            .pod_ips(&sandbox.id)
            .await
            .iter()
            .filter_map(|ip| ip.parse::<IpAddr>().ok())
            .collect();
        let statuses = self.container_statuses(uid, Some(&sandbox.id)).await?;
        let groups = observe::group_by_name(statuses);
        let (pod, waiting) = {
            let state = self.lock();
            let waiting: HashMap<String, Waiting> = state
                .waiting
                .iter()
                .filter(|((u, _), _)| u == uid)
                .map(|((_, n), w)| (n.clone(), w.clone()))
                .collect();
            (state.pods.get(uid).cloned().unwrap_or_default(), waiting)
        };
        let spec = pod.spec.clone().unwrap_or_default();
        let mut containers = Vec::new();
        let names = spec
            .init_containers
            .iter()
            .flatten()
            .chain(spec.containers.iter())
            .map(|c| c.name.clone());
        for name in names {
            let runs = groups.get(&name).and_then(|runs| {
                let newest = runs.first()?;
                Some(Runs {
                    newest,
                    newest_message: Self::termination_message(newest),
                    previous: runs.get(1).map(|p| (p, Self::termination_message(p))),
                })
            });
            if let Some(o) = observe::observed_container(
                &pod,
                &name,
                runs.as_ref(),
                waiting.get(&name),
                &self.runtime_name,
            ) {
                containers.push(o);
            }
        }
        Ok(ObservedPod {
            sandbox_ready,
            pod_ips,
            containers,
        })
    }

    /// Containers that never ran but wait on something (image pull...).
    fn waiting_only(&self, uid: &str) -> ObservedPod {
        let state = self.lock();
        let Some(pod) = state.pods.get(uid) else {
            return ObservedPod::default();
        };
        let containers = state
            .waiting
            .iter()
            .filter(|((u, _), _)| u == uid)
            .filter_map(|((_, name), w)| {
                observe::observed_container(pod, name, None, Some(w), &self.runtime_name)
            })
            .collect();
        ObservedPod {
            sandbox_ready: false,
            pod_ips: Vec::new(),
            containers,
        }
    }
}

/// The pod's cgroup in each QoS class (the class of a pod seen before an
/// agent restart is not known).
fn pod_cgroups(cgroup_root: &str, uid: &str) -> Vec<String> {
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
fn remove_empty_cgroups(paths: &[String]) {
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

/// The last lines of a CRI log file (`<ts> <stream> <tag> <msg>` lines),
/// at most 80 lines or 2 KiB as kubelet's fallback message.
fn log_tail(path: &str) -> String {
    let Ok(text) = std::fs::read_to_string(path) else {
        return String::new();
    };
    let lines: Vec<&str> = text
        .lines()
        .map(|l| l.splitn(4, ' ').nth(3).unwrap_or_default())
        .collect();
    let tail = lines[lines.len().saturating_sub(80)..].join("\n");
    let start = tail.len().saturating_sub(2048);
    tail.get(start..).unwrap_or_default().to_owned()
}

#[async_trait::async_trait]
impl PodRuntime for CriRuntime {
    #[tracing::instrument(skip_all, fields(pod = ?pod.metadata.name))]
    async fn sync_pod(&self, pod: &Pod) -> Result<(), RuntimeError> {
        self.sync(pod).await
    }

    #[tracing::instrument(skip(self))]
    async fn kill_pod(&self, pod_uid: &str, grace_period: Option<i64>) -> Result<(), RuntimeError> {
        self.kill(pod_uid, grace_period).await
    }

    async fn observed(&self, pod_uid: &str) -> Result<ObservedPod, RuntimeError> {
        self.observe(pod_uid).await
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::PodSpec;

    use super::*;

    #[test]
    fn restart_policy_decides_restarts() {
        let mut p = Pod::default();
        assert!(should_restart(&p, 0));
        p.spec = Some(PodSpec {
            restart_policy: Some("OnFailure".to_owned()),
            ..PodSpec::default()
        });
        assert!(!should_restart(&p, 0));
        assert!(should_restart(&p, 1));
        p.spec.as_mut().unwrap().restart_policy = Some("Never".to_owned());
        assert!(!should_restart(&p, 1));
    }

    #[test]
    fn grace_period_prefers_the_deletion_and_has_a_floor() {
        let mut p = Pod::default();
        assert_eq!(grace_period(Some(&p), None), 30);
        p.spec = Some(PodSpec {
            termination_grace_period_seconds: Some(10),
            ..PodSpec::default()
        });
        assert_eq!(grace_period(Some(&p), None), 10);
        p.metadata.deletion_grace_period_seconds = Some(0);
        assert_eq!(grace_period(Some(&p), None), 2);
        assert_eq!(grace_period(None, Some(5)), 5);
    }

    #[test]
    fn log_tail_strips_cri_prefixes() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("0.log");
        std::fs::write(
            &f,
            "2024-01-01T00:00:00Z stdout F hello\n2024-01-01T00:00:01Z stderr F boom\n",
        )
        .unwrap();
        assert_eq!(log_tail(&f.display().to_string()), "hello\nboom");
    }
}
