//! Printers of the core/v1 kinds (pods, nodes, services, events...), as
//! upstream `printPod`, `printNode`, `printService`... with wide output on
//! (kube-apiserver always prints the `priority: 1` cells).

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1 as corev1;
use serde_json::{Value, json};

use super::Printer;
use super::columns::{age, col, containers_images, doc, name, wide};
use super::format::{
    access_modes, age_at, arr, b, condition_true, containers, format_labels, i, len_obj, obj,
    opt_s, or_none, quantity, s, since, time,
};

fn name_of(v: &Value) -> Value {
    json!(s(v, "/metadata/name"))
}

// ---------------------------------------------------------------- pods

pub const POD: Printer = Printer {
    columns: pod_columns,
    cells: pod_cells,
};

fn pod_columns() -> Vec<Value> {
    vec![
        name(),
        col(
            "Ready",
            "string",
            "The aggregate readiness state of this pod for accepting traffic.",
        ),
        col(
            "Status",
            "string",
            "The aggregate status of the containers in this pod.",
        ),
        col(
            "Restarts",
            "string",
            "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.",
        ),
        age(),
        wide("IP", "string", doc::<corev1::PodStatus>("podIP")),
        wide("Node", "string", doc::<corev1::PodSpec>("nodeName")),
        wide(
            "Nominated Node",
            "string",
            doc::<corev1::PodStatus>("nominatedNodeName"),
        ),
        wide(
            "Readiness Gates",
            "string",
            doc::<corev1::PodSpec>("readinessGates"),
        ),
    ]
}

fn later(
    current: Option<DateTime<Utc>>,
    candidate: Option<DateTime<Utc>>,
) -> Option<DateTime<Utc>> {
    match (current, candidate) {
        (Some(c), Some(n)) if n > c => Some(n),
        (None, n) => n,
        (c, _) => c,
    }
}

/// The STATUS, READY and RESTARTS cells of a pod, computed as `printPod`.
fn pod_status(pod: &Value, now: DateTime<Utc>) -> (String, String, String) {
    let mut total = arr(pod, "/spec/containers").len();
    let mut ready = 0usize;
    let mut restarts = 0i64;
    let mut restartable_restarts = 0i64;
    let mut last_restart: Option<DateTime<Utc>> = None;
    let mut last_restartable_restart: Option<DateTime<Utc>> = None;

    let phase = s(pod, "/status/phase");
    let mut reason = phase.to_string();
    if !s(pod, "/status/reason").is_empty() {
        reason = s(pod, "/status/reason").to_string();
    }
    let conditions = arr(pod, "/status/conditions");
    for c in conditions {
        if s(c, "/type") == "PodScheduled" && s(c, "/reason") == "SchedulingGated" {
            reason = "SchedulingGated".to_string();
        }
    }

    let init_specs = arr(pod, "/spec/initContainers");
    let restartable = |name: &str| {
        init_specs
            .iter()
            .any(|c| s(c, "/name") == name && s(c, "/restartPolicy") == "Always")
    };
    total += init_specs
        .iter()
        .filter(|c| s(c, "/restartPolicy") == "Always")
        .count();

    let mut initializing = false;
    for (idx, c) in arr(pod, "/status/initContainerStatuses").iter().enumerate() {
        let count = i(c, "/restartCount");
        let finished = time(c, "/lastState/terminated/finishedAt");
        restarts += count;
        last_restart = later(last_restart, finished);
        let is_restartable = restartable(s(c, "/name"));
        if is_restartable {
            restartable_restarts += count;
            last_restartable_restart = later(last_restartable_restart, finished);
        }
        let terminated = obj(c, "/state/terminated").is_some();
        let waiting_reason = s(c, "/state/waiting/reason");
        if terminated && i(c, "/state/terminated/exitCode") == 0 {
            continue;
        } else if is_restartable && b(c, "/started") {
            if b(c, "/ready") {
                ready += 1;
            }
            continue;
        } else if terminated {
            let term_reason = s(c, "/state/terminated/reason");
            reason = if !term_reason.is_empty() {
                format!("Init:{term_reason}")
            } else if i(c, "/state/terminated/signal") != 0 {
                format!("Init:Signal:{}", i(c, "/state/terminated/signal"))
            } else {
                format!("Init:ExitCode:{}", i(c, "/state/terminated/exitCode"))
            };
        } else if obj(c, "/state/waiting").is_some()
            && !waiting_reason.is_empty()
            && waiting_reason != "PodInitializing"
        {
            reason = format!("Init:{waiting_reason}");
        } else {
            reason = format!("Init:{idx}/{}", init_specs.len());
        }
        initializing = true;
        break;
    }

    if !initializing || condition_true(conditions, "Initialized") {
        restarts = restartable_restarts;
        last_restart = last_restartable_restart;
        let mut has_running = false;
        for c in arr(pod, "/status/containerStatuses").iter().rev() {
            restarts += i(c, "/restartCount");
            last_restart = later(last_restart, time(c, "/lastState/terminated/finishedAt"));
            let waiting_reason = s(c, "/state/waiting/reason");
            let terminated = obj(c, "/state/terminated").is_some();
            let term_reason = s(c, "/state/terminated/reason");
            if obj(c, "/state/waiting").is_some() && !waiting_reason.is_empty() {
                reason = waiting_reason.to_string();
            } else if terminated && !term_reason.is_empty() {
                reason = term_reason.to_string();
            } else if terminated {
                reason = if i(c, "/state/terminated/signal") != 0 {
                    format!("Signal:{}", i(c, "/state/terminated/signal"))
                } else {
                    format!("ExitCode:{}", i(c, "/state/terminated/exitCode"))
                };
            } else if b(c, "/ready") && obj(c, "/state/running").is_some() {
                has_running = true;
                ready += 1;
            }
        }
        if reason == "Completed" && has_running {
            reason = if condition_true(conditions, "Ready") {
                "Running".to_string()
            } else {
                "NotReady".to_string()
            };
        }
    }

    let deleting = pod
        .pointer("/metadata/deletionTimestamp")
        .is_some_and(|d| !d.is_null());
    if deleting && s(pod, "/status/reason") == "NodeLost" {
        reason = "Unknown".to_string();
    } else if deleting && phase != "Failed" && phase != "Succeeded" {
        reason = "Terminating".to_string();
    }

    let restarts_text = match last_restart {
        Some(t) if restarts != 0 => format!("{restarts} ({} ago)", since(Some(t), now)),
        _ => restarts.to_string(),
    };
    (reason, format!("{ready}/{total}"), restarts_text)
}

