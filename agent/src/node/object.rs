//! The Node object as kubelet builds it (`initialNode` and the status
//! setters): labels, taints, addresses, capacity/allocatable, nodeInfo.

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{
    DaemonEndpoint, Node, NodeAddress, NodeDaemonEndpoints, NodeSpec, NodeStatus, NodeSystemInfo,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

use super::conditions::{NodeHealth, update_conditions};
use super::host::HostFacts;
use crate::config::{Config, Signal};
use crate::quantity::{Format, ParsedQuantity};

/// The kubelet version r8s reports.
pub const KUBELET_VERSION: &str = "v1.32.0-r8s";

/// Labels kubelet keeps in sync on an existing Node (`updateDefaultLabels`).
pub const DEFAULT_LABELS: [&str; 12] = [
    "kubernetes.io/hostname",
    "topology.kubernetes.io/zone",
    "topology.kubernetes.io/region",
    "failure-domain.beta.kubernetes.io/zone",
    "failure-domain.beta.kubernetes.io/region",
    "node.kubernetes.io/instance-type",
    "beta.kubernetes.io/instance-type",
    "kubernetes.io/os",
    "kubernetes.io/arch",
    "node.kubernetes.io/windows-build",
    "beta.kubernetes.io/os",
    "beta.kubernetes.io/arch",
];

/// Everything the Node is built from, besides the config.
#[derive(Debug, Clone)]
pub struct NodeInputs<'a> {
    pub config: &'a Config,
    pub facts: &'a HostFacts,
    /// The node's primary address (`--node-ip` or detected).
    pub node_ip: IpAddr,
    /// `<runtime>://<version>` as CRI `Version` reports it.
    pub container_runtime_version: &'a str,
}

/// The `hugepages-<size>` resource name of a page size (`hugepages-2Mi`).
pub fn hugepage_resource_name(page_size_bytes: u64) -> String {
    let size = i64::try_from(page_size_bytes).unwrap_or(i64::MAX);
    format!(
        "hugepages-{}",
        ParsedQuantity::from_i64(size, Format::BinarySI)
    )
}

/// Node capacity as kubelet's `MachineInfo` setter computes it.
pub fn capacity(facts: &HostFacts, max_pods: u32) -> BTreeMap<String, ParsedQuantity> {
    let bytes =
        |b: u64| ParsedQuantity::from_i64(i64::try_from(b).unwrap_or(i64::MAX), Format::BinarySI);
    let mut cap = BTreeMap::new();
    cap.insert(
        "cpu".to_owned(),
        ParsedQuantity::from_milli(i64::from(facts.num_cpus) * 1000, Format::DecimalSI),
    );
    cap.insert("memory".to_owned(), bytes(facts.memory_bytes));
    cap.insert(
        "ephemeral-storage".to_owned(),
        bytes(facts.ephemeral_storage_bytes),
    );
    cap.insert(
        "pods".to_owned(),
        ParsedQuantity::from_i64(i64::from(max_pods), Format::DecimalSI),
    );
    for (size, count) in &facts.hugepages {
        cap.insert(
            hugepage_resource_name(*size),
            bytes(size.saturating_mul(*count)),
        );
    }
    cap
}

