//! The file source of static pods and their mirror pods (kubelet's file
//! config source and mirror client): `--pod-manifest-path` is read at start
//! and every 20 s; each static pod runs through a pod worker like an API
//! pod, and is shown in the API by a mirror pod (`kubernetes.io/config.mirror`
//! = its config hash, owned by the Node) whose status the worker writes.
//! Mirror pods are never run themselves; one whose static pod is gone or
//! changed, or that is being deleted, is deleted (and made anew when its
//! static pod still exists), as kubelet does.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{DeleteParams, PostParams, Preconditions};
use kube::{Api, Client};

use super::static_pods::{
    CONFIG_MIRROR_ANNOTATION, CONFIG_SOURCE_ANNOTATION, mirror_pod, read_manifest_dir,
};

/// How often the manifest directory is read (kubelet's `fileCheckFrequency`).
pub const FILE_CHECK_FREQUENCY: Duration = Duration::from_secs(20);

fn annotation<'a>(pod: &'a Pod, key: &str) -> Option<&'a str> {
    pod.metadata
        .annotations
        .as_ref()?
        .get(key)
        .map(String::as_str)
}

/// Whether `pod` is a mirror pod (shown for a static pod, never run).
pub fn is_mirror(pod: &Pod) -> bool {
    annotation(pod, CONFIG_MIRROR_ANNOTATION).is_some()
}

/// Whether `pod` is a static pod from a file (its status goes to its mirror).
pub fn is_static(pod: &Pod) -> bool {
    annotation(pod, CONFIG_SOURCE_ANNOTATION) == Some("file")
}

/// `namespace/name` of a pod.
fn full_name(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.name.as_deref().unwrap_or_default()
    )
}

/// What a read of the manifest directory changed.
#[derive(Debug, Default)]
pub struct SourceUpdate {
    /// Static pods that are new (to be started), with their mirror's status.
    pub added: Vec<Pod>,
    /// UIDs of static pods whose manifest is gone or changed (to be killed).
    pub removed: Vec<String>,
}

/// The static pods of the node and the mirror pods the API has.
pub struct StaticPods {
    dir: PathBuf,
    node_name: String,
    node_uid: Option<String>,
    /// By UID (the config hash).
    pods: HashMap<String, Pod>,
    /// Mirror pods by `namespace/name`.
    mirrors: HashMap<String, Pod>,
}

impl StaticPods {
    pub fn new(dir: PathBuf, node_name: &str) -> Self {
        Self {
            dir,
            node_name: node_name.to_owned(),
            node_uid: None,
            pods: HashMap::new(),
            mirrors: HashMap::new(),
        }
    }

    /// The UIDs of the static pods.
    pub fn uids(&self) -> impl Iterator<Item = &String> {
        self.pods.keys()
    }

    /// Whether `uid` is one of the static pods.
    pub fn contains(&self, uid: &str) -> bool {
        self.pods.contains_key(uid)
    }

    /// Reads the manifest directory; bad manifests are logged and skipped.
    pub async fn read(&mut self) -> SourceUpdate {
        let (dir, node) = (self.dir.clone(), self.node_name.clone());
        let (pods, errors) = tokio::task::spawn_blocking(move || read_manifest_dir(&dir, &node))
            .await
            .unwrap_or_default();
        for err in errors {
            tracing::warn!(error = %err, source = ?std::error::Error::source(&err), "skipping a static pod manifest");
        }
        let read: HashMap<String, Pod> = pods
            .into_iter()
            .filter_map(|p| Some((p.metadata.uid.clone()?, p)))
            .collect();
        let mut update = SourceUpdate::default();
        self.pods.retain(|uid, _| {
            let keep = read.contains_key(uid);
            if !keep {
                update.removed.push(uid.clone());
            }
            keep
        });
        for (uid, pod) in read {
            if !self.pods.contains_key(&uid) {
                tracing::info!(pod = %full_name(&pod), %uid, "static pod from the manifest directory");
                update.added.push(self.with_mirror_status(pod.clone()));
                self.pods.insert(uid, pod);
            }
        }
        update
    }

    /// The static pod with the status its mirror shows (what the worker
    /// compares its new status with).
    fn with_mirror_status(&self, mut pod: Pod) -> Pod {
        if let Some(m) = self.mirrors.get(&full_name(&pod))
            && annotation(m, CONFIG_MIRROR_ANNOTATION) == pod.metadata.uid.as_deref()
        {
            pod.status = m.status.clone();
        }
        pod
    }

    /// Records a mirror pod from the watch; returns its static pod (with the
    /// mirror's status) to hand to the pod's worker.
    pub fn mirror_changed(&mut self, mirror: Pod) -> Option<Pod> {
        let hash = annotation(&mirror, CONFIG_MIRROR_ANNOTATION)?.to_owned();
        self.mirrors.insert(full_name(&mirror), mirror);
        let pod = self.pods.get(&hash)?.clone();
        Some(self.with_mirror_status(pod))
    }

    /// Forgets a deleted mirror pod (`reconcile` makes it anew).
    pub fn mirror_deleted(&mut self, mirror: &Pod) {
        self.mirrors.remove(&full_name(mirror));
    }

