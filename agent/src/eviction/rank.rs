//! Which pod goes first (kubelet's `rankMemoryPressure`,
//! `rankDiskPressureFunc`, `rankPIDPressure`): pods using more than they
//! requested, then lower priority, then larger use above requests. Critical
//! pods are never picked. No I/O.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::Pod;

use crate::config::Signal;
use crate::quantity::ParsedQuantity;

/// Upstream `scheduling.SystemCriticalPriority`.
pub const SYSTEM_CRITICAL_PRIORITY: i32 = 2_000_000_000;

/// What one container uses now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerUsage {
    pub name: String,
    pub memory_working_set: Option<i64>,
    /// Bytes of its writable layer.
    pub rootfs_bytes: Option<i64>,
    /// Bytes of its log files.
    pub logs_bytes: Option<i64>,
}

/// What one pod uses now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodUsage {
    pub containers: Vec<ContainerUsage>,
    /// Bytes of local ephemeral storage: the containers' writable layers and logs, and the
    /// disk-backed emptyDir and configMap volumes.
    pub ephemeral_storage: Option<i64>,
    /// Bytes in each emptyDir volume, by volume name.
    pub volumes: BTreeMap<String, i64>,
    pub processes: Option<i64>,
}

impl PodUsage {
    pub fn memory(&self) -> Option<i64> {
        let v: Vec<i64> = self
            .containers
            .iter()
            .filter_map(|c| c.memory_working_set)
            .collect();
        (!v.is_empty()).then(|| v.iter().sum())
    }
}

/// Usage of every pod by UID.
pub type PodUsages = HashMap<String, PodUsage>;

/// The resource a signal starves (upstream `signalToResource`).
pub fn starved_resource(signal: Signal) -> &'static str {
    match signal {
        Signal::MemoryAvailable | Signal::AllocatableMemoryAvailable => "memory",
        Signal::NodeFsAvailable | Signal::ImageFsAvailable | Signal::ContainerFsAvailable => {
            "ephemeral-storage"
        }
        Signal::NodeFsInodesFree | Signal::ImageFsInodesFree | Signal::ContainerFsInodesFree => {
            "inodes"
        }
        Signal::PidAvailable => "pids",
    }
}

fn annotation<'a>(pod: &'a Pod, key: &str) -> Option<&'a str> {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .map(String::as_str)
}

/// Static and mirror pods and pods of system-critical priority
/// (upstream `kubelettypes.IsCriticalPod`).
pub fn is_critical(pod: &Pod) -> bool {
    let is_static = annotation(pod, "kubernetes.io/config.source").is_some_and(|s| s != "api");
    let is_mirror = annotation(pod, "kubernetes.io/config.mirror").is_some();
    is_static || is_mirror || priority(pod) >= SYSTEM_CRITICAL_PRIORITY
}

fn priority(pod: &Pod) -> i32 {
    pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0)
}

/// The pod's request of `resource` summed over its containers.
pub fn pod_request(pod: &Pod, resource: &str) -> i64 {
    pod.spec
        .iter()
        .flat_map(|s| &s.containers)
        .filter_map(|c| c.resources.as_ref()?.requests.as_ref()?.get(resource))
        .filter_map(|q| ParsedQuantity::from_quantity(q).ok())
        .map(|q| q.value())
        .sum()
}

fn usage_of(resource: &str, u: &PodUsage) -> Option<i64> {
    match resource {
        "memory" => u.memory(),
        "pids" => u.processes,
        _ => u.ephemeral_storage,
    }
}

