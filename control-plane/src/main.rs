//! r8s-server command line: parses flags, sets up logging, runs the server
//! until SIGTERM or SIGINT.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use control_plane::ServerFlags;
use tokio_util::sync::CancellationToken;

fn main() -> ExitCode {
    if std::env::args().nth(1).as_deref() == Some("token") {
        return token_main();
    }
    let flags = ServerFlags::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(flags.log_filter())
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    cri::logging::init(filter);
    match run(flags) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err:#}");
            eprintln!("r8s-server: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// `r8s-server token ...` (kubeadm token): a client of the running server.
fn token_main() -> ExitCode {
    let flags = control_plane::token_command::TokenFlags::parse_from(
        std::iter::once("r8s-server token".to_owned()).chain(std::env::args().skip(2)),
    );
    let result = tokio::runtime::Runtime::new()
        .context("failed to start the tokio runtime")
        .and_then(|rt| {
            rt.block_on(control_plane::token_command::run(flags))
                .map_err(anyhow::Error::from)
        });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("r8s-server token: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(flags: ServerFlags) -> anyhow::Result<()> {
    if flags.disable_agent {
        tracing::info!("--disable-agent: no node agent in this process");
    }
    let config = flags.into_config().context("invalid flags")?;
    let runtime = tokio::runtime::Runtime::new().context("failed to start the tokio runtime")?;
    runtime.block_on(async move {
        let shutdown = CancellationToken::new();
        let signals = shutdown.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("shutting down");
            signals.cancel();
        });
        control_plane::run(config, shutdown)
            .await
            .context("r8s-server failed")
    })
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
