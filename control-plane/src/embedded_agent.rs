//! The node agent inside r8s-server (a single-node cluster by default, as
//! k3s server): started once the API is ready, it talks to this server over
//! the loopback client and runs the pods bound to this host through the
//! in-process CRI runtime. Its settings are the r8s-agent flags taken from
//! their `R8S_*` environment variables (`R8S_ROOT_DIR`, `R8S_RUN_DIR`,
//! `R8S_POD_CIDR`, `R8S_HOSTNAME_OVERRIDE`, ...); `--disable-agent` turns it off.
//! It runs the service proxy and cluster DNS too unless
//! `R8S_DISABLE_KUBE_PROXY=true`; without `R8S_CLUSTER_DNS` its cluster DNS
//! address follows `R8S_SERVICE_CLUSTER_IP_RANGE` (the 10th address, the
//! ClusterIP bootstrap gives `kube-system/kube-dns`), and `R8S_CLUSTER_CIDR`
//! is read by both the server and the agent.

use clap::Parser;
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
    let env = |name| std::env::var(name).ok().filter(|v: &String| !v.is_empty());
    if env("R8S_CLUSTER_DNS").is_none()
        && let Some(ip) = env("R8S_SERVICE_CLUSTER_IP_RANGE").and_then(|r| cluster_dns_for(&r))
    {
        config.cluster_dns = vec![ip.into()];
    }
    Ok(config)
}

/// The cluster DNS address bootstrap gives kube-dns in this service range.
fn cluster_dns_for(service_range: &str) -> Option<std::net::Ipv4Addr> {
    crate::config::Ipv4Cidr::parse(service_range)
        .as_ref()
        .and_then(crate::bootstrap::cluster_dns_ip)
}

/// Starts the agent with `client` until `shutdown`; the handle ends when
/// the agent has stopped (containers keep running, as with kubelet).
pub fn spawn(
    config: agent::Config,
    client: kube::Client,
    shutdown: CancellationToken,
) -> Result<JoinHandle<()>, EmbeddedAgentError> {
    agent::runtime_service::prepare_process(&config).map_err(EmbeddedAgentError::Subreaper)?;
    tracing::info!(node = %config.node_name, "starting the embedded node agent");
    Ok(tokio::spawn(async move {
        if let Err(err) = agent::run_with_client(config, client, shutdown).await {
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
    fn cluster_dns_follows_the_service_range() {
        assert_eq!(
            cluster_dns_for("10.100.7.0/24"),
            Some(std::net::Ipv4Addr::new(10, 100, 7, 10))
        );
        assert_eq!(cluster_dns_for("nonsense"), None);
    }
}