fn pod_cells(pod: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let (reason, ready, restarts) = pod_status(pod, now);
    let pod_ip = arr(pod, "/status/podIPs")
        .first()
        .map(|ip| s(ip, "/ip"))
        .unwrap_or_else(|| s(pod, "/status/podIP"));
    let gates = arr(pod, "/spec/readinessGates");
    let readiness = if gates.is_empty() {
        "<none>".to_string()
    } else {
        let conditions = arr(pod, "/status/conditions");
        let true_count = gates
            .iter()
            .filter(|g| condition_true(conditions, s(g, "/conditionType")))
            .count();
        format!("{true_count}/{}", gates.len())
    };
    vec![
        name_of(pod),
        json!(ready),
        json!(reason),
        json!(restarts),
        json!(super::format::age(pod, now)),
        json!(or_none(pod_ip)),
        json!(or_none(s(pod, "/spec/nodeName"))),
        json!(or_none(s(pod, "/status/nominatedNodeName"))),
        json!(readiness),
    ]
}

/// The row conditions of a pod (`Completed` for terminal phases).
pub fn pod_conditions(pod: &Value) -> Option<Vec<Value>> {
    let (reason, message) = match s(pod, "/status/phase") {
        "Succeeded" => ("Succeeded", "The pod has completed successfully."),
        "Failed" => ("Failed", "The pod failed."),
        _ => return None,
    };
    Some(vec![json!({
        "type": "Completed",
        "status": "True",
        "reason": reason,
        "message": message,
    })])
}

// ---------------------------------------------------------------- pod templates

pub const POD_TEMPLATE: Printer = Printer {
    columns: || {
        vec![
            name(),
            col(
                "Containers",
                "string",
                "Names of each container in the template.",
            ),
            col(
                "Images",
                "string",
                "Images referenced by each container in the template.",
            ),
            col("Pod Labels", "string", "The labels for the pod template."),
        ]
    },
    cells: |v, _| {
        let (names, images) = containers(arr(v, "/template/spec/containers"));
        vec![
            name_of(v),
            json!(names),
            json!(images),
            json!(format_labels(obj(v, "/template/metadata/labels"))),
        ]
    },
};

