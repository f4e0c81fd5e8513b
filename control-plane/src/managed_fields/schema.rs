//! What server-side apply needs to know of a field's schema: whether a list
//! is associative (and by which keys), a set, or atomic, and which structs
//! and maps are atomic. Types are found through the strategic-merge-patch
//! schema index (`patch::merge_keys`); the list types are upstream's
//! `x-kubernetes-list-type`/`-list-map-keys`/`-map-type` markers, which the
//! k8s-openapi schemas do not carry.

use std::collections::HashMap;
use std::sync::OnceLock;

use serde_json::{Value, json};

use super::path::PathElement;
use crate::patch::merge_keys::{self, Node};

/// How a list merges and is owned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListKind {
    /// One owner for the whole list.
    Atomic,
    /// Items are owned by value (`v:`).
    Set,
    /// Items are owned by their key fields (`k:`).
    Map(&'static [&'static str]),
}

/// What a value at some place in an object is, for ownership.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    pub node: Node,
    /// For list values: how the list is owned.
    pub list: ListKind,
    /// A struct or map owned as a whole.
    pub atomic: bool,
}

impl Shape {
    /// The shape of the top-level object of `apiVersion`/`kind`.
    pub fn root(api_version: &str, kind: &str) -> Shape {
        Shape {
            node: merge_keys::root(api_version, kind),
            list: ListKind::Atomic,
            atomic: false,
        }
    }

    /// The shape of `field` of a map at this place.
    pub fn field(&self, field: &str) -> Shape {
        let meta = merge_keys::lookup(self.node, field);
        let (list, atomic_map) = match self.node {
            Node::Def(def) => match tables().fields.get(&(def, field)) {
                Some(Kind::List(kind)) => (*kind, false),
                Some(Kind::AtomicMap) => (ListKind::Atomic, true),
                None => (ListKind::Atomic, false),
            },
            _ => (ListKind::Atomic, false),
        };
        let atomic_struct = match meta.node {
            Node::Def(def) => tables().atomic_structs.contains_key(def),
            _ => false,
        };
        Shape {
            node: meta.node,
            list,
            atomic: atomic_map || atomic_struct,
        }
    }

    /// The shape of the items of a list at this place.
    pub fn item(&self) -> Shape {
        let atomic = match self.node {
            Node::Def(def) => tables().atomic_structs.contains_key(def),
            _ => false,
        };
        Shape {
            node: self.node,
            list: ListKind::Atomic,
            atomic,
        }
    }

    /// Whether a list at this place has owned items.
    pub fn granular_list(&self) -> bool {
        self.list != ListKind::Atomic
    }

    /// The path element of item `index` of a granular list.
    pub fn item_element(&self, index: usize, item: &Value) -> PathElement {
        match self.list {
            ListKind::Set => PathElement::Value(item.clone()),
            ListKind::Map(keys) => {
                let mut fields: Vec<(String, Value)> = keys
                    .iter()
                    .filter_map(|k| {
                        let v = item.get(*k).filter(|v| !v.is_null()).cloned();
                        v.or_else(|| key_default(k)).map(|v| (k.to_string(), v))
                    })
                    .collect();
                if fields.is_empty() {
                    return PathElement::Index(index);
                }
                fields.sort_by(|a, b| a.0.cmp(&b.0));
                PathElement::Key(fields)
            }
            ListKind::Atomic => PathElement::Index(index),
        }
    }
}

/// The schema default of a key field the item may omit (`protocol` of
/// ports defaults to TCP, so `{"containerPort":80}` is keyed with it).
fn key_default(key: &str) -> Option<Value> {
    (key == "protocol").then(|| json!("TCP"))
}

enum Kind {
    List(ListKind),
    AtomicMap,
}

struct Tables {
    fields: HashMap<(&'static str, &'static str), Kind>,
    atomic_structs: HashMap<&'static str, ()>,
}

fn tables() -> &'static Tables {
    static TABLES: OnceLock<Tables> = OnceLock::new();
    TABLES.get_or_init(|| {
        let mut fields = HashMap::new();
        for (def, field, keys) in LIST_MAPS {
            fields.insert((*def, *field), Kind::List(ListKind::Map(keys)));
        }
        for (def, field) in LIST_SETS {
            fields.insert((*def, *field), Kind::List(ListKind::Set));
        }
        for (def, field) in ATOMIC_MAPS {
            fields.insert((*def, *field), Kind::AtomicMap);
        }
        let atomic_structs = ATOMIC_STRUCTS.iter().map(|d| (*d, ())).collect();
        Tables {
            fields,
            atomic_structs,
        }
    })
}

