//! Pod status from the spec and what the runtime observed, as kubelet's
//! `generateAPIPodStatus` + `getPhase` + the status manager's condition
//! times. Pure functions; the pod worker writes the result to `pods/status`.

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus, HostIP, Pod, PodCondition, PodIP, PodSpec, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use crate::qos::compute_pod_qos;

/// Default waiting reason of a container not created yet.
pub const CONTAINER_CREATING: &str = "ContainerCreating";
/// Default waiting reason while init containers run.
pub const POD_INITIALIZING: &str = "PodInitializing";

/// A finished container run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Terminated {
    pub exit_code: i32,
    pub signal: Option<i32>,
    pub reason: Option<String>,
    pub message: Option<String>,
    pub started_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
    pub container_id: Option<String>,
}

/// A container's current state as the runtime reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ObservedState {
    Waiting {
        reason: String,
        message: Option<String>,
    },
    Running {
        started_at: Option<Timestamp>,
    },
    Terminated(Terminated),
}

/// One container as observed on the node (init or regular, by name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedContainer {
    pub name: String,
    pub state: ObservedState,
    pub last_termination: Option<Terminated>,
    pub restart_count: i32,
    pub image: String,
    pub image_id: String,
    pub container_id: String,
    /// Readiness probe result (true when no probe and running).
    pub ready: bool,
    /// Startup probe result.
    pub started: Option<bool>,
}

/// Everything a pod status is computed from.
#[derive(Debug, Clone)]
pub struct StatusInputs<'a> {
    pub pod: &'a Pod,
    pub observed: &'a [ObservedContainer],
    /// The sandbox exists with its network configured.
    pub sandbox_ready: bool,
    /// The kubelet decided the pod is finished (deleted, evicted, deadline).
    pub pod_is_terminal: bool,
    pub host_ips: &'a [IpAddr],
    pub pod_ips: &'a [IpAddr],
    pub now: Timestamp,
}

/// API times carry whole seconds; truncating here keeps a regenerated status
/// equal to the stored one, so unchanged pods are not re-patched.
fn seconds(t: Timestamp) -> Time {
    Time(Timestamp::from_second(t.as_second()).unwrap_or(t))
}

fn time(t: Option<Timestamp>) -> Option<Time> {
    t.map(seconds)
}

fn terminated_state(t: &Terminated) -> ContainerStateTerminated {
    ContainerStateTerminated {
        exit_code: t.exit_code,
        signal: t.signal,
        reason: t.reason.clone(),
        message: t.message.clone(),
        started_at: time(t.started_at),
        finished_at: time(t.finished_at),
        container_id: t.container_id.clone(),
    }
}

fn waiting(reason: &str) -> ContainerState {
    ContainerState {
        waiting: Some(ContainerStateWaiting {
            reason: Some(reason.to_owned()),
            message: None,
        }),
        ..ContainerState::default()
    }
}

fn api_status(o: &ObservedContainer) -> ContainerStatus {
    let state = match &o.state {
        ObservedState::Waiting { reason, message } => ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some(reason.clone()),
                message: message.clone(),
            }),
            ..ContainerState::default()
        },
        ObservedState::Running { started_at } => ContainerState {
            running: Some(ContainerStateRunning {
                started_at: time(*started_at),
            }),
            ..ContainerState::default()
        },
        ObservedState::Terminated(t) => ContainerState {
            terminated: Some(terminated_state(t)),
            ..ContainerState::default()
        },
    };
    ContainerStatus {
        name: o.name.clone(),
        state: Some(state),
        last_state: Some(
            o.last_termination
                .as_ref()
                .map(|t| ContainerState {
                    terminated: Some(terminated_state(t)),
                    ..ContainerState::default()
                })
                .unwrap_or_default(),
        ),
        ready: o.ready,
        restart_count: o.restart_count,
        image: o.image.clone(),
        image_id: o.image_id.clone(),
        container_id: (!o.container_id.is_empty()).then(|| o.container_id.clone()),
        started: o.started,
        ..ContainerStatus::default()
    }
}

fn is_terminated(s: &ContainerStatus) -> bool {
    s.state.as_ref().is_some_and(|st| st.terminated.is_some())
}

