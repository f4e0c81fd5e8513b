//! Runtime state -> `ObservedPod`, as kubelet's `getPodContainerStatuses` +
//! `convertToAPIContainerStatuses`: the newest container of each name gives
//! the state, the one before it the last termination, the restart count
//! comes from the restartCount annotation. Pure functions.

use std::collections::HashMap;

use cri::proto;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;

use super::labels;
use crate::pod_worker::{ObservedContainer, ObservedState, Terminated};

/// The largest termination message kubelet reads (`maxMessageLength`... 4 KiB).
pub const MAX_TERMINATION_MESSAGE: usize = 4096;

/// A CRI timestamp (ns since the epoch, 0 = unset).
pub fn timestamp(nanos: i64) -> Option<Timestamp> {
    (nanos > 0)
        .then(|| Timestamp::from_nanosecond(i128::from(nanos)).ok())
        .flatten()
}

/// A container's restart count: its restartCount annotation, else its attempt.
pub fn attempt_of(status: &proto::ContainerStatus) -> u32 {
    status
        .annotations
        .get(labels::CONTAINER_RESTART_COUNT)
        .and_then(|v| v.parse().ok())
        .or_else(|| status.metadata.as_ref().map(|m| m.attempt))
        .unwrap_or(0)
}

/// Whether the container status is exited.
pub fn is_exited(status: &proto::ContainerStatus) -> bool {
    status.state == proto::ContainerState::ContainerExited as i32
}

/// The terminated state of an exited container; `message` is the
/// termination message read from its file (when the runtime had none).
pub fn terminated(
    status: &proto::ContainerStatus,
    runtime: &str,
    message: Option<String>,
) -> Terminated {
    let reason = if status.reason.is_empty() {
        if status.exit_code == 0 {
            "Completed"
        } else {
            "Error"
        }
        .to_owned()
    } else {
        status.reason.clone()
    };
    let message = if status.message.is_empty() {
        message.filter(|m| !m.is_empty())
    } else {
        Some(status.message.clone())
    };
    Terminated {
        exit_code: status.exit_code,
        signal: None,
        reason: Some(reason),
        message,
        started_at: timestamp(status.started_at),
        finished_at: timestamp(status.finished_at),
        container_id: Some(format!("{runtime}://{}", status.id)),
    }
}

/// One container name's runs, newest first, with their termination messages.
pub struct Runs<'a> {
    pub newest: &'a proto::ContainerStatus,
    pub newest_message: Option<String>,
    pub previous: Option<(&'a proto::ContainerStatus, Option<String>)>,
}

/// What the pod worker decided about a container that is not running: a
/// waiting reason (CrashLoopBackOff, ErrImagePull...) and its message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting {
    pub reason: String,
    pub message: Option<String>,
}

/// The observed state of one container.
pub fn observed_container(
    pod: &Pod,
    name: &str,
    runs: Option<&Runs<'_>>,
    waiting: Option<&Waiting>,
    runtime: &str,
) -> Option<ObservedContainer> {
    let spec_image = pod
        .spec
        .as_ref()
        .and_then(|s| {
            s.containers
                .iter()
                .chain(s.init_containers.iter().flatten())
                .find(|c| c.name == name)
        })
        .and_then(|c| c.image.clone())
        .unwrap_or_default();
    let Some(runs) = runs else {
        let w = waiting?;
        return Some(ObservedContainer {
            name: name.to_owned(),
            state: ObservedState::Waiting {
                reason: w.reason.clone(),
                message: w.message.clone(),
            },
            last_termination: None,
            restart_count: 0,
            image: spec_image,
            image_id: String::new(),
            container_id: String::new(),
            ready: false,
            started: Some(false),
        });
    };
    let s = runs.newest;
    let previous = runs
        .previous
        .as_ref()
        .filter(|(p, _)| is_exited(p))
        .map(|(p, m)| terminated(p, runtime, m.clone()));
    let running = s.state == proto::ContainerState::ContainerRunning as i32;
    let (state, last_termination) = if running {
        (
            ObservedState::Running {
                started_at: timestamp(s.started_at),
            },
            previous,
        )
    } else if is_exited(s) {
        let t = terminated(s, runtime, runs.newest_message.clone());
        match waiting {
            Some(w) => (
                ObservedState::Waiting {
                    reason: w.reason.clone(),
                    message: w.message.clone(),
                },
                Some(t),
            ),
            None => (ObservedState::Terminated(t), previous),
        }
    } else {
        (
            ObservedState::Waiting {
                reason: waiting
                    .map_or(crate::pod_worker::status::CONTAINER_CREATING, |w| {
                        w.reason.as_str()
                    })
                    .to_owned(),
                message: waiting.and_then(|w| w.message.clone()),
            },
            previous,
        )
    };
    let attempt = attempt_of(s);
    Some(ObservedContainer {
        name: name.to_owned(),
        state,
        last_termination,
        restart_count: i32::try_from(attempt).unwrap_or(i32::MAX),
        image: spec_image,
        image_id: s.image_ref.clone(),
        container_id: format!("{runtime}://{}", s.id),
        ready: running,
        started: Some(running),
    })
}