/// Allocatable = capacity − kube-reserved − system-reserved − hard eviction
/// thresholds, floored at zero; memory also loses the huge page pools
/// (kubelet's `GetNodeAllocatableReservation` and `MachineInfo` setter).
pub fn allocatable(
    capacity: &BTreeMap<String, ParsedQuantity>,
    config: &Config,
) -> BTreeMap<String, ParsedQuantity> {
    let mut reserved: BTreeMap<String, ParsedQuantity> = BTreeMap::new();
    let mut add = |name: &str, q: ParsedQuantity| {
        reserved
            .entry(name.to_owned())
            .and_modify(|r| *r = r.add(&q))
            .or_insert(q);
    };
    for (name, q) in config.system_reserved.iter().chain(&config.kube_reserved) {
        add(name, *q);
    }
    for t in &config.eviction_hard {
        let resource = match t.signal {
            Signal::MemoryAvailable => "memory",
            Signal::NodeFsAvailable => "ephemeral-storage",
            _ => continue,
        };
        if let Some(cap) = capacity.get(resource) {
            add(resource, t.value.amount(cap));
        }
    }
    let mut alloc = BTreeMap::new();
    for (name, cap) in capacity {
        let mut value = *cap;
        if let Some(r) = reserved.get(name) {
            value = value.sub(r);
        }
        if value.is_negative() {
            value = ParsedQuantity::zero(cap.format());
        }
        alloc.insert(name.clone(), value);
    }
    let hugepages: Vec<ParsedQuantity> = capacity
        .iter()
        .filter(|(k, _)| k.starts_with("hugepages-"))
        .map(|(_, v)| *v)
        .collect();
    if let Some(mem) = alloc.get_mut("memory") {
        for h in hugepages {
            *mem = mem.sub(&h);
            if mem.is_negative() {
                *mem = ParsedQuantity::zero(Format::BinarySI);
            }
        }
    }
    alloc
}

fn to_api(list: BTreeMap<String, ParsedQuantity>) -> BTreeMap<String, Quantity> {
    list.into_iter()
        .map(|(k, v)| (k, v.to_quantity()))
        .collect()
}

/// The labels kubelet puts on a new Node, plus `--node-labels`.
pub fn node_labels(inputs: &NodeInputs<'_>) -> BTreeMap<String, String> {
    let os = inputs.facts.operating_system.clone();
    let arch = inputs.facts.architecture.clone();
    let mut labels = BTreeMap::from([
        (
            "kubernetes.io/hostname".to_owned(),
            inputs.config.node_name.clone(),
        ),
        ("kubernetes.io/os".to_owned(), os.clone()),
        ("kubernetes.io/arch".to_owned(), arch.clone()),
        ("beta.kubernetes.io/os".to_owned(), os),
        ("beta.kubernetes.io/arch".to_owned(), arch),
    ]);
    labels.extend(inputs.config.node_labels.clone());
    labels
}

/// The node status kubelet reports, with conditions updated from `previous`.
pub fn node_status(
    inputs: &NodeInputs<'_>,
    previous: Option<&NodeStatus>,
    health: &NodeHealth,
    now: &Time,
) -> NodeStatus {
    let facts = inputs.facts;
    let cap = capacity(facts, inputs.config.max_pods);
    let alloc = allocatable(&cap, inputs.config);
    let mut conditions = previous
        .and_then(|p| p.conditions.clone())
        .unwrap_or_default();
    update_conditions(&mut conditions, health, now);
    let mut addresses = vec![NodeAddress {
        type_: "InternalIP".to_owned(),
        address: inputs.node_ip.to_string(),
    }];
    for ip in inputs.config.node_ips.iter().skip(1) {
        addresses.push(NodeAddress {
            type_: "InternalIP".to_owned(),
            address: ip.to_string(),
        });
    }
    addresses.push(NodeAddress {
        type_: "Hostname".to_owned(),
        address: inputs.config.node_name.clone(),
    });
    NodeStatus {
        addresses: Some(addresses),
        allocatable: Some(to_api(alloc)),
        capacity: Some(to_api(cap)),
        conditions: Some(conditions),
        daemon_endpoints: Some(NodeDaemonEndpoints {
            kubelet_endpoint: Some(DaemonEndpoint {
                port: i32::from(inputs.config.port),
            }),
        }),
        node_info: Some(NodeSystemInfo {
            architecture: facts.architecture.clone(),
            boot_id: facts.boot_id.clone(),
            container_runtime_version: inputs.container_runtime_version.to_owned(),
            kernel_version: facts.kernel_version.clone(),
            kube_proxy_version: KUBELET_VERSION.to_owned(),
            kubelet_version: KUBELET_VERSION.to_owned(),
            machine_id: facts.machine_id.clone(),
            operating_system: facts.operating_system.clone(),
            os_image: facts.os_image.clone(),
            system_uuid: facts.system_uuid.clone(),
            ..NodeSystemInfo::default()
        }),
        images: previous.and_then(|p| p.images.clone()),
        volumes_attached: previous.and_then(|p| p.volumes_attached.clone()),
        volumes_in_use: previous.and_then(|p| p.volumes_in_use.clone()),
        ..NodeStatus::default()
    }
}

