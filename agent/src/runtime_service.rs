//! The agent's container runtime: starts r8s-cri in-process (unless
//! `--container-runtime-endpoint` names another CRI socket), connects to it,
//! builds the `kuberuntime::CriRuntime`, and turns CRI `Status` into the
//! node's Ready condition (kubelet's runtime health checks).

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use cri::client::CriClient;
use cri::proto;
use k8s_openapi::api::core::v1::Node;
use kube::{Api, Client};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::kuberuntime::{CriRuntime, CriRuntimeConfig};
use crate::node::NodeHealth;
use crate::pod_worker::dns::{DnsConfigurer, parse_resolv_conf};

/// How often runtime health is checked (kubelet's `runtimeState` sync).
pub const HEALTH_PERIOD: Duration = Duration::from_secs(5);
/// How long the in-process runtime gets to answer after start.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Why the container runtime could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeServiceError {
    #[error("invalid pod CIDR {0:?}")]
    PodCidr(String),
    #[error("failed to connect to the container runtime")]
    Connect(#[source] cri::client::ConnectError),
    #[error("the in-process container runtime did not start")]
    Start(#[source] cri::ServeError),
    #[error("the in-process container runtime did not answer within {0:?}")]
    StartTimeout(Duration),
    #[error("the in-process container runtime stopped during start-up")]
    Stopped,
    #[error("failed to query the container runtime")]
    Runtime(#[source] crate::pod_worker::RuntimeError),
    #[error("failed to query the container runtime version")]
    Version(#[source] tonic::Status),
}

/// A connected runtime.
pub struct RuntimeService {
    pub cri: CriClient,
    pub pod_runtime: CriRuntime,
    /// `<runtime_name>://<runtime_version>` for `nodeInfo.containerRuntimeVersion`.
    pub version: String,
    /// The in-process r8s-cri server task, if any.
    pub server: Option<JoinHandle<()>>,
    /// The in-process runtime's pod network (its bridge gets the first
    /// address); `None` for another runtime.
    pub pod_cidr: Option<String>,
}

/// The in-process r8s-cri configuration from the agent's flags.
pub fn cri_config(config: &Config, pod_cidr: &str) -> Result<cri::Config, RuntimeServiceError> {
    Ok(cri::Config {
        listen: in_process_socket(config),
        root: config.root_dir.join("cri"),
        state: config.run_dir.join("cri"),
        cgroup_parent: config.cgroup_root.clone(),
        insecure_registries: config.insecure_registries.clone(),
        pod_cidr: pod_cidr
            .parse()
            .map_err(|_| RuntimeServiceError::PodCidr(pod_cidr.to_owned()))?,
        bridge: config.pod_bridge.clone(),
        // Streams are reached only through the kubelet API's proxy.
        streaming_address: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
    })
}

/// Process set-up the in-process runtime needs, done before other threads
/// fork children: become the child subreaper so exit codes of container
/// inits (whose libcontainer parent exits) reach r8s-cri.
pub fn prepare_process(config: &Config) -> std::io::Result<()> {
    if config.fake_runtime || config.container_runtime_endpoint.is_some() {
        return Ok(());
    }
    cri::become_subreaper()
}

/// `<run-dir>/cri.sock`.
pub fn in_process_socket(config: &Config) -> PathBuf {
    config.run_dir.join("cri.sock")
}

/// The pod CIDR when neither `--pod-cidr` nor the Node gives one.
pub const DEFAULT_POD_CIDR: &str = "10.42.0.0/24";

/// `--pod-cidr`, else the Node's spec.podCIDR if it is registered with one,
/// else `DEFAULT_POD_CIDR`. The flag wins so that a node keeps its pod
/// network (and its running pods their addresses) across restarts.
async fn pod_cidr(config: &Config, client: &Client) -> String {
    if let Some(cidr) = &config.pod_cidr {
        return cidr.clone();
    }
    let nodes: Api<Node> = Api::all(client.clone());
    match nodes.get_opt(&config.node_name).await {
        Ok(Some(n)) => n
            .spec
            .and_then(|s| s.pod_cidr)
            .filter(|c| !c.is_empty())
            .unwrap_or_else(|| DEFAULT_POD_CIDR.to_owned()),
        _ => DEFAULT_POD_CIDR.to_owned(),
    }
}

async fn start_in_process(
    config: &Config,
    client: &Client,
    shutdown: CancellationToken,
) -> Result<(CriClient, JoinHandle<()>, String), RuntimeServiceError> {
    let cidr = pod_cidr(config, client).await;
    let cri_config = cri_config(config, &cidr)?;
    let socket = cri_config.listen.clone();
    tracing::info!(socket = %socket.display(), pod_cidr = %cidr, bridge = %cri_config.bridge, "starting the in-process CRI runtime");
    let (done_tx, mut done_rx) = tokio::sync::oneshot::channel();
    let server = tokio::spawn(async move {
        let result = cri::serve(cri_config, shutdown).await;
        if let Err(err) = &result {
            tracing::error!(error = %err, "in-process CRI runtime failed");
        }
        let _ = done_tx.send(result);
    });
    let deadline = tokio::time::Instant::now() + START_TIMEOUT;
    loop {
        match done_rx.try_recv() {
            Ok(Err(err)) => return Err(RuntimeServiceError::Start(err)),
            Ok(Ok(())) => return Err(RuntimeServiceError::Stopped),
            Err(_) => {}
        }
        if socket.exists()
            && let Ok(mut c) = cri::client::connect_path(&socket).await
            && c.runtime
                .version(proto::VersionRequest::default())
                .await
                .is_ok()
        {
            return Ok((c, server, cidr));
        }
        if tokio::time::Instant::now() > deadline {
            return Err(RuntimeServiceError::StartTimeout(START_TIMEOUT));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Starts (or connects to) the runtime and builds the pod runtime over it.
pub async fn start(
    config: &Config,
    client: &Client,
    node_ip: IpAddr,
    shutdown: CancellationToken,
) -> Result<RuntimeService, RuntimeServiceError> {
    let (cri, server, pod_cidr) = match &config.container_runtime_endpoint {
        Some(endpoint) => {
            tracing::info!(%endpoint, "using the CRI runtime at the given endpoint");
            (
                cri::client::connect(endpoint)
                    .await
                    .map_err(RuntimeServiceError::Connect)?,
                None,
                None,
            )
        }
        None => {
            let (c, s, cidr) = start_in_process(config, client, shutdown).await?;
            (c, Some(s), Some(cidr))
        }
    };
    let v = cri
        .runtime
        .clone()
        .version(proto::VersionRequest::default())
        .await
        .map_err(RuntimeServiceError::Version)?
        .into_inner();
    let version = format!("{}://{}", v.runtime_name, v.runtime_version);
    tracing::info!(runtime = %version, "container runtime connected");
    let host = parse_resolv_conf(&std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default());
    let pod_runtime = CriRuntime::new(
        cri.clone(),
        client.clone(),
        CriRuntimeConfig {
            node_name: config.node_name.clone(),
            root_dir: config.root_dir.clone(),
            pod_log_dir: config.pod_logs_dir.clone(),
            cgroup_root: config.cgroup_root.clone(),
            dns: DnsConfigurer {
                cluster_dns: config.cluster_dns.clone(),
                cluster_domain: config.cluster_domain.clone(),
                host,
            },
            host_ip: node_ip,
        },
    )
    .await
    .map_err(RuntimeServiceError::Runtime)?;
    Ok(RuntimeService {
        cri,
        pod_runtime,
        version,
        server,
        pod_cidr,
    })
}

/// The node's not-ready errors for a CRI `Status` answer (kubelet's wording).
pub fn health_errors(status: Result<proto::StatusResponse, tonic::Status>) -> Vec<String> {
    let status = match status {
        Ok(s) => s,
        Err(err) => return vec![format!("container runtime is down: {}", err.message())],
    };
    let conditions = status.status.map(|s| s.conditions).unwrap_or_default();
    let find = |kind: &str| conditions.iter().find(|c| c.r#type == kind);
    let mut errors = Vec::new();
    match find("RuntimeReady") {
        Some(c) if c.status => {}
        c => errors.push(format!(
            "container runtime status check may not have completed yet: RuntimeReady=false reason:{} message:{}",
            c.map(|c| c.reason.as_str()).unwrap_or_default(),
            c.map(|c| c.message.as_str()).unwrap_or_default()
        )),
    }
    match find("NetworkReady") {
        Some(c) if c.status => {}
        c => errors.push(format!(
            "container runtime network not ready: NetworkReady=false reason:{} message:{}",
            c.map(|c| c.reason.as_str()).unwrap_or_default(),
            c.map(|c| c.message.as_str()).unwrap_or_default()
        )),
    }
    errors
}

/// Checks runtime health every `HEALTH_PERIOD` and publishes it until
/// `shutdown`.
pub async fn watch_health(
    cri: CriClient,
    health: watch::Sender<NodeHealth>,
    shutdown: CancellationToken,
) {
    let mut rt = cri.runtime;
    loop {
        let status = rt
            .status(proto::StatusRequest::default())
            .await
            .map(tonic::Response::into_inner);
        let errors = health_errors(status);
        if !errors.is_empty() {
            tracing::warn!(?errors, "container runtime not ready");
        }
        health.send_if_modified(|h| {
            let changed = h.not_ready_errors != errors;
            h.not_ready_errors = errors;
            changed
        });
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(HEALTH_PERIOD) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn condition(kind: &str, status: bool) -> proto::RuntimeCondition {
        proto::RuntimeCondition {
            r#type: kind.to_owned(),
            status,
            reason: if status { "" } else { "NoBridge" }.to_owned(),
            message: String::new(),
        }
    }

    #[test]
    fn runtime_conditions_become_not_ready_errors() {
        let ok = proto::StatusResponse {
            status: Some(proto::RuntimeStatus {
                conditions: vec![
                    condition("RuntimeReady", true),
                    condition("NetworkReady", true),
                ],
            }),
            ..proto::StatusResponse::default()
        };
        assert!(health_errors(Ok(ok)).is_empty());
        let net = proto::StatusResponse {
            status: Some(proto::RuntimeStatus {
                conditions: vec![
                    condition("RuntimeReady", true),
                    condition("NetworkReady", false),
                ],
            }),
            ..proto::StatusResponse::default()
        };
        assert_eq!(
            health_errors(Ok(net)),
            ["container runtime network not ready: NetworkReady=false reason:NoBridge message:"]
        );
        assert_eq!(
            health_errors(Err(tonic::Status::unavailable("gone"))),
            ["container runtime is down: gone"]
        );
    }
}