    /// Makes the API's mirror pods match the static pods: creates missing
    /// ones, deletes those of no (or another) static pod or being deleted.
    pub async fn reconcile(&mut self, client: &Client) {
        let Some(node_uid) = self.node_uid(client).await else {
            return;
        };
        let wanted: HashMap<String, &Pod> = self.pods.values().map(|p| (full_name(p), p)).collect();
        for (name, mirror) in &self.mirrors {
            let current = wanted.get(name).is_some_and(|p| {
                annotation(mirror, CONFIG_MIRROR_ANNOTATION) == p.metadata.uid.as_deref()
            });
            if !current || mirror.metadata.deletion_timestamp.is_some() {
                delete_mirror(client, mirror).await;
            }
        }
        for (name, pod) in wanted {
            let present = self.mirrors.get(&name).is_some_and(|m| {
                m.metadata.deletion_timestamp.is_none()
                    && annotation(m, CONFIG_MIRROR_ANNOTATION) == pod.metadata.uid.as_deref()
            });
            if !present {
                create_mirror(client, &mirror_pod(pod, &self.node_name, &node_uid)).await;
            }
        }
    }

    async fn node_uid(&mut self, client: &Client) -> Option<String> {
        if self.node_uid.is_none() {
            let nodes: Api<Node> = Api::all(client.clone());
            match nodes.get(&self.node_name).await {
                Ok(n) => self.node_uid = n.metadata.uid,
                Err(err) => tracing::warn!(error = %err, "no Node yet for the mirror pods"),
            }
        }
        self.node_uid.clone()
    }
}

async fn create_mirror(client: &Client, mirror: &Pod) {
    let ns = mirror.metadata.namespace.as_deref().unwrap_or("default");
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    match api.create(&PostParams::default(), mirror).await {
        Ok(_) => tracing::info!(pod = %full_name(mirror), "created the mirror pod"),
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(err) => {
            tracing::warn!(pod = %full_name(mirror), error = %err, "failed to create the mirror pod")
        }
    }
}

async fn delete_mirror(client: &Client, mirror: &Pod) {
    let ns = mirror.metadata.namespace.as_deref().unwrap_or("default");
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let params = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: mirror.metadata.uid.clone(),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    let name = mirror.metadata.name.as_deref().unwrap_or_default();
    match api.delete(name, &params).await {
        Ok(_) => tracing::info!(pod = %full_name(mirror), "deleted the mirror pod"),
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
        Err(err) => {
            tracing::warn!(pod = %full_name(mirror), error = %err, "failed to delete the mirror pod")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFEST: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nspec:\n  containers:\n  - name: app\n    image: busybox\n";

    #[tokio::test]
    async fn manifests_added_changed_and_removed_are_reported_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut source = StaticPods::new(dir.path().to_path_buf(), "n1");
        assert!(source.read().await.added.is_empty());

        std::fs::write(dir.path().join("web.yaml"), MANIFEST).unwrap();
        let update = source.read().await;
        assert_eq!(update.added.len(), 1);
        let pod = &update.added[0];
        assert!(is_static(pod));
        assert_eq!(pod.metadata.name.as_deref(), Some("web-n1"));
        let uid = pod.metadata.uid.clone().unwrap();
        assert!(source.contains(&uid));
        assert!(
            source.read().await.added.is_empty(),
            "unchanged: nothing new"
        );

        std::fs::write(
            dir.path().join("web.yaml"),
            MANIFEST.replace("busybox", "pause"),
        )
        .unwrap();
        let update = source.read().await;
        assert_eq!(update.removed, std::slice::from_ref(&uid));
        assert_eq!(update.added.len(), 1);

        std::fs::remove_file(dir.path().join("web.yaml")).unwrap();
        let update = source.read().await;
        assert_eq!(update.removed.len(), 1);
        assert!(!source.contains(&uid));
    }

    #[tokio::test]
    async fn a_mirror_pod_hands_its_status_to_its_static_pod_only() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("web.yaml"), MANIFEST).unwrap();
        let mut source = StaticPods::new(dir.path().to_path_buf(), "n1");
        let pod = source.read().await.added.remove(0);
        let mut mirror = mirror_pod(&pod, "n1", "node-uid");
        assert!(is_mirror(&mirror) && !is_mirror(&pod));
        mirror.metadata.uid = Some("mirror-uid".into());
        mirror.status = Some(k8s_openapi::api::core::v1::PodStatus {
            phase: Some("Running".into()),
            ..Default::default()
        });
        let forwarded = source
            .mirror_changed(mirror.clone())
            .expect("its static pod");
        assert_eq!(forwarded.metadata.uid, pod.metadata.uid);
        assert_eq!(
            forwarded.status.and_then(|s| s.phase).as_deref(),
            Some("Running")
        );

        // A mirror of an older manifest (another hash) gives no status.
        let mut stale = mirror;
        stale
            .metadata
            .annotations
            .as_mut()
            .unwrap()
            .insert(CONFIG_MIRROR_ANNOTATION.into(), "old-hash".into());
        assert!(source.mirror_changed(stale).is_none());
    }
}
