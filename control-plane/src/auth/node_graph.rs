//! The Node authorizer's graph (upstream `plugin/pkg/auth/authorizer/node`
//! `graph.go`): which node each scheduled pod is bound to, and the
//! secrets, configmaps, PersistentVolumeClaims and ServiceAccounts those
//! pods reference; PVCs lead on to their PersistentVolumes. Fed from the
//! watch cache by `policy_cache`; answers "is there a path from node N to
//! object X" in constant time. No I/O.

use std::collections::{HashMap, HashSet};

use serde_json::Value;

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

fn str_at<'a>(v: &'a Value, pointer: &str) -> Option<&'a str> {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

fn items<'a>(v: &'a Value, pointer: &str) -> impl Iterator<Item = &'a Value> {
    v.pointer(pointer)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

/// Every object `pod` references (upstream `VisitPodSecretNames`,
/// `VisitPodConfigmapNames`, PVC and ServiceAccount edges).
fn pod_refs(pod: &Value, namespace: &str, pod_name: &str) -> Vec<Ref> {
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
    for s in items(pod, "/spec/imagePullSecrets") {
        add(Kind::Secret, str_at(s, "/name"));
    }
    // The admission of r8s defaults it to "default"; older stored pods may
    // lack it, and the agent then asks for "default" too.
    add(
        Kind::ServiceAccount,
        Some(str_at(pod, "/spec/serviceAccountName").unwrap_or("default")),
    );
    for list in ["containers", "initContainers", "ephemeralContainers"] {
        for c in items(pod, &format!("/spec/{list}")) {
            for from in items(c, "/envFrom") {
                add(Kind::Secret, str_at(from, "/secretRef/name"));
                add(Kind::ConfigMap, str_at(from, "/configMapRef/name"));
            }
            for env in items(c, "/env") {
                add(Kind::Secret, str_at(env, "/valueFrom/secretKeyRef/name"));
                add(
                    Kind::ConfigMap,
                    str_at(env, "/valueFrom/configMapKeyRef/name"),
                );
            }
        }
    }
    for v in items(pod, "/spec/volumes") {
        add(Kind::Secret, str_at(v, "/secret/secretName"));
        add(Kind::ConfigMap, str_at(v, "/configMap/name"));
        for source in items(v, "/projected/sources") {
            add(Kind::Secret, str_at(source, "/secret/name"));
            add(Kind::ConfigMap, str_at(source, "/configMap/name"));
        }
        for p in [
            "/azureFile/secretName",
            "/cephfs/secretRef/name",
            "/cinder/secretRef/name",
            "/flexVolume/secretRef/name",
            "/rbd/secretRef/name",
            "/scaleIO/secretRef/name",
            "/iscsi/secretRef/name",
            "/storageos/secretRef/name",
            "/csi/nodePublishSecretRef/name",
        ] {
            add(Kind::Secret, str_at(v, p));
        }
        add(
            Kind::PersistentVolumeClaim,
            str_at(v, "/persistentVolumeClaim/claimName"),
        );
        // A generic ephemeral volume's claim is `<pod>-<volume>`.
        if v.get("ephemeral").is_some()
            && let Some(vol) = str_at(v, "/name")
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
    pub fn set_pod(&mut self, namespace: &str, name: &str, pod: Option<&Value>) {
        let key = format!("{namespace}/{name}");
        self.remove_pod(&key);
        let Some(pod) = pod else {
            return;
        };
        let Some(node) = str_at(pod, "/spec/nodeName") else {
            return;
        };
        let refs = pod_refs(pod, namespace, name);
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
    pub fn set_pvc(&mut self, namespace: &str, name: &str, pvc: Option<&Value>) {
        let claim = (namespace.to_string(), name.to_string());
        if let Some(pv) = self.pvc_volume.remove(&claim)
            && let Some(claims) = self.pv_claims.get_mut(&pv)
        {
            claims.remove(&claim);
            if claims.is_empty() {
                self.pv_claims.remove(&pv);
            }
        }
        if let Some(pv) = pvc.and_then(|p| str_at(p, "/spec/volumeName")) {
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
        // Pods and PVCs are read only under `spec`: the metadata (with its
        // managedFields) and status of every pod update are skipped unparsed.
        #[derive(serde::Deserialize)]
        struct Spec {
            #[serde(default)]
            spec: Value,
        }
        let parsed: Option<Value> = value.and_then(|v| match serde_json::from_slice::<Spec>(v) {
            Ok(v) => Some(serde_json::json!({"spec": v.spec})),
            Err(err) => {
                tracing::warn!(%key, %err, "stored object does not parse; left out of the node graph");
                None
            }
        });
        if let Some((ns, name)) = split(key, PODS) {
            self.set_pod(&ns, &name, parsed.as_ref());
        } else if let Some((ns, name)) = split(key, PVCS) {
            self.set_pvc(&ns, &name, parsed.as_ref());
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
    use serde_json::json;

    use super::*;

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
        g.set_pod("d", "web", Some(&pod("a")));
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
    fn pvcs_lead_on_to_their_volumes() {
        let mut g = Graph::default();
        g.set_pvc("d", "data", Some(&json!({"spec": {"volumeName": "pv-1"}})));
        assert!(!g.has_path("a", Kind::PersistentVolume, "", "pv-1"));
        g.set_pod("d", "web", Some(&pod("a")));
        assert!(g.has_path("a", Kind::PersistentVolume, "", "pv-1"));
        g.set_pvc("d", "data", None);
        assert!(!g.has_path("a", Kind::PersistentVolume, "", "pv-1"));
    }

    #[test]
    fn moving_or_deleting_a_pod_removes_its_edges() {
        let mut g = Graph::default();
        g.set_pod("d", "web", Some(&pod("a")));
        let mut other = pod("a");
        other["metadata"]["name"] = json!("web2");
        g.set_pod("d", "web2", Some(&other));
        g.set_pod("d", "web", None);
        // Still reached through the second pod.
        assert!(g.has_path("a", Kind::Secret, "d", "pull"));
        g.set_pod("d", "web2", Some(&pod("b")));
        assert!(!g.has_path("a", Kind::Secret, "d", "pull"));
        assert!(g.has_path("b", Kind::Secret, "d", "pull"));
        let mut unscheduled = pod("");
        unscheduled["spec"]
            .as_object_mut()
            .unwrap()
            .remove("nodeName");
        g.set_pod("d", "web2", Some(&unscheduled));
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
