//! Deployment status and conditions computed from its ReplicaSets, free of
//! I/O (upstream pkg/controller/deployment/sync.go `calculateStatus`,
//! progress.go and util's condition helpers).

use k8s_openapi::api::apps::v1::{Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet};

use super::rolling;
use crate::controllers::util;

pub const PROGRESSING: &str = "Progressing";
pub const AVAILABLE: &str = "Available";
pub const REPLICA_FAILURE: &str = "ReplicaFailure";
pub const NEW_RS_AVAILABLE: &str = "NewReplicaSetAvailable";
pub const TIMED_OUT: &str = "ProgressDeadlineExceeded";
pub const RS_UPDATED: &str = "ReplicaSetUpdated";
pub const FOUND_NEW_RS: &str = "FoundNewReplicaSet";
pub const NEW_RS_CREATED: &str = "NewReplicaSetCreated";
pub const FAILED_RS_CREATE: &str = "ReplicaSetCreateError";
pub const PAUSED: &str = "DeploymentPaused";
pub const RESUMED: &str = "DeploymentResumed";

pub fn condition(type_: &str, status: &str, reason: &str, message: String) -> DeploymentCondition {
    let now = util::now();
    DeploymentCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message),
        last_update_time: Some(now.clone()),
        last_transition_time: Some(now),
    }
}

pub fn get<'a>(status: &'a DeploymentStatus, type_: &str) -> Option<&'a DeploymentCondition> {
    status
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
}

/// Upstream `SetDeploymentCondition`: no change for the same status and
/// reason; the transition time survives a same-status update.
pub fn set(status: &mut DeploymentStatus, mut cond: DeploymentCondition) {
    if let Some(cur) = get(status, &cond.type_) {
        if cur.status == cond.status && cur.reason == cond.reason {
            return;
        }
        if cur.status == cond.status {
            cond.last_transition_time = cur.last_transition_time.clone();
        }
    }
    remove(status, &cond.type_);
    status.conditions.get_or_insert_with(Vec::new).push(cond);
}

pub fn remove(status: &mut DeploymentStatus, type_: &str) {
    if let Some(cs) = status.conditions.as_mut() {
        cs.retain(|c| c.type_ != type_);
        if cs.is_empty() {
            status.conditions = None;
        }
    }
}

pub fn has_progress_deadline(d: &Deployment) -> bool {
    d.spec
        .as_ref()
        .and_then(|s| s.progress_deadline_seconds)
        .is_some_and(|s| s != i32::MAX)
}

/// Upstream `calculateStatus`.
pub fn calculate(
    all: &[&ReplicaSet],
    new_rs: Option<&ReplicaSet>,
    d: &Deployment,
) -> DeploymentStatus {
    let st = |rs: &ReplicaSet| rs.status.clone().unwrap_or_default();
    let available: i32 = all.iter().map(|rs| rolling::rs_available(rs)).sum();
    let total = rolling::sum_spec(all);
    let old = d.status.clone().unwrap_or_default();
    let mut status = DeploymentStatus {
        observed_generation: d.metadata.generation,
        replicas: Some(all.iter().map(|rs| st(rs).replicas).sum()),
        updated_replicas: Some(new_rs.map(|rs| st(rs).replicas).unwrap_or(0)),
        ready_replicas: Some(
            all.iter()
                .map(|rs| st(rs).ready_replicas.unwrap_or(0))
                .sum(),
        ),
        available_replicas: Some(available),
        unavailable_replicas: Some((total - available).max(0)),
        collision_count: old.collision_count,
        conditions: old.conditions.clone(),
        terminating_replicas: None,
    };
    if available >= rolling::replicas(d) - rolling::max_unavailable(d) {
        set(
            &mut status,
            condition(
                AVAILABLE,
                "True",
                "MinimumReplicasAvailable",
                "Deployment has minimum availability.".into(),
            ),
        );
    } else {
        set(
            &mut status,
            condition(
                AVAILABLE,
                "False",
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.".into(),
            ),
        );
    }
    status
}

/// Upstream `DeploymentComplete`.
pub fn complete(d: &Deployment, s: &DeploymentStatus) -> bool {
    let r = rolling::replicas(d);
    s.updated_replicas == Some(r)
        && s.replicas == Some(r)
        && s.available_replicas == Some(r)
        && s.observed_generation >= d.metadata.generation
}

