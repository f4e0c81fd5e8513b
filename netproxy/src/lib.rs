//! r8s-proxy: watches Services and EndpointSlices and routes them in one nftables table
//! (kube-proxy's nftables mode, KEP-3866), applied in-process through libnftables, and serves
//! cluster DNS.
//!
//! Flow: [`run`] -> `kube_dns` (registers the DNS Service) and `proxier` (reflectors, `changes`
//! tracking which Services changed, debounced sync) -> `model` (Services + EndpointSlices to
//! per-port facts) -> `rules` (ruleset and transactions) -> `nft` (libnftables, crate `r8s-nft`) and
//! `conntrack` (stale UDP flows); `dns` and `dns_server` answer the cluster zone from the same
//! caches.
pub mod changes;
pub mod conntrack;
pub mod dns;
pub mod dns_server;
pub mod kube_dns;
pub mod metrics;
pub mod model;
pub mod nft;
pub mod proxier;
pub mod rules;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use proxier::SyncPeriods;
pub use rules::RulesConfig;

/// Validated configuration of the proxy (kube-proxy's options).
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// What the rules need to know about this node and cluster (`--hostname-override`,
    /// `--cluster-cidr`, `--nodeport-addresses`, `--masquerade-all`).
    pub rules: RulesConfig,
    /// Sync timing (`--sync-period`, `--min-sync-period`).
    pub periods: SyncPeriods,
    /// Where `/metrics` is served (`--metrics-bind-address`); `None` turns it off.
    pub metrics_bind_address: Option<SocketAddr>,
    /// Where `/healthz` is served (`--healthz-bind-address`); `None` turns it off.
    pub healthz_bind_address: Option<SocketAddr>,
    /// Cluster DNS; `None` turns it off.
    pub dns: Option<DnsConfig>,
    /// Network namespace to program (nftables and conntrack), e.g. `/run/netns/NAME`; the
    /// caller's when `None`. The DNS server binds in the caller's namespace.
    pub netns: Option<PathBuf>,
}

impl ProxyConfig {
    /// kube-proxy's defaults for node `node_name`: sync every hour and at most once a second,
    /// metrics on 127.0.0.1:10249, health on 0.0.0.0:10256, no DNS.
    pub fn new(node_name: impl Into<String>) -> Self {
        Self {
            rules: RulesConfig {
                node_name: node_name.into(),
                ..RulesConfig::default()
            },
            periods: SyncPeriods {
                min: Duration::from_secs(1),
                full: Duration::from_secs(3600),
            },
            metrics_bind_address: Some(SocketAddr::from(([127, 0, 0, 1], 10249))),
            healthz_bind_address: Some(SocketAddr::from(([0, 0, 0, 0], 10256))),
            dns: None,
            netns: None,
        }
    }

    /// Serves cluster DNS with these settings.
    pub fn with_dns(mut self, dns: DnsConfig) -> Self {
        self.dns = Some(dns);
        self
    }
}

/// Cluster DNS settings.
#[derive(Debug, Clone)]
pub struct DnsConfig {
    /// Address to serve on, UDP and TCP. When `cluster_ip` is set it must be a specific IPv4
    /// address pods can reach (the node IP or the pod bridge address): it becomes the
    /// endpoint of the `kube-dns` Service.
    pub bind_address: SocketAddr,
    /// The cluster zone, e.g. `cluster.local` (`--cluster-domain`).
    pub cluster_domain: String,
    /// Resolvers for every other name; the nameservers of /etc/resolv.conf when empty.
    pub upstreams: Vec<SocketAddr>,
    /// The cluster DNS ClusterIP (`--cluster-dns`, 10.43.0.10): when set, the proxy creates
    /// `kube-system/kube-dns` with it if missing and registers `bind_address` as this node's
    /// endpoint, so that pods reach this server at `<cluster_ip>:53`.
    pub cluster_ip: Option<Ipv4Addr>,
}

impl DnsConfig {
    /// DNS on `bind_address` for `cluster.local`, host resolvers upstream, registered behind
    /// 10.43.0.10.
    pub fn new(bind_address: SocketAddr) -> Self {
        Self {
            bind_address,
            cluster_domain: "cluster.local".into(),
            upstreams: Vec::new(),
            cluster_ip: Some(Ipv4Addr::new(10, 43, 0, 10)),
        }
    }
}

