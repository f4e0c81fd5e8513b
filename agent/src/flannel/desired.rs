//! The desired pod network between nodes (no I/O): from every other Node's
//! `spec.podCIDR`, InternalIP and VTEP annotation, and this host's addresses,
//! which route each remote pod CIDR gets, and whether `flannel.1` is needed.

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::Node;
use netproxy::model::Ipv4Cidr;

use super::Backend;
use super::annotations::{self, MacAddr};

/// What one Node says about its pod network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeNet {
    pub name: String,
    pub pod_cidr: Option<Ipv4Cidr>,
    pub node_ip: Option<Ipv4Addr>,
    pub vtep_mac: Option<MacAddr>,
}

impl NodeNet {
    /// The IPv4 pod CIDR (`spec.podCIDR`, else the first IPv4 of
    /// `spec.podCIDRs`), the first IPv4 InternalIP and the VTEP MAC of `node`.
    pub fn from_node(node: &Node) -> Option<Self> {
        let name = node.metadata.name.clone()?;
        let spec = node.spec.as_ref();
        let pod_cidr = spec.and_then(|s| {
            s.pod_cidr
                .iter()
                .chain(s.pod_cidrs.iter().flatten())
                .find_map(|c| parse_cidr(c))
        });
        let node_ip = node
            .status
            .as_ref()
            .and_then(|s| s.addresses.as_ref())
            .and_then(|a| {
                a.iter()
                    .filter(|a| a.type_ == "InternalIP")
                    .find_map(|a| a.address.parse::<Ipv4Addr>().ok())
            });
        let vtep_mac = node
            .metadata
            .annotations
            .as_ref()
            .and_then(annotations::vtep_mac);
        Some(Self {
            name,
            pod_cidr,
            node_ip,
            vtep_mac,
        })
    }
}

fn parse_cidr(s: &str) -> Option<Ipv4Cidr> {
    s.contains('/').then(|| s.parse().ok()).flatten()
}

/// `ip/len` with the host bits cleared.
pub fn cidr(ip: Ipv4Addr, len: u8) -> Ipv4Cidr {
    let len = len.min(32);
    let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
    Ipv4Cidr {
        addr: Ipv4Addr::from(u32::from(ip) & mask),
        len,
    }
}

/// Whether `net` contains `ip`.
pub fn contains(net: Ipv4Cidr, ip: Ipv4Addr) -> bool {
    cidr(ip, net.len).addr == net.addr
}

fn overlaps(a: Ipv4Cidr, b: Ipv4Cidr) -> bool {
    contains(a, b.addr) || contains(b, a.addr)
}

/// This host's side of the network between nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostNet {
    /// The interface for traffic between nodes, and its index and MTU.
    pub iface: String,
    pub index: u32,
    pub mtu: u32,
    pub node_ip: Ipv4Addr,
    /// The subnets directly connected through `iface`.
    pub subnets: Vec<Ipv4Cidr>,
    /// Every IPv4 address of this network namespace.
    pub local_addrs: Vec<Ipv4Addr>,
}

/// This node's settings for [`compute`].
#[derive(Debug, Clone)]
pub struct Local<'a> {
    pub node_name: &'a str,
    pub backend: Backend,
    /// vxlan only: nodes on a subnet of the iface get a direct route, as
    /// flannel's DirectRouting (otherwise every node goes through the overlay).
    pub direct_routing: bool,
    pub cluster_cidr: Ipv4Cidr,
    pub own_pod_cidr: Option<Ipv4Cidr>,
    pub host: &'a HostNet,
}

/// How the pods of one remote node are reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerRoute {
    /// `<pod_cidr> via <node_ip> dev <iface>`.
    Direct {
        pod_cidr: Ipv4Cidr,
        node_ip: Ipv4Addr,
    },
    /// `<pod_cidr> via <pod_cidr network> dev flannel.1 onlink`, a neighbour
    /// `<pod_cidr network> lladdr <vtep_mac>` and an fdb entry
    /// `<vtep_mac> dst <node_ip>`.
    Overlay {
        pod_cidr: Ipv4Cidr,
        node_ip: Ipv4Addr,
        vtep_mac: MacAddr,
    },
}

