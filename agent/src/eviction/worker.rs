//! The pod worker's side of evictions and admission: before a sync, a pod
//! the agent terminates is killed (once) and gets its final status; a new
//! pod is admitted or rejected; a pod already Evicted is never restarted,
//! and no terminal (Succeeded or Failed) pod is synced again.

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateTerminated, ContainerStatus, Pod, PodCondition, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;

use super::admission::admit;
use super::handle::Termination;
use super::message::{REASON, TERMINATION_BY_KUBELET};
use crate::kuberuntime::events::EventType;
use crate::pod_worker::manager::{WorkerContext, WorkerError};
use crate::pod_worker::status::{StatusInputs, generate_pod_status};
use crate::qos::get_pod_qos;

fn phase(pod: &Pod) -> Option<&str> {
    pod.status.as_ref().and_then(|s| s.phase.as_deref())
}

/// kubelet's `TerminatePod`: the containers are gone with the pod's
/// sandbox, so one that has no terminated state is reported as unknown,
/// never as waiting; its restart count and last state stay as they were
/// (it was killed, not restarted).
fn terminate_statuses(
    statuses: Option<&mut Vec<ContainerStatus>>,
    old: Option<&Vec<ContainerStatus>>,
    only_started: bool,
) {
    for s in statuses.into_iter().flatten() {
        if s.state.as_ref().is_some_and(|st| st.terminated.is_some()) {
            continue;
        }
        let before = old.into_iter().flatten().find(|o| o.name == s.name);
        let started =
            before.is_some_and(|o| o.state.as_ref().is_some_and(|st| st.running.is_some()));
        if only_started && !started {
            continue;
        }
        if let Some(o) = before {
            s.restart_count = o.restart_count;
            s.last_state = o.last_state.clone();
        }
        s.ready = false;
        s.started = Some(false);
        s.state = Some(ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: 137,
                reason: Some("ContainerStatusUnknown".to_owned()),
                message: Some(
                    "The container could not be located when the pod was terminated".to_owned(),
                ),
                ..ContainerStateTerminated::default()
            }),
            ..ContainerState::default()
        });
    }
}

/// The final status of a terminated pod.
fn final_status(pod: &Pod, base: Option<PodStatus>, t: &Termination, now: Timestamp) -> PodStatus {
    let mut status = base.unwrap_or_default();
    let old = pod.status.as_ref();
    terminate_statuses(
        status.container_statuses.as_mut(),
        old.and_then(|s| s.container_statuses.as_ref()),
        false,
    );
    // Init containers that never started stay waiting, as kubelet's.
    terminate_statuses(
        status.init_container_statuses.as_mut(),
        old.and_then(|s| s.init_container_statuses.as_ref()),
        true,
    );
    status.phase = Some("Failed".to_owned());
    status.reason = Some(t.reason.clone());
    status.message = Some(t.message.clone());
    status.qos_class = Some(get_pod_qos(pod).as_str().to_owned());
    if t.disruption_target {
        let conditions = status.conditions.get_or_insert_with(Vec::new);
        conditions.retain(|c| c.type_ != "DisruptionTarget");
        conditions.push(PodCondition {
            type_: "DisruptionTarget".to_owned(),
            status: "True".to_owned(),
            reason: Some(TERMINATION_BY_KUBELET.to_owned()),
            message: Some(t.message.clone()),
            last_transition_time: Some(Time(now)),
            ..PodCondition::default()
        });
    }
    status
}

