//! The Node watcher: follows every Node (kube-rs watcher), and on each change
//! of a Node's pod network (and every minute, to repair drift) computes the
//! desired state and applies it with the [`Programmer`]; it also publishes
//! this node's flannel annotations on its own Node.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::annotations::{self, MacAddr};
use super::desired::{self, Desired, Local, NodeNet, Skip};
use super::netlink::{ProgramError, Programmer, Vtep};
use super::{Backend, FlannelConfig};

/// Re-applied this often even without changes, to repair drift.
const RESYNC: Duration = Duration::from_secs(60);
/// Retried this soon after a failure.
const RETRY: Duration = Duration::from_secs(5);

/// What `run` needs to know about this node.
#[derive(Debug, Clone)]
pub struct Settings {
    pub config: FlannelConfig,
    pub node_name: String,
    pub node_ip: IpAddr,
}

/// Keeps this node's routes to the other nodes' pods until `shutdown`. What
/// it created stays when it stops (as flannel's), so pods keep talking while
/// the agent restarts; the next start removes what is stale.
pub async fn run(client: kube::Client, settings: Settings, shutdown: CancellationToken) {
    let backend = settings.config.backend;
    let node_ip = match settings.node_ip {
        IpAddr::V4(ip) if !ip.is_loopback() => ip,
        ip => {
            tracing::warn!(node_ip = %ip, "no IPv4 node IP: pods cannot reach other nodes' pods");
            return;
        }
    };
    let programmer = match Programmer::connect(settings.config.cluster_cidr) {
        Ok(p) => p,
        Err(err) => {
            tracing::error!(error = %err, "pod network between nodes not programmed");
            return;
        }
    };
    if backend == Backend::None {
        // What an earlier start with another backend left goes.
        if let Err(err) = programmer.clear().await {
            tracing::warn!(error = %err, "failed to remove the pod routes of an earlier backend");
        }
        tracing::info!("flannel backend none: no routes to the other nodes' pods");
        return;
    }
    let mut sync = Sync {
        programmer,
        mac: MacAddr::for_node(&settings.node_name),
        config: settings.config,
        node_name: settings.node_name,
        node_ip,
        skipped: BTreeMap::new(),
    };
    tracing::info!(%backend, node_ip = %node_ip, mac = %sync.mac, "starting the pod network between nodes");
    let api: Api<Node> = Api::all(client);
    let mut events = watcher::watcher(api.clone(), watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut nodes: BTreeMap<String, NodeNet> = BTreeMap::new();
    let mut listing: BTreeMap<String, NodeNet> = BTreeMap::new();
    let mut synced = false;
    let mut dirty = false;
    let mut publish: Option<BTreeMap<String, String>> = None;
    let mut next = Instant::now() + RESYNC;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep_until(next) => dirty = true,
            event = events.next() => match event {
                None => break,
                Some(Err(err)) => tracing::warn!(error = %err, "node watch failed, retrying"),
                Some(Ok(Event::Init)) => listing.clear(),
                Some(Ok(Event::InitApply(node))) => {
                    publish = publish.or_else(|| sync.missing_annotations(&node));
                    if let Some(n) = NodeNet::from_node(&node) {
                        listing.insert(n.name.clone(), n);
                    }
                }
                Some(Ok(Event::InitDone)) => {
                    nodes = std::mem::take(&mut listing);
                    synced = true;
                    dirty = true;
                }
                Some(Ok(Event::Apply(node))) => {
                    publish = sync.missing_annotations(&node).or(publish);
                    if let Some(n) = NodeNet::from_node(&node)
                        && nodes.get(&n.name) != Some(&n)
                    {
                        nodes.insert(n.name.clone(), n);
                        dirty = true;
                    }
                }
                Some(Ok(Event::Delete(node))) => {
                    if let Some(name) = node.metadata.name {
                        dirty |= nodes.remove(&name).is_some();
                    }
                }
            },
        }
        if let Some(a) = &publish {
            match publish_annotations(&api, &sync.node_name, a).await {
                Ok(()) => publish = None,
                Err(err) => {
                    tracing::warn!(node = %sync.node_name, error = %err, "failed to publish flannel annotations")
                }
            }
        }
        if synced && dirty {
            dirty = false;
            next = Instant::now()
                + match sync.once(&nodes).await {
                    Ok(()) => RESYNC,
                    Err(err) => {
                        tracing::warn!(error = %err, source = ?std::error::Error::source(&err), "failed to program the pod network between nodes, retrying");
                        RETRY
                    }
                };
        }
    }
}

/// One programming round's fixed inputs.
struct Sync {
    programmer: Programmer,
    config: FlannelConfig,
    node_name: String,
    node_ip: Ipv4Addr,
    mac: MacAddr,
    /// Why nodes were skipped last time, to log each reason once.
    skipped: BTreeMap<String, Skip>,
}

impl Sync {
    /// Our annotations, if `node` is our Node and lacks them.
    fn missing_annotations(&self, node: &Node) -> Option<BTreeMap<String, String>> {
        if node.metadata.name.as_deref() != Some(self.node_name.as_str()) {
            return None;
        }
        let want = annotations::own(self.config.backend, self.node_ip, self.mac);
        let have = node.metadata.annotations.clone().unwrap_or_default();
        want.iter()
            .any(|(k, v)| have.get(k) != Some(v))
            .then_some(want)
    }

    async fn once(&mut self, nodes: &BTreeMap<String, NodeNet>) -> Result<(), ProgramError> {
        let host = self
            .programmer
            .host_net(self.node_ip, self.config.iface.as_deref())
            .await?;
        let own_pod_cidr = nodes.get(&self.node_name).and_then(|n| n.pod_cidr);
        let local = Local {
            node_name: &self.node_name,
            backend: self.config.backend,
            direct_routing: true,
            cluster_cidr: self.config.cluster_cidr,
            own_pod_cidr,
            host: &host,
        };
        let desired = desired::compute(&local, nodes.values());
        self.log_skipped(&desired);
        let vtep = Vtep {
            mac: self.mac,
            own_pod_cidr,
        };
        self.programmer.apply(&host, &vtep, &desired).await?;
        tracing::debug!(
            routes = desired.routes.len(),
            vxlan = desired.vxlan_device,
            "pod network between nodes in sync"
        );
        Ok(())
    }

    fn log_skipped(&mut self, desired: &Desired) {
        for (node, why) in &desired.skipped {
            if self.skipped.get(node) != Some(why) {
                tracing::warn!(%node, reason = %why, "no route to the pods of node");
            }
        }
        self.skipped.clone_from(&desired.skipped);
    }
}

async fn publish_annotations(
    api: &Api<Node>,
    name: &str,
    annotations: &BTreeMap<String, String>,
) -> Result<(), kube::Error> {
    let patch = serde_json::json!({ "metadata": { "annotations": annotations } });
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    tracing::info!(node = %name, ?annotations, "published flannel annotations");
    Ok(())
}
