//! What image GC tells the outside: Warning events on the Node object, as
//! kubelet's recorder writes them for its `nodeRef` (`FreeDiskSpaceFailed`,
//! `InvalidDiskCapacity`, `ImageGCFailed`), and the
//! `kubelet_image_garbage_collected_total` counter.

use std::sync::atomic::{AtomicU64, Ordering};

use k8s_openapi::api::core::v1::{Event, ObjectReference};
use k8s_openapi::jiff::Timestamp;
use kube::Client;

use crate::kuberuntime::events::{EventRecorder, EventType, event_about};

/// Kubelet's event reasons (pkg/kubelet/events).
pub const FREE_DISK_SPACE_FAILED: &str = "FreeDiskSpaceFailed";
pub const INVALID_DISK_CAPACITY: &str = "InvalidDiskCapacity";
pub const IMAGE_GC_FAILED: &str = "ImageGCFailed";

/// Where the manager's Warning events about the node go.
pub trait NodeEvents: Send + Sync {
    fn warning(&self, reason: &str, message: &str);
}

/// The Node event kubelet writes: involved object the node (its name as
/// uid, as kubelet's `nodeRef`), in the `default` namespace, as client-go
/// records events of cluster-scoped objects.
pub fn node_event(node_name: &str, reason: &str, message: &str, now: Timestamp) -> Event {
    let node = ObjectReference {
        kind: Some("Node".to_owned()),
        name: Some(node_name.to_owned()),
        uid: Some(node_name.to_owned()),
        ..ObjectReference::default()
    };
    event_about(
        node,
        "default",
        EventType::Warning,
        reason,
        message,
        node_name,
        now,
    )
}

/// Writes Node events through the pod event recorder (repeats aggregated
/// into `count`). Best effort: failures are logged.
#[derive(Clone)]
pub struct NodeEventRecorder {
    recorder: EventRecorder,
}

impl NodeEventRecorder {
    pub fn new(client: Client, node_name: impl Into<String>) -> Self {
        Self {
            recorder: EventRecorder::new(client, node_name),
        }
    }
}

impl NodeEvents for NodeEventRecorder {
    fn warning(&self, reason: &str, message: &str) {
        let node = self.recorder.node_name();
        self.recorder
            .write(node_event(node, reason, message, Timestamp::now()));
    }
}

/// Why an image was removed: kubelet's `reason` label values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GcReason {
    /// Unused for longer than `--image-maximum-gc-age`.
    Age,
    /// Disk usage over `--image-gc-high-threshold`.
    Space,
}

impl GcReason {
    pub fn as_str(self) -> &'static str {
        match self {
            GcReason::Age => "age",
            GcReason::Space => "space",
        }
    }
}

/// Images removed so far, by reason.
#[derive(Debug, Default)]
pub struct GcCounts {
    age: AtomicU64,
    space: AtomicU64,
}

impl GcCounts {
    pub fn count(&self, reason: GcReason) {
        match reason {
            GcReason::Age => &self.age,
            GcReason::Space => &self.space,
        }
        .fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self, reason: GcReason) -> u64 {
        match reason {
            GcReason::Age => &self.age,
            GcReason::Space => &self.space,
        }
        .load(Ordering::Relaxed)
    }
}

/// `kubelet_image_garbage_collected_total` in Prometheus text.
pub fn render_metrics(counts: &GcCounts) -> String {
    let mut out = String::from(
        "# HELP kubelet_image_garbage_collected_total [ALPHA] Total number of images garbage collected by the kubelet, whether through disk usage or image age.\n# TYPE kubelet_image_garbage_collected_total counter\n",
    );
    for reason in [GcReason::Age, GcReason::Space] {
        out += &format!(
            "kubelet_image_garbage_collected_total{{reason=\"{}\"}} {}\n",
            reason.as_str(),
            counts.get(reason)
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_events_point_at_the_node_in_the_default_namespace() {
        let ev = node_event("node-1", FREE_DISK_SPACE_FAILED, "m", Timestamp::now());
        assert_eq!(ev.involved_object.kind.as_deref(), Some("Node"));
        assert_eq!(ev.involved_object.name.as_deref(), Some("node-1"));
        assert_eq!(ev.involved_object.uid.as_deref(), Some("node-1"));
        assert_eq!(ev.involved_object.namespace, None);
        assert_eq!(ev.metadata.namespace.as_deref(), Some("default"));
        assert_eq!(ev.type_.as_deref(), Some("Warning"));
        assert!(ev.metadata.name.unwrap().starts_with("node-1."));
    }

    #[test]
    fn metrics_count_removals_per_reason() {
        let c = GcCounts::default();
        c.count(GcReason::Space);
        c.count(GcReason::Space);
        c.count(GcReason::Age);
        let text = render_metrics(&c);
        assert!(text.contains("kubelet_image_garbage_collected_total{reason=\"space\"} 2\n"));
        assert!(text.contains("kubelet_image_garbage_collected_total{reason=\"age\"} 1\n"));
    }
}
