//! One proposal from all of an HPA's metrics (upstream
//! `computeReplicasForMetrics`): the scale's selector is checked, each
//! metric proposes a count, the largest wins; invalid metrics give the
//! ScalingActive=False condition and a Warning event of their own.

use k8s_openapi::api::autoscaling::v2::{
    HorizontalPodAutoscaler, MetricSpec, MetricStatus, MetricTarget,
};
use k8s_openapi::jiff::Timestamp;

use super::events::Events;
use super::metrics;
use super::replicas::{self, Target};
use super::status;

/// The outcome over all metrics.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The proposal, `None` when no metric (or a scale down with an invalid
    /// metric) allows one.
    pub replicas: Option<i32>,
    /// The metric that proposed the count (`cpu resource utilization ...`).
    pub metric: String,
    /// One entry per spec metric.
    pub statuses: Vec<MetricStatus>,
    /// The ScalingActive condition: status, reason, message.
    pub active: (bool, String, String),
    /// The first error, if any metric was invalid.
    pub error: Option<String>,
}

impl Outcome {
    fn failed(reason: &str, message: String, error: String) -> Self {
        Self {
            replicas: None,
            metric: String::new(),
            statuses: Vec::new(),
            active: (false, reason.to_string(), message),
            error: Some(error),
        }
    }
}

/// What one metric failed with: the condition reason and the error.
struct MetricFailure {
    reason: &'static str,
    error: String,
}

/// Checks the scale's selector (`validateAndParseSelector`): the failed
/// outcome when it is missing or does not parse.
fn selector_failure(
    events: &Events,
    hpa: &HorizontalPodAutoscaler,
    selector: &str,
) -> Option<Outcome> {
    if selector.is_empty() {
        let msg = "selector is required".to_string();
        events.warning(hpa, "SelectorRequired", msg.clone());
        return Some(Outcome::failed(
            "InvalidSelector",
            "the HPA target's scale is missing a selector".into(),
            msg,
        ));
    }
    if let Err(e) = crate::selectors::parse_label_selector(selector) {
        let msg =
            format!("couldn't convert selector into a corresponding internal selector object: {e}");
        events.warning(hpa, "InvalidSelector", msg.clone());
        return Some(Outcome::failed("InvalidSelector", msg.clone(), msg));
    }
    None
}

/// Every metric's proposal for a target now at `current` replicas whose
/// pods `selector` selects.
pub async fn compute(
    client: &kube::Client,
    events: &Events,
    hpa: &HorizontalPodAutoscaler,
    selector: &str,
    current: i32,
) -> Outcome {
    if let Some(outcome) = selector_failure(events, hpa, selector) {
        return outcome;
    }
    let ns = hpa.metadata.namespace.clone().unwrap_or_default();
    let specs: &[MetricSpec] = hpa
        .spec
        .as_ref()
        .and_then(|s| s.metrics.as_deref())
        .unwrap_or_default();
    let mut statuses = vec![status::empty_status(""); specs.len()];
    let mut best: Option<(i32, String)> = None;
    let mut first_failure: Option<MetricFailure> = None;
    let mut invalid = 0usize;
    for (i, spec) in specs.iter().enumerate() {
        match metric_proposal(client, &ns, selector, current, spec).await {
            Ok((proposal, name, st)) => {
                statuses[i] = st;
                if best.as_ref().is_none_or(|(r, _)| proposal > *r) {
                    best = Some((proposal, name));
                }
            }
            Err(f) => {
                events.warning(hpa, f.reason, f.error.clone());
                invalid += 1;
                if first_failure.is_none() {
                    first_failure = Some(f);
                }
            }
        }
    }
    let (replicas, metric) = best.map_or((None, String::new()), |(r, m)| (Some(r), m));
    if let Some(f) = first_failure {
        let error = format!(
            "invalid metrics ({invalid} invalid out of {}), first error is: {}",
            specs.len(),
            f.error
        );
        if invalid >= specs.len() || replicas.is_some_and(|r| r < current) {
            return Outcome {
                replicas: None,
                metric,
                statuses,
                active: (
                    false,
                    f.reason.to_string(),
                    format!(
                        "the HPA was unable to compute the replica count: {}",
                        f.error
                    ),
                ),
                error: Some(error),
            };
        }
        return Outcome {
            active: active_true(&metric),
            replicas,
            metric,
            statuses,
            error: Some(error),
        };
    }
    Outcome {
        active: active_true(&metric),
        replicas,
        metric,
        statuses,
        error: None,
    }
}

