//! Applies a [`Desired`] state to the node's network namespace over rtnetlink,
//! idempotently and without memory: each `apply` reads what is there, deletes
//! what is ours but no longer wanted, adds what is missing. Ours means routes
//! of protocol [`RTPROT_R8S`] in the main table to a destination inside the
//! cluster CIDR, and the `flannel.1` device with its neighbours and fdb
//! entries; nothing else is touched (so two agents in one namespace with
//! different cluster CIDRs, as test clusters on one host, leave each other be).

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr};

use futures::TryStreamExt;
use netproxy::model::Ipv4Cidr;
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::{
    InfoData, InfoKind, InfoVxlan, LinkAttribute, LinkInfo, LinkMessage,
};
use rtnetlink::packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteProtocol,
};
use rtnetlink::{Handle, LinkUnspec, LinkVxlan, RouteMessageBuilder};

use super::annotations::{MacAddr, VNI};
use super::desired::{Desired, HostNet, PeerRoute, cidr, contains};

/// The routing protocol number of r8s's routes (`ip route show proto 82`):
/// unused by iproute2's `rt_protos`, it lets the agent list and delete only
/// the routes it added.
pub const RTPROT_R8S: u8 = 82;
/// flannel's VXLAN device name (VNI 1).
pub const VXLAN_DEVICE: &str = "flannel.1";
/// flannel's VXLAN UDP port (the Linux default, not IANA's 4789).
pub const VXLAN_PORT: u16 = 8472;
/// Outer IPv4 (20) + UDP (8) + VXLAN (8) + inner Ethernet (14) headers.
pub const VXLAN_OVERHEAD: u32 = 50;

/// Why the pod network between nodes could not be programmed.
#[derive(Debug, thiserror::Error)]
pub enum ProgramError {
    #[error("failed to open netlink socket")]
    Socket(#[source] std::io::Error),
    #[error("netlink request {step} failed")]
    Netlink {
        step: &'static str,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("interface {0} not found")]
    NoIface(String),
    #[error("no interface has the node IP {0}")]
    NoNodeIpIface(Ipv4Addr),
}

pub type Result<T, E = ProgramError> = std::result::Result<T, E>;

fn nl(step: &'static str) -> impl FnOnce(rtnetlink::Error) -> ProgramError {
    move |source| ProgramError::Netlink { step, source }
}

fn errno(e: &rtnetlink::Error) -> Option<nix::errno::Errno> {
    match e {
        rtnetlink::Error::NetlinkError(m) => Some(nix::errno::Errno::from_raw(-m.raw_code())),
        _ => None,
    }
}

fn is_gone(e: &rtnetlink::Error) -> bool {
    matches!(
        errno(e),
        Some(nix::errno::Errno::ENOENT | nix::errno::Errno::ENODEV | nix::errno::Errno::ESRCH)
    )
}

/// This node's VTEP: the device's MAC and the address it gets (the network
/// address of our pod CIDR, /32, as flannel), when the Node has a podCIDR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vtep {
    pub mac: MacAddr,
    pub own_pod_cidr: Option<Ipv4Cidr>,
}

/// One route as the kernel reports it, for comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct RouteSpec {
    dst: Ipv4Cidr,
    gateway: Ipv4Addr,
    oif: u32,
    onlink: bool,
}

impl RouteSpec {
    fn of(route: &PeerRoute, host: &HostNet, vxlan: Option<u32>) -> Option<Self> {
        match *route {
            PeerRoute::Direct { pod_cidr, node_ip } => Some(Self {
                dst: pod_cidr,
                gateway: node_ip,
                oif: host.index,
                onlink: false,
            }),
            PeerRoute::Overlay { pod_cidr, .. } => Some(Self {
                dst: pod_cidr,
                gateway: pod_cidr.addr,
                oif: vxlan?,
                onlink: true,
            }),
        }
    }

