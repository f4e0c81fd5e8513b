//! Node IPAM (kube-controller-manager's range allocator): gives every Node
//! without one a /24 `spec.podCIDR` out of `--cluster-cidr`; the used set
//! is rebuilt from the existing Nodes on start, so it survives restarts.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::net::Ipv4Addr;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::api::{Patch, PatchParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use serde_json::json;
use tokio::task::JoinSet;

use super::ControllerContext;
use super::util::is_not_found;
use crate::config::Ipv4Cidr;

/// kube-controller-manager's default --node-cidr-mask-size for IPv4.
pub const NODE_CIDR_MASK_SIZE: u8 = 24;

/// The /24 subnets of the cluster CIDR, by index.
#[derive(Debug)]
pub struct RangeAllocator {
    cluster: Ipv4Cidr,
    mask: u8,
    used: BTreeSet<u32>,
    by_node: HashMap<String, u32>,
    /// Every index below this one is used: allocation scans from here, so
    /// that a burst of joining nodes does not rescan the used ranges.
    lowest_free: u32,
}

impl RangeAllocator {
    pub fn new(cluster: Ipv4Cidr) -> Self {
        Self {
            cluster,
            mask: NODE_CIDR_MASK_SIZE.max(cluster.prefix),
            used: BTreeSet::new(),
            by_node: HashMap::new(),
            lowest_free: 0,
        }
    }

    fn count(&self) -> u32 {
        1u32 << (self.mask - self.cluster.prefix).min(31)
    }

    fn subnet(&self, index: u32) -> Ipv4Cidr {
        let step = 1u64 << (32 - u32::from(self.mask));
        let base = u64::from(u32::from(self.cluster.network)) + u64::from(index) * step;
        Ipv4Cidr {
            network: Ipv4Addr::from(u32::try_from(base).unwrap_or(0)),
            prefix: self.mask,
        }
    }

    fn index_of(&self, cidr: &str) -> Option<u32> {
        let c = Ipv4Cidr::parse(cidr)?;
        if c.prefix != self.mask || !self.cluster.contains(c.network) {
            return None;
        }
        let offset = u32::from(c.network) - u32::from(self.cluster.network);
        Some(offset >> (32 - u32::from(self.mask)))
    }

    /// Records a node's existing podCIDR as used.
    pub fn occupy(&mut self, node: &str, cidr: &str) {
        if let Some(i) = self.index_of(cidr) {
            self.used.insert(i);
            self.by_node.insert(node.to_string(), i);
        }
    }

    /// Frees a deleted node's range.
    pub fn release(&mut self, node: &str) {
        if let Some(i) = self.by_node.remove(node) {
            self.used.remove(&i);
            self.lowest_free = self.lowest_free.min(i);
        }
    }

    /// The lowest free range for `node`, or `None` when all are used.
    pub fn allocate(&mut self, node: &str) -> Option<Ipv4Cidr> {
        if let Some(i) = self.by_node.get(node) {
            return Some(self.subnet(*i));
        }
        let i = (self.lowest_free..self.count()).find(|i| !self.used.contains(i))?;
        self.lowest_free = i + 1;
        self.used.insert(i);
        self.by_node.insert(node.to_string(), i);
        Some(self.subnet(i))
    }
}

fn pod_cidr(node: &Node) -> Option<&str> {
    node.spec
        .as_ref()
        .and_then(|s| s.pod_cidr.as_deref())
        .filter(|c| !c.is_empty())
}

/// How many podCIDR patches are in flight at once (upstream's
/// `cidrUpdateWorkers`): a burst of joining nodes gets its ranges in
/// parallel instead of one store commit after another.
const CIDR_UPDATE_WORKERS: usize = 30;
/// Attempts at one node's patch before its range is released (upstream's
/// `cidrUpdateRetries`).
const CIDR_UPDATE_RETRIES: u32 = 3;
const CIDR_UPDATE_RETRY_DELAY: std::time::Duration = std::time::Duration::from_millis(500);

