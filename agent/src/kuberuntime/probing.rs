//! The runtime side of container probes: hands what runs to the probe
//! workers (`crate::probe::ProbeManager`), turns their results into the
//! containers' started/ready flags, and kills containers whose liveness or
//! startup probe failed (kubelet's `computePodActions` probe branch).

use std::collections::HashMap;
use std::net::IpAddr;

use cri::proto;
use k8s_openapi::api::core::v1::{Container, Pod};

use super::events::{EventRecorder, EventType};
use super::{CriRuntime, grace_period, observe};
use crate::pod_worker::ObservedContainer;
use crate::probe::{ContainerTarget, ProbeEvents, ProbeKind};

/// Probe events go out as kubelet's, on the probed container.
pub(super) struct ProbeEventSink(pub EventRecorder);

impl ProbeEvents for ProbeEventSink {
    fn warning(&self, pod: &Pod, container: &str, reason: &str, message: &str) {
        self.0
            .record(pod, Some(container), EventType::Warning, reason, message);
    }
}

/// What a container restart after a failed probe looks like.
pub(super) struct ProbeKill {
    pub message: String,
    pub grace: i64,
    pub restart: bool,
}

/// The kill decision for a container whose `kind` probe failed.
pub(super) fn probe_kill(pod: &Pod, c: &Container, kind: ProbeKind, sidecar: bool) -> ProbeKill {
    let restart =
        sidecar || pod.spec.as_ref().and_then(|s| s.restart_policy.as_deref()) != Some("Never");
    let mut message = format!(
        "Container {} failed {} probe",
        c.name,
        kind.as_str().to_lowercase()
    );
    if restart {
        message.push_str(", will be restarted");
    }
    // The probe-level terminationGracePeriodSeconds wins over the pod's.
    let grace = kind
        .of(c)
        .and_then(|p| p.termination_grace_period_seconds)
        .map_or_else(
            || grace_period(Some(pod), None),
            |g| g.max(super::MIN_GRACE_PERIOD_SECONDS),
        );
    ProbeKill {
        message,
        grace,
        restart,
    }
}

impl CriRuntime {
    /// Gives the probe workers the pod's current containers and applies
    /// their results: a running container is started once its startup
    /// probe passed and ready once its readiness probe passed.
    pub(super) fn apply_probes(
        &self,
        pod: &Pod,
        groups: &HashMap<String, Vec<proto::ContainerStatus>>,
        pod_ips: &[IpAddr],
        containers: &mut [ObservedContainer],
    ) {
        if pod.metadata.uid.is_none() {
            return;
        }
        let targets = groups
            .iter()
            .filter_map(|(name, runs)| {
                let s = runs.first()?;
                Some(ContainerTarget {
                    name: name.clone(),
                    id: s.id.clone(),
                    running: s.state == proto::ContainerState::ContainerRunning as i32,
                    started_at: observe::timestamp(s.started_at),
                })
            })
            .collect();
        self.probes
            .update_pod(pod, pod_ips.first().map(ToString::to_string), targets);
        for o in containers.iter_mut() {
            let running = matches!(o.state, crate::pod_worker::ObservedState::Running { .. });
            let probed = crate::probe::manager::probed_container(pod, &o.name).is_some();
            if !running || !probed {
                continue;
            }
            let Some(id) = groups
                .get(&o.name)
                .and_then(|runs| runs.first())
                .map(|s| s.id.clone())
            else {
                continue;
            };
            let started = self.probes.started(pod, &o.name, &id);
            o.started = Some(started);
            o.ready = self.probes.ready(pod, &o.name, &id);
        }
    }

    /// Kills a running container whose liveness or startup probe failed;
    /// returns whether it should be started again.
    pub(super) async fn kill_unhealthy(
        &self,
        pod: &Pod,
        c: &Container,
        status: &proto::ContainerStatus,
        sidecar: bool,
    ) -> Option<bool> {
        let kind = self.probes.failed(pod, &c.name, &status.id)?;
        let kill = probe_kill(pod, c, kind, sidecar);
        tracing::info!(pod = ?pod.metadata.name, container = %c.name, probe = kind.as_str(), "container failed its probe, killing it");
        self.stop_container(Some(pod), status, kill.grace, &kill.message)
            .await;
        Some(kill.restart)
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{PodSpec, Probe};

    use super::*;

    #[test]
    fn probe_kills_say_whether_the_container_restarts() {
        let c = Container {
            name: "app".to_owned(),
            liveness_probe: Some(Probe {
                termination_grace_period_seconds: Some(5),
                ..Probe::default()
            }),
            startup_probe: Some(Probe::default()),
            ..Container::default()
        };
        let mut pod = Pod {
            spec: Some(PodSpec {
                termination_grace_period_seconds: Some(20),
                ..PodSpec::default()
            }),
            ..Pod::default()
        };
        let k = probe_kill(&pod, &c, ProbeKind::Liveness, false);
        assert_eq!(
            k.message,
            "Container app failed liveness probe, will be restarted"
        );
        assert_eq!((k.grace, k.restart), (5, true));
        pod.spec.as_mut().unwrap().restart_policy = Some("Never".to_owned());
        let k = probe_kill(&pod, &c, ProbeKind::Startup, false);
        assert_eq!(k.message, "Container app failed startup probe");
        assert_eq!((k.grace, k.restart), (20, false));
    }
}
