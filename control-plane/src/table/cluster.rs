//! Printers of the networking, storage, RBAC, scheduling, coordination,
//! certificates, admission, node, discovery and API registration kinds, as
//! upstream's printers (and kube-aggregator's for APIService).

use chrono::{DateTime, Utc};
use k8s_openapi::api::{
    certificates::v1 as certs, coordination::v1 as coord, discovery::v1 as disc,
    networking::v1 as net, rbac::v1 as rbac, scheduling::v1 as sched, storage::v1 as storage,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::{Value, json};

use super::Printer;
use super::columns::{age, col, column, doc, name, wide};
use super::core_kinds::load_balancer_ingress;
use super::format::{
    arr, b, format_label_selector, human_duration, i, list_with_more, obj, opt_i, opt_s, quantity,
    s, selector_string,
};

fn name_of(v: &Value) -> Value {
    json!(s(v, "/metadata/name"))
}

fn age_of(v: &Value, now: DateTime<Utc>) -> Value {
    json!(super::format::age(v, now))
}

// ---------------------------------------------------------------- networking

pub const INGRESS: Printer = Printer {
    columns: || {
        vec![
            name(),
            col(
                "Class",
                "string",
                "The name of the IngressClass resource that should be used for additional configuration",
            ),
            col(
                "Hosts",
                "string",
                "Hosts that incoming requests are matched against before the ingress rule",
            ),
            col(
                "Address",
                "string",
                "Address is a list containing ingress points for the load-balancer",
            ),
            col("Ports", "string", "Ports of TLS configurations that open"),
            age(),
        ]
    },
    cells: |v, now| {
        let rules = arr(v, "/spec/rules");
        const MAX: usize = 3;
        let mut hosts: Vec<&str> = Vec::new();
        let mut more = false;
        for rule in rules {
            if hosts.len() == MAX {
                more = true;
            }
            let host = s(rule, "/host");
            if !more && !host.is_empty() {
                hosts.push(host);
            }
        }
        let hosts = if hosts.is_empty() {
            "*".to_string()
        } else if more {
            format!("{} + {} more...", hosts.join(","), rules.len() - MAX)
        } else {
            hosts.join(",")
        };
        let ports = if arr(v, "/spec/tls").is_empty() {
            "80"
        } else {
            "80, 443"
        };
        vec![
            name_of(v),
            json!(opt_s(v, "/spec/ingressClassName").unwrap_or("<none>")),
            json!(hosts),
            json!(load_balancer_ingress(arr(
                v,
                "/status/loadBalancer/ingress"
            ))),
            json!(ports),
            age_of(v, now),
        ]
    },
};

pub const INGRESS_CLASS: Printer = Printer {
    columns: || {
        vec![
            name(),
            col(
                "Controller",
                "string",
                "Controller that is responsible for handling this class",
            ),
            col(
                "Parameters",
                "string",
                "A reference to a resource with additional parameters",
            ),
            age(),
        ]
    },
    cells: |v, now| {
        let parameters = match obj(v, "/spec/parameters") {
            None => "<none>".to_string(),
            Some(_) => {
                let mut p = s(v, "/spec/parameters/kind").to_string();
                if let Some(group) = opt_s(v, "/spec/parameters/apiGroup") {
                    p = format!("{p}.{group}");
                }
                format!("{p}/{}", s(v, "/spec/parameters/name"))
            }
        };
        vec![
            name_of(v),
            json!(s(v, "/spec/controller")),
            json!(parameters),
            age_of(v, now),
        ]
    },
};

pub const NETWORK_POLICY: Printer = Printer {
    columns: || {
        vec![
            name(),
            col(
                "Pod-Selector",
                "string",
                doc::<net::NetworkPolicySpec>("podSelector"),
            ),
            age(),
        ]
    },
    cells: |v, now| {
        // The pod selector is a struct, not a pointer: empty means everything.
        let selector = v
            .pointer("/spec/podSelector")
            .cloned()
            .unwrap_or_else(|| json!({}));
        vec![
            name_of(v),
            json!(format_label_selector(Some(&selector))),
            age_of(v, now),
        ]
    },
};

pub const ENDPOINT_SLICE: Printer = Printer {
    columns: || {
        vec![
            name(),
            col(
                "AddressType",
                "string",
                doc::<disc::EndpointSlice>("addressType"),
            ),
            col("Ports", "string", doc::<disc::EndpointSlice>("ports")),
            col(
                "Endpoints",
                "string",
                doc::<disc::EndpointSlice>("endpoints"),
            ),
            age(),
        ]
    },
    cells: |v, now| {
        const MAX: usize = 3;
        let ports: Vec<String> = arr(v, "/ports")
            .iter()
            .map(|p| match (opt_i(p, "/port"), opt_s(p, "/name")) {
                (Some(port), _) => port.to_string(),
                (None, Some(name)) => name.to_string(),
                (None, None) => "*".to_string(),
            })
            .collect();
        let addresses: Vec<String> = arr(v, "/endpoints")
            .iter()
            .flat_map(|e| arr(e, "/addresses").iter())
            .filter_map(|a| a.as_str().map(str::to_string))
            .collect();
        let shown = |l: &[String]| l.iter().take(MAX).cloned().collect::<Vec<_>>();
        vec![
            name_of(v),
            json!(s(v, "/addressType")),
            json!(list_with_more(&shown(&ports), ports.len(), MAX)),
            json!(list_with_more(&shown(&addresses), addresses.len(), MAX)),
            age_of(v, now),
        ]
    },
};

// ---------------------------------------------------------------- storage

pub const STORAGE_CLASS: Printer = Printer {
    columns: || {
        vec![
            name(),
            col(
                "Provisioner",
                "string",
                doc::<storage::StorageClass>("provisioner"),
            ),
            col(
                "ReclaimPolicy",
                "string",
                doc::<storage::StorageClass>("reclaimPolicy"),
            ),
            col(
                "VolumeBindingMode",
                "string",
                doc::<storage::StorageClass>("volumeBindingMode"),
            ),
            col(
                "AllowVolumeExpansion",
                "string",
                doc::<storage::StorageClass>("allowVolumeExpansion"),
            ),
            age(),
        ]
    },
    cells: |v, now| {
        let is_default = |key: &str| {
            obj(v, "/metadata/annotations")
                .and_then(|a| a.get(key))
                .and_then(Value::as_str)
                == Some("true")
        };
        let mut name = s(v, "/metadata/name").to_string();
        if is_default("storageclass.kubernetes.io/is-default-class")
            || is_default("storageclass.beta.kubernetes.io/is-default-class")
        {
            name.push_str(" (default)");
        }
        vec![
            json!(name),
            json!(s(v, "/provisioner")),
            json!(opt_s(v, "/reclaimPolicy").unwrap_or("Delete")),
            json!(opt_s(v, "/volumeBindingMode").unwrap_or("Immediate")),
            json!(b(v, "/allowVolumeExpansion")),
            age_of(v, now),
        ]
    },
};

pub const CSI_DRIVER: Printer = Printer {
    columns: || {
        vec![
            name(),
            col(
                "AttachRequired",
                "boolean",
                doc::<storage::CSIDriverSpec>("attachRequired"),
            ),
            col(
                "PodInfoOnMount",
                "boolean",
                doc::<storage::CSIDriverSpec>("podInfoOnMount"),
            ),
            col(
                "StorageCapacity",
                "boolean",
                doc::<storage::CSIDriverSpec>("storageCapacity"),
            ),
            col(
                "TokenRequests",
                "string",
                doc::<storage::CSIDriverSpec>("tokenRequests"),
            ),
            col(
                "RequiresRepublish",
                "boolean",
                doc::<storage::CSIDriverSpec>("requiresRepublish"),
            ),
            col(
                "Modes",
                "string",
                doc::<storage::CSIDriverSpec>("volumeLifecycleModes"),
            ),
            age(),
        ]
    },
    cells: |v, now| {
        let modes: Vec<&str> = arr(v, "/spec/volumeLifecycleModes")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let modes = if modes.is_empty() {
            "<none>".to_string()
        } else {
            modes.join(",")
        };
        let tokens = match v.pointer("/spec/tokenRequests").and_then(Value::as_array) {
            None => "<unset>".to_string(),
            Some(list) => list
                .iter()
                .map(|t| s(t, "/audience"))
                .collect::<Vec<_>>()
                .join(","),
        };
        vec![
            name_of(v),
            json!(
                v.pointer("/spec/attachRequired")
                    .and_then(Value::as_bool)
                    .unwrap_or(true)
            ),
            json!(b(v, "/spec/podInfoOnMount")),
            json!(b(v, "/spec/storageCapacity")),
            json!(tokens),
            json!(b(v, "/spec/requiresRepublish")),
            json!(modes),
            age_of(v, now),
        ]
    },
};

pub const CSI_NODE: Printer = Printer {
    columns: || {
        vec![
            name(),
            col(
                "Drivers",
                "integer",
                "Drivers indicates the number of CSI drivers registered on the node",
            ),
            age(),
        ]
    },
    cells: |v, now| {
        vec![
            name_of(v),
            json!(arr(v, "/spec/drivers").len()),
            age_of(v, now),
        ]
    },
};

pub const CSI_STORAGE_CAPACITY: Printer = Printer {
    columns: || {
        vec![
            name(),
            col(
                "StorageClassName",
                "string",
                doc::<storage::CSIStorageCapacity>("storageClassName"),
            ),
            col(
                "Capacity",
                "string",
                doc::<storage::CSIStorageCapacity>("capacity"),
            ),
        ]
    },
    cells: |v, _| {
        let capacity = if v.get("capacity").is_some_and(|c| !c.is_null()) {
            quantity(v, "/capacity")
        } else {
            "<unset>".to_string()
        };
        vec![
            name_of(v),
            json!(s(v, "/storageClassName")),
            json!(capacity),
        ]
    },
};

pub const VOLUME_ATTACHMENT: Printer = Printer {
    columns: || {
        vec![
            name(),
            column(
                "Attacher",
                "string",
                "name",
                0,
                doc::<storage::VolumeAttachmentSpec>("attacher"),
            ),
            col(
                "PV",
                "string",
                doc::<storage::VolumeAttachmentSource>("persistentVolumeName"),
            ),
            col(
                "Node",
                "string",
                doc::<storage::VolumeAttachmentSpec>("nodeName"),
            ),
            col(
                "Attached",
                "boolean",
                doc::<storage::VolumeAttachmentStatus>("attached"),
            ),
            age(),
        ]
    },
    cells: |v, now| {
        vec![
            name_of(v),
            json!(s(v, "/spec/attacher")),
            json!(s(v, "/spec/source/persistentVolumeName")),
            json!(s(v, "/spec/nodeName")),
            json!(b(v, "/status/attached")),
            age_of(v, now),
        ]
    },
};

// ---------------------------------------------------------------- rbac

fn binding_columns(kind: &str) -> Vec<Value> {
    vec![
        name(),
        col("Role", "string", doc::<rbac::RoleBinding>("roleRef")),
        age(),
        wide("Users", "string", format!("Users in the {kind}")),
        wide("Groups", "string", format!("Groups in the {kind}")),
        wide(
            "ServiceAccounts",
            "string",
            format!("ServiceAccounts in the {kind}"),
        ),
    ]
}

fn binding_cells(v: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let mut users = Vec::new();
    let mut groups = Vec::new();
    let mut service_accounts = Vec::new();
    for subject in arr(v, "/subjects") {
        let name = s(subject, "/name");
        match s(subject, "/kind") {
            "ServiceAccount" => {
                service_accounts.push(format!("{}/{name}", s(subject, "/namespace")))
            }
            "User" => users.push(name.to_string()),
            "Group" => groups.push(name.to_string()),
            _ => {}
        }
    }
    vec![
        name_of(v),
        json!(format!(
            "{}/{}",
            s(v, "/roleRef/kind"),
            s(v, "/roleRef/name")
        )),
        age_of(v, now),
        json!(users.join(", ")),
        json!(groups.join(", ")),
        json!(service_accounts.join(", ")),
    ]
}

pub const ROLE_BINDING: Printer = Printer {
    columns: || binding_columns("roleBinding"),
    cells: binding_cells,
};

pub const CLUSTER_ROLE_BINDING: Printer = Printer {
    columns: || binding_columns("clusterRoleBinding"),
    cells: binding_cells,
};

// ---------------------------------------------------------------- scheduling, coordination, node

pub const PRIORITY_CLASS: Printer = Printer {
    columns: || {
        vec![
            name(),
            col("Value", "integer", doc::<sched::PriorityClass>("value")),
            col(
                "Global-Default",
                "boolean",
                doc::<sched::PriorityClass>("globalDefault"),
            ),
            age(),
            col(
                "PreemptionPolicy",
                "string",
                doc::<sched::PriorityClass>("preemptionPolicy"),
            ),
        ]
    },
    cells: |v, now| {
        vec![
            name_of(v),
            json!(i(v, "/value")),
            json!(b(v, "/globalDefault")),
            age_of(v, now),
            json!(s(v, "/preemptionPolicy")),
        ]
    },
};

pub const LEASE: Printer = Printer {
    columns: || {
        vec![
            name(),
            col(
                "Holder",
                "string",
                doc::<coord::LeaseSpec>("holderIdentity"),
            ),
            age(),
        ]
    },
    cells: |v, now| {
        vec![
            name_of(v),
            json!(s(v, "/spec/holderIdentity")),
            age_of(v, now),
        ]
    },
};

pub const RUNTIME_CLASS: Printer = Printer {
    // Upstream looks `handler` up in ObjectMeta's docs, which has none.
    columns: || {
        vec![
            name(),
            col("Handler", "string", doc::<ObjectMeta>("handler")),
            age(),
        ]
    },
    cells: |v, now| vec![name_of(v), json!(s(v, "/handler")), age_of(v, now)],
};

// ---------------------------------------------------------------- certificates

pub const CERTIFICATE_SIGNING_REQUEST: Printer = Printer {
    columns: || {
        vec![
            name(),
            age(),
            col(
                "SignerName",
                "string",
                doc::<certs::CertificateSigningRequestSpec>("signerName"),
            ),
            col(
                "Requestor",
                "string",
                doc::<certs::CertificateSigningRequestSpec>("request"),
            ),
            col(
                "RequestedDuration",
                "string",
                doc::<certs::CertificateSigningRequestSpec>("expirationSeconds"),
            ),
            col(
                "Condition",
                "string",
                doc::<certs::CertificateSigningRequestStatus>("conditions"),
            ),
        ]
    },
    cells: |v, now| {
        let conditions = arr(v, "/status/conditions");
        let has = |t: &str| conditions.iter().any(|c| s(c, "/type") == t);
        let mut status = if has("Denied") {
            "Denied".to_string()
        } else if has("Approved") {
            "Approved".to_string()
        } else {
            "Pending".to_string()
        };
        if has("Failed") {
            status.push_str(",Failed");
        }
        if !s(v, "/status/certificate").is_empty() {
            status.push_str(",Issued");
        }
        let duration = opt_i(v, "/spec/expirationSeconds").map_or_else(
            || "<none>".to_string(),
            |secs| human_duration(chrono::TimeDelta::seconds(secs)),
        );
        let signer = s(v, "/spec/signerName");
        vec![
            name_of(v),
            age_of(v, now),
            json!(if signer.is_empty() { "<none>" } else { signer }),
            json!(s(v, "/spec/username")),
            json!(duration),
            json!(status),
        ]
    },
};

// ---------------------------------------------------------------- admission

fn webhooks_columns() -> Vec<Value> {
    vec![
        name(),
        col(
            "Webhooks",
            "integer",
            "Webhooks indicates the number of webhooks registered in this configuration",
        ),
        age(),
    ]
}

fn webhooks_cells(v: &Value, now: DateTime<Utc>) -> Vec<Value> {
    vec![name_of(v), json!(arr(v, "/webhooks").len()), age_of(v, now)]
}

pub const WEBHOOK_CONFIGURATION: Printer = Printer {
    columns: webhooks_columns,
    cells: webhooks_cells,
};

pub const VALIDATING_ADMISSION_POLICY: Printer = Printer {
    columns: || {
        vec![
            name(),
            col(
                "Validations",
                "integer",
                "Validations indicates the number of validation rules defined in this configuration",
            ),
            col(
                "ParamKind",
                "string",
                "ParamKind specifies the kind of resources used to parameterize this policy",
            ),
            age(),
        ]
    },
    cells: |v, now| {
        let param_kind = match obj(v, "/spec/paramKind") {
            Some(_) => format!(
                "{}/{}",
                s(v, "/spec/paramKind/apiVersion"),
                s(v, "/spec/paramKind/kind")
            ),
            None => "<unset>".to_string(),
        };
        vec![
            name_of(v),
            json!(arr(v, "/spec/validations").len()),
            json!(param_kind),
            age_of(v, now),
        ]
    },
};

pub const VALIDATING_ADMISSION_POLICY_BINDING: Printer = Printer {
    columns: || {
        vec![
            name(),
            col(
                "PolicyName",
                "string",
                "PolicyName indicates the policy definition which the policy binding binded to",
            ),
            col(
                "ParamRef",
                "string",
                "ParamRef indicates the param resource which sets the configration param",
            ),
            age(),
        ]
    },
    cells: |v, now| {
        let param = match obj(v, "/spec/paramRef") {
            None => "<unset>".to_string(),
            Some(_) => {
                let name = s(v, "/spec/paramRef/name");
                let namespace = s(v, "/spec/paramRef/namespace");
                if !name.is_empty() {
                    if namespace.is_empty() {
                        format!("*/{name}")
                    } else {
                        format!("{namespace}/{name}")
                    }
                } else if let Some(sel) = v
                    .pointer("/spec/paramRef/selector")
                    .filter(|x| !x.is_null())
                {
                    selector_string(Some(sel)).unwrap_or_default()
                } else {
                    "<unset>".to_string()
                }
            }
        };
        vec![
            name_of(v),
            json!(s(v, "/spec/policyName")),
            json!(param),
            age_of(v, now),
        ]
    },
};

// ---------------------------------------------------------------- apiregistration

pub const API_SERVICE: Printer = Printer {
    columns: || {
        vec![
            name(),
            col(
                "Service",
                "string",
                "The reference to the service that hosts this API endpoint.",
            ),
            col("Available", "string", "Whether this service is available."),
            age(),
        ]
    },
    cells: |v, now| {
        let service = match obj(v, "/spec/service") {
            Some(_) => format!(
                "{}/{}",
                s(v, "/spec/service/namespace"),
                s(v, "/spec/service/name")
            ),
            None => "Local".to_string(),
        };
        let available = arr(v, "/status/conditions")
            .iter()
            .find(|c| s(c, "/type") == "Available")
            .map_or_else(
                || "Unknown".to_string(),
                |c| {
                    let status = s(c, "/status");
                    let reason = s(c, "/reason");
                    if status != "True" && !reason.is_empty() {
                        format!("{status} ({reason})")
                    } else {
                        status.to_string()
                    }
                },
            );
        vec![name_of(v), json!(service), json!(available), age_of(v, now)]
    },
};