fn is_running(s: &ContainerStatus) -> bool {
    s.state.as_ref().is_some_and(|st| st.running.is_some())
}

fn waiting_reason(s: &ContainerStatus) -> Option<&str> {
    s.state
        .as_ref()
        .and_then(|st| st.waiting.as_ref())
        .and_then(|w| w.reason.as_deref())
}

fn last_terminated(s: &ContainerStatus) -> Option<&ContainerStateTerminated> {
    s.last_state.as_ref().and_then(|l| l.terminated.as_ref())
}

/// Container statuses for `containers` (kubelet's `convertToAPIContainerStatuses`).
fn convert_statuses(
    pod: &Pod,
    containers: &[Container],
    observed: &[ObservedContainer],
    old: &[ContainerStatus],
    has_init_containers: bool,
) -> Vec<ContainerStatus> {
    let default_reason = if has_init_containers {
        POD_INITIALIZING
    } else {
        CONTAINER_CREATING
    };
    let deleted = pod.metadata.deletion_timestamp.is_some();
    containers
        .iter()
        .map(|c| {
            if let Some(o) = observed.iter().find(|o| o.name == c.name) {
                return api_status(o);
            }
            let old = old.iter().find(|s| s.name == c.name);
            if let Some(old) = old.filter(|s| is_terminated(s)) {
                return old.clone();
            }
            let mut status = ContainerStatus {
                name: c.name.clone(),
                image: c.image.clone().unwrap_or_default(),
                state: Some(waiting(default_reason)),
                last_state: Some(ContainerState::default()),
                started: Some(false),
                ..ContainerStatus::default()
            };
            if let Some(old) = old {
                status.restart_count = old.restart_count;
                status.last_state = old.last_state.clone();
                // A container that was running and vanished has terminated even
                // if its exit code is lost; saying so keeps the pod from going
                // back to Pending.
                if is_running(old) && last_terminated(&status).is_none() {
                    status.last_state = Some(ContainerState {
                        terminated: Some(ContainerStateTerminated {
                            exit_code: 137,
                            reason: Some("ContainerStatusUnknown".to_owned()),
                            message: Some(format!(
                                "The container could not be located when the pod was {}.  The container used to be Running",
                                if deleted { "deleted" } else { "terminated" }
                            )),
                            ..ContainerStateTerminated::default()
                        }),
                        ..ContainerState::default()
                    });
                    if !deleted {
                        status.restart_count += 1;
                    }
                }
            }
            status
        })
        .collect()
}

fn is_restartable_init(c: &Container) -> bool {
    c.restart_policy.as_deref() == Some("Always")
}

fn find<'a>(statuses: &'a [ContainerStatus], name: &str) -> Option<&'a ContainerStatus> {
    statuses.iter().find(|s| s.name == name)
}

/// Whether any regular container has run (kubelet's `HasAnyRegularContainerStarted`).
fn any_regular_container_started(spec: &PodSpec, statuses: &[ContainerStatus]) -> bool {
    spec.containers.iter().any(|c| {
        find(statuses, &c.name).is_some_and(|s| {
            is_running(s)
                || is_terminated(s)
                || (waiting_reason(s).is_some() && last_terminated(s).is_some())
        })
    })
}

