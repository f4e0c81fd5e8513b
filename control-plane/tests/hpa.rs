//! The HorizontalPodAutoscaler controller against a real r8s-server and
//! real kubectl: `kubectl autoscale` on a Deployment whose pods run on a
//! fake node (`common::kubelet::FakeKubelet`), with CPU samples served by a
//! fake Summary API (`common::kubelet::summary_kubelet`) that the server's
//! metrics.k8s.io reads, as `kubectl top` does.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::kubelet::{FakeKubelet, now, summary_kubelet};
use common::{Server, wait_for};
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use serde_json::{Value, json};

const NODE: &str = "hpa-node";

const DEPLOYMENT: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 1
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: c
        image: busybox
        resources:
          requests: {cpu: 100m}
";

/// A Summary with every running `app=web` pod using `millicores` of CPU
/// (`None`: no pod samples at all).
async fn summary_of(client: &kube::Client, millicores: Option<u64>) -> Value {
    let t = now();
    let mut pods = Vec::new();
    if let Some(m) = millicores {
        let api: Api<Pod> = Api::namespaced(client.clone(), "default");
        let list = api
            .list(&ListParams::default().labels("app=web"))
            .await
            .map(|l| l.items)
            .unwrap_or_default();
        for p in list {
            pods.push(
                json!({"podRef": {"name": p.name_any(), "namespace": "default",
                "uid": p.uid().unwrap_or_default()},
                "containers": [{"name": "c", "cpu": {"time": t, "usageNanoCores": m * 1_000_000},
                    "memory": {"time": t, "workingSetBytes": 1_048_576u64}}]}),
            );
        }
    }
    json!({"node": {"nodeName": NODE, "cpu": {"time": t, "usageNanoCores": 1_000_000u64},
        "memory": {"time": t, "workingSetBytes": 1_048_576u64}}, "pods": pods})
}

fn hpa_json(server: &Server) -> Value {
    serde_json::from_str(&server.ok(&[
        "get",
        "horizontalpodautoscalers.v2.autoscaling",
        "web",
        "-o",
        "json",
    ]))
    .expect("hpa json")
}

