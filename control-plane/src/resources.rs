//! The catalog of built-in resource types that r8s-server serves.
//!
//! Every entry is derived from a k8s-openapi type (group, version, kind, plural,
//! scope, JSON schema, typed decoding); only what k8s-openapi does not carry
//! (short names, categories, subresources, verbs) is written here. Discovery,
//! OpenAPI, routing and validation all read this one table.

use k8s_openapi::{ClusterResourceScope, ListableResource, NamespaceResourceScope};
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::{Serialize, de::DeserializeOwned};

/// The scope of a resource, read at run time from the k8s-openapi scope type.
pub trait ScopeKind {
    const NAMESPACED: bool;
}
impl ScopeKind for NamespaceResourceScope {
    const NAMESPACED: bool = true;
}
impl ScopeKind for ClusterResourceScope {
    const NAMESPACED: bool = false;
}

/// The verbs of a normal stored resource.
pub const CRUD_VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];
/// Resources that are only ever created (reviews, bindings).
pub const CREATE_ONLY: &[&str] = &["create"];
/// Read-only resources (componentstatuses).
pub const READ_ONLY: &[&str] = &["get", "list"];

/// One served resource type (one group/version/plural).
#[derive(Clone, Copy)]
pub struct ResourceType {
    pub group: &'static str,
    pub version: &'static str,
    /// `apiVersion` as written in objects: `v1` or `apps/v1`.
    pub api_version: &'static str,
    pub kind: &'static str,
    pub list_kind: &'static str,
    /// Plural, lower case: the URL path segment (`pods`).
    pub plural: &'static str,
    /// Singular, lower case (`pod`).
    pub singular: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    /// Subresources besides the object itself: `status`, `scale`, `log`, `exec`...
    pub subresources: &'static [&'static str],
    pub verbs: &'static [&'static str],
    /// Where objects of this type are stored; types that share storage with
    /// another version (events.k8s.io Event and core Event, autoscaling v1 and
    /// v2) name the same prefix and are converted at the handler edge.
    pub storage_plural: &'static str,
    /// Adds this type's JSON schema to a generator and returns the reference to it.
    pub schema: fn(&mut SchemaGenerator) -> Schema,
    /// Decodes a JSON object into the typed k8s-openapi struct and back:
    /// rejects structurally wrong input and normalises what it keeps.
    pub roundtrip: fn(&serde_json::Value) -> Result<serde_json::Value, serde_json::Error>,
}

impl ResourceType {
    /// Whether the resource supports a verb.
    pub fn has_verb(&self, verb: &str) -> bool {
        self.verbs.contains(&verb)
    }

    /// Whether the resource has a subresource (`status`, `scale`...).
    pub fn has_subresource(&self, sub: &str) -> bool {
        self.subresources.contains(&sub)
    }

    /// `group/version`, or `version` for the core group.
    pub fn group_version(&self) -> &'static str {
        self.api_version
    }
}

impl std::fmt::Debug for ResourceType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.api_version, self.plural)
    }
}

fn schema_of<T: JsonSchema>(generator: &mut SchemaGenerator) -> Schema {
    generator.subschema_for::<T>()
}

fn roundtrip_of<T: DeserializeOwned + Serialize>(
    value: &serde_json::Value,
) -> Result<serde_json::Value, serde_json::Error> {
    // Deserializing from a borrowed Value, without cloning it first.
    let typed = T::deserialize(value)?;
    serde_json::to_value(typed)
}

struct Extra {
    short_names: &'static [&'static str],
    categories: &'static [&'static str],
    subresources: &'static [&'static str],
    verbs: &'static [&'static str],
    storage_plural: Option<&'static str>,
}

const NONE: &[&str] = &[];
const ALL: &[&str] = &["all"];

fn entry<T>(extra: Extra) -> ResourceType
where
    T: ListableResource + JsonSchema + DeserializeOwned + Serialize,
    T::Scope: ScopeKind,
{
    let singular: &'static str = Box::leak(T::KIND.to_ascii_lowercase().into_boxed_str());
    ResourceType {
        group: T::GROUP,
        version: T::VERSION,
        api_version: T::API_VERSION,
        kind: T::KIND,
        list_kind: T::LIST_KIND,
        plural: T::URL_PATH_SEGMENT,
        singular,
        namespaced: <T::Scope as ScopeKind>::NAMESPACED,
        short_names: extra.short_names,
        categories: extra.categories,
        subresources: extra.subresources,
        verbs: extra.verbs,
        storage_plural: extra.storage_plural.unwrap_or(T::URL_PATH_SEGMENT),
        schema: schema_of::<T>,
        roundtrip: roundtrip_of::<T>,
    }
}