// ---------------------------------------------------------------- replication controllers

pub const REPLICATION_CONTROLLER: Printer = Printer {
    columns: || {
        let [c, im] = containers_images();
        vec![
            name(),
            col(
                "Desired",
                "integer",
                doc::<corev1::ReplicationControllerSpec>("replicas"),
            ),
            col(
                "Current",
                "integer",
                doc::<corev1::ReplicationControllerStatus>("replicas"),
            ),
            col(
                "Ready",
                "integer",
                doc::<corev1::ReplicationControllerStatus>("readyReplicas"),
            ),
            age(),
            c,
            im,
            wide(
                "Selector",
                "string",
                doc::<corev1::ReplicationControllerSpec>("selector"),
            ),
        ]
    },
    cells: |v, now| {
        let (names, images) = containers(arr(v, "/spec/template/spec/containers"));
        vec![
            name_of(v),
            json!(super::format::opt_i(v, "/spec/replicas").unwrap_or(1)),
            json!(i(v, "/status/replicas")),
            json!(i(v, "/status/readyReplicas")),
            json!(super::format::age(v, now)),
            json!(names),
            json!(images),
            json!(format_labels(obj(v, "/spec/selector"))),
        ]
    },
};

// ---------------------------------------------------------------- services

pub const SERVICE: Printer = Printer {
    columns: || {
        vec![
            name(),
            col("Type", "string", doc::<corev1::ServiceSpec>("type")),
            col(
                "Cluster-IP",
                "string",
                doc::<corev1::ServiceSpec>("clusterIP"),
            ),
            col(
                "External-IP",
                "string",
                doc::<corev1::ServiceSpec>("externalIPs"),
            ),
            col("Port(s)", "string", doc::<corev1::ServiceSpec>("ports")),
            age(),
            wide("Selector", "string", doc::<corev1::ServiceSpec>("selector")),
        ]
    },
    cells: service_cells,
};

/// `loadBalancerStatusStringer` with wide output: sorted unique IPs or hostnames.
pub fn load_balancer_ingress(ingress: &[Value]) -> String {
    let mut out: Vec<&str> = ingress
        .iter()
        .filter_map(|i| {
            let ip = s(i, "/ip");
            let host = s(i, "/hostname");
            if !ip.is_empty() {
                Some(ip)
            } else if !host.is_empty() {
                Some(host)
            } else {
                None
            }
        })
        .collect();
    out.sort_unstable();
    out.dedup();
    out.join(",")
}

fn service_external_ip(svc: &Value) -> String {
    let external: Vec<&str> = arr(svc, "/spec/externalIPs")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    match s(svc, "/spec/type") {
        "ClusterIP" | "NodePort" => {
            if external.is_empty() {
                "<none>".to_string()
            } else {
                external.join(",")
            }
        }
        "LoadBalancer" => {
            let lb = load_balancer_ingress(arr(svc, "/status/loadBalancer/ingress"));
            if !external.is_empty() {
                let mut all: Vec<&str> = Vec::new();
                if !lb.is_empty() {
                    all.extend(lb.split(','));
                }
                all.extend(external);
                all.join(",")
            } else if !lb.is_empty() {
                lb
            } else {
                "<pending>".to_string()
            }
        }
        "ExternalName" => s(svc, "/spec/externalName").to_string(),
        _ => "<unknown>".to_string(),
    }
}

