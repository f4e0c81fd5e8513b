//! Image garbage collection as kubelet's ImageGCManager: the `manager`
//! runs a round every `--image-gc-period` over the runtime's images
//! (through CRI, `cri`), remembers when each was first seen and last used
//! (`records`), removes unused images past `--image-maximum-gc-age` and,
//! over `--image-gc-high-threshold`, least recently used ones down to
//! `--image-gc-low-threshold`; shortfalls and failures become Node events
//! and removals count in `kubelet_image_garbage_collected_total` (`events`).

pub mod cri;
pub mod events;
pub mod manager;
pub mod records;

pub use cri::CriImages;
pub use events::{GcCounts, NodeEventRecorder, NodeEvents, render_metrics};
pub use manager::{ImageGcError, ImageRuntime, Manager, run};

use std::sync::Arc;

/// The eviction manager's node-level reclaim for disk: kubelet's
/// `DeleteUnusedImages`, on the manager the GC loop also uses.
pub struct DiskReclaim<R: ImageRuntime>(pub Arc<tokio::sync::Mutex<Manager<R>>>);

#[async_trait::async_trait]
impl<R: ImageRuntime + Send + 'static> crate::eviction::NodeReclaim for DiskReclaim<R> {
    async fn reclaim_disk(&self) {
        let deleted = self
            .0
            .lock()
            .await
            .delete_unused_images(std::time::Instant::now())
            .await;
        match deleted {
            Ok(bytes) => {
                tracing::info!(freed_bytes = bytes, "deleted unused images to reclaim disk")
            }
            Err(err) => {
                tracing::warn!(error = %err, source = ?std::error::Error::source(&err), "failed to delete unused images to reclaim disk")
            }
        }
    }
}
