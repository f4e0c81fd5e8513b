//! The cluster network of a kind cluster: a network namespace of its own
//! holding a bridge with the gateway address, and per node a veth from that
//! bridge into the node's namespace (`eth0`, an address of the /24 and a
//! default route via the bridge). Nothing on the host's network changes.

use std::net::Ipv4Addr;

use super::netns;

/// The bridge's name inside the cluster network namespace.
pub const BRIDGE: &str = "kind0";
/// The node side of each node's veth.
pub const NODE_LINK: &str = "eth0";
pub const PREFIX_LEN: u8 = 24;

/// A cluster network: `<netns>` with `BRIDGE` at `<subnet>.1/24`.
#[derive(Debug, Clone)]
pub struct ClusterNetwork {
    /// `r8s-e2e-<id>-net`.
    pub netns: String,
    pub bridge: String,
    /// The bridge's address: every node's gateway, where the registry listens.
    pub gateway: Ipv4Addr,
}

impl ClusterNetwork {
    /// The network of cluster `id` on `10.250.<subnet>.0/24`, not created yet.
    pub fn new(id: &str, subnet: u8) -> Self {
        Self {
            netns: format!("{}-net", super::prefix(id)),
            bridge: BRIDGE.to_owned(),
            gateway: Ipv4Addr::new(10, 250, subnet, 1),
        }
    }

    /// The `host`th address of the /24 (`.2` is the first node).
    pub fn address(&self, host: u8) -> Ipv4Addr {
        let [a, b, c, _] = self.gateway.octets();
        Ipv4Addr::new(a, b, c, host)
    }

    /// `10.250.<subnet>.0/24`.
    pub fn cidr(&self) -> String {
        format!("{}/{PREFIX_LEN}", self.address(0))
    }

    /// Creates the namespace and the bridge.
    pub fn create(&self) -> anyhow::Result<()> {
        netns::add(&self.netns)?;
        let n = self.netns.as_str();
        netns::ip(&["-n", n, "link", "add", &self.bridge, "type", "bridge"])?;
        let addr = format!("{}/{PREFIX_LEN}", self.gateway);
        netns::ip(&["-n", n, "addr", "add", &addr, "dev", &self.bridge])?;
        netns::ip(&["-n", n, "link", "set", &self.bridge, "up"])
    }

    /// Connects node namespace `node_netns` to the bridge with `address`;
    /// `link` names the bridge side (at most 15 bytes).
    pub fn attach(&self, node_netns: &str, link: &str, address: Ipv4Addr) -> anyhow::Result<()> {
        let n = self.netns.as_str();
        netns::ip(&[
            "-n", n, "link", "add", link, "type", "veth", "peer", "name", NODE_LINK, "netns",
            node_netns,
        ])?;
        netns::ip(&["-n", n, "link", "set", link, "master", &self.bridge, "up"])?;
        let addr = format!("{address}/{PREFIX_LEN}");
        netns::ip(&["-n", node_netns, "addr", "add", &addr, "dev", NODE_LINK])?;
        netns::ip(&["-n", node_netns, "link", "set", NODE_LINK, "up"])?;
        netns::ip(&[
            "-n",
            node_netns,
            "route",
            "add",
            "default",
            "via",
            &self.gateway.to_string(),
        ])
    }

    /// Deletes the namespace with the bridge and the bridge ends of the veths.
    pub fn delete(&self) {
        netns::delete(&self.netns);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_in_the_cluster_subnet() {
        let net = ClusterNetwork::new("abc123", 7);
        assert_eq!(net.netns, "r8s-e2e-abc123-net");
        assert_eq!(net.gateway, Ipv4Addr::new(10, 250, 7, 1));
        assert_eq!(net.address(3), Ipv4Addr::new(10, 250, 7, 3));
        assert_eq!(net.cidr(), "10.250.7.0/24");
    }
}
