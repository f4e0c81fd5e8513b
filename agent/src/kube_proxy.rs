//! The service proxy and cluster DNS in the agent, as k3s runs kube-proxy in
//! its agent: after the runtime is up, `run` picks where cluster DNS listens
//! (the pod bridge's gateway address with the in-process runtime, else the
//! node IP), builds a `netproxy::ProxyConfig` from the agent's config and runs
//! `netproxy::run` until shutdown, restarting it with back-off when it fails.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use netproxy::{DnsConfig, ProxyConfig, RulesConfig};
use tokio_util::sync::CancellationToken;

use crate::config::{Config, KubeProxyConfig};
use crate::runtime_service;

/// Port of the cluster DNS server (pods ask `<cluster-dns>:53`, which the
/// proxy's own rules send here).
pub const DNS_PORT: u16 = 53;

const RESTART_MIN: Duration = Duration::from_millis(500);
const RESTART_MAX: Duration = Duration::from_secs(30);

/// Why the pod bridge could not be prepared for DNS.
#[derive(Debug, thiserror::Error)]
pub enum KubeProxyError {
    #[error("invalid pod CIDR")]
    PodCidr(#[source] runtime_service::RuntimeServiceError),
    #[error("failed to set up the pod bridge")]
    Bridge(#[source] cri::network::NetworkError),
}

/// Where this node's pods find the node, for the DNS server to listen on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsHost {
    /// The in-process runtime's bridge (`bridge`, with `pod_cidr`): its first
    /// address is every pod's gateway.
    PodBridge { bridge: String, pod_cidr: String },
    /// Another runtime (containerd's CRI, ...): its pod network is unknown to
    /// the agent, so DNS listens on the node IP, which pods reach through
    /// their default route.
    NodeIp(IpAddr),
}

/// The gateway address of the in-process runtime's bridge, creating the
/// bridge with it if no sandbox has yet, so that DNS can bind before the
/// first pod. This is the runtime's own set-up call (idempotent).
pub async fn ensure_pod_gateway(
    config: &Config,
    bridge: &str,
    pod_cidr: &str,
) -> Result<Ipv4Addr, KubeProxyError> {
    let cri_config =
        runtime_service::cri_config(config, pod_cidr).map_err(KubeProxyError::PodCidr)?;
    let gateway = cri_config.gateway();
    let handle = cri::network::netlink::host_handle().map_err(KubeProxyError::Bridge)?;
    cri::network::netlink::ensure_bridge(
        &handle,
        bridge,
        gateway,
        cri_config.pod_cidr.prefix_len(),
    )
    .await
    .map_err(KubeProxyError::Bridge)?;
    Ok(gateway)
}

/// Whether `addr` is free for the DNS server (UDP and TCP), so that a port
/// taken by a host resolver costs only DNS and not Service routing.
fn dns_port_free(addr: SocketAddr) -> bool {
    let udp = std::net::UdpSocket::bind(addr);
    let tcp = std::net::TcpListener::bind(addr);
    match (udp, tcp) {
        (Ok(_), Ok(_)) => true,
        (Err(err), _) | (_, Err(err)) => {
            tracing::error!(%addr, %err, "cluster DNS not served: its address is taken");
            false
        }
    }
}

/// The proxy's configuration; DNS on `dns_ip` behind the first
/// `--cluster-dns` address when both are IPv4.
pub fn proxy_config(
    config: &Config,
    proxy: &KubeProxyConfig,
    dns_ip: Option<Ipv4Addr>,
) -> ProxyConfig {
    let cluster_ip = match config.cluster_dns.first() {
        Some(IpAddr::V4(ip)) => Some(*ip),
        _ => None,
    };
    let dns = match (dns_ip, cluster_ip) {
        (Some(ip), Some(cluster_ip)) => Some(DnsConfig {
            bind_address: SocketAddr::from((ip, DNS_PORT)),
            cluster_domain: config.cluster_domain.clone(),
            upstreams: Vec::new(),
            cluster_ip: Some(cluster_ip),
        }),
        _ => None,
    };
    ProxyConfig {
        rules: RulesConfig {
            table: proxy.nft_table.clone(),
            node_name: config.node_name.clone(),
            cluster_cidr: Some(proxy.cluster_cidr),
            nodeport_addresses: proxy.nodeport_addresses.clone(),
            ..RulesConfig::default()
        },
        metrics_bind_address: proxy.metrics_bind_address,
        healthz_bind_address: proxy.healthz_bind_address,
        dns,
        ..ProxyConfig::new(config.node_name.clone())
    }
}

async fn dns_ip(config: &Config, host: &DnsHost) -> Option<Ipv4Addr> {
    let ip = match host {
        DnsHost::PodBridge { bridge, pod_cidr } => {
            match ensure_pod_gateway(config, bridge, pod_cidr).await {
                Ok(ip) => ip,
                Err(err) => {
                    tracing::error!(error = %err, source = ?std::error::Error::source(&err), "cluster DNS not served");
                    return None;
                }
            }
        }
        DnsHost::NodeIp(IpAddr::V4(ip)) => *ip,
        DnsHost::NodeIp(ip) => {
            tracing::warn!(node_ip = %ip, "cluster DNS not served: it needs an IPv4 node address");
            return None;
        }
    };
    dns_port_free(SocketAddr::from((ip, DNS_PORT))).then_some(ip)
}

/// Runs the proxy (and DNS) until `shutdown`; a failed proxy is restarted
/// with back-off and never stops the agent.
pub async fn run(
    config: &Config,
    proxy: &KubeProxyConfig,
    client: kube::Client,
    host: DnsHost,
    shutdown: CancellationToken,
) {
    let dns_ip = if config.cluster_dns.is_empty() {
        None
    } else {
        dns_ip(config, &host).await
    };
    let proxy_config = proxy_config(config, proxy, dns_ip);
    tracing::info!(
        table = %proxy.nft_table,
        cluster_cidr = %proxy.cluster_cidr,
        dns = ?proxy_config.dns.as_ref().map(|d| d.bind_address),
        "starting the service proxy"
    );
    let mut delay = RESTART_MIN;
    loop {
        // netproxy cancels the token it is given when one of its servers
        // fails; a child token keeps that from stopping the whole agent.
        let token = shutdown.child_token();
        let result = netproxy::run(client.clone(), proxy_config.clone(), token).await;
        if shutdown.is_cancelled() {
            break;
        }
        match result {
            Ok(()) => tracing::warn!("service proxy stopped; restarting"),
            Err(err) => {
                tracing::error!(error = %err, source = ?std::error::Error::source(&err), "service proxy failed; restarting")
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(RESTART_MAX);
    }
    tracing::info!("service proxy stopped");
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::config::AgentFlags;

    fn config(args: &[&str]) -> Config {
        let mut argv = vec!["r8s-agent"];
        argv.extend_from_slice(args);
        Config::from_flags_with_hostname(AgentFlags::try_parse_from(argv).unwrap(), "node-a")
            .unwrap()
    }

    #[test]
    fn dns_listens_on_the_given_ip_behind_the_first_cluster_dns_address() {
        let c = config(&[
            "--cluster-dns",
            "10.96.7.10,10.96.7.11",
            "--cluster-domain",
            "example.test",
            "--nft-table",
            "r8stest",
        ]);
        let proxy = c.kube_proxy.clone().unwrap();
        let p = proxy_config(&c, &proxy, Some(Ipv4Addr::new(10, 42, 0, 1)));
        let dns = p.dns.unwrap();
        assert_eq!(dns.bind_address, "10.42.0.1:53".parse().unwrap());
        assert_eq!(dns.cluster_ip, Some(Ipv4Addr::new(10, 96, 7, 10)));
        assert_eq!(dns.cluster_domain, "example.test");
        assert_eq!(p.rules.table, "r8stest");
        assert_eq!(p.rules.node_name, "node-a");
        assert_eq!(p.rules.cluster_cidr, Some("10.42.0.0/16".parse().unwrap()));
        assert_eq!(
            p.metrics_bind_address,
            Some("127.0.0.1:10249".parse().unwrap())
        );
    }

    #[test]
    fn no_dns_without_an_address_or_an_ipv4_cluster_dns() {
        let c = config(&[]);
        let proxy = c.kube_proxy.clone().unwrap();
        assert!(proxy_config(&c, &proxy, None).dns.is_none());
        let c6 = config(&["--cluster-dns", "fd00::10"]);
        assert!(
            proxy_config(&c6, &proxy, Some(Ipv4Addr::new(10, 42, 0, 1)))
                .dns
                .is_none()
        );
    }
}
