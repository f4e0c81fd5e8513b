//! Pod admission under node pressure (kubelet eviction manager's `Admit`):
//! under memory pressure only BestEffort pods are rejected (unless they
//! tolerate the memory-pressure taint); under any other pressure every pod
//! is; critical pods are always admitted. No I/O.

use k8s_openapi::api::core::v1::Pod;

use super::message::{REASON, node_condition_message};
use super::pressure::Pressure;
use super::rank::is_critical;
use crate::qos::{QosClass, get_pod_qos};

/// Why a pod may not run on this node now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub reason: &'static str,
    pub message: String,
}

fn tolerates_memory_pressure(pod: &Pod) -> bool {
    pod.spec
        .iter()
        .flat_map(|s| s.tolerations.iter().flatten())
        .any(|t| {
            let key_ok = match t.key.as_deref() {
                None | Some("") => t.operator.as_deref() == Some("Exists"),
                Some(k) => k == "node.kubernetes.io/memory-pressure",
            };
            let effect_ok = matches!(t.effect.as_deref(), None | Some("") | Some("NoSchedule"));
            key_ok && effect_ok
        })
}

/// Admits or rejects `pod` given the pressure conditions on now.
pub fn admit(pod: &Pod, conditions: &[Pressure]) -> Result<(), Rejection> {
    if conditions.is_empty() || is_critical(pod) {
        return Ok(());
    }
    if conditions == [Pressure::Memory]
        && (get_pod_qos(pod) != QosClass::BestEffort || tolerates_memory_pressure(pod))
    {
        return Ok(());
    }
    Err(Rejection {
        reason: REASON,
        message: node_condition_message(conditions),
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::api::core::v1::{Container, PodSpec, ResourceRequirements, Toleration};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    use super::*;

    fn pod(memory_request: Option<&str>) -> Pod {
        Pod {
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "c".to_owned(),
                    resources: memory_request.map(|r| ResourceRequirements {
                        requests: Some(BTreeMap::from([(
                            "memory".to_owned(),
                            Quantity(r.to_owned()),
                        )])),
                        ..ResourceRequirements::default()
                    }),
                    ..Container::default()
                }],
                ..PodSpec::default()
            }),
            ..Pod::default()
        }
    }

    #[test]
    fn memory_pressure_rejects_only_best_effort_pods() {
        let rejected = admit(&pod(None), &[Pressure::Memory]).unwrap_err();
        assert_eq!(rejected.reason, "Evicted");
        assert_eq!(
            rejected.message,
            "The node had condition: [MemoryPressure]. "
        );
        assert!(admit(&pod(Some("10Mi")), &[Pressure::Memory]).is_ok());
        let mut tolerant = pod(None);
        tolerant.spec.as_mut().unwrap().tolerations = Some(vec![Toleration {
            key: Some("node.kubernetes.io/memory-pressure".to_owned()),
            operator: Some("Exists".to_owned()),
            effect: Some("NoSchedule".to_owned()),
            ..Toleration::default()
        }]);
        assert!(admit(&tolerant, &[Pressure::Memory]).is_ok());
    }

    #[test]
    fn disk_pressure_rejects_every_pod_but_critical_ones() {
        assert!(admit(&pod(Some("10Mi")), &[Pressure::Disk]).is_err());
        assert!(admit(&pod(None), &[]).is_ok());
        let mut critical = pod(None);
        critical.spec.as_mut().unwrap().priority = Some(2_000_000_000);
        assert!(admit(&critical, &[Pressure::Disk]).is_ok());
    }
}
