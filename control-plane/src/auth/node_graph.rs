//! The Node authorizer's graph (upstream `plugin/pkg/auth/authorizer/node`
//! `graph.go`): which node each scheduled pod is bound to, and the
//! secrets, configmaps, PersistentVolumeClaims and ServiceAccounts those
//! pods reference; PVCs lead on to their PersistentVolumes. Fed from the
//! watch cache by `policy_cache`; answers "is there a path from node N to
//! object X" in constant time. No I/O.

use std::collections::{HashMap, HashSet};

use serde::Deserialize;
use serde::de::IgnoredAny;

use super::policy_cache::Index;

/// The storage prefixes the graph follows.
pub const PODS: &str = "/registry/pods/";
pub const PVCS: &str = "/registry/persistentvolumeclaims/";
pub const PREFIXES: &[&str] = &[PODS, PVCS];

/// The kinds of object a node may reach through its pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Pod,
    Secret,
    ConfigMap,
    PersistentVolumeClaim,
    PersistentVolume,
    ServiceAccount,
}

/// A namespaced object a pod references.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Ref {
    kind: Kind,
    namespace: String,
    name: String,
}

#[derive(Debug)]
struct PodEntry {
    node: String,
    refs: Vec<Ref>,
}

/// Pods, their nodes and what they reference.
#[derive(Debug, Default)]
pub struct Graph {
    /// `ns/name` of each scheduled pod.
    pods: HashMap<String, PodEntry>,
    /// For each referenced object, the nodes that reach it and through how
    /// many pods.
    edges: HashMap<Ref, HashMap<String, usize>>,
    /// PVC (`ns`, `name`) -> its PersistentVolume.
    pvc_volume: HashMap<(String, String), String>,
    /// PersistentVolume -> the PVCs bound to it.
    pv_claims: HashMap<String, HashSet<(String, String)>>,
}

/// `ns/name` after a storage prefix.
fn split(key: &str, prefix: &str) -> Option<(String, String)> {
    let (ns, name) = key.strip_prefix(prefix)?.split_once('/')?;
    Some((ns.to_string(), name.to_string()))
}

/// `{"name": ...}`: a LocalObjectReference and its like.
#[derive(Deserialize)]
struct NameRef {
    name: Option<String>,
}

