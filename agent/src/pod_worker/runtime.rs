//! The runtime seam of the pod workers: `PodRuntime` (sync pod / kill pod /
//! observed state). `crate::kuberuntime::CriRuntime` is the real one;
//! `FakeRuntime` marks every container Running and is meant for simulated
//! nodes in tests.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use tokio::sync::Notify;

use super::status::{ObservedContainer, ObservedState, Terminated};

/// Why a runtime call failed.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("pod {0} has no uid")]
    NoUid(String),
    #[error("runtime call {call} failed: {message}")]
    Call { call: &'static str, message: String },
}

/// What the runtime reports about one pod.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObservedPod {
    /// The sandbox exists and its network is set up.
    pub sandbox_ready: bool,
    pub pod_ips: Vec<IpAddr>,
    pub containers: Vec<ObservedContainer>,
}

/// Runs pods on the node.
#[async_trait::async_trait]
pub trait PodRuntime: Send + Sync {
    /// Brings the pod's sandbox and containers toward its spec.
    async fn sync_pod(&self, pod: &Pod) -> Result<(), RuntimeError>;
    /// Stops and removes everything of the pod, giving its containers
    /// `grace_period` seconds (`None`: the pod's own) after SIGTERM.
    async fn kill_pod(&self, pod_uid: &str, grace_period: Option<i64>) -> Result<(), RuntimeError>;
    /// Stops a pod that reached a terminal phase: its containers and
    /// sandbox stop, the dead containers (and logs) stay.
    async fn terminate_pod(&self, _pod_uid: &str) -> Result<(), RuntimeError> {
        Ok(())
    }
    /// UIDs of pods the runtime or the disk still holds that are not in
    /// `known` (deleted while the agent was down).
    async fn orphans(
        &self,
        _known: &std::collections::HashSet<String>,
    ) -> Result<Vec<String>, RuntimeError> {
        Ok(Vec::new())
    }
    /// The pod's current state (empty when unknown).
    async fn observed(&self, pod_uid: &str) -> Result<ObservedPod, RuntimeError>;
    /// Notified when the runtime wants the pod synced before its next
    /// resync (a probe result changed).
    fn sync_signal(&self, _pod_uid: &str) -> Option<Arc<Notify>> {
        None
    }
}

struct FakePod {
    ip: IpAddr,
    started_at: Timestamp,
    pod: Pod,
}

/// Pod annotation that makes the FAKE runtime report every regular
/// container as exited with this code (for Job-like tests).
pub const FAKE_EXIT_CODE_ANNOTATION: &str = "fake.r8s.io/exit-code";

/// A FAKE runtime that runs nothing: every synced pod gets an address and
/// all its containers report Running and ready (init containers Completed),
/// or exited when the pod has the `fake.r8s.io/exit-code` annotation.
/// For simulated nodes in control-plane tests only.
pub struct FakeRuntime {
    base: Ipv4Addr,
    state: Mutex<(u32, HashMap<String, FakePod>)>,
}