macro_rules! res {
    ($ty:ty) => {
        res!($ty, NONE, NONE, NONE)
    };
    ($ty:ty, $short:expr) => {
        res!($ty, $short, NONE, NONE)
    };
    ($ty:ty, $short:expr, $cat:expr, $sub:expr) => {
        res!($ty, $short, $cat, $sub, CRUD_VERBS, None)
    };
    ($ty:ty, $short:expr, $cat:expr, $sub:expr, $verbs:expr, $storage:expr) => {
        entry::<$ty>(Extra {
            short_names: $short,
            categories: $cat,
            subresources: $sub,
            verbs: $verbs,
            storage_plural: $storage,
        })
    };
}

fn build_catalog() -> Vec<ResourceType> {
    use k8s_openapi::api::{
        admissionregistration::v1 as admreg, apps::v1 as apps, autoscaling::v1 as as1,
        autoscaling::v2 as as2, batch::v1 as batch, certificates::v1 as certs,
        coordination::v1 as coord, core::v1 as core, discovery::v1 as disc, events::v1 as events,
        networking::v1 as net, node::v1 as node, policy::v1 as policy, rbac::v1 as rbac,
        scheduling::v1 as sched, storage::v1 as storage,
    };
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1 as apiext;
    use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1 as apireg;
    const STATUS: &[&str] = &["status"];
    const STATUS_SCALE: &[&str] = &["status", "scale"];
    vec![
        // core/v1
        res!(core::ComponentStatus, &["cs"], NONE, NONE, READ_ONLY, None),
        res!(core::ConfigMap, &["cm"]),
        res!(core::Endpoints, &["ep"]),
        res!(core::Event, &["ev"]),
        res!(core::LimitRange, &["limits"]),
        res!(core::Namespace, &["ns"], NONE, &["status", "finalize"]),
        res!(core::Node, &["no"], NONE, &["status", "proxy"]),
        res!(core::PersistentVolumeClaim, &["pvc"], NONE, STATUS),
        res!(core::PersistentVolume, &["pv"], NONE, STATUS),
        res!(
            core::Pod,
            &["po"],
            ALL,
            &[
                "status",
                "binding",
                "eviction",
                "log",
                "exec",
                "attach",
                "portforward",
                "proxy",
                "ephemeralcontainers",
                "resize"
            ]
        ),
        res!(core::PodTemplate),
        res!(core::ReplicationController, &["rc"], ALL, STATUS_SCALE),
        res!(core::ResourceQuota, &["quota"], NONE, STATUS),
        res!(core::Secret),
        res!(core::ServiceAccount, &["sa"], NONE, &["token"]),
        res!(core::Service, &["svc"], ALL, &["status", "proxy"]),
        // admissionregistration.k8s.io/v1
        res!(
            admreg::MutatingWebhookConfiguration,
            NONE,
            &["api-extensions"],
            NONE
        ),
        res!(
            admreg::ValidatingAdmissionPolicy,
            NONE,
            &["api-extensions"],
            STATUS
        ),
        res!(
            admreg::ValidatingAdmissionPolicyBinding,
            NONE,
            &["api-extensions"],
            NONE
        ),
        res!(
            admreg::ValidatingWebhookConfiguration,
            NONE,
            &["api-extensions"],
            NONE
        ),
        // apiextensions.k8s.io/v1
        res!(
            apiext::CustomResourceDefinition,
            &["crd", "crds"],
            &["api-extensions"],
            STATUS
        ),
        // apiregistration.k8s.io/v1
        res!(apireg::APIService, NONE, &["api-extensions"], STATUS),
        // apps/v1
        res!(apps::ControllerRevision),
        res!(apps::DaemonSet, &["ds"], ALL, STATUS),
        res!(apps::Deployment, &["deploy"], ALL, STATUS_SCALE),
        res!(apps::ReplicaSet, &["rs"], ALL, STATUS_SCALE),
        res!(apps::StatefulSet, &["sts"], ALL, STATUS_SCALE),
        // autoscaling: v2 is the storage version, v1 is converted at the edge
        res!(
            as1::HorizontalPodAutoscaler,
            &["hpa"],
            ALL,
            STATUS,
            CRUD_VERBS,
            Some("horizontalpodautoscalers")
        ),
        res!(as2::HorizontalPodAutoscaler, &["hpa"], ALL, STATUS),
        // batch/v1
        res!(batch::CronJob, &["cj"], ALL, STATUS),
        res!(batch::Job, NONE, ALL, STATUS),
        // certificates.k8s.io/v1
        res!(
            certs::CertificateSigningRequest,
            &["csr"],
            NONE,
            &["status", "approval"]
        ),
        // coordination.k8s.io/v1
        res!(coord::Lease),
        // discovery.k8s.io/v1
        res!(disc::EndpointSlice),
        // events.k8s.io/v1 shares storage with core/v1 events
        res!(
            events::Event,
            &["ev"],
            NONE,
            NONE,
            CRUD_VERBS,
            Some("events")
        ),
        // networking.k8s.io/v1
        res!(net::IngressClass),
        res!(net::Ingress, &["ing"], NONE, STATUS),
        res!(net::NetworkPolicy, &["netpol"]),
        // node.k8s.io/v1
        res!(node::RuntimeClass),
        // policy/v1
        res!(policy::PodDisruptionBudget, &["pdb"], NONE, STATUS),
        // rbac.authorization.k8s.io/v1
        res!(rbac::ClusterRoleBinding),
        res!(rbac::ClusterRole),
        res!(rbac::RoleBinding),
        res!(rbac::Role),
        // scheduling.k8s.io/v1
        res!(sched::PriorityClass, &["pc"]),
        // storage.k8s.io/v1
        res!(storage::CSIDriver),
        res!(storage::CSINode),
        res!(storage::CSIStorageCapacity),
        res!(storage::StorageClass, &["sc"]),
        res!(storage::VolumeAttachment, NONE, NONE, STATUS),
    ]
}

