//! What an object costs against a ResourceQuota (upstream
//! pkg/quota/v1/evaluator/core: the pod, service and PVC evaluators and the
//! generic object counter), shared by quota admission and the resourcequota
//! controller. No I/O.

use std::collections::BTreeMap;

use agent::quantity::{Format, ParsedQuantity};
use serde_json::Value;

use crate::resources::ResourceType;

/// Resource name to amount.
pub type Usage = BTreeMap<String, ParsedQuantity>;

fn one() -> ParsedQuantity {
    ParsedQuantity::from_i64(1, Format::DecimalSI)
}

fn count(n: usize) -> ParsedQuantity {
    ParsedQuantity::from_i64(i64::try_from(n).unwrap_or(i64::MAX), Format::DecimalSI)
}

/// `count/<plural>` or `count/<plural>.<group>`.
pub fn object_count_name(r: &ResourceType) -> String {
    if r.group.is_empty() {
        format!("count/{}", r.plural)
    } else {
        format!("count/{}.{}", r.plural, r.group)
    }
}

/// Reads a resource list (`requests`, `limits`, `hard`); unparsable values are skipped.
pub fn resource_list(v: Option<&Value>) -> Usage {
    v.and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| {
                    let q = ParsedQuantity::parse(v.as_str()?).ok()?;
                    Some((k.clone(), q))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// `a + b` per resource.
pub fn add(a: &Usage, b: &Usage) -> Usage {
    let mut out = a.clone();
    for (k, v) in b {
        let sum = match out.get(k) {
            Some(cur) => cur.add(v),
            None => *v,
        };
        out.insert(k.clone(), sum);
    }
    out
}

/// `a - b` per resource of `a`, floored at zero.
pub fn sub(a: &Usage, b: &Usage) -> Usage {
    let mut out = a.clone();
    for (k, v) in b {
        if let Some(cur) = out.get(k) {
            let d = cur.sub(v);
            out.insert(
                k.clone(),
                if d.is_negative() {
                    ParsedQuantity::zero(cur.format())
                } else {
                    d
                },
            );
        }
    }
    out
}

/// Per resource maximum.
fn max(a: &Usage, b: &Usage) -> Usage {
    let mut out = a.clone();
    for (k, v) in b {
        if out.get(k).is_none_or(|cur| v > cur) {
            out.insert(k.clone(), *v);
        }
    }
    out
}

/// The containers' resource lists summed, raised to any init container's,
/// plus the overhead (upstream `resourcehelper.PodRequests`/`PodLimits`).
pub fn pod_resources(pod: &Value, which: &str) -> Usage {
    let list = |c: &Value| resource_list(c.pointer(&format!("/resources/{which}")));
    let containers = pod.pointer("/spec/containers").and_then(Value::as_array);
    let mut sum = Usage::new();
    for c in containers.into_iter().flatten() {
        sum = add(&sum, &list(c));
    }
    let inits = pod
        .pointer("/spec/initContainers")
        .and_then(Value::as_array);
    for c in inits.into_iter().flatten() {
        sum = max(&sum, &list(c));
    }
    add(&sum, &resource_list(pod.pointer("/spec/overhead")))
}

/// Whether a pod is charged for compute resources: not finished, and not
/// stuck terminating past its grace period (upstream `QuotaV1Pod`).
pub fn pod_counts(pod: &Value, now: chrono::DateTime<chrono::Utc>) -> bool {
    if matches!(
        pod.pointer("/status/phase").and_then(Value::as_str),
        Some("Succeeded" | "Failed")
    ) {
        return false;
    }
    let deleted = pod
        .pointer("/metadata/deletionTimestamp")
        .and_then(Value::as_str)
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
    let grace = pod
        .pointer("/metadata/deletionGracePeriodSeconds")
        .and_then(Value::as_i64);
    match (deleted, grace) {
        (Some(at), Some(g)) => now <= at.with_timezone(&chrono::Utc) + chrono::Duration::seconds(g),
        _ => true,
    }
}

/// Whether the pod has no request or limit at all (QoS BestEffort).
pub fn is_best_effort(pod: &Value) -> bool {
    let all = ["containers", "initContainers"];
    all.iter().all(|list| {
        pod.pointer(&format!("/spec/{list}"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .all(|c| {
                ["requests", "limits"].iter().all(|w| {
                    c.pointer(&format!("/resources/{w}"))
                        .and_then(Value::as_object)
                        .is_none_or(|m| m.keys().all(|k| !matches!(k.as_str(), "cpu" | "memory")))
                })
            })
    })
}

fn pod_usage(pod: &Value, now: chrono::DateTime<chrono::Utc>) -> Usage {
    let mut out = Usage::new();
    out.insert("count/pods".into(), one());
    if !pod_counts(pod, now) {
        return out;
    }
    out.insert("pods".into(), one());
    for (which, prefix) in [("requests", "requests."), ("limits", "limits.")] {
        for (k, v) in pod_resources(pod, which) {
            let standard = matches!(k.as_str(), "cpu" | "memory" | "ephemeral-storage");
            let name = format!("{prefix}{k}");
            if which == "requests" && standard {
                // `cpu` and `memory` are the legacy names of the requests.
                out.insert(k.clone(), v);
            }
            if standard || k.starts_with("hugepages-") || which == "requests" {
                out.insert(name, v);
            }
        }
    }
    out
}

fn service_usage(svc: &Value) -> Usage {
    let mut out = Usage::new();
    out.insert("services".into(), one());
    out.insert("count/services".into(), one());
    let ports = svc
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    match svc.pointer("/spec/type").and_then(Value::as_str) {
        Some("NodePort") => {
            out.insert("services.nodeports".into(), count(ports));
        }
        Some("LoadBalancer") => {
            out.insert("services.loadbalancers".into(), one());
            let node_ports = svc
                .pointer("/spec/allocateLoadBalancerNodePorts")
                .and_then(Value::as_bool)
                != Some(false);
            out.insert(
                "services.nodeports".into(),
                count(if node_ports { ports } else { 0 }),
            );
        }
        _ => {}
    }
    out
}

fn claim_usage(pvc: &Value) -> Usage {
    let mut out = Usage::new();
    out.insert("persistentvolumeclaims".into(), one());
    out.insert("count/persistentvolumeclaims".into(), one());
    let class = pvc
        .pointer("/spec/storageClassName")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty());
    if let Some(c) = class {
        out.insert(
            format!("{c}.storageclass.storage.k8s.io/persistentvolumeclaims"),
            one(),
        );
    }
    if let Some(storage) = resource_list(pvc.pointer("/spec/resources/requests")).get("storage") {
        out.insert("requests.storage".into(), *storage);
        if let Some(c) = class {
            out.insert(
                format!("{c}.storageclass.storage.k8s.io/requests.storage"),
                *storage,
            );
        }
    }
    out
}

/// What one object of `r` costs.
pub fn usage(r: &ResourceType, obj: &Value, now: chrono::DateTime<chrono::Utc>) -> Usage {
    let mut out = match (r.group, r.plural) {
        ("", "pods") => pod_usage(obj, now),
        ("", "services") => service_usage(obj),
        ("", "persistentvolumeclaims") => claim_usage(obj),
        ("", plural @ ("configmaps" | "secrets" | "replicationcontrollers" | "resourcequotas")) => {
            BTreeMap::from([(plural.to_string(), one())])
        }
        _ => Usage::new(),
    };
    out.insert(object_count_name(r), one());
    out
}

/// Whether a quota's scopes select the object; scoped quotas only ever
/// select pods (upstream's pod evaluator `MatchingScopes`).
pub fn scopes_match(quota: &Value, r: &ResourceType, obj: &Value) -> bool {
    let mut scopes: Vec<(String, bool)> = quota
        .pointer("/spec/scopes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(|s| (s.to_string(), true))
        .collect();
    for e in quota
        .pointer("/spec/scopeSelector/matchExpressions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let name = e.get("scopeName").and_then(Value::as_str).unwrap_or("");
        let exists = e.get("operator").and_then(Value::as_str) != Some("DoesNotExist");
        scopes.push((name.to_string(), exists));
    }
    if scopes.is_empty() {
        return true;
    }
    if !(r.group.is_empty() && r.plural == "pods") {
        return false;
    }
    scopes.iter().all(|(scope, want)| {
        let terminating = obj
            .pointer("/spec/activeDeadlineSeconds")
            .and_then(Value::as_i64)
            .is_some_and(|d| d >= 0);
        let m = match scope.as_str() {
            "Terminating" => terminating,
            "NotTerminating" => !terminating,
            "BestEffort" => is_best_effort(obj),
            "NotBestEffort" => !is_best_effort(obj),
            // PriorityClass and CrossNamespacePodAffinity need their values: unsupported.
            _ => false,
        };
        m == *want
    })
}

/// Which resources a quota with these scopes tracks: BestEffort quotas only
/// count pods.
pub fn tracks(quota: &Value, resource: &str) -> bool {
    let best_effort = quota
        .pointer("/spec/scopes")
        .and_then(Value::as_array)
        .is_some_and(|s| s.iter().any(|v| v == "BestEffort"));
    !best_effort || matches!(resource, "pods" | "count/pods")
}

/// Upstream `prettyPrint`: `a=1,b=2Gi`, sorted.
pub fn pretty(u: &Usage) -> String {
    u.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::find;
    use serde_json::json;

    fn q(s: &str) -> ParsedQuantity {
        ParsedQuantity::parse(s).unwrap()
    }

    #[test]
    fn pods_cost_their_requests_limits_and_one_pod() {
        let pods = find("", "v1", "pods").unwrap();
        let pod = json!({"spec": {"containers": [
            {"name": "a", "resources": {"requests": {"cpu": "250m", "memory": "64Mi"}, "limits": {"cpu": "500m"}}},
            {"name": "b", "resources": {"requests": {"cpu": "250m"}}}],
            "initContainers": [{"name": "i", "resources": {"requests": {"cpu": "1"}}}]}});
        let u = usage(pods, &pod, chrono::Utc::now());
        assert_eq!(u["pods"], q("1"));
        assert_eq!(u["count/pods"], q("1"));
        assert_eq!(u["requests.cpu"], q("1"));
        assert_eq!(u["cpu"], q("1"));
        assert_eq!(u["requests.memory"], q("64Mi"));
        assert_eq!(u["limits.cpu"], q("500m"));
        assert!(!u.contains_key("limits.memory"));
        let done = json!({"spec": {"containers": []}, "status": {"phase": "Succeeded"}});
        let u = usage(pods, &done, chrono::Utc::now());
        assert_eq!(u.keys().collect::<Vec<_>>(), ["count/pods"]);
    }

    #[test]
    fn services_claims_and_other_objects_are_counted() {
        let svc = find("", "v1", "services").unwrap();
        let u = usage(
            svc,
            &json!({"spec": {"type": "NodePort", "ports": [{"port": 1}, {"port": 2}]}}),
            chrono::Utc::now(),
        );
        assert_eq!(u["services.nodeports"], q("2"));
        assert_eq!(u["services"], q("1"));
        let deploy = find("apps", "v1", "deployments").unwrap();
        let u = usage(deploy, &json!({}), chrono::Utc::now());
        assert_eq!(pretty(&u), "count/deployments.apps=1");
        let pvc = find("", "v1", "persistentvolumeclaims").unwrap();
        let u = usage(
            pvc,
            &json!({"spec": {"storageClassName": "fast", "resources": {"requests": {"storage": "1Gi"}}}}),
            chrono::Utc::now(),
        );
        assert_eq!(
            u["fast.storageclass.storage.k8s.io/requests.storage"],
            q("1Gi")
        );
    }

    #[test]
    fn scopes_select_pods_by_qos_and_deadline() {
        let pods = find("", "v1", "pods").unwrap();
        let cms = find("", "v1", "configmaps").unwrap();
        let be = json!({"spec": {"containers": [{"name": "a"}]}});
        let burst = json!({"spec": {"activeDeadlineSeconds": 5, "containers": [{"name": "a", "resources": {"requests": {"cpu": "1"}}}]}});
        let quota = json!({"spec": {"scopes": ["BestEffort"]}});
        assert!(scopes_match(&quota, pods, &be));
        assert!(!scopes_match(&quota, pods, &burst));
        assert!(!scopes_match(&quota, cms, &json!({})));
        let quota = json!({"spec": {"scopes": ["NotBestEffort", "Terminating"]}});
        assert!(scopes_match(&quota, pods, &burst));
        assert!(scopes_match(&json!({"spec": {}}), cms, &json!({})));
    }
}