impl FakeRuntime {
    /// Pod addresses are handed out after `base` (`10.42.0.0` -> `10.42.0.1`, ...).
    pub fn new(base: Ipv4Addr) -> Self {
        Self {
            base,
            state: Mutex::new((0, HashMap::new())),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (u32, HashMap<String, FakePod>)> {
        // A panic while holding this lock leaves plain data behind; keep using it.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn fake_container(
    uid: &str,
    name: &str,
    image: &str,
    state: ObservedState,
    ready: bool,
) -> ObservedContainer {
    ObservedContainer {
        name: name.to_owned(),
        state,
        last_termination: None,
        restart_count: 0,
        image: image.to_owned(),
        image_id: format!("fake://{image}"),
        container_id: format!("fake://{uid}/{name}"),
        ready,
        started: Some(ready),
    }
}

#[async_trait::async_trait]
impl PodRuntime for FakeRuntime {
    async fn sync_pod(&self, pod: &Pod) -> Result<(), RuntimeError> {
        let uid =
            pod.metadata.uid.clone().ok_or_else(|| {
                RuntimeError::NoUid(pod.metadata.name.clone().unwrap_or_default())
            })?;
        let mut guard = self.lock();
        let (next, pods) = &mut *guard;
        if let Some(p) = pods.get_mut(&uid) {
            p.pod = pod.clone();
            return Ok(());
        }
        *next += 1;
        let ip = IpAddr::V4(Ipv4Addr::from(u32::from(self.base).wrapping_add(*next)));
        pods.insert(
            uid,
            FakePod {
                ip,
                started_at: Timestamp::now(),
                pod: pod.clone(),
            },
        );
        Ok(())
    }

    async fn kill_pod(&self, pod_uid: &str, _grace: Option<i64>) -> Result<(), RuntimeError> {
        self.lock().1.remove(pod_uid);
        Ok(())
    }

    async fn observed(&self, pod_uid: &str) -> Result<ObservedPod, RuntimeError> {
        let guard = self.lock();
        let Some(p) = guard.1.get(pod_uid) else {
            return Ok(ObservedPod::default());
        };
        let spec = p.pod.spec.clone().unwrap_or_default();
        let mut containers = Vec::new();
        for c in spec.init_containers.iter().flatten() {
            let image = c.image.clone().unwrap_or_default();
            let (state, ready) = if c.restart_policy.as_deref() == Some("Always") {
                (
                    ObservedState::Running {
                        started_at: Some(p.started_at),
                    },
                    true,
                )
            } else {
                (
                    ObservedState::Terminated(Terminated {
                        exit_code: 0,
                        reason: Some("Completed".to_owned()),
                        started_at: Some(p.started_at),
                        finished_at: Some(p.started_at),
                        ..Terminated::default()
                    }),
                    false,
                )
            };
            containers.push(fake_container(pod_uid, &c.name, &image, state, ready));
        }
        let exit_code: Option<i32> = p
            .pod
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(FAKE_EXIT_CODE_ANNOTATION))
            .and_then(|v| v.parse().ok());
        for c in &spec.containers {
            let image = c.image.clone().unwrap_or_default();
            let (state, ready) = match exit_code {
                None => (
                    ObservedState::Running {
                        started_at: Some(p.started_at),
                    },
                    true,
                ),
                Some(code) => (
                    ObservedState::Terminated(Terminated {
                        exit_code: code,
                        reason: Some(if code == 0 { "Completed" } else { "Error" }.to_owned()),
                        started_at: Some(p.started_at),
                        finished_at: Some(p.started_at),
                        container_id: Some(format!("fake://{pod_uid}/{}", c.name)),
                        ..Terminated::default()
                    }),
                    false,
                ),
            };
            containers.push(fake_container(pod_uid, &c.name, &image, state, ready));
        }
        Ok(ObservedPod {
            sandbox_ready: true,
            pod_ips: vec![p.ip],
            containers,
        })
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{Container, PodSpec};

    use super::*;
    use crate::pod_worker::status::{StatusInputs, generate_pod_status};

    fn pod(uid: &str) -> Pod {
        let mut p = Pod::default();
        p.metadata.uid = Some(uid.to_owned());
        p.spec = Some(PodSpec {
            containers: vec![Container {
                name: "app".to_owned(),
                image: Some("nginx".to_owned()),
                ..Container::default()
            }],
            init_containers: Some(vec![Container {
                name: "init".to_owned(),
                image: Some("busybox".to_owned()),
                ..Container::default()
            }]),
            ..PodSpec::default()
        });
        p
    }

    #[tokio::test]
    async fn fake_runtime_makes_pods_running_and_ready() {
        let rt = FakeRuntime::new(Ipv4Addr::new(10, 42, 0, 0));
        let p = pod("u1");
        rt.sync_pod(&p).await.unwrap();
        let o = rt.observed("u1").await.unwrap();
        assert_eq!(o.pod_ips, vec![IpAddr::from([10, 42, 0, 1])]);
        let status = generate_pod_status(&StatusInputs {
            pod: &p,
            observed: &o.containers,
            sandbox_ready: o.sandbox_ready,
            pod_is_terminal: false,
            host_ips: &[],
            pod_ips: &o.pod_ips,
            now: Timestamp::now(),
        });
        assert_eq!(status.phase.as_deref(), Some("Running"));
        let ready = status
            .conditions
            .unwrap()
            .into_iter()
            .find(|c| c.type_ == "Ready")
            .unwrap();
        assert_eq!(ready.status, "True");
        rt.sync_pod(&pod("u2")).await.unwrap();
        assert_eq!(
            rt.observed("u2").await.unwrap().pod_ips,
            vec![IpAddr::from([10, 42, 0, 2])]
        );
        rt.kill_pod("u1", None).await.unwrap();
        assert_eq!(rt.observed("u1").await.unwrap(), ObservedPod::default());
    }

    #[tokio::test]
    async fn exit_code_annotation_completes_never_restarting_pods() {
        let rt = FakeRuntime::new(Ipv4Addr::new(10, 42, 0, 0));
        let mut p = pod("job");
        p.spec.as_mut().unwrap().restart_policy = Some("Never".to_owned());
        let phase = |p: &Pod, o: &ObservedPod| {
            generate_pod_status(&StatusInputs {
                pod: p,
                observed: &o.containers,
                sandbox_ready: true,
                pod_is_terminal: false,
                host_ips: &[],
                pod_ips: &o.pod_ips,
                now: Timestamp::now(),
            })
            .phase
        };
        for (code, want) in [("0", "Succeeded"), ("3", "Failed")] {
            p.metadata.annotations =
                Some([(FAKE_EXIT_CODE_ANNOTATION.to_owned(), code.to_owned())].into());
            rt.sync_pod(&p).await.unwrap();
            let o = rt.observed("job").await.unwrap();
            assert_eq!(phase(&p, &o).as_deref(), Some(want));
        }
    }
}
