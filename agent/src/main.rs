//! r8s-agent command line: parse flags, set up tracing, validate the config
//! and run the agent until SIGINT/SIGTERM.
use std::process::ExitCode;

use agent::config::{AgentFlags, Config};
use anyhow::Context;
use clap::Parser;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let flags = AgentFlags::parse();
    cri::logging::init(
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    );
    match real_main(flags) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = format!("{err:#}"), "r8s-agent failed");
            ExitCode::FAILURE
        }
    }
}

fn real_main(flags: AgentFlags) -> anyhow::Result<()> {
    let config = Config::from_flags(flags).context("invalid flags")?;
    agent::runtime_service::prepare_process(&config)
        .context("failed to become a child subreaper")?;
    let runtime = tokio::runtime::Runtime::new().context("failed to start the tokio runtime")?;
    runtime.block_on(async {
        let shutdown = CancellationToken::new();
        let signals = shutdown.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("shutting down");
            signals.cancel();
        });
        agent::run(config, shutdown).await.context("agent stopped")
    })
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        // Without a SIGTERM handler, SIGINT still stops the agent.
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
