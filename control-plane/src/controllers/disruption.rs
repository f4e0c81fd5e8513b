//! The disruption controller (upstream pkg/controller/disruption): keeps each
//! PodDisruptionBudget's status (expected, desired and current healthy pods,
//! disruptions allowed, the DisruptionAllowed condition) in step with the
//! pods its selector matches and the scale of their controllers, and
//! expires `disruptedPods` entries the eviction API wrote for pods that
//! were not deleted within two minutes.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{Pod, ReplicationController};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use kube::api::{Api, PostParams};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;

use super::ControllerContext;
use super::store::Store;
use super::util::{self, Key, Queue, Requeue};

/// How long an evicted pod may stay before its disruption is given back
/// (upstream `DeletionTimeout`).
pub const DELETION_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, thiserror::Error)]
pub enum DisruptionError {
    #[error("failed to write the status of pod disruption budget {name}")]
    Status {
        name: String,
        #[source]
        source: kube::Error,
    },
}

/// Why the expected pod count could not be computed (upstream messages).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ScaleError {
    #[error("found no controller ref for pod {0:?}")]
    NoControllerRef(String),
    #[error("found no controllers for pod {0:?}")]
    NoController(String),
    #[error("invalid value for IntOrString: invalid value {0:?}")]
    BadPercent(String),
}

struct Ctx {
    client: kube::Client,
    budgets: Store<PodDisruptionBudget>,
    pods: Store<Pod>,
    sets: Store<ReplicaSet>,
    deployments: Store<Deployment>,
    stateful_sets: Store<StatefulSet>,
    controllers: Store<ReplicationController>,
    events: util::Events,
}

pub fn spawn(ctx: &ControllerContext) {
    let (queue, rx) = Queue::new();
    let q = queue.clone();
    let budgets = ctx.informers.informer(
        Api::<PodDisruptionBudget>::all(ctx.client.clone()),
        watcher::Config::default(),
        move |b: &PodDisruptionBudget| q.add_key(util::key_of(b)),
    );
    let (q, b) = (queue.clone(), budgets.clone());
    let pods = ctx.informers.informer(
        Api::<Pod>::all(ctx.client.clone()),
        watcher::Config::default(),
        move |pod: &Pod| {
            let ns = pod.namespace().unwrap_or_default();
            for budget in b.state() {
                if budget.namespace().as_deref() == Some(ns.as_str())
                    && selects(budget_selector(&budget), pod.labels())
                {
                    q.add(&ns, &budget.name_any());
                }
            }
        },
    );
    let scale_changed = |queue: &Queue, budgets: &Store<PodDisruptionBudget>| {
        let (q, b) = (queue.clone(), budgets.clone());
        move |ns: Option<String>| {
            let ns = ns.unwrap_or_default();
            for budget in b.state() {
                if budget.namespace().as_deref() == Some(ns.as_str()) {
                    q.add(&ns, &budget.name_any());
                }
            }
        }
    };
    let f = scale_changed(&queue, &budgets);
    let sets = ctx.informers.informer(
        Api::<ReplicaSet>::all(ctx.client.clone()),
        watcher::Config::default(),
        move |o: &ReplicaSet| f(o.namespace()),
    );
    let f = scale_changed(&queue, &budgets);
    let deployments = ctx.informers.informer(
        Api::<Deployment>::all(ctx.client.clone()),
        watcher::Config::default(),
        move |o: &Deployment| f(o.namespace()),
    );
    let f = scale_changed(&queue, &budgets);
    let stateful_sets = ctx.informers.informer(
        Api::<StatefulSet>::all(ctx.client.clone()),
        watcher::Config::default(),
        move |o: &StatefulSet| f(o.namespace()),
    );
    let f = scale_changed(&queue, &budgets);
    let controllers = ctx.informers.informer(
        Api::<ReplicationController>::all(ctx.client.clone()),
        watcher::Config::default(),
        move |o: &ReplicationController| f(o.namespace()),
    );
    let c = Arc::new(Ctx {
        client: ctx.client.clone(),
        budgets,
        pods,
        sets,
        deployments,
        stateful_sets,
        controllers,
        events: util::Events::new(ctx.client.clone(), "controllermanager"),
    });
    let shutdown = ctx.shutdown.clone();
    tokio::spawn(async move {
        c.budgets.wait_until_ready().await;
        c.pods.wait_until_ready().await;
        c.sets.wait_until_ready().await;
        c.deployments.wait_until_ready().await;
        c.stateful_sets.wait_until_ready().await;
        c.controllers.wait_until_ready().await;
        util::run_workers("disruption", 1, rx, queue, shutdown, |key| {
            let c = c.clone();
            async move { sync(&c, key).await }
        })
        .await;
    });
}

