//! The labels and annotations kubelet puts on CRI sandboxes and containers
//! (`kuberuntime/labels.go`): they tie runtime objects back to their pod and
//! container, so observation and adoption after a restart need no local state.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{Container, Pod};

pub const POD_NAME: &str = "io.kubernetes.pod.name";
pub const POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
pub const POD_UID: &str = "io.kubernetes.pod.uid";
pub const CONTAINER_NAME: &str = "io.kubernetes.container.name";
pub const CONTAINER_HASH: &str = "io.kubernetes.container.hash";
pub const CONTAINER_RESTART_COUNT: &str = "io.kubernetes.container.restartCount";
pub const TERMINATION_MESSAGE_PATH: &str = "io.kubernetes.container.terminationMessagePath";
pub const TERMINATION_MESSAGE_POLICY: &str = "io.kubernetes.container.terminationMessagePolicy";
pub const POD_TERMINATION_GRACE_PERIOD: &str = "io.kubernetes.pod.terminationGracePeriod";
/// r8s addition: the host file behind the termination message path.
pub const TERMINATION_MESSAGE_HOST_PATH: &str = "r8s.io/termination-message-host-path";

/// The pod's labels plus the pod identity labels (`newPodLabels`).
pub fn pod_labels(pod: &Pod) -> HashMap<String, String> {
    let mut labels: HashMap<String, String> = pod
        .metadata
        .labels
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    labels.insert(
        POD_NAME.to_owned(),
        pod.metadata.name.clone().unwrap_or_default(),
    );
    labels.insert(
        POD_NAMESPACE.to_owned(),
        pod.metadata.namespace.clone().unwrap_or_default(),
    );
    labels.insert(
        POD_UID.to_owned(),
        pod.metadata.uid.clone().unwrap_or_default(),
    );
    labels
}

/// The identity labels of a container (`newContainerLabels`).
pub fn container_labels(pod: &Pod, container: &Container) -> HashMap<String, String> {
    let mut labels = HashMap::new();
    for key in [POD_NAME, POD_NAMESPACE, POD_UID] {
        if let Some(v) = pod_labels(pod).remove(key) {
            labels.insert(key.to_owned(), v);
        }
    }
    labels.insert(CONTAINER_NAME.to_owned(), container.name.clone());
    labels
}

/// A label selector matching every runtime object of a pod.
pub fn pod_selector(pod_uid: &str) -> HashMap<String, String> {
    HashMap::from([(POD_UID.to_owned(), pod_uid.to_owned())])
}

/// FNV-1a, stable across builds (unlike `DefaultHasher`), so a restarted
/// agent computes the same container hash and adopts running containers.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The hash of a container spec (`HashContainer`): a running container whose
/// spec hash differs is restarted.
pub fn container_hash(container: &Container) -> String {
    let json = serde_json::to_vec(container).unwrap_or_default();
    format!("{:x}", fnv1a(&json))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_changes_with_the_image_only() {
        let a = Container {
            name: "app".to_owned(),
            image: Some("busybox:1".to_owned()),
            ..Container::default()
        };
        let mut b = a.clone();
        assert_eq!(container_hash(&a), container_hash(&b));
        b.image = Some("busybox:2".to_owned());
        assert_ne!(container_hash(&a), container_hash(&b));
    }

    #[test]
    fn pod_labels_carry_identity() {
        let mut p = Pod::default();
        p.metadata.name = Some("web".to_owned());
        p.metadata.namespace = Some("default".to_owned());
        p.metadata.uid = Some("u1".to_owned());
        p.metadata.labels = Some([("app".to_owned(), "x".to_owned())].into());
        let l = pod_labels(&p);
        assert_eq!(l[POD_UID], "u1");
        assert_eq!(l["app"], "x");
        let c = container_labels(&p, &Container::default());
        assert_eq!(c.len(), 4);
        assert!(!c.contains_key("app"));
    }
}
