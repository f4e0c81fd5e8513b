//! Routes to the other nodes' pod CIDRs: ours carry [`RTPROT_R8S`] and a
//! destination inside the cluster CIDR; the rest of the table is not ours.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use futures::TryStreamExt;
use netproxy::model::Ipv4Cidr;
use rtnetlink::RouteMessageBuilder;
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteProtocol,
};

use super::{Programmer, RTPROT_R8S, Result, errno, is_gone, nl};
use crate::flannel::desired::{HostNet, PeerRoute, cidr};

/// One route as the kernel reports it, for comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct RouteSpec {
    dst: Ipv4Cidr,
    gateway: Ipv4Addr,
    oif: u32,
    onlink: bool,
}

impl RouteSpec {
    pub(super) fn of(route: &PeerRoute, host: &HostNet, vxlan: Option<u32>) -> Option<Self> {
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

impl Programmer {
    pub(super) async fn sync_routes(&self, want: HashSet<RouteSpec>) -> Result<()> {
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
}

fn route_dst(m: &RouteMessage) -> Option<Ipv4Cidr> {
    m.attributes.iter().find_map(|a| match a {
        RouteAttribute::Destination(RouteAddress::Inet(ip)) => {
            Some(cidr(*ip, m.header.destination_prefix_length))
        }
        _ => None,
    })
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