fn budget_selector(b: &PodDisruptionBudget) -> Option<&LabelSelector> {
    b.spec.as_ref().and_then(|s| s.selector.as_ref())
}

/// policy/v1 semantics of the controller: a missing selector selects no
/// pod, an empty one every pod of the namespace.
fn selects(selector: Option<&LabelSelector>, labels: &BTreeMap<String, String>) -> bool {
    match selector {
        None => false,
        Some(s) => {
            let empty = s.match_labels.as_ref().is_none_or(BTreeMap::is_empty)
                && s.match_expressions.as_ref().is_none_or(Vec::is_empty);
            empty || util::selector_matches(s, labels)
        }
    }
}

/// Upstream `intstr.GetScaledValueFromIntOrPercent`.
pub fn scaled_value(v: &IntOrString, total: i32, round_up: bool) -> Result<i32, ScaleError> {
    match v {
        IntOrString::Int(i) => Ok(*i),
        IntOrString::String(s) => {
            let p: i64 = s
                .strip_suffix('%')
                .and_then(|p| p.parse().ok())
                .ok_or_else(|| ScaleError::BadPercent(s.clone()))?;
            let n = p * i64::from(total);
            let v = if round_up {
                (n + 99).div_euclid(100)
            } else {
                n.div_euclid(100)
            };
            Ok(i32::try_from(v).unwrap_or(i32::MAX))
        }
    }
}

/// The scales of the pods' controllers, by controller UID (upstream
/// `getExpectedScale` with the rc, deployment, replicaset and statefulset
/// finders).
trait ScaleFinder {
    fn scale_of(&self, ns: &str, pod: &Pod) -> Result<(String, i32), ScaleError>;
}

impl ScaleFinder for Ctx {
    fn scale_of(&self, ns: &str, pod: &Pod) -> Result<(String, i32), ScaleError> {
        let name = pod.name_any();
        let r = util::controller_ref(pod.metadata.owner_references.as_ref())
            .ok_or_else(|| ScaleError::NoControllerRef(name.clone()))?;
        let none = || ScaleError::NoController(name.clone());
        let same = |uid: Option<String>| uid.as_deref() == Some(r.uid.as_str());
        match r.kind.as_str() {
            "ReplicationController" => {
                let rc = self
                    .controllers
                    .get(&ObjectRef::new(&r.name).within(ns))
                    .filter(|rc| same(rc.uid()))
                    .ok_or_else(none)?;
                let n = rc.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
                Ok((r.uid.clone(), n))
            }
            "ReplicaSet" => {
                let rs = self
                    .sets
                    .get(&ObjectRef::new(&r.name).within(ns))
                    .filter(|rs| same(rs.uid()))
                    .ok_or_else(none)?;
                if let Some(d) = util::controller_ref(rs.metadata.owner_references.as_ref())
                    .filter(|d| d.kind == "Deployment")
                {
                    let dep = self
                        .deployments
                        .get(&ObjectRef::new(&d.name).within(ns))
                        .filter(|dep| dep.uid().as_deref() == Some(d.uid.as_str()))
                        .ok_or_else(none)?;
                    let n = dep.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
                    return Ok((d.uid.clone(), n));
                }
                let n = rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
                Ok((r.uid.clone(), n))
            }
            "StatefulSet" => {
                let ss = self
                    .stateful_sets
                    .get(&ObjectRef::new(&r.name).within(ns))
                    .filter(|ss| same(ss.uid()))
                    .ok_or_else(none)?;
                let n = ss.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
                Ok((r.uid.clone(), n))
            }
            _ => Err(none()),
        }
    }
}

