//! `metrics.k8s.io/v1beta1` served by r8s-server itself, as metrics-server
//! would: NodeMetrics and PodMetrics read on demand from each kubelet's
//! Summary API (`/stats/summary`, reached like the proxy subresources with
//! the kubelet client certificate), so that `kubectl top` works.

use std::sync::Arc;
use std::time::Duration;

use agent::quantity::{Format, ParsedQuantity};
use axum::body::Body;
use http::{Method, Request, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};

use super::Api;
use super::meta::{self, str_at};
use super::objects::ListOptions;
use super::proxy;
use super::route::ResourcePath;
use super::status::ApiError;
use crate::resources;

pub const GROUP: &str = "metrics.k8s.io";
pub const VERSION: &str = "v1beta1";
const API_VERSION: &str = "metrics.k8s.io/v1beta1";

/// How long one kubelet may take to answer.
const KUBELET_TIMEOUT: Duration = Duration::from_secs(5);

/// A served metrics resource: `(plural, singular, kind, namespaced)`.
pub const RESOURCES: &[(&str, &str, &str, bool)] = &[
    ("nodes", "", "NodeMetrics", false),
    ("pods", "", "PodMetrics", true),
];

/// Whether a request is for this API.
pub fn is_metrics(p: &ResourcePath) -> bool {
    p.group == GROUP && p.version == VERSION
}

/// CPU in cores from nanocores, memory in bytes, printed as metrics-server does.
fn usage(stats: &Value) -> Value {
    let cpu = stats
        .pointer("/cpu/usageNanoCores")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let mem = stats
        .pointer("/memory/workingSetBytes")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let cpu = ParsedQuantity::parse(&format!("{cpu}n"))
        .map(|q| q.to_string())
        .unwrap_or_else(|_| "0".into());
    let mem = ParsedQuantity::from_i64(mem, Format::BinarySI).to_string();
    json!({"cpu": cpu, "memory": mem})
}

fn timestamp(stats: &Value) -> Value {
    stats
        .pointer("/cpu/time")
        .cloned()
        .unwrap_or_else(|| json!(meta::now()))
}

/// The NodeMetrics of a node's summary.
pub fn node_metrics(node: &Value, summary: &Value) -> Value {
    let stats = summary.get("node").cloned().unwrap_or_else(|| json!({}));
    json!({
        "metadata": {
            "name": meta::name(node),
            "creationTimestamp": meta::now(),
            "labels": node.pointer("/metadata/labels").cloned().unwrap_or_else(|| json!({})),
        },
        "timestamp": timestamp(&stats),
        "window": "10s",
        "usage": usage(&stats),
    })
}

/// The PodMetrics of a pod from its node's summary, if the kubelet reports it.
pub fn pod_metrics(pod: &Value, summary: &Value) -> Option<Value> {
    let ns = str_at(pod, "/metadata/namespace").unwrap_or("");
    let name = meta::name(pod);
    let stats = summary.get("pods")?.as_array()?.iter().find(|p| {
        str_at(p, "/podRef/name") == Some(name) && str_at(p, "/podRef/namespace") == Some(ns)
    })?;
    let containers: Vec<Value> = stats
        .get("containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|c| json!({"name": c.get("name").cloned().unwrap_or(Value::Null), "usage": usage(c)}))
        .collect();
    let ts = stats
        .get("containers")
        .and_then(Value::as_array)
        .and_then(|c| c.first())
        .map_or_else(|| json!(meta::now()), timestamp);
    Some(json!({
        "metadata": {
            "name": name,
            "namespace": ns,
            "creationTimestamp": meta::now(),
            "labels": pod.pointer("/metadata/labels").cloned().unwrap_or_else(|| json!({})),
        },
        "timestamp": ts,
        "window": "10s",
        "containers": containers,
    }))
}

/// Reads a node's `/stats/summary`.
async fn summary(api: &Arc<Api>, node: &str) -> Result<Value, ApiError> {
    let kubelet = proxy::kubelet_of_node(api, node).await?;
    let fetch = async {
        let mut sender = proxy::connect(api, &kubelet).await?;
        let req = Request::builder()
            .method(Method::GET)
            .uri("/stats/summary")
            .header(header::HOST, format!("{}:{}", kubelet.host, kubelet.port))
            .body(Body::empty())
            .map_err(|e| ApiError::internal(e.to_string()))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| ApiError::internal(format!("kubelet {node}: {e}")))?;
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| ApiError::internal(format!("kubelet {node}: {e}")))?
            .to_bytes();
        serde_json::from_slice::<Value>(&bytes)
            .map_err(|e| ApiError::internal(format!("kubelet {node} summary: {e}")))
    };
    tokio::time::timeout(KUBELET_TIMEOUT, fetch)
        .await
        .map_err(|_| ApiError::timeout(format!("kubelet {node} did not answer")))?
}

