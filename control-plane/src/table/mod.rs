//! Server-side printing: `meta.k8s.io/v1` Table responses with the columns
//! kube-apiserver prints for each built-in type (upstream
//! `pkg/printers/internalversion/printers.go`, always with wide output, as
//! the API server does). Pure functions, no I/O.
//!
//! The HTTP layer builds the Table from `column_definitions`, one
//! `row_cells` (and `row_conditions`) per object; custom resources use
//! `custom_resource_columns` and `custom_resource_cells` with their CRD
//! version's `additionalPrinterColumns`.

mod cluster;
mod columns;
mod core_kinds;
mod custom;
pub mod format;
mod workloads;

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::{Value, json};

use crate::resources::ResourceType;

pub use custom::{custom_resource_cells, custom_resource_columns, json_path};

/// The columns and the cell function of one kind.
#[derive(Clone, Copy)]
pub(crate) struct Printer {
    /// The column definitions, in cell order.
    pub columns: fn() -> Vec<Value>,
    /// The cells of one object, computed against `now`.
    pub cells: fn(&Value, DateTime<Utc>) -> Vec<Value>,
}

/// The printer of a kind, `None` for kinds upstream prints with the
/// default table (roles, cluster roles, limit ranges, CRDs...).
fn printer_for(group: &str, kind: &str) -> Option<Printer> {
    let printer = match (group, kind) {
        ("", "Pod") => core_kinds::POD,
        ("", "PodTemplate") => core_kinds::POD_TEMPLATE,
        ("", "ReplicationController") => core_kinds::REPLICATION_CONTROLLER,
        ("", "Service") => core_kinds::SERVICE,
        ("", "Endpoints") => core_kinds::ENDPOINTS,
        ("", "Node") => core_kinds::NODE,
        ("", "Event") | ("events.k8s.io", "Event") => core_kinds::EVENT,
        ("", "Namespace") => core_kinds::NAMESPACE,
        ("", "Secret") => core_kinds::SECRET,
        ("", "ServiceAccount") => core_kinds::SERVICE_ACCOUNT,
        ("", "ConfigMap") => core_kinds::CONFIG_MAP,
        ("", "PersistentVolume") => core_kinds::PERSISTENT_VOLUME,
        ("", "PersistentVolumeClaim") => core_kinds::PERSISTENT_VOLUME_CLAIM,
        ("", "ResourceQuota") => core_kinds::RESOURCE_QUOTA,
        ("", "ComponentStatus") => core_kinds::COMPONENT_STATUS,
        ("apps", "Deployment") => workloads::DEPLOYMENT,
        ("apps", "ReplicaSet") => workloads::REPLICA_SET,
        ("apps", "StatefulSet") => workloads::STATEFUL_SET,
        ("apps", "DaemonSet") => workloads::DAEMON_SET,
        ("apps", "ControllerRevision") => workloads::CONTROLLER_REVISION,
        ("batch", "Job") => workloads::JOB,
        ("batch", "CronJob") => workloads::CRON_JOB,
        ("autoscaling", "HorizontalPodAutoscaler") => workloads::HORIZONTAL_POD_AUTOSCALER,
        ("policy", "PodDisruptionBudget") => workloads::POD_DISRUPTION_BUDGET,
        ("networking.k8s.io", "Ingress") => cluster::INGRESS,
        ("networking.k8s.io", "IngressClass") => cluster::INGRESS_CLASS,
        ("networking.k8s.io", "NetworkPolicy") => cluster::NETWORK_POLICY,
        ("discovery.k8s.io", "EndpointSlice") => cluster::ENDPOINT_SLICE,
        ("storage.k8s.io", "StorageClass") => cluster::STORAGE_CLASS,
        ("storage.k8s.io", "CSIDriver") => cluster::CSI_DRIVER,
        ("storage.k8s.io", "CSINode") => cluster::CSI_NODE,
        ("storage.k8s.io", "CSIStorageCapacity") => cluster::CSI_STORAGE_CAPACITY,
        ("storage.k8s.io", "VolumeAttachment") => cluster::VOLUME_ATTACHMENT,
        ("rbac.authorization.k8s.io", "RoleBinding") => cluster::ROLE_BINDING,
        ("rbac.authorization.k8s.io", "ClusterRoleBinding") => cluster::CLUSTER_ROLE_BINDING,
        ("scheduling.k8s.io", "PriorityClass") => cluster::PRIORITY_CLASS,
        ("coordination.k8s.io", "Lease") => cluster::LEASE,
        ("node.k8s.io", "RuntimeClass") => cluster::RUNTIME_CLASS,
        ("certificates.k8s.io", "CertificateSigningRequest") => {
            cluster::CERTIFICATE_SIGNING_REQUEST
        }
        ("admissionregistration.k8s.io", "MutatingWebhookConfiguration")
        | ("admissionregistration.k8s.io", "ValidatingWebhookConfiguration") => {
            cluster::WEBHOOK_CONFIGURATION
        }
        ("admissionregistration.k8s.io", "ValidatingAdmissionPolicy") => {
            cluster::VALIDATING_ADMISSION_POLICY
        }
        ("admissionregistration.k8s.io", "ValidatingAdmissionPolicyBinding") => {
            cluster::VALIDATING_ADMISSION_POLICY_BINDING
        }
        ("apiregistration.k8s.io", "APIService") => cluster::API_SERVICE,
        _ => return None,
    };
    Some(printer)
}