/// Sorts `pods` so the first is the one to evict for `resource`.
pub fn rank(pods: &mut [Pod], resource: &str, usages: &PodUsages) {
    let usage = |p: &Pod| {
        let uid = p.metadata.uid.as_deref().unwrap_or_default();
        usages.get(uid).and_then(|u| usage_of(resource, u))
    };
    // Inodes have no per-pod request; rank as disk without requests.
    let request = |p: &Pod| match resource {
        "memory" | "ephemeral-storage" => pod_request(p, resource),
        _ => 0,
    };
    pods.sort_by(|a, b| {
        let (ua, ub) = (usage(a), usage(b));
        let exceeds = || match (ua, ub) {
            // Pods without stats go first, as upstream.
            (None, None) => Ordering::Equal,
            (None, Some(_)) => Ordering::Less,
            (Some(_), None) => Ordering::Greater,
            (Some(x), Some(y)) => (y > request(b)).cmp(&(x > request(a))),
        };
        let above = || {
            let ax = ua.unwrap_or(0) - request(a);
            let bx = ub.unwrap_or(0) - request(b);
            bx.cmp(&ax)
        };
        if resource == "pids" {
            priority(a).cmp(&priority(b)).then_with(above)
        } else {
            exceeds()
                .then_with(|| priority(a).cmp(&priority(b)))
                .then_with(above)
        }
    });
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::api::core::v1::{Container, PodSpec, ResourceRequirements};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    use super::*;

    fn pod(uid: &str, priority: i32, memory_request: Option<&str>) -> Pod {
        let mut p = Pod::default();
        p.metadata.uid = Some(uid.to_owned());
        p.spec = Some(PodSpec {
            priority: Some(priority),
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
        });
        p
    }

    fn mem(ws: i64) -> PodUsage {
        PodUsage {
            containers: vec![ContainerUsage {
                name: "c".to_owned(),
                memory_working_set: Some(ws),
                ..ContainerUsage::default()
            }],
            ..PodUsage::default()
        }
    }

    fn uids(pods: &[Pod]) -> Vec<&str> {
        pods.iter()
            .map(|p| p.metadata.uid.as_deref().unwrap())
            .collect()
    }

    #[test]
    fn memory_ranks_exceeding_requests_then_priority_then_usage() {
        let mut pods = vec![
            pod("guaranteed-low-use", 0, Some("100")),
            pod("high-prio-exceeds", 1000, Some("10")),
            pod("low-prio-exceeds-little", 0, Some("10")),
            pod("low-prio-exceeds-much", 0, Some("10")),
        ];
        let usages = PodUsages::from([
            ("guaranteed-low-use".to_owned(), mem(50)),
            ("high-prio-exceeds".to_owned(), mem(500)),
            ("low-prio-exceeds-little".to_owned(), mem(20)),
            ("low-prio-exceeds-much".to_owned(), mem(300)),
        ]);
        rank(&mut pods, "memory", &usages);
        assert_eq!(
            uids(&pods),
            [
                "low-prio-exceeds-much",
                "low-prio-exceeds-little",
                "high-prio-exceeds",
                "guaranteed-low-use"
            ]
        );
    }

    #[test]
    fn disk_ranks_by_ephemeral_storage_use() {
        let mut pods = vec![pod("small", 0, None), pod("big", 0, None)];
        let disk = |b| PodUsage {
            ephemeral_storage: Some(b),
            ..PodUsage::default()
        };
        let usages = PodUsages::from([
            ("small".to_owned(), disk(10)),
            ("big".to_owned(), disk(1000)),
        ]);
        rank(&mut pods, "ephemeral-storage", &usages);
        assert_eq!(uids(&pods), ["big", "small"]);
    }

    #[test]
    fn pids_rank_by_priority_then_process_count() {
        let mut pods = vec![
            pod("few", 0, None),
            pod("many", 0, None),
            pod("vip", 9, None),
        ];
        let procs = |n| PodUsage {
            processes: Some(n),
            ..PodUsage::default()
        };
        let usages = PodUsages::from([
            ("few".to_owned(), procs(2)),
            ("many".to_owned(), procs(200)),
            ("vip".to_owned(), procs(900)),
        ]);
        rank(&mut pods, "pids", &usages);
        assert_eq!(uids(&pods), ["many", "few", "vip"]);
    }

    #[test]
    fn static_mirror_and_system_critical_pods_are_critical() {
        let mut p = pod("a", 0, None);
        assert!(!is_critical(&p));
        p.spec.as_mut().unwrap().priority = Some(SYSTEM_CRITICAL_PRIORITY);
        assert!(is_critical(&p));
        let mut m = pod("b", 0, None);
        m.metadata.annotations = Some(BTreeMap::from([(
            "kubernetes.io/config.mirror".to_owned(),
            "x".to_owned(),
        )]));
        assert!(is_critical(&m));
    }
}
