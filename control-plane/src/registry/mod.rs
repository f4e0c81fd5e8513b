//! Per-resource strategy: defaulting, validation, immutability, version
//! conversion, and the Service ClusterIP/NodePort allocators. No I/O.
//!
//! The handlers call, in order: `convert::to_storage` (shared-storage
//! versions), `default_object`, `prepare_update` (updates only), then
//! `validate_create` or `validate_update`; a non-empty cause list is a 422
//! whose message `invalid_message` builds. Services then go through
//! `allocator::allocate_service` (create) or
//! `allocator::update_service_allocations` (update).

use serde_json::{Value, json};

use crate::resources::ResourceType;

pub mod allocator;
pub mod config;
pub mod convert;
pub mod crd;
pub mod deployment;
pub mod field;
pub mod job;
pub mod json;
pub mod meta;
pub mod namespace;
pub mod networking;
pub mod pod;
pub mod rbac;
pub mod scaling;
pub mod service;

use deployment::Workload;
use json::{default_str, default_value, for_each_obj, obj_mut};
use meta::NameRule;

/// One field error of a 422 Invalid, as in `metav1.StatusCause`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cause {
    /// `FieldValueInvalid`, `FieldValueRequired`, `FieldValueDuplicate`,
    /// `FieldValueNotSupported`, `FieldValueForbidden`, `FieldValueTooLong`,
    /// `FieldValueNotFound`; `InternalError` from a full allocator (a 500).
    pub reason: String,
    /// The message, e.g. `Required value` or
    /// `Invalid value: "A": a lowercase RFC 1123 subdomain must consist of ...`.
    pub message: String,
    /// The field path, e.g. `metadata.name` or `spec.containers[0].image`.
    pub field: String,
}

impl std::fmt::Display for Cause {
    /// Upstream `field.Error.Error()`: `<field>: <message>`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// The message of a 422 Invalid Status, as upstream's `NewInvalid`:
/// `Deployment.apps "web" is invalid: spec.replicas: ...`, several causes
/// in brackets, duplicates dropped.
pub fn invalid_message(resource: &ResourceType, name: &str, causes: &[Cause]) -> String {
    invalid_message_of(resource.kind, resource.group, name, causes)
}

/// `invalid_message` for a kind outside the catalog (`Scale`, `Binding`).
pub fn invalid_message_of(kind: &str, group: &str, name: &str, causes: &[Cause]) -> String {
    let qualified = if group.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}.{group}")
    };
    let mut msgs: Vec<String> = Vec::new();
    for c in causes {
        let s = c.to_string();
        if !msgs.contains(&s) {
            msgs.push(s);
        }
    }
    let agg = match msgs.len() {
        1 => msgs.remove(0),
        _ => format!("[{}]", msgs.join(", ")),
    };
    format!("{qualified} {} is invalid: {agg}", field::go_quote(name))
}

fn name_rule(resource: &ResourceType) -> NameRule {
    match (resource.group, resource.kind) {
        ("", "Namespace") => NameRule::Dns1123Label,
        ("", "Service") => NameRule::Dns1035Label,
        ("apps", "StatefulSet") => NameRule::Dns1123Label,
        ("rbac.authorization.k8s.io", _) => NameRule::PathSegment,
        _ => NameRule::Dns1123Subdomain,
    }
}

fn workload(resource: &ResourceType) -> Option<Workload> {
    match resource.group {
        "apps" | "" => Workload::of_kind(resource.kind),
        _ => None,
    }
}