/// `x-kubernetes-list-type: map` fields and their keys (from the
/// k8s-openapi v1_33 `DeepMerge` impls, with upstream's two-key ports).
const LIST_MAPS: &[(&str, &str, &[&str])] = &[
    (
        "io.k8s.api.admissionregistration.v1.MutatingWebhook",
        "matchConditions",
        &["name"],
    ),
    (
        "io.k8s.api.admissionregistration.v1.MutatingWebhookConfiguration",
        "webhooks",
        &["name"],
    ),
    (
        "io.k8s.api.admissionregistration.v1.ValidatingAdmissionPolicySpec",
        "matchConditions",
        &["name"],
    ),
    (
        "io.k8s.api.admissionregistration.v1.ValidatingAdmissionPolicySpec",
        "variables",
        &["name"],
    ),
    (
        "io.k8s.api.admissionregistration.v1.ValidatingAdmissionPolicyStatus",
        "conditions",
        &["type"],
    ),
    (
        "io.k8s.api.admissionregistration.v1.ValidatingWebhook",
        "matchConditions",
        &["name"],
    ),
    (
        "io.k8s.api.admissionregistration.v1.ValidatingWebhookConfiguration",
        "webhooks",
        &["name"],
    ),
    (
        "io.k8s.api.apps.v1.DaemonSetStatus",
        "conditions",
        &["type"],
    ),
    (
        "io.k8s.api.apps.v1.DeploymentStatus",
        "conditions",
        &["type"],
    ),
    (
        "io.k8s.api.apps.v1.ReplicaSetStatus",
        "conditions",
        &["type"],
    ),
    (
        "io.k8s.api.apps.v1.StatefulSetStatus",
        "conditions",
        &["type"],
    ),
    (
        "io.k8s.api.autoscaling.v2.HorizontalPodAutoscalerStatus",
        "conditions",
        &["type"],
    ),
    ("io.k8s.api.batch.v1.JobStatus", "conditions", &["type"]),
    (
        "io.k8s.api.certificates.v1.CertificateSigningRequestStatus",
        "conditions",
        &["type"],
    ),
    (
        "io.k8s.api.core.v1.ComponentStatus",
        "conditions",
        &["type"],
    ),
    ("io.k8s.api.core.v1.Container", "env", &["name"]),
    (
        "io.k8s.api.core.v1.Container",
        "ports",
        &["containerPort", "protocol"],
    ),
    (
        "io.k8s.api.core.v1.Container",
        "volumeDevices",
        &["devicePath"],
    ),
    (
        "io.k8s.api.core.v1.Container",
        "volumeMounts",
        &["mountPath"],
    ),
    (
        "io.k8s.api.core.v1.ContainerStatus",
        "allocatedResourcesStatus",
        &["name"],
    ),
    (
        "io.k8s.api.core.v1.ContainerStatus",
        "volumeMounts",
        &["mountPath"],
    ),
    ("io.k8s.api.core.v1.EphemeralContainer", "env", &["name"]),
    (
        "io.k8s.api.core.v1.EphemeralContainer",
        "ports",
        &["containerPort", "protocol"],
    ),
    (
        "io.k8s.api.core.v1.EphemeralContainer",
        "volumeDevices",
        &["devicePath"],
    ),
    (
        "io.k8s.api.core.v1.EphemeralContainer",
        "volumeMounts",
        &["mountPath"],
    ),
    (
        "io.k8s.api.core.v1.NamespaceStatus",
        "conditions",
        &["type"],
    ),
    ("io.k8s.api.core.v1.NodeStatus", "addresses", &["type"]),
    ("io.k8s.api.core.v1.NodeStatus", "conditions", &["type"]),
    (
        "io.k8s.api.core.v1.PersistentVolumeClaimStatus",
        "conditions",
        &["type"],
    ),
    ("io.k8s.api.core.v1.PodSpec", "containers", &["name"]),
    (
        "io.k8s.api.core.v1.PodSpec",
        "ephemeralContainers",
        &["name"],
    ),
    ("io.k8s.api.core.v1.PodSpec", "hostAliases", &["ip"]),
    ("io.k8s.api.core.v1.PodSpec", "imagePullSecrets", &["name"]),
    ("io.k8s.api.core.v1.PodSpec", "initContainers", &["name"]),
    ("io.k8s.api.core.v1.PodSpec", "resourceClaims", &["name"]),
    ("io.k8s.api.core.v1.PodSpec", "schedulingGates", &["name"]),
    (
        "io.k8s.api.core.v1.PodSpec",
        "topologySpreadConstraints",
        &["topologyKey", "whenUnsatisfiable"],
    ),
    ("io.k8s.api.core.v1.PodSpec", "volumes", &["name"]),
    ("io.k8s.api.core.v1.PodStatus", "conditions", &["type"]),
    ("io.k8s.api.core.v1.PodStatus", "hostIPs", &["ip"]),
    ("io.k8s.api.core.v1.PodStatus", "podIPs", &["ip"]),
    (
        "io.k8s.api.core.v1.PodStatus",
        "resourceClaimStatuses",
        &["name"],
    ),
    (
        "io.k8s.api.core.v1.ReplicationControllerStatus",
        "conditions",
        &["type"],
    ),
    (
        "io.k8s.api.core.v1.ResourceRequirements",
        "claims",
        &["name"],
    ),
    ("io.k8s.api.core.v1.ServiceAccount", "secrets", &["name"]),
    (
        "io.k8s.api.core.v1.ServiceSpec",
        "ports",
        &["port", "protocol"],
    ),
    ("io.k8s.api.core.v1.ServiceStatus", "conditions", &["type"]),
    (
        "io.k8s.api.policy.v1.PodDisruptionBudgetStatus",
        "conditions",
        &["type"],
    ),
    ("io.k8s.api.storage.v1.CSINodeSpec", "drivers", &["name"]),
    (
        "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.CustomResourceDefinitionStatus",
        "conditions",
        &["type"],
    ),
    (
        "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
        "ownerReferences",
        &["uid"],
    ),
    (
        "io.k8s.kube-aggregator.pkg.apis.apiregistration.v1.APIServiceStatus",
        "conditions",
        &["type"],
    ),
];