/// `(expectedCount, desiredHealthy)` of a budget (upstream `getExpectedPodCount`).
fn expected_pod_count(
    budget: &PodDisruptionBudget,
    pods: &[Arc<Pod>],
    finder: &dyn ScaleFinder,
) -> Result<(i32, i32), ScaleError> {
    let ns = budget.namespace().unwrap_or_default();
    let spec = budget.spec.clone().unwrap_or_default();
    let expected_scale = || -> Result<i32, ScaleError> {
        let mut scales: HashMap<String, i32> = HashMap::new();
        for pod in pods {
            let (uid, n) = finder.scale_of(&ns, pod)?;
            scales.insert(uid, n);
        }
        Ok(scales.values().sum())
    };
    if let Some(max) = spec.max_unavailable.as_ref() {
        let expected = expected_scale()?;
        let max = scaled_value(max, expected, true)?;
        return Ok((expected, (expected - max).max(0)));
    }
    match spec.min_available.as_ref() {
        Some(IntOrString::Int(n)) => Ok((i32::try_from(pods.len()).unwrap_or(i32::MAX), *n)),
        Some(p @ IntOrString::String(_)) => {
            let expected = expected_scale()?;
            Ok((expected, scaled_value(p, expected, true)?))
        }
        None => Ok((i32::try_from(pods.len()).unwrap_or(i32::MAX), 0)),
    }
}

/// The `disruptedPods` entries still pending and when the first expires
/// (upstream `buildDisruptedPodMap`).
fn disrupted_pod_map(
    pods: &[Arc<Pod>],
    budget: &PodDisruptionBudget,
    now: i64,
) -> (BTreeMap<String, Time>, Option<i64>) {
    let mut out = BTreeMap::new();
    let mut recheck: Option<i64> = None;
    let Some(disrupted) = budget
        .status
        .as_ref()
        .and_then(|s| s.disrupted_pods.as_ref())
    else {
        return (out, None);
    };
    let timeout = i64::try_from(DELETION_TIMEOUT.as_secs()).unwrap_or(120);
    for pod in pods {
        if pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let name = pod.name_any();
        let Some(at) = disrupted.get(&name) else {
            continue;
        };
        let expires = util::secs(at) + timeout;
        if expires < now {
            tracing::info!(pod = %name, budget = %budget.name_any(), "pod was expected to be deleted but it wasn't");
            continue;
        }
        recheck = Some(recheck.map_or(expires, |r: i64| r.min(expires)));
        out.insert(name, at.clone());
    }
    (out, recheck)
}

/// Ready pods that are neither being deleted nor about to be (upstream `countHealthyPods`).
fn count_healthy(pods: &[Arc<Pod>], disrupted: &BTreeMap<String, Time>) -> i32 {
    let n = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| !disrupted.contains_key(&p.name_any()))
        .filter(|p| util::is_pod_ready(p))
        .count();
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// Sets one condition, moving its transition time only when the status changes
/// (upstream `meta.SetStatusCondition`).
fn set_condition(conditions: &mut Vec<Condition>, new: Condition) {
    match conditions.iter_mut().find(|c| c.type_ == new.type_) {
        Some(c) => {
            if c.status != new.status {
                c.status = new.status;
                c.last_transition_time = new.last_transition_time;
            }
            c.reason = new.reason;
            c.message = new.message;
            c.observed_generation = new.observed_generation;
        }
        None => conditions.push(new),
    }
}

fn allowed_condition(status: &PodDisruptionBudgetStatus) -> Condition {
    let (s, reason) = if status.disruptions_allowed > 0 {
        ("True", "SufficientPods")
    } else {
        ("False", "InsufficientPods")
    };
    Condition {
        type_: "DisruptionAllowed".into(),
        status: s.into(),
        reason: reason.into(),
        message: String::new(),
        observed_generation: status.observed_generation,
        last_transition_time: util::now(),
    }
}