impl PeerRoute {
    pub fn pod_cidr(&self) -> Ipv4Cidr {
        match *self {
            Self::Direct { pod_cidr, .. } | Self::Overlay { pod_cidr, .. } => pod_cidr,
        }
    }
}

/// Why a remote node gets no route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    NoPodCidr,
    NoInternalIp,
    OutsideClusterCidr(Ipv4Cidr),
    /// Its pod CIDR overlaps ours or one routed to another node.
    Overlaps(Ipv4Cidr),
    /// Its InternalIP is an address of this host or loopback (a simulated
    /// node, or another agent on this host).
    LocalAddress(Ipv4Addr),
    /// host-gw: its InternalIP is not on a subnet of the iface.
    NotOnLink(Ipv4Addr),
    /// vxlan: it has not published its VTEP yet.
    NoVtepMac,
}

impl fmt::Display for Skip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoPodCidr => write!(f, "no podCIDR"),
            Self::NoInternalIp => write!(f, "no IPv4 InternalIP"),
            Self::OutsideClusterCidr(c) => write!(f, "podCIDR {c} outside the cluster CIDR"),
            Self::Overlaps(c) => write!(f, "podCIDR {c} overlaps another node's"),
            Self::LocalAddress(ip) => write!(f, "InternalIP {ip} is a local address"),
            Self::NotOnLink(ip) => write!(
                f,
                "host-gw needs InternalIP {ip} on a subnet directly connected to the flannel interface"
            ),
            Self::NoVtepMac => write!(f, "no VXLAN VTEP published yet"),
        }
    }
}

/// The routes this node wants, by remote node name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Desired {
    pub routes: BTreeMap<String, PeerRoute>,
    pub skipped: BTreeMap<String, Skip>,
    /// Some remote node is reached through the overlay (or will be, once it
    /// publishes its VTEP): `flannel.1` must exist so that we publish ours.
    pub vxlan_device: bool,
}

/// The desired state from `nodes` (this node among them or not).
pub fn compute<'n>(local: &Local<'_>, nodes: impl IntoIterator<Item = &'n NodeNet>) -> Desired {
    let mut out = Desired::default();
    if local.backend == Backend::None {
        return out;
    }
    let mut taken: Vec<Ipv4Cidr> = local.own_pod_cidr.into_iter().collect();
    let mut nodes: Vec<&NodeNet> = nodes.into_iter().collect();
    nodes.sort_by(|a, b| a.name.cmp(&b.name));
    for n in nodes.into_iter().filter(|n| n.name != local.node_name) {
        match peer_route(local, n, &taken, &mut out.vxlan_device) {
            Ok(route) => {
                taken.push(route.pod_cidr());
                out.routes.insert(n.name.clone(), route);
            }
            Err(skip) => {
                out.skipped.insert(n.name.clone(), skip);
            }
        }
    }
    out
}

