//! Applies a [`Desired`] state to the node's network namespace over rtnetlink,
//! idempotently and without memory: each `apply` reads what is there, deletes
//! what is ours but no longer wanted, adds what is missing. Ours means routes
//! of protocol [`RTPROT_R8S`] in the main table to a destination inside the
//! cluster CIDR, and the `flannel.1` device with its neighbours and fdb
//! entries; nothing else is touched (so two agents in one namespace with
//! different cluster CIDRs, as test clusters on one host, leave each other be).

mod neigh;
mod routes;
mod vxlan;

use std::net::{IpAddr, Ipv4Addr};

use futures::TryStreamExt;
use netproxy::model::Ipv4Cidr;
use rtnetlink::Handle;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::{LinkAttribute, LinkMessage};

use super::annotations::MacAddr;
use super::desired::{Desired, HostNet, PeerRoute, cidr, contains};
use routes::RouteSpec;

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
    #[error("failed to program the pod masquerade")]
    Masquerade(#[source] r8s_nft::NftError),
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
        self.sync_routes(std::collections::HashSet::new()).await
    }
}
