//! Node conditions as kubelet's `nodestatus` setters: MemoryPressure,
//! DiskPressure, PIDPressure and Ready, with heartbeat and transition times.

use k8s_openapi::api::core::v1::NodeCondition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// What the node knows about its own health at one instant.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeHealth {
    pub memory_pressure: bool,
    pub disk_pressure: bool,
    pub pid_pressure: bool,
    /// Errors that make the node NotReady (runtime down, network not ready...).
    pub not_ready_errors: Vec<String>,
}

struct Wording {
    kind: &'static str,
    true_reason: &'static str,
    true_message: &'static str,
    false_reason: &'static str,
    false_message: &'static str,
}

const MEMORY: Wording = Wording {
    kind: "MemoryPressure",
    true_reason: "KubeletHasInsufficientMemory",
    true_message: "kubelet has insufficient memory available",
    false_reason: "KubeletHasSufficientMemory",
    false_message: "kubelet has sufficient memory available",
};

const DISK: Wording = Wording {
    kind: "DiskPressure",
    true_reason: "KubeletHasDiskPressure",
    true_message: "kubelet has disk pressure",
    false_reason: "KubeletHasNoDiskPressure",
    false_message: "kubelet has no disk pressure",
};

const PID: Wording = Wording {
    kind: "PIDPressure",
    true_reason: "KubeletHasInsufficientPID",
    true_message: "kubelet has insufficient PID available",
    false_reason: "KubeletHasSufficientPID",
    false_message: "kubelet has sufficient PID available",
};

/// Sets `kind` in `conditions` to `status`/`reason`/`message`: the heartbeat
/// is always `now`; the transition time only moves when the status changes.
fn set_condition(
    conditions: &mut Vec<NodeCondition>,
    kind: &str,
    status: &str,
    reason: &str,
    message: &str,
    now: &Time,
) {
    let new = |transition: Time| NodeCondition {
        type_: kind.to_owned(),
        status: status.to_owned(),
        reason: Some(reason.to_owned()),
        message: Some(message.to_owned()),
        last_heartbeat_time: Some(now.clone()),
        last_transition_time: Some(transition),
    };
    match conditions.iter_mut().find(|c| c.type_ == kind) {
        Some(existing) => {
            let transition = if existing.status == status {
                existing
                    .last_transition_time
                    .clone()
                    .unwrap_or_else(|| now.clone())
            } else {
                now.clone()
            };
            *existing = new(transition);
        }
        None => conditions.push(new(now.clone())),
    }
}

fn set_pressure(conditions: &mut Vec<NodeCondition>, w: &Wording, pressure: bool, now: &Time) {
    if pressure {
        set_condition(
            conditions,
            w.kind,
            "True",
            w.true_reason,
            w.true_message,
            now,
        );
    } else {
        set_condition(
            conditions,
            w.kind,
            "False",
            w.false_reason,
            w.false_message,
            now,
        );
    }
}

/// Updates the kubelet-owned conditions in place, keeping any others
/// (e.g. `NetworkUnavailable`) untouched.
pub fn update_conditions(conditions: &mut Vec<NodeCondition>, health: &NodeHealth, now: &Time) {
    set_pressure(conditions, &MEMORY, health.memory_pressure, now);
    set_pressure(conditions, &DISK, health.disk_pressure, now);
    set_pressure(conditions, &PID, health.pid_pressure, now);
    if health.not_ready_errors.is_empty() {
        set_condition(
            conditions,
            "Ready",
            "True",
            "KubeletReady",
            "kubelet is posting ready status",
            now,
        );
    } else {
        set_condition(
            conditions,
            "Ready",
            "False",
            "KubeletNotReady",
            &health.not_ready_errors.join(", "),
            now,
        );
    }
}

/// Whether two condition lists differ in anything but heartbeat times
/// (kubelet's `nodeStatusHasChanged` for conditions).
pub fn conditions_changed(old: &[NodeCondition], new: &[NodeCondition]) -> bool {
    let strip = |c: &[NodeCondition]| {
        let mut v: Vec<NodeCondition> = c
            .iter()
            .cloned()
            .map(|mut c| {
                c.last_heartbeat_time = None;
                c
            })
            .collect();
        v.sort_by(|a, b| a.type_.cmp(&b.type_));
        v
    };
    strip(old) != strip(new)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::jiff::Timestamp;

    use super::*;

    fn t(secs: i64) -> Time {
        Time(Timestamp::from_second(secs).unwrap())
    }

    #[test]
    fn healthy_node_gets_kubelet_reasons_and_messages() {
        let mut c = Vec::new();
        update_conditions(&mut c, &NodeHealth::default(), &t(100));
        let types: Vec<&str> = c.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(
            types,
            ["MemoryPressure", "DiskPressure", "PIDPressure", "Ready"]
        );
        assert_eq!(c[0].reason.as_deref(), Some("KubeletHasSufficientMemory"));
        assert_eq!(
            c[0].message.as_deref(),
            Some("kubelet has sufficient memory available")
        );
        assert_eq!(c[1].reason.as_deref(), Some("KubeletHasNoDiskPressure"));
        assert_eq!(c[2].reason.as_deref(), Some("KubeletHasSufficientPID"));
        assert_eq!(c[3].status, "True");
        assert_eq!(c[3].reason.as_deref(), Some("KubeletReady"));
        assert_eq!(
            c[3].message.as_deref(),
            Some("kubelet is posting ready status")
        );
        assert_eq!(c[3].last_transition_time, Some(t(100)));
    }

    #[test]
    fn transition_time_moves_only_when_status_changes() {
        let mut c = Vec::new();
        update_conditions(&mut c, &NodeHealth::default(), &t(100));
        update_conditions(&mut c, &NodeHealth::default(), &t(110));
        assert_eq!(c[3].last_heartbeat_time, Some(t(110)));
        assert_eq!(c[3].last_transition_time, Some(t(100)));
        let sick = NodeHealth {
            memory_pressure: true,
            not_ready_errors: vec!["container runtime is down".to_owned()],
            ..NodeHealth::default()
        };
        update_conditions(&mut c, &sick, &t(120));
        assert_eq!(c[0].status, "True");
        assert_eq!(c[0].reason.as_deref(), Some("KubeletHasInsufficientMemory"));
        assert_eq!(c[0].last_transition_time, Some(t(120)));
        assert_eq!(c[1].last_transition_time, Some(t(100)));
        assert_eq!(c[3].status, "False");
        assert_eq!(c[3].reason.as_deref(), Some("KubeletNotReady"));
        assert_eq!(c[3].message.as_deref(), Some("container runtime is down"));
    }

    #[test]
    fn foreign_conditions_are_kept() {
        let mut c = vec![NodeCondition {
            type_: "NetworkUnavailable".to_owned(),
            status: "False".to_owned(),
            ..NodeCondition::default()
        }];
        update_conditions(&mut c, &NodeHealth::default(), &t(1));
        assert_eq!(c.len(), 5);
        assert_eq!(c[0].type_, "NetworkUnavailable");
    }

    #[test]
    fn heartbeat_alone_is_not_a_change() {
        let mut a = Vec::new();
        update_conditions(&mut a, &NodeHealth::default(), &t(1));
        let mut b = a.clone();
        update_conditions(&mut b, &NodeHealth::default(), &t(2));
        assert!(!conditions_changed(&a, &b));
        update_conditions(
            &mut b,
            &NodeHealth {
                disk_pressure: true,
                ..NodeHealth::default()
            },
            &t(3),
        );
        assert!(conditions_changed(&a, &b));
    }
}
