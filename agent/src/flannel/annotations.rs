//! flannel's Node annotations (no I/O): what each agent publishes about its
//! own VTEP, and what the desired-state computation reads about the others'.
//! Same keys and JSON as flannel's kube subnet manager, so Nodes look as in k3s.

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use super::Backend;

pub const BACKEND_TYPE: &str = "flannel.alpha.coreos.com/backend-type";
pub const BACKEND_DATA: &str = "flannel.alpha.coreos.com/backend-data";
pub const PUBLIC_IP: &str = "flannel.alpha.coreos.com/public-ip";

/// The VXLAN network identifier of `flannel.1`.
pub const VNI: u32 = 1;

/// An Ethernet address such as `0a:58:0a:2a:00:01`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MacAddr(pub [u8; 6]);

/// A MAC address that did not parse.
#[derive(Debug, thiserror::Error)]
#[error("invalid MAC address {0:?}")]
pub struct MacError(String);

impl FromStr for MacAddr {
    type Err = MacError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for b in &mut out {
            let p = parts.next().filter(|p| p.len() == 2);
            *b = p
                .and_then(|p| u8::from_str_radix(p, 16).ok())
                .ok_or_else(|| MacError(s.to_owned()))?;
        }
        if parts.next().is_some() {
            return Err(MacError(s.to_owned()));
        }
        Ok(Self(out))
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl MacAddr {
    /// A stable, locally administered unicast address for `node_name`'s VTEP:
    /// it survives agent restarts and device re-creation, so the other nodes'
    /// neighbour and fdb entries stay valid (flannel keeps it in the device).
    pub fn for_node(node_name: &str) -> Self {
        let digest = ring::digest::digest(&ring::digest::SHA256, node_name.as_bytes());
        let mut mac = [0u8; 6];
        mac.copy_from_slice(&digest.as_ref()[..6]);
        mac[0] = (mac[0] & 0xfe) | 0x02;
        Self(mac)
    }
}

/// flannel's vxlan `backend-data`: `{"VNI":1,"VtepMAC":"..."}`.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct VxlanData {
    #[serde(rename = "VNI")]
    vni: u32,
    #[serde(rename = "VtepMAC")]
    vtep_mac: String,
}

/// The annotations this node publishes on its own Node.
pub fn own(backend: Backend, node_ip: Ipv4Addr, vtep_mac: MacAddr) -> BTreeMap<String, String> {
    let data = match backend {
        Backend::Vxlan => serde_json::json!(VxlanData {
            vni: VNI,
            vtep_mac: vtep_mac.to_string(),
        })
        .to_string(),
        Backend::HostGw | Backend::None => "null".to_owned(),
    };
    BTreeMap::from([
        (BACKEND_TYPE.to_owned(), backend.to_string()),
        (BACKEND_DATA.to_owned(), data),
        (PUBLIC_IP.to_owned(), node_ip.to_string()),
    ])
}

/// The VTEP MAC a Node published, when it runs the vxlan backend with our VNI.
pub fn vtep_mac(annotations: &BTreeMap<String, String>) -> Option<MacAddr> {
    if annotations.get(BACKEND_TYPE).map(String::as_str) != Some("vxlan") {
        return None;
    }
    let data: VxlanData = serde_json::from_str(annotations.get(BACKEND_DATA)?).ok()?;
    if data.vni != VNI {
        return None;
    }
    data.vtep_mac.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_round_trips_and_rejects_garbage() {
        let m: MacAddr = "0a:58:0A:2a:00:ff".parse().unwrap();
        assert_eq!(m.0, [0x0a, 0x58, 0x0a, 0x2a, 0x00, 0xff]);
        assert_eq!(m.to_string(), "0a:58:0a:2a:00:ff");
        for bad in [
            "",
            "0a:58:0a:2a:00",
            "0a:58:0a:2a:00:ff:01",
            "0a:58:0a:2a:00:zz",
            "a:58:0a:2a:00:ff",
        ] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn node_mac_is_stable_unicast_and_local() {
        let a = MacAddr::for_node("node-a");
        assert_eq!(a, MacAddr::for_node("node-a"));
        assert_ne!(a, MacAddr::for_node("node-b"));
        assert_eq!(a.0[0] & 0x01, 0, "unicast");
        assert_eq!(a.0[0] & 0x02, 0x02, "locally administered");
    }

    #[test]
    fn own_vxlan_annotations_are_flannels() {
        let mac: MacAddr = "02:00:00:00:00:01".parse().unwrap();
        let a = own(Backend::Vxlan, Ipv4Addr::new(10, 0, 0, 2), mac);
        assert_eq!(a[BACKEND_TYPE], "vxlan");
        assert_eq!(
            a[BACKEND_DATA],
            r#"{"VNI":1,"VtepMAC":"02:00:00:00:00:01"}"#
        );
        assert_eq!(a[PUBLIC_IP], "10.0.0.2");
        assert_eq!(vtep_mac(&a), Some(mac));
        let h = own(Backend::HostGw, Ipv4Addr::new(10, 0, 0, 2), mac);
        assert_eq!(h[BACKEND_TYPE], "host-gw");
        assert_eq!(h[BACKEND_DATA], "null");
        assert_eq!(vtep_mac(&h), None);
    }

    #[test]
    fn vtep_mac_needs_vxlan_type_our_vni_and_a_valid_mac() {
        let with = |t: &str, d: &str| {
            BTreeMap::from([
                (BACKEND_TYPE.to_owned(), t.to_owned()),
                (BACKEND_DATA.to_owned(), d.to_owned()),
            ])
        };
        let good = r#"{"VNI":1,"VtepMAC":"02:00:00:00:00:01"}"#;
        assert!(vtep_mac(&with("vxlan", good)).is_some());
        assert!(vtep_mac(&with("host-gw", good)).is_none());
        assert!(vtep_mac(&with("vxlan", r#"{"VNI":2,"VtepMAC":"02:00:00:00:00:01"}"#)).is_none());
        assert!(vtep_mac(&with("vxlan", r#"{"VNI":1,"VtepMAC":"nope"}"#)).is_none());
        assert!(vtep_mac(&with("vxlan", "not json")).is_none());
        assert!(vtep_mac(&BTreeMap::new()).is_none());
    }
}