/// `makePortString`: `80/TCP,443:30443/TCP`.
fn service_ports(ports: &[Value]) -> String {
    ports
        .iter()
        .map(|p| {
            let node_port = i(p, "/nodePort");
            let protocol = s(p, "/protocol");
            if node_port > 0 {
                format!("{}:{node_port}/{protocol}", i(p, "/port"))
            } else {
                format!("{}/{protocol}", i(p, "/port"))
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn service_cells(svc: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let cluster_ip = arr(svc, "/spec/clusterIPs")
        .first()
        .and_then(Value::as_str)
        .or_else(|| opt_s(svc, "/spec/clusterIP").filter(|ip| !ip.is_empty()))
        .unwrap_or("<none>");
    let ports = service_ports(arr(svc, "/spec/ports"));
    vec![
        name_of(svc),
        json!(s(svc, "/spec/type")),
        json!(cluster_ip),
        json!(service_external_ip(svc)),
        json!(or_none(&ports)),
        json!(super::format::age(svc, now)),
        json!(format_labels(obj(svc, "/spec/selector"))),
    ]
}

// ---------------------------------------------------------------- endpoints

pub const ENDPOINTS: Printer = Printer {
    columns: || {
        vec![
            name(),
            col("Endpoints", "string", doc::<corev1::Endpoints>("subsets")),
            age(),
        ]
    },
    cells: |v, now| {
        vec![
            name_of(v),
            json!(format_endpoints(arr(v, "/subsets"))),
            json!(super::format::age(v, now)),
        ]
    },
};

/// `formatEndpoints` with all ports: up to three `ip:port`, then `+ N more...`.
fn format_endpoints(subsets: &[Value]) -> String {
    if subsets.is_empty() {
        return "<none>".to_string();
    }
    const MAX: usize = 3;
    let mut list: Vec<String> = Vec::new();
    let mut more = false;
    let mut count = 0usize;
    for ss in subsets {
        let addresses = arr(ss, "/addresses");
        let ports = arr(ss, "/ports");
        if ports.is_empty() {
            count += addresses.len();
            for a in addresses {
                if list.len() == MAX {
                    more = true;
                    break;
                }
                list.push(s(a, "/ip").to_string());
            }
            continue;
        }
        for p in ports {
            count += addresses.len();
            for a in addresses {
                if list.len() == MAX {
                    more = true;
                    break;
                }
                list.push(join_host_port(s(a, "/ip"), i(p, "/port")));
            }
        }
    }
    let text = list.join(",");
    if more {
        format!("{text} + {} more...", count - MAX)
    } else {
        text
    }
}

/// `net.JoinHostPort`: brackets around IPv6 addresses.
pub fn join_host_port(host: &str, port: i64) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

// ---------------------------------------------------------------- nodes

pub const NODE: Printer = Printer {
    columns: || {
        vec![
            name(),
            col("Status", "string", "The status of the node"),
            col("Roles", "string", "The roles of the node"),
            age(),
            col(
                "Version",
                "string",
                doc::<corev1::NodeSystemInfo>("kubeletVersion"),
            ),
            wide(
                "Internal-IP",
                "string",
                doc::<corev1::NodeStatus>("addresses"),
            ),
            wide(
                "External-IP",
                "string",
                doc::<corev1::NodeStatus>("addresses"),
            ),
            wide(
                "OS-Image",
                "string",
                doc::<corev1::NodeSystemInfo>("osImage"),
            ),
            wide(
                "Kernel-Version",
                "string",
                doc::<corev1::NodeSystemInfo>("kernelVersion"),
            ),
            wide(
                "Container-Runtime",
                "string",
                doc::<corev1::NodeSystemInfo>("containerRuntimeVersion"),
            ),
        ]
    },
    cells: node_cells,
};

fn node_roles(node: &Value) -> String {
    let mut roles: Vec<String> = Vec::new();
    if let Some(labels) = obj(node, "/metadata/labels") {
        for (k, v) in labels {
            if let Some(role) = k.strip_prefix("node-role.kubernetes.io/") {
                if !role.is_empty() {
                    roles.push(role.to_string());
                }
            } else if k == "kubernetes.io/role"
                && let Some(role) = v.as_str().filter(|r| !r.is_empty())
            {
                roles.push(role.to_string());
            }
        }
    }
    roles.sort();
    roles.dedup();
    roles.join(",")
}

fn node_address(node: &Value, kind: &str) -> String {
    arr(node, "/status/addresses")
        .iter()
        .find(|a| s(a, "/type") == kind)
        .map_or_else(|| "<none>".to_string(), |a| s(a, "/address").to_string())
}

fn node_cells(node: &Value, now: DateTime<Utc>) -> Vec<Value> {
    // Upstream keeps the last condition of each type.
    let ready = arr(node, "/status/conditions")
        .iter()
        .rev()
        .find(|c| s(c, "/type") == "Ready");
    let mut status = vec![match ready {
        Some(c) if s(c, "/status") == "True" => "Ready",
        Some(_) => "NotReady",
        None => "Unknown",
    }];
    if b(node, "/spec/unschedulable") {
        status.push("SchedulingDisabled");
    }
    let unknown = |t: &str| {
        if t.is_empty() {
            "<unknown>".to_string()
        } else {
            t.to_string()
        }
    };
    let roles = node_roles(node);
    vec![
        name_of(node),
        json!(status.join(",")),
        json!(or_none(&roles)),
        json!(super::format::age(node, now)),
        json!(s(node, "/status/nodeInfo/kubeletVersion")),
        json!(node_address(node, "InternalIP")),
        json!(node_address(node, "ExternalIP")),
        json!(unknown(s(node, "/status/nodeInfo/osImage"))),
        json!(unknown(s(node, "/status/nodeInfo/kernelVersion"))),
        json!(unknown(s(node, "/status/nodeInfo/containerRuntimeVersion"))),
    ]
}

// ---------------------------------------------------------------- events

pub const EVENT: Printer = Printer {
    columns: || {
        vec![
            col("Last Seen", "string", doc::<corev1::Event>("lastTimestamp")),
            col("Type", "string", doc::<corev1::Event>("type")),
            col("Reason", "string", doc::<corev1::Event>("reason")),
            col("Object", "string", doc::<corev1::Event>("involvedObject")),
            wide(
                "Subobject",
                "string",
                doc::<corev1::ObjectReference>("fieldPath"),
            ),
            wide("Source", "string", doc::<corev1::Event>("source")),
            col("Message", "string", doc::<corev1::Event>("message")),
            wide(
                "First Seen",
                "string",
                doc::<corev1::Event>("firstTimestamp"),
            ),
            wide("Count", "string", doc::<corev1::Event>("count")),
            super::columns::column(
                "Name",
                "string",
                "name",
                1,
                doc::<k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>("name"),
            ),
        ]
    },
    cells: event_cells,
};

/// Reads a core/v1 Event field, or its events.k8s.io/v1 counterpart (both
/// kinds share storage and upstream prints them with one printer).
fn ev<'a>(v: &'a Value, core: &str, events: &str) -> Option<&'a Value> {
    v.pointer(core)
        .filter(|x| !x.is_null())
        .or_else(|| v.pointer(events).filter(|x| !x.is_null()))
}

fn ev_s<'a>(v: &'a Value, core: &str, events: &str) -> &'a str {
    ev(v, core, events).and_then(Value::as_str).unwrap_or("")
}

