//! The replica count one metric asks for (upstream
//! pkg/controller/podautoscaler/replica_calculator.go): pods are grouped
//! into ready, unready, missing and ignored, the usage ratio against the
//! target is computed over the ready ones, and missing or unready pods are
//! then counted pessimistically before the proposal is accepted. No I/O.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::jiff::{SignedDuration, Timestamp};

/// Changes of the usage ratio within 10% of 1.0 are ignored (upstream
/// `--horizontal-pod-autoscaler-tolerance`).
pub const TOLERANCE: f64 = 0.1;
/// CPU samples of a pod started this recently need a sample taken after it
/// became ready (upstream `--horizontal-pod-autoscaler-cpu-initialization-period`).
const CPU_INITIALIZATION_PERIOD: SignedDuration = SignedDuration::from_secs(300);
/// A pod that turned unready within this long of its start was never ready
/// (upstream `--horizontal-pod-autoscaler-initial-readiness-delay`).
const INITIAL_READINESS_DELAY: SignedDuration = SignedDuration::from_secs(30);

/// What the calculation needs of one pod.
#[derive(Debug, Clone, Default)]
pub struct PodInfo {
    pub name: String,
    pub phase: String,
    pub deleting: bool,
    pub start_time: Option<Timestamp>,
    /// The Ready condition: whether true, and when it last changed.
    pub ready: Option<(bool, Option<Timestamp>)>,
    /// Requests of the resource per container, in milli-units (`None`:
    /// the container has no request for it).
    pub requests: Vec<(String, Option<i64>)>,
}

/// One pod's sample in milli-units.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PodMetric {
    pub value: i64,
    pub timestamp: Timestamp,
    pub window: SignedDuration,
}

/// Sampled pods by name.
pub type PodMetrics = BTreeMap<String, PodMetric>;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ReplicaError {
    #[error("no pods returned by selector while calculating replica count")]
    NoPods,
    #[error("did not receive metrics for targeted pods (pods might be unready)")]
    NoReadyMetrics,
    #[error("missing request for {resource} in container {container} of Pod {pod}")]
    MissingRequest {
        resource: String,
        container: String,
        pod: String,
    },
    #[error("no metrics returned matched known pods")]
    NoMatchingMetrics,
}

/// A proposal: the replica count and what was measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Proposal {
    pub replicas: i32,
    /// Average utilization in percent of the requests (utilization targets only).
    pub utilization: Option<i32>,
    /// Average usage per pod, in milli-units.
    pub raw_average: i64,
}

/// The target of a resource metric.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Target {
    /// Percent of the pods' requests.
    Utilization(i32),
    /// Milli-units per pod.
    AverageValue(i64),
}

/// Ready pods, and the names of unready, missing and ignored ones
/// (upstream `groupPods`).
struct Groups {
    ready: usize,
    unready: BTreeSet<String>,
    missing: BTreeSet<String>,
    ignored: BTreeSet<String>,
}

fn group_pods(pods: &[PodInfo], metrics: &PodMetrics, cpu: bool, now: Timestamp) -> Groups {
    let mut g = Groups {
        ready: 0,
        unready: BTreeSet::new(),
        missing: BTreeSet::new(),
        ignored: BTreeSet::new(),
    };
    for pod in pods {
        if pod.deleting || pod.phase == "Failed" {
            g.ignored.insert(pod.name.clone());
            continue;
        }
        if pod.phase == "Pending" {
            g.unready.insert(pod.name.clone());
            continue;
        }
        let Some(metric) = metrics.get(&pod.name) else {
            g.missing.insert(pod.name.clone());
            continue;
        };
        if cpu && cpu_unready(pod, metric, now) {
            g.unready.insert(pod.name.clone());
            continue;
        }
        g.ready += 1;
    }
    g
}

/// Whether a CPU sample must be ignored because the pod is not (yet) ready
/// or the sample may predate its readiness.
fn cpu_unready(pod: &PodInfo, metric: &PodMetric, now: Timestamp) -> bool {
    let (Some((ready, transition)), Some(start)) = (pod.ready, pod.start_time) else {
        return true;
    };
    let transition = transition.unwrap_or(start);
    if start + CPU_INITIALIZATION_PERIOD > now {
        !ready || metric.timestamp < transition + metric.window
    } else {
        !ready && start + INITIAL_READINESS_DELAY > transition
    }
}

