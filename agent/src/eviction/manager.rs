//! The eviction manager loop (kubelet's `managerImpl.synchronize`): every
//! monitoring period observe the signals, update the pressure conditions
//! (node status and admission), and for a threshold that acts say so on the
//! Node (`EvictionThresholdMet`), reclaim at node level first (disk: dead
//! containers, then unused images), and if that was not enough evict at most
//! one pod for the starved resource through its pod worker.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::api::ListParams;
use kube::{Api, Client};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::handle::{EvictionHandle, Termination};
use super::local_storage;
use super::message::{REASON, THRESHOLD_MET, eviction_message};
use super::pressure::{Pressure, PressureTracker, apply_to_health};
use super::rank::{PodUsages, is_critical, rank, starved_resource};
use super::reclaim::{NodeReclaim, reclaims};
use super::signals::{NodeSignals, Observations};
use super::stats::PodStats;
use super::thresholds::{
    EvictionThreshold, ThresholdTracker, from_config, observed_quantity, thresholds_met, to_reclaim,
};
use crate::config::{Config, EvictionSettings, Signal};
use crate::image_gc::events::node_event;
use crate::kuberuntime::events::EventType;
use crate::kuberuntime::gc::PodStates;
use crate::node::NodeHealth;

/// Why a pod is evicted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// A node-pressure threshold of this signal.
    Pressure(Signal),
    /// A local storage limit, by kubelet's `eviction_signal` label.
    LocalStorage(&'static str),
}

impl Cause {
    /// kubelet's `eviction_signal` label.
    pub fn label(self) -> &'static str {
        match self {
            Cause::Pressure(signal) => signal.as_str(),
            Cause::LocalStorage(label) => label,
        }
    }

    /// Whether the pod gets a `DisruptionTarget` condition: node-pressure
    /// evictions do, local storage limit ones do not (as kubelet).
    pub fn disruption_target(self) -> bool {
        matches!(self, Cause::Pressure(_))
    }
}

/// A pod to evict and how.
#[derive(Debug, Clone, PartialEq)]
pub struct Eviction {
    pub pod: Pod,
    pub cause: Cause,
    pub grace_period: i64,
    pub message: String,
}

/// The outcome of one synchronize.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub conditions: Vec<Pressure>,
    /// The signal of the threshold to reclaim (kubelet's
    /// `thresholdToReclaim`): node-level reclaim comes before `evictions`.
    /// None when no threshold acts, or pods over their local storage limits go.
    pub reclaim: Option<Signal>,
    /// Every pod over a local storage limit, else at most one pod for node pressure.
    pub evictions: Vec<Eviction>,
}

/// The manager's state between rounds; `synchronize` does no I/O.
pub struct Manager {
    thresholds: Vec<EvictionThreshold>,
    settings: EvictionSettings,
    met: ThresholdTracker,
    pressure: PressureTracker,
}

/// The grace period of an eviction (upstream `synchronize`): none for a
/// hard threshold; for a soft one `--eviction-max-pod-grace-period`, or
/// the pod's own when that is shorter (or the flag is negative).
pub fn grace_period(threshold: &EvictionThreshold, pod: &Pod, max_pod_grace_period: i64) -> i64 {
    if threshold.is_hard() {
        return 0;
    }
    let own = pod
        .spec
        .as_ref()
        .and_then(|s| s.termination_grace_period_seconds);
    match own {
        Some(own) if max_pod_grace_period < 0 => own,
        Some(own) => own.min(max_pod_grace_period),
        None if max_pod_grace_period < 0 => 30,
        None => max_pod_grace_period,
    }
}

impl Manager {
    pub fn new(thresholds: Vec<EvictionThreshold>, settings: EvictionSettings) -> Self {
        Self {
            thresholds,
            settings,
            met: ThresholdTracker::default(),
            pressure: PressureTracker::default(),
        }
    }

    /// The thresholds `observations` meet, minimum reclaim included and grace
    /// periods ignored (after a node-level reclaim).
    pub fn still_met(&self, observations: &Observations) -> bool {
        !thresholds_met(&self.thresholds, observations, true).is_empty()
    }