fn ev_time(v: &Value, core: &str, events: &str) -> Option<DateTime<Utc>> {
    ev(v, core, events)
        .and_then(Value::as_str)
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
}

fn event_cells(e: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let first = match ev_time(e, "/firstTimestamp", "/deprecatedFirstTimestamp") {
        Some(t) => since(Some(t), now),
        None => age_at(e, "/eventTime", now),
    };
    let mut last = match ev_time(e, "/lastTimestamp", "/deprecatedLastTimestamp") {
        Some(t) => since(Some(t), now),
        None => first.clone(),
    };
    let mut count = ev(e, "/count", "/deprecatedCount")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    if let Some(series) = e.get("series").filter(|x| x.is_object()) {
        last = age_at(series, "/lastObservedTime", now);
        count = i(series, "/count");
    } else if count == 0 {
        count = 1;
    }
    let kind = ev_s(e, "/involvedObject/kind", "/regarding/kind").to_lowercase();
    let object_name = ev_s(e, "/involvedObject/name", "/regarding/name");
    let target = if object_name.is_empty() {
        kind
    } else {
        format!("{kind}/{object_name}")
    };
    let component = first_non_empty(
        ev_s(e, "/source/component", "/deprecatedSource/component"),
        s(e, "/reportingComponent"),
        s(e, "/reportingController"),
    );
    let host = first_non_empty(
        ev_s(e, "/source/host", "/deprecatedSource/host"),
        s(e, "/reportingInstance"),
        "",
    );
    let source = if host.is_empty() {
        component.to_string()
    } else {
        format!("{component}, {host}")
    };
    vec![
        json!(last),
        json!(s(e, "/type")),
        json!(s(e, "/reason")),
        json!(target),
        json!(ev_s(e, "/involvedObject/fieldPath", "/regarding/fieldPath")),
        json!(source),
        json!(ev_s(e, "/message", "/note").trim()),
        json!(first),
        json!(count),
        name_of(e),
    ]
}

