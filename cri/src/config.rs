//! Validated runtime configuration, built by `main` (or the agent) and read by every module.
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use ipnet::Ipv4Net;

/// Configuration of one CRI runtime instance.
#[derive(Debug, Clone)]
pub struct Config {
    /// Unix socket the gRPC server listens on.
    pub listen: PathBuf,
    /// Persistent data: images, snapshots, sandbox and container records, IPAM.
    pub root: PathBuf,
    /// Volatile state: libcontainer state, bundles, namespace mounts, rootfs mounts.
    pub state: PathBuf,
    /// cgroup under which pod cgroups are created (e.g. `/r8s`).
    pub cgroup_parent: String,
    /// Registries (`host:port`) reached over plain HTTP; loopback ones always are.
    pub insecure_registries: Vec<String>,
    /// Pod network of this node; the first address is the bridge gateway.
    pub pod_cidr: Ipv4Net,
    /// Name of the node bridge.
    pub bridge: String,
    /// Address of the streaming (exec/attach/port-forward) HTTP server; port 0 picks one.
    pub streaming_address: SocketAddr,
}

/// Default streaming server address: loopback, any free port (as containerd's
/// `stream_server_address` 127.0.0.1 with port 0).
pub const DEFAULT_STREAMING_ADDRESS: &str = "127.0.0.1:0";

impl Config {
    /// Gateway (bridge) address: the first host address of the pod CIDR.
    pub fn gateway(&self) -> Ipv4Addr {
        let n = u32::from(self.pod_cidr.network());
        Ipv4Addr::from(n + 1)
    }

    /// Whether a registry host is reached over plain HTTP.
    pub fn is_insecure(&self, registry: &str) -> bool {
        let host = registry.rsplit_once(':').map_or(registry, |(h, _)| h);
        host == "localhost"
            || host == "127.0.0.1"
            || host == "[::1]"
            || self.insecure_registries.iter().any(|r| r == registry)
    }

    pub(crate) fn libcontainer_root(&self) -> PathBuf {
        self.state.join("libcontainer")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config {
            listen: "/tmp/x.sock".into(),
            root: "/tmp/r".into(),
            state: "/tmp/s".into(),
            cgroup_parent: "/r8s".into(),
            insecure_registries: vec!["reg.local:5000".into()],
            pod_cidr: "10.244.3.0/24".parse().unwrap(),
            bridge: "r8s0".into(),
            streaming_address: DEFAULT_STREAMING_ADDRESS.parse().unwrap(),
        }
    }

    #[test]
    fn gateway_is_first_host_address() {
        assert_eq!(config().gateway(), Ipv4Addr::new(10, 244, 3, 1));
    }

    #[test]
    fn loopback_and_listed_registries_are_insecure() {
        let c = config();
        assert!(c.is_insecure("127.0.0.1:5000"));
        assert!(c.is_insecure("localhost:1234"));
        assert!(c.is_insecure("reg.local:5000"));
        assert!(!c.is_insecure("docker.io"));
    }
}