/// Per pod, the sum of its containers' requests (`container` picks one).
fn pod_requests(
    pods: &[PodInfo],
    container: Option<&str>,
    resource: &str,
) -> Result<BTreeMap<String, i64>, ReplicaError> {
    let mut out = BTreeMap::new();
    for pod in pods {
        let mut sum = 0i64;
        for (name, request) in &pod.requests {
            if container.is_some_and(|c| c != name) {
                continue;
            }
            let Some(request) = request else {
                return Err(ReplicaError::MissingRequest {
                    resource: resource.to_string(),
                    container: name.clone(),
                    pod: pod.name.clone(),
                });
            };
            sum = sum.saturating_add(*request);
        }
        out.insert(pod.name.clone(), sum);
    }
    Ok(out)
}

/// Usage ratio, utilization percent and raw average over the pods that
/// have both a sample and a request (`GetResourceUtilizationRatio`).
fn utilization_ratio(
    metrics: &PodMetrics,
    requests: &BTreeMap<String, i64>,
    target: i32,
) -> Result<(f64, i32, i64), ReplicaError> {
    let (mut total, mut requested, mut n) = (0i64, 0i64, 0i64);
    for (name, m) in metrics {
        if let Some(r) = requests.get(name) {
            total = total.saturating_add(m.value);
            requested = requested.saturating_add(*r);
            n += 1;
        }
    }
    if requested == 0 {
        return Err(ReplicaError::NoMatchingMetrics);
    }
    let utilization = i32::try_from(total.saturating_mul(100) / requested).unwrap_or(i32::MAX);
    Ok((
        f64::from(utilization) / f64::from(target.max(1)),
        utilization,
        total / n.max(1),
    ))
}

/// Usage ratio and average of plain values (`GetMetricUsageRatio`).
fn usage_ratio(metrics: &PodMetrics, target: i64) -> (f64, i64) {
    let n = i64::try_from(metrics.len()).unwrap_or(i64::MAX).max(1);
    let average = metrics.values().map(|m| m.value).sum::<i64>() / n;
    #[allow(clippy::cast_precision_loss)] // milli-units far below 2^52
    let ratio = average as f64 / target.max(1) as f64;
    (ratio, average)
}

fn within_tolerance(ratio: f64) -> bool {
    (1.0 - ratio).abs() <= TOLERANCE
}

#[allow(clippy::cast_possible_truncation)] // replica counts are small
fn ceil_replicas(ratio: f64, pods: usize) -> i32 {
    #[allow(clippy::cast_precision_loss)]
    let v = (ratio * pods as f64).ceil();
    v.clamp(0.0, f64::from(i32::MAX)) as i32
}