/// The status a budget should have (upstream `updatePdbStatus`).
fn desired_status(
    budget: &PodDisruptionBudget,
    current_healthy: i32,
    desired_healthy: i32,
    expected: i32,
    disrupted: BTreeMap<String, Time>,
) -> PodDisruptionBudgetStatus {
    let mut allowed = current_healthy - desired_healthy;
    if expected <= 0 || allowed <= 0 {
        allowed = 0;
    }
    let old = budget.status.clone().unwrap_or_default();
    let mut status = PodDisruptionBudgetStatus {
        current_healthy,
        desired_healthy,
        expected_pods: expected,
        disruptions_allowed: allowed,
        disrupted_pods: (!disrupted.is_empty()).then_some(disrupted),
        observed_generation: budget.metadata.generation,
        conditions: old.conditions.clone(),
    };
    let mut conditions = status.conditions.take().unwrap_or_default();
    set_condition(&mut conditions, allowed_condition(&status));
    status.conditions = Some(conditions);
    status
}

/// Whether two statuses differ in anything but condition timestamps.
fn status_changed(old: &PodDisruptionBudgetStatus, new: &PodDisruptionBudgetStatus) -> bool {
    let strip = |s: &PodDisruptionBudgetStatus| {
        let mut s = s.clone();
        if s.disrupted_pods.as_ref().is_some_and(BTreeMap::is_empty) {
            s.disrupted_pods = None;
        }
        for c in s.conditions.iter_mut().flatten() {
            c.last_transition_time = Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
        }
        s
    };
    strip(old) != strip(new)
}

async fn sync(c: &Ctx, (ns, name): Key) -> Result<Requeue, DisruptionError> {
    let Some(budget) = c.budgets.get(&ObjectRef::new(&name).within(&ns)) else {
        return Ok(None);
    };
    let selector = budget_selector(&budget);
    let pods: Vec<Arc<Pod>> = c
        .pods
        .state()
        .into_iter()
        .filter(|p| p.namespace().as_deref() == Some(ns.as_str()) && selects(selector, p.labels()))
        .collect();
    if pods.is_empty() {
        c.events
            .normal(&*budget, "NoPods", "No matching pods found".into());
    }
    let old = budget.status.clone().unwrap_or_default();
    let status = match expected_pod_count(&budget, &pods, c) {
        Ok((expected, desired)) => {
            let now = util::now_secs();
            let (disrupted, recheck) = disrupted_pod_map(&pods, &budget, now);
            let healthy = count_healthy(&pods, &disrupted);
            let status = desired_status(&budget, healthy, desired, expected, disrupted);
            let requeue =
                recheck.map(|at| Duration::from_secs(u64::try_from(at - now).unwrap_or(0) + 1));
            if !status_changed(&old, &status) {
                return Ok(requeue);
            }
            write_status(c, &budget, status).await?;
            return Ok(requeue);
        }
        Err(err) => {
            c.events.warning(
                &*budget,
                "CalculateExpectedPodCountFailed",
                format!("Failed to calculate the number of expected pods: {err}"),
            );
            let mut status = old.clone();
            status.disruptions_allowed = 0;
            let mut conditions = status.conditions.take().unwrap_or_default();
            set_condition(
                &mut conditions,
                Condition {
                    type_: "DisruptionAllowed".into(),
                    status: "False".into(),
                    reason: "SyncFailed".into(),
                    message: err.to_string(),
                    observed_generation: status.observed_generation,
                    last_transition_time: util::now(),
                },
            );
            status.conditions = Some(conditions);
            status
        }
    };
    if status_changed(&old, &status) {
        write_status(c, &budget, status).await?;
    }
    Ok(None)
}

