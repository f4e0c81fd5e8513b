//! Pod QoS class as kubelet's `GetPodQOS`/`ComputePodQOS`: decides the
//! cgroup parent (`cm`) and is reported in the pod status.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};

use crate::quantity::ParsedQuantity;

/// A pod's QoS class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QosClass {
    Guaranteed,
    Burstable,
    BestEffort,
}

impl QosClass {
    /// The API spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            QosClass::Guaranteed => "Guaranteed",
            QosClass::Burstable => "Burstable",
            QosClass::BestEffort => "BestEffort",
        }
    }

    fn from_api(s: &str) -> Option<Self> {
        match s {
            "Guaranteed" => Some(QosClass::Guaranteed),
            "Burstable" => Some(QosClass::Burstable),
            "BestEffort" => Some(QosClass::BestEffort),
            _ => None,
        }
    }
}

fn is_qos_resource(name: &str) -> bool {
    name == "cpu" || name == "memory"
}

fn positive(
    list: Option<&BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>,
) -> BTreeMap<String, ParsedQuantity> {
    list.into_iter()
        .flatten()
        .filter(|(k, _)| is_qos_resource(k))
        .filter_map(|(k, v)| {
            // Unparsable quantities are rejected by API validation; ignore them here.
            let q = ParsedQuantity::from_quantity(v).ok()?;
            (!q.is_zero() && !q.is_negative()).then(|| (k.clone(), q))
        })
        .collect()
}

fn add_into(total: &mut BTreeMap<String, ParsedQuantity>, part: BTreeMap<String, ParsedQuantity>) {
    for (k, v) in part {
        total.entry(k).and_modify(|t| *t = t.add(&v)).or_insert(v);
    }
}

/// Computes the QoS class from the containers' requests and limits.
pub fn compute_pod_qos(spec: &PodSpec) -> QosClass {
    let mut requests = BTreeMap::new();
    let mut limits = BTreeMap::new();
    let mut guaranteed = true;
    let all: Vec<&Container> = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .collect();
    for c in all {
        let res = c.resources.as_ref();
        add_into(
            &mut requests,
            positive(res.and_then(|r| r.requests.as_ref())),
        );
        let lim = positive(res.and_then(|r| r.limits.as_ref()));
        if !(lim.contains_key("cpu") && lim.contains_key("memory")) {
            guaranteed = false;
        }
        add_into(&mut limits, lim);
    }
    if requests.is_empty() && limits.is_empty() {
        return QosClass::BestEffort;
    }
    if guaranteed {
        guaranteed = requests.iter().all(|(k, req)| limits.get(k) == Some(req));
    }
    if guaranteed && requests.len() == limits.len() {
        QosClass::Guaranteed
    } else {
        QosClass::Burstable
    }
}

/// The pod's QoS class: the one in its status if set, else computed.
pub fn get_pod_qos(pod: &Pod) -> QosClass {
    pod.status
        .as_ref()
        .and_then(|s| s.qos_class.as_deref())
        .and_then(QosClass::from_api)
        .unwrap_or_else(|| compute_pod_qos(&pod.spec.clone().unwrap_or_default()))
}

#[cfg(test)]
pub(crate) mod tests {
    use k8s_openapi::api::core::v1::ResourceRequirements;
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    use super::*;

    pub(crate) fn container(
        name: &str,
        requests: &[(&str, &str)],
        limits: &[(&str, &str)],
    ) -> Container {
        let list = |l: &[(&str, &str)]| {
            (!l.is_empty()).then(|| {
                l.iter()
                    .map(|(k, v)| ((*k).to_owned(), Quantity((*v).to_owned())))
                    .collect()
            })
        };
        Container {
            name: name.to_owned(),
            resources: Some(ResourceRequirements {
                requests: list(requests),
                limits: list(limits),
                ..ResourceRequirements::default()
            }),
            ..Container::default()
        }
    }

    fn spec(containers: Vec<Container>) -> PodSpec {
        PodSpec {
            containers,
            ..PodSpec::default()
        }
    }

    #[test]
    fn no_requests_or_limits_is_best_effort() {
        assert_eq!(
            compute_pod_qos(&spec(vec![container("a", &[], &[])])),
            QosClass::BestEffort
        );
        assert_eq!(
            compute_pod_qos(&spec(vec![container("a", &[("cpu", "0")], &[])])),
            QosClass::BestEffort
        );
    }

    #[test]
    fn equal_cpu_and_memory_requests_and_limits_is_guaranteed() {
        let c = container(
            "a",
            &[("cpu", "1"), ("memory", "1Gi")],
            &[("cpu", "1000m"), ("memory", "1Gi")],
        );
        let d = container(
            "b",
            &[("cpu", "100m"), ("memory", "10Mi")],
            &[("cpu", "100m"), ("memory", "10Mi")],
        );
        assert_eq!(compute_pod_qos(&spec(vec![c, d])), QosClass::Guaranteed);
    }

    #[test]
    fn partial_or_unequal_resources_are_burstable() {
        let only_requests = container("a", &[("cpu", "100m")], &[]);
        assert_eq!(
            compute_pod_qos(&spec(vec![only_requests])),
            QosClass::Burstable
        );
        let unequal = container(
            "a",
            &[("cpu", "100m"), ("memory", "1Gi")],
            &[("cpu", "200m"), ("memory", "1Gi")],
        );
        assert_eq!(compute_pod_qos(&spec(vec![unequal])), QosClass::Burstable);
        let g = container(
            "a",
            &[("cpu", "1"), ("memory", "1Gi")],
            &[("cpu", "1"), ("memory", "1Gi")],
        );
        let be = container("b", &[], &[]);
        assert_eq!(compute_pod_qos(&spec(vec![g, be])), QosClass::Burstable);
    }

    #[test]
    fn status_qos_class_wins() {
        let pod = Pod {
            status: Some(k8s_openapi::api::core::v1::PodStatus {
                qos_class: Some("Guaranteed".to_owned()),
                ..Default::default()
            }),
            ..Pod::default()
        };
        assert_eq!(get_pod_qos(&pod), QosClass::Guaranteed);
    }
}
