//! Pod traffic between nodes, as k3s's embedded flannel: `watch` follows the
//! Nodes, `desired` turns them into routes (host-gw) or a VXLAN overlay, and
//! `netlink` programs that into the node's network namespace, owning only what
//! it created (routes tagged [`netlink::RTPROT_R8S`], the `flannel.1` device).
//! Each agent publishes its VTEP on its own Node (`annotations`); `masquerade` makes pod
//! traffic that leaves the cluster network appear as the node.

pub mod annotations;
pub mod desired;
pub mod masquerade;
pub mod netlink;
pub mod watch;

use std::fmt;
use std::str::FromStr;

use netproxy::model::Ipv4Cidr;

pub use desired::{Desired, HostNet, PeerRoute};
pub use netlink::Programmer;
pub use watch::run;

/// How pod traffic reaches the other nodes (k3s `--flannel-backend`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backend {
    /// A VXLAN overlay (`flannel.1`, UDP 8472); direct routes to the nodes on
    /// the same subnet.
    #[default]
    Vxlan,
    /// Routes via the other nodes' IPs; they must share a subnet.
    HostGw,
    /// Nothing: another network plugin connects the nodes.
    None,
}

/// A `--flannel-backend` value that is not one of ours.
#[derive(Debug, thiserror::Error)]
#[error("unknown backend {0:?}, expected one of vxlan, host-gw, none")]
pub struct BackendError(String);

impl FromStr for Backend {
    type Err = BackendError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "vxlan" => Ok(Self::Vxlan),
            "host-gw" => Ok(Self::HostGw),
            "none" => Ok(Self::None),
            other => Err(BackendError(other.to_owned())),
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Vxlan => "vxlan",
            Self::HostGw => "host-gw",
            Self::None => "none",
        })
    }
}

/// `--flannel-backend`, `--flannel-iface` and the cluster CIDR the remote pod
/// CIDRs must lie in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlannelConfig {
    pub backend: Backend,
    /// The interface for traffic between nodes; `None`: the one that carries
    /// the node IP.
    pub iface: Option<String>,
    /// vxlan: nodes on a subnet of the interface get direct routes.
    pub direct_routing: bool,
    /// Remote pod CIDRs outside it are ignored, so that a bad Node can never
    /// make the agent route, say, the default route.
    pub cluster_cidr: Ipv4Cidr,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_names_are_k3s() {
        for (s, b) in [
            ("vxlan", Backend::Vxlan),
            ("host-gw", Backend::HostGw),
            ("none", Backend::None),
        ] {
            assert_eq!(s.parse::<Backend>().unwrap(), b);
            assert_eq!(b.to_string(), s);
        }
        assert_eq!(
            "wireguard".parse::<Backend>().unwrap_err().to_string(),
            "unknown backend \"wireguard\", expected one of vxlan, host-gw, none"
        );
    }
}
