//! Node-pressure eviction as kubelet's eviction manager: `signals` observed
//! every monitoring period -> `thresholds` met -> `pressure` conditions
//! (node status, `admission`) -> pods over their `local_storage` limits,
//! else node-level `reclaim` (dead containers, then unused images) for
//! disk, else `rank` the pods -> one eviction per round (`manager`),
//! carried out by the pod's worker (`worker`) through the shared `handle`,
//! with kubelet's words (`message`).

pub mod admission;
pub mod handle;
pub mod local_storage;
pub mod manager;
pub mod message;
pub mod pressure;
pub mod rank;
pub mod reclaim;
pub mod signals;
pub mod stats;
pub mod thresholds;
pub mod worker;

pub use handle::{EvictionHandle, Termination, render_metrics};
pub use manager::{EvictionContext, run};
pub use pressure::Pressure;
pub use reclaim::NodeReclaim;
pub use signals::SystemSignals;
pub use stats::NodePodStats;