/// `x-kubernetes-list-type: set` fields.
const LIST_SETS: &[(&str, &str)] = &[
    (
        "io.k8s.api.admissionregistration.v1.ValidatingAdmissionPolicyBindingSpec",
        "validationActions",
    ),
    (
        "io.k8s.api.batch.v1.PodFailurePolicyOnExitCodesRequirement",
        "values",
    ),
    ("io.k8s.api.batch.v1.UncountedTerminatedPods", "failed"),
    ("io.k8s.api.batch.v1.UncountedTerminatedPods", "succeeded"),
    ("io.k8s.api.core.v1.NodeSpec", "podCIDRs"),
    ("io.k8s.api.discovery.v1.Endpoint", "addresses"),
    (
        "io.k8s.api.storage.v1.CSIDriverSpec",
        "volumeLifecycleModes",
    ),
    (
        "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
        "finalizers",
    ),
];

/// `x-kubernetes-map-type: atomic` map fields.
const ATOMIC_MAPS: &[(&str, &str)] = &[
    ("io.k8s.api.core.v1.PodSpec", "nodeSelector"),
    ("io.k8s.api.core.v1.ReplicationControllerSpec", "selector"),
    ("io.k8s.api.core.v1.ServiceSpec", "selector"),
    ("io.k8s.api.node.v1.Scheduling", "nodeSelector"),
];

/// `+structType=atomic` definitions (upstream's `x-kubernetes-map-type:
/// atomic` on the type).
const ATOMIC_STRUCTS: &[&str] = &[
    "io.k8s.apimachinery.pkg.apis.meta.v1.LabelSelector",
    "io.k8s.api.core.v1.ConfigMapEnvSource",
    "io.k8s.api.core.v1.ConfigMapKeySelector",
    "io.k8s.api.core.v1.ConfigMapProjection",
    "io.k8s.api.core.v1.LocalObjectReference",
    "io.k8s.api.core.v1.NodeSelector",
    "io.k8s.api.core.v1.NodeSelectorTerm",
    "io.k8s.api.core.v1.ObjectFieldSelector",
    "io.k8s.api.core.v1.ObjectReference",
    "io.k8s.api.core.v1.ResourceFieldSelector",
    "io.k8s.api.core.v1.SecretEnvSource",
    "io.k8s.api.core.v1.SecretKeySelector",
    "io.k8s.api.core.v1.SecretProjection",
    "io.k8s.api.core.v1.SecretReference",
    "io.k8s.api.core.v1.TopologySelectorTerm",
    "io.k8s.api.core.v1.TypedLocalObjectReference",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containers_are_keyed_by_name_and_ports_by_port_and_protocol() {
        let d = Shape::root("apps/v1", "Deployment");
        let pod_spec = d.field("spec").field("template").field("spec");
        let containers = pod_spec.field("containers");
        assert_eq!(containers.list, ListKind::Map(&["name"]));
        let item = containers.item();
        let ports = item.field("ports");
        assert_eq!(
            ports.item_element(0, &json!({"containerPort": 80})),
            PathElement::Key(vec![
                ("containerPort".into(), json!(80)),
                ("protocol".into(), json!("TCP"))
            ])
        );
        assert!(!item.field("args").granular_list());
        assert!(d.field("spec").field("selector").atomic);
        assert!(pod_spec.field("nodeSelector").atomic);
        assert!(!d.field("metadata").field("labels").atomic);
    }

    #[test]
    fn finalizers_are_a_set_and_unknown_kinds_are_atomic_lists() {
        let meta = Shape::root("v1", "ConfigMap").field("metadata");
        assert_eq!(meta.field("finalizers").list, ListKind::Set);
        let crd = Shape::root("example.com/v1", "Foo");
        assert_eq!(crd.field("spec").field("items").list, ListKind::Atomic);
    }

    #[test]
    fn every_table_entry_names_a_known_definition() {
        let missing: Vec<String> = LIST_MAPS
            .iter()
            .map(|(def, field, _)| (*def, *field))
            .chain(LIST_SETS.iter().chain(ATOMIC_MAPS).copied())
            .filter(|(def, field)| !merge_keys::has_field(Node::Def(def), field))
            .map(|(def, field)| format!("{def}.{field}"))
            .collect();
        assert!(missing.is_empty(), "not in the schema index: {missing:?}");
    }
}
