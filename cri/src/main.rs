//! r8s-cri command line: parses flags, installs tracing, runs the CRI server until SIGINT/SIGTERM.
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use tokio_util::sync::CancellationToken;

/// r8s-cri: a CRI v1 (runtime.v1) container runtime on youki's libcontainer.
///
/// Flag names follow containerd's CRI plugin where the concept is the same.
#[derive(Parser, Debug)]
#[command(name = "r8s-cri", version)]
struct Args {
    /// Unix socket to serve the CRI gRPC API on.
    #[arg(
        long,
        env = "R8S_CRI_LISTEN",
        default_value = "/run/r8s/cri.sock",
        help_heading = "Server"
    )]
    listen: PathBuf,
    /// Directory for persistent data (images, snapshots, records, IPAM).
    #[arg(
        long,
        env = "R8S_CRI_ROOT",
        default_value = "/var/lib/r8s/cri",
        help_heading = "Storage"
    )]
    root: PathBuf,
    /// Directory for volatile state (container state, mounts, namespaces).
    #[arg(
        long,
        env = "R8S_CRI_STATE",
        default_value = "/run/r8s/cri",
        help_heading = "Storage"
    )]
    state: PathBuf,
    /// cgroup parent for pods that do not name one themselves.
    #[arg(
        long,
        env = "R8S_CRI_CGROUP_PARENT",
        default_value = "/r8s",
        help_heading = "Runtime"
    )]
    cgroup_parent: String,
    /// Registry (host:port) to reach over plain HTTP; repeatable. Loopback registries always are.
    #[arg(
        long = "insecure-registry",
        env = "R8S_CRI_INSECURE_REGISTRY",
        value_delimiter = ',',
        help_heading = "Images"
    )]
    insecure_registry: Vec<String>,
    /// CIDR of this node's pod network (see kubelet's --pod-cidr).
    #[arg(
        long,
        env = "R8S_CRI_POD_CIDR",
        default_value = "10.244.0.0/24",
        help_heading = "Network"
    )]
    pod_cidr: ipnet::Ipv4Net,
    /// Name of the node bridge pods are attached to.
    #[arg(
        long,
        env = "R8S_CRI_BRIDGE",
        default_value = "r8s0",
        help_heading = "Network"
    )]
    bridge: String,
    /// Address (ip:port) of the streaming server that exec, attach and
    /// port-forward URLs point at; port 0 picks a free port (see containerd's
    /// stream_server_address / stream_server_port).
    #[arg(
        long = "stream-server-address",
        env = "R8S_CRI_STREAM_SERVER_ADDRESS",
        default_value = cri::config::DEFAULT_STREAMING_ADDRESS,
        help_heading = "Server"
    )]
    stream_server_address: std::net::SocketAddr,
    /// Seconds creating or starting a container may take; a container init
    /// stuck longer is killed and the call fails with DeadlineExceeded (see
    /// kubelet's --runtime-request-timeout, 2m).
    #[arg(
        long = "container-create-timeout",
        env = "R8S_CRI_CONTAINER_CREATE_TIMEOUT",
        default_value_t = 120,
        help_heading = "Runtime"
    )]
    container_create_timeout: u64,
}

fn main() -> ExitCode {
    cri::logging::init(
        tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
    );
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(err = format!("{err:#}"), "r8s-cri failed");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let config = cri::Config {
        listen: args.listen,
        root: args.root,
        state: args.state,
        cgroup_parent: args.cgroup_parent,
        insecure_registries: args.insecure_registry,
        pod_cidr: args.pod_cidr,
        bridge: args.bridge,
        streaming_address: args.stream_server_address,
    };
    cri::container::libct::set_deadline(std::time::Duration::from_secs(
        args.container_create_timeout.max(1),
    ));
    // Must happen before any thread exists so every container init is reparented here.
    cri::become_subreaper().context("set child subreaper")?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("build tokio runtime")?;
    rt.block_on(async move {
        let shutdown = CancellationToken::new();
        let signal_token = shutdown.clone();
        tokio::spawn(async move {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(s) => s,
                    Err(err) => {
                        tracing::error!(?err, "cannot listen for SIGTERM");
                        return;
                    }
                };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            signal_token.cancel();
        });
        cri::serve(config, shutdown).await.context("serve CRI")
    })
}
