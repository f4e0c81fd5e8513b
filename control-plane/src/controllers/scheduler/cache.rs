//! The scheduler's cache: every node with the pods bound (or assumed) to
//! it and their aggregated requests and host ports, so a scheduling cycle
//! never scans all pods (upstream `internal/cache` + `framework.NodeInfo`).
//! Fed by the node and pod watchers; no I/O.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

#[cfg(test)]
use k8s_openapi::api::core::v1::Container;
use k8s_openapi::api::core::v1::{Node, Pod};

use super::super::lean::{Rules, Skip};

use super::resources::{Resources, node_allocatable, pod_non_zero_requests, pod_requests};

/// `namespace/name`.
pub fn pod_key(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or("default"),
        pod.metadata.name.as_deref().unwrap_or("")
    )
}

/// What no scheduling decision reads from a watched pod, skipped while the
/// pod watch decodes it: managedFields, annotations (kubectl's
/// last-applied copy of the whole object), volumes, every container field
/// but name, image, ports, resources and restartPolicy, and the container
/// statuses. The scheduler holds every pod of the cluster; a decoded pod
/// with its defaults is 10 KB or more, mostly these, and building them to
/// drop them was most of what decoding a watched pod cost.
#[derive(Clone, Copy, Debug)]
pub struct SchedulingPod;

impl Rules for SchedulingPod {
    const ROOT: &'static Skip = &Skip {
        skip: &[],
        keep_only: None,
        nested: &[
            (
                "metadata",
                &Skip {
                    skip: &["managedFields", "annotations"],
                    keep_only: None,
                    nested: &[],
                },
            ),
            (
                "spec",
                &Skip {
                    skip: &["volumes", "ephemeralContainers"],
                    keep_only: None,
                    nested: &[("containers", CONTAINER), ("initContainers", CONTAINER)],
                },
            ),
            (
                "status",
                &Skip {
                    skip: &[
                        "containerStatuses",
                        "initContainerStatuses",
                        "ephemeralContainerStatuses",
                    ],
                    keep_only: None,
                    nested: &[],
                },
            ),
        ],
    };
}

const CONTAINER: &Skip = &Skip {
    skip: &[],
    keep_only: Some(&["name", "image", "ports", "resources", "restartPolicy"]),
    nested: &[],
};

/// What decoding with [`SchedulingPod`] drops, dropped from a whole pod.
#[cfg(test)]
fn slim_pod(pod: &mut Pod) {
    let meta = &mut pod.metadata;
    meta.managed_fields = None;
    meta.annotations = None;
    if let Some(spec) = pod.spec.as_mut() {
        spec.volumes = None;
        spec.ephemeral_containers = None;
        let slim = |c: &mut Container| {
            *c = Container {
                name: std::mem::take(&mut c.name),
                image: c.image.take(),
                ports: c.ports.take(),
                resources: c.resources.take(),
                restart_policy: c.restart_policy.take(),
                ..Container::default()
            };
        };
        spec.containers.iter_mut().for_each(slim);
        spec.init_containers.iter_mut().flatten().for_each(slim);
    }
    if let Some(status) = pod.status.as_mut() {
        status.container_statuses = None;
        status.init_container_statuses = None;
        status.ephemeral_container_statuses = None;
    }
}

/// A host port a container asks for; `0.0.0.0` stands for every address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HostPort {
    pub protocol: String,
    pub host_ip: String,
    pub port: i32,
}

impl HostPort {
    /// Whether two host ports cannot share a node (upstream `HostPortInfo`).
    pub fn conflicts(&self, other: &HostPort) -> bool {
        self.port == other.port
            && self.protocol == other.protocol
            && (self.host_ip == other.host_ip
                || self.host_ip == "0.0.0.0"
                || other.host_ip == "0.0.0.0")
    }
}

pub fn host_ports(pod: &Pod) -> Vec<HostPort> {
    let Some(spec) = pod.spec.as_ref() else {
        return Vec::new();
    };
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .flat_map(|c| c.ports.iter().flatten())
        .filter(|p| p.host_port.unwrap_or(0) > 0)
        .map(|p| HostPort {
            protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
            host_ip: p
                .host_ip
                .clone()
                .filter(|ip| !ip.is_empty())
                .unwrap_or_else(|| "0.0.0.0".into()),
            port: p.host_port.unwrap_or(0),
        })
        .collect()
}