fn not_found(plural: &str, name: &str) -> ApiError {
    let mut e = ApiError::new(
        404,
        "NotFound",
        format!("{plural}.{GROUP} \"{name}\" not found"),
    );
    e.details = Some(json!({"name": name, "group": GROUP, "kind": plural}));
    e
}

fn list(kind: &str, items: Vec<Value>) -> Value {
    json!({"kind": kind, "apiVersion": API_VERSION, "metadata": {}, "items": items})
}

fn with_type(mut obj: Value, kind: &str) -> Value {
    obj["kind"] = json!(kind);
    obj["apiVersion"] = json!(API_VERSION);
    obj
}

/// Serves a GET of NodeMetrics or PodMetrics (one or a list).
pub async fn handle(
    api: &Arc<Api>,
    method: &Method,
    p: &ResourcePath,
    label_selector: Option<&str>,
) -> Result<Value, ApiError> {
    if method != Method::GET {
        return Err(ApiError::method_not_allowed(
            "the server does not allow this method on the requested resource",
        ));
    }
    let opts = ListOptions {
        label_selector: label_selector.map(str::to_string),
        ..Default::default()
    };
    match p.plural.as_str() {
        "nodes" => {
            let nodes_r =
                resources::find("", "v1", "nodes").ok_or_else(ApiError::path_not_found)?;
            let nodes = match p.name.as_deref() {
                Some(n) => vec![
                    api.read(nodes_r, None, n)
                        .await?
                        .ok_or_else(|| not_found("nodes", n))?
                        .0,
                ],
                None => api.list(nodes_r, None, &opts).await?.items,
            };
            let mut items = Vec::new();
            for node in &nodes {
                match summary(api, meta::name(node)).await {
                    Ok(s) => items.push(node_metrics(node, &s)),
                    Err(err) => {
                        tracing::debug!(node = meta::name(node), %err, "no metrics from kubelet");
                    }
                }
            }
            match p.name.as_deref() {
                Some(n) => items
                    .pop()
                    .map(|m| with_type(m, "NodeMetrics"))
                    .ok_or_else(|| not_found("nodes", n)),
                None => Ok(list("NodeMetricsList", items)),
            }
        }
        "pods" => {
            let pods_r = resources::find("", "v1", "pods").ok_or_else(ApiError::path_not_found)?;
            let ns = p.namespace.as_deref();
            let pods = match p.name.as_deref() {
                Some(n) => vec![
                    api.read(pods_r, ns, n)
                        .await?
                        .ok_or_else(|| not_found("pods", n))?
                        .0,
                ],
                None => api.list(pods_r, ns, &opts).await?.items,
            };
            let mut summaries: std::collections::BTreeMap<String, Option<Value>> =
                Default::default();
            let mut items = Vec::new();
            for pod in &pods {
                let Some(node) = str_at(pod, "/spec/nodeName").filter(|n| !n.is_empty()) else {
                    continue;
                };
                if !summaries.contains_key(node) {
                    let s = summary(api, node).await.ok();
                    summaries.insert(node.to_string(), s);
                }
                if let Some(Some(s)) = summaries.get(node)
                    && let Some(m) = pod_metrics(pod, s)
                {
                    items.push(m);
                }
            }
            match p.name.as_deref() {
                Some(n) => items
                    .pop()
                    .map(|m| with_type(m, "PodMetrics"))
                    .ok_or_else(|| not_found("pods", n)),
                None => Ok(list("PodMetricsList", items)),
            }
        }
        _ => Err(ApiError::path_not_found()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary() -> Value {
        json!({
            "node": {"nodeName": "n", "cpu": {"time": "2026-01-01T00:00:00Z", "usageNanoCores": 250_000_000}, "memory": {"workingSetBytes": 104_857_600}},
            "pods": [{"podRef": {"name": "web", "namespace": "d", "uid": "u"}, "containers": [
                {"name": "c", "cpu": {"usageNanoCores": 1_500_000}, "memory": {"workingSetBytes": 1_048_576}}]}]
        })
    }

    #[test]
    fn node_and_pod_usage_read_the_summary_like_metrics_server() {
        let node = json!({"metadata": {"name": "n"}});
        let m = node_metrics(&node, &summary());
        assert_eq!(m["usage"], json!({"cpu": "250m", "memory": "100Mi"}));
        assert_eq!(m["timestamp"], "2026-01-01T00:00:00Z");
        let pod = json!({"metadata": {"name": "web", "namespace": "d"}});
        let m = pod_metrics(&pod, &summary()).unwrap();
        assert_eq!(
            m["containers"][0],
            json!({"name": "c", "usage": {"cpu": "1500u", "memory": "1Mi"}})
        );
        let other = json!({"metadata": {"name": "x", "namespace": "d"}});
        assert!(pod_metrics(&other, &summary()).is_none());
    }
}