fn first_non_empty<'a>(a: &'a str, b: &'a str, c: &'a str) -> &'a str {
    [a, b, c].into_iter().find(|x| !x.is_empty()).unwrap_or("")
}

// ---------------------------------------------------------------- small core kinds

pub const NAMESPACE: Printer = Printer {
    columns: || {
        vec![
            name(),
            col("Status", "string", "The status of the namespace"),
            age(),
        ]
    },
    cells: |v, now| {
        vec![
            name_of(v),
            json!(s(v, "/status/phase")),
            json!(super::format::age(v, now)),
        ]
    },
};

pub const SECRET: Printer = Printer {
    columns: || {
        vec![
            name(),
            col("Type", "string", doc::<corev1::Secret>("type")),
            col("Data", "string", doc::<corev1::Secret>("data")),
            age(),
        ]
    },
    cells: |v, now| {
        vec![
            name_of(v),
            json!(s(v, "/type")),
            json!(len_obj(v, "/data")),
            json!(super::format::age(v, now)),
        ]
    },
};

pub const SERVICE_ACCOUNT: Printer = Printer {
    columns: || {
        vec![
            name(),
            col(
                "Secrets",
                "string",
                doc::<corev1::ServiceAccount>("secrets"),
            ),
            age(),
        ]
    },
    cells: |v, now| {
        vec![
            name_of(v),
            json!(arr(v, "/secrets").len()),
            json!(super::format::age(v, now)),
        ]
    },
};

pub const CONFIG_MAP: Printer = Printer {
    columns: || {
        vec![
            name(),
            col("Data", "string", doc::<corev1::ConfigMap>("data")),
            age(),
        ]
    },
    cells: |v, now| {
        vec![
            name_of(v),
            json!(len_obj(v, "/data") + len_obj(v, "/binaryData")),
            json!(super::format::age(v, now)),
        ]
    },
};

pub const PERSISTENT_VOLUME: Printer = Printer {
    columns: || {
        vec![
            name(),
            col(
                "Capacity",
                "string",
                doc::<corev1::PersistentVolumeSpec>("capacity"),
            ),
            col(
                "Access Modes",
                "string",
                doc::<corev1::PersistentVolumeSpec>("accessModes"),
            ),
            col(
                "Reclaim Policy",
                "string",
                doc::<corev1::PersistentVolumeSpec>("persistentVolumeReclaimPolicy"),
            ),
            col(
                "Status",
                "string",
                doc::<corev1::PersistentVolumeStatus>("phase"),
            ),
            col(
                "Claim",
                "string",
                doc::<corev1::PersistentVolumeSpec>("claimRef"),
            ),
            col("StorageClass", "string", "StorageClass of the pv"),
            col(
                "VolumeAttributesClass",
                "string",
                "VolumeAttributesClass of the pv",
            ),
            col(
                "Reason",
                "string",
                doc::<corev1::PersistentVolumeStatus>("reason"),
            ),
            age(),
            wide(
                "VolumeMode",
                "string",
                doc::<corev1::PersistentVolumeSpec>("volumeMode"),
            ),
        ]
    },
    cells: |v, now| {
        let claim = match obj(v, "/spec/claimRef") {
            Some(_) => format!(
                "{}/{}",
                s(v, "/spec/claimRef/namespace"),
                s(v, "/spec/claimRef/name")
            ),
            None => String::new(),
        };
        let deleting = v
            .pointer("/metadata/deletionTimestamp")
            .is_some_and(|d| !d.is_null());
        let phase = if deleting {
            "Terminating"
        } else {
            s(v, "/status/phase")
        };
        let class = opt_s(
            v,
            "/metadata/annotations/volume.beta.kubernetes.io~1storage-class",
        )
        .unwrap_or_else(|| s(v, "/spec/storageClassName"));
        vec![
            name_of(v),
            json!(quantity(v, "/spec/capacity/storage")),
            json!(access_modes(arr(v, "/spec/accessModes"))),
            json!(s(v, "/spec/persistentVolumeReclaimPolicy")),
            json!(phase),
            json!(claim),
            json!(class),
            json!(opt_s(v, "/spec/volumeAttributesClassName").unwrap_or("<unset>")),
            json!(s(v, "/status/reason")),
            json!(super::format::age(v, now)),
            json!(opt_s(v, "/spec/volumeMode").unwrap_or("<unset>")),
        ]
    },
};

