//! Node IPAM (kube-controller-manager's range allocator): gives every Node
//! without one a /24 `spec.podCIDR` out of `--cluster-cidr`; the used set
//! is rebuilt from the existing Nodes on start, so it survives restarts.

use std::collections::{BTreeSet, HashMap};
use std::net::Ipv4Addr;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::api::{Patch, PatchParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use serde_json::json;

use super::ControllerContext;
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
}

impl RangeAllocator {
    pub fn new(cluster: Ipv4Cidr) -> Self {
        Self {
            cluster,
            mask: NODE_CIDR_MASK_SIZE.max(cluster.prefix),
            used: BTreeSet::new(),
            by_node: HashMap::new(),
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
        }
    }

    /// The lowest free range for `node`, or `None` when all are used.
    pub fn allocate(&mut self, node: &str) -> Option<Ipv4Cidr> {
        if let Some(i) = self.by_node.get(node) {
            return Some(self.subnet(*i));
        }
        let i = (0..self.count()).find(|i| !self.used.contains(i))?;
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

async fn assign(api: &Api<Node>, alloc: &mut RangeAllocator, node: &Node) {
    let name = node.metadata.name.clone().unwrap_or_default();
    let Some(cidr) = alloc.allocate(&name) else {
        tracing::warn!(node = %name, "no pod CIDR left in --cluster-cidr");
        return;
    };
    let patch = json!({"spec": {"podCIDR": cidr.to_string(), "podCIDRs": [cidr.to_string()]}});
    match api
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => tracing::info!(node = %name, cidr = %cidr, "assigned pod CIDR"),
        Err(err) => {
            alloc.release(&name);
            tracing::warn!(node = %name, %err, "failed to assign the pod CIDR");
        }
    }
}

async fn run(ctx: ControllerContext, token: tokio_util::sync::CancellationToken) {
    let api: Api<Node> = Api::all(ctx.client.clone());
    let mut alloc = RangeAllocator::new(ctx.config.cluster_cidr);
    let mut stream = watcher::watcher(api.clone(), watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut pending: Vec<Node> = Vec::new();
    let mut synced = false;
    loop {
        let event = tokio::select! {
            () = token.cancelled() => return,
            e = stream.next() => e,
        };
        let Some(event) = event else { return };
        match event {
            Ok(Event::Init) => {
                alloc = RangeAllocator::new(ctx.config.cluster_cidr);
                synced = false;
            }
            Ok(Event::InitApply(node)) => match pod_cidr(&node) {
                Some(c) => alloc.occupy(node.metadata.name.as_deref().unwrap_or(""), c),
                None => pending.push(node),
            },
            Ok(Event::InitDone) => {
                synced = true;
                for node in std::mem::take(&mut pending) {
                    assign(&api, &mut alloc, &node).await;
                }
            }
            Ok(Event::Apply(node)) => match pod_cidr(&node) {
                Some(c) => alloc.occupy(node.metadata.name.as_deref().unwrap_or(""), c),
                None if synced => assign(&api, &mut alloc, &node).await,
                None => pending.push(node),
            },
            Ok(Event::Delete(node)) => alloc.release(node.metadata.name.as_deref().unwrap_or("")),
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
    fn runs_out_when_the_cluster_cidr_is_full() {
        let mut a = RangeAllocator::new(Ipv4Cidr::parse("10.42.0.0/23").unwrap());
        assert!(a.allocate("a").is_some());
        assert!(a.allocate("b").is_some());
        assert!(a.allocate("c").is_none());
    }
}