/// The pod phase (kubelet's `getPhase`).
pub fn get_phase(pod: &Pod, statuses: &[ContainerStatus], pod_is_terminal: bool) -> &'static str {
    let default_spec = PodSpec::default();
    let spec = pod.spec.as_ref().unwrap_or(&default_spec);
    let restart_policy = spec.restart_policy.as_deref().unwrap_or("Always");
    let init = spec.init_containers.as_deref().unwrap_or_default();
    let mut pending_initialization = 0;
    let mut failed_initialization = 0;
    for c in init.iter().filter(|c| !is_restartable_init(c)) {
        let Some(s) = find(statuses, &c.name) else {
            pending_initialization += 1;
            continue;
        };
        if is_running(s) {
            pending_initialization += 1;
        } else if let Some(t) = s.state.as_ref().and_then(|st| st.terminated.as_ref()) {
            if t.exit_code != 0 {
                failed_initialization += 1;
            }
        } else if waiting_reason(s).is_some()
            || s.state.as_ref().is_some_and(|st| st.waiting.is_some())
        {
            match last_terminated(s) {
                Some(t) if t.exit_code != 0 => failed_initialization += 1,
                Some(_) => {}
                None => pending_initialization += 1,
            }
        } else {
            pending_initialization += 1;
        }
    }

    let (mut unknown, mut running, mut waiting, mut stopped, mut succeeded) = (0, 0, 0, 0, 0);
    for c in init.iter().filter(|c| is_restartable_init(c)) {
        let Some(s) = find(statuses, &c.name) else {
            unknown += 1;
            continue;
        };
        if is_running(s) {
            if s.started != Some(true) {
                pending_initialization += 1;
            }
            running += 1;
        } else if is_terminated(s) {
            // Terminated sidecars do not count toward the phase.
        } else if s.state.as_ref().is_some_and(|st| st.waiting.is_some()) {
            if last_terminated(s).is_none() {
                pending_initialization += 1;
                waiting += 1;
            }
        } else {
            pending_initialization += 1;
            unknown += 1;
        }
    }
    for c in &spec.containers {
        let Some(s) = find(statuses, &c.name) else {
            unknown += 1;
            continue;
        };
        if is_running(s) {
            running += 1;
        } else if let Some(t) = s.state.as_ref().and_then(|st| st.terminated.as_ref()) {
            stopped += 1;
            if t.exit_code == 0 {
                succeeded += 1;
            }
        } else if s.state.as_ref().is_some_and(|st| st.waiting.is_some()) {
            if last_terminated(s).is_some() {
                stopped += 1;
            } else {
                waiting += 1;
            }
        } else {
            unknown += 1;
        }
    }

    if failed_initialization > 0 && restart_policy == "Never" {
        return "Failed";
    }
    if (pending_initialization > 0 && !any_regular_container_started(spec, statuses)) || waiting > 0
    {
        return "Pending";
    }
    if running > 0 && unknown == 0 {
        return "Running";
    }
    if running == 0 && stopped > 0 && unknown == 0 {
        if pod_is_terminal && !is_static_pod(pod) {
            return if stopped == succeeded {
                "Succeeded"
            } else {
                "Failed"
            };
        }
        if restart_policy == "Always" {
            return "Running";
        }
        if stopped == succeeded {
            return "Succeeded";
        }
        if restart_policy == "Never" {
            return "Failed";
        }
        return "Running";
    }
    "Pending"
}

fn is_static_pod(pod: &Pod) -> bool {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("kubernetes.io/config.source"))
        .is_some_and(|s| s != "api")
}

fn condition(
    kind: &str,
    status: &str,
    reason: Option<&str>,
    message: Option<String>,
) -> PodCondition {
    PodCondition {
        type_: kind.to_owned(),
        status: status.to_owned(),
        reason: reason.map(str::to_owned),
        message,
        ..PodCondition::default()
    }
}

/// Go's `%s` of a `[]string`: `[a b]`.
fn go_list(names: &[&str]) -> String {
    format!("[{}]", names.join(" "))
}

/// kubelet's `GeneratePodInitializedCondition`.
pub fn initialized_condition(
    spec: &PodSpec,
    statuses: &[ContainerStatus],
    phase: &str,
) -> PodCondition {
    let init = spec.init_containers.as_deref().unwrap_or_default();
    let mut unknown = Vec::new();
    let mut incomplete = Vec::new();
    for c in init {
        let Some(s) = find(statuses, &c.name) else {
            unknown.push(c.name.as_str());
            continue;
        };
        if is_restartable_init(c) {
            if s.started != Some(true) {
                incomplete.push(c.name.as_str());
            }
            continue;
        }
        let done = s
            .state
            .as_ref()
            .and_then(|st| st.terminated.as_ref())
            .is_some_and(|t| t.exit_code == 0);
        if !done {
            incomplete.push(c.name.as_str());
        }
    }
    if phase == "Succeeded" && unknown.is_empty() {
        return condition("Initialized", "True", Some("PodCompleted"), None);
    }
    if any_regular_container_started(spec, statuses) {
        return condition("Initialized", "True", None, None);
    }
    let mut messages = Vec::new();
    if !unknown.is_empty() {
        messages.push(format!(
            "containers with unknown status: {}",
            go_list(&unknown)
        ));
    }
    if !incomplete.is_empty() {
        messages.push(format!(
            "containers with incomplete status: {}",
            go_list(&incomplete)
        ));
    }
    if messages.is_empty() {
        condition("Initialized", "True", None, None)
    } else {
        condition(
            "Initialized",
            "False",
            Some("ContainersNotInitialized"),
            Some(messages.join(", ")),
        )
    }
}

