//! The words of an eviction, as kubelet writes them (`evictionMessage`,
//! the admission rejection): pod status message, event message. No I/O.

use k8s_openapi::api::core::v1::Pod;

use super::pressure::Pressure;
use super::rank::{PodUsage, pod_request};
use crate::quantity::{Format, ParsedQuantity};

/// Status reason of evicted and rejected pods (upstream `eviction.Reason`).
pub const REASON: &str = "Evicted";

/// Reason of the Node event of each round that acts on a threshold
/// (upstream `events.EvictionThresholdMet`), message "Attempting to reclaim <resource>".
pub const THRESHOLD_MET: &str = "EvictionThresholdMet";

/// `DisruptionTarget` condition reason of pods the kubelet terminates.
pub const TERMINATION_BY_KUBELET: &str = "TerminationByKubelet";

/// The status message of a pod evicted for `resource`: the threshold and
/// what was available, then each container using more than it requested.
pub fn eviction_message(
    resource: &str,
    pod: &Pod,
    usage: Option<&PodUsage>,
    threshold: Option<(ParsedQuantity, ParsedQuantity)>,
) -> String {
    let mut message = format!("The node was low on resource: {resource}. ");
    if let Some((quantity, available)) = threshold {
        message += &format!("Threshold quantity: {quantity}, available: {available}. ");
    }
    // Only memory has per-container usage here (CRI stats); disk usage is
    // measured per pod, which upstream leaves out of the message too.
    if resource != "memory" {
        return message;
    }
    let Some(usage) = usage else {
        return message;
    };
    for c in pod.spec.iter().flat_map(|s| &s.containers) {
        let Some(ws) = usage
            .containers
            .iter()
            .find(|u| u.name == c.name)
            .and_then(|u| u.memory_working_set)
        else {
            continue;
        };
        let request = single_request(pod, &c.name, resource);
        if ws > request {
            message += &format!(
                "Container {} was using {}, request is {}, has larger consumption of {resource}. ",
                c.name,
                ParsedQuantity::from_i64(ws, Format::BinarySI),
                ParsedQuantity::from_i64(request, Format::BinarySI),
            );
        }
    }
    message
}

fn single_request(pod: &Pod, container: &str, resource: &str) -> i64 {
    let mut one = pod.clone();
    if let Some(s) = one.spec.as_mut() {
        s.containers.retain(|c| c.name == container);
    }
    pod_request(&one, resource)
}

/// The admission rejection message (upstream `nodeConditionMessageFmt`).
pub fn node_condition_message(conditions: &[Pressure]) -> String {
    let names: Vec<&str> = conditions.iter().map(|c| c.as_str()).collect();
    format!("The node had condition: [{}]. ", names.join(" "))
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{Container, PodSpec};

    use super::*;
    use crate::eviction::rank::ContainerUsage;

    #[test]
    fn memory_message_names_the_threshold_and_the_greedy_container() {
        let pod = Pod {
            spec: Some(PodSpec {
                containers: vec![
                    Container {
                        name: "web".to_owned(),
                        ..Container::default()
                    },
                    Container {
                        name: "idle".to_owned(),
                        ..Container::default()
                    },
                ],
                ..PodSpec::default()
            }),
            ..Pod::default()
        };
        let usage = PodUsage {
            containers: vec![
                ContainerUsage {
                    name: "web".to_owned(),
                    memory_working_set: Some(20 << 20),
                    ..ContainerUsage::default()
                },
                ContainerUsage {
                    name: "idle".to_owned(),
                    memory_working_set: Some(0),
                    ..ContainerUsage::default()
                },
            ],
            ..PodUsage::default()
        };
        let threshold = (
            ParsedQuantity::parse("100Mi").unwrap(),
            ParsedQuantity::from_i64(50 << 20, Format::BinarySI),
        );
        assert_eq!(
            eviction_message("memory", &pod, Some(&usage), Some(threshold)),
            "The node was low on resource: memory. Threshold quantity: 100Mi, available: 50Mi. Container web was using 20Mi, request is 0, has larger consumption of memory. "
        );
    }

    #[test]
    fn disk_message_has_only_the_threshold() {
        let threshold = (
            ParsedQuantity::from_i64(8 << 20, Format::BinarySI),
            ParsedQuantity::from_i64(3 << 20, Format::BinarySI),
        );
        assert_eq!(
            eviction_message("ephemeral-storage", &Pod::default(), None, Some(threshold)),
            "The node was low on resource: ephemeral-storage. Threshold quantity: 8Mi, available: 3Mi. "
        );
    }

    #[test]
    fn admission_message_lists_conditions_like_go() {
        assert_eq!(
            node_condition_message(&[Pressure::Memory, Pressure::Disk]),
            "The node had condition: [MemoryPressure DiskPressure]. "
        );
    }
}