/// What the scheduler keeps of one pod.
#[derive(Debug, Clone)]
pub struct PodInfo {
    pub pod: Arc<Pod>,
    pub key: String,
    pub requests: Resources,
    pub non_zero: Resources,
    pub priority: i32,
    pub host_ports: Vec<HostPort>,
}

impl PodInfo {
    pub fn new(pod: Arc<Pod>) -> Self {
        let spec = pod.spec.as_ref();
        Self {
            key: pod_key(&pod),
            requests: pod_requests(&pod),
            non_zero: pod_non_zero_requests(&pod),
            priority: spec.and_then(|s| s.priority).unwrap_or(0),
            host_ports: host_ports(&pod),
            pod,
        }
    }

    pub fn namespace(&self) -> &str {
        self.pod.metadata.namespace.as_deref().unwrap_or("default")
    }

    pub fn has_required_anti_affinity(&self) -> bool {
        self.pod
            .spec
            .as_ref()
            .and_then(|s| s.affinity.as_ref())
            .and_then(|a| a.pod_anti_affinity.as_ref())
            .and_then(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .as_ref()
            })
            .is_some_and(|t| !t.is_empty())
    }
}

/// A node and what is placed on it.
#[derive(Debug, Clone, Default)]
pub struct NodeInfo {
    pub name: String,
    /// `None` while only pods bound to a node not (yet) seen are known.
    pub node: Option<Arc<Node>>,
    /// `spec.unschedulable` and whether `spec.taints` has any, kept here:
    /// every cycle reads them for each node it examines, and an untainted,
    /// schedulable node is then filtered without reading its `Node` (at
    /// 5,000 nodes, mostly a cache miss each).
    pub unschedulable: bool,
    pub tainted: bool,
    pub allocatable: Resources,
    pub requested: Resources,
    pub non_zero_requested: Resources,
    pub pods: HashMap<String, Arc<PodInfo>>,
    pub used_ports: Vec<HostPort>,
}

impl NodeInfo {
    pub fn add_pod(&mut self, info: Arc<PodInfo>) {
        if let Some(old) = self.pods.remove(&info.key) {
            self.account(&old, false);
        }
        self.account(&info, true);
        self.pods.insert(info.key.clone(), info);
    }

    pub fn remove_pod(&mut self, key: &str) -> Option<Arc<PodInfo>> {
        let old = self.pods.remove(key)?;
        self.account(&old, false);
        Some(old)
    }

    fn account(&mut self, info: &PodInfo, add: bool) {
        if add {
            self.requested.add(&info.requests);
            self.non_zero_requested.add(&info.non_zero);
            self.used_ports.extend(info.host_ports.iter().cloned());
        } else {
            self.requested.sub(&info.requests);
            self.non_zero_requested.sub(&info.non_zero);
            for p in &info.host_ports {
                if let Some(i) = self.used_ports.iter().position(|u| u == p) {
                    self.used_ports.swap_remove(i);
                }
            }
        }
    }

    /// Labels of the node (empty when unknown).
    pub fn label(&self, key: &str) -> Option<&str> {
        self.node
            .as_ref()
            .and_then(|n| n.metadata.labels.as_ref())
            .and_then(|l| l.get(key))
            .map(String::as_str)
    }
}

/// Every node and bound pod the scheduler knows.
#[derive(Debug, Default)]
pub struct Cache {
    /// Every node entry, in no order: `by_name` finds one, `order` walks
    /// the ones with a Node object.
    nodes: Vec<NodeInfo>,
    by_name: HashMap<String, usize>,
    /// Positions in `nodes` of the entries with a Node object, by name. A
    /// cycle walks them from where the previous one stopped: at 5,000
    /// nodes, walking a `BTreeMap` of the entries (and finding where to
    /// start by name) cost more than filtering the nodes it examined.
    order: Vec<usize>,
    /// Where each bound or assumed pod is.
    pod_node: HashMap<String, String>,
    /// Pods assumed by this scheduler and not yet seen bound.
    assumed: HashSet<String>,
    /// Keys of bound pods with required anti-affinity terms.
    pub anti_affinity_pods: HashSet<String>,
}