/// Fills in defaults on an object about to be created or updated (pod spec
/// defaults, service defaults, deployment strategy...), as upstream's
/// defaulting functions do. Jobs get their generated selector when
/// `metadata.uid` is already set.
pub fn default_object(resource: &ResourceType, object: &mut Value) {
    if let Some(w) = workload(resource) {
        deployment::default_workload(w, object);
        return;
    }
    match (resource.group, resource.kind) {
        ("", "Pod") => pod::default_pod(object),
        ("", "PodTemplate") => {
            if let Some(t) = object.as_object_mut().and_then(|o| obj_mut(o, "template")) {
                pod::default_template(t);
            }
        }
        ("", "Service") => service::default_service(object),
        ("", "Namespace") => namespace::default_namespace(object),
        ("", "Secret") => config::default_secret(object),
        ("batch", "Job") => job::default_job(object),
        ("batch", "CronJob") => job::default_cron_job(object),
        ("apiextensions.k8s.io", "CustomResourceDefinition") => crd::default_crd(object),
        _ => default_simple(resource, object),
    }
}

/// Defaults of the kinds with a few scalar defaults.
fn default_simple(resource: &ResourceType, object: &mut Value) {
    let Some(obj) = object.as_object_mut() else {
        return;
    };
    match (resource.group, resource.kind) {
        ("", "PersistentVolumeClaim") => {
            if let Some(spec) = obj_mut(obj, "spec") {
                default_str(spec, "volumeMode", "Filesystem");
            }
            if let Some(status) = obj_mut(obj, "status") {
                default_str(status, "phase", "Pending");
            }
        }
        ("", "PersistentVolume") => {
            if let Some(spec) = obj_mut(obj, "spec") {
                default_str(spec, "persistentVolumeReclaimPolicy", "Retain");
                default_str(spec, "volumeMode", "Filesystem");
            }
            if let Some(status) = obj_mut(obj, "status") {
                default_str(status, "phase", "Pending");
            }
        }
        ("", "Endpoints") => for_each_obj(obj, "subsets", |s| {
            for_each_obj(s, "ports", |p| default_str(p, "protocol", "TCP"));
        }),
        ("discovery.k8s.io", "EndpointSlice") => {
            for_each_obj(obj, "ports", |p| default_str(p, "protocol", "TCP"))
        }
        ("networking.k8s.io", "NetworkPolicy") => {
            if let Some(spec) = obj_mut(obj, "spec") {
                for dir in ["ingress", "egress"] {
                    for_each_obj(spec, dir, |rule| {
                        for_each_obj(rule, "ports", |p| default_str(p, "protocol", "TCP"));
                    });
                }
                let none = spec
                    .get("policyTypes")
                    .and_then(Value::as_array)
                    .is_none_or(Vec::is_empty);
                if none {
                    let mut types = vec![json!("Ingress")];
                    if spec
                        .get("egress")
                        .and_then(Value::as_array)
                        .is_some_and(|e| !e.is_empty())
                    {
                        types.push(json!("Egress"));
                    }
                    spec.insert("policyTypes".into(), Value::Array(types));
                }
            }
        }
        ("rbac.authorization.k8s.io", "RoleBinding" | "ClusterRoleBinding") => {
            for_each_obj(obj, "subjects", |s| {
                let group = match s.get("kind").and_then(Value::as_str) {
                    Some("User" | "Group") => "rbac.authorization.k8s.io",
                    _ => "",
                };
                if !group.is_empty() {
                    default_str(s, "apiGroup", group);
                }
            });
        }
        ("", "Node") => {
            // SetDefaults_NodeStatus: allocatable defaults to capacity.
            if let Some(status) = json::existing_obj_mut(obj, "status") {
                let no_alloc = status.get("allocatable").is_none_or(Value::is_null);
                if no_alloc && let Some(cap) = status.get("capacity").filter(|c| !c.is_null()) {
                    let cap = cap.clone();
                    status.insert("allocatable".into(), cap);
                }
            }
        }
        ("", "LimitRange") => {
            if let Some(spec) = json::existing_obj_mut(obj, "spec") {
                for_each_obj(spec, "limits", default_limit_range_item);
            }
        }
        ("storage.k8s.io", "StorageClass") => {
            default_str(obj, "reclaimPolicy", "Delete");
            default_str(obj, "volumeBindingMode", "Immediate");
        }
        ("scheduling.k8s.io", "PriorityClass") => {
            default_str(obj, "preemptionPolicy", "PreemptLowerPriority");
        }
        ("autoscaling", "HorizontalPodAutoscaler") => {
            if let Some(spec) = obj_mut(obj, "spec") {
                default_value(spec, "minReplicas", json!(1));
                let no_metrics = spec
                    .get("metrics")
                    .and_then(Value::as_array)
                    .is_none_or(Vec::is_empty);
                if resource.version == "v2" && no_metrics {
                    spec.insert(
                        "metrics".into(),
                        json!([{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}]),
                    );
                }
            }
        }
        (
            "admissionregistration.k8s.io",
            kind @ ("MutatingWebhookConfiguration" | "ValidatingWebhookConfiguration"),
        ) => {
            let mutating = kind == "MutatingWebhookConfiguration";
            for_each_obj(obj, "webhooks", |w| {
                default_str(w, "failurePolicy", "Fail");
                default_str(w, "matchPolicy", "Equivalent");
                default_value(w, "namespaceSelector", json!({}));
                default_value(w, "objectSelector", json!({}));
                default_value(w, "timeoutSeconds", json!(10));
                if mutating {
                    default_str(w, "reinvocationPolicy", "Never");
                }
                for_each_obj(w, "rules", |r| default_str(r, "scope", "*"));
                if let Some(svc) = json::existing_obj_mut(w, "clientConfig")
                    .and_then(|c| json::existing_obj_mut(c, "service"))
                {
                    default_value(svc, "port", json!(443));
                }
            });
        }
        _ => {}
    }
}