/// kubelet's `GenerateContainersReadyCondition`.
pub fn containers_ready_condition(
    spec: &PodSpec,
    statuses: &[ContainerStatus],
    phase: &str,
) -> PodCondition {
    let mut unknown = Vec::new();
    let mut unready = Vec::new();
    let sidecars = spec
        .init_containers
        .iter()
        .flatten()
        .filter(|c| is_restartable_init(c));
    for c in sidecars.chain(&spec.containers) {
        match find(statuses, &c.name) {
            Some(s) if !s.ready => unready.push(c.name.as_str()),
            Some(_) => {}
            None => unknown.push(c.name.as_str()),
        }
    }
    if phase == "Succeeded" && unknown.is_empty() {
        return condition("ContainersReady", "False", Some("PodCompleted"), None);
    }
    if phase == "Failed" {
        return condition("ContainersReady", "False", Some("PodFailed"), None);
    }
    let mut messages = Vec::new();
    if !unknown.is_empty() {
        messages.push(format!(
            "containers with unknown status: {}",
            go_list(&unknown)
        ));
    }
    if !unready.is_empty() {
        messages.push(format!(
            "containers with unready status: {}",
            go_list(&unready)
        ));
    }
    if messages.is_empty() {
        condition("ContainersReady", "True", None, None)
    } else {
        condition(
            "ContainersReady",
            "False",
            Some("ContainersNotReady"),
            Some(messages.join(", ")),
        )
    }
}

/// kubelet's `GeneratePodReadyCondition`: ContainersReady plus readiness gates.
pub fn ready_condition(
    spec: &PodSpec,
    conditions: &[PodCondition],
    statuses: &[ContainerStatus],
    phase: &str,
) -> PodCondition {
    let cr = containers_ready_condition(spec, statuses, phase);
    if cr.status != "True" {
        return condition("Ready", &cr.status, cr.reason.as_deref(), cr.message);
    }
    let mut messages = Vec::new();
    for gate in spec.readiness_gates.iter().flatten() {
        match conditions.iter().find(|c| c.type_ == gate.condition_type) {
            None => messages.push(format!(
                "corresponding condition of pod readiness gate \"{}\" does not exist.",
                gate.condition_type
            )),
            Some(c) if c.status != "True" => messages.push(format!(
                "the status of pod readiness gate \"{}\" is not \"True\", but {}",
                gate.condition_type, c.status
            )),
            Some(_) => {}
        }
    }
    if messages.is_empty() {
        condition("Ready", "True", None, None)
    } else {
        condition(
            "Ready",
            "False",
            Some("ReadinessGatesNotReady"),
            Some(messages.join(", ")),
        )
    }
}

/// Condition types the kubelet owns (others are preserved from the old status).
const KUBELET_CONDITIONS: [&str; 5] = [
    "PodScheduled",
    "Ready",
    "Initialized",
    "ContainersReady",
    "PodReadyToStartContainers",
];