fn active_true(metric: &str) -> (bool, String, String) {
    (
        true,
        "ValidMetricFound".into(),
        format!("the HPA was able to successfully calculate a replica count from {metric}"),
    )
}

/// One metric's proposal, name and status.
async fn metric_proposal(
    client: &kube::Client,
    ns: &str,
    selector: &str,
    current: i32,
    spec: &MetricSpec,
) -> Result<(i32, String, MetricStatus), MetricFailure> {
    let (resource, container, target, reason) = match spec.type_.as_str() {
        "Resource" => match spec.resource.as_ref() {
            Some(r) => (r.name.as_str(), None, &r.target, "FailedGetResourceMetric"),
            None => return Err(invalid_source("Resource")),
        },
        "ContainerResource" => match spec.container_resource.as_ref() {
            Some(r) => (
                r.name.as_str(),
                Some(r.container.as_str()),
                &r.target,
                "FailedGetContainerResourceMetric",
            ),
            None => return Err(invalid_source("ContainerResource")),
        },
        "Pods" | "Object" | "External" => {
            let (reason, api) = match spec.type_.as_str() {
                "Pods" => ("FailedGetPodsMetric", "custom.metrics.k8s.io"),
                "Object" => ("FailedGetObjectMetric", "custom.metrics.k8s.io"),
                _ => ("FailedGetExternalMetric", "external.metrics.k8s.io"),
            };
            return Err(MetricFailure {
                reason,
                error: format!("unable to get metric: no {api} API is served by this cluster"),
            });
        }
        other => {
            return Err(MetricFailure {
                reason: "InvalidMetricSourceType",
                error: format!("unknown metric source type \"{other}\""),
            });
        }
    };
    let (target, what) = target_of(target).map_err(|error| MetricFailure { reason, error })?;
    let fail = |e: String| MetricFailure {
        reason,
        error: format!("failed to get {resource} {what}: {e}"),
    };
    let samples = metrics::resource_metrics(client, ns, selector, resource, container)
        .await
        .map_err(|e| {
            fail(format!(
                "unable to get metrics for resource {resource}: {e}"
            ))
        })?;
    let pods = metrics::pods(client, ns, selector, resource)
        .await
        .map_err(|e| fail(e.to_string()))?;
    let proposal = replicas::resource_replicas(
        current,
        target,
        resource,
        container,
        &pods,
        samples,
        Timestamp::now(),
    )
    .map_err(|e| fail(e.to_string()))?;
    let kind = if container.is_some() {
        "container resource"
    } else {
        "resource"
    };
    let name = match target {
        Target::Utilization(_) => format!("{resource} {kind} utilization (percentage of request)"),
        Target::AverageValue(_) => format!("{resource} {kind}"),
    };
    Ok((
        proposal.replicas,
        name,
        status::resource_status(resource, container, &proposal),
    ))
}

fn invalid_source(ty: &str) -> MetricFailure {
    MetricFailure {
        reason: "InvalidMetricSourceType",
        error: format!("invalid {ty} metric source: no source given"),
    }
}

/// The target of a resource metric and the word upstream names it with.
fn target_of(target: &MetricTarget) -> Result<(Target, &'static str), String> {
    if let Some(avg) = target.average_value.as_ref() {
        let milli = agent::quantity::ParsedQuantity::from_quantity(avg)
            .map_err(|e| format!("invalid average value target: {e}"))?
            .milli_value();
        return Ok((Target::AverageValue(milli), "usage"));
    }
    match target.average_utilization {
        Some(u) => Ok((Target::Utilization(u), "utilization")),
        None => Err(
            "invalid resource metric source: neither an average utilization target nor an average value (usage) target was set"
                .into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    #[test]
    fn targets_prefer_the_average_value() {
        let t = MetricTarget {
            average_value: Some(Quantity("100Mi".into())),
            average_utilization: Some(50),
            type_: "AverageValue".into(),
            value: None,
        };
        assert_eq!(
            target_of(&t).unwrap(),
            (Target::AverageValue(104_857_600_000), "usage")
        );
        let t = MetricTarget {
            average_utilization: Some(50),
            type_: "Utilization".into(),
            ..Default::default()
        };
        assert_eq!(
            target_of(&t).unwrap(),
            (Target::Utilization(50), "utilization")
        );
        assert!(
            target_of(&MetricTarget::default())
                .unwrap_err()
                .starts_with("invalid resource metric source")
        );
    }
}