/// `SetDefaults_LimitRangeItem`: for containers, the default limit falls
/// back to max, the default request to the default limit, then to min.
fn default_limit_range_item(item: &mut serde_json::Map<String, Value>) {
    if item.get("type").and_then(Value::as_str) != Some("Container") {
        return;
    }
    let max = item
        .get("max")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let min = item
        .get("min")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    if let Some(default) = obj_mut(item, "default") {
        for (k, v) in max {
            default.entry(k).or_insert(v);
        }
    }
    let default = item
        .get("default")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    if let Some(req) = obj_mut(item, "defaultRequest") {
        for (k, v) in default {
            req.entry(k).or_insert(v);
        }
        for (k, v) in min {
            req.entry(k).or_insert(v);
        }
    }
}

/// Carries server-owned values from the stored object into an update that
/// left them out: a Service's clusterIP(s) and nodePorts (and drops what a
/// type change made obsolete), a Job's generated selector and pod labels, a
/// Pod's nodeName. Call after `default_object`.
pub fn prepare_update(resource: &ResourceType, new: &mut Value, old: &Value) {
    match (resource.group, resource.kind) {
        ("", "Service") => {
            service::drop_type_dependent_fields(new, old);
            service::carry_allocated_values(new, old);
            service::default_service(new);
        }
        ("batch", "Job") => {
            let manual = new.pointer("/spec/manualSelector").and_then(Value::as_bool) == Some(true);
            let missing = new.pointer("/spec/selector").is_none_or(Value::is_null);
            if !manual
                && missing
                && let Some(sel) = old.pointer("/spec/selector").cloned()
                && let Some(spec) = new.get_mut("spec").and_then(Value::as_object_mut)
            {
                spec.insert("selector".into(), sel);
                let old_labels = old
                    .pointer("/spec/template/metadata/labels")
                    .and_then(Value::as_object)
                    .cloned();
                if let (Some(old_labels), Some(labels)) = (
                    old_labels,
                    obj_mut(spec, "template")
                        .and_then(|t| obj_mut(t, "metadata"))
                        .and_then(|m| obj_mut(m, "labels")),
                ) {
                    for key in [
                        "controller-uid",
                        job::CONTROLLER_UID_LABEL,
                        "job-name",
                        job::JOB_NAME_LABEL,
                    ] {
                        if let Some(v) = old_labels.get(key) {
                            labels.entry(key).or_insert_with(|| v.clone());
                        }
                    }
                }
            }
        }
        ("", "Pod") => {
            let missing = new.pointer("/spec/nodeName").is_none_or(Value::is_null);
            if missing
                && let Some(n) = old.pointer("/spec/nodeName").cloned()
                && let Some(spec) = new.get_mut("spec").and_then(Value::as_object_mut)
            {
                spec.insert("nodeName".into(), n);
            }
        }
        _ => {}
    }
}

