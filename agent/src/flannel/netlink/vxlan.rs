//! The `flannel.1` VXLAN device: created with flannel's settings when some
//! node needs the overlay, re-created when they change, deleted when no node
//! needs it (only when it is ours: no address outside the cluster CIDR).

use std::net::IpAddr;

use futures::TryStreamExt;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::{
    InfoData, InfoKind, InfoVxlan, LinkAttribute, LinkInfo, LinkMessage,
};
use rtnetlink::{LinkUnspec, LinkVxlan};

use super::{
    ProgramError, Programmer, Result, VXLAN_DEVICE, VXLAN_OVERHEAD, VXLAN_PORT, Vtep, is_gone, nl,
};
use crate::flannel::annotations::VNI;
use crate::flannel::desired::{HostNet, cidr};

impl Programmer {
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

    pub(super) async fn ensure_vxlan(&self, host: &HostNet, vtep: &Vtep) -> Result<u32> {
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

    pub(super) async fn remove_vxlan(&self) -> Result<()> {
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
}