    fn from_message(m: &RouteMessage) -> Option<Self> {
        let mut dst = None;
        let mut gateway = None;
        let mut oif = None;
        for a in &m.attributes {
            match a {
                RouteAttribute::Destination(RouteAddress::Inet(ip)) => dst = Some(*ip),
                RouteAttribute::Gateway(RouteAddress::Inet(ip)) => gateway = Some(*ip),
                RouteAttribute::Oif(i) => oif = Some(*i),
                _ => {}
            }
        }
        Some(Self {
            dst: cidr(dst?, m.header.destination_prefix_length),
            gateway: gateway?,
            oif: oif?,
            onlink: m.header.flags.contains(RouteFlags::Onlink),
        })
    }

    fn message(&self) -> RouteMessage {
        let b = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(self.dst.addr, self.dst.len)
            .gateway(self.gateway)
            .output_interface(self.oif)
            .protocol(RouteProtocol::Other(RTPROT_R8S));
        if self.onlink { b.onlink() } else { b }.build()
    }
}

/// Programs one network namespace through one rtnetlink connection.
#[derive(Clone)]
pub struct Programmer {
    handle: Handle,
    /// The cluster CIDR: only routes into it are ours.
    scope: Ipv4Cidr,
}

impl Programmer {
    pub fn new(handle: Handle, cluster_cidr: Ipv4Cidr) -> Self {
        Self {
            handle,
            scope: cluster_cidr,
        }
    }

    /// A connection in the calling thread's network namespace, driven on the
    /// current tokio runtime.
    pub fn connect(cluster_cidr: Ipv4Cidr) -> Result<Self> {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(ProgramError::Socket)?;
        tokio::spawn(conn);
        Ok(Self::new(handle, cluster_cidr))
    }

    fn in_scope(&self, dst: Ipv4Cidr) -> bool {
        dst.len >= self.scope.len && contains(self.scope, dst.addr)
    }

    async fn link_by_name(&self, name: &str) -> Result<Option<LinkMessage>> {
        let mut links = self
            .handle
            .link()
            .get()
            .match_name(name.to_owned())
            .execute();
        match links.try_next().await {
            Ok(l) => Ok(l),
            Err(e) if is_gone(&e) => Ok(None),
            Err(e) => Err(nl("get link")(e)),
        }
    }

    /// The interface for traffic between nodes (`iface`, else the one with
    /// `node_ip`), its subnets and MTU, and every local IPv4 address.
    pub async fn host_net(&self, node_ip: Ipv4Addr, iface: Option<&str>) -> Result<HostNet> {
        let addrs: Vec<(u32, Ipv4Addr, u8)> = self
            .handle
            .address()
            .get()
            .execute()
            .map_ok(|m| {
                let ip = m.attributes.iter().find_map(|a| match a {
                    AddressAttribute::Address(IpAddr::V4(ip)) => Some(*ip),
                    _ => None,
                });
                ip.map(|ip| (m.header.index, ip, m.header.prefix_len))
            })
            .try_filter_map(|x| async move { Ok(x) })
            .try_collect()
            .await
            .map_err(nl("list addresses"))?;
        let link = match iface {
            Some(name) => self
                .link_by_name(name)
                .await?
                .ok_or_else(|| ProgramError::NoIface(name.to_owned()))?,
            None => {
                let index = addrs
                    .iter()
                    .find(|(_, ip, _)| *ip == node_ip)
                    .map(|(i, _, _)| *i)
                    .ok_or(ProgramError::NoNodeIpIface(node_ip))?;
                let mut links = self.handle.link().get().match_index(index).execute();
                links
                    .try_next()
                    .await
                    .map_err(nl("get link"))?
                    .ok_or_else(|| ProgramError::NoIface(index.to_string()))?
            }
        };
        let index = link.header.index;
        let mut name = String::new();
        let mut mtu = 1500;
        for a in &link.attributes {
            match a {
                LinkAttribute::IfName(n) => name.clone_from(n),
                LinkAttribute::Mtu(m) => mtu = *m,
                _ => {}
            }
        }
        Ok(HostNet {
            iface: name,
            index,
            mtu,
            node_ip,
            subnets: addrs
                .iter()
                .filter(|(i, _, _)| *i == index)
                .map(|(_, ip, len)| cidr(*ip, *len))
                .collect(),
            local_addrs: addrs.iter().map(|(_, ip, _)| *ip).collect(),
        })
    }