impl Cache {
    /// Adds or updates a node; returns whether anything the filters read
    /// changed (not just a heartbeat), i.e. whether waiting pods may fit now.
    pub fn upsert_node(&mut self, node: Node) -> bool {
        let name = node.metadata.name.as_deref().unwrap_or_default();
        let at = self.entry(name);
        let info = &mut self.nodes[at];
        let relevant = info.node.as_ref().is_none_or(|old| {
            old.metadata.labels != node.metadata.labels
                || old.spec != node.spec
                || node_allocatable(old) != node_allocatable(&node)
        });
        let is_new = info.node.is_none();
        info.allocatable = node_allocatable(&node);
        let spec = node.spec.as_ref();
        info.unschedulable = spec.and_then(|s| s.unschedulable) == Some(true);
        info.tainted = spec
            .and_then(|s| s.taints.as_ref())
            .is_some_and(|t| !t.is_empty());
        info.node = Some(Arc::new(node));
        if is_new && let Err(place) = self.order_place(at) {
            self.order.insert(place, at);
        }
        relevant
    }

    pub fn remove_node(&mut self, name: &str) {
        let Some(&at) = self.by_name.get(name) else {
            return;
        };
        if self.nodes[at].node.take().is_some()
            && let Ok(place) = self.order_place(at)
        {
            self.order.remove(place);
        }
        if self.nodes[at].pods.is_empty() {
            self.remove_entry(name);
        }
    }

    /// The position of entry `at` in `order` by its name: `Ok` where it is,
    /// `Err` where it belongs.
    fn order_place(&self, at: usize) -> Result<usize, usize> {
        let name = self.nodes[at].name.as_str();
        self.order
            .binary_search_by(|&i| self.nodes[i].name.as_str().cmp(name))
    }

    /// The position of `name`'s entry, made (without a Node) if missing.
    fn entry(&mut self, name: &str) -> usize {
        if let Some(&at) = self.by_name.get(name) {
            return at;
        }
        self.nodes.push(NodeInfo {
            name: name.to_string(),
            ..NodeInfo::default()
        });
        let at = self.nodes.len() - 1;
        self.by_name.insert(name.to_string(), at);
        at
    }

    /// Removes `name`'s entry, which has no Node object (so is not in
    /// `order`); the last entry takes its place.
    fn remove_entry(&mut self, name: &str) {
        let Some(at) = self.by_name.remove(name) else {
            return;
        };
        self.nodes.swap_remove(at);
        let moved = self.nodes.len();
        if at < moved {
            self.by_name.insert(self.nodes[at].name.clone(), at);
            if let Some(i) = self.order.iter_mut().find(|i| **i == moved) {
                *i = at;
            }
        }
    }

    /// Records a pod on `node` (a bound pod from the watch, or an assumed one).
    pub fn add_pod(&mut self, info: PodInfo, node: &str, assumed: bool) {
        let key = info.key.as_str();
        if self.pod_node.get(key).is_some_and(|prev| prev != node) {
            self.remove_pod(key);
        }
        if info.has_required_anti_affinity() {
            self.anti_affinity_pods.insert(key.to_string());
        } else {
            self.anti_affinity_pods.remove(key);
        }
        if assumed {
            self.assumed.insert(key.to_string());
        } else {
            self.assumed.remove(key);
        }
        if !self.pod_node.contains_key(key) {
            self.pod_node.insert(key.to_string(), node.to_string());
        }
        let at = self.entry(node);
        self.nodes[at].add_pod(Arc::new(info));
    }

    pub fn remove_pod(&mut self, key: &str) -> Option<Arc<PodInfo>> {
        self.assumed.remove(key);
        self.anti_affinity_pods.remove(key);
        let node = self.pod_node.remove(key)?;
        let &at = self.by_name.get(&node)?;
        let info = &mut self.nodes[at];
        let removed = info.remove_pod(key);
        if info.node.is_none() && info.pods.is_empty() {
            self.remove_entry(&node);
        }
        removed
    }

    /// Nodes with a Node object.
    pub fn node_count(&self) -> usize {
        self.order.len()
    }

    /// The entry of node `name`: with a Node object, or only pods bound to it.
    pub fn node(&self, name: &str) -> Option<&NodeInfo> {
        self.by_name.get(name).map(|&at| &self.nodes[at])
    }

    /// Every entry, with a Node object or not, in no order.
    pub fn entries(&self) -> impl Iterator<Item = &NodeInfo> {
        self.nodes.iter()
    }

    /// The nodes with a Node object, by name.
    pub fn known_nodes(&self) -> impl Iterator<Item = &NodeInfo> {
        self.order.iter().map(|&at| &self.nodes[at])
    }

