//! The node: host facts -> Node object -> registration, then the status
//! updater and the Lease heartbeat run until shutdown.

pub mod backoff;
pub mod conditions;
#[cfg(test)]
pub(crate) mod fake_api;
pub mod host;
pub mod lease;
pub mod object;
pub mod register;
pub mod status_updater;

use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::{Api, Client};
use tokio::sync::{Mutex, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use conditions::NodeHealth;
pub use host::{FakeHost, HostFacts, HostInfo, SystemHost};
pub use object::NodeInputs;

use crate::config::Config;
use backoff::{Backoff, run_periodic};

/// Why a node step failed.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("failed to {step}")]
    Api {
        step: &'static str,
        #[source]
        source: kube::Error,
    },
    #[error("failed to read host facts")]
    Host(#[from] host::HostError),
}

/// What the node loops share.
pub struct NodeContext {
    pub config: Arc<Config>,
    pub host: Arc<dyn HostInfo>,
    /// Primary node address (`--node-ip`, or detected).
    pub node_ip: IpAddr,
    /// `<runtime>://<version>` from CRI `Version`.
    pub runtime_version: String,
}

impl NodeContext {
    /// The inputs of the Node builders for the given facts.
    pub fn inputs<'a>(&'a self, facts: &'a HostFacts) -> NodeInputs<'a> {
        NodeInputs {
            config: &self.config,
            facts,
            node_ip: self.node_ip,
            container_runtime_version: &self.runtime_version,
        }
    }
}

/// The address other nodes reach this one on: the first `--node-ip`, else the
/// source address of the default route. A UDP `connect` only picks a route;
/// it sends nothing.
pub fn detect_node_ip(config: &Config) -> IpAddr {
    if let Some(ip) = config.node_ips.first() {
        return *ip;
    }
    std::net::UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| {
            s.connect("192.0.2.1:9")?;
            s.local_addr()
        })
        .map(|a| a.ip())
        .unwrap_or(IpAddr::from([127, 0, 0, 1]))
}