/// Errors that stop the proxy.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The table name is not one r8s owns.
    #[error("nftables table {0:?} must start with \"r8s\"")]
    TableName(String),
    /// The DNS bind address cannot be a Service endpoint.
    #[error("dns bind address {0} must be a specific IPv4 address to serve the cluster dns ip")]
    DnsEndpoint(SocketAddr),
    /// libnftables could not be set up.
    #[error("failed to set up nftables")]
    Nft(#[source] nft::NftError),
    /// The conntrack socket could not be opened.
    #[error("failed to set up conntrack")]
    Conntrack(#[source] conntrack::ConntrackError),
    /// A metrics or health server failed.
    #[error("metrics server failed")]
    Metrics(#[source] metrics::MetricsError),
    /// The DNS server failed.
    #[error("dns server failed")]
    Dns(#[source] dns_server::DnsError),
}

/// Removes our nftables table (kube-proxy's `--cleanup`), in the caller's network namespace.
pub fn cleanup(table: &str) -> Result<(), RunError> {
    use nft::Applier;
    if !table.starts_with("r8s") {
        return Err(RunError::TableName(table.to_string()));
    }
    let applier = nft::LibNftables::new().map_err(RunError::Nft)?;
    applier
        .apply(&rules::Ruleset::delete_table_transaction(table))
        .map_err(RunError::Nft)
}

fn kube_dns_endpoint(
    config: &ProxyConfig,
    dns: &DnsConfig,
) -> Result<Option<kube_dns::KubeDns>, RunError> {
    let Some(cluster_ip) = dns.cluster_ip else {
        return Ok(None);
    };
    match dns.bind_address.ip() {
        IpAddr::V4(ip) if !ip.is_unspecified() && dns.bind_address.port() != 0 => {
            Ok(Some(kube_dns::KubeDns {
                cluster_ip,
                node_name: config.rules.node_name.clone(),
                endpoint_ip: ip,
                endpoint_port: dns.bind_address.port(),
            }))
        }
        _ => Err(RunError::DnsEndpoint(dns.bind_address)),
    }
}

/// Registers the DNS Service, retrying with back-off until it works or `shutdown`.
async fn register_kube_dns(
    client: kube::Client,
    dns: kube_dns::KubeDns,
    shutdown: CancellationToken,
) {
    let mut delay = Duration::from_millis(200);
    loop {
        match kube_dns::ensure(&client, &dns).await {
            Ok(()) => return,
            Err(err) => {
                warn!(error = %err, source = ?std::error::Error::source(&err), "failed to register cluster dns; retrying")
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(30));
    }
}

/// Runs the proxy (and cluster DNS when configured) with `client` until `shutdown` is
/// cancelled. This is the whole of `r8s-proxy`, for embedding in the agent.
///
/// The table is left in place on shutdown so that traffic keeps flowing across restarts, as
/// kube-proxy does; [`cleanup`] removes it.
///
/// ```no_run
/// # async fn f(client: kube::Client) -> Result<(), netproxy::RunError> {
/// use netproxy::{DnsConfig, ProxyConfig};
/// let shutdown = tokio_util::sync::CancellationToken::new();
/// let config = ProxyConfig::new("node-1")
///     .with_dns(DnsConfig::new("10.42.0.1:53".parse().unwrap()));
/// netproxy::run(client, config, shutdown).await
/// # }
/// ```
pub async fn run(
    client: kube::Client,
    config: ProxyConfig,
    shutdown: CancellationToken,
) -> Result<(), RunError> {
    if !config.rules.table.starts_with("r8s") {
        return Err(RunError::TableName(config.rules.table));
    }
    let kube_dns = match &config.dns {
        Some(dns) => kube_dns_endpoint(&config, dns)?,
        None => None,
    };
    let applier = Arc::new(
        match &config.netns {
            Some(ns) => nft::LibNftables::in_netns(ns),
            None => nft::LibNftables::new(),
        }
        .map_err(RunError::Nft)?,
    );
    let conntrack = Arc::new(
        conntrack::NetlinkConntrack::new(config.netns.as_deref()).map_err(RunError::Conntrack)?,
    );
    let metrics = Arc::new(metrics::Metrics::new());
    let mut servers = tokio::task::JoinSet::new();
    if let Some(addr) = config.metrics_bind_address {
        let f = metrics::serve_metrics(addr, metrics.clone(), shutdown.clone());
        servers.spawn(async move { f.await.map_err(RunError::Metrics) });
    }
    if let Some(addr) = config.healthz_bind_address {
        let f = metrics::serve_healthz(addr, metrics.clone(), shutdown.clone());
        servers.spawn(async move { f.await.map_err(RunError::Metrics) });
    }
    info!(node = %config.rules.node_name, table = %config.rules.table, "starting proxier");
    let mut syncer =
        proxier::Syncer::new(config.rules.clone(), applier, metrics).with_conntrack(conntrack);
    if let Some(dns) = &config.dns {
        let cache = dns_server::DnsCache::new(&dns.cluster_domain);
        syncer = syncer.with_dns(dns.cluster_domain.clone(), cache.clone());
        let upstreams = if dns.upstreams.is_empty() {
            // Read only: the host's resolv.conf is never written.
            let text = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
            dns_server::upstreams_from_resolv_conf(&text)
        } else {
            dns.upstreams.clone()
        };
        let f = dns_server::serve_dns(dns.bind_address, cache, upstreams, shutdown.clone());
        servers.spawn(async move { f.await.map_err(RunError::Dns) });
    }
    if let Some(kd) = kube_dns {
        let (client, shutdown) = (client.clone(), shutdown.clone());
        servers.spawn(async move {
            register_kube_dns(client, kd, shutdown).await;
            Ok(())
        });
    }
    let proxier = proxier::run_proxier(client, syncer, config.periods, shutdown.clone());
    tokio::pin!(proxier);
    loop {
        tokio::select! {
            _ = &mut proxier => break,
            Some(res) = servers.join_next() => match res {
                Ok(Err(err)) => {
                    shutdown.cancel();
                    return Err(err);
                }
                Ok(Ok(())) => {}
                Err(err) => warn!(%err, "server task failed"),
            },
        }
    }
    while servers.join_next().await.is_some() {}
    Ok(())
}
