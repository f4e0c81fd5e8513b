//! Policy against a real r8s-server and real kubectl: `kubectl drain` with a
//! PodDisruptionBudget (eviction API + disruption controller), ResourceQuota
//! and LimitRange admission. No kubelet runs: `common::kubelet::FakeKubelet`
//! stands in for the nodes.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::kubelet::{FakeKubelet, now, summary_kubelet};
use common::{Server, wait_for};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams};
use serde_json::{Value, json};

fn json_of(server: &Server, args: &[&str]) -> Value {
    let mut a = args.to_vec();
    a.extend(["-o", "json"]);
    serde_json::from_str(&server.ok(&a)).expect("kubectl json")
}

/// `(name, node)` of the running `app=web` pods that are not being deleted.
fn web_pods(server: &Server) -> Vec<(String, String)> {
    json_of(server, &["get", "pods", "-l", "app=web"])["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .filter(|p| p["status"]["phase"] == "Running")
        .map(|p| {
            (
                p["metadata"]["name"].as_str().unwrap_or("").to_string(),
                p["spec"]["nodeName"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

fn pdb_status(server: &Server) -> Value {
    json_of(server, &["get", "pdb", "web"])["status"].clone()
}

#[test]
fn drain_waits_for_the_disruption_budget_then_evicts_everything() {
    let server = Server::start();
    let _kubelet = FakeKubelet::start(&server, &["n1", "n2"]);
    // n2 takes no pods until n1 is cordoned.
    wait_for(30, "nodes registered", || {
        server.kubectl(&["get", "node", "n2"]).status.success()
    });
    server.ok(&["cordon", "n2"]);
    server.ok(&[
        "create",
        "deployment",
        "web",
        "--image=busybox",
        "--replicas=2",
    ]);
    wait_for(60, "two web pods running on n1", || {
        let pods = web_pods(&server);
        pods.len() == 2 && pods.iter().all(|(_, n)| n == "n1")
    });
    server.ok(&["uncordon", "n2"]);
    server.ok(&[
        "create",
        "pdb",
        "web",
        "--selector=app=web",
        "--min-available=2",
    ]);
    wait_for(30, "the budget's status", || {
        let s = pdb_status(&server);
        s["currentHealthy"] == 2 && s["expectedPods"] == 2 && s["observedGeneration"] == 1
    });
    let s = pdb_status(&server);
    assert_eq!(s["desiredHealthy"], 2);
    assert_eq!(s["disruptionsAllowed"], 0);
    let cond = &s["conditions"][0];
    assert_eq!(
        (&cond["type"], &cond["status"], &cond["reason"]),
        (
            &json!("DisruptionAllowed"),
            &json!("False"),
            &json!("InsufficientPods")
        )
    );

    // A direct eviction is refused with upstream's 429.
    let (victim, _) = web_pods(&server)[0].clone();
    let eviction = json!({"apiVersion": "policy/v1", "kind": "Eviction",
        "metadata": {"name": victim, "namespace": "default"}})
    .to_string();
    let path = format!("/api/v1/namespaces/default/pods/{victim}/eviction");
    let out = server.kubectl_stdin(&["create", "--raw", &path, "-f", "-"], &eviction);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Cannot evict pod as it would violate the pod's disruption budget."),
        "{err}"
    );

    // drain retries on 429 until the budget allows an eviction.
    let drain = server
        .kubectl_cmd(&[
            "drain",
            "n1",
            "--ignore-daemonsets",
            "--delete-emptydir-data",
            "--timeout=120s",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start kubectl drain");
    let drain = scopeguard::guard(drain, |mut c| {
        let _ = c.kill();
        let _ = c.wait();
    });
    wait_for(30, "n1 cordoned", || {
        json_of(&server, &["get", "node", "n1"])["spec"]["unschedulable"] == true
    });
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(
        web_pods(&server).iter().filter(|(_, n)| n == "n1").count(),
        2,
        "the budget allowed no eviction yet"
    );
    // A third replica on n2 gives the budget room for one pod at a time.
    server.ok(&["scale", "deployment", "web", "--replicas=3"]);
    let out = scopeguard::ScopeGuard::into_inner(drain)
        .wait_with_output()
        .expect("kubectl drain output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "drain failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("node/n1 drained"), "{stdout}");
    assert!(stdout.contains("evicted"), "{stdout}");
    assert!(
        stderr.contains("Cannot evict pod as it would violate the pod's disruption budget."),
        "drain never hit the budget:\n{stderr}"
    );
    wait_for(60, "three web pods on n2", || {
        let pods = web_pods(&server);
        pods.len() == 3 && pods.iter().all(|(_, n)| n == "n2")
    });
    wait_for(30, "the budget recovered", || {
        let s = pdb_status(&server);
        s["currentHealthy"] == 3 && s["disruptionsAllowed"] == 1
    });
}

/// Waits until the quota's status shows `used` for `resource`.
fn wait_used(server: &Server, ns: &str, quota: &str, resource: &str, used: &str) {
    wait_for(30, &format!("{quota} used {resource}={used}"), || {
        json_of(server, &["get", "quota", quota, "-n", ns])["status"]["used"][resource] == used
    });
}

/// Runs kubectl with `stdin` expecting failure; returns stderr.
fn fails_stdin(server: &Server, args: &[&str], stdin: &str) -> String {
    let out = server.kubectl_stdin(args, stdin);
    assert!(
        !out.status.success(),
        "kubectl {args:?} should fail: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn pod_yaml(name: &str, resources: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  containers:\n  - name: c\n    image: busybox\n    resources: {resources}\n"
    )
}

#[test]
fn quota_admission_counts_refuses_and_shows_usage() {
    let server = Server::start();
    server.ok(&["create", "namespace", "q"]);
    server.ok(&[
        "create",
        "quota",
        "compute",
        "-n",
        "q",
        "--hard=pods=2,requests.cpu=1,limits.memory=1Gi",
    ]);
    wait_used(&server, "q", "compute", "pods", "0");
    let with = |cpu: &str| format!("{{requests: {{cpu: {cpu}}}, limits: {{memory: 100Mi}}}}");
    server.ok_stdin(
        &["apply", "-n", "q", "-f", "-"],
        &pod_yaml("p1", &with("500m")),
    );
    // The missing limit is named per container.
    let err = fails_stdin(
        &server,
        &["apply", "-n", "q", "-f", "-"],
        &pod_yaml("bare", "{requests: {cpu: 100m}}"),
    );
    assert!(
        err.contains(
            "pods \"bare\" is forbidden: failed quota: compute: must specify limits.memory for: c"
        ),
        "{err}"
    );
    let err = fails_stdin(
        &server,
        &["apply", "-n", "q", "-f", "-"],
        &pod_yaml("big", &with("600m")),
    );
    assert!(
        err.contains("pods \"big\" is forbidden: exceeded quota: compute, requested: requests.cpu=600m, used: requests.cpu=500m, limited: requests.cpu=1"),
        "{err}"
    );
    server.ok_stdin(
        &["apply", "-n", "q", "-f", "-"],
        &pod_yaml("p2", &with("200m")),
    );
    let err = fails_stdin(
        &server,
        &["apply", "-n", "q", "-f", "-"],
        &pod_yaml("p3", &with("100m")),
    );
    assert!(
        err.contains("exceeded quota: compute, requested: pods=1, used: pods=2, limited: pods=2"),
        "{err}"
    );
    wait_used(&server, "q", "compute", "requests.cpu", "700m");
    let describe = server.ok(&["describe", "quota", "compute", "-n", "q"]);
    let line = |name: &str| {
        describe
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .unwrap_or_default()
    };
    assert_eq!(line("pods"), ["pods", "2", "2"], "{describe}");
    assert_eq!(
        line("requests.cpu"),
        ["requests.cpu", "700m", "1"],
        "{describe}"
    );
    assert_eq!(
        line("limits.memory"),
        ["limits.memory", "200Mi", "1Gi"],
        "{describe}"
    );
    // A deleted pod gives its share back.
    server.ok(&[
        "delete",
        "pod",
        "p2",
        "-n",
        "q",
        "--grace-period=0",
        "--force",
    ]);
    wait_used(&server, "q", "compute", "pods", "1");
    server.ok_stdin(
        &["apply", "-n", "q", "-f", "-"],
        &pod_yaml("p3", &with("100m")),
    );
}

#[test]
fn updates_that_add_usage_are_checked_by_quota_and_limit_ranges() {
    let server = Server::start();
    server.ok(&["create", "namespace", "u"]);
    server.ok(&[
        "create",
        "quota",
        "q",
        "-n",
        "u",
        "--hard=services.nodeports=0,requests.storage=2Gi",
    ]);
    wait_used(&server, "u", "q", "services.nodeports", "0");
    server.ok(&[
        "create",
        "service",
        "clusterip",
        "web",
        "-n",
        "u",
        "--tcp=80:80",
    ]);
    let patch = r#"{"spec":{"type":"NodePort"}}"#;
    let err = server.fails(&["patch", "service", "web", "-n", "u", "-p", patch]);
    assert!(
        err.contains("services \"web\" is forbidden: exceeded quota: q, requested: services.nodeports=1, used: services.nodeports=0, limited: services.nodeports=0"),
        "{err}"
    );
    let claim = |size: &str| {
        format!(
            "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata:\n  name: data\nspec:\n  accessModes: [ReadWriteOnce]\n  resources:\n    requests:\n      storage: {size}\n"
        )
    };
    server.ok_stdin(&["apply", "-n", "u", "-f", "-"], &claim("1Gi"));
    wait_used(&server, "u", "q", "requests.storage", "1Gi");
    let err = fails_stdin(&server, &["apply", "-n", "u", "-f", "-"], &claim("3Gi"));
    assert!(
        err.contains("persistentvolumeclaims \"data\" is forbidden: exceeded quota: q, requested: requests.storage=2Gi, used: requests.storage=1Gi, limited: requests.storage=2Gi"),
        "{err}"
    );
    server.ok_stdin(
        &["apply", "-n", "u", "-f", "-"],
        "apiVersion: v1\nkind: LimitRange\nmetadata:\n  name: storage\nspec:\n  limits:\n  - type: PersistentVolumeClaim\n    max: {storage: 1500Mi}\n",
    );
    let err = fails_stdin(&server, &["apply", "-n", "u", "-f", "-"], &claim("2Gi"));
    assert!(
        err.contains("persistentvolumeclaims \"data\" is forbidden: maximum storage usage per PersistentVolumeClaim is 1500Mi, but request is 2Gi"),
        "{err}"
    );
    // A resize within both is admitted and charged.
    server.ok_stdin(&["apply", "-n", "u", "-f", "-"], &claim("1200Mi"));
    wait_used(&server, "u", "q", "requests.storage", "1200Mi");
}

#[test]
fn racing_creates_never_take_more_than_the_quota() {
    let server = Server::start();
    server.ok(&["create", "namespace", "race"]);
    server.ok(&[
        "create",
        "quota",
        "objects",
        "-n",
        "race",
        "--hard=count/configmaps=20",
    ]);
    wait_for(30, "the root CA configmap and the quota count", || {
        let q = json_of(&server, &["get", "quota", "objects", "-n", "race"]);
        let cms = json_of(&server, &["get", "configmaps", "-n", "race"]);
        let n = cms["items"].as_array().map_or(0, Vec::len);
        q["status"]["used"]["count/configmaps"].as_str() == Some(n.to_string().as_str()) && n > 0
    });
    let existing = json_of(&server, &["get", "configmaps", "-n", "race"])["items"]
        .as_array()
        .map_or(0, Vec::len);
    let free = 20 - existing;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("runtime");
    let created = rt.block_on(async {
        let client = server.client().await;
        let api: Api<ConfigMap> = Api::namespaced(client, "race");
        let tasks: Vec<_> = (0..free + 8)
            .map(|i| {
                let api = api.clone();
                tokio::spawn(async move {
                    let cm: ConfigMap =
                        serde_json::from_value(json!({"metadata": {"name": format!("c{i}")}}))
                            .expect("configmap");
                    api.create(&PostParams::default(), &cm).await
                })
            })
            .collect();
        let mut ok = 0;
        for t in tasks {
            match t.await.expect("task") {
                Ok(_) => ok += 1,
                Err(kube::Error::Api(s)) => {
                    assert_eq!(s.code, 403, "{}", s.message);
                    assert!(
                        s.message.contains("exceeded quota: objects"),
                        "{}",
                        s.message
                    );
                }
                Err(e) => panic!("create failed: {e}"),
            }
        }
        ok
    });
    assert_eq!(created, free);
    wait_used(&server, "race", "objects", "count/configmaps", "20");
    // Deleting one gives its share back, and the quota admits one more.
    let cms = json_of(&server, &["get", "configmaps", "-n", "race"]);
    let one = cms["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["metadata"]["name"].as_str())
        .find(|n| *n != "kube-root-ca.crt")
        .expect("a created configmap")
        .to_owned();
    server.ok(&["delete", "configmap", &one, "-n", "race"]);
    wait_used(&server, "race", "objects", "count/configmaps", "19");
    server.ok(&["create", "configmap", "again", "-n", "race"]);
    wait_used(&server, "race", "objects", "count/configmaps", "20");
}

#[test]
fn limit_ranges_default_and_bound_container_resources() {
    let server = Server::start();
    server.ok(&["create", "namespace", "lr"]);
    server.ok_stdin(
        &["apply", "-n", "lr", "-f", "-"],
        "apiVersion: v1\nkind: LimitRange\nmetadata:\n  name: cpu\nspec:\n  limits:\n  - type: Container\n    default: {cpu: 500m}\n    defaultRequest: {cpu: 100m}\n    max: {cpu: \"1\"}\n",
    );
    server.ok_stdin(&["apply", "-n", "lr", "-f", "-"], &pod_yaml("plain", "{}"));
    let pod = json_of(&server, &["get", "pod", "plain", "-n", "lr"]);
    let res = &pod["spec"]["containers"][0]["resources"];
    assert_eq!(res["requests"]["cpu"], "100m");
    assert_eq!(res["limits"]["cpu"], "500m");
    assert_eq!(
        pod["metadata"]["annotations"]["kubernetes.io/limit-ranger"],
        "LimitRanger plugin set: cpu request for container c; cpu limit for container c"
    );
    let err = fails_stdin(
        &server,
        &["apply", "-n", "lr", "-f", "-"],
        &pod_yaml("greedy", "{limits: {cpu: \"2\"}}"),
    );
    assert!(
        err.contains(
            "pods \"greedy\" is forbidden: maximum cpu usage per Container is 1, but limit is 2"
        ),
        "{err}"
    );
}

#[test]
fn kubectl_top_reads_node_and_pod_metrics_from_the_kubelet_summary() {
    let server = Server::start();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let t = now();
    let port = rt.block_on(summary_kubelet(Arc::new(Mutex::new(json!({
        "node": {"nodeName": "m1", "cpu": {"time": t, "usageNanoCores": 250_000_000u64},
            "memory": {"time": t, "workingSetBytes": 104_857_600u64}},
        "pods": [{"podRef": {"name": "web", "namespace": "default", "uid": "u"}, "containers": [
            {"name": "c", "cpu": {"time": t, "usageNanoCores": 150_000_000u64},
             "memory": {"time": t, "workingSetBytes": 1_048_576u64}}]}]
    })))));
    let node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "m1"},
        "status": {"addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": port}},
            "capacity": {"cpu": "2", "memory": "4Gi", "pods": "110"},
            "allocatable": {"cpu": "2", "memory": "4Gi", "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True", "lastHeartbeatTime": t}]}});
    server.ok_stdin(&["apply", "-f", "-"], &node.to_string());
    server.ok_stdin(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nspec:\n  nodeName: m1\n  containers:\n  - name: c\n    image: busybox\n",
    );
    let groups = server.ok(&["api-versions"]);
    assert!(groups.contains("metrics.k8s.io/v1beta1"), "{groups}");
    let top = server.ok(&["top", "node", "m1"]);
    let row: Vec<&str> = top
        .lines()
        .find(|l| l.starts_with("m1"))
        .map(|l| l.split_whitespace().collect())
        .unwrap_or_default();
    assert_eq!(row.first(), Some(&"m1"), "{top}");
    assert!(row.contains(&"250m") && row.contains(&"100Mi"), "{top}");
    let top = server.ok(&["top", "pod", "web"]);
    let row: Vec<&str> = top
        .lines()
        .find(|l| l.starts_with("web"))
        .map(|l| l.split_whitespace().collect())
        .unwrap_or_default();
    assert_eq!(row, ["web", "150m", "1Mi"], "{top}");
    let raw = server.ok(&[
        "get",
        "--raw",
        "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/web",
    ]);
    let m: Value = serde_json::from_str(&raw).expect("pod metrics");
    assert_eq!(m["kind"], "PodMetrics");
    assert_eq!(m["containers"][0]["usage"]["cpu"], "150m");
}
