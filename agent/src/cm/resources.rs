//! Pod cgroup sizing as kubelet's `ResourceConfigForPod`: cpu shares from
//! requests, CFS quota from limits, memory limit, and the cgroup v2 weight.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, PodSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::qos::{QosClass, compute_pod_qos};
use crate::quantity::ParsedQuantity;

pub const MIN_SHARES: u64 = 2;
pub const MAX_SHARES: u64 = 262_144;
pub const SHARES_PER_CPU: i64 = 1024;
pub const MILLI_CPU_TO_CPU: i64 = 1000;
/// CFS period, microseconds (100 ms).
pub const QUOTA_PERIOD: u64 = 100_000;
/// Smallest CFS quota, microseconds (1 ms).
pub const MIN_QUOTA_PERIOD: i64 = 1000;

/// cpu.shares for a cpu request in millicores (min 2, 1024 per cpu).
pub fn milli_cpu_to_shares(milli_cpu: i64) -> u64 {
    if milli_cpu <= 0 {
        return MIN_SHARES;
    }
    let shares = milli_cpu.saturating_mul(SHARES_PER_CPU) / MILLI_CPU_TO_CPU;
    u64::try_from(shares)
        .unwrap_or(MIN_SHARES)
        .clamp(MIN_SHARES, MAX_SHARES)
}

/// CFS quota for a cpu limit in millicores over `period` µs; 0 means no limit.
pub fn milli_cpu_to_quota(milli_cpu: i64, period: u64) -> i64 {
    if milli_cpu == 0 {
        return 0;
    }
    let period = i64::try_from(period).unwrap_or(i64::MAX);
    (milli_cpu.saturating_mul(period) / MILLI_CPU_TO_CPU).max(MIN_QUOTA_PERIOD)
}

/// cgroup v2 `cpu.weight` for cgroup v1 shares (the OCI/runc conversion).
pub fn cpu_shares_to_weight(shares: u64) -> u64 {
    if shares == 0 {
        return 0;
    }
    1 + ((shares.clamp(MIN_SHARES, MAX_SHARES) - 2) * 9999) / 262_142
}

/// What a pod cgroup is set to; `None` leaves the setting alone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResourceConfig {
    pub cpu_shares: Option<u64>,
    /// CFS quota in µs; -1 is unlimited.
    pub cpu_quota: Option<i64>,
    pub cpu_period: Option<u64>,
    /// Memory limit in bytes.
    pub memory: Option<i64>,
}

type List = BTreeMap<String, ParsedQuantity>;

fn list_of(c: &Container, limits: bool) -> List {
    let res = c.resources.as_ref();
    let src: Option<&BTreeMap<String, Quantity>> = if limits {
        res.and_then(|r| r.limits.as_ref())
    } else {
        res.and_then(|r| r.requests.as_ref())
    };
    src.into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.clone(), ParsedQuantity::from_quantity(v).ok()?)))
        .collect()
}

fn add(total: &mut List, part: &List) {
    for (k, v) in part {
        total
            .entry(k.clone())
            .and_modify(|t| *t = t.add(v))
            .or_insert(*v);
    }
}

fn max_into(total: &mut List, part: &List) {
    for (k, v) in part {
        total
            .entry(k.clone())
            .and_modify(|t| {
                if v > t {
                    *t = *v;
                }
            })
            .or_insert(*v);
    }
}

fn is_restartable(c: &Container) -> bool {
    c.restart_policy.as_deref() == Some("Always")
}

/// Effective pod requests or limits (upstream `PodRequests`/`PodLimits`):
/// the sum over containers and sidecars, or the largest init container
/// (plus the sidecars started before it) if that is bigger; plus overhead.
pub fn pod_resources(spec: &PodSpec, limits: bool) -> List {
    let mut total = List::new();
    for c in &spec.containers {
        add(&mut total, &list_of(c, limits));
    }
    let mut sidecars = List::new();
    let mut init_max = List::new();
    for c in spec.init_containers.iter().flatten() {
        let own = list_of(c, limits);
        if is_restartable(c) {
            add(&mut total, &own);
            add(&mut sidecars, &own);
            max_into(&mut init_max, &sidecars);
        } else {
            let mut with_sidecars = own;
            add(&mut with_sidecars, &sidecars);
            max_into(&mut init_max, &with_sidecars);
        }
    }
    max_into(&mut total, &init_max);
    if let Some(overhead) = &spec.overhead {
        let o: List = overhead
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), ParsedQuantity::from_quantity(v).ok()?)))
            .collect();
        add(&mut total, &o);
    }
    total
}