/// The full API pod status (kubelet's `generateAPIPodStatus` plus the status
/// manager's start time and condition transition times).
pub fn generate_pod_status(inputs: &StatusInputs<'_>) -> PodStatus {
    let pod = inputs.pod;
    let default_spec = PodSpec::default();
    let spec = pod.spec.as_ref().unwrap_or(&default_spec);
    let old = pod.status.clone().unwrap_or_default();
    let init_specs = spec.init_containers.as_deref().unwrap_or_default();
    let has_init = !init_specs.is_empty();

    let init_statuses = convert_statuses(
        pod,
        init_specs,
        inputs.observed,
        old.init_container_statuses.as_deref().unwrap_or_default(),
        has_init,
    );
    let mut statuses = convert_statuses(
        pod,
        &spec.containers,
        inputs.observed,
        old.container_statuses.as_deref().unwrap_or_default(),
        has_init,
    );
    statuses.sort_by(|a, b| a.name.cmp(&b.name));
    let all: Vec<ContainerStatus> = init_statuses.iter().chain(&statuses).cloned().collect();

    let mut phase = get_phase(pod, &all, inputs.pod_is_terminal);
    // The API server refuses to move a pod out of a terminal phase.
    if let Some(old_phase @ ("Failed" | "Succeeded")) = old.phase.as_deref()
        && phase != old_phase
    {
        tracing::warn!(pod = ?pod.metadata.name, from = old_phase, to = phase, "pod attempted illegal phase transition");
        phase = if old_phase == "Failed" {
            "Failed"
        } else {
            "Succeeded"
        };
    }

    let mut conditions: Vec<PodCondition> = old
        .conditions
        .iter()
        .flatten()
        .filter(|c| !KUBELET_CONDITIONS.contains(&c.type_.as_str()))
        .cloned()
        .collect();
    conditions.push(condition(
        "PodReadyToStartContainers",
        if inputs.sandbox_ready {
            "True"
        } else {
            "False"
        },
        None,
        None,
    ));
    conditions.push(initialized_condition(spec, &all, phase));
    let ready = ready_condition(spec, &conditions, &all, phase);
    conditions.push(ready);
    conditions.push(containers_ready_condition(spec, &all, phase));
    conditions.push(condition("PodScheduled", "True", None, None));
    let old_conditions: BTreeMap<&str, &PodCondition> = old
        .conditions
        .iter()
        .flatten()
        .map(|c| (c.type_.as_str(), c))
        .collect();
    for c in &mut conditions {
        if c.last_transition_time.is_some() {
            continue;
        }
        c.last_transition_time = match old_conditions.get(c.type_.as_str()) {
            Some(o) if o.status == c.status && o.last_transition_time.is_some() => {
                o.last_transition_time.clone()
            }
            _ => Some(seconds(inputs.now)),
        };
    }

    let ips = |v: &[IpAddr]| -> Option<Vec<String>> {
        (!v.is_empty()).then(|| v.iter().map(ToString::to_string).collect())
    };
    PodStatus {
        phase: Some(phase.to_owned()),
        conditions: Some(conditions),
        host_ip: inputs.host_ips.first().map(ToString::to_string),
        host_ips: ips(inputs.host_ips).map(|v| v.into_iter().map(|ip| HostIP { ip }).collect()),
        pod_ip: inputs.pod_ips.first().map(ToString::to_string),
        pod_ips: ips(inputs.pod_ips).map(|v| v.into_iter().map(|ip| PodIP { ip }).collect()),
        start_time: old.start_time.clone().or(Some(seconds(inputs.now))),
        qos_class: Some(compute_pod_qos(spec).as_str().to_owned()),
        init_container_statuses: has_init.then_some(init_statuses),
        container_statuses: Some(statuses),
        message: old.message.clone(),
        reason: old.reason.clone(),
        nominated_node_name: old.nominated_node_name.clone(),
        ..PodStatus::default()
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::PodReadinessGate;

    use super::*;

    fn ts(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    fn pod(containers: &[&str], init: &[&str], restart_policy: &str) -> Pod {
        let c = |n: &&str| Container {
            name: (*n).to_owned(),
            image: Some(format!("{n}:1")),
            ..Container::default()
        };
        Pod {
            spec: Some(PodSpec {
                containers: containers.iter().map(c).collect(),
                init_containers: (!init.is_empty()).then(|| init.iter().map(c).collect()),
                restart_policy: Some(restart_policy.to_owned()),
                ..PodSpec::default()
            }),
            ..Pod::default()
        }
    }

    fn running(name: &str, ready: bool) -> ObservedContainer {
        ObservedContainer {
            name: name.to_owned(),
            state: ObservedState::Running {
                started_at: Some(ts(10)),
            },
            last_termination: None,
            restart_count: 0,
            image: format!("docker.io/library/{name}:1"),
            image_id: format!("sha256:{name}"),
            container_id: format!("r8s://{name}"),
            ready,
            started: Some(true),
        }
    }

    fn exited(name: &str, code: i32) -> ObservedContainer {
        ObservedContainer {
            state: ObservedState::Terminated(Terminated {
                exit_code: code,
                reason: Some(if code == 0 { "Completed" } else { "Error" }.to_owned()),
                ..Terminated::default()
            }),
            ready: false,
            started: Some(false),
            ..running(name, false)
        }
    }

    fn crash_looping(name: &str) -> ObservedContainer {
        ObservedContainer {
            state: ObservedState::Waiting {
                reason: "CrashLoopBackOff".to_owned(),
                message: None,
            },
            last_termination: Some(Terminated {
                exit_code: 1,
                ..Terminated::default()
            }),
            restart_count: 3,
            ..exited(name, 1)
        }
    }

    fn status(pod: &Pod, observed: &[ObservedContainer]) -> PodStatus {
        status_with(pod, observed, false)
    }

    fn status_with(pod: &Pod, observed: &[ObservedContainer], terminal: bool) -> PodStatus {
        generate_pod_status(&StatusInputs {
            pod,
            observed,
            sandbox_ready: true,
            pod_is_terminal: terminal,
            host_ips: &["10.0.0.5".parse().unwrap()],
            pod_ips: &["10.42.0.7".parse().unwrap()],
            now: ts(100),
        })
    }

    fn cond<'a>(s: &'a PodStatus, kind: &str) -> &'a PodCondition {
        s.conditions
            .as_ref()
            .unwrap()
            .iter()
            .find(|c| c.type_ == kind)
            .unwrap()
    }

    #[test]
    fn new_pod_is_pending_with_containers_creating() {
        let p = pod(&["b", "a"], &[], "Always");
        let s = status(&p, &[]);
        assert_eq!(s.phase.as_deref(), Some("Pending"));
        let names: Vec<&str> = s
            .container_statuses
            .as_ref()
            .unwrap()
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(names, ["a", "b"]);
        let a = &s.container_statuses.as_ref().unwrap()[0];
        assert_eq!(waiting_reason(a), Some("ContainerCreating"));
        assert_eq!(a.image, "a:1");
        let ready = cond(&s, "Ready");
        assert_eq!(ready.status, "False");
        assert_eq!(ready.reason.as_deref(), Some("ContainersNotReady"));
        assert_eq!(
            ready.message.as_deref(),
            Some("containers with unready status: [b a]")
        );
        let types: Vec<&str> = s
            .conditions
            .as_ref()
            .unwrap()
            .iter()
            .map(|c| c.type_.as_str())
            .collect();
        assert_eq!(
            types,
            [
                "PodReadyToStartContainers",
                "Initialized",
                "Ready",
                "ContainersReady",
                "PodScheduled"
            ]
        );
        assert_eq!(cond(&s, "Initialized").status, "True");
        assert_eq!(cond(&s, "PodScheduled").status, "True");
        assert_eq!(s.qos_class.as_deref(), Some("BestEffort"));
        assert_eq!(s.host_ip.as_deref(), Some("10.0.0.5"));
        assert_eq!(s.host_ips.as_ref().unwrap()[0].ip, "10.0.0.5");
        assert_eq!(s.pod_ip.as_deref(), Some("10.42.0.7"));
        assert_eq!(s.pod_ips.as_ref().unwrap()[0].ip, "10.42.0.7");
        assert_eq!(s.start_time, Some(Time(ts(100))));
        assert!(s.init_container_statuses.is_none());
    }

    #[test]
    fn all_running_and_ready_is_running_and_ready() {
        let p = pod(&["a", "b"], &[], "Always");
        let s = status(&p, &[running("a", true), running("b", true)]);
        assert_eq!(s.phase.as_deref(), Some("Running"));
        assert_eq!(cond(&s, "Ready").status, "True");
        assert_eq!(cond(&s, "ContainersReady").status, "True");
        let a = &s.container_statuses.as_ref().unwrap()[0];
        assert_eq!(a.container_id.as_deref(), Some("r8s://a"));
        assert_eq!(a.image_id, "sha256:a");
        assert_eq!(a.started, Some(true));
    }

    #[test]
    fn one_unready_container_is_named_in_the_message() {
        let p = pod(&["a", "b"], &[], "Always");
        let s = status(&p, &[running("a", true), running("b", false)]);
        assert_eq!(s.phase.as_deref(), Some("Running"));
        assert_eq!(
            cond(&s, "ContainersReady").message.as_deref(),
            Some("containers with unready status: [b]")
        );
    }

    #[test]
    fn all_exited_with_restart_always_is_running() {
        let p = pod(&["a"], &[], "Always");
        assert_eq!(
            status(&p, &[exited("a", 0)]).phase.as_deref(),
            Some("Running")
        );
    }

    #[test]
    fn all_exited_zero_with_restart_never_succeeds() {
        let p = pod(&["a", "b"], &[], "Never");
        let s = status(&p, &[exited("a", 0), exited("b", 0)]);
        assert_eq!(s.phase.as_deref(), Some("Succeeded"));
        let cr = cond(&s, "ContainersReady");
        assert_eq!(
            (cr.status.as_str(), cr.reason.as_deref()),
            ("False", Some("PodCompleted"))
        );
        assert_eq!(cond(&s, "Ready").reason.as_deref(), Some("PodCompleted"));
    }

    #[test]
    fn a_failure_with_restart_never_fails() {
        let p = pod(&["a", "b"], &[], "Never");
        let s = status(&p, &[exited("a", 0), exited("b", 2)]);
        assert_eq!(s.phase.as_deref(), Some("Failed"));
        assert_eq!(
            cond(&s, "ContainersReady").reason.as_deref(),
            Some("PodFailed")
        );
    }

    #[test]
    fn a_failure_with_restart_on_failure_keeps_running() {
        let p = pod(&["a"], &[], "OnFailure");
        assert_eq!(
            status(&p, &[exited("a", 1)]).phase.as_deref(),
            Some("Running")
        );
        assert_eq!(
            status(&p, &[exited("a", 0)]).phase.as_deref(),
            Some("Succeeded")
        );
    }

    #[test]
    fn crash_looping_container_counts_as_stopped() {
        let p = pod(&["a"], &[], "Always");
        let s = status(&p, &[crash_looping("a")]);
        assert_eq!(s.phase.as_deref(), Some("Running"));
        let a = &s.container_statuses.as_ref().unwrap()[0];
        assert_eq!(a.restart_count, 3);
        assert_eq!(last_terminated(a).unwrap().exit_code, 1);
        let never = pod(&["a"], &[], "Never");
        assert_eq!(
            status(&never, &[crash_looping("a")]).phase.as_deref(),
            Some("Failed")
        );
    }

    #[test]
    fn terminal_pod_reports_success_or_failure_regardless_of_policy() {
        let p = pod(&["a", "b"], &[], "Always");
        assert_eq!(
            status_with(&p, &[exited("a", 0), exited("b", 0)], true)
                .phase
                .as_deref(),
            Some("Succeeded")
        );
        assert_eq!(
            status_with(&p, &[exited("a", 0), exited("b", 137)], true)
                .phase
                .as_deref(),
            Some("Failed")
        );
    }

    #[test]
    fn pending_init_container_keeps_pod_initializing() {
        let p = pod(&["a"], &["init"], "Always");
        let s = status(&p, &[running("init", false)]);
        assert_eq!(s.phase.as_deref(), Some("Pending"));
        let init = cond(&s, "Initialized");
        assert_eq!(init.status, "False");
        assert_eq!(init.reason.as_deref(), Some("ContainersNotInitialized"));
        assert_eq!(
            init.message.as_deref(),
            Some("containers with incomplete status: [init]")
        );
        let a = &s.container_statuses.as_ref().unwrap()[0];
        assert_eq!(waiting_reason(a), Some("PodInitializing"));
        assert_eq!(s.init_container_statuses.as_ref().unwrap().len(), 1);
    }

    #[test]
    fn init_container_not_started_defaults_to_pod_initializing() {
        let p = pod(&["a"], &["init"], "Always");
        let s = status(&p, &[]);
        let init = &s.init_container_statuses.as_ref().unwrap()[0];
        assert_eq!(waiting_reason(init), Some("PodInitializing"));
    }

    #[test]
    fn failed_init_container_with_restart_never_fails_the_pod() {
        let p = pod(&["a"], &["init"], "Never");
        assert_eq!(
            status(&p, &[exited("init", 1)]).phase.as_deref(),
            Some("Failed")
        );
        let always = pod(&["a"], &["init"], "Always");
        assert_eq!(
            status(&always, &[exited("init", 1)]).phase.as_deref(),
            Some("Pending")
        );
    }

    #[test]
    fn completed_init_containers_initialize_the_pod() {
        let p = pod(&["a"], &["init"], "Always");
        let s = status(&p, &[exited("init", 0), running("a", true)]);
        assert_eq!(s.phase.as_deref(), Some("Running"));
        assert_eq!(cond(&s, "Initialized").status, "True");
        assert_eq!(cond(&s, "Ready").status, "True");
    }

    #[test]
    fn sidecar_running_but_not_started_keeps_pod_pending() {
        let mut p = pod(&["a"], &["side"], "Always");
        p.spec.as_mut().unwrap().init_containers.as_mut().unwrap()[0].restart_policy =
            Some("Always".to_owned());
        let mut side = running("side", false);
        side.started = Some(false);
        assert_eq!(
            status(&p, &[side.clone()]).phase.as_deref(),
            Some("Pending")
        );
        side.started = Some(true);
        side.ready = true;
        let s = status(&p, &[side, running("a", true)]);
        assert_eq!(s.phase.as_deref(), Some("Running"));
        assert_eq!(cond(&s, "ContainersReady").status, "True");
    }

    #[test]
    fn transition_times_survive_when_status_is_unchanged() {
        let mut p = pod(&["a"], &[], "Always");
        let first = status(&p, &[running("a", true)]);
        p.status = Some(first);
        let second = generate_pod_status(&StatusInputs {
            pod: &p,
            observed: &[running("a", true)],
            sandbox_ready: true,
            pod_is_terminal: false,
            host_ips: &[],
            pod_ips: &[],
            now: ts(200),
        });
        assert_eq!(
            cond(&second, "Ready").last_transition_time,
            Some(Time(ts(100)))
        );
        assert_eq!(second.start_time, Some(Time(ts(100))));
        p.status = Some(second);
        let third = generate_pod_status(&StatusInputs {
            pod: &p,
            observed: &[running("a", false)],
            sandbox_ready: true,
            pod_is_terminal: false,
            host_ips: &[],
            pod_ips: &[],
            now: ts(300),
        });
        assert_eq!(
            cond(&third, "Ready").last_transition_time,
            Some(Time(ts(300)))
        );
    }

    #[test]
    fn readiness_gates_hold_ready_back() {
        let mut p = pod(&["a"], &[], "Always");
        p.spec.as_mut().unwrap().readiness_gates = Some(vec![PodReadinessGate {
            condition_type: "example.com/lb".to_owned(),
        }]);
        let s = status(&p, &[running("a", true)]);
        let r = cond(&s, "Ready");
        assert_eq!(r.status, "False");
        assert_eq!(r.reason.as_deref(), Some("ReadinessGatesNotReady"));
        assert_eq!(
            r.message.as_deref(),
            Some(
                "corresponding condition of pod readiness gate \"example.com/lb\" does not exist."
            )
        );
        p.status = Some(PodStatus {
            conditions: Some(vec![condition("example.com/lb", "True", None, None)]),
            ..PodStatus::default()
        });
        let s = status(&p, &[running("a", true)]);
        assert_eq!(cond(&s, "Ready").status, "True");
        assert_eq!(s.conditions.as_ref().unwrap()[0].type_, "example.com/lb");
    }

    #[test]
    fn terminal_phase_is_never_left() {
        let mut p = pod(&["a"], &[], "Never");
        p.status = Some(PodStatus {
            phase: Some("Failed".to_owned()),
            ..PodStatus::default()
        });
        assert_eq!(
            status(&p, &[running("a", true)]).phase.as_deref(),
            Some("Failed")
        );
    }

    #[test]
    fn vanished_running_container_is_reported_as_unknown_termination() {
        let mut p = pod(&["a"], &[], "Always");
        p.status = Some(status(&p, &[running("a", true)]));
        let s = status(&p, &[]);
        let a = &s.container_statuses.as_ref().unwrap()[0];
        let t = last_terminated(a).unwrap();
        assert_eq!(t.exit_code, 137);
        assert_eq!(t.reason.as_deref(), Some("ContainerStatusUnknown"));
        assert_eq!(a.restart_count, 1);
        assert_eq!(s.phase.as_deref(), Some("Running"));
    }
}