/// `{"secretRef": {"name": ...}}` of the volume sources that name a secret so.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SecretRefHolder {
    secret_ref: Option<NameRef>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SecretNameHolder {
    secret_name: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EnvFromRefs {
    secret_ref: Option<NameRef>,
    config_map_ref: Option<NameRef>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EnvSourceRefs {
    secret_key_ref: Option<NameRef>,
    config_map_key_ref: Option<NameRef>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EnvRefs {
    value_from: Option<EnvSourceRefs>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ContainerRefs {
    env_from: Option<Vec<EnvFromRefs>>,
    env: Option<Vec<EnvRefs>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ProjectionRefs {
    secret: Option<NameRef>,
    config_map: Option<NameRef>,
}

#[derive(Deserialize)]
struct ProjectedRefs {
    sources: Option<Vec<ProjectionRefs>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ClaimRef {
    claim_name: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CsiRefs {
    node_publish_secret_ref: Option<NameRef>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct VolumeRefs {
    name: Option<String>,
    secret: Option<SecretNameHolder>,
    config_map: Option<NameRef>,
    projected: Option<ProjectedRefs>,
    azure_file: Option<SecretNameHolder>,
    cephfs: Option<SecretRefHolder>,
    cinder: Option<SecretRefHolder>,
    flex_volume: Option<SecretRefHolder>,
    rbd: Option<SecretRefHolder>,
    #[serde(rename = "scaleIO")]
    scale_io: Option<SecretRefHolder>,
    iscsi: Option<SecretRefHolder>,
    storageos: Option<SecretRefHolder>,
    csi: Option<CsiRefs>,
    persistent_volume_claim: Option<ClaimRef>,
    ephemeral: Option<IgnoredAny>,
}

/// What the graph reads of a pod: its node and the fields of its `spec`
/// that reference other objects. Decoding into it skips everything else
/// unparsed (a pod's containers, resources, probes...).
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct PodSpecRefs {
    node_name: Option<String>,
    service_account_name: Option<String>,
    image_pull_secrets: Option<Vec<NameRef>>,
    containers: Option<Vec<ContainerRefs>>,
    init_containers: Option<Vec<ContainerRefs>>,
    ephemeral_containers: Option<Vec<ContainerRefs>>,
    volumes: Option<Vec<VolumeRefs>>,
}

/// What the graph reads of a PersistentVolumeClaim: the volume it is bound to.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ClaimSpecRefs {
    volume_name: Option<String>,
}

/// A stored object, read only for its `spec`.
#[derive(Deserialize)]
struct Stored<S> {
    spec: Option<S>,
}

fn name_of(r: &Option<NameRef>) -> Option<&str> {
    r.as_ref().and_then(|r| r.name.as_deref())
}

fn each<T>(list: &Option<Vec<T>>) -> impl Iterator<Item = &T> {
    list.iter().flatten()
}

/// Every object `pod` references (upstream `VisitPodSecretNames`,
/// `VisitPodConfigmapNames`, PVC and ServiceAccount edges).
fn pod_refs(spec: &PodSpecRefs, namespace: &str, pod_name: &str) -> Vec<Ref> {
    let mut out: Vec<Ref> = Vec::new();
    let mut add = |kind: Kind, name: Option<&str>| {
        if let Some(name) = name.filter(|n| !n.is_empty()) {
            let r = Ref {
                kind,
                namespace: namespace.to_string(),
                name: name.to_string(),
            };
            if !out.contains(&r) {
                out.push(r);
            }
        }
    };
    for s in each(&spec.image_pull_secrets) {
        add(Kind::Secret, s.name.as_deref());
    }
    // The admission of r8s defaults it to "default"; older stored pods may
    // lack it, and the agent then asks for "default" too.
    add(
        Kind::ServiceAccount,
        Some(
            spec.service_account_name
                .as_deref()
                .filter(|n| !n.is_empty())
                .unwrap_or("default"),
        ),
    );
    let containers = each(&spec.containers)
        .chain(each(&spec.init_containers))
        .chain(each(&spec.ephemeral_containers));
    for c in containers {
        for from in each(&c.env_from) {
            add(Kind::Secret, name_of(&from.secret_ref));
            add(Kind::ConfigMap, name_of(&from.config_map_ref));
        }
        for source in each(&c.env).filter_map(|e| e.value_from.as_ref()) {
            add(Kind::Secret, name_of(&source.secret_key_ref));
            add(Kind::ConfigMap, name_of(&source.config_map_key_ref));
        }
    }
    for v in each(&spec.volumes) {
        add(
            Kind::Secret,
            v.secret.as_ref().and_then(|s| s.secret_name.as_deref()),
        );
        add(Kind::ConfigMap, name_of(&v.config_map));
        for source in v.projected.iter().flat_map(|p| each(&p.sources)) {
            add(Kind::Secret, name_of(&source.secret));
            add(Kind::ConfigMap, name_of(&source.config_map));
        }
        add(
            Kind::Secret,
            v.azure_file.as_ref().and_then(|s| s.secret_name.as_deref()),
        );
        for holder in [
            &v.cephfs,
            &v.cinder,
            &v.flex_volume,
            &v.rbd,
            &v.scale_io,
            &v.iscsi,
            &v.storageos,
        ] {
            add(
                Kind::Secret,
                holder.as_ref().and_then(|h| name_of(&h.secret_ref)),
            );
        }
        add(
            Kind::Secret,
            v.csi
                .as_ref()
                .and_then(|c| name_of(&c.node_publish_secret_ref)),
        );
        add(
            Kind::PersistentVolumeClaim,
            v.persistent_volume_claim
                .as_ref()
                .and_then(|c| c.claim_name.as_deref()),
        );
        // A generic ephemeral volume's claim is `<pod>-<volume>`.
        if v.ephemeral.is_some()
            && let Some(vol) = v.name.as_deref().filter(|n| !n.is_empty())
        {
            add(
                Kind::PersistentVolumeClaim,
                Some(&format!("{pod_name}-{vol}")),
            );
        }
    }
    out
}

impl Graph {
    fn remove_pod(&mut self, key: &str) {
        let Some(entry) = self.pods.remove(key) else {
            return;
        };
        for r in entry.refs {
            if let Some(nodes) = self.edges.get_mut(&r) {
                if let Some(count) = nodes.get_mut(&entry.node) {
                    *count -= 1;
                    if *count == 0 {
                        nodes.remove(&entry.node);
                    }
                }
                if nodes.is_empty() {
                    self.edges.remove(&r);
                }
            }
        }
    }

    /// Adds or replaces a pod (`None`: deleted); unscheduled pods reach nothing.
    pub fn set_pod(&mut self, namespace: &str, name: &str, spec: Option<&PodSpecRefs>) {
        let key = format!("{namespace}/{name}");
        self.remove_pod(&key);
        let Some(spec) = spec else {
            return;
        };
        let Some(node) = spec.node_name.as_deref().filter(|n| !n.is_empty()) else {
            return;
        };
        let refs = pod_refs(spec, namespace, name);
        for r in &refs {
            *self
                .edges
                .entry(r.clone())
                .or_default()
                .entry(node.to_string())
                .or_default() += 1;
        }
        self.pods.insert(
            key,
            PodEntry {
                node: node.to_string(),
                refs,
            },
        );
    }

    /// Adds or replaces a PVC (`None`: deleted) and its volume binding.
    pub fn set_pvc(&mut self, namespace: &str, name: &str, spec: Option<&ClaimSpecRefs>) {
        let claim = (namespace.to_string(), name.to_string());
        if let Some(pv) = self.pvc_volume.remove(&claim)
            && let Some(claims) = self.pv_claims.get_mut(&pv)
        {
            claims.remove(&claim);
            if claims.is_empty() {
                self.pv_claims.remove(&pv);
            }
        }
        if let Some(pv) = spec
            .and_then(|s| s.volume_name.as_deref())
            .filter(|n| !n.is_empty())
        {
            self.pv_claims
                .entry(pv.to_string())
                .or_default()
                .insert(claim.clone());
            self.pvc_volume.insert(claim, pv.to_string());
        }
    }

    fn reaches(&self, node: &str, kind: Kind, namespace: &str, name: &str) -> bool {
        let r = Ref {
            kind,
            namespace: namespace.to_string(),
            name: name.to_string(),
        };
        self.edges.get(&r).is_some_and(|n| n.contains_key(node))
    }

    /// Whether the object is a pod bound to `node` or one such pod leads to
    /// it (`namespace` is empty for PersistentVolumes).
    pub fn has_path(&self, node: &str, kind: Kind, namespace: &str, name: &str) -> bool {
        match kind {
            Kind::Pod => self
                .pods
                .get(&format!("{namespace}/{name}"))
                .is_some_and(|p| p.node == node),
            Kind::PersistentVolume => self.pv_claims.get(name).is_some_and(|claims| {
                claims
                    .iter()
                    .any(|(ns, pvc)| self.reaches(node, Kind::PersistentVolumeClaim, ns, pvc))
            }),
            _ => self.reaches(node, kind, namespace, name),
        }
    }

    /// The number of scheduled pods in the graph.
    pub fn pods(&self) -> usize {
        self.pods.len()
    }
}

impl Index for Graph {
    fn apply(&mut self, key: &str, value: Option<&[u8]>) {
        // Pods and PVCs are read only for what `spec` references: their
        // metadata (with its managedFields), status and the rest of the
        // spec are skipped unparsed.
        fn spec_of<S: serde::de::DeserializeOwned + Default>(key: &str, value: &[u8]) -> Option<S> {
            match serde_json::from_slice::<Stored<S>>(value) {
                Ok(stored) => Some(stored.spec.unwrap_or_default()),
                Err(err) => {
                    tracing::warn!(%key, %err, "stored object does not parse; left out of the node graph");
                    None
                }
            }
        }
        if let Some((ns, name)) = split(key, PODS) {
            let spec = value.and_then(|v| spec_of::<PodSpecRefs>(key, v));
            self.set_pod(&ns, &name, spec.as_ref());
        } else if let Some((ns, name)) = split(key, PVCS) {
            let spec = value.and_then(|v| spec_of::<ClaimSpecRefs>(key, v));
            self.set_pvc(&ns, &name, spec.as_ref());
        }
    }

    fn clear(&mut self, prefix: &str) {
        match prefix {
            PODS => {
                self.pods.clear();
                self.edges.clear();
            }
            PVCS => {
                self.pvc_volume.clear();
                self.pv_claims.clear();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn spec<S: serde::de::DeserializeOwned>(object: &Value) -> S {
        serde_json::from_value(object["spec"].clone()).unwrap()
    }

    fn pod(node: &str) -> Value {
        json!({
            "metadata": {"name": "web", "namespace": "d"},
            "spec": {
                "nodeName": node,
                "serviceAccountName": "runner",
                "imagePullSecrets": [{"name": "pull"}],
                "containers": [{
                    "name": "c",
                    "envFrom": [{"secretRef": {"name": "env-secret"}}, {"configMapRef": {"name": "env-cm"}}],
                    "env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "key-secret", "key": "k"}}}],
                }],
                "volumes": [
                    {"name": "s", "secret": {"secretName": "vol-secret"}},
                    {"name": "p", "projected": {"sources": [{"configMap": {"name": "kube-root-ca.crt"}}]}},
                    {"name": "data", "persistentVolumeClaim": {"claimName": "data"}},
                    {"name": "scratch", "ephemeral": {"volumeClaimTemplate": {}}},
                ],
            },
        })
    }

    #[test]
    fn a_bound_pod_leads_its_node_to_what_it_references() {
        let mut g = Graph::default();
        g.set_pod("d", "web", Some(&spec(&pod("a"))));
        for (kind, name) in [
            (Kind::Secret, "pull"),
            (Kind::Secret, "env-secret"),
            (Kind::Secret, "key-secret"),
            (Kind::Secret, "vol-secret"),
            (Kind::ConfigMap, "env-cm"),
            (Kind::ConfigMap, "kube-root-ca.crt"),
            (Kind::PersistentVolumeClaim, "data"),
            (Kind::PersistentVolumeClaim, "web-scratch"),
            (Kind::ServiceAccount, "runner"),
        ] {
            assert!(g.has_path("a", kind, "d", name), "{kind:?} {name}");
            assert!(!g.has_path("b", kind, "d", name), "{kind:?} {name}");
            assert!(!g.has_path("a", kind, "other", name), "{kind:?} {name}");
        }
        assert!(!g.has_path("a", Kind::Secret, "d", "unrelated"));
    }

    #[test]
    fn every_volume_source_that_names_a_secret_leads_to_it() {
        let body = serde_json::to_vec(&json!({
            "metadata": {"name": "web", "namespace": "d", "managedFields": [{"manager": "x"}]},
            "spec": {
                "nodeName": "a",
                "imagePullSecrets": null,
                "initContainers": [{"name": "i", "env": [{"name": "Y", "valueFrom": {"configMapKeyRef": {"name": "init-cm", "key": "k"}}}]}],
                "ephemeralContainers": [{"name": "e", "envFrom": [{"secretRef": {"name": "debug-secret"}}]}],
                "containers": [{"name": "c", "image": "busybox", "env": [{"name": "Z", "value": "1"}], "resources": {"limits": {"cpu": "1"}}}],
                "volumes": [
                    {"name": "af", "azureFile": {"secretName": "s-azure", "shareName": "x"}},
                    {"name": "cf", "cephfs": {"monitors": ["m"], "secretRef": {"name": "s-cephfs"}}},
                    {"name": "ci", "cinder": {"volumeID": "v", "secretRef": {"name": "s-cinder"}}},
                    {"name": "fv", "flexVolume": {"driver": "d", "secretRef": {"name": "s-flex"}}},
                    {"name": "rb", "rbd": {"monitors": ["m"], "image": "i", "secretRef": {"name": "s-rbd"}}},
                    {"name": "sc", "scaleIO": {"gateway": "g", "system": "s", "secretRef": {"name": "s-scaleio"}}},
                    {"name": "is", "iscsi": {"targetPortal": "t", "iqn": "q", "lun": 0, "secretRef": {"name": "s-iscsi"}}},
                    {"name": "so", "storageos": {"secretRef": {"name": "s-storageos"}}},
                    {"name": "cs", "csi": {"driver": "d", "nodePublishSecretRef": {"name": "s-csi"}}},
                    {"name": "pj", "projected": {"sources": [{"secret": {"name": "s-projected"}}, {"serviceAccountToken": {"path": "t"}}]}},
                    {"name": "none", "ephemeral": null},
                    {"name": "empty", "emptyDir": {}},
                ],
            },
            "status": {"phase": "Running"},
        }))
        .unwrap();
        let mut g = Graph::default();
        g.apply("/registry/pods/d/web", Some(&body));
        for name in [
            "s-azure",
            "s-cephfs",
            "s-cinder",
            "s-flex",
            "s-rbd",
            "s-scaleio",
            "s-iscsi",
            "s-storageos",
            "s-csi",
            "s-projected",
            "debug-secret",
        ] {
            assert!(g.has_path("a", Kind::Secret, "d", name), "{name}");
        }
        assert!(g.has_path("a", Kind::ConfigMap, "d", "init-cm"));
        assert!(g.has_path("a", Kind::ServiceAccount, "d", "default"));
        assert!(!g.has_path("a", Kind::PersistentVolumeClaim, "d", "web-none"));
    }

    #[test]
    fn pvcs_lead_on_to_their_volumes() {
        let mut g = Graph::default();
        g.set_pvc(
            "d",
            "data",
            Some(&spec(&json!({"spec": {"volumeName": "pv-1"}}))),
        );
        assert!(!g.has_path("a", Kind::PersistentVolume, "", "pv-1"));
        g.set_pod("d", "web", Some(&spec(&pod("a"))));
        assert!(g.has_path("a", Kind::PersistentVolume, "", "pv-1"));
        g.set_pvc("d", "data", None);
        assert!(!g.has_path("a", Kind::PersistentVolume, "", "pv-1"));
    }

    #[test]
    fn moving_or_deleting_a_pod_removes_its_edges() {
        let mut g = Graph::default();
        g.set_pod("d", "web", Some(&spec(&pod("a"))));
        let mut other = pod("a");
        other["metadata"]["name"] = json!("web2");
        g.set_pod("d", "web2", Some(&spec(&other)));
        g.set_pod("d", "web", None);
        // Still reached through the second pod.
        assert!(g.has_path("a", Kind::Secret, "d", "pull"));
        g.set_pod("d", "web2", Some(&spec(&pod("b"))));
        assert!(!g.has_path("a", Kind::Secret, "d", "pull"));
        assert!(g.has_path("b", Kind::Secret, "d", "pull"));
        let mut unscheduled = pod("");
        unscheduled["spec"]
            .as_object_mut()
            .unwrap()
            .remove("nodeName");
        g.set_pod("d", "web2", Some(&spec(&unscheduled)));
        assert!(!g.has_path("b", Kind::Secret, "d", "pull"));
        assert_eq!(g.pods(), 0);
    }

    #[test]
    fn stored_keys_feed_the_graph() {
        let mut g = Graph::default();
        let body = serde_json::to_vec(&pod("a")).unwrap();
        g.apply("/registry/pods/d/web", Some(&body));
        assert!(g.has_path("a", Kind::Secret, "d", "pull"));
        g.apply("/registry/pods/d/web", None);
        assert!(!g.has_path("a", Kind::Secret, "d", "pull"));
        g.apply("/registry/pods/d/web", Some(&body));
        g.clear(PODS);
        assert!(!g.has_path("a", Kind::Secret, "d", "pull"));
    }
}