pub const PERSISTENT_VOLUME_CLAIM: Printer = Printer {
    columns: || {
        vec![
            name(),
            col(
                "Status",
                "string",
                doc::<corev1::PersistentVolumeClaimStatus>("phase"),
            ),
            col(
                "Volume",
                "string",
                doc::<corev1::PersistentVolumeClaimSpec>("volumeName"),
            ),
            col(
                "Capacity",
                "string",
                doc::<corev1::PersistentVolumeClaimStatus>("capacity"),
            ),
            col(
                "Access Modes",
                "string",
                doc::<corev1::PersistentVolumeClaimStatus>("accessModes"),
            ),
            col("StorageClass", "string", "StorageClass of the pvc"),
            col(
                "VolumeAttributesClass",
                "string",
                "VolumeAttributesClass of the pvc",
            ),
            age(),
            wide(
                "VolumeMode",
                "string",
                doc::<corev1::PersistentVolumeClaimSpec>("volumeMode"),
            ),
        ]
    },
    cells: |v, now| {
        let deleting = v
            .pointer("/metadata/deletionTimestamp")
            .is_some_and(|d| !d.is_null());
        let phase = if deleting {
            "Terminating"
        } else {
            s(v, "/status/phase")
        };
        let volume = s(v, "/spec/volumeName");
        let (capacity, modes) = if volume.is_empty() {
            (String::new(), String::new())
        } else {
            (
                quantity(v, "/status/capacity/storage"),
                access_modes(arr(v, "/status/accessModes")),
            )
        };
        let class = opt_s(
            v,
            "/metadata/annotations/volume.beta.kubernetes.io~1storage-class",
        )
        .or_else(|| opt_s(v, "/spec/storageClassName"))
        .unwrap_or("");
        vec![
            name_of(v),
            json!(phase),
            json!(volume),
            json!(capacity),
            json!(modes),
            json!(class),
            json!(opt_s(v, "/spec/volumeAttributesClassName").unwrap_or("<unset>")),
            json!(super::format::age(v, now)),
            json!(opt_s(v, "/spec/volumeMode").unwrap_or("<unset>")),
        ]
    },
};

pub const RESOURCE_QUOTA: Printer = Printer {
    columns: || {
        vec![
            name(),
            col(
                "Request",
                "string",
                "Request represents a minimum amount of cpu/memory that a container may consume.",
            ),
            col(
                "Limit",
                "string",
                "Limits control the maximum amount of cpu/memory that a container may use independent of contention on the node.",
            ),
            age(),
        ]
    },
    cells: |v, now| {
        let mut resources: Vec<&String> = obj(v, "/status/hard")
            .map(|h| h.keys().collect())
            .unwrap_or_default();
        resources.sort();
        let mut requests: Vec<String> = Vec::new();
        let mut limits: Vec<String> = Vec::new();
        for r in resources {
            let key = r.replace('~', "~0").replace('/', "~1");
            let used = quantity(v, &format!("/status/used/{key}"));
            let hard = quantity(v, &format!("/status/hard/{key}"));
            let text = format!("{r}: {used}/{hard}");
            let pieces: Vec<&str> = r.split('.').collect();
            if pieces.len() > 1 && pieces[0] == "limits" {
                limits.push(text);
            } else {
                requests.push(text);
            }
        }
        vec![
            name_of(v),
            json!(requests.join(", ")),
            json!(limits.join(", ")),
            json!(super::format::age(v, now)),
        ]
    },
};

pub const COMPONENT_STATUS: Printer = Printer {
    columns: || {
        vec![
            name(),
            col("Status", "string", "Status of the component conditions"),
            col("Message", "string", "Message of the component conditions"),
            col("Error", "string", "Error of the component conditions"),
        ]
    },
    cells: |v, _| {
        let healthy = arr(v, "/conditions")
            .iter()
            .find(|c| s(c, "/type") == "Healthy");
        let (status, message, error) = match healthy {
            Some(c) => (
                if s(c, "/status") == "True" {
                    "Healthy"
                } else {
                    "Unhealthy"
                },
                s(c, "/message"),
                s(c, "/error"),
            ),
            None => ("Unknown", "", ""),
        };
        vec![name_of(v), json!(status), json!(message), json!(error)]
    },
};