    /// One round over `active` pods (running, not being deleted).
    pub fn synchronize(
        &mut self,
        now: Instant,
        observations: &Observations,
        active: &[Pod],
        usages: &PodUsages,
    ) -> Decision {
        let (met, actionable) = self.met.observe(&self.thresholds, observations, now);
        let conditions = self
            .pressure
            .observe(&met, self.settings.pressure_transition_period, now);
        let over_limits: Vec<Eviction> = active
            .iter()
            .filter(|p| !is_critical(p))
            .filter_map(|pod| {
                let uid = pod.metadata.uid.as_deref().unwrap_or_default();
                let e = local_storage::exceeded(pod, usages.get(uid)?)?;
                Some(Eviction {
                    pod: pod.clone(),
                    cause: Cause::LocalStorage(e.signal),
                    grace_period: 0,
                    message: e.message,
                })
            })
            .collect();
        if !over_limits.is_empty() {
            return Decision {
                conditions,
                reclaim: None,
                evictions: over_limits,
            };
        }
        let Some(threshold) = to_reclaim(&actionable) else {
            return Decision {
                conditions,
                reclaim: None,
                evictions: Vec::new(),
            };
        };
        let resource = starved_resource(threshold.signal);
        let shown = actionable
            .iter()
            .filter(|t| starved_resource(t.signal) == resource)
            .find_map(|t| {
                let o = observations.get(&t.signal)?;
                Some((t.quantity(o.capacity), observed_quantity(t.signal, o)))
            });
        let mut candidates: Vec<Pod> = active.iter().filter(|p| !is_critical(p)).cloned().collect();
        rank(&mut candidates, resource, usages);
        let eviction = candidates.into_iter().next().map(|pod| {
            let uid = pod.metadata.uid.as_deref().unwrap_or_default();
            let message = eviction_message(resource, &pod, usages.get(uid), shown);
            Eviction {
                grace_period: grace_period(&threshold, &pod, self.settings.max_pod_grace_period),
                cause: Cause::Pressure(threshold.signal),
                message,
                pod,
            }
        });
        Decision {
            conditions,
            reclaim: Some(threshold.signal),
            evictions: eviction.into_iter().collect(),
        }
    }
}

/// What the eviction loop needs.
pub struct EvictionContext {
    pub config: Arc<Config>,
    pub client: Client,
    pub handle: Arc<EvictionHandle>,
    pub signals: Arc<dyn NodeSignals>,
    pub stats: Arc<dyn PodStats>,
    pub health: watch::Sender<NodeHealth>,
    /// Node-level reclaim tried before a disk eviction (none: evict at once).
    pub reclaim: Option<Arc<dyn NodeReclaim>>,
}

fn is_active(pod: &Pod, handle: &EvictionHandle) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    let uid = pod.metadata.uid.as_deref().unwrap_or_default();
    pod.metadata.deletion_timestamp.is_none()
        && !matches!(phase, Some("Failed" | "Succeeded"))
        && handle.termination(uid).is_none()
}

/// The node's signals now.
async fn observe(ctx: &EvictionContext) -> Observations {
    let signals = ctx.signals.clone();
    tokio::task::spawn_blocking(move || signals.observe())
        .await
        .unwrap_or_default()
}

async fn round(ctx: &EvictionContext, manager: &mut Manager) {
    let observations = observe(ctx).await;
    let api: Api<Pod> = Api::all(ctx.client.clone());
    let params = ListParams::default().fields(&format!("spec.nodeName={}", ctx.config.node_name));
    let (active, pod_states): (Vec<Pod>, PodStates) = match api.list(&params).await {
        Ok(list) => {
            let states = PodStates::from_pods(&list.items);
            let active = list
                .items
                .into_iter()
                .filter(|p| is_active(p, &ctx.handle))
                .collect();
            (active, states)
        }
        Err(err) => {
            tracing::warn!(error = %err, "eviction manager failed to list pods");
            (Vec::new(), PodStates::Unknown)
        }
    };
    let usages = ctx.stats.usage(&active).await;
    let decision = manager.synchronize(Instant::now(), &observations, &active, &usages);
    if decision.conditions != ctx.handle.conditions() {
        tracing::info!(conditions = ?decision.conditions, "node pressure conditions changed");
    }
    ctx.handle.set_conditions(decision.conditions.clone());
    ctx.health
        .send_if_modified(|h| apply_to_health(h, &decision.conditions));
    if let Some(signal) = decision.reclaim {
        let resource = starved_resource(signal);
        if let Some(r) = &ctx.handle.recorder {
            r.write(node_event(
                r.node_name(),
                THRESHOLD_MET,
                &format!("Attempting to reclaim {resource}"),
                Timestamp::now(),
            ));
        }
        if reclaims(signal) && reclaimed_enough(ctx, manager, &pod_states).await {
            return;
        }
        if decision.evictions.is_empty() {
            tracing::error!(
                resource,
                "eviction manager: eviction thresholds have been met, but no pods are active to evict"
            );
        }
    }
    for e in decision.evictions {
        evict(ctx, e);
    }
}

/// Kubelet's `reclaimNodeLevelResources`: frees what the node can without
/// running pods, observes again, and says whether every threshold is met
/// no more (minimum reclaim included).
async fn reclaimed_enough(ctx: &EvictionContext, manager: &Manager, pods: &PodStates) -> bool {
    let Some(reclaim) = &ctx.reclaim else {
        return false;
    };
    reclaim.reclaim_disk(pods).await;
    if manager.still_met(&observe(ctx).await) {
        return false;
    }
    tracing::info!("eviction manager: able to reduce resource pressure without evicting pods");
    true
}