/// A node's range on its way to the node's spec.
struct Update {
    node: String,
    cidr: Ipv4Cidr,
    attempt: u32,
}

/// Writes `spec.podCIDR(s)` of one node; waits before a retry.
async fn patch_cidr(api: Api<Node>, update: Update) -> (Update, Result<(), kube::Error>) {
    if update.attempt > 0 {
        tokio::time::sleep(CIDR_UPDATE_RETRY_DELAY).await;
    }
    let cidr = update.cidr.to_string();
    let patch = json!({"spec": {"podCIDR": cidr, "podCIDRs": [cidr]}});
    let res = api
        .patch(&update.node, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(drop);
    (update, res)
}

/// The allocator's state between watch events: which nodes wait for a
/// patch slot and which patches are in flight.
struct Assigner {
    api: Api<Node>,
    alloc: RangeAllocator,
    queued: VecDeque<Update>,
    /// Nodes with a range queued, being written, or written but not yet
    /// seen on the watch, and the range: a watch event that still shows
    /// them without one (the node's own status updates, older than the
    /// patch) is not a reason to patch again.
    pending: HashMap<String, Ipv4Cidr>,
    in_flight: JoinSet<(Update, Result<(), kube::Error>)>,
}

impl Assigner {
    fn new(api: Api<Node>, cluster: Ipv4Cidr) -> Self {
        Self {
            api,
            alloc: RangeAllocator::new(cluster),
            queued: VecDeque::new(),
            pending: HashMap::new(),
            in_flight: JoinSet::new(),
        }
    }

    /// Gives `node` the lowest free range and queues the patch.
    fn assign(&mut self, node: &str) {
        if self.pending.contains_key(node) {
            return;
        }
        let Some(cidr) = self.alloc.allocate(node) else {
            tracing::warn!(node, "no pod CIDR left in --cluster-cidr");
            return;
        };
        self.pending.insert(node.to_string(), cidr);
        self.queued.push_back(Update {
            node: node.to_string(),
            cidr,
            attempt: 0,
        });
        self.start_queued();
    }

    /// The watch shows `node` with range `cidr`.
    fn seen(&mut self, node: &str, cidr: &str) {
        self.alloc.occupy(node, cidr);
        self.pending.remove(node);
    }

    /// `node` gets no range from here on: it is gone, or its patch failed
    /// for good. Its range is freed and nothing more is written to it (a
    /// patch still in flight for a deleted node fails with 404).
    fn forget(&mut self, node: &str) {
        self.alloc.release(node);
        self.queued.retain(|u| u.node != node);
        self.pending.remove(node);
    }

    fn start_queued(&mut self) {
        while self.in_flight.len() < CIDR_UPDATE_WORKERS
            && let Some(update) = self.queued.pop_front()
        {
            self.in_flight.spawn(patch_cidr(self.api.clone(), update));
        }
    }

    fn finished(&mut self, mut update: Update, res: Result<(), kube::Error>) {
        match res {
            Ok(()) => {
                // Pending until the watch shows the range (`seen`).
                tracing::info!(node = %update.node, cidr = %update.cidr, "assigned pod CIDR");
            }
            Err(err) if update.attempt + 1 < CIDR_UPDATE_RETRIES && !is_not_found(&err) => {
                tracing::warn!(node = %update.node, %err, "failed to assign the pod CIDR; retrying");
                update.attempt += 1;
                self.queued.push_back(update);
            }
            Err(err) => {
                tracing::warn!(node = %update.node, %err, "failed to assign the pod CIDR");
                self.forget(&update.node);
            }
        }
        self.start_queued();
    }
}

async fn run(ctx: ControllerContext, token: tokio_util::sync::CancellationToken) {
    let api: Api<Node> = Api::all(ctx.client.clone());
    let mut state = Assigner::new(api.clone(), ctx.config.cluster_cidr);
    let mut stream = watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut unassigned: Vec<String> = Vec::new();
    // The nodes of the current relist.
    let mut listed: HashSet<String> = HashSet::new();
    let mut synced = false;
    loop {
        let event = tokio::select! {
            () = token.cancelled() => return,
            Some(done) = state.in_flight.join_next() => {
                match done {
                    Ok((update, res)) => state.finished(update, res),
                    Err(err) => tracing::error!(%err, "pod CIDR patch task failed"),
                }
                continue;
            }
            e = stream.next() => e,
        };
        let Some(event) = event else { return };
        match event {
            Ok(Event::Init) => {
                // The relist rebuilds the used set; the ranges still on
                // their way to a node stay taken.
                state.alloc = RangeAllocator::new(ctx.config.cluster_cidr);
                for (node, cidr) in &state.pending {
                    state.alloc.occupy(node, &cidr.to_string());
                }
                unassigned.clear();
                listed.clear();
                synced = false;
            }
            Ok(Event::InitApply(node)) => {
                let name = node.metadata.name.clone().unwrap_or_default();
                listed.insert(name.clone());
                match pod_cidr(&node) {
                    Some(c) => state.seen(&name, c),
                    None => unassigned.push(name),
                }
            }
            Ok(Event::InitDone) => {
                synced = true;
                // Nodes deleted while the watch was down, after their
                // range was given.
                let gone: Vec<String> = state
                    .pending
                    .keys()
                    .filter(|n| !listed.contains(*n))
                    .cloned()
                    .collect();
                for name in gone {
                    state.forget(&name);
                }
                listed.clear();
                for name in std::mem::take(&mut unassigned) {
                    state.assign(&name);
                }
            }
            Ok(Event::Apply(node)) => {
                let name = node.metadata.name.as_deref().unwrap_or("");
                match pod_cidr(&node) {
                    Some(c) => state.seen(name, c),
                    None if synced => state.assign(name),
                    None => unassigned.push(name.to_string()),
                }
            }
            Ok(Event::Delete(node)) => state.forget(node.metadata.name.as_deref().unwrap_or("")),
            Err(err) => tracing::warn!(%err, "node ipam watch failed"),
        }
    }
}

/// Starts the allocator under the controller-manager lease.
pub fn spawn(ctx: &ControllerContext) {
    tokio::spawn(run(ctx.clone(), ctx.shutdown.clone()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocates_lowest_free_24_and_skips_used() {
        let mut a = RangeAllocator::new(Ipv4Cidr::parse("10.42.0.0/16").unwrap());
        a.occupy("old", "10.42.0.0/24");
        assert_eq!(a.allocate("n1").unwrap().to_string(), "10.42.1.0/24");
        assert_eq!(a.allocate("n2").unwrap().to_string(), "10.42.2.0/24");
        assert_eq!(a.allocate("n1").unwrap().to_string(), "10.42.1.0/24");
        a.release("old");
        assert_eq!(a.allocate("n3").unwrap().to_string(), "10.42.0.0/24");
    }

    #[test]
    fn reuses_the_lowest_released_range_then_goes_on_after_the_highest() {
        let mut a = RangeAllocator::new(Ipv4Cidr::parse("10.42.0.0/16").unwrap());
        for i in 0..5 {
            assert_eq!(
                a.allocate(&format!("n{i}")).unwrap().to_string(),
                format!("10.42.{i}.0/24")
            );
        }
        a.occupy("joined-elsewhere", "10.42.5.0/24");
        a.release("n3");
        a.release("n1");
        assert_eq!(a.allocate("x").unwrap().to_string(), "10.42.1.0/24");
        assert_eq!(a.allocate("y").unwrap().to_string(), "10.42.3.0/24");
        assert_eq!(a.allocate("z").unwrap().to_string(), "10.42.6.0/24");
    }

    #[test]
    fn runs_out_when_the_cluster_cidr_is_full() {
        let mut a = RangeAllocator::new(Ipv4Cidr::parse("10.42.0.0/23").unwrap());
        assert!(a.allocate("a").is_some());
        assert!(a.allocate("b").is_some());
        assert!(a.allocate("c").is_none());
    }
}
