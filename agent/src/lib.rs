//! r8s-agent, a kubelet-compatible node agent: `config` -> `run` registers the
//! Node (`node`), keeps its status and Lease fresh, and runs pods
//! (`pod_worker`, with `probe` results) with volumes (`volume`) in cgroups
//! sized and named by `qos` and `cm`.

pub mod cm;
pub mod config;
pub mod node;
pub mod pod_worker;
pub mod probe;
pub mod qos;
pub mod quantity;
pub mod server;
pub mod volume;

pub use config::Config;

use std::sync::Arc;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Reported as `containerRuntimeVersion` until the CRI runtime is wired in.
pub const PLACEHOLDER_RUNTIME_VERSION: &str = concat!("r8s://", env!("CARGO_PKG_VERSION"));

/// Why the agent stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("failed to read kubeconfig {path}")]
    Kubeconfig {
        path: std::path::PathBuf,
        #[source]
        source: kube::config::KubeconfigError,
    },
    #[error("failed to load the client configuration")]
    InferConfig(#[source] kube::config::InferConfigError),
    #[error("failed to build the API client")]
    Client(#[source] kube::Error),
}

/// A per-node /24 in 10.42.0.0/16 for the fake runtime, picked from the node
/// name so simulated nodes rarely share pod addresses.
fn fake_pod_ip_base(node_name: &str) -> std::net::Ipv4Addr {
    let third = node_name
        .bytes()
        .fold(0u8, |h, b| h.wrapping_mul(31).wrapping_add(b));
    std::net::Ipv4Addr::new(10, 42, third, 0)
}

async fn client(config: &Config) -> Result<kube::Client, RunError> {
    kube::Client::try_from(kube_config(config).await?).map_err(RunError::Client)
}

async fn kube_config(config: &Config) -> Result<kube::Config, RunError> {
    let kube_config = match &config.kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path).map_err(|source| {
                RunError::Kubeconfig {
                    path: path.clone(),
                    source,
                }
            })?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|source| RunError::Kubeconfig {
                    path: path.clone(),
                    source,
                })?
        }
        None => kube::Config::infer().await.map_err(RunError::InferConfig)?,
    };
    Ok(kube_config)
}

/// Serves the kubelet API; a failure to start is logged, the agent goes on.
async fn kubelet_api(config: &Config, node_ip: std::net::IpAddr, shutdown: CancellationToken) {
    let cluster_ca = kube_config(config).await.ok().and_then(|c| c.root_cert);
    let served = match server::ServerConfig::from_agent(config, node_ip, cluster_ca) {
        Ok(c) => server::serve(c, shutdown).await,
        Err(e) => Err(e),
    };
    if let Err(err) = served {
        tracing::error!(error = %err, source = ?std::error::Error::source(&err), "kubelet API not served");
    }
}

/// Runs the agent until `shutdown` is cancelled: registers the Node, then
/// keeps its status and Lease fresh.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), RunError> {
    let client = client(&config).await?;
    let node_ip = node::detect_node_ip(&config);
    tracing::info!(node = %config.node_name, %node_ip, "starting r8s-agent");
    let ctx = Arc::new(node::NodeContext {
        host: Arc::new(node::SystemHost::new(config.root_dir.clone())),
        config: Arc::new(config),
        node_ip,
        runtime_version: PLACEHOLDER_RUNTIME_VERSION.to_owned(),
    });
    // The health sender is kept for the runtime status checks to come.
    let (_health_tx, health_rx) = watch::channel(node::NodeHealth::default());
    let pods = async {
        if !ctx.config.fake_runtime {
            tracing::warn!(
                "no container runtime is wired in yet: pods bound to this node are not run"
            );
            return;
        }
        tracing::warn!("FAKE runtime: pods are reported Running but no containers run");
        let workers = Arc::new(pod_worker::WorkerContext {
            client: client.clone(),
            runtime: Arc::new(pod_worker::FakeRuntime::new(fake_pod_ip_base(
                &ctx.config.node_name,
            ))),
            host_ips: vec![ctx.node_ip],
        });
        pod_worker::run_pod_workers(workers, &ctx.config.node_name, shutdown.clone()).await;
    };
    tokio::join!(
        node::run_node(client.clone(), ctx.clone(), health_rx, shutdown.clone()),
        pods,
        kubelet_api(&ctx.config, ctx.node_ip, shutdown.clone())
    );
    tracing::info!("r8s-agent stopped");
    Ok(())
}