/// The columns of the default table (`rest.defaultTableConvertor`).
fn default_columns() -> Vec<Value> {
    vec![
        columns::name(),
        columns::column(
            "Created At",
            "date",
            "",
            0,
            columns::doc::<ObjectMeta>("creationTimestamp"),
        ),
    ]
}

/// Column definitions by `(group, kind)`.
type ColumnCache = HashMap<(&'static str, &'static str), Vec<Value>>;

/// The column definitions of a resource's table (including `priority: 1`
/// columns that `kubectl get -o wide` shows).
pub fn column_definitions(resource: &ResourceType) -> Vec<Value> {
    // Building the descriptions walks k8s-openapi schemas: do it once per kind.
    static CACHE: OnceLock<Mutex<ColumnCache>> = OnceLock::new();
    let key = (resource.group, resource.kind);
    let cache = CACHE.get_or_init(Default::default);
    if let Ok(map) = cache.lock()
        && let Some(columns) = map.get(&key)
    {
        return columns.clone();
    }
    let columns = match printer_for(resource.group, resource.kind) {
        Some(printer) => (printer.columns)(),
        None => default_columns(),
    };
    if let Ok(mut map) = cache.lock() {
        map.insert(key, columns.clone());
    }
    columns
}

/// The cells of one row for `object`, matching `column_definitions`.
/// `now` is the time ages are computed against.
pub fn row_cells(resource: &ResourceType, object: &Value, now: DateTime<Utc>) -> Vec<Value> {
    match printer_for(resource.group, resource.kind) {
        Some(printer) => (printer.cells)(object, now),
        None => vec![
            json!(format::s(object, "/metadata/name")),
            json!(created_at(object)),
        ],
    }
}

/// The `conditions` of a row (`Completed` for finished pods), if any.
pub fn row_conditions(resource: &ResourceType, object: &Value) -> Option<Vec<Value>> {
    if resource.group.is_empty() && resource.kind == "Pod" {
        core_kinds::pod_conditions(object)
    } else {
        None
    }
}

/// What a Table row carries in `object` (`?includeObject=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IncludeObject {
    None,
    /// A `PartialObjectMetadata` (the default): kubectl reads the
    /// namespace column of `-A` and `--show-labels` from it.
    #[default]
    Metadata,
    Object,
}

impl IncludeObject {
    /// Parses the `includeObject` query parameter (`None`, `Metadata`, `Object`).
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "None" => Some(Self::None),
            "Metadata" | "" => Some(Self::Metadata),
            "Object" => Some(Self::Object),
            _ => None,
        }
    }
}

/// One complete `TableRow`: cells, conditions and the included object.
pub fn table_row(
    resource: &ResourceType,
    object: &Value,
    now: DateTime<Utc>,
    include: IncludeObject,
) -> Value {
    let mut row = serde_json::Map::new();
    row.insert(
        "cells".into(),
        Value::Array(row_cells(resource, object, now)),
    );
    if let Some(conditions) = row_conditions(resource, object) {
        row.insert("conditions".into(), Value::Array(conditions));
    }
    match include {
        IncludeObject::None => {}
        IncludeObject::Metadata => {
            row.insert(
                "object".into(),
                json!({
                    "kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": object.get("metadata").cloned().unwrap_or_else(|| json!({})),
                }),
            );
        }
        IncludeObject::Object => {
            row.insert("object".into(), object.clone());
        }
    }
    Value::Object(row)
}

/// `creationTimestamp` in UTC RFC 3339 (Go's zero time when unset).
fn created_at(object: &Value) -> String {
    format::time(object, "/metadata/creationTimestamp")
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|| "0001-01-01T00:00:00Z".to_string())
}

#[cfg(test)]
mod tests;