    /// Makes the namespace match `desired`: the VXLAN device first (created
    /// only when some node needs it, deleted when none does), then routes,
    /// neighbours and fdb entries.
    pub async fn apply(&self, host: &HostNet, vtep: &Vtep, desired: &Desired) -> Result<()> {
        let vxlan = if desired.vxlan_device {
            Some(self.ensure_vxlan(host, vtep).await?)
        } else {
            self.remove_vxlan().await?;
            None
        };
        let want = desired
            .routes
            .values()
            .filter_map(|r| RouteSpec::of(r, host, vxlan))
            .collect();
        self.sync_routes(want).await?;
        if let Some(index) = vxlan {
            let overlay: Vec<(Ipv4Addr, MacAddr, Ipv4Addr)> = desired
                .routes
                .values()
                .filter_map(|r| match *r {
                    PeerRoute::Overlay {
                        pod_cidr,
                        node_ip,
                        vtep_mac,
                    } => Some((pod_cidr.addr, vtep_mac, node_ip)),
                    PeerRoute::Direct { .. } => None,
                })
                .collect();
            self.sync_neighbours(index, &overlay).await?;
            self.sync_fdb(index, &overlay).await?;
        }
        Ok(())
    }

    /// Deletes everything this programmer may have created (`none` backend).
    pub async fn clear(&self) -> Result<()> {
        self.remove_vxlan().await?;
        self.sync_routes(HashSet::new()).await
    }

