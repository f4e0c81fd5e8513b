//! Patch metadata of the built-in types: which list fields merge (and by
//! which key) instead of being replaced. The field types come from the
//! k8s-openapi schemas of the catalog; the strategies are upstream's
//! `patchStrategy`/`patchMergeKey` struct tags of k8s.io/api, which the
//! k8s-openapi schemas do not carry.

use std::collections::HashMap;
use std::sync::OnceLock;

use schemars::SchemaGenerator;
use serde_json::Value;

use crate::resources;

/// `(definition, field, merge key)` of every `patchStrategy:"merge"` field;
/// an empty merge key marks a merged list of primitives.
const MERGE_FIELDS: &[(&str, &str, &str)] = &[
    (
        "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
        "finalizers",
        "",
    ),
    (
        "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
        "ownerReferences",
        "uid",
    ),
    ("io.k8s.api.core.v1.PodSpec", "volumes", "name"),
    ("io.k8s.api.core.v1.PodSpec", "initContainers", "name"),
    ("io.k8s.api.core.v1.PodSpec", "containers", "name"),
    ("io.k8s.api.core.v1.PodSpec", "ephemeralContainers", "name"),
    ("io.k8s.api.core.v1.PodSpec", "imagePullSecrets", "name"),
    ("io.k8s.api.core.v1.PodSpec", "hostAliases", "ip"),
    (
        "io.k8s.api.core.v1.PodSpec",
        "topologySpreadConstraints",
        "topologyKey",
    ),
    ("io.k8s.api.core.v1.PodSpec", "schedulingGates", "name"),
    ("io.k8s.api.core.v1.PodSpec", "resourceClaims", "name"),
    ("io.k8s.api.core.v1.Container", "ports", "containerPort"),
    ("io.k8s.api.core.v1.Container", "env", "name"),
    ("io.k8s.api.core.v1.Container", "volumeMounts", "mountPath"),
    (
        "io.k8s.api.core.v1.Container",
        "volumeDevices",
        "devicePath",
    ),
    (
        "io.k8s.api.core.v1.EphemeralContainer",
        "ports",
        "containerPort",
    ),
    ("io.k8s.api.core.v1.EphemeralContainer", "env", "name"),
    (
        "io.k8s.api.core.v1.EphemeralContainer",
        "volumeMounts",
        "mountPath",
    ),
    (
        "io.k8s.api.core.v1.EphemeralContainer",
        "volumeDevices",
        "devicePath",
    ),
    ("io.k8s.api.core.v1.PodStatus", "conditions", "type"),
    ("io.k8s.api.core.v1.PodStatus", "podIPs", "ip"),
    ("io.k8s.api.core.v1.PodStatus", "hostIPs", "ip"),
    (
        "io.k8s.api.core.v1.PodStatus",
        "resourceClaimStatuses",
        "name",
    ),
    ("io.k8s.api.core.v1.ServiceSpec", "ports", "port"),
    ("io.k8s.api.core.v1.ServiceStatus", "conditions", "type"),
    ("io.k8s.api.core.v1.ServiceAccount", "secrets", "name"),
    ("io.k8s.api.core.v1.NodeSpec", "podCIDRs", ""),
    ("io.k8s.api.core.v1.NodeStatus", "conditions", "type"),
    ("io.k8s.api.core.v1.NodeStatus", "addresses", "type"),
    ("io.k8s.api.core.v1.NamespaceStatus", "conditions", "type"),
    (
        "io.k8s.api.core.v1.PersistentVolumeClaimStatus",
        "conditions",
        "type",
    ),
    (
        "io.k8s.api.core.v1.ReplicationControllerStatus",
        "conditions",
        "type",
    ),
    ("io.k8s.api.core.v1.ComponentStatus", "conditions", "type"),
    ("io.k8s.api.apps.v1.DeploymentStatus", "conditions", "type"),
    ("io.k8s.api.apps.v1.ReplicaSetStatus", "conditions", "type"),
    ("io.k8s.api.apps.v1.DaemonSetStatus", "conditions", "type"),
    ("io.k8s.api.apps.v1.StatefulSetStatus", "conditions", "type"),
    ("io.k8s.api.batch.v1.JobStatus", "conditions", "type"),
    (
        "io.k8s.api.autoscaling.v2.HorizontalPodAutoscalerStatus",
        "conditions",
        "type",
    ),
    (
        "io.k8s.api.policy.v1.PodDisruptionBudgetStatus",
        "conditions",
        "type",
    ),
    ("io.k8s.api.storage.v1.CSINodeSpec", "drivers", "name"),
    (
        "io.k8s.kube-aggregator.pkg.apis.apiregistration.v1.APIServiceStatus",
        "conditions",
        "type",
    ),
];

