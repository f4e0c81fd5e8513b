//! Node-level reclaim before evicting pods (kubelet's
//! `reclaimNodeLevelResources`): for a disk signal, dead containers (and
//! the sandboxes they leave empty) are deleted first, then unused images
//! (which the dead containers may have been the last to use), and no pod is
//! evicted when that brought every threshold back under its minimum reclaim.

use crate::config::Signal;
use crate::kuberuntime::gc::PodStates;

use super::rank::starved_resource;

/// What can free disk space on the node without touching running pods.
#[async_trait::async_trait]
pub trait NodeReclaim: Send + Sync {
    /// Frees what it can; `pods` says which pods still run. Errors are
    /// logged, not returned (the eviction goes on regardless, as kubelet's).
    async fn reclaim_disk(&self, pods: &PodStates);
}

/// Whether node-level reclaim applies to `signal` (kubelet's
/// `signalToNodeReclaimFuncs` has entries for the disk signals only).
pub fn reclaims(signal: Signal) -> bool {
    matches!(starved_resource(signal), "ephemeral-storage" | "inodes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_disk_signals_reclaim_at_node_level() {
        assert!(reclaims(Signal::NodeFsAvailable));
        assert!(reclaims(Signal::ImageFsInodesFree));
        assert!(!reclaims(Signal::MemoryAvailable));
        assert!(!reclaims(Signal::PidAvailable));
    }
}