/// Container statuses grouped by container name, newest attempt first.
pub fn group_by_name(
    statuses: Vec<proto::ContainerStatus>,
) -> HashMap<String, Vec<proto::ContainerStatus>> {
    let mut out: HashMap<String, Vec<proto::ContainerStatus>> = HashMap::new();
    for s in statuses {
        let name = s
            .labels
            .get(labels::CONTAINER_NAME)
            .cloned()
            .or_else(|| s.metadata.as_ref().map(|m| m.name.clone()))
            .unwrap_or_default();
        out.entry(name).or_default().push(s);
    }
    for runs in out.values_mut() {
        runs.sort_by(|a, b| {
            attempt_of(b)
                .cmp(&attempt_of(a))
                .then(b.created_at.cmp(&a.created_at))
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{Container, PodSpec};

    use super::*;

    fn status(
        id: &str,
        attempt: u32,
        state: proto::ContainerState,
        exit: i32,
    ) -> proto::ContainerStatus {
        proto::ContainerStatus {
            id: id.to_owned(),
            metadata: Some(proto::ContainerMetadata {
                name: "app".to_owned(),
                attempt,
            }),
            state: state as i32,
            exit_code: exit,
            started_at: 1_700_000_000_000_000_000,
            finished_at: 1_700_000_001_000_000_000,
            image_ref: "sha256:abc".to_owned(),
            labels: [(labels::CONTAINER_NAME.to_owned(), "app".to_owned())].into(),
            annotations: [(
                labels::CONTAINER_RESTART_COUNT.to_owned(),
                attempt.to_string(),
            )]
            .into(),
            ..proto::ContainerStatus::default()
        }
    }

    fn pod() -> Pod {
        Pod {
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "app".to_owned(),
                    image: Some("busybox".to_owned()),
                    ..Container::default()
                }],
                ..PodSpec::default()
            }),
            ..Pod::default()
        }
    }

    #[test]
    fn crash_loop_shows_waiting_with_last_termination() {
        let groups = group_by_name(vec![
            status("a", 0, proto::ContainerState::ContainerExited, 1),
            status("b", 1, proto::ContainerState::ContainerExited, 2),
        ]);
        let runs = &groups["app"];
        assert_eq!(runs[0].id, "b");
        let r = Runs {
            newest: &runs[0],
            newest_message: None,
            previous: Some((&runs[1], None)),
        };
        let w = Waiting {
            reason: "CrashLoopBackOff".to_owned(),
            message: Some("back-off".to_owned()),
        };
        let o = observed_container(&pod(), "app", Some(&r), Some(&w), "r8s-cri").unwrap();
        assert!(
            matches!(o.state, ObservedState::Waiting { ref reason, .. } if reason == "CrashLoopBackOff")
        );
        let last = o.last_termination.unwrap();
        assert_eq!(last.exit_code, 2);
        assert_eq!(last.reason.as_deref(), Some("Error"));
        assert_eq!(o.restart_count, 1);
        assert_eq!(o.container_id, "r8s-cri://b");
        let o = observed_container(&pod(), "app", Some(&r), None, "r8s-cri").unwrap();
        assert!(matches!(o.state, ObservedState::Terminated(ref t) if t.exit_code == 2));
        assert_eq!(o.last_termination.unwrap().exit_code, 1);
    }

    #[test]
    fn running_container_is_ready_and_unknown_waits_only_with_a_reason() {
        let s = status("a", 0, proto::ContainerState::ContainerRunning, 0);
        let r = Runs {
            newest: &s,
            newest_message: None,
            previous: None,
        };
        let o = observed_container(&pod(), "app", Some(&r), None, "containerd").unwrap();
        assert!(o.ready);
        assert_eq!(o.image_id, "sha256:abc");
        assert!(observed_container(&pod(), "app", None, None, "x").is_none());
    }
}
