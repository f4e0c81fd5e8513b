//! Static pods from `--pod-manifest-path` as kubelet's file source: each
//! manifest becomes a pod named `<name>-<node>` with a content-derived UID
//! and `kubernetes.io/config.*` annotations; its mirror pod is what the API
//! server shows.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Pod, PodStatus, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

pub const CONFIG_SOURCE_ANNOTATION: &str = "kubernetes.io/config.source";
pub const CONFIG_HASH_ANNOTATION: &str = "kubernetes.io/config.hash";
pub const CONFIG_MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";

/// Why a manifest was skipped.
#[derive(Debug, thiserror::Error)]
pub enum StaticPodError {
    #[error("failed to read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid pod manifest {path}")]
    Decode {
        path: PathBuf,
        #[source]
        source: serde_yaml::Error,
    },
    #[error("pod manifest {0} has no metadata.name")]
    NoName(PathBuf),
}

/// FNV-1a over `data`, 128 bits as two 64-bit lanes: a stable UID that only
/// changes when the manifest, node or path does.
fn content_uid(parts: &[&[u8]]) -> String {
    let mut lanes = [0xcbf2_9ce4_8422_2325_u64, 0x6c62_272e_07bb_0142_u64];
    for lane in &mut lanes {
        for part in parts {
            for b in *part {
                *lane ^= u64::from(*b);
                *lane = lane.wrapping_mul(0x0000_0100_0000_01b3);
            }
        }
    }
    format!("{:016x}{:016x}", lanes[0], lanes[1])
}

/// Applies kubelet's `applyDefaults` for a file source to a decoded pod.
pub fn apply_file_defaults(mut pod: Pod, manifest: &[u8], source: &Path, node_name: &str) -> Pod {
    let uid = pod.metadata.uid.clone().unwrap_or_else(|| {
        content_uid(&[
            manifest,
            format!("host:{node_name}").as_bytes(),
            format!("file:{}", source.display()).as_bytes(),
        ])
    });
    let name = pod.metadata.name.clone().unwrap_or_default();
    pod.metadata.name = Some(format!("{name}-{}", node_name.to_lowercase()));
    pod.metadata.uid = Some(uid.clone());
    if pod
        .metadata
        .namespace
        .as_deref()
        .unwrap_or_default()
        .is_empty()
    {
        pod.metadata.namespace = Some("default".to_owned());
    }
    let annotations = pod.metadata.annotations.get_or_insert_with(BTreeMap::new);
    annotations.insert(CONFIG_HASH_ANNOTATION.to_owned(), uid);
    annotations.insert(CONFIG_SOURCE_ANNOTATION.to_owned(), "file".to_owned());
    let spec = pod.spec.get_or_insert_with(Default::default);
    spec.node_name = Some(node_name.to_owned());
    // Static pods tolerate every NoExecute taint so node problems never evict them.
    let tolerations = spec.tolerations.get_or_insert_with(Vec::new);
    let exists_no_execute = |t: &Toleration| {
        t.operator.as_deref() == Some("Exists")
            && t.effect.as_deref() == Some("NoExecute")
            && t.key.is_none()
    };
    if !tolerations.iter().any(exists_no_execute) {
        tolerations.push(Toleration {
            operator: Some("Exists".to_owned()),
            effect: Some("NoExecute".to_owned()),
            ..Toleration::default()
        });
    }
    pod.status = Some(PodStatus {
        phase: Some("Pending".to_owned()),
        ..PodStatus::default()
    });
    pod
}

/// Decodes one manifest (YAML or JSON) into a static pod.
pub fn static_pod_from_manifest(
    text: &str,
    source: &Path,
    node_name: &str,
) -> Result<Pod, StaticPodError> {
    let pod: Pod = serde_yaml::from_str(text).map_err(|source_err| StaticPodError::Decode {
        path: source.to_owned(),
        source: source_err,
    })?;
    if pod.metadata.name.as_deref().unwrap_or_default().is_empty() {
        return Err(StaticPodError::NoName(source.to_owned()));
    }
    Ok(apply_file_defaults(pod, text.as_bytes(), source, node_name))
}

/// Reads every non-hidden file of `dir` (sorted) as a static pod; bad files
/// are returned as errors beside the good pods, as kubelet logs and skips them.
pub fn read_manifest_dir(dir: &Path, node_name: &str) -> (Vec<Pod>, Vec<StaticPodError>) {
    let mut pods = Vec::new();
    let mut errors = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(source) => {
            errors.push(StaticPodError::Read {
                path: dir.to_owned(),
                source,
            });
            return (pods, errors);
        }
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .map(|e| e.path())
        .collect();
    paths.sort();
    for path in paths {
        let result = std::fs::read_to_string(&path)
            .map_err(|source| StaticPodError::Read {
                path: path.clone(),
                source,
            })
            .and_then(|text| static_pod_from_manifest(&text, &path, node_name));
        match result {
            Ok(pod) => pods.push(pod),
            Err(e) => errors.push(e),
        }
    }
    (pods, errors)
}