/// The replicas a resource metric asks for (`GetResourceReplicas` and
/// `GetRawResourceReplicas`).
pub fn resource_replicas(
    current: i32,
    target: Target,
    resource: &str,
    container: Option<&str>,
    pods: &[PodInfo],
    mut metrics: PodMetrics,
    now: Timestamp,
) -> Result<Proposal, ReplicaError> {
    if pods.is_empty() {
        return Err(ReplicaError::NoPods);
    }
    let g = group_pods(pods, &metrics, resource == "cpu", now);
    metrics.retain(|name, _| !g.ignored.contains(name) && !g.unready.contains(name));
    if metrics.is_empty() {
        return Err(ReplicaError::NoReadyMetrics);
    }
    let requests = match target {
        Target::Utilization(_) => pod_requests(pods, container, resource)?,
        Target::AverageValue(_) => BTreeMap::new(),
    };
    let ratio_of = |m: &PodMetrics| -> Result<(f64, Option<i32>, i64), ReplicaError> {
        match target {
            Target::Utilization(t) => {
                utilization_ratio(m, &requests, t).map(|(r, u, raw)| (r, Some(u), raw))
            }
            Target::AverageValue(t) => {
                let (r, avg) = usage_ratio(m, t);
                Ok((r, None, avg))
            }
        }
    };
    let (ratio, utilization, raw_average) = ratio_of(&metrics)?;
    let proposal = |replicas| Proposal {
        replicas,
        utilization,
        raw_average,
    };
    let scale_up_with_unready = !g.unready.is_empty() && ratio > 1.0;
    if !scale_up_with_unready && g.missing.is_empty() {
        if within_tolerance(ratio) {
            return Ok(proposal(current));
        }
        return Ok(proposal(ceil_replicas(ratio, g.ready)));
    }
    // Missing pods count as using the target (scale down) or nothing
    // (scale up); unready pods as nothing on a scale up.
    for name in &g.missing {
        let value = if ratio < 1.0 {
            match target {
                Target::Utilization(t) => {
                    let fallback = i64::from(t.max(100));
                    requests.get(name).copied().unwrap_or(0) * fallback / 100
                }
                Target::AverageValue(t) => t,
            }
        } else {
            0
        };
        metrics.insert(
            name.clone(),
            PodMetric {
                value,
                timestamp: now,
                window: SignedDuration::ZERO,
            },
        );
    }
    if scale_up_with_unready {
        for name in &g.unready {
            metrics.insert(
                name.clone(),
                PodMetric {
                    value: 0,
                    timestamp: now,
                    window: SignedDuration::ZERO,
                },
            );
        }
    }
    let (new_ratio, _, _) = ratio_of(&metrics)?;
    if within_tolerance(new_ratio)
        || (ratio < 1.0 && new_ratio > 1.0)
        || (ratio > 1.0 && new_ratio < 1.0)
    {
        return Ok(proposal(current));
    }
    let replicas = ceil_replicas(new_ratio, metrics.len());
    if (new_ratio < 1.0 && replicas > current) || (new_ratio > 1.0 && replicas < current) {
        return Ok(proposal(current));
    }
    Ok(proposal(replicas))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).unwrap()
    }

    const NOW: i64 = 1_000_000;

    fn running(name: &str, request: i64) -> PodInfo {
        PodInfo {
            name: name.into(),
            phase: "Running".into(),
            deleting: false,
            start_time: Some(t(NOW - 3600)),
            ready: Some((true, Some(t(NOW - 3500)))),
            requests: vec![("c".into(), Some(request))],
        }
    }

    fn sample(value: i64) -> PodMetric {
        PodMetric {
            value,
            timestamp: t(NOW - 5),
            window: SignedDuration::from_secs(10),
        }
    }

    fn metrics(values: &[(&str, i64)]) -> PodMetrics {
        values
            .iter()
            .map(|(n, v)| (n.to_string(), sample(*v)))
            .collect()
    }

    fn cpu(current: i32, target: i32, pods: &[PodInfo], m: PodMetrics) -> Proposal {
        resource_replicas(
            current,
            Target::Utilization(target),
            "cpu",
            None,
            pods,
            m,
            t(NOW),
        )
        .unwrap()
    }

    #[test]
    fn usage_above_target_scales_by_the_ratio() {
        let pods = [running("a", 100), running("b", 100)];
        let p = cpu(2, 50, &pods, metrics(&[("a", 90), ("b", 90)]));
        assert_eq!(p.utilization, Some(90));
        assert_eq!(p.raw_average, 90);
        assert_eq!(p.replicas, 4);
    }

    #[test]
    fn a_ratio_within_the_tolerance_keeps_the_current_count() {
        let pods = [running("a", 100), running("b", 100)];
        let p = cpu(2, 50, &pods, metrics(&[("a", 54), ("b", 54)]));
        assert_eq!((p.replicas, p.utilization), (2, Some(54)));
        let p = cpu(2, 50, &pods, metrics(&[("a", 56), ("b", 56)]));
        assert_eq!(p.replicas, 3);
    }

    #[test]
    fn usage_below_target_scales_down() {
        let pods = [running("a", 100), running("b", 100), running("c", 100)];
        let p = cpu(3, 50, &pods, metrics(&[("a", 10), ("b", 10), ("c", 10)]));
        assert_eq!(p.replicas, 1);
    }

    #[test]
    fn missing_pods_count_as_idle_on_a_scale_up() {
        let pods = [running("a", 100), running("b", 100)];
        // a alone is at 200%: with b counted as 0 the ratio is 2.0 -> 4.
        let p = cpu(2, 50, &pods, metrics(&[("a", 200)]));
        assert_eq!(p.replicas, 4);
    }

    #[test]
    fn missing_pods_count_as_full_on_a_scale_down() {
        let pods = [running("a", 100), running("b", 100)];
        // a at 10%, b counted at 100% of its request: 55% of a 50% target is
        // within the direction change check (ratio flips above 1): no change.
        let p = cpu(2, 50, &pods, metrics(&[("a", 10)]));
        assert_eq!(p.replicas, 2);
    }

    #[test]
    fn pending_pods_are_unready_and_do_not_block_a_scale_up() {
        let mut pending = running("b", 100);
        pending.phase = "Pending".into();
        let pods = [running("a", 100), pending];
        let p = cpu(2, 50, &pods, metrics(&[("a", 100)]));
        // (100 + 0) / 200 = 50%: within tolerance after counting b as idle.
        assert_eq!(p.replicas, 2);
        // 150% alone, 75% with b idle: 1.5 x 2 pods.
        let p = cpu(2, 50, &pods, metrics(&[("a", 150)]));
        assert_eq!(p.replicas, 3);
    }

    #[test]
    fn a_fresh_cpu_sample_from_before_readiness_is_ignored() {
        let mut fresh = running("b", 100);
        fresh.start_time = Some(t(NOW - 60));
        fresh.ready = Some((true, Some(t(NOW - 2))));
        let pods = [running("a", 100), fresh];
        let g = group_pods(&pods, &metrics(&[("a", 1), ("b", 1)]), true, t(NOW));
        assert_eq!(g.ready, 1);
        assert!(g.unready.contains("b"));
        let g = group_pods(&pods, &metrics(&[("a", 1), ("b", 1)]), false, t(NOW));
        assert_eq!(g.ready, 2);
    }

    #[test]
    fn deleted_and_failed_pods_are_ignored() {
        let mut gone = running("b", 100);
        gone.deleting = true;
        let mut failed = running("c", 100);
        failed.phase = "Failed".into();
        let pods = [running("a", 100), gone, failed];
        let p = cpu(3, 50, &pods, metrics(&[("a", 100), ("b", 0), ("c", 0)]));
        assert_eq!(p.replicas, 2);
    }

    #[test]
    fn no_pods_or_no_ready_metrics_are_errors() {
        let err = resource_replicas(
            1,
            Target::Utilization(50),
            "cpu",
            None,
            &[],
            PodMetrics::new(),
            t(NOW),
        );
        assert_eq!(err, Err(ReplicaError::NoPods));
        let pods = [running("a", 100)];
        let err = resource_replicas(
            1,
            Target::Utilization(50),
            "cpu",
            None,
            &pods,
            PodMetrics::new(),
            t(NOW),
        );
        assert_eq!(err, Err(ReplicaError::NoReadyMetrics));
    }

    #[test]
    fn a_container_without_a_request_is_an_error() {
        let mut pod = running("a", 100);
        pod.requests = vec![("c".into(), None)];
        let err = resource_replicas(
            1,
            Target::Utilization(50),
            "cpu",
            None,
            &[pod],
            metrics(&[("a", 10)]),
            t(NOW),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "missing request for cpu in container c of Pod a"
        );
    }

    #[test]
    fn average_value_targets_use_the_mean_usage() {
        let pods = [running("a", 0), running("b", 0)];
        let p = resource_replicas(
            2,
            Target::AverageValue(100_000),
            "memory",
            None,
            &pods,
            metrics(&[("a", 300_000), ("b", 300_000)]),
            t(NOW),
        )
        .unwrap();
        assert_eq!(
            (p.replicas, p.utilization, p.raw_average),
            (6, None, 300_000)
        );
    }
}