fn condition(hpa: &Value, type_: &str) -> Option<(String, String)> {
    hpa["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
        .map(|c| {
            (
                c["status"].as_str().unwrap_or("").to_string(),
                c["reason"].as_str().unwrap_or("").to_string(),
            )
        })
}

/// The TARGETS cell of `kubectl get hpa web`.
fn targets(server: &Server) -> String {
    let out = server.ok(&["get", "hpa", "web"]);
    let header = out.lines().next().unwrap_or("");
    let row = out.lines().find(|l| l.starts_with("web")).unwrap_or("");
    let (Some(start), Some(end)) = (header.find("TARGETS"), header.find("MINPODS")) else {
        return String::new();
    };
    row.get(start..end.min(row.len()))
        .unwrap_or("")
        .trim()
        .to_string()
}

fn deployment_replicas(server: &Server) -> i64 {
    server
        .ok(&["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"])
        .trim()
        .parse()
        .unwrap_or(0)
}

#[test]
fn kubectl_autoscale_scales_on_cpu_and_reports_missing_metrics() {
    let server = Server::start_with(&[
        "--horizontal-pod-autoscaler-sync-period=1s",
        "--horizontal-pod-autoscaler-downscale-stabilization=3s",
    ]);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let summary = Arc::new(Mutex::new(json!({"node": {"nodeName": NODE}, "pods": []})));
    let port = rt.block_on(summary_kubelet(summary.clone()));
    let _kubelet = FakeKubelet::start(&server, &[NODE]);
    wait_for(30, "the fake node", || {
        server.kubectl(&["get", "node", NODE]).status.success()
    });
    let endpoint = json!({"status": {
        "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": port}}}});
    server.ok(&[
        "patch",
        "node",
        NODE,
        "--subresource=status",
        "--type=merge",
        "-p",
        &endpoint.to_string(),
    ]);
    // The summary follows the pods: none sampled until `usage` is set.
    let usage: Arc<Mutex<Option<u64>>> = Arc::new(Mutex::new(None));
    let client = rt.block_on(server.client());
    let (s, u) = (summary.clone(), usage.clone());
    rt.spawn(async move {
        loop {
            let m = u.lock().map(|u| *u).unwrap_or(None);
            let next = summary_of(&client, m).await;
            if let Ok(mut cur) = s.lock() {
                *cur = next;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });

    server.ok_stdin(&["apply", "-f", "-"], DEPLOYMENT);
    let out = server.ok(&[
        "autoscale",
        "deploy",
        "web",
        "--cpu-percent=50",
        "--min=1",
        "--max=4",
    ]);
    assert!(out.contains("autoscaled"), "{out}");

    // Without samples the HPA cannot compute a count.
    wait_for(60, "ScalingActive=False FailedGetResourceMetric", || {
        condition(&hpa_json(&server), "ScalingActive")
            == Some(("False".into(), "FailedGetResourceMetric".into()))
    });
    let hpa = hpa_json(&server);
    assert_eq!(
        condition(&hpa, "AbleToScale"),
        Some(("True".into(), "SucceededGetScale".into())),
        "{hpa}"
    );
    let active = hpa["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "ScalingActive"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        active["message"],
        "the HPA was unable to compute the replica count: failed to get cpu utilization: unable to get metrics for resource cpu: no metrics returned from resource metrics API",
        "{hpa}"
    );
    assert_eq!(targets(&server), "cpu: <unknown>/50%");
    assert_eq!(deployment_replicas(&server), 1);
    let events = server.ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.kind=HorizontalPodAutoscaler,reason=FailedGetResourceMetric",
    ]);
    assert!(events.contains("no metrics returned"), "{events}");

    // 90% of the request on every pod: 1 -> 2 -> 4 (maxReplicas).
    if let Ok(mut u) = usage.lock() {
        *u = Some(90);
    }
    wait_for(120, "the deployment scaled to 4", || {
        deployment_replicas(&server) == 4
    });
    wait_for(60, "the status at 4 replicas", || {
        let hpa = hpa_json(&server);
        hpa["status"]["currentReplicas"] == 4
            && condition(&hpa, "ScalingLimited") == Some(("True".into(), "TooManyReplicas".into()))
    });
    let hpa = hpa_json(&server);
    assert_eq!(
        condition(&hpa, "ScalingActive"),
        Some(("True".into(), "ValidMetricFound".into())),
        "{hpa}"
    );
    assert_eq!(
        hpa["status"]["currentMetrics"][0]["resource"]["current"]["averageUtilization"], 90,
        "{hpa}"
    );
    assert!(hpa["status"]["lastScaleTime"].is_string(), "{hpa}");
    assert_eq!(targets(&server), "cpu: 90%/50%");
    let events = server.ok(&[
        "get",
        "events",
        "--field-selector",
        "reason=SuccessfulRescale",
        "-o",
        "jsonpath={.items[*].message}",
    ]);
    assert!(
        events.contains(
            "New size: 2; reason: cpu resource utilization (percentage of request) above target"
        ),
        "{events}"
    );
    // autoscaling/v1 shows the same through conversion.
    let v1 = server.ok(&[
        "get",
        "horizontalpodautoscalers.v1.autoscaling",
        "web",
        "-o",
        "jsonpath={.status.currentCPUUtilizationPercentage}",
    ]);
    assert_eq!(v1.trim(), "90");

    // 10% on every pod: down to minReplicas once the (shortened)
    // stabilization window has passed.
    if let Ok(mut u) = usage.lock() {
        *u = Some(10);
    }
    wait_for(120, "the deployment scaled down to 1", || {
        deployment_replicas(&server) == 1
    });
    let events = server.ok(&[
        "get",
        "events",
        "--field-selector",
        "reason=SuccessfulRescale",
        "-o",
        "jsonpath={.items[*].message}",
    ]);
    assert!(
        events.contains("New size: 1; reason: All metrics below target"),
        "{events}"
    );
}