/// Registers the Node (retrying with back-off), then runs the status updater
/// and the Lease heartbeat until `shutdown`.
/// Registers the Node once, before the in-process runtime starts, and waits
/// up to `wait` for the node IPAM controller to give it a `spec.podCIDR`
/// (the pod network is built from it). Best effort: `run_node` registers
/// again and the runtime falls back to its default CIDR.
pub async fn register_for_pod_cidr(
    client: &Client,
    ctx: &NodeContext,
    wait: std::time::Duration,
) -> Option<String> {
    let nodes: Api<Node> = Api::all(client.clone());
    let pod_cidr = |n: Node| n.spec.and_then(|s| s.pod_cidr).filter(|c| !c.is_empty());
    if let Ok(Some(node)) = nodes.get_opt(&ctx.config.node_name).await
        && let Some(cidr) = pod_cidr(node)
    {
        return Some(cidr);
    }
    let facts = ctx.host.facts().ok()?;
    let desired = object::initial_node(
        &ctx.inputs(&facts),
        &NodeHealth::default(),
        &Time(Timestamp::now()),
    );
    if let Err(err) = register::register_node(&nodes, &desired).await {
        tracing::warn!(node = %ctx.config.node_name, error = %err, "unable to register node with API server");
        return None;
    }
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline {
        if let Ok(Some(node)) = nodes.get_opt(&ctx.config.node_name).await
            && let Some(cidr) = pod_cidr(node)
        {
            return Some(cidr);
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    tracing::warn!(node = %ctx.config.node_name, ?wait, "the node got no podCIDR");
    None
}

pub async fn run_node(
    client: Client,
    ctx: Arc<NodeContext>,
    health: watch::Receiver<NodeHealth>,
    shutdown: CancellationToken,
) {
    let nodes: Api<Node> = Api::all(client.clone());
    let mut backoff = Backoff::new(
        std::time::Duration::from_millis(100),
        std::time::Duration::from_secs(7),
    );
    loop {
        let attempt = async {
            let facts = ctx.host.facts()?;
            let now = Time(Timestamp::now());
            let desired = object::initial_node(&ctx.inputs(&facts), &health.borrow(), &now);
            register::register_node(&nodes, &desired).await
        };
        let result = tokio::select! {
            () = shutdown.cancelled() => return,
            r = attempt => r,
        };
        match result {
            Ok(_) => break,
            Err(err) => {
                let delay = backoff.next_delay();
                tracing::warn!(node = %ctx.config.node_name, error = %err, retry_in = ?delay, "unable to register node with API server");
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep_until(Instant::now() + delay) => {}
                }
            }
        }
    }

    // Each loop owns its state; the mutex only hands it to the step in flight.
    let updater = Arc::new(Mutex::new(status_updater::StatusUpdater::new(
        nodes.clone(),
        ctx.clone(),
        health,
    )));
    let status_loop = run_periodic(
        "node status",
        shutdown.clone(),
        ctx.config.node_status_update_frequency,
        Backoff::default(),
        move || {
            let updater = updater.clone();
            async move { updater.lock().await.sync().await }
        },
    );
    let keeper = Arc::new(Mutex::new(lease::LeaseKeeper::new(
        Api::namespaced(client, lease::NODE_LEASE_NAMESPACE),
        nodes,
        ctx.config.node_name.clone(),
    )));
    let lease_loop = run_periodic(
        "node lease",
        shutdown.clone(),
        lease::renew_interval(),
        Backoff::default(),
        move || {
            let keeper = keeper.clone();
            async move { keeper.lock().await.sync().await }
        },
    );
    tokio::join!(status_loop, lease_loop);
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use clap::Parser;

    use super::*;
    use crate::config::AgentFlags;

    #[tokio::test]
    async fn run_node_registers_then_keeps_status_and_lease_until_cancelled() {
        let state = Arc::new(Mutex::new(fake_api::State::default()));
        let client = fake_api::client(state.clone());
        let flags = AgentFlags::try_parse_from([
            "r8s-agent",
            "--hostname-override",
            "node-1",
            "--node-status-update-frequency",
            "10ms",
        ])
        .unwrap();
        let ctx = Arc::new(NodeContext {
            config: Arc::new(Config::from_flags_with_hostname(flags, "x").unwrap()),
            host: Arc::new(FakeHost(HostFacts {
                num_cpus: 1,
                memory_bytes: 1 << 30,
                operating_system: "linux".to_owned(),
                architecture: "amd64".to_owned(),
                ..HostFacts::default()
            })),
            node_ip: "10.0.0.9".parse().unwrap(),
            runtime_version: "r8s://0.1.0".to_owned(),
        });
        let (_tx, rx) = watch::channel(NodeHealth::default());
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(run_node(client, ctx, rx, shutdown.clone()));
        let lease_key = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/node-1";
        let done = async {
            loop {
                {
                    let s = state.lock().unwrap();
                    let status_patched = s
                        .requests
                        .iter()
                        .any(|r| r == "PATCH /api/v1/nodes/node-1/status");
                    if status_patched && s.objects.contains_key(lease_key) {
                        break;
                    }
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        // A generous bound so a stuck loop fails instead of hanging the suite.
        tokio::time::timeout(Duration::from_secs(30), done)
            .await
            .expect("node was not registered with status and lease");
        shutdown.cancel();
        task.await.unwrap();
        let s = state.lock().unwrap();
        assert_eq!(s.requests[0], "POST /api/v1/nodes");
        let node = &s.objects["/api/v1/nodes/node-1"];
        assert_eq!(
            node["metadata"]["labels"]["kubernetes.io/hostname"],
            "node-1"
        );
        assert_eq!(node["status"]["addresses"][0]["address"], "10.0.0.9");
    }
}