/// The Node kubelet registers (`initialNode`).
pub fn initial_node(inputs: &NodeInputs<'_>, health: &NodeHealth, now: &Time) -> Node {
    let taints = inputs.config.register_with_taints.clone();
    Node {
        metadata: ObjectMeta {
            name: Some(inputs.config.node_name.clone()),
            labels: Some(node_labels(inputs)),
            annotations: Some(BTreeMap::from([(
                "volumes.kubernetes.io/controller-managed-attach-detach".to_owned(),
                "true".to_owned(),
            )])),
            ..ObjectMeta::default()
        },
        spec: Some(NodeSpec {
            taints: (!taints.is_empty()).then_some(taints),
            ..NodeSpec::default()
        }),
        status: Some(node_status(inputs, None, health, now)),
    }
}

/// Sets kubelet's default labels of `desired` on `existing`; returns whether
/// anything changed (`updateDefaultLabels`).
pub fn reconcile_default_labels(desired: &Node, existing: &mut Node) -> bool {
    let empty = BTreeMap::new();
    let want = desired.metadata.labels.as_ref().unwrap_or(&empty);
    let have = existing.metadata.labels.get_or_insert_with(BTreeMap::new);
    let mut changed = false;
    for label in DEFAULT_LABELS {
        let Some(value) = want.get(label) else {
            continue;
        };
        if have.get(label) != Some(value) {
            changed = true;
            if value.is_empty() {
                have.remove(label);
            } else {
                have.insert(label.to_owned(), value.clone());
            }
        }
    }
    changed
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use k8s_openapi::jiff::Timestamp;

    use super::*;
    use crate::config::AgentFlags;

    pub(crate) fn facts() -> HostFacts {
        HostFacts {
            num_cpus: 2,
            memory_bytes: 8_003_444 * 1024,
            hugepages: vec![(2 << 20, 0), (1 << 30, 0)],
            ephemeral_storage_bytes: 100 << 30,
            kernel_version: "6.1.0".to_owned(),
            os_image: "Debian GNU/Linux 12 (bookworm)".to_owned(),
            machine_id: "mid".to_owned(),
            system_uuid: "uuid".to_owned(),
            boot_id: "bid".to_owned(),
            architecture: "amd64".to_owned(),
            operating_system: "linux".to_owned(),
        }
    }

    fn config(args: &[&str]) -> Config {
        let mut argv = vec!["r8s-agent", "--hostname-override", "node-1"];
        argv.extend_from_slice(args);
        Config::from_flags_with_hostname(AgentFlags::try_parse_from(argv).unwrap(), "x").unwrap()
    }

    fn now() -> Time {
        Time(Timestamp::from_second(1_700_000_000).unwrap())
    }

    #[test]
    fn capacity_lists_cpu_memory_storage_pods_and_hugepages() {
        let cap = capacity(&facts(), 110);
        let s = |k: &str| cap[k].to_string();
        assert_eq!(s("cpu"), "2");
        assert_eq!(s("memory"), "8003444Ki");
        assert_eq!(s("ephemeral-storage"), "100Gi");
        assert_eq!(s("pods"), "110");
        assert_eq!(s("hugepages-2Mi"), "0");
        assert_eq!(s("hugepages-1Gi"), "0");
    }

    #[test]
    fn allocatable_subtracts_reservations_and_hard_eviction() {
        let c = config(&[
            "--kube-reserved",
            "cpu=100m,memory=256Mi",
            "--system-reserved",
            "cpu=100m,memory=256Mi",
            "--eviction-hard",
            "memory.available<100Mi,nodefs.available<10%",
        ]);
        let cap = capacity(&facts(), 110);
        let alloc = allocatable(&cap, &c);
        assert_eq!(alloc["cpu"].to_string(), "1800m");
        assert_eq!(
            alloc["memory"].value(),
            8_003_444 * 1024 - (256 << 20) * 2 - (100 << 20)
        );
        assert_eq!(
            alloc["ephemeral-storage"].value(),
            (100i64 << 30) - (10i64 << 30)
        );
        assert_eq!(alloc["pods"].to_string(), "110");
    }

    #[test]
    fn allocatable_memory_excludes_hugepages_and_never_goes_negative() {
        let mut f = facts();
        f.hugepages = vec![(2 << 20, 512)];
        let c = config(&[
            "--eviction-hard",
            "memory.available<100Mi",
            "--kube-reserved",
            "cpu=8",
        ]);
        let alloc = allocatable(&capacity(&f, 110), &c);
        assert_eq!(
            alloc["memory"].value(),
            8_003_444 * 1024 - (100 << 20) - (1 << 30)
        );
        assert_eq!(alloc["cpu"].to_string(), "0");
    }

    #[test]
    fn initial_node_has_kubelet_labels_taints_addresses_and_info() {
        let c = config(&[
            "--node-labels",
            "node.kubernetes.io/pool=a",
            "--register-with-taints",
            "dedicated=gpu:NoSchedule",
            "--node-ip",
            "10.0.0.5",
        ]);
        let f = facts();
        let inputs = NodeInputs {
            config: &c,
            facts: &f,
            node_ip: "10.0.0.5".parse().unwrap(),
            container_runtime_version: "r8s://0.1.0",
        };
        let node = initial_node(&inputs, &NodeHealth::default(), &now());
        let labels = node.metadata.labels.as_ref().unwrap();
        assert_eq!(labels["kubernetes.io/hostname"], "node-1");
        assert_eq!(labels["kubernetes.io/os"], "linux");
        assert_eq!(labels["kubernetes.io/arch"], "amd64");
        assert_eq!(labels["beta.kubernetes.io/os"], "linux");
        assert_eq!(labels["beta.kubernetes.io/arch"], "amd64");
        assert_eq!(labels["node.kubernetes.io/pool"], "a");
        let taints = node.spec.as_ref().unwrap().taints.as_ref().unwrap();
        assert_eq!(taints[0].key, "dedicated");
        let status = node.status.as_ref().unwrap();
        let addrs = status.addresses.as_ref().unwrap();
        assert_eq!(
            (addrs[0].type_.as_str(), addrs[0].address.as_str()),
            ("InternalIP", "10.0.0.5")
        );
        assert_eq!(
            (addrs[1].type_.as_str(), addrs[1].address.as_str()),
            ("Hostname", "node-1")
        );
        let info = status.node_info.as_ref().unwrap();
        assert_eq!(info.kubelet_version, "v1.32.0-r8s");
        assert_eq!(info.container_runtime_version, "r8s://0.1.0");
        assert_eq!(info.os_image, "Debian GNU/Linux 12 (bookworm)");
        assert_eq!(info.operating_system, "linux");
        assert_eq!(
            status
                .daemon_endpoints
                .as_ref()
                .unwrap()
                .kubelet_endpoint
                .as_ref()
                .unwrap()
                .port,
            10250
        );
        assert_eq!(status.conditions.as_ref().unwrap().len(), 4);
    }

    #[test]
    fn default_labels_are_reconciled_on_an_existing_node() {
        let c = config(&["--node-labels", "team=a"]);
        let f = facts();
        let inputs = NodeInputs {
            config: &c,
            facts: &f,
            node_ip: "10.0.0.5".parse().unwrap(),
            container_runtime_version: "r8s://0.1.0",
        };
        let desired = initial_node(&inputs, &NodeHealth::default(), &now());
        let mut existing = Node::default();
        existing.metadata.labels = Some(BTreeMap::from([
            ("kubernetes.io/arch".to_owned(), "arm64".to_owned()),
            ("user".to_owned(), "kept".to_owned()),
        ]));
        assert!(reconcile_default_labels(&desired, &mut existing));
        let labels = existing.metadata.labels.as_ref().unwrap();
        assert_eq!(labels["kubernetes.io/arch"], "amd64");
        assert_eq!(labels["user"], "kept");
        assert!(!labels.contains_key("team"));
        assert!(!reconcile_default_labels(&desired, &mut existing));
    }
}
