//! The CRI-backed `PodRuntime` (kubelet's `kuberuntime_manager`): each sync
//! sets up volumes, keeps one ready sandbox, pulls images, runs init
//! containers in order and then the regular containers, restarting exited
//! ones with back-off; `observed` reads everything back from the runtime by
//! the pod-uid label, so a restarted agent adopts what is running.

pub mod container;
pub mod env;
pub mod events;
pub mod gc;
pub mod images;
pub mod labels;
mod lifecycle;
pub mod observe;
mod orphans;
mod pod_status;
mod probing;
mod pull;
mod query;
pub mod sandbox;
pub mod sources;
mod start;
mod stop;
mod sync;
pub mod volumes;

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use cri::client::CriClient;
use cri::proto;
use k8s_openapi::api::core::v1::Pod;

use self::events::{EventRecorder, EventType};
use self::observe::{Runs, Waiting};
use crate::pod_worker::dns::DnsConfigurer;
use crate::pod_worker::restart_backoff::RestartBackoff;
use crate::pod_worker::{ObservedPod, PodRuntime, RuntimeError};
use crate::probe::ProbeManager;

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
    probes: Arc<ProbeManager>,
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
        let recorder = EventRecorder::new(client.clone(), config.node_name.clone());
        let probes = Arc::new(ProbeManager::new(
            Arc::new(cri.clone()),
            Arc::new(probing::ProbeEventSink(recorder.clone())),
        ));
        Ok(Self {
            cri,
            recorder,
            probes,
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

    #[tracing::instrument(skip(self))]
    async fn terminate_pod(&self, pod_uid: &str) -> Result<(), RuntimeError> {
        self.terminate(pod_uid).await
    }

    async fn observed(&self, pod_uid: &str) -> Result<ObservedPod, RuntimeError> {
        self.observe(pod_uid).await
    }

    async fn orphans(
        &self,
        known: &std::collections::HashSet<String>,
    ) -> Result<Vec<String>, RuntimeError> {
        CriRuntime::orphans(self, known).await
    }

    fn sync_signal(&self, pod_uid: &str) -> Option<Arc<tokio::sync::Notify>> {
        Some(self.probes.sync_signal(pod_uid))
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
}