async fn write_status(
    c: &Ctx,
    budget: &PodDisruptionBudget,
    status: PodDisruptionBudgetStatus,
) -> Result<(), DisruptionError> {
    let name = budget.name_any();
    let api: Api<PodDisruptionBudget> =
        Api::namespaced(c.client.clone(), &budget.namespace().unwrap_or_default());
    let mut new = budget.clone();
    new.status = Some(status);
    api.replace_status(&name, &PostParams::default(), &new)
        .await
        .map_err(|source| DisruptionError::Status { name, source })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    struct Scales(i32);

    impl ScaleFinder for Scales {
        fn scale_of(&self, _ns: &str, pod: &Pod) -> Result<(String, i32), ScaleError> {
            util::controller_ref(pod.metadata.owner_references.as_ref())
                .map(|r| (r.uid.clone(), self.0))
                .ok_or_else(|| ScaleError::NoControllerRef(pod.name_any()))
        }
    }

    fn pod(name: &str, ready: bool, owned: bool) -> Arc<Pod> {
        let owners = if owned {
            json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "u1", "controller": true}])
        } else {
            json!([])
        };
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "d", "labels": {"app": "web"}, "ownerReferences": owners},
                "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]}
            }))
            .unwrap(),
        )
    }

    fn budget(spec: serde_json::Value) -> PodDisruptionBudget {
        serde_json::from_value(
            json!({"metadata": {"name": "b", "namespace": "d", "generation": 2}, "spec": spec}),
        )
        .unwrap()
    }

    #[test]
    fn percentages_and_max_unavailable_use_the_controller_scale() {
        let pods = vec![pod("a", true, true), pod("b", true, true)];
        let b = budget(json!({"minAvailable": "50%", "selector": {"matchLabels": {"app": "web"}}}));
        assert_eq!(expected_pod_count(&b, &pods, &Scales(3)).unwrap(), (3, 2));
        let b = budget(json!({"maxUnavailable": 1, "selector": {}}));
        assert_eq!(expected_pod_count(&b, &pods, &Scales(4)).unwrap(), (4, 3));
        let b = budget(json!({"minAvailable": 2}));
        assert_eq!(expected_pod_count(&b, &pods, &Scales(9)).unwrap(), (2, 2));
        let orphans = vec![pod("x", true, false)];
        let b = budget(json!({"maxUnavailable": "10%"}));
        assert_eq!(
            expected_pod_count(&b, &orphans, &Scales(1))
                .unwrap_err()
                .to_string(),
            "found no controller ref for pod \"x\""
        );
    }

    #[test]
    fn status_counts_ready_pods_and_allows_the_surplus() {
        let pods = vec![
            pod("a", true, true),
            pod("b", true, true),
            pod("c", false, true),
        ];
        let b = budget(json!({"minAvailable": 1}));
        let healthy = count_healthy(&pods, &BTreeMap::new());
        let s = desired_status(&b, healthy, 1, 3, BTreeMap::new());
        assert_eq!(
            (
                s.current_healthy,
                s.desired_healthy,
                s.expected_pods,
                s.disruptions_allowed
            ),
            (2, 1, 3, 1)
        );
        assert_eq!(s.observed_generation, Some(2));
        let c = &s.conditions.as_ref().unwrap()[0];
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("True", "SufficientPods")
        );
        let none = desired_status(&b, 1, 1, 3, BTreeMap::new());
        assert_eq!(none.disruptions_allowed, 0);
        assert_eq!(
            none.conditions.as_ref().unwrap()[0].reason,
            "InsufficientPods"
        );
    }

    #[test]
    fn disrupted_pods_stop_counting_until_they_expire() {
        let pods = vec![pod("a", true, true), pod("b", true, true)];
        let now = util::now_secs();
        let mut b = budget(json!({"minAvailable": 1}));
        let fresh = Time(k8s_openapi::jiff::Timestamp::from_second(now - 10).unwrap());
        let stale = Time(k8s_openapi::jiff::Timestamp::from_second(now - 300).unwrap());
        b.status = Some(PodDisruptionBudgetStatus {
            disrupted_pods: Some(BTreeMap::from([("a".into(), fresh), ("b".into(), stale)])),
            ..Default::default()
        });
        let (map, recheck) = disrupted_pod_map(&pods, &b, now);
        assert_eq!(map.keys().collect::<Vec<_>>(), ["a"]);
        assert_eq!(recheck, Some(now - 10 + 120));
        assert_eq!(count_healthy(&pods, &map), 1);
    }

    #[test]
    fn percent_values_round_up() {
        let p = IntOrString::String("30%".into());
        assert_eq!(scaled_value(&p, 5, true).unwrap(), 2);
        assert_eq!(scaled_value(&p, 5, false).unwrap(), 1);
        assert!(scaled_value(&IntOrString::String("x".into()), 5, true).is_err());
    }
}