/// The mirror pod the API server shows for a static pod: same spec, the
/// config hash as `kubernetes.io/config.mirror`, owned by the Node.
pub fn mirror_pod(static_pod: &Pod, node_name: &str, node_uid: &str) -> Pod {
    let mut mirror = static_pod.clone();
    let hash = static_pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(CONFIG_HASH_ANNOTATION))
        .cloned()
        .unwrap_or_default();
    mirror
        .metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(CONFIG_MIRROR_ANNOTATION.to_owned(), hash);
    mirror.metadata.uid = None;
    mirror.metadata.owner_references = Some(vec![OwnerReference {
        api_version: "v1".to_owned(),
        kind: "Node".to_owned(),
        name: node_name.to_owned(),
        uid: node_uid.to_owned(),
        controller: Some(true),
        ..OwnerReference::default()
    }]);
    mirror.status = None;
    mirror
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFEST: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: etcd\nspec:\n  containers:\n  - name: etcd\n    image: etcd:3.5\n";

    #[test]
    fn manifest_becomes_a_node_scoped_static_pod() {
        let pod = static_pod_from_manifest(
            MANIFEST,
            Path::new("/etc/r8s/manifests/etcd.yaml"),
            "Node-1",
        )
        .unwrap();
        assert_eq!(pod.metadata.name.as_deref(), Some("etcd-node-1"));
        assert_eq!(pod.metadata.namespace.as_deref(), Some("default"));
        let uid = pod.metadata.uid.clone().unwrap();
        assert_eq!(uid.len(), 32);
        let ann = pod.metadata.annotations.as_ref().unwrap();
        assert_eq!(ann[CONFIG_HASH_ANNOTATION], uid);
        assert_eq!(ann[CONFIG_SOURCE_ANNOTATION], "file");
        let spec = pod.spec.as_ref().unwrap();
        assert_eq!(spec.node_name.as_deref(), Some("Node-1"));
        let tol = &spec.tolerations.as_ref().unwrap()[0];
        assert_eq!(
            (tol.operator.as_deref(), tol.effect.as_deref()),
            (Some("Exists"), Some("NoExecute"))
        );
        assert_eq!(pod.status.unwrap().phase.as_deref(), Some("Pending"));
    }

    #[test]
    fn uid_is_stable_and_follows_content() {
        let path = Path::new("/m/etcd.yaml");
        let a = static_pod_from_manifest(MANIFEST, path, "n").unwrap();
        let b = static_pod_from_manifest(MANIFEST, path, "n").unwrap();
        assert_eq!(a.metadata.uid, b.metadata.uid);
        let changed = MANIFEST.replace("3.5", "3.6");
        let c = static_pod_from_manifest(&changed, path, "n").unwrap();
        assert_ne!(a.metadata.uid, c.metadata.uid);
        let other_node = static_pod_from_manifest(MANIFEST, path, "m").unwrap();
        assert_ne!(a.metadata.uid, other_node.metadata.uid);
    }

    #[test]
    fn manifest_dir_skips_hidden_and_reports_bad_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("etcd.yaml"), MANIFEST).unwrap();
        std::fs::write(dir.path().join(".swp"), "junk").unwrap();
        std::fs::write(dir.path().join("bad.yaml"), "kind: [").unwrap();
        let (pods, errors) = read_manifest_dir(dir.path(), "n");
        assert_eq!(pods.len(), 1);
        assert_eq!(errors.len(), 1);
        assert!(errors[0].to_string().starts_with("invalid pod manifest"));
    }

    #[test]
    fn mirror_pod_carries_the_hash_and_is_owned_by_the_node() {
        let pod = static_pod_from_manifest(MANIFEST, Path::new("/m/etcd.yaml"), "n").unwrap();
        let mirror = mirror_pod(&pod, "n", "node-uid");
        let ann = mirror.metadata.annotations.as_ref().unwrap();
        assert_eq!(
            ann[CONFIG_MIRROR_ANNOTATION],
            pod.metadata.uid.clone().unwrap()
        );
        assert!(mirror.metadata.uid.is_none());
        let owner = &mirror.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
            ("Node", "node-uid", Some(true))
        );
    }
}