/// Upstream `DeploymentProgressing`.
pub fn progressing(d: &Deployment, new: &DeploymentStatus) -> bool {
    let old = d.status.clone().unwrap_or_default();
    let old_old = old.replicas.unwrap_or(0) - old.updated_replicas.unwrap_or(0);
    let new_old = new.replicas.unwrap_or(0) - new.updated_replicas.unwrap_or(0);
    new.updated_replicas.unwrap_or(0) > old.updated_replicas.unwrap_or(0)
        || new.ready_replicas.unwrap_or(0) > old.ready_replicas.unwrap_or(0)
        || new.available_replicas.unwrap_or(0) > old.available_replicas.unwrap_or(0)
        || new_old < old_old
}

/// Seconds until the progress deadline passes (`<= 0`: timed out), if the
/// deadline applies (upstream `DeploymentTimedOut`).
pub fn deadline_left(d: &Deployment, s: &DeploymentStatus, now: i64) -> Option<i64> {
    if !has_progress_deadline(d) {
        return None;
    }
    let cond = get(s, PROGRESSING)?;
    match cond.reason.as_deref() {
        Some(NEW_RS_AVAILABLE) => None,
        Some(TIMED_OUT) => Some(0),
        _ => {
            let from = util::secs(cond.last_update_time.as_ref()?);
            let deadline = i64::from(d.spec.as_ref()?.progress_deadline_seconds?);
            Some(from + deadline - now)
        }
    }
}

/// Upstream `syncRolloutStatus` without the write: the new status.
pub fn rollout(
    all: &[&ReplicaSet],
    new_rs: Option<&ReplicaSet>,
    d: &Deployment,
) -> DeploymentStatus {
    let mut s = calculate(all, new_rs, d);
    if !has_progress_deadline(d) {
        remove(&mut s, PROGRESSING);
    }
    let old = d.status.clone().unwrap_or_default();
    let current = get(&old, PROGRESSING).cloned();
    let is_complete = s.replicas == s.updated_replicas
        && current.as_ref().and_then(|c| c.reason.as_deref()) == Some(NEW_RS_AVAILABLE);
    if has_progress_deadline(d) && !is_complete {
        let subject = match new_rs {
            Some(rs) => format!(
                "ReplicaSet \"{}\"",
                rs.metadata.name.as_deref().unwrap_or("")
            ),
            None => format!(
                "Deployment \"{}\"",
                d.metadata.name.as_deref().unwrap_or("")
            ),
        };
        if complete(d, &s) {
            set(
                &mut s,
                condition(
                    PROGRESSING,
                    "True",
                    NEW_RS_AVAILABLE,
                    format!("{subject} has successfully progressed."),
                ),
            );
        } else if progressing(d, &s) {
            let mut c = condition(
                PROGRESSING,
                "True",
                RS_UPDATED,
                format!("{subject} is progressing."),
            );
            if let Some(cur) = &current {
                if cur.status == "True" {
                    c.last_transition_time = cur.last_transition_time.clone();
                }
                remove(&mut s, PROGRESSING);
            }
            set(&mut s, c);
        } else if deadline_left(d, &s, util::now_secs()).is_some_and(|left| left < 0) {
            set(
                &mut s,
                condition(
                    PROGRESSING,
                    "False",
                    TIMED_OUT,
                    format!("{subject} has timed out progressing."),
                ),
            );
        }
    }
    let failure = all
        .iter()
        .filter_map(|rs| {
            rs.status
                .as_ref()?
                .conditions
                .as_ref()?
                .iter()
                .find(|c| c.type_ == REPLICA_FAILURE)
                .cloned()
        })
        .next();
    match failure {
        Some(f) => set(
            &mut s,
            DeploymentCondition {
                type_: REPLICA_FAILURE.into(),
                status: f.status,
                reason: f.reason,
                message: f.message,
                last_update_time: f.last_transition_time.clone(),
                last_transition_time: f.last_transition_time,
            },
        ),
        None => remove(&mut s, REPLICA_FAILURE),
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setting_the_same_condition_keeps_it() {
        let mut s = DeploymentStatus::default();
        set(&mut s, condition(AVAILABLE, "True", "A", "m".into()));
        let first = get(&s, AVAILABLE).cloned();
        set(&mut s, condition(AVAILABLE, "True", "A", "other".into()));
        assert_eq!(get(&s, AVAILABLE).cloned(), first);
        set(&mut s, condition(AVAILABLE, "False", "B", "m".into()));
        assert_eq!(get(&s, AVAILABLE).map(|c| c.status.as_str()), Some("False"));
        assert_eq!(s.conditions.as_ref().map(Vec::len), Some(1));
    }
}
