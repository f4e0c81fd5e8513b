//! Resource arithmetic of the scheduler: what a pod requests (containers,
//! init containers, overhead) and what a node can hold, as upstream's
//! `resourcehelper.PodRequests` and `framework.Resource` compute them. No I/O.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Node, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use agent::quantity::ParsedQuantity;

/// Requests of a container without any, for scoring only (upstream
/// `schedutil.DefaultMilliCPURequest` and `DefaultMemoryRequest`).
pub const DEFAULT_MILLI_CPU_REQUEST: i64 = 100;
pub const DEFAULT_MEMORY_REQUEST: i64 = 200 * 1024 * 1024;

/// An amount of every resource the scheduler tracks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resources {
    pub milli_cpu: i64,
    pub memory: i64,
    pub ephemeral_storage: i64,
    /// Number of pods (only meaningful for allocatable).
    pub pods: i64,
    /// Extended resources and hugepages, by name.
    pub scalar: BTreeMap<String, i64>,
}

/// Milli-units of a quantity (CPU), rounded up like `MilliValue`.
fn milli(q: &Quantity) -> i64 {
    ParsedQuantity::parse(&q.0).map_or(0, |v| v.milli_value())
}

/// Whole units of a quantity, rounded up like `Value`.
fn units(q: &Quantity) -> i64 {
    ParsedQuantity::parse(&q.0).map_or(0, |v| v.value())
}

impl Resources {
    /// Reads a resource list (requests, allocatable, overhead).
    pub fn from_list(list: &BTreeMap<String, Quantity>) -> Self {
        let mut r = Resources::default();
        for (name, q) in list {
            match name.as_str() {
                "cpu" => r.milli_cpu = milli(q),
                "memory" => r.memory = units(q),
                "ephemeral-storage" => r.ephemeral_storage = units(q),
                "pods" => r.pods = units(q),
                _ => {
                    r.scalar.insert(name.clone(), units(q));
                }
            }
        }
        r
    }

    pub fn add(&mut self, other: &Resources) {
        self.milli_cpu += other.milli_cpu;
        self.memory += other.memory;
        self.ephemeral_storage += other.ephemeral_storage;
        self.pods += other.pods;
        for (k, v) in &other.scalar {
            *self.scalar.entry(k.clone()).or_default() += v;
        }
    }

    pub fn sub(&mut self, other: &Resources) {
        self.milli_cpu -= other.milli_cpu;
        self.memory -= other.memory;
        self.ephemeral_storage -= other.ephemeral_storage;
        self.pods -= other.pods;
        for (k, v) in &other.scalar {
            *self.scalar.entry(k.clone()).or_default() -= v;
        }
    }

    /// Raises every amount to at least `other`'s.
    pub fn max_with(&mut self, other: &Resources) {
        self.milli_cpu = self.milli_cpu.max(other.milli_cpu);
        self.memory = self.memory.max(other.memory);
        self.ephemeral_storage = self.ephemeral_storage.max(other.ephemeral_storage);
        for (k, v) in &other.scalar {
            let e = self.scalar.entry(k.clone()).or_default();
            *e = (*e).max(*v);
        }
    }

    pub fn scalar(&self, name: &str) -> i64 {
        self.scalar.get(name).copied().unwrap_or(0)
    }
}

fn container_requests(c: &Container) -> Resources {
    c.resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .map(Resources::from_list)
        .unwrap_or_default()
}

fn is_sidecar(c: &Container) -> bool {
    c.restart_policy.as_deref() == Some("Always")
}

/// The effective requests of a pod: the larger of the sum of its containers
/// (plus restartable init containers) and of each init container on top of
/// the sidecars started before it, plus the pod overhead.
pub fn pod_requests(pod: &Pod) -> Resources {
    pod_requests_with(pod, container_requests)
}

/// Like `pod_requests` but with upstream's non-zero defaults for CPU and
/// memory of containers that request none; used by scoring.
pub fn pod_non_zero_requests(pod: &Pod) -> Resources {
    pod_requests_with(pod, |c| {
        let mut r = container_requests(c);
        let explicit = |name: &str| {
            c.resources
                .as_ref()
                .and_then(|r| r.requests.as_ref())
                .is_some_and(|m| m.contains_key(name))
        };
        if !explicit("cpu") {
            r.milli_cpu = DEFAULT_MILLI_CPU_REQUEST;
        }
        if !explicit("memory") {
            r.memory = DEFAULT_MEMORY_REQUEST;
        }
        r
    })
}

fn pod_requests_with(pod: &Pod, per_container: impl Fn(&Container) -> Resources) -> Resources {
    let Some(spec) = pod.spec.as_ref() else {
        return Resources::default();
    };
    let mut sum = Resources::default();
    for c in &spec.containers {
        sum.add(&per_container(c));
    }
    let mut sidecars = Resources::default();
    let mut init_max = Resources::default();
    for c in spec.init_containers.iter().flatten() {
        let r = per_container(c);
        if is_sidecar(c) {
            sidecars.add(&r);
            sum.add(&r);
            init_max.max_with(&sidecars);
        } else {
            let mut with_sidecars = sidecars.clone();
            with_sidecars.add(&r);
            init_max.max_with(&with_sidecars);
        }
    }
    sum.max_with(&init_max);
    if let Some(overhead) = spec.overhead.as_ref() {
        sum.add(&Resources::from_list(overhead));
    }
    sum.pods = 0;
    sum
}

/// What a node offers to pods (`status.allocatable`, else `capacity`).
pub fn node_allocatable(node: &Node) -> Resources {
    let status = node.status.as_ref();
    status
        .and_then(|s| s.allocatable.as_ref().or(s.capacity.as_ref()))
        .map(Resources::from_list)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": spec})).unwrap()
    }

    #[test]
    fn init_containers_count_by_the_max_rule() {
        let p = pod(json!({
            "initContainers": [
                {"name": "i1", "resources": {"requests": {"cpu": "2", "memory": "1Gi"}}},
            ],
            "containers": [
                {"name": "a", "resources": {"requests": {"cpu": "500m", "memory": "2Gi"}}},
                {"name": "b", "resources": {"requests": {"cpu": "500m"}}},
            ],
            "overhead": {"cpu": "100m"}
        }));
        let r = pod_requests(&p);
        assert_eq!(r.milli_cpu, 2100);
        assert_eq!(r.memory, 2 * 1024 * 1024 * 1024);
    }

    #[test]
    fn sidecars_add_to_the_containers() {
        let p = pod(json!({
            "initContainers": [
                {"name": "s", "restartPolicy": "Always", "resources": {"requests": {"cpu": "1"}}},
                {"name": "i", "resources": {"requests": {"cpu": "1500m"}}},
            ],
            "containers": [{"name": "a", "resources": {"requests": {"cpu": "1"}}}]
        }));
        assert_eq!(pod_requests(&p).milli_cpu, 2500);
    }

    #[test]
    fn non_zero_requests_default_cpu_and_memory() {
        let p = pod(json!({"containers": [{"name": "a"}]}));
        let r = pod_non_zero_requests(&p);
        assert_eq!(r.milli_cpu, DEFAULT_MILLI_CPU_REQUEST);
        assert_eq!(r.memory, DEFAULT_MEMORY_REQUEST);
        assert_eq!(pod_requests(&p).milli_cpu, 0);
    }

    #[test]
    fn extended_resources_are_scalars() {
        let p = pod(
            json!({"containers": [{"name": "a", "resources": {"requests": {"example.com/gpu": "2"}}}]}),
        );
        assert_eq!(pod_requests(&p).scalar("example.com/gpu"), 2);
    }
}
