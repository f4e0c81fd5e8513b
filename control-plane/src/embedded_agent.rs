//! The node agent inside r8s-server (a single-node cluster by default, as
//! k3s server): started once the API is ready, it talks to this server over
//! the loopback client and runs the pods bound to this host through the
//! in-process CRI runtime. Its settings are the r8s-agent flags taken from
//! their `R8S_*` environment variables (`R8S_ROOT_DIR`, `R8S_RUN_DIR`,
//! `R8S_POD_CIDR`, `R8S_HOSTNAME_OVERRIDE`, ...); `--disable-agent` turns it off.

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
    agent::Config::from_flags(flags).map_err(EmbeddedAgentError::Config)
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
}
