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
use super::masquerade;
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
    /// The nftables table for the masquerade of pod traffic leaving the cluster.
    pub masquerade_table: String,
}

/// Keeps this node's routes to the other nodes' pods until `shutdown`. What
/// it created stays when it stops (as flannel's), so pods keep talking while
/// the agent restarts; the next start removes what is stale.
pub async fn run(clients: crate::ApiClients, settings: Settings, shutdown: CancellationToken) {
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
    let nft = r8s_nft::LibNftables::new()
        .inspect_err(|err| tracing::warn!(error = %err, "pod traffic leaving the cluster is not masqueraded"))
        .ok();
    if backend == Backend::None {
        // What an earlier start with another backend left goes.
        if let Err(err) = programmer.clear().await {
            tracing::warn!(error = %err, "failed to remove the pod routes of an earlier backend");
        }
        if let Some(nft) = &nft
            && let Err(err) = masquerade::remove(nft, &settings.masquerade_table)
        {
            tracing::warn!(error = %err, "failed to remove the pod masquerade of an earlier backend");
        }
        tracing::info!("flannel backend none: no routes to the other nodes' pods");
        return;
    }
    let mut sync = Sync {
        programmer,
        nft,
        masquerade_table: settings.masquerade_table,
        mac: MacAddr::for_node(&settings.node_name),
        config: settings.config,
        node_name: settings.node_name,
        node_ip,
        skipped: BTreeMap::new(),
    };
    tracing::info!(%backend, node_ip = %node_ip, mac = %sync.mac, "starting the pod network between nodes");
    // All Nodes are read as the network identity; the node's own
    // annotations are written as the node.
    let own: Api<Node> = Api::all(clients.node);
    let mut events = watcher::watcher(Api::all(clients.network), watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut cache = NodeCache::default();
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
                Some(Ok(event)) => {
                    if let Event::InitApply(node) | Event::Apply(node) = &event
                        && let Some(a) = missing_annotations(node, &sync.node_name, &sync.own_annotations())
                    {
                        publish = Some(a);
                    }
                    dirty |= cache.on_event(event);
                }
            },
        }
        if let Some(a) = &publish {
            match publish_annotations(&own, &sync.node_name, a).await {
                Ok(()) => publish = None,
                Err(err) => {
                    tracing::warn!(node = %sync.node_name, error = %err, "failed to publish flannel annotations")
                }
            }
        }
        if cache.synced && dirty {
            dirty = false;
            next = Instant::now()
                + match sync.once(&cache.nodes).await {
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
    nft: Option<r8s_nft::LibNftables>,
    masquerade_table: String,
    config: FlannelConfig,
    node_name: String,
    node_ip: Ipv4Addr,
    mac: MacAddr,
    /// Why nodes were skipped last time, to log each reason once.
    skipped: BTreeMap<String, Skip>,
}

/// The pod network of every Node, as the watch last listed and updated it.
#[derive(Debug, Default)]
struct NodeCache {
    nodes: BTreeMap<String, NodeNet>,
    /// The list in progress after a (re)start of the watch.
    listing: BTreeMap<String, NodeNet>,
    /// A first list is complete: only then may state be removed.
    synced: bool,
}

impl NodeCache {
    /// Records `event`; true when a Node's pod network may have changed
    /// (status heartbeats alone do not count).
    fn on_event(&mut self, event: Event<Node>) -> bool {
        match event {
            Event::Init => {
                self.listing.clear();
                false
            }
            Event::InitApply(node) => {
                if let Some(n) = NodeNet::from_node(&node) {
                    self.listing.insert(n.name.clone(), n);
                }
                false
            }
            // Nodes deleted while the watch was down are gone from the list.
            Event::InitDone => {
                self.nodes = std::mem::take(&mut self.listing);
                self.synced = true;
                true
            }
            Event::Apply(node) => match NodeNet::from_node(&node) {
                Some(n) if self.nodes.get(&n.name) != Some(&n) => {
                    self.nodes.insert(n.name.clone(), n);
                    true
                }
                _ => false,
            },
            Event::Delete(node) => node
                .metadata
                .name
                .is_some_and(|name| self.nodes.remove(&name).is_some()),
        }
    }
}

/// `want`, if `node` is the Node called `node_name` and lacks some of it.
fn missing_annotations(
    node: &Node,
    node_name: &str,
    want: &BTreeMap<String, String>,
) -> Option<BTreeMap<String, String>> {
    if node.metadata.name.as_deref() != Some(node_name) {
        return None;
    }
    let have = node.metadata.annotations.as_ref();
    want.iter()
        .any(|(k, v)| have.and_then(|h| h.get(k)) != Some(v))
        .then(|| want.clone())
}

impl Sync {
    fn own_annotations(&self) -> BTreeMap<String, String> {
        annotations::own(self.config.backend, self.node_ip, self.mac)
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
            direct_routing: self.config.direct_routing,
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
        if let Some(nft) = &self.nft {
            let script = masquerade::render(
                &self.masquerade_table,
                self.config.cluster_cidr,
                own_pod_cidr,
            );
            nft.run(&script).map_err(ProgramError::Masquerade)?;
        }
        tracing::debug!(
            routes = desired.routes.len(),
            vxlan = desired.vxlan_device,
            "pod network between nodes in sync"
        );
        Ok(())
    }

    fn log_skipped(&mut self, desired: &Desired) {
        for (node, why) in &desired.skipped {
            if self.skipped.get(node) == Some(why) {
                continue;
            }
            match why {
                // Transient, or simulated nodes on this host: not a fault.
                Skip::NoPodCidr | Skip::NoVtepMac | Skip::LocalAddress(_) => {
                    tracing::info!(%node, reason = %why, "no route to the pods of node");
                }
                _ => tracing::warn!(%node, reason = %why, "no route to the pods of node"),
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

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::NodeSpec;
    use kube::api::ObjectMeta;

    use super::*;

    fn node(name: &str, cidr: Option<&str>, annotations: &[(&str, &str)]) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                annotations: Some(
                    annotations
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                        .collect(),
                ),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                pod_cidr: cidr.map(Into::into),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_relist_forgets_nodes_deleted_while_the_watch_was_down() {
        let mut c = NodeCache::default();
        assert!(!c.on_event(Event::Init));
        assert!(!c.on_event(Event::InitApply(node("a", Some("10.42.0.0/24"), &[]))));
        assert!(!c.on_event(Event::InitApply(node("b", Some("10.42.1.0/24"), &[]))));
        assert!(!c.synced, "nothing is removed before the first full list");
        assert!(c.on_event(Event::InitDone));
        assert_eq!(c.nodes.keys().collect::<Vec<_>>(), ["a", "b"]);
        c.on_event(Event::Init);
        c.on_event(Event::InitApply(node("a", Some("10.42.0.0/24"), &[])));
        assert!(c.on_event(Event::InitDone));
        assert_eq!(c.nodes.keys().collect::<Vec<_>>(), ["a"]);
    }

    #[test]
    fn only_pod_network_changes_make_work() {
        let mut c = NodeCache::default();
        c.on_event(Event::InitDone);
        assert!(c.on_event(Event::Apply(node("b", None, &[]))));
        assert!(
            !c.on_event(Event::Apply(node("b", None, &[("x", "y")]))),
            "heartbeat"
        );
        assert!(c.on_event(Event::Apply(node("b", Some("10.42.1.0/24"), &[]))));
        assert!(c.on_event(Event::Delete(node("b", None, &[]))));
        assert!(
            !c.on_event(Event::Delete(node("b", None, &[]))),
            "already gone"
        );
    }

    #[test]
    fn annotations_are_published_on_our_node_only_when_missing() {
        let want = annotations::own(
            Backend::Vxlan,
            Ipv4Addr::new(10, 0, 0, 1),
            MacAddr::for_node("a"),
        );
        let pairs: Vec<(&str, &str)> = want.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(
            missing_annotations(&node("a", None, &[]), "a", &want),
            Some(want.clone())
        );
        assert_eq!(missing_annotations(&node("b", None, &[]), "a", &want), None);
        assert_eq!(
            missing_annotations(&node("a", None, &pairs), "a", &want),
            None
        );
        let stale = [(annotations::PUBLIC_IP, "10.0.0.9")];
        assert!(missing_annotations(&node("a", None, &stale), "a", &want).is_some());
    }
}
