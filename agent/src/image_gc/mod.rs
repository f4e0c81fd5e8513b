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