/// Where a value sits in the schema: a definition, a map whose values are
/// of a definition, or a place without known type (free-form fields and
/// kinds outside the catalog, where every list is replaced).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Node {
    Def(&'static str),
    MapOf(&'static str),
    Unknown,
}

/// The patch metadata of one field.
#[derive(Debug, Clone, Copy)]
pub struct FieldMeta {
    /// The type of the field's value (of its items for lists).
    pub node: Node,
    /// `patchStrategy:"merge"`.
    pub merge: bool,
    /// `patchMergeKey`, `None` for lists of primitives.
    pub merge_key: Option<&'static str>,
}

impl FieldMeta {
    pub const UNKNOWN: FieldMeta = FieldMeta {
        node: Node::Unknown,
        merge: false,
        merge_key: None,
    };
}

/// The schema definitions of the catalog's types, by name, and the
/// definition of each catalog kind.
struct Index {
    defs: HashMap<String, Value>,
    roots: HashMap<(&'static str, &'static str), String>,
}

fn index() -> &'static Index {
    static INDEX: OnceLock<Index> = OnceLock::new();
    INDEX.get_or_init(|| {
        let mut generator = SchemaGenerator::default();
        let mut roots = HashMap::new();
        for r in resources::catalog() {
            let reference = (r.schema)(&mut generator);
            if let Some(name) = ref_name(reference.as_value()) {
                roots.insert((r.api_version, r.kind), name.to_string());
            }
        }
        let defs = generator
            .definitions()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Index { defs, roots }
    })
}

fn definitions() -> &'static HashMap<String, Value> {
    &index().defs
}

/// The definition name at the end of a `$ref`.
fn ref_name(schema: &Value) -> Option<&str> {
    schema.get("$ref")?.as_str()?.rsplit('/').next()
}

/// The definition a `$ref` points to.
fn def_of_ref(schema: &Value) -> Option<&'static str> {
    let name = ref_name(schema)?;
    definitions().get_key_value(name).map(|(k, _)| k.as_str())
}

/// The schema node of the top-level object of `apiVersion`/`kind`.
pub fn root(api_version: &str, kind: &str) -> Node {
    index()
        .roots
        .iter()
        .find(|((v, k), _)| *v == api_version && *k == kind)
        .map_or(Node::Unknown, |(_, def)| Node::Def(def.as_str()))
}

/// The patch metadata of `field` of a value at `node`.
pub fn lookup(node: Node, field: &str) -> FieldMeta {
    let def = match node {
        Node::Unknown => return FieldMeta::UNKNOWN,
        Node::MapOf(def) => {
            return FieldMeta {
                node: Node::Def(def),
                ..FieldMeta::UNKNOWN
            };
        }
        Node::Def(def) => def,
    };
    let child = definitions()
        .get(def)
        .and_then(|schema| schema.get("properties"))
        .and_then(|props| props.get(field))
        .map_or(Node::Unknown, child_node);
    let strategy = MERGE_FIELDS
        .iter()
        .find(|(d, f, _)| *d == def && *f == field);
    FieldMeta {
        node: child,
        merge: strategy.is_some(),
        merge_key: strategy.and_then(|(_, _, key)| (!key.is_empty()).then_some(*key)),
    }
}

#[cfg(test)]
/// Whether the definition at `node` has a property `field`.
pub fn has_field(node: Node, field: &str) -> bool {
    let Node::Def(def) = node else {
        return false;
    };
    definitions()
        .get(def)
        .and_then(|schema| schema.get("properties"))
        .and_then(|props| props.get(field))
        .is_some()
}

/// The node of a property schema: its definition, that of its items, or
/// that of its map values.
fn child_node(prop: &Value) -> Node {
    if let Some(def) = def_of_ref(prop) {
        return Node::Def(def);
    }
    if let Some(def) = prop.get("items").and_then(def_of_ref) {
        return Node::Def(def);
    }
    if let Some(def) = prop.get("additionalProperties").and_then(def_of_ref) {
        return Node::MapOf(def);
    }
    Node::Unknown
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deployment_containers_merge_by_name() {
        let root = root("apps/v1", "Deployment");
        assert_eq!(root, Node::Def("io.k8s.api.apps.v1.Deployment"));
        let spec = lookup(root, "spec");
        let template = lookup(spec.node, "template");
        let pod_spec = lookup(template.node, "spec");
        assert_eq!(pod_spec.node, Node::Def("io.k8s.api.core.v1.PodSpec"));
        let containers = lookup(pod_spec.node, "containers");
        assert!(containers.merge);
        assert_eq!(containers.merge_key, Some("name"));
        assert_eq!(containers.node, Node::Def("io.k8s.api.core.v1.Container"));
        let env = lookup(containers.node, "env");
        assert_eq!(env.merge_key, Some("name"));
        let tolerations = lookup(pod_spec.node, "tolerations");
        assert!(!tolerations.merge);
    }

    #[test]
    fn every_table_entry_names_a_real_field() {
        for (def, field, _) in MERGE_FIELDS {
            let schema = definitions().get(*def);
            assert!(
                schema
                    .and_then(|s| s.get("properties"))
                    .and_then(|p| p.get(*field))
                    .is_some(),
                "{def}.{field}"
            );
        }
    }

    #[test]
    fn finalizers_merge_as_primitives() {
        let meta = lookup(root("v1", "ConfigMap"), "metadata");
        let finalizers = lookup(meta.node, "finalizers");
        assert!(finalizers.merge);
        assert_eq!(finalizers.merge_key, None);
        assert_eq!(
            lookup(root("example.com/v1", "Foo"), "spec").node,
            Node::Unknown
        );
    }
}