fn validate_kind(resource: &ResourceType, object: &Value) -> Vec<Cause> {
    if let Some(w) = workload(resource) {
        return deployment::validate_workload(w, object);
    }
    match (resource.group, resource.kind) {
        ("", "Pod") => pod::validate_pod(object),
        ("", "PodTemplate") => {
            let t = object.get("template").cloned().unwrap_or(Value::Null);
            pod::validate_template(&t, &field::FieldPath::new("template"), pod::SpecRules::POD)
        }
        ("", "Service") => service::validate_service(object),
        ("", "Namespace") => namespace::validate_namespace(object),
        ("", "Node") => namespace::validate_node(object),
        ("", "ConfigMap") => config::validate_config_map(object),
        ("", "Secret") => config::validate_secret(object),
        ("batch", "Job") => job::validate_job(object),
        ("batch", "CronJob") => job::validate_cron_job(object),
        ("networking.k8s.io", "Ingress") => networking::validate_ingress(object),
        ("apiextensions.k8s.io", "CustomResourceDefinition") => crd::validate_crd(object),
        ("rbac.authorization.k8s.io", "Role") => rbac::validate_role(object, true),
        ("rbac.authorization.k8s.io", "ClusterRole") => rbac::validate_role(object, false),
        ("rbac.authorization.k8s.io", "RoleBinding") => rbac::validate_binding(object, true),
        ("rbac.authorization.k8s.io", "ClusterRoleBinding") => {
            rbac::validate_binding(object, false)
        }
        ("autoscaling", "HorizontalPodAutoscaler") => scaling::validate_hpa(object),
        ("policy", "PodDisruptionBudget") => scaling::validate_pdb(object),
        _ => Vec::new(),
    }
}

/// Validates an object for create; an empty list means valid.
pub fn validate_create(resource: &ResourceType, object: &Value) -> Vec<Cause> {
    let mut errs = meta::validate_object_meta(object, resource.namespaced, name_rule(resource));
    errs.extend(validate_kind(resource, object));
    errs
}

