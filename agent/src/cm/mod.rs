//! Container manager naming and sizing (kubelet's `pkg/kubelet/cm`): which
//! cgroup a pod lives in and what cpu/memory settings it gets. No cgroup
//! writes here; the runtime applies them.

pub mod names;
pub mod resources;

pub use names::{CgroupName, pod_cgroup_name, qos_cgroup_name};
pub use resources::{ResourceConfig, resource_config_for_pod};