async fn write_status(
    ctx: &WorkerContext,
    pod: &Pod,
    status: &PodStatus,
) -> Result<(), WorkerError> {
    let api: Api<Pod> = Api::namespaced(
        ctx.client.clone(),
        pod.metadata.namespace.as_deref().unwrap_or("default"),
    );
    let patch = json!({ "metadata": { "uid": pod.metadata.uid }, "status": status });
    api.patch_status(
        pod.metadata.name.as_deref().unwrap_or_default(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
    .map_err(|source| WorkerError::Api {
        step: "patch pod status",
        source,
    })?;
    Ok(())
}

async fn finish(
    ctx: &WorkerContext,
    pod: &Pod,
    uid: &str,
    t: &Termination,
) -> Result<(), WorkerError> {
    let now = Timestamp::now();
    let base = if t.kill {
        if !ctx.eviction.is_killed(uid) {
            ctx.runtime.kill_pod(uid, t.grace_period).await?;
            ctx.eviction.mark_killed(uid);
            tracing::info!(pod = ?pod.metadata.name, grace_period = ?t.grace_period, "evicted pod killed");
        }
        let observed = ctx.runtime.observed(uid).await?;
        Some(generate_pod_status(&StatusInputs {
            pod,
            observed: &observed.containers,
            sandbox_ready: false,
            pod_is_terminal: true,
            host_ips: &ctx.host_ips,
            pod_ips: &[],
            now,
        }))
    } else {
        None
    };
    let done = phase(pod) == Some("Failed")
        && pod.status.as_ref().and_then(|s| s.reason.as_deref()) == Some(t.reason.as_str());
    if !done {
        write_status(ctx, pod, &final_status(pod, base, t, now)).await?;
    }
    Ok(())
}

/// Runs before each sync of `pod`; true when the pod must not be synced
/// (terminated by the agent, rejected now, or terminal).
pub async fn intercept(ctx: &WorkerContext, pod: &Pod) -> Result<bool, WorkerError> {
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    if let Some(t) = ctx.eviction.termination(&uid) {
        finish(ctx, pod, &uid, &t).await?;
        return Ok(true);
    }
    let evicted = phase(pod) == Some("Failed")
        && pod.status.as_ref().and_then(|s| s.reason.as_deref()) == Some(REASON);
    if evicted {
        // Terminated by an earlier run of the agent: keep it stopped.
        if ctx.eviction.mark_killed(&uid) {
            ctx.runtime.kill_pod(&uid, Some(0)).await?;
        }
        return Ok(true);
    }
    if matches!(phase(pod), Some("Succeeded" | "Failed")) {
        // As kubelet's pod worker, which never syncs a terminated pod again:
        // the status it reported last stays, and a container the container
        // GC removed (node-level disk reclaim) is not started anew. Its
        // sandbox stops once (the pod's address goes back to the pool).
        if ctx.eviction.mark_killed(&uid) {
            ctx.runtime.terminate_pod(&uid).await?;
        }
        return Ok(true);
    }
    // Pods past Pending were admitted by an earlier run of the agent.
    let new = matches!(phase(pod), None | Some("Pending"));
    if ctx.eviction.mark_admitted(&uid)
        && new
        && let Err(rejection) = admit(pod, &ctx.eviction.conditions())
    {
        tracing::info!(pod = ?pod.metadata.name, message = %rejection.message, "pod rejected at admission");
        if let Some(r) = &ctx.eviction.recorder {
            r.record(
                pod,
                None,
                EventType::Warning,
                rejection.reason,
                &rejection.message,
            );
        }
        let t = Termination {
            kill: false,
            grace_period: None,
            reason: rejection.reason.to_owned(),
            message: format!("Pod was rejected: {}", rejection.message),
            disruption_target: false,
        };
        ctx.eviction.terminate(&uid, t.clone());
        finish(ctx, pod, &uid, &t).await?;
        return Ok(true);
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;
    use std::sync::{Arc, Mutex};

    use k8s_openapi::api::core::v1::{Container, PodSpec};
    use kube::api::PostParams;

    use super::*;
    use crate::node::fake_api;
    use crate::pod_worker::{FakeRuntime, PodRuntime, sync_pod};

    #[tokio::test]
    async fn a_terminal_pod_keeps_its_status_when_its_containers_are_gone() {
        let state = Arc::new(Mutex::new(fake_api::State::default()));
        let client = fake_api::client(state.clone());
        let api: Api<Pod> = Api::namespaced(client.clone(), "default");
        let completed = ContainerStatus {
            name: "app".to_owned(),
            state: Some(ContainerState {
                terminated: Some(ContainerStateTerminated {
                    exit_code: 0,
                    reason: Some("Completed".to_owned()),
                    container_id: Some("r8s-cri://gone".to_owned()),
                    ..ContainerStateTerminated::default()
                }),
                ..ContainerState::default()
            }),
            ..ContainerStatus::default()
        };
        let mut pod = Pod::default();
        pod.metadata.name = Some("done".to_owned());
        pod.metadata.namespace = Some("default".to_owned());
        pod.spec = Some(PodSpec {
            restart_policy: Some("Never".to_owned()),
            containers: vec![Container {
                name: "app".to_owned(),
                image: Some("busybox".to_owned()),
                ..Container::default()
            }],
            ..PodSpec::default()
        });
        pod.status = Some(PodStatus {
            phase: Some("Succeeded".to_owned()),
            container_statuses: Some(vec![completed]),
            ..PodStatus::default()
        });
        let stored = api.create(&PostParams::default(), &pod).await.unwrap();
        // The runtime has nothing of the pod: its dead container was removed.
        let runtime = Arc::new(FakeRuntime::new(Ipv4Addr::new(10, 42, 9, 0)));
        let ctx = WorkerContext {
            client,
            runtime: runtime.clone(),
            host_ips: Vec::new(),
            eviction: Arc::default(),
        };
        sync_pod(&ctx, &stored).await.unwrap();
        let uid = stored.metadata.uid.clone().unwrap();
        assert!(
            runtime.observed(&uid).await.unwrap().containers.is_empty(),
            "a terminal pod is not started again"
        );
        assert_eq!(api.get("done").await.unwrap().status, stored.status);
        let patches = state
            .lock()
            .unwrap()
            .requests
            .iter()
            .filter(|r| r.starts_with("PATCH"))
            .count();
        assert_eq!(patches, 0, "the last reported status stays as it was");
    }

    #[test]
    fn evicted_status_is_failed_with_a_disruption_target_condition() {
        let t = Termination {
            kill: true,
            grace_period: Some(0),
            reason: "Evicted".to_owned(),
            message: "The node was low on resource: memory. ".to_owned(),
            disruption_target: true,
        };
        let s = final_status(&Pod::default(), None, &t, Timestamp::UNIX_EPOCH);
        assert_eq!(s.phase.as_deref(), Some("Failed"));
        assert_eq!(s.reason.as_deref(), Some("Evicted"));
        assert_eq!(s.qos_class.as_deref(), Some("BestEffort"));
        let c = &s.conditions.unwrap()[0];
        assert_eq!(c.type_, "DisruptionTarget");
        assert_eq!(c.reason.as_deref(), Some("TerminationByKubelet"));
        assert_eq!(
            c.message.as_deref(),
            Some("The node was low on resource: memory. ")
        );
    }

    #[test]
    fn rejected_status_has_no_disruption_target() {
        let t = Termination {
            kill: false,
            grace_period: None,
            reason: "Evicted".to_owned(),
            message: "Pod was rejected: The node had condition: [DiskPressure]. ".to_owned(),
            disruption_target: false,
        };
        let s = final_status(&Pod::default(), None, &t, Timestamp::UNIX_EPOCH);
        assert!(s.conditions.is_none());
        assert_eq!(
            s.message.as_deref(),
            Some("Pod was rejected: The node had condition: [DiskPressure]. ")
        );
    }

    #[test]
    fn containers_gone_with_the_pod_are_terminated_unknown_not_restarted() {
        let t = Termination {
            kill: true,
            grace_period: Some(0),
            reason: "Evicted".to_owned(),
            message: "m".to_owned(),
            disruption_target: false,
        };
        let running = ContainerStatus {
            name: "app".to_owned(),
            restart_count: 2,
            ready: true,
            state: Some(ContainerState {
                running: Some(Default::default()),
                ..ContainerState::default()
            }),
            ..ContainerStatus::default()
        };
        let pod = Pod {
            status: Some(PodStatus {
                container_statuses: Some(vec![running]),
                ..PodStatus::default()
            }),
            ..Pod::default()
        };
        // What the status generator makes of a running container that vanished.
        let vanished = ContainerStatus {
            name: "app".to_owned(),
            restart_count: 3,
            state: Some(ContainerState {
                waiting: Some(Default::default()),
                ..ContainerState::default()
            }),
            ..ContainerStatus::default()
        };
        let base = PodStatus {
            container_statuses: Some(vec![vanished]),
            ..PodStatus::default()
        };
        let s = final_status(&pod, Some(base), &t, Timestamp::UNIX_EPOCH);
        let c = &s.container_statuses.unwrap()[0];
        assert_eq!(c.restart_count, 2, "killed, not restarted");
        assert!(!c.ready);
        let term = c
            .state
            .as_ref()
            .and_then(|st| st.terminated.as_ref())
            .unwrap();
        assert_eq!(term.exit_code, 137);
        assert_eq!(term.reason.as_deref(), Some("ContainerStatusUnknown"));
        assert_eq!(
            term.message.as_deref(),
            Some("The container could not be located when the pod was terminated")
        );
    }
}
