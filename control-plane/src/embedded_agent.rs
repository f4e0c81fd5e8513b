//! The node agent inside r8s-server (a single-node cluster by default, as
//! k3s server): started once the API is ready, it talks to this server over
//! the loopback client and runs the pods bound to this host through the
//! in-process CRI runtime. Its settings are the r8s-agent flags taken from
//! their `R8S_*` environment variables (`R8S_ROOT_DIR`, `R8S_RUN_DIR`,
//! `R8S_POD_CIDR`, `R8S_HOSTNAME_OVERRIDE`, ...); `--disable-agent` turns it off.
//! It runs the service proxy and cluster DNS too unless
//! `R8S_DISABLE_KUBE_PROXY=true`; without `R8S_CLUSTER_DNS` its cluster DNS
//! address follows the server's service range (the 10th address, the
//! ClusterIP bootstrap gives `kube-system/kube-dns`): from
//! `R8S_SERVICE_CLUSTER_IP_RANGE` in [`agent_config`], from the server's
//! `Config` (flags too) in [`agent_config_for`], which also passes
//! `--cluster-cidr` on.

use clap::Parser;

use crate::config::{Config, Ipv4Cidr};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Why the embedded agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedAgentError {
    #[error("invalid agent settings")]
    Flags(#[source] clap::Error),
    #[error("invalid agent settings")]
    Config(#[source] agent::config::ConfigError),
    #[error("failed to become a child subreaper")]
    Subreaper(#[source] std::io::Error),
}

/// The agent configuration from the `R8S_*` environment (r8s-agent's flag
/// defaults otherwise).
pub fn agent_config() -> Result<agent::Config, EmbeddedAgentError> {
    let flags = agent::config::AgentFlags::try_parse_from(["r8s-agent"])
        .map_err(EmbeddedAgentError::Flags)?;
    let mut config = agent::Config::from_flags(flags).map_err(EmbeddedAgentError::Config)?;
    let range = env("R8S_SERVICE_CLUSTER_IP_RANGE").and_then(|r| Ipv4Cidr::parse(&r));
    follow_server(&mut config, range.as_ref(), None);
    Ok(config)
}

/// [`agent_config`] for a server configured as `server`, so that its
/// `--service-cluster-ip-range` and `--cluster-cidr` given as flags reach the
/// agent too.
pub fn agent_config_for(server: &Config) -> Result<agent::Config, EmbeddedAgentError> {
    let mut config = agent_config()?;
    follow_server(
        &mut config,
        Some(&server.service_cluster_ip_range),
        Some(&server.cluster_cidr),
    );
    Ok(config)
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// Unless `R8S_CLUSTER_DNS` / `R8S_CLUSTER_CIDR` say otherwise: the cluster
/// DNS address bootstrap gives kube-dns in the service range, and the
/// server's cluster CIDR for the proxy.
fn follow_server(
    config: &mut agent::Config,
    service_range: Option<&Ipv4Cidr>,
    cluster_cidr: Option<&Ipv4Cidr>,
) {
    if env("R8S_CLUSTER_DNS").is_none()
        && let Some(ip) = service_range.and_then(crate::bootstrap::cluster_dns_ip)
    {
        config.cluster_dns = vec![ip.into()];
    }
    if env("R8S_CLUSTER_CIDR").is_none()
        && let (Some(proxy), Some(cidr)) = (config.kube_proxy.as_mut(), cluster_cidr)
        && let Ok(cidr) = cidr.to_string().parse()
    {
        proxy.cluster_cidr = cidr;
    }
}

/// The agent's loopback clients of the server at `server_url`, with
/// kubelet's and kube-proxy's User-Agents, so that managedFields name them
/// as upstream's would (a pod's status is kubelet's).
pub async fn loopback_clients(
    pki: &crate::pki::Pki,
    server_url: &str,
) -> Result<agent::ApiClients, crate::controllers::ClientError> {
    use crate::controllers::loopback_client;
    Ok(agent::ApiClients {
        node: loopback_client(pki, server_url, agent::USER_AGENT).await?,
        network: loopback_client(pki, server_url, agent::KUBE_PROXY_USER_AGENT).await?,
    })
}

/// Starts the agent with `clients` until `shutdown`; the handle ends when
/// the agent has stopped (containers keep running, as with kubelet).
pub fn spawn(
    config: agent::Config,
    clients: agent::ApiClients,
    shutdown: CancellationToken,
) -> Result<JoinHandle<()>, EmbeddedAgentError> {
    agent::runtime_service::prepare_process(&config).map_err(EmbeddedAgentError::Subreaper)?;
    tracing::info!(node = %config.node_name, "starting the embedded node agent");
    Ok(tokio::spawn(async move {
        if let Err(err) = agent::run_with_clients(config, clients, shutdown).await {
            tracing::error!(error = %err, "embedded node agent stopped with an error");
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_come_from_the_agent_flags() {
        let c = agent_config().unwrap();
        assert!(!c.fake_runtime);
        assert_eq!(c.cluster_domain, "cluster.local");
    }

    #[test]
    fn cluster_dns_and_cluster_cidr_follow_the_server() {
        let server = crate::config::ServerFlags::parse_from([
            "r8s-server",
            "--service-cluster-ip-range",
            "10.100.7.0/24",
            "--cluster-cidr",
            "10.200.0.0/16",
        ])
        .into_config()
        .unwrap();
        let c = agent_config_for(&server).unwrap();
        assert_eq!(
            c.cluster_dns,
            vec![std::net::IpAddr::from([10, 100, 7, 10])]
        );
        assert_eq!(
            c.kube_proxy.unwrap().cluster_cidr.to_string(),
            "10.200.0.0/16"
        );
    }
}
