//! r8s-proxy: watches Services and EndpointSlices and routes them in one nftables table
//! (kube-proxy's nftables mode, KEP-3866), applied in-process through libnftables.
//!
//! Flow: `proxier` (reflectors, debounced sync) -> `model` (Services + EndpointSlices to
//! per-port facts) -> `rules` (ruleset and transactions) -> `nft` (libnftables via `sys`).
pub mod dns;
pub mod dns_server;
pub mod metrics;
pub mod model;
pub mod nft;
pub mod proxier;
pub mod rules;
pub mod sys;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use proxier::SyncPeriods;
pub use rules::RulesConfig;

/// Validated configuration of the proxy.
#[derive(Debug, Clone)]
pub struct Config {
    /// Kubeconfig to reach the API server; in-cluster or `$KUBECONFIG` when unset.
    pub kubeconfig: Option<PathBuf>,
    /// What the rules need to know about this node and cluster.
    pub rules: RulesConfig,
    /// Sync timing.
    pub periods: SyncPeriods,
    /// Where `/metrics` is served; `None` turns it off.
    pub metrics_bind_address: Option<SocketAddr>,
    /// Where `/healthz` is served; `None` turns it off.
    pub healthz_bind_address: Option<SocketAddr>,
    /// Cluster DNS; `None` turns it off.
    pub dns: Option<DnsConfig>,
}

/// Cluster DNS settings.
#[derive(Debug, Clone)]
pub struct DnsConfig {
    /// UDP address to serve on.
    pub bind_address: SocketAddr,
    /// The cluster zone, e.g. `cluster.local`.
    pub cluster_domain: String,
    /// Resolvers for every other name; from /etc/resolv.conf when empty.
    pub upstreams: Vec<SocketAddr>,
}

/// Errors that stop the proxy.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The table name is not one r8s owns.
    #[error("nftables table {0:?} must start with \"r8s\"")]
    TableName(String),
    /// Reading the kubeconfig failed.
    #[error("failed to load kubeconfig")]
    Kubeconfig(#[source] kube::config::KubeconfigError),
    /// Inferring the client configuration failed.
    #[error("failed to infer kube client config")]
    InferConfig(#[source] kube::config::InferConfigError),
    /// Building the client failed.
    #[error("failed to create kube client")]
    Client(#[source] kube::Error),
    /// libnftables could not be set up.
    #[error("failed to set up nftables")]
    Nft(#[source] nft::NftError),
    /// A metrics or health server failed.
    #[error("metrics server failed")]
    Metrics(#[source] metrics::MetricsError),
    /// The DNS server failed.
    #[error("dns server failed")]
    Dns(#[source] dns_server::DnsError),
}

async fn client(config: &Config) -> Result<kube::Client, ProxyError> {
    let cfg = match &config.kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path).map_err(ProxyError::Kubeconfig)?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(ProxyError::Kubeconfig)?
        }
        None => kube::Config::infer()
            .await
            .map_err(ProxyError::InferConfig)?,
    };
    kube::Client::try_from(cfg).map_err(ProxyError::Client)
}

/// Removes our nftables table (kube-proxy's `--cleanup`), in the caller's network namespace.
pub fn cleanup(table: &str) -> Result<(), ProxyError> {
    use nft::Applier;
    if !table.starts_with("r8s") {
        return Err(ProxyError::TableName(table.to_string()));
    }
    let applier = nft::LibNftables::new().map_err(ProxyError::Nft)?;
    applier
        .apply(&rules::Ruleset::delete_table_transaction(table))
        .map_err(ProxyError::Nft)
}

/// Runs the proxy until `shutdown` is cancelled: connects to the API server, then [`run_with_client`].
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), ProxyError> {
    let client = client(&config).await?;
    run_with_client(client, config, shutdown).await
}

/// Runs the proxy with an existing client (for embedding in the agent). The table is left in
/// place on shutdown so that traffic keeps flowing across restarts, as kube-proxy does.
pub async fn run_with_client(
    client: kube::Client,
    config: Config,
    shutdown: CancellationToken,
) -> Result<(), ProxyError> {
    if !config.rules.table.starts_with("r8s") {
        return Err(ProxyError::TableName(config.rules.table));
    }
    let applier = Arc::new(nft::LibNftables::new().map_err(ProxyError::Nft)?);
    let metrics = Arc::new(metrics::Metrics::new());
    let mut servers = tokio::task::JoinSet::new();
    if let Some(addr) = config.metrics_bind_address {
        let f = metrics::serve_metrics(addr, metrics.clone(), shutdown.clone());
        servers.spawn(async move { f.await.map_err(ProxyError::Metrics) });
    }
    if let Some(addr) = config.healthz_bind_address {
        let f = metrics::serve_healthz(addr, metrics.clone(), shutdown.clone());
        servers.spawn(async move { f.await.map_err(ProxyError::Metrics) });
    }
    info!(node = %config.rules.node_name, table = %config.rules.table, "starting proxier");
    let mut syncer = proxier::Syncer::new(config.rules.clone(), applier, metrics);
    if let Some(dns) = &config.dns {
        let cache = dns_server::DnsCache::default();
        syncer = syncer.with_dns(dns.cluster_domain.clone(), cache.clone());
        let upstreams = if dns.upstreams.is_empty() {
            let text = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
            dns_server::upstreams_from_resolv_conf(&text)
        } else {
            dns.upstreams.clone()
        };
        let f = dns_server::serve_dns(dns.bind_address, cache, upstreams, shutdown.clone());
        servers.spawn(async move { f.await.map_err(ProxyError::Dns) });
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
                Err(err) => warn!(%err, "http server task failed"),
            },
        }
    }
    while servers.join_next().await.is_some() {}
    Ok(())
}