/// Validates an update of `old` into `new` (immutable fields included).
pub fn validate_update(resource: &ResourceType, new: &Value, old: &Value) -> Vec<Cause> {
    let mut errs = meta::validate_object_meta_update(new, old, resource.namespaced);
    if let Some(w) = workload(resource) {
        errs.extend(deployment::validate_workload_update(w, new, old));
        return errs;
    }
    errs.extend(match (resource.group, resource.kind) {
        ("", "Pod") => pod::validate_pod_update(new, old),
        ("", "Service") => service::validate_service_update(new, old),
        ("", "ConfigMap") => config::validate_config_update(new, old, false),
        ("", "Secret") => config::validate_config_update(new, old, true),
        ("batch", "Job") => job::validate_job_update(new, old),
        ("rbac.authorization.k8s.io", "RoleBinding") => {
            rbac::validate_binding_update(new, old, true)
        }
        ("rbac.authorization.k8s.io", "ClusterRoleBinding") => {
            rbac::validate_binding_update(new, old, false)
        }
        _ => validate_kind(resource, new),
    });
    errs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::find;

    #[test]
    fn invalid_names_per_kind() {
        let cm = find("", "v1", "configmaps").unwrap();
        let errs = validate_create(
            cm,
            &json!({"metadata": {"name": "Bad", "namespace": "default"}}),
        );
        assert_eq!(errs.len(), 1);
        assert_eq!(
            errs[0].to_string(),
            "metadata.name: Invalid value: \"Bad\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
        );
        let ns = find("", "v1", "namespaces").unwrap();
        let mut obj = json!({"metadata": {"name": "a.b"}});
        default_object(ns, &mut obj);
        assert_eq!(
            validate_create(ns, &obj)[0].message,
            "Invalid value: \"a.b\": must not contain dots"
        );
        let svc = find("", "v1", "services").unwrap();
        let mut s = json!({"metadata": {"name": "1web", "namespace": "d"}, "spec": {"ports": [{"port": 80}]}});
        default_object(svc, &mut s);
        assert!(
            validate_create(svc, &s)[0]
                .message
                .contains("a DNS-1035 label")
        );
    }

    #[test]
    fn invalid_message_is_upstream() {
        let d = find("apps", "v1", "deployments").unwrap();
        let mut obj = json!({"metadata": {"name": "x", "namespace": "d"}, "spec": {"selector": {"matchLabels": {"app": "x"}}, "template": {"metadata": {"labels": {"app": "y"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}});
        default_object(d, &mut obj);
        let errs = validate_create(d, &obj);
        assert_eq!(
            invalid_message(d, "x", &errs),
            "Deployment.apps \"x\" is invalid: spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"y\"}: `selector` does not match template `labels`"
        );
    }

    #[test]
    fn update_metadata_is_immutable() {
        let cm = find("", "v1", "configmaps").unwrap();
        let old = json!({"metadata": {"name": "a", "namespace": "d", "uid": "1"}});
        let new = json!({"metadata": {"name": "a", "namespace": "d", "uid": "2"}});
        let errs = validate_update(cm, &new, &old);
        assert_eq!(
            errs[0].to_string(),
            "metadata.uid: Invalid value: \"2\": field is immutable"
        );
        assert!(validate_update(cm, &old, &old).is_empty());
    }

    #[test]
    fn every_catalog_type_defaults_and_validates_an_empty_object() {
        for r in crate::resources::catalog() {
            let mut obj = json!({"metadata": {"name": "x"}});
            if r.namespaced {
                obj["metadata"]["namespace"] = json!("default");
            }
            default_object(r, &mut obj);
            let _ = validate_create(r, &obj);
            let _ = validate_update(r, &obj, &obj);
        }
    }

    #[test]
    fn node_allocatable_and_limit_range_defaults() {
        let node = find("", "v1", "nodes").unwrap();
        let mut n = json!({"metadata": {"name": "n"}, "status": {"capacity": {"cpu": "2"}}});
        default_object(node, &mut n);
        assert_eq!(n["status"]["allocatable"], json!({"cpu": "2"}));
        let lr = find("", "v1", "limitranges").unwrap();
        let mut l = json!({"spec": {"limits": [{"type": "Container", "max": {"cpu": "1"}, "min": {"memory": "1Mi"}}]}});
        default_object(lr, &mut l);
        assert_eq!(l["spec"]["limits"][0]["default"], json!({"cpu": "1"}));
        assert_eq!(
            l["spec"]["limits"][0]["defaultRequest"],
            json!({"cpu": "1", "memory": "1Mi"})
        );
    }

    #[test]
    fn prepare_update_keeps_the_cluster_ip() {
        let svc = find("", "v1", "services").unwrap();
        let mut old = json!({"metadata": {"name": "web", "namespace": "d"}, "spec": {"clusterIP": "10.43.0.9", "ports": [{"port": 80}]}});
        default_object(svc, &mut old);
        let mut new = json!({"metadata": {"name": "web", "namespace": "d"}, "spec": {"ports": [{"port": 80}]}});
        default_object(svc, &mut new);
        prepare_update(svc, &mut new, &old);
        assert_eq!(new["spec"]["clusterIPs"], json!(["10.43.0.9"]));
        assert!(validate_update(svc, &new, &old).is_empty());
    }
}
