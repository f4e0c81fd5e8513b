//! `flannel.1`'s permanent neighbours (remote VTEP IP -> MAC) and fdb
//! entries (remote VTEP MAC -> node IP); every entry on the device is ours.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr};

use futures::TryStreamExt;
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};

use super::{Programmer, Result, VXLAN_DEVICE, is_gone, nl};
use crate::flannel::annotations::MacAddr;

impl Programmer {
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
    pub(super) async fn sync_neighbours(
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
    pub(super) async fn sync_fdb(
        &self,
        index: u32,
        overlay: &[(Ipv4Addr, MacAddr, Ipv4Addr)],
    ) -> Result<()> {
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
