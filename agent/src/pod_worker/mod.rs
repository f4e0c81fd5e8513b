//! Pod workers: one task per pod UID (`manager`) turns the pod spec into
//! `PodRuntime` calls (`runtime`) and writes the pod status computed by
//! `status`.

pub mod dns;
pub mod manager;
pub mod restart_backoff;
pub mod runtime;
pub mod static_pods;
pub mod static_source;
pub mod status;

pub use manager::{WorkerContext, run_pod_workers, sync_pod};
pub use runtime::{FakeRuntime, ObservedPod, PodRuntime, RuntimeError};
pub use status::{ObservedContainer, ObservedState, StatusInputs, Terminated, generate_pod_status};