/// All served resource types, in discovery order.
pub fn catalog() -> &'static [ResourceType] {
    static CATALOG: std::sync::OnceLock<Vec<ResourceType>> = std::sync::OnceLock::new();
    CATALOG.get_or_init(build_catalog)
}

type ByName = std::collections::HashMap<(&'static str, &'static str, &'static str), usize>;

/// Looks a resource up by group, version and plural (every request does).
pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static ResourceType> {
    static INDEX: std::sync::OnceLock<ByName> = std::sync::OnceLock::new();
    let index = INDEX.get_or_init(|| {
        let mut m = ByName::new();
        for (i, r) in catalog().iter().enumerate() {
            m.entry((r.group, r.version, r.plural)).or_insert(i);
        }
        m
    });
    index.get(&(group, version, plural)).map(|&i| &catalog()[i])
}

/// Looks a resource up by apiVersion and kind (as written in an object).
pub fn find_kind(api_version: &str, kind: &str) -> Option<&'static ResourceType> {
    catalog()
        .iter()
        .find(|r| r.api_version == api_version && r.kind == kind)
}

/// The served group versions, `(group, version)`, in discovery order; the
/// first version of a group is its preferred version.
pub fn group_versions() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    for r in catalog() {
        if !out.contains(&(r.group, r.version)) {
            out.push((r.group, r.version));
        }
    }
    // autoscaling/v2 is preferred over v1, as upstream.
    if let (Some(v1), Some(v2)) = (
        out.iter().position(|gv| *gv == ("autoscaling", "v1")),
        out.iter().position(|gv| *gv == ("autoscaling", "v2")),
    ) {
        out.swap(v1, v2);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_has_the_core_types_with_their_scope() {
        let pods = find("", "v1", "pods").expect("pods");
        assert!(pods.namespaced);
        assert_eq!(pods.kind, "Pod");
        assert_eq!(pods.list_kind, "PodList");
        let nodes = find("", "v1", "nodes").expect("nodes");
        assert!(!nodes.namespaced);
        assert_eq!(
            find_kind("apps/v1", "Deployment").unwrap().plural,
            "deployments"
        );
    }

    #[test]
    fn autoscaling_v2_is_preferred() {
        let gvs = group_versions();
        let v1 = gvs
            .iter()
            .position(|gv| *gv == ("autoscaling", "v1"))
            .unwrap();
        let v2 = gvs
            .iter()
            .position(|gv| *gv == ("autoscaling", "v2"))
            .unwrap();
        assert!(v2 < v1);
    }

    #[test]
    fn roundtrip_rejects_wrong_types() {
        let cm = find("", "v1", "configmaps").unwrap();
        let bad = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}, "data": {"k": 1}});
        assert!((cm.roundtrip)(&bad).is_err());
    }
}