    fn vxlan_matches(link: &LinkMessage, host: &HostNet, vtep: &Vtep) -> bool {
        let mut ok = (false, false, false, false, false);
        for a in &link.attributes {
            match a {
                LinkAttribute::Address(mac) => ok.0 = mac.as_slice() == vtep.mac.0,
                LinkAttribute::LinkInfo(infos) => {
                    for info in infos {
                        if let LinkInfo::Data(InfoData::Vxlan(data)) = info {
                            for d in data {
                                match d {
                                    InfoVxlan::Id(id) => ok.1 = *id == VNI,
                                    InfoVxlan::Local(ip) => ok.2 = *ip == host.node_ip,
                                    InfoVxlan::Link(i) => ok.3 = *i == host.index,
                                    InfoVxlan::Port(p) => ok.4 = *p == VXLAN_PORT,
                                    _ => {}
                                }
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        ok == (true, true, true, true, true)
    }

    fn is_vxlan(link: &LinkMessage) -> bool {
        link.attributes.iter().any(|a| {
            matches!(a, LinkAttribute::LinkInfo(infos)
                if infos.iter().any(|i| matches!(i, LinkInfo::Kind(InfoKind::Vxlan))))
        })
    }

    async fn ensure_vxlan(&self, host: &HostNet, vtep: &Vtep) -> Result<u32> {
        let mtu = host.mtu.saturating_sub(VXLAN_OVERHEAD);
        let existing = self.link_by_name(VXLAN_DEVICE).await?;
        let index = match existing {
            Some(l) if Self::vxlan_matches(&l, host, vtep) => l.header.index,
            other => {
                if let Some(l) = other {
                    // Another node IP, interface or MAC (say, after a change
                    // of flags): flannel re-creates the device too.
                    tracing::info!(device = VXLAN_DEVICE, "re-creating the VXLAN device");
                    self.handle
                        .link()
                        .del(l.header.index)
                        .execute()
                        .await
                        .map_err(nl("delete vxlan device"))?;
                }
                let link = LinkVxlan::new(VXLAN_DEVICE, VNI)
                    .dev(host.index)
                    .local(host.node_ip)
                    .port(VXLAN_PORT)
                    .learning(false)
                    .mtu(mtu)
                    .address(vtep.mac.0.to_vec())
                    .build();
                self.handle
                    .link()
                    .add(link)
                    .execute()
                    .await
                    .map_err(nl("add vxlan device"))?;
                let index = self
                    .link_by_name(VXLAN_DEVICE)
                    .await?
                    .ok_or_else(|| ProgramError::NoIface(VXLAN_DEVICE.to_owned()))?
                    .header
                    .index;
                tracing::info!(
                    device = VXLAN_DEVICE,
                    vni = VNI,
                    port = VXLAN_PORT,
                    local = %host.node_ip,
                    iface = %host.iface,
                    mtu,
                    mac = %vtep.mac,
                    "created the VXLAN device"
                );
                index
            }
        };
        self.sync_vxlan_address(index, vtep).await?;
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(index).mtu(mtu).up().build())
            .execute()
            .await
            .map_err(nl("vxlan device up"))?;
        Ok(index)
    }

    async fn sync_vxlan_address(&self, index: u32, vtep: &Vtep) -> Result<()> {
        let want = vtep.own_pod_cidr.map(|c| c.addr);
        let existing: Vec<_> = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute()
            .try_collect()
            .await
            .map_err(nl("list vxlan addresses"))?;
        let mut have = false;
        for m in existing {
            let ip = m.attributes.iter().find_map(|a| match a {
                AddressAttribute::Address(IpAddr::V4(ip)) => Some(*ip),
                _ => None,
            });
            if ip.is_some() && ip == want && m.header.prefix_len == 32 {
                have = true;
            } else if ip.is_some() {
                self.handle
                    .address()
                    .del(m)
                    .execute()
                    .await
                    .map_err(nl("delete vxlan address"))?;
            }
        }
        if let (Some(ip), false) = (want, have) {
            self.handle
                .address()
                .add(index, IpAddr::V4(ip), 32)
                .execute()
                .await
                .map_err(nl("add vxlan address"))?;
            tracing::info!(device = VXLAN_DEVICE, address = %ip, "set the VTEP address");
        }
        Ok(())
    }

    async fn remove_vxlan(&self) -> Result<()> {
        let Some(link) = self.link_by_name(VXLAN_DEVICE).await? else {
            return Ok(());
        };
        if !Self::is_vxlan(&link) {
            tracing::warn!(
                device = VXLAN_DEVICE,
                "not a VXLAN device, leaving it alone"
            );
            return Ok(());
        }
        let foreign = self
            .addresses(link.header.index)
            .await?
            .into_iter()
            .find(|(ip, len)| !self.in_scope(cidr(*ip, *len)));
        if let Some((ip, _)) = foreign {
            tracing::debug!(device = VXLAN_DEVICE, address = %ip, "VXLAN device of another cluster, leaving it alone");
            return Ok(());
        }
        match self.handle.link().del(link.header.index).execute().await {
            Err(e) if !is_gone(&e) => return Err(nl("delete vxlan device")(e)),
            _ => {}
        }
        tracing::info!(
            device = VXLAN_DEVICE,
            "deleted the VXLAN device: no node needs it"
        );
        Ok(())
    }

    /// The IPv4 addresses (and prefix lengths) of link `index`.
    async fn addresses(&self, index: u32) -> Result<Vec<(Ipv4Addr, u8)>> {
        let messages: Vec<_> = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute()
            .try_collect()
            .await
            .map_err(nl("list addresses"))?;
        Ok(messages
            .iter()
            .filter_map(|m| {
                m.attributes.iter().find_map(|a| match a {
                    AddressAttribute::Address(IpAddr::V4(ip)) => Some((*ip, m.header.prefix_len)),
                    _ => None,
                })
            })
            .collect())
    }

    async fn sync_routes(&self, want: HashSet<RouteSpec>) -> Result<()> {
        let ours: Vec<RouteMessage> = self
            .handle
            .route()
            .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
            .execute()
            .try_filter(|m| {
                let ours = m.header.protocol == RouteProtocol::Other(RTPROT_R8S)
                    && m.header.table == RouteHeader::RT_TABLE_MAIN
                    && m.header.address_family == AddressFamily::Inet
                    && route_dst(m).is_some_and(|d| self.in_scope(d));
                async move { ours }
            })
            .try_collect()
            .await
            .map_err(nl("list routes"))?;
        let mut have = HashSet::new();
        for m in ours {
            match RouteSpec::from_message(&m) {
                Some(spec) if want.contains(&spec) => {
                    have.insert(spec);
                }
                spec => {
                    match self.handle.route().del(m).execute().await {
                        Err(e) if !is_gone(&e) => return Err(nl("delete route")(e)),
                        _ => {}
                    }
                    if let Some(s) = spec {
                        tracing::info!(dst = %s.dst, via = %s.gateway, oif = s.oif, "deleted pod route");
                    }
                }
            }
        }
        for spec in want.difference(&have) {
            match self.handle.route().add(spec.message()).execute().await {
                Ok(()) => tracing::info!(
                    dst = %spec.dst,
                    via = %spec.gateway,
                    oif = spec.oif,
                    onlink = spec.onlink,
                    "added pod route"
                ),
                // Never replace a route someone else added.
                Err(e) if errno(&e) == Some(nix::errno::Errno::EEXIST) => tracing::warn!(
                    dst = %spec.dst,
                    "a route to this pod CIDR exists and is not r8s's, leaving it"
                ),
                Err(e) => return Err(nl("add route")(e)),
            }
        }
        Ok(())
    }

    async fn neighbours(&self, family: AddressFamily, index: u32) -> Result<Vec<NeighbourMessage>> {
        self.handle
            .neighbours()
            .get()
            .set_address_family(family)
            .execute()
            .try_filter(|m| {
                let keep = m.header.ifindex == index && m.header.state == NeighbourState::Permanent;
                async move { keep }
            })
            .try_collect()
            .await
            .map_err(nl("list neighbours"))
    }

    /// `<remote VTEP IP> lladdr <remote VTEP MAC>` on `flannel.1`.
    async fn sync_neighbours(
        &self,
        index: u32,
        overlay: &[(Ipv4Addr, MacAddr, Ipv4Addr)],
    ) -> Result<()> {
        let want: HashSet<(Ipv4Addr, MacAddr)> =
            overlay.iter().map(|(ip, mac, _)| (*ip, *mac)).collect();
        let mut have = HashSet::new();
        for m in self.neighbours(AddressFamily::Inet, index).await? {
            let (ip, mac) = neighbour_fields(&m);
            match (ip, mac) {
                (Some(ip), Some(mac)) if want.contains(&(ip, mac)) => {
                    have.insert((ip, mac));
                }
                _ => {
                    self.del_neighbour(m, "delete neighbour").await?;
                    tracing::info!(device = VXLAN_DEVICE, ip = ?ip, mac = ?mac.map(|m| m.to_string()), "deleted VTEP neighbour");
                }
            }
        }
        for (ip, mac) in want.difference(&have) {
            self.handle
                .neighbours()
                .add(index, IpAddr::V4(*ip))
                .link_layer_address(&mac.0)
                .state(NeighbourState::Permanent)
                .replace()
                .execute()
                .await
                .map_err(nl("add neighbour"))?;
            tracing::info!(device = VXLAN_DEVICE, %ip, %mac, "added VTEP neighbour");
        }
        Ok(())
    }

    /// `<remote VTEP MAC> dst <remote node IP>` in `flannel.1`'s fdb.
    async fn sync_fdb(&self, index: u32, overlay: &[(Ipv4Addr, MacAddr, Ipv4Addr)]) -> Result<()> {
        let want: HashSet<(MacAddr, Ipv4Addr)> =
            overlay.iter().map(|(_, mac, dst)| (*mac, *dst)).collect();
        let mut have = HashSet::new();
        for m in self.neighbours(AddressFamily::Bridge, index).await? {
            let (dst, mac) = neighbour_fields(&m);
            match (mac, dst) {
                (Some(mac), Some(dst)) if want.contains(&(mac, dst)) => {
                    have.insert((mac, dst));
                }
                _ => {
                    self.del_neighbour(m, "delete fdb entry").await?;
                    tracing::info!(device = VXLAN_DEVICE, mac = ?mac.map(|m| m.to_string()), dst = ?dst, "deleted fdb entry");
                }
            }
        }
        for (mac, dst) in want.difference(&have) {
            self.handle
                .neighbours()
                .add_bridge(index, &mac.0)
                .destination(IpAddr::V4(*dst))
                .flags(NeighbourFlags::Own)
                .replace()
                .execute()
                .await
                .map_err(nl("add fdb entry"))?;
            tracing::info!(device = VXLAN_DEVICE, %mac, %dst, "added fdb entry");
        }
        Ok(())
    }

    async fn del_neighbour(&self, m: NeighbourMessage, step: &'static str) -> Result<()> {
        match self.handle.neighbours().del(m).execute().await {
            Err(e) if !is_gone(&e) => Err(nl(step)(e)),
            _ => Ok(()),
        }
    }
}

fn route_dst(m: &RouteMessage) -> Option<Ipv4Cidr> {
    m.attributes.iter().find_map(|a| match a {
        RouteAttribute::Destination(RouteAddress::Inet(ip)) => {
            Some(cidr(*ip, m.header.destination_prefix_length))
        }
        _ => None,
    })
}

fn neighbour_fields(m: &NeighbourMessage) -> (Option<Ipv4Addr>, Option<MacAddr>) {
    let mut ip = None;
    let mut mac = None;
    for a in &m.attributes {
        match a {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(i)) => ip = Some(*i),
            NeighbourAttribute::LinkLayerAddress(l) => {
                mac = <[u8; 6]>::try_from(l.as_slice()).ok().map(MacAddr);
            }
            _ => {}
        }
    }
    (ip, mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> HostNet {
        HostNet {
            iface: "eth0".into(),
            index: 2,
            mtu: 1500,
            node_ip: "192.168.1.10".parse().unwrap(),
            subnets: vec![],
            local_addrs: vec![],
        }
    }

    #[test]
    fn route_specs_round_trip_through_messages() {
        let overlay = PeerRoute::Overlay {
            pod_cidr: "10.42.1.0/24".parse().unwrap(),
            node_ip: "172.16.0.5".parse().unwrap(),
            vtep_mac: "02:00:00:00:00:01".parse().unwrap(),
        };
        let spec = RouteSpec::of(&overlay, &host(), Some(9)).unwrap();
        assert_eq!(spec.gateway, "10.42.1.0".parse::<Ipv4Addr>().unwrap());
        assert!(spec.onlink);
        let m = spec.message();
        assert_eq!(m.header.protocol, RouteProtocol::Other(RTPROT_R8S));
        assert_eq!(RouteSpec::from_message(&m), Some(spec));
        assert_eq!(
            RouteSpec::of(&overlay, &host(), None),
            None,
            "no device, no overlay route"
        );

        let direct = PeerRoute::Direct {
            pod_cidr: "10.42.2.0/24".parse().unwrap(),
            node_ip: "192.168.1.11".parse().unwrap(),
        };
        let spec = RouteSpec::of(&direct, &host(), None).unwrap();
        assert_eq!((spec.oif, spec.onlink), (2, false));
        assert_eq!(RouteSpec::from_message(&spec.message()), Some(spec));
    }

    #[test]
    fn our_protocol_is_not_a_known_one() {
        assert_eq!(
            RouteProtocol::from(RTPROT_R8S),
            RouteProtocol::Other(RTPROT_R8S)
        );
    }
}
