//! The HPA status the controller writes after each sync: conditions kept
//! in first-set order with `lastTransitionTime` moving only when the status
//! flips (upstream `setConditionInList`), and the per-metric
//! `currentMetrics` entries. No I/O.

use agent::quantity::{Format, ParsedQuantity};
use k8s_openapi::api::autoscaling::v2::{
    HorizontalPodAutoscalerCondition, MetricStatus, MetricValueStatus, ResourceMetricStatus,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::replicas::Proposal;

pub const ABLE_TO_SCALE: &str = "AbleToScale";
pub const SCALING_ACTIVE: &str = "ScalingActive";
pub const SCALING_LIMITED: &str = "ScalingLimited";

/// Sets one condition in `list`, appending it if new.
pub fn set_condition(
    list: &mut Vec<HorizontalPodAutoscalerCondition>,
    type_: &str,
    status: bool,
    reason: &str,
    message: String,
    now: &Time,
) {
    let status = if status { "True" } else { "False" };
    let idx = match list.iter().position(|c| c.type_ == type_) {
        Some(i) => i,
        None => {
            list.push(HorizontalPodAutoscalerCondition {
                type_: type_.to_string(),
                ..Default::default()
            });
            list.len() - 1
        }
    };
    let c = &mut list[idx];
    if c.status != status {
        c.last_transition_time = Some(now.clone());
    }
    c.status = status.to_string();
    c.reason = Some(reason.to_string());
    c.message = Some(message);
}

/// Milli-units as a DecimalSI quantity (`resource.NewMilliQuantity`).
pub fn milli_quantity(milli: i64) -> Quantity {
    Quantity(ParsedQuantity::from_milli(milli, Format::DecimalSI).to_string())
}

/// The `currentMetrics` entry of a Resource or ContainerResource metric.
pub fn resource_status(resource: &str, container: Option<&str>, p: &Proposal) -> MetricStatus {
    let current = MetricValueStatus {
        average_utilization: p.utilization,
        average_value: Some(milli_quantity(p.raw_average)),
        value: None,
    };
    match container {
        None => MetricStatus {
            type_: "Resource".into(),
            resource: Some(ResourceMetricStatus {
                name: resource.to_string(),
                current,
            }),
            ..Default::default()
        },
        Some(c) => MetricStatus {
            type_: "ContainerResource".into(),
            container_resource: Some(
                k8s_openapi::api::autoscaling::v2::ContainerResourceMetricStatus {
                    name: resource.to_string(),
                    container: c.to_string(),
                    current,
                },
            ),
            ..Default::default()
        },
    }
}

/// An empty entry for a metric that could not be read, as upstream keeps
/// one status per spec metric.
pub fn empty_status(type_: &str) -> MetricStatus {
    MetricStatus {
        type_: type_.to_string(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn time(secs: i64) -> Time {
        Time(Timestamp::from_second(secs).unwrap())
    }

    #[test]
    fn transition_time_moves_only_when_the_status_flips() {
        let mut list = Vec::new();
        set_condition(
            &mut list,
            ABLE_TO_SCALE,
            true,
            "SucceededGetScale",
            "a".into(),
            &time(1),
        );
        set_condition(
            &mut list,
            SCALING_ACTIVE,
            false,
            "FailedGetResourceMetric",
            "b".into(),
            &time(1),
        );
        set_condition(
            &mut list,
            ABLE_TO_SCALE,
            true,
            "ReadyForNewScale",
            "c".into(),
            &time(2),
        );
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].reason.as_deref(), Some("ReadyForNewScale"));
        assert_eq!(list[0].last_transition_time, Some(time(1)));
        set_condition(
            &mut list,
            SCALING_ACTIVE,
            true,
            "ValidMetricFound",
            "d".into(),
            &time(3),
        );
        assert_eq!(list[1].status, "True");
        assert_eq!(list[1].last_transition_time, Some(time(3)));
        assert_eq!(list[1].message.as_deref(), Some("d"));
    }

    #[test]
    fn resource_status_reports_utilization_and_the_average_in_decimal_si() {
        let p = Proposal {
            replicas: 2,
            utilization: Some(80),
            raw_average: 80,
        };
        let s = resource_status("cpu", None, &p);
        let r = s.resource.unwrap();
        assert_eq!(r.current.average_utilization, Some(80));
        assert_eq!(r.current.average_value, Some(Quantity("80m".into())));
        assert_eq!(milli_quantity(1_048_576_000).0, "1048576");
    }
}