/// The pod cgroup settings for its QoS class.
pub fn resource_config_for_pod(spec: &PodSpec, enforce_cpu_limits: bool) -> ResourceConfig {
    let requests = pod_resources(spec, false);
    let limits = pod_resources(spec, true);
    let milli = |l: &List, k: &str| l.get(k).map_or(0, ParsedQuantity::milli_value);
    let cpu_shares = milli_cpu_to_shares(milli(&requests, "cpu"));
    let mut cpu_quota = milli_cpu_to_quota(milli(&limits, "cpu"), QUOTA_PERIOD);
    if !enforce_cpu_limits {
        cpu_quota = -1;
    }
    let memory = limits.get("memory").map_or(0, ParsedQuantity::value);
    let all = || {
        spec.containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
    };
    let declared = |k: &str| all().all(|c| list_of(c, true).get(k).is_some_and(|q| !q.is_zero()));
    match compute_pod_qos(spec) {
        QosClass::Guaranteed => ResourceConfig {
            cpu_shares: Some(cpu_shares),
            cpu_quota: Some(cpu_quota),
            cpu_period: Some(QUOTA_PERIOD),
            memory: Some(memory),
        },
        QosClass::Burstable => {
            let cpu_limited = declared("cpu");
            ResourceConfig {
                cpu_shares: Some(cpu_shares),
                cpu_quota: cpu_limited.then_some(cpu_quota),
                cpu_period: cpu_limited.then_some(QUOTA_PERIOD),
                memory: declared("memory").then_some(memory),
            }
        }
        QosClass::BestEffort => ResourceConfig {
            cpu_shares: Some(MIN_SHARES),
            ..ResourceConfig::default()
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::qos::tests::container;

    #[test]
    fn shares_are_1024_per_cpu_with_a_floor_of_two() {
        assert_eq!(milli_cpu_to_shares(0), 2);
        assert_eq!(milli_cpu_to_shares(1), 2);
        assert_eq!(milli_cpu_to_shares(100), 102);
        assert_eq!(milli_cpu_to_shares(1000), 1024);
        assert_eq!(milli_cpu_to_shares(500_000), MAX_SHARES);
    }

    #[test]
    fn quota_is_per_period_with_a_1ms_floor() {
        assert_eq!(milli_cpu_to_quota(0, QUOTA_PERIOD), 0);
        assert_eq!(milli_cpu_to_quota(1, QUOTA_PERIOD), 1000);
        assert_eq!(milli_cpu_to_quota(250, QUOTA_PERIOD), 25_000);
        assert_eq!(milli_cpu_to_quota(2000, QUOTA_PERIOD), 200_000);
    }

    #[test]
    fn v2_weight_follows_the_oci_conversion() {
        assert_eq!(cpu_shares_to_weight(2), 1);
        assert_eq!(cpu_shares_to_weight(1024), 39);
        assert_eq!(cpu_shares_to_weight(262_144), 10_000);
    }

    #[test]
    fn guaranteed_pod_gets_shares_quota_and_memory() {
        let spec = PodSpec {
            containers: vec![container(
                "a",
                &[("cpu", "500m"), ("memory", "128Mi")],
                &[("cpu", "500m"), ("memory", "128Mi")],
            )],
            ..PodSpec::default()
        };
        assert_eq!(
            resource_config_for_pod(&spec, true),
            ResourceConfig {
                cpu_shares: Some(512),
                cpu_quota: Some(50_000),
                cpu_period: Some(100_000),
                memory: Some(128 << 20),
            }
        );
    }

    #[test]
    fn burstable_pod_gets_limits_only_when_every_container_declares_them() {
        let spec = PodSpec {
            containers: vec![
                container("a", &[("cpu", "100m")], &[("memory", "64Mi")]),
                container("b", &[("cpu", "100m")], &[("memory", "64Mi")]),
            ],
            ..PodSpec::default()
        };
        let rc = resource_config_for_pod(&spec, true);
        assert_eq!(rc.cpu_shares, Some(204));
        assert_eq!(rc.cpu_quota, None);
        assert_eq!(rc.memory, Some(128 << 20));
    }

    #[test]
    fn best_effort_pod_gets_minimum_shares() {
        let spec = PodSpec {
            containers: vec![container("a", &[], &[])],
            ..PodSpec::default()
        };
        assert_eq!(
            resource_config_for_pod(&spec, true),
            ResourceConfig {
                cpu_shares: Some(2),
                ..ResourceConfig::default()
            }
        );
    }

    #[test]
    fn init_containers_raise_requests_to_their_maximum() {
        let spec = PodSpec {
            containers: vec![container("a", &[("cpu", "100m")], &[])],
            init_containers: Some(vec![container("i", &[("cpu", "1")], &[])]),
            ..PodSpec::default()
        };
        assert_eq!(pod_resources(&spec, false)["cpu"].milli_value(), 1000);
    }
}