fn peer_route(
    local: &Local<'_>,
    n: &NodeNet,
    taken: &[Ipv4Cidr],
    vxlan_device: &mut bool,
) -> Result<PeerRoute, Skip> {
    let pod_cidr = n.pod_cidr.ok_or(Skip::NoPodCidr)?;
    let node_ip = n.node_ip.ok_or(Skip::NoInternalIp)?;
    if pod_cidr.len < local.cluster_cidr.len || !contains(local.cluster_cidr, pod_cidr.addr) {
        return Err(Skip::OutsideClusterCidr(pod_cidr));
    }
    if taken.iter().any(|t| overlaps(*t, pod_cidr)) {
        return Err(Skip::Overlaps(pod_cidr));
    }
    if node_ip.is_loopback() || local.host.local_addrs.contains(&node_ip) {
        return Err(Skip::LocalAddress(node_ip));
    }
    let on_link = local.host.subnets.iter().any(|s| contains(*s, node_ip));
    let direct = PeerRoute::Direct { pod_cidr, node_ip };
    match local.backend {
        Backend::HostGw if on_link => Ok(direct),
        Backend::HostGw => Err(Skip::NotOnLink(node_ip)),
        Backend::Vxlan if on_link && local.direct_routing => Ok(direct),
        Backend::Vxlan => {
            *vxlan_device = true;
            let vtep_mac = n.vtep_mac.ok_or(Skip::NoVtepMac)?;
            Ok(PeerRoute::Overlay {
                pod_cidr,
                node_ip,
                vtep_mac,
            })
        }
        // `compute` returns before.
        Backend::None => Err(Skip::NoPodCidr),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::api::core::v1::{NodeAddress, NodeSpec, NodeStatus};
    use kube::api::ObjectMeta;

    use super::*;

    fn c(s: &str) -> Ipv4Cidr {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn host() -> HostNet {
        HostNet {
            iface: "eth0".into(),
            index: 2,
            mtu: 1500,
            node_ip: ip("192.168.1.10"),
            subnets: vec![c("192.168.1.0/24")],
            local_addrs: vec![ip("192.168.1.10"), ip("10.42.0.1")],
        }
    }

    fn local(backend: Backend, host: &HostNet) -> Local<'_> {
        Local {
            node_name: "a",
            backend,
            direct_routing: true,
            cluster_cidr: c("10.42.0.0/16"),
            own_pod_cidr: Some(c("10.42.0.0/24")),
            host,
        }
    }

    fn node(name: &str, cidr: &str, node_ip: &str, mac: Option<&str>) -> NodeNet {
        NodeNet {
            name: name.into(),
            pod_cidr: Some(c(cidr)),
            node_ip: Some(ip(node_ip)),
            vtep_mac: mac.map(|m| m.parse().unwrap()),
        }
    }

    const MAC: &str = "02:00:00:00:00:0b";

    #[test]
    fn node_net_reads_pod_cidr_internal_ip_and_vtep() {
        let n = Node {
            metadata: ObjectMeta {
                name: Some("b".into()),
                annotations: Some(annotations::own(
                    Backend::Vxlan,
                    ip("192.168.1.11"),
                    MAC.parse().unwrap(),
                )),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                pod_cidrs: Some(vec!["fd00::/64".into(), "10.42.1.0/24".into()]),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                addresses: Some(vec![
                    NodeAddress {
                        type_: "Hostname".into(),
                        address: "b".into(),
                    },
                    NodeAddress {
                        type_: "InternalIP".into(),
                        address: "fd00::1".into(),
                    },
                    NodeAddress {
                        type_: "InternalIP".into(),
                        address: "192.168.1.11".into(),
                    },
                ]),
                ..Default::default()
            }),
        };
        assert_eq!(
            NodeNet::from_node(&n).unwrap(),
            node("b", "10.42.1.0/24", "192.168.1.11", Some(MAC))
        );
        let bare = Node {
            metadata: ObjectMeta {
                name: Some("c".into()),
                annotations: Some(BTreeMap::new()),
                ..Default::default()
            },
            ..Default::default()
        };
        let bare = NodeNet::from_node(&bare).unwrap();
        assert_eq!(
            (bare.pod_cidr, bare.node_ip, bare.vtep_mac),
            (None, None, None)
        );
    }

    #[test]
    fn host_gw_routes_other_nodes_on_link_and_skips_self() {
        let h = host();
        let nodes = [
            node("a", "10.42.0.0/24", "192.168.1.10", None),
            node("b", "10.42.1.0/24", "192.168.1.11", None),
        ];
        let d = compute(&local(Backend::HostGw, &h), &nodes);
        assert_eq!(
            d.routes,
            BTreeMap::from([(
                "b".to_owned(),
                PeerRoute::Direct {
                    pod_cidr: c("10.42.1.0/24"),
                    node_ip: ip("192.168.1.11")
                }
            )])
        );
        assert!(d.skipped.is_empty());
        assert!(!d.vxlan_device);
    }

    #[test]
    fn host_gw_skips_nodes_off_link() {
        let h = host();
        let nodes = [node("b", "10.42.1.0/24", "172.16.0.5", None)];
        let d = compute(&local(Backend::HostGw, &h), &nodes);
        assert!(d.routes.is_empty());
        assert_eq!(d.skipped["b"], Skip::NotOnLink(ip("172.16.0.5")));
    }

    #[test]
    fn vxlan_goes_direct_on_link_and_overlays_the_rest() {
        let h = host();
        let nodes = [
            node("b", "10.42.1.0/24", "192.168.1.11", Some(MAC)),
            node("c", "10.42.2.0/24", "172.16.0.5", Some(MAC)),
        ];
        let d = compute(&local(Backend::Vxlan, &h), &nodes);
        assert!(matches!(d.routes["b"], PeerRoute::Direct { .. }));
        assert_eq!(
            d.routes["c"],
            PeerRoute::Overlay {
                pod_cidr: c("10.42.2.0/24"),
                node_ip: ip("172.16.0.5"),
                vtep_mac: MAC.parse().unwrap()
            }
        );
        assert!(d.vxlan_device);
    }

    #[test]
    fn vxlan_without_direct_routing_overlays_everything() {
        let h = host();
        let mut l = local(Backend::Vxlan, &h);
        l.direct_routing = false;
        let nodes = [node("b", "10.42.1.0/24", "192.168.1.11", Some(MAC))];
        let d = compute(&l, &nodes);
        assert!(matches!(d.routes["b"], PeerRoute::Overlay { .. }));
    }

    #[test]
    fn vxlan_peer_without_vtep_is_skipped_but_needs_the_device() {
        let h = host();
        let nodes = [node("c", "10.42.2.0/24", "172.16.0.5", None)];
        let d = compute(&local(Backend::Vxlan, &h), &nodes);
        assert!(d.routes.is_empty());
        assert_eq!(d.skipped["c"], Skip::NoVtepMac);
        assert!(d.vxlan_device, "so that this node publishes its VTEP too");
    }

    #[test]
    fn nodes_without_cidr_or_ip_or_with_bad_cidrs_are_skipped() {
        let h = host();
        let mut no_cidr = node("b", "10.42.1.0/24", "192.168.1.11", None);
        no_cidr.pod_cidr = None;
        let mut no_ip = node("c", "10.42.2.0/24", "192.168.1.12", None);
        no_ip.node_ip = None;
        let nodes = [
            no_cidr,
            no_ip,
            node("d", "0.0.0.0/0", "192.168.1.13", None),
            node("e", "10.42.0.0/25", "192.168.1.14", None),
            node("f", "10.42.5.0/24", "192.168.1.15", None),
            node("g", "10.42.5.0/24", "192.168.1.16", None),
            node("h", "10.42.6.0/24", "192.168.1.10", None),
            node("i", "10.42.7.0/24", "127.0.0.2", None),
        ];
        let d = compute(&local(Backend::HostGw, &h), &nodes);
        assert_eq!(d.routes.keys().collect::<Vec<_>>(), ["f"]);
        assert_eq!(d.skipped["b"], Skip::NoPodCidr);
        assert_eq!(d.skipped["c"], Skip::NoInternalIp);
        assert_eq!(d.skipped["d"], Skip::OutsideClusterCidr(c("0.0.0.0/0")));
        assert_eq!(d.skipped["e"], Skip::Overlaps(c("10.42.0.0/25")));
        assert_eq!(d.skipped["g"], Skip::Overlaps(c("10.42.5.0/24")));
        assert_eq!(d.skipped["h"], Skip::LocalAddress(ip("192.168.1.10")));
        assert_eq!(d.skipped["i"], Skip::LocalAddress(ip("127.0.0.2")));
    }

    #[test]
    fn removed_nodes_leave_nothing_desired() {
        let h = host();
        let b = node("b", "10.42.1.0/24", "172.16.0.5", Some(MAC));
        let with = compute(&local(Backend::Vxlan, &h), [&b]);
        assert!(with.vxlan_device && with.routes.contains_key("b"));
        let without = compute(&local(Backend::Vxlan, &h), std::iter::empty());
        assert_eq!(without, Desired::default());
    }

    #[test]
    fn backend_none_wants_nothing() {
        let h = host();
        let nodes = [node("b", "10.42.1.0/24", "192.168.1.11", Some(MAC))];
        assert_eq!(
            compute(&local(Backend::None, &h), &nodes),
            Desired::default()
        );
    }

    #[test]
    fn cidr_helpers_mask_and_contain() {
        assert_eq!(cidr(ip("10.42.3.7"), 24), c("10.42.3.0/24"));
        assert!(contains(c("10.42.0.0/16"), ip("10.42.200.1")));
        assert!(!contains(c("10.42.0.0/16"), ip("10.43.0.1")));
        assert!(contains(c("0.0.0.0/0"), ip("1.2.3.4")));
        assert!(overlaps(c("10.42.0.0/16"), c("10.42.1.0/24")));
        assert!(!overlaps(c("10.42.0.0/24"), c("10.42.1.0/24")));
    }
}
