//! What one sync reads besides the HPA: the pods of the target's scale
//! selector and their samples from `metrics.k8s.io` (served by
//! `server::metrics_api` from the kubelets' Summary API, the source
//! `kubectl top` uses), as upstream's resource metrics client does.

use agent::quantity::ParsedQuantity;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, ApiResource, DynamicObject, ListParams};
use serde_json::Value;

use super::replicas::{PodInfo, PodMetric, PodMetrics};

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("unable to fetch metrics from resource metrics API: {0}")]
    Fetch(String),
    #[error("no metrics returned from resource metrics API")]
    NoMetrics,
    #[error(
        "failed to get container metrics: container {container} not present in metrics for pod {pod}"
    )]
    NoContainer { container: String, pod: String },
    #[error("unable to get pods while calculating replica count: {0}")]
    Pods(String),
}

/// The message of an API error (a Status' `message`), or the error itself.
pub fn api_message(err: &kube::Error) -> String {
    match err {
        kube::Error::Api(s) => s.message.clone(),
        other => other.to_string(),
    }
}

fn pod_metrics_resource() -> ApiResource {
    ApiResource {
        group: "metrics.k8s.io".into(),
        version: "v1beta1".into(),
        api_version: "metrics.k8s.io/v1beta1".into(),
        kind: "PodMetrics".into(),
        plural: "pods".into(),
    }
}

/// The pods of `selector` in `ns`, reduced to what the calculation needs
/// about `resource`.
pub async fn pods(
    client: &kube::Client,
    ns: &str,
    selector: &str,
    resource: &str,
) -> Result<Vec<PodInfo>, MetricsError> {
    let list = Api::<Pod>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(selector))
        .await
        .map_err(|e| MetricsError::Pods(api_message(&e)))?;
    Ok(list.items.iter().map(|p| pod_info(p, resource)).collect())
}

/// One pod as the calculation sees it.
pub fn pod_info(pod: &Pod, resource: &str) -> PodInfo {
    let status = pod.status.as_ref();
    let ready = status
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .map(|c| {
            (
                c.status == "True",
                c.last_transition_time.as_ref().map(|t| t.0),
            )
        });
    let requests = pod
        .spec
        .as_ref()
        .map(|s| s.containers.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|c| {
            let request = c
                .resources
                .as_ref()
                .and_then(|r| r.requests.as_ref())
                .and_then(|r| r.get(resource))
                .and_then(|q| ParsedQuantity::from_quantity(q).ok())
                .map(|q| q.milli_value());
            (c.name.clone(), request)
        })
        .collect();
    PodInfo {
        name: pod.metadata.name.clone().unwrap_or_default(),
        phase: status
            .and_then(|s| s.phase.clone())
            .unwrap_or_else(|| "Pending".into()),
        deleting: pod.metadata.deletion_timestamp.is_some(),
        start_time: status.and_then(|s| s.start_time.as_ref()).map(|t| t.0),
        ready,
        requests,
    }
}

/// The samples of `resource` for the pods of `selector`: per pod the sum
/// over its containers, or one container's value.
pub async fn resource_metrics(
    client: &kube::Client,
    ns: &str,
    selector: &str,
    resource: &str,
    container: Option<&str>,
) -> Result<PodMetrics, MetricsError> {
    let list = Api::<DynamicObject>::namespaced_with(client.clone(), ns, &pod_metrics_resource())
        .list(&ListParams::default().labels(selector))
        .await
        .map_err(|e| MetricsError::Fetch(api_message(&e)))?;
    if list.items.is_empty() {
        return Err(MetricsError::NoMetrics);
    }
    let mut out = PodMetrics::new();
    for item in &list.items {
        let name = item.metadata.name.clone().unwrap_or_default();
        if let Some(m) = sample(&item.data, &format!("{ns}/{name}"), resource, container)? {
            out.insert(name, m);
        }
    }
    Ok(out)
}

/// One PodMetrics object's sample (`getPodMetrics`, `getContainersMetrics`):
/// a pod missing the resource in any container has no sample. `pod`
/// (`namespace/name`) only names it in errors.
pub fn sample(
    data: &Value,
    pod: &str,
    resource: &str,
    container: Option<&str>,
) -> Result<Option<PodMetric>, MetricsError> {
    let timestamp = data
        .get("timestamp")
        .and_then(Value::as_str)
        .and_then(|t| t.parse::<Timestamp>().ok())
        .unwrap_or_else(Timestamp::now);
    let window = data
        .get("window")
        .and_then(Value::as_str)
        .and_then(crate::config::parse_duration)
        .and_then(|d| SignedDuration::try_from(d).ok())
        .unwrap_or(SignedDuration::ZERO);
    let containers = data
        .get("containers")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let usage = |c: &Value| {
        c.pointer(&format!("/usage/{resource}"))
            .and_then(Value::as_str)
            .and_then(|q| ParsedQuantity::parse(q).ok())
            .map(|q| q.milli_value())
    };
    let value = match container {
        Some(name) => {
            let Some(c) = containers
                .iter()
                .find(|c| c.get("name").and_then(Value::as_str) == Some(name))
            else {
                return Err(MetricsError::NoContainer {
                    container: name.to_string(),
                    pod: pod.to_string(),
                });
            };
            usage(c)
        }
        None if containers.is_empty() => None,
        None => containers.iter().map(usage).sum::<Option<i64>>(),
    };
    Ok(value.map(|value| PodMetric {
        value,
        timestamp,
        window,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pod_samples_sum_containers_in_milli_units() {
        let data = json!({"timestamp": "2026-01-01T00:00:00Z", "window": "10s", "containers": [
            {"name": "a", "usage": {"cpu": "150m", "memory": "1Mi"}},
            {"name": "b", "usage": {"cpu": "1500u", "memory": "1Mi"}}]});
        let m = sample(&data, "p", "cpu", None).unwrap().unwrap();
        assert_eq!(m.value, 152);
        assert_eq!(m.window, SignedDuration::from_secs(10));
        let m = sample(&data, "p", "memory", Some("b")).unwrap().unwrap();
        assert_eq!(m.value, 1_048_576_000);
        let err = sample(&data, "p", "cpu", Some("x")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "failed to get container metrics: container x not present in metrics for pod p"
        );
    }

    #[test]
    fn a_container_without_the_resource_drops_the_pod() {
        let data = json!({"containers": [{"name": "a", "usage": {"memory": "1Mi"}}]});
        assert_eq!(sample(&data, "p", "cpu", None).unwrap(), None);
    }

    #[test]
    fn pod_info_reads_requests_readiness_and_phase() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p"},
            "spec": {"containers": [
                {"name": "a", "resources": {"requests": {"cpu": "200m"}}},
                {"name": "b"}]},
            "status": {"phase": "Running", "startTime": "2026-01-01T00:00:00Z",
                "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:00:05Z"}]}
        }))
        .unwrap();
        let info = pod_info(&pod, "cpu");
        assert_eq!(info.phase, "Running");
        assert_eq!(
            info.requests,
            vec![("a".into(), Some(200)), ("b".into(), None)]
        );
        assert_eq!(info.ready.map(|r| r.0), Some(true));
    }
}