/// kubelet's `evictPod`: the event, the counter, and the kill by the pod's worker.
fn evict(ctx: &EvictionContext, e: Eviction) {
    let uid = e.pod.metadata.uid.clone().unwrap_or_default();
    tracing::info!(pod = ?e.pod.metadata.name, signal = e.cause.label(), grace_period = e.grace_period, message = %e.message, "evicting pod");
    if let Some(r) = &ctx.handle.recorder {
        r.record(&e.pod, None, EventType::Warning, REASON, &e.message);
    }
    ctx.handle.count_eviction(e.cause.label());
    ctx.handle.terminate(
        &uid,
        Termination {
            kill: true,
            grace_period: Some(e.grace_period),
            reason: REASON.to_owned(),
            message: e.message,
            disruption_target: e.cause.disruption_target(),
        },
    );
}

/// Runs the eviction manager until `shutdown`.
pub async fn run(ctx: EvictionContext, shutdown: CancellationToken) {
    let mut manager = Manager::new(from_config(&ctx.config), ctx.config.eviction.clone());
    let mut tick = tokio::time::interval(ctx.config.eviction.monitoring_period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        round(&ctx, &mut manager).await;
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use k8s_openapi::api::core::v1::PodSpec;

    use super::*;
    use crate::config::ThresholdValue;
    use crate::eviction::rank::PodUsage;
    use crate::eviction::signals::Observation;
    use crate::quantity::ParsedQuantity;

    fn pod(uid: &str, grace: Option<i64>) -> Pod {
        let mut p = Pod::default();
        p.metadata.uid = Some(uid.to_owned());
        p.spec = Some(PodSpec {
            termination_grace_period_seconds: grace,
            ..PodSpec::default()
        });
        p
    }

    fn threshold(signal: Signal, q: &str, grace: Option<Duration>) -> EvictionThreshold {
        EvictionThreshold {
            signal,
            value: ThresholdValue::Quantity(ParsedQuantity::parse(q).unwrap()),
            grace_period: grace,
            min_reclaim: None,
        }
    }

    #[test]
    fn grace_period_is_zero_for_hard_and_capped_for_soft() {
        let hard = threshold(Signal::MemoryAvailable, "1", None);
        let soft = threshold(Signal::MemoryAvailable, "1", Some(Duration::from_secs(1)));
        assert_eq!(grace_period(&hard, &pod("a", Some(30)), 60), 0);
        assert_eq!(grace_period(&soft, &pod("a", Some(30)), 60), 30);
        assert_eq!(grace_period(&soft, &pod("a", Some(30)), 10), 10);
        assert_eq!(grace_period(&soft, &pod("a", None), 10), 10);
        assert_eq!(grace_period(&soft, &pod("a", Some(45)), -1), 45);
    }

    #[test]
    fn disk_pressure_evicts_one_non_critical_pod_with_kubelet_message() {
        let settings = EvictionSettings {
            pressure_transition_period: Duration::from_secs(5),
            ..EvictionSettings::default()
        };
        let mut m = Manager::new(
            vec![threshold(Signal::NodeFsAvailable, "8Mi", None)],
            settings,
        );
        let mut critical = pod("mirror", None);
        critical.metadata.annotations = Some(BTreeMap::from([(
            "kubernetes.io/config.mirror".to_owned(),
            "x".to_owned(),
        )]));
        let pods = vec![critical, pod("web", Some(30))];
        let low = Observations::from([(
            Signal::NodeFsAvailable,
            Observation {
                available: 3 << 20,
                capacity: 16 << 20,
            },
        )]);
        let now = Instant::now();
        let d = m.synchronize(now, &low, &pods, &PodUsages::new());
        assert_eq!(d.conditions, vec![Pressure::Disk]);
        assert_eq!(d.reclaim, Some(Signal::NodeFsAvailable));
        let e = d.evictions.into_iter().next().unwrap();
        assert_eq!(e.pod.metadata.uid.as_deref(), Some("web"));
        assert_eq!(e.grace_period, 0);
        assert_eq!(
            e.message,
            "The node was low on resource: ephemeral-storage. Threshold quantity: 8Mi, available: 3Mi. "
        );
        // Recovered: no eviction, pressure kept for the transition period.
        let ok = Observations::from([(
            Signal::NodeFsAvailable,
            Observation {
                available: 12 << 20,
                capacity: 16 << 20,
            },
        )]);
        let d = m.synchronize(now + Duration::from_secs(1), &ok, &pods, &PodUsages::new());
        assert_eq!(d.conditions, vec![Pressure::Disk]);
        assert!(d.evictions.is_empty());
        assert_eq!(d.reclaim, None, "nothing to reclaim any more");
        let d = m.synchronize(now + Duration::from_secs(6), &ok, &pods, &PodUsages::new());
        assert!(d.conditions.is_empty());
    }

    #[test]
    fn pods_over_local_storage_limits_are_evicted_at_once_without_pressure() {
        use k8s_openapi::api::core::v1::{EmptyDirVolumeSource, Volume};
        use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

        let mut m = Manager::new(Vec::new(), EvictionSettings::default());
        let mut over = pod("over", Some(30));
        if let Some(spec) = over.spec.as_mut() {
            spec.volumes = Some(vec![Volume {
                name: "scratch".to_owned(),
                empty_dir: Some(EmptyDirVolumeSource {
                    size_limit: Some(Quantity("1Mi".to_owned())),
                    ..EmptyDirVolumeSource::default()
                }),
                ..Volume::default()
            }]);
        }
        let mut static_over = over.clone();
        static_over.metadata.uid = Some("static".to_owned());
        static_over.metadata.annotations = Some(BTreeMap::from([(
            "kubernetes.io/config.mirror".to_owned(),
            "x".to_owned(),
        )]));
        let full = PodUsage {
            volumes: BTreeMap::from([("scratch".to_owned(), 2 << 20)]),
            ..PodUsage::default()
        };
        let usages = PodUsages::from([
            ("over".to_owned(), full.clone()),
            ("static".to_owned(), full),
        ]);
        let pods = vec![pod("fine", None), over, static_over];
        let d = m.synchronize(Instant::now(), &Observations::new(), &pods, &usages);
        assert!(d.conditions.is_empty());
        let evicted: Vec<_> = d
            .evictions
            .iter()
            .map(|e| {
                (
                    e.pod.metadata.uid.as_deref().unwrap(),
                    e.grace_period,
                    e.cause.disruption_target(),
                    e.cause.label(),
                )
            })
            .collect();
        assert_eq!(
            evicted,
            [("over", 0, false, "emptydirfs.limit")],
            "critical pods stay"
        );
    }

    #[test]
    fn node_level_reclaim_is_due_even_when_only_critical_pods_run() {
        let mut m = Manager::new(
            vec![threshold(Signal::ImageFsAvailable, "8Mi", None)],
            EvictionSettings::default(),
        );
        let mut critical = pod("critical", None);
        if let Some(spec) = critical.spec.as_mut() {
            spec.priority = Some(crate::eviction::rank::SYSTEM_CRITICAL_PRIORITY);
        }
        let low = Observations::from([(
            Signal::ImageFsAvailable,
            Observation {
                available: 1 << 20,
                capacity: 16 << 20,
            },
        )]);
        let d = m.synchronize(Instant::now(), &low, &[critical], &PodUsages::new());
        assert_eq!(d.reclaim, Some(Signal::ImageFsAvailable));
        assert!(d.evictions.is_empty(), "critical pods are never evicted");
    }

    #[test]
    fn pods_over_their_limits_go_without_node_level_reclaim() {
        use k8s_openapi::api::core::v1::{EmptyDirVolumeSource, Volume};
        use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

        let mut m = Manager::new(
            vec![threshold(Signal::NodeFsAvailable, "8Mi", None)],
            EvictionSettings::default(),
        );
        let mut over = pod("over", None);
        if let Some(spec) = over.spec.as_mut() {
            spec.volumes = Some(vec![Volume {
                name: "scratch".to_owned(),
                empty_dir: Some(EmptyDirVolumeSource {
                    size_limit: Some(Quantity("1Mi".to_owned())),
                    ..EmptyDirVolumeSource::default()
                }),
                ..Volume::default()
            }]);
        }
        let usages = PodUsages::from([(
            "over".to_owned(),
            PodUsage {
                volumes: BTreeMap::from([("scratch".to_owned(), 2 << 20)]),
                ..PodUsage::default()
            },
        )]);
        let low = Observations::from([(
            Signal::NodeFsAvailable,
            Observation {
                available: 1 << 20,
                capacity: 16 << 20,
            },
        )]);
        let d = m.synchronize(Instant::now(), &low, &[over], &usages);
        assert_eq!(
            d.reclaim, None,
            "kubelet returns after local storage evictions"
        );
        assert_eq!(d.evictions.len(), 1);
    }

    #[test]
    fn after_a_node_level_reclaim_the_thresholds_are_checked_again() {
        let m = Manager::new(
            vec![threshold(Signal::NodeFsAvailable, "8Mi", None)],
            EvictionSettings::default(),
        );
        let available = |mib: i64| {
            Observations::from([(
                Signal::NodeFsAvailable,
                Observation {
                    available: mib << 20,
                    capacity: 16 << 20,
                },
            )])
        };
        assert!(m.still_met(&available(3)));
        assert!(
            !m.still_met(&available(9)),
            "images freed enough: no pod evicted"
        );
    }
}
