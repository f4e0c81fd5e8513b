//! The in-process service proxy's settings (kube-proxy's flags, k3s's
//! `--disable-kube-proxy`), validated from [`AgentFlags`] into a
//! [`KubeProxyConfig`] that `kube_proxy` turns into a `netproxy::ProxyConfig`.

use std::net::SocketAddr;

use netproxy::model::Ipv4Cidr;

use super::{AgentFlags, Result, invalid};

/// What the in-process proxy needs beyond the node's name and DNS settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeProxyConfig {
    /// `--cluster-cidr`: traffic to ClusterIPs from outside it is masqueraded.
    pub cluster_cidr: Ipv4Cidr,
    /// `--nodeport-addresses`; empty means every local address.
    pub nodeport_addresses: Vec<Ipv4Cidr>,
    /// `/metrics`; `None` when the flag is empty.
    pub metrics_bind_address: Option<SocketAddr>,
    /// `/healthz`; `None` when the flag is empty.
    pub healthz_bind_address: Option<SocketAddr>,
    /// The nftables table, `r8s` or `r8s<suffix>`.
    pub nft_table: String,
}

fn bind_address(flag: &'static str, value: &str) -> Result<Option<SocketAddr>> {
    let value = value.trim();
    if value.is_empty() {
        return Ok(None);
    }
    value
        .parse()
        .map(Some)
        .map_err(|_| invalid(flag, value, "expected an address such as 127.0.0.1:10249"))
}

fn cidr(flag: &'static str, value: &str) -> Result<Ipv4Cidr> {
    value
        .trim()
        .parse()
        .map_err(|_| invalid(flag, value, "expected an IPv4 CIDR such as 10.42.0.0/16"))
}

/// `None` when `--disable-kube-proxy` is set.
pub fn from_flags(flags: &AgentFlags) -> Result<Option<KubeProxyConfig>> {
    if flags.disable_kube_proxy {
        return Ok(None);
    }
    if !flags.nft_table.starts_with("r8s") {
        return Err(invalid(
            "nft-table",
            &flags.nft_table,
            "must start with \"r8s\"",
        ));
    }
    let nodeport_addresses = flags
        .nodeport_addresses
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| cidr("nodeport-addresses", s))
        .collect::<Result<_>>()?;
    Ok(Some(KubeProxyConfig {
        cluster_cidr: cidr("cluster-cidr", &flags.cluster_cidr)?,
        nodeport_addresses,
        metrics_bind_address: bind_address(
            "kube-proxy-metrics-bind-address",
            &flags.kube_proxy_metrics_bind_address,
        )?,
        healthz_bind_address: bind_address(
            "kube-proxy-healthz-bind-address",
            &flags.kube_proxy_healthz_bind_address,
        )?,
        nft_table: flags.nft_table.clone(),
    }))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn proxy(args: &[&str]) -> Result<Option<KubeProxyConfig>> {
        let mut argv = vec!["r8s-agent"];
        argv.extend_from_slice(args);
        from_flags(&AgentFlags::try_parse_from(argv).unwrap())
    }

    #[test]
    fn proxy_runs_by_default_with_kube_proxy_defaults() {
        let p = proxy(&[]).unwrap().unwrap();
        assert_eq!(p.cluster_cidr, "10.42.0.0/16".parse().unwrap());
        assert!(p.nodeport_addresses.is_empty());
        assert_eq!(
            p.metrics_bind_address,
            Some("127.0.0.1:10249".parse().unwrap())
        );
        assert_eq!(
            p.healthz_bind_address,
            Some("0.0.0.0:10256".parse().unwrap())
        );
        assert_eq!(p.nft_table, "r8s");
    }

    #[test]
    fn disable_kube_proxy_turns_it_off() {
        assert_eq!(proxy(&["--disable-kube-proxy"]).unwrap(), None);
    }

    #[test]
    fn empty_bind_addresses_turn_servers_off_and_lists_parse() {
        let p = proxy(&[
            "--kube-proxy-metrics-bind-address",
            "",
            "--kube-proxy-healthz-bind-address",
            "127.0.0.1:0",
            "--nodeport-addresses",
            "10.245.3.1/32,192.168.0.0/16",
            "--nft-table",
            "r8se2e",
        ])
        .unwrap()
        .unwrap();
        assert_eq!(p.metrics_bind_address, None);
        assert_eq!(p.healthz_bind_address, Some("127.0.0.1:0".parse().unwrap()));
        assert_eq!(p.nodeport_addresses.len(), 2);
        assert_eq!(p.nft_table, "r8se2e");
    }

    #[test]
    fn foreign_tables_and_bad_cidrs_are_refused() {
        assert_eq!(
            proxy(&["--nft-table", "filter"]).unwrap_err().to_string(),
            "invalid argument \"filter\" for \"--nft-table\" flag: must start with \"r8s\""
        );
        assert!(proxy(&["--cluster-cidr", "10.42.0.0/33"]).is_err());
        assert!(proxy(&["--kube-proxy-metrics-bind-address", "localhost"]).is_err());
    }
}