    /// The nodes with a Node object by name, starting at the `start`th
    /// (modulo their number) and wrapping around: every node once.
    pub fn nodes_from(&self, start: usize) -> impl Iterator<Item = &NodeInfo> {
        let start = start.checked_rem(self.order.len()).unwrap_or(0);
        let (head, tail) = self.order.split_at(start);
        tail.iter().chain(head).map(|&at| &self.nodes[at])
    }

    /// Whether the pod is bound or assumed somewhere.
    pub fn has_pod(&self, key: &str) -> bool {
        self.pod_node.contains_key(key)
    }

    pub fn is_assumed(&self, key: &str) -> bool {
        self.assumed.contains(key)
    }

    /// The node a pod is on, with the pod's info.
    pub fn pod(&self, key: &str) -> Option<(&NodeInfo, &Arc<PodInfo>)> {
        let node = self.node(self.pod_node.get(key)?)?;
        Some((node, node.pods.get(key)?))
    }

    /// Every pod key the cache holds (for relist reconciliation).
    pub fn pod_keys(&self) -> Vec<String> {
        self.pod_node.keys().cloned().collect()
    }

    /// All bound pods with the node they are on.
    pub fn all_pods(&self) -> impl Iterator<Item = (&NodeInfo, &Arc<PodInfo>)> {
        self.nodes
            .iter()
            .flat_map(|n| n.pods.values().map(move |p| (n, p)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::lean::Lean;
    use serde_json::json;

    #[test]
    fn nodes_are_walked_once_each_from_any_point() {
        let node = |name: &str| -> Node {
            serde_json::from_value(json!({"metadata": {"name": name}})).unwrap()
        };
        let names = |c: &Cache, start| -> Vec<String> {
            c.nodes_from(start).map(|n| n.name.clone()).collect()
        };
        let mut c = Cache::default();
        assert_eq!(names(&c, 3), Vec::<String>::new());
        for n in ["n2", "n1", "n3", "n1"] {
            c.upsert_node(node(n));
        }
        // A pod bound to a node not seen yet makes an entry without a Node.
        c.add_pod(pod("a", "1", None), "n0", false);
        assert_eq!(c.node_count(), 3);
        assert_eq!(names(&c, 0), ["n1", "n2", "n3"]);
        assert_eq!(names(&c, 1), ["n2", "n3", "n1"]);
        assert_eq!(names(&c, 3), ["n1", "n2", "n3"]);
        assert_eq!(names(&c, 5), ["n3", "n1", "n2"]);
        c.remove_node("n1");
        c.remove_node("absent");
        assert_eq!(c.node_count(), 2);
        assert_eq!(names(&c, 1), ["n3", "n2"]);
        // The entry without a Node goes with its last pod; the others are
        // still found by name and walked in order.
        c.remove_pod("default/a");
        assert!(c.node("n0").is_none());
        assert_eq!(c.entries().count(), 2);
        c.upsert_node(node("n1"));
        c.upsert_node(node("n0"));
        assert_eq!(c.node_count(), 4);
        assert_eq!(names(&c, 0), ["n0", "n1", "n2", "n3"]);
        for n in ["n0", "n1", "n2", "n3"] {
            assert_eq!(c.node(n).map(|i| i.name.as_str()), Some(n));
        }
    }

    #[test]
    fn a_slim_pod_keeps_what_scheduling_reads() {
        let full: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "default", "labels": {"app": "web"},
                "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"},
                "managedFields": [{"manager": "kubectl", "operation": "Update", "fieldsType": "FieldsV1",
                    "fieldsV1": {"f:spec": {}}}]},
            "spec": {
                "containers": [{"name": "c", "image": "busybox", "env": [{"name": "A", "value": "1"}],
                    "ports": [{"containerPort": 80, "hostPort": 8080}],
                    "resources": {"requests": {"cpu": "250m", "memory": "64Mi"}},
                    "volumeMounts": [{"name": "v", "mountPath": "/v"}]}],
                "initContainers": [{"name": "side", "restartPolicy": "Always",
                    "resources": {"requests": {"cpu": "100m"}}}],
                "overhead": {"cpu": "10m"},
                "volumes": [{"name": "v", "emptyDir": {}}],
                "ephemeralContainers": [{"name": "debug", "image": "busybox"}],
                "nodeSelector": {"volumes": "kept", "annotations": "kept"},
                "tolerations": [{"key": "k", "operator": "Exists"}],
                "priority": 7
            },
            "status": {"phase": "Running", "containerStatuses": [{"name": "c", "image": "busybox",
                "imageID": "", "ready": true, "restartCount": 0}],
                "initContainerStatuses": [{"name": "side", "image": "busybox",
                "imageID": "", "ready": true, "restartCount": 1}],
                "conditions": [{"type": "PodScheduled", "status": "True"}]}
        }))
        .unwrap();
        let mut slim = full.clone();
        slim_pod(&mut slim);
        let text = serde_json::to_string(&full).unwrap();
        let decoded: Lean<Pod, SchedulingPod> = serde_json::from_str(&text).unwrap();
        assert_eq!(decoded.0, slim);
        let (a, b) = (
            PodInfo::new(Arc::new(full)),
            PodInfo::new(Arc::new(slim.clone())),
        );
        assert_eq!(a.requests, b.requests);
        assert_eq!(a.host_ports, b.host_ports);
        assert_eq!(a.priority, b.priority);
        assert_eq!(slim.metadata.labels, a.pod.metadata.labels);
        assert!(slim.metadata.annotations.is_none());
        let spec = slim.spec.as_ref().unwrap();
        assert!(spec.volumes.is_none() && spec.containers[0].env.is_none());
        assert_eq!(spec.tolerations, a.pod.spec.as_ref().unwrap().tolerations);
        assert_eq!(slim.status.unwrap().phase.as_deref(), Some("Running"));
    }

    fn pod(name: &str, cpu: &str, port: Option<i32>) -> PodInfo {
        let mut c = json!({"name": "c", "resources": {"requests": {"cpu": cpu}}});
        if let Some(p) = port {
            c["ports"] = json!([{"containerPort": 80, "hostPort": p}]);
        }
        PodInfo::new(Arc::new(
            serde_json::from_value(json!({"metadata": {"name": name, "namespace": "default"}, "spec": {"containers": [c]}})).unwrap(),
        ))
    }

    #[test]
    fn node_info_aggregates_requests_and_ports() {
        let mut cache = Cache::default();
        cache.upsert_node(serde_json::from_value(json!({"metadata": {"name": "n1"}, "status": {"allocatable": {"cpu": "4", "pods": "110"}}})).unwrap());
        cache.add_pod(pod("a", "1", Some(8080)), "n1", false);
        cache.add_pod(pod("b", "500m", None), "n1", true);
        let n = cache.node("n1").unwrap();
        assert_eq!(n.requested.milli_cpu, 1500);
        assert_eq!(n.used_ports.len(), 1);
        assert!(cache.is_assumed("default/b"));
        cache.remove_pod("default/a");
        let n = cache.node("n1").unwrap();
        assert_eq!(n.requested.milli_cpu, 500);
        assert!(n.used_ports.is_empty());
    }

    #[test]
    fn heartbeat_only_node_updates_are_not_relevant() {
        let mut cache = Cache::default();
        let node = |hb: &str, cpu: &str| -> Node {
            serde_json::from_value(
                json!({"metadata": {"name": "n1"}, "status": {"allocatable": {"cpu": cpu},
                "conditions": [{"type": "Ready", "status": "True", "lastHeartbeatTime": hb}]}}),
            )
            .unwrap()
        };
        assert!(cache.upsert_node(node("2024-01-01T00:00:00Z", "4")));
        assert!(!cache.upsert_node(node("2024-01-01T00:00:10Z", "4")));
        assert!(cache.upsert_node(node("2024-01-01T00:00:20Z", "8")));
    }

    #[test]
    fn a_pod_moving_nodes_is_accounted_once() {
        let mut cache = Cache::default();
        cache.add_pod(pod("a", "1", None), "n1", true);
        cache.add_pod(pod("a", "1", None), "n2", false);
        assert!(cache.node("n1").is_none());
        assert_eq!(cache.node("n2").unwrap().requested.milli_cpu, 1000);
    }

    #[test]
    fn host_ports_conflict_on_wildcard_address() {
        let a = HostPort {
            protocol: "TCP".into(),
            host_ip: "0.0.0.0".into(),
            port: 80,
        };
        let b = HostPort {
            protocol: "TCP".into(),
            host_ip: "10.0.0.1".into(),
            port: 80,
        };
        let c = HostPort {
            protocol: "UDP".into(),
            host_ip: "10.0.0.1".into(),
            port: 80,
        };
        assert!(a.conflicts(&b));
        assert!(!b.conflicts(&c));
    }
}
