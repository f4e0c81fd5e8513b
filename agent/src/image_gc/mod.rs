//! Image garbage collection as kubelet's ImageGCManager: the `manager`
//! runs a round every `--image-gc-period` over the runtime's images
//! (through CRI, `cri`), remembers when each was first seen and last used
//! (`records`), removes unused images past `--image-maximum-gc-age` and,
//! over `--image-gc-high-threshold`, least recently used ones down to
//! `--image-gc-low-threshold`; shortfalls and failures become Node events
//! and removals count in `kubelet_image_garbage_collected_total` (`events`).
//! For the eviction manager, `DiskReclaim` deletes dead containers and then
//! unused images.

pub mod cri;
pub mod events;
pub mod manager;
pub mod records;

pub use cri::CriImages;
pub use events::{GcCounts, NodeEventRecorder, NodeEvents, render_metrics};
pub use manager::{ImageGcError, ImageRuntime, Manager, run};

use std::sync::Arc;

use crate::kuberuntime::gc::{self, PodStates};

/// The eviction manager's node-level reclaim for disk, in kubelet's order:
/// `DeleteAllUnusedContainers` (dead containers through the same CRI
/// runtime), then `DeleteUnusedImages` on the manager the GC loop also
/// uses, so images that only dead containers used go in the same round.
pub struct DiskReclaim(pub Arc<tokio::sync::Mutex<Manager<CriImages>>>);

#[async_trait::async_trait]
impl crate::eviction::NodeReclaim for DiskReclaim {
    async fn reclaim_disk(&self, pods: &PodStates) {
        let mut images = self.0.lock().await;
        match gc::delete_all_unused_containers(&images.runtime().cri, pods).await {
            Ok(removed) if removed == gc::Removed::default() => {
                tracing::debug!("no unused containers to delete")
            }
            Ok(removed) => {
                tracing::info!(
                    containers = removed.containers,
                    sandboxes = removed.sandboxes,
                    "deleted unused containers to reclaim disk"
                )
            }
            Err(err) => {
                tracing::warn!(error = %err, source = ?std::error::Error::source(&err), "failed to delete unused containers to reclaim disk")
            }
        }
        let deleted = images.delete_unused_images(std::time::Instant::now()).await;
        match deleted {
            Ok(0) => tracing::debug!("no unused images to delete"),
            Ok(bytes) => {
                tracing::info!(freed_bytes = bytes, "deleted unused images to reclaim disk")
            }
            Err(err) => {
                tracing::warn!(error = %err, source = ?std::error::Error::source(&err), "failed to delete unused images to reclaim disk")
            }
        }
    }
}
