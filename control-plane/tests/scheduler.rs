//! The scheduler and node controllers of a real r8s-server, driven with
//! real kubectl, with nodes simulated by a test helper (Node objects whose
//! Leases it renews and whose bound pods it marks Running): binding and
//! spreading, the unschedulable message, node selectors and taints,
//! DaemonSets, node lifecycle eviction and pod CIDRs.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{client_for, wait_for};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Api;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

/// An r8s-server with extra flags (no in-process agent), killed on drop.
struct TestServer {
    dir: tempfile::TempDir,
    child: Child,
}

impl TestServer {
    fn start(extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let log = std::fs::File::create(dir.path().join("server.log")).expect("log");
        let child = Command::new(env!("CARGO_BIN_EXE_r8s-server"))
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg("--write-kubeconfig")
            .arg(dir.path().join("kubeconfig.yaml"))
            .args([
                "--bind-address",
                "127.0.0.1",
                "--advertise-address",
                "127.0.0.1",
            ])
            .args(["--disable-agent", "--secure-port", &port.to_string()])
            .args(extra)
            .env("R8S_LOG_LEVEL", "info,control_plane::controllers=debug")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start r8s-server");
        let s = Self { dir, child };
        wait_for(30, "r8s-server ready", || {
            s.kubeconfig().exists() && s.kubectl(&["get", "--raw", "/readyz"]).status.success()
        });
        s
    }

    fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig.yaml")
    }

    fn kubectl_cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("kubectl");
        cmd.env("KUBECONFIG", self.kubeconfig())
            .arg("--cache-dir")
            .arg(self.dir.path().join("kube-cache"))
            .arg("--request-timeout=20s")
            .args(args);
        cmd
    }

    fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_cmd(args).output().expect("run kubectl")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn kubectl_stdin(&self, args: &[&str], stdin: &str) -> Output {
        use std::io::Write;
        let mut child = self
            .kubectl_cmd(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run kubectl");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(stdin.as_bytes())
            .expect("write stdin");
        child.wait_with_output().expect("kubectl output")
    }

    fn apply(&self, manifest: &str) {
        let out = self.kubectl_stdin(&["apply", "--validate=false", "-f", "-"], manifest);
        assert!(
            out.status.success(),
            "kubectl apply: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        serde_json::from_str(&self.ok(&all)).expect("kubectl json")
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- r8s-server log tail ---\n{}", self.log_tail());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A simulated kubelet for several nodes: registers Node objects (Ready,
/// with allocatable), renews their Leases and marks pods bound to them
/// Running and Ready. Heartbeats of a node stop after `stop(node)`.
struct SimulatedKubelet {
    stopped: Arc<Mutex<HashSet<String>>>,
    task: tokio::task::JoinHandle<()>,
}

fn node_object(name: &str, labels: &BTreeMap<&str, &str>, taints: Value) -> Node {
    let mut all: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    all.insert("kubernetes.io/hostname".into(), name.into());
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": all},
        "spec": {"taints": taints},
        "status": {
            "capacity": {"cpu": "4", "memory": "8Gi", "pods": "110"},
            "allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                "message": "kubelet is posting ready status", "lastHeartbeatTime": now, "lastTransitionTime": now}]
        }
    }))
    .expect("node")
}

impl SimulatedKubelet {
    async fn start(client: kube::Client, nodes: Vec<Node>) -> Self {
        let node_api: Api<Node> = Api::all(client.clone());
        let lease_api: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
        let mut names = Vec::new();
        for node in nodes {
            let name = node.metadata.name.clone().expect("node name");
            let status = node.status.clone();
            node_api
                .create(&PostParams::default(), &node)
                .await
                .expect("create node");
            // Status is ignored on create, as upstream: post it like a kubelet.
            node_api
                .patch_status(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(&json!({"status": status})),
                )
                .await
                .expect("node status");
            let lease: Lease = serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "kube-node-lease"},
                "spec": {"holderIdentity": name, "leaseDurationSeconds": 40,
                    "renewTime": k8s_openapi::jiff::Timestamp::now().to_string()}
            }))
            .expect("lease");
            lease_api
                .create(&PostParams::default(), &lease)
                .await
                .expect("create lease");
            names.push(name);
        }
        let stopped: Arc<Mutex<HashSet<String>>> = Arc::default();
        let stopped2 = stopped.clone();
        let task = tokio::spawn(async move {
            let pod_api: Api<Pod> = Api::all(client.clone());
            loop {
                let stopped: HashSet<String> = stopped2.lock().expect("lock").clone();
                for name in names.iter().filter(|n| !stopped.contains(*n)) {
                    let now = k8s_openapi::jiff::Timestamp::now().to_string();
                    let _ = lease_api
                        .patch(
                            name,
                            &PatchParams::default(),
                            &Patch::Merge(&json!({"spec": {"renewTime": now}})),
                        )
                        .await;
                }
                if let Ok(pods) = pod_api.list(&ListParams::default()).await {
                    for pod in pods.items {
                        let node = pod
                            .spec
                            .as_ref()
                            .and_then(|s| s.node_name.clone())
                            .unwrap_or_default();
                        let running =
                            pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
                        if node.is_empty() || !names.contains(&node) || stopped.contains(&node) {
                            continue;
                        }
                        let ns = pod.metadata.namespace.clone().unwrap_or_default();
                        let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
                        if pod.metadata.deletion_timestamp.is_some() {
                            // The containers are gone: confirm the deletion.
                            let _ = api
                                .delete(
                                    pod.metadata.name.as_deref().unwrap_or(""),
                                    &DeleteParams::default().grace_period(0),
                                )
                                .await;
                            continue;
                        }
                        if running {
                            continue;
                        }
                        let now = k8s_openapi::jiff::Timestamp::now().to_string();
                        let status = json!({"status": {"phase": "Running", "startTime": now, "conditions": [
                            {"type": "Ready", "status": "True", "lastTransitionTime": now},
                            {"type": "ContainersReady", "status": "True", "lastTransitionTime": now},
                            {"type": "Initialized", "status": "True", "lastTransitionTime": now}]}});
                        let _ = api
                            .patch_status(
                                pod.metadata.name.as_deref().unwrap_or(""),
                                &PatchParams::default(),
                                &Patch::Strategic(&status),
                            )
                            .await;
                    }
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
        Self { stopped, task }
    }

    fn stop(&self, node: &str) {
        self.stopped.lock().expect("lock").insert(node.to_string());
    }
}

impl Drop for SimulatedKubelet {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn pod_node(s: &TestServer, name: &str) -> String {
    s.ok(&["get", "pod", name, "-o", "jsonpath={.spec.nodeName}"])
}

fn scheduled_message(s: &TestServer, name: &str) -> String {
    s.ok(&[
        "get",
        "pod",
        name,
        "-o",
        "jsonpath={.status.conditions[?(@.type==\"PodScheduled\")].message}",
    ])
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("blocking task")
}

fn three_nodes() -> Vec<Node> {
    let none = BTreeMap::new();
    vec![
        node_object("node-a", &BTreeMap::from([("disk", "ssd")]), json!([])),
        node_object("node-b", &none, json!([])),
        node_object(
            "node-c",
            &none,
            json!([{"key": "dedicated", "value": "infra", "effect": "NoSchedule"}]),
        ),
    ]
}

const SMALL_PODS: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: small-0}
spec: {containers: [{name: c, image: busybox, resources: {requests: {cpu: 500m}}}]}
---
apiVersion: v1
kind: Pod
metadata: {name: small-1}
spec: {containers: [{name: c, image: busybox, resources: {requests: {cpu: 500m}}}]}
---
apiVersion: v1
kind: Pod
metadata: {name: small-2}
spec: {containers: [{name: c, image: busybox, resources: {requests: {cpu: 500m}}}]}
---
apiVersion: v1
kind: Pod
metadata: {name: small-3}
spec: {containers: [{name: c, image: busybox, resources: {requests: {cpu: 500m}}}]}
---
apiVersion: v1
kind: Pod
metadata: {name: huge}
spec:
  tolerations: [{key: dedicated, operator: Exists}]
  containers: [{name: c, image: busybox, resources: {requests: {cpu: "100"}}}]
---
apiVersion: v1
kind: Pod
metadata: {name: wants-ssd}
spec:
  nodeSelector: {disk: ssd}
  containers: [{name: c, image: busybox}]
---
apiVersion: v1
kind: Pod
metadata: {name: wants-infra}
spec:
  nodeSelector: {kubernetes.io/hostname: node-c}
  containers: [{name: c, image: busybox}]
---
apiVersion: v1
kind: Pod
metadata: {name: tolerates-infra}
spec:
  nodeSelector: {kubernetes.io/hostname: node-c}
  tolerations: [{key: dedicated, operator: Equal, value: infra, effect: NoSchedule}]
  containers: [{name: c, image: busybox}]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_are_bound_spread_and_constrained() {
    let server = Arc::new(TestServer::start(&[]));
    let client = client_for(&server.kubeconfig()).await;
    let _kubelet = SimulatedKubelet::start(client.clone(), three_nodes()).await;
    let s = server.clone();
    blocking(move || {
        s.apply(SMALL_PODS);
        wait_for(30, "small pods bound", || {
            (0..4).all(|i| !pod_node(&s, &format!("small-{i}")).is_empty())
        });
        // node-c is tainted, so the four pods spread over node-a and node-b.
        let nodes: Vec<String> = (0..4).map(|i| pod_node(&s, &format!("small-{i}"))).collect();
        assert!(!nodes.contains(&"node-c".to_string()), "{nodes:?}");
        assert!(nodes.contains(&"node-a".to_string()) && nodes.contains(&"node-b".to_string()), "{nodes:?}");

        wait_for(30, "nodeSelector pod bound", || pod_node(&s, "wants-ssd") == "node-a");
        wait_for(30, "tolerating pod bound", || pod_node(&s, "tolerates-infra") == "node-c");

        wait_for(30, "huge pod marked unschedulable", || !scheduled_message(&s, "huge").is_empty());
        assert!(pod_node(&s, "huge").is_empty());
        let msg = scheduled_message(&s, "huge");
        assert!(msg.starts_with("0/3 nodes are available: 3 Insufficient cpu."), "{msg}");
        // Events are written asynchronously after the condition.
        wait_for(30, "FailedScheduling event", || {
            s.ok(&["describe", "pod", "huge"]).contains("FailedScheduling")
        });
        let describe = s.ok(&["describe", "pod", "huge"]);
        assert!(describe.contains("0/3 nodes are available: 3 Insufficient cpu."), "{describe}");
        // Bindings the API server refuses, as kube-apiserver does.
        let binding = |name: &str, node: &str| {
            let body = format!(
                r#"{{"apiVersion": "v1", "kind": "Binding", "metadata": {{"name": "{name}"}}, "target": {{"kind": "Node", "name": "{node}"}}}}"#
            );
            let out = s.kubectl_stdin(
                &["create", "--raw", "/api/v1/namespaces/default/pods/huge/binding", "-f", "-"],
                &body,
            );
            assert!(!out.status.success(), "binding {name} to {node:?} should fail");
            String::from_utf8_lossy(&out.stderr).into_owned()
        };
        let err = binding("other", "node-a");
        assert!(err.contains("name in URL does not match name in Binding object"), "{err}");
        let err = binding("huge", "");
        assert!(err.contains("target.name: Required value"), "{err}");
        assert!(pod_node(&s, "huge").is_empty());

        wait_for(30, "tainted-node pod marked unschedulable", || {
            !scheduled_message(&s, "wants-infra").is_empty()
        });
        let msg = scheduled_message(&s, "wants-infra");
        assert!(
            msg.starts_with("0/3 nodes are available: 1 node(s) had untolerated taint {dedicated: infra}, 2 node(s) didn't match Pod's node affinity/selector."),
            "{msg}"
        );

        wait_for(30, "Scheduled event", || {
            let events = s.ok(&[
                "get",
                "events",
                "--field-selector",
                "reason=Scheduled",
                "-o",
                "jsonpath={.items[*].message}",
            ]);
            events.contains("Successfully assigned default/small-0 to node-")
        });
        // The scheduler's metrics, under kube-scheduler's names.
        let metrics = s.ok(&["get", "--raw", "/metrics"]);
        let count = |series: &str| -> f64 {
            metrics
                .lines()
                .find_map(|l| l.strip_prefix(series))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or_else(|| panic!("no {series} in /metrics"))
        };
        let attempts = "scheduler_schedule_attempts_total{result=";
        assert!(count(&format!("{attempts}\"scheduled\",profile=\"default-scheduler\"}}")) >= 6.0);
        assert!(count(&format!("{attempts}\"unschedulable\",profile=\"default-scheduler\"}}")) >= 2.0);
        // "huge" and "wants-infra" stay pending (unschedulable, or backing
        // off after a node update); the gauges refresh every 0.5 s.
        wait_for(10, "pending pods gauges", || {
            let metrics = s.ok(&["get", "--raw", "/metrics"]);
            let pending: f64 = metrics
                .lines()
                .filter_map(|l| l.strip_prefix("scheduler_pending_pods{queue="))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum();
            pending == 2.0
        });

        // Node IPAM gave each node its own /24.
        wait_for(30, "pod CIDRs", || {
            let cidrs = s.ok(&["get", "nodes", "-o", "jsonpath={.items[*].spec.podCIDR}"]);
            cidrs.split_whitespace().count() == 3
        });
        let cidrs = s.ok(&["get", "nodes", "-o", "jsonpath={.items[*].spec.podCIDR}"]);
        let set: HashSet<&str> = cidrs.split_whitespace().collect();
        assert_eq!(set.len(), 3, "{cidrs}");
        assert!(set.iter().all(|c| c.starts_with("10.42.") && c.ends_with(".0/24")), "{cidrs}");
    })
    .await;
}

const DAEMONSET: &str = r#"
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent}
spec:
  selector: {matchLabels: {app: agent}}
  template:
    metadata: {labels: {app: agent}}
    spec:
      tolerations: [{key: dedicated, operator: Exists}]
      containers: [{name: c, image: "busybox:1"}]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemonset_runs_on_every_node_and_rolls_out() {
    let server = Arc::new(TestServer::start(&[]));
    let client = client_for(&server.kubeconfig()).await;
    let _kubelet = SimulatedKubelet::start(client.clone(), three_nodes()).await;
    let s = server.clone();
    blocking(move || {
        s.apply(DAEMONSET);
        s.ok(&["rollout", "status", "ds/agent", "--timeout=60s"]);
        let pods = s.json(&["get", "pods", "-l", "app=agent"]);
        let nodes: HashSet<&str> = pods["items"]
            .as_array()
            .expect("items")
            .iter()
            .filter_map(|p| p["spec"]["nodeName"].as_str())
            .collect();
        assert_eq!(nodes.len(), 3, "{pods}");
        let ds = s.json(&["get", "ds", "agent"]);
        assert_eq!(ds["status"]["desiredNumberScheduled"], 3);
        assert_eq!(ds["status"]["numberReady"], 3);

        s.apply(&DAEMONSET.replace("busybox:1", "busybox:2"));
        s.ok(&["rollout", "status", "ds/agent", "--timeout=90s"]);
        let images = s.ok(&[
            "get",
            "pods",
            "-l",
            "app=agent",
            "-o",
            "jsonpath={.items[*].spec.containers[0].image}",
        ]);
        wait_for(30, "old pods gone", || {
            let images = s.ok(&[
                "get",
                "pods",
                "-l",
                "app=agent",
                "-o",
                "jsonpath={.items[*].spec.containers[0].image}",
            ]);
            images.split_whitespace().all(|i| i == "busybox:2")
        });
        drop(images);
        let revisions = s.ok(&["get", "controllerrevisions", "-o", "name"]);
        assert_eq!(revisions.lines().count(), 2, "{revisions}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_node_is_tainted_and_its_pods_evicted() {
    let server = Arc::new(TestServer::start(&[
        "--node-monitor-grace-period=4s",
        "--node-monitor-period=1s",
    ]));
    let client = client_for(&server.kubeconfig()).await;
    let none = BTreeMap::new();
    let kubelet = SimulatedKubelet::start(
        client.clone(),
        vec![
            node_object("node-a", &none, json!([])),
            node_object("node-b", &none, json!([])),
        ],
    )
    .await;
    let s = server.clone();
    blocking(move || {
        s.apply(
            r#"
apiVersion: v1
kind: Pod
metadata: {name: short-lived}
spec:
  nodeSelector: {kubernetes.io/hostname: node-b}
  tolerations: [{key: node.kubernetes.io/unreachable, operator: Exists, effect: NoExecute, tolerationSeconds: 3}]
  containers: [{name: c, image: busybox}]
"#,
        );
        wait_for(30, "pod bound", || pod_node(&s, "short-lived") == "node-b");
    })
    .await;
    kubelet.stop("node-b");
    let s = server.clone();
    blocking(move || {
        wait_for(60, "node-b Ready Unknown", || {
            s.ok(&[
                "get",
                "node",
                "node-b",
                "-o",
                "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
            ]) == "Unknown"
        });
        let reason = s.ok(&[
            "get",
            "node",
            "node-b",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].message}",
        ]);
        assert_eq!(reason, "Kubelet stopped posting node status.");
        wait_for(30, "unreachable taint", || {
            s.ok(&[
                "get",
                "node",
                "node-b",
                "-o",
                "jsonpath={.spec.taints[*].key}",
            ])
            .contains("node.kubernetes.io/unreachable")
        });
        // node-a keeps its heartbeat and stays Ready.
        assert_eq!(
            s.ok(&[
                "get",
                "node",
                "node-a",
                "-o",
                "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}"
            ]),
            "True"
        );
        // Deleted (it stays terminating while its node is unreachable).
        wait_for(60, "pod evicted", || {
            let out = s.kubectl(&[
                "get",
                "pod",
                "short-lived",
                "-o",
                "jsonpath={.metadata.deletionTimestamp}",
            ]);
            !out.status.success() || !out.stdout.is_empty()
        });
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn higher_priority_pod_preempts_a_lower_one() {
    let server = Arc::new(TestServer::start(&[]));
    let client = client_for(&server.kubeconfig()).await;
    let _kubelet = SimulatedKubelet::start(
        client.clone(),
        vec![node_object("node-a", &BTreeMap::new(), json!([]))],
    )
    .await;
    let s = server.clone();
    blocking(move || {
        s.apply(
            r#"
apiVersion: v1
kind: Pod
metadata: {name: low}
spec: {containers: [{name: c, image: busybox, resources: {requests: {cpu: "3"}}}]}
"#,
        );
        wait_for(30, "low bound", || pod_node(&s, "low") == "node-a");
        s.apply(
            r#"
apiVersion: v1
kind: Pod
metadata: {name: high}
spec:
  priority: 1000
  containers: [{name: c, image: busybox, resources: {requests: {cpu: "2"}}}]
"#,
        );
        wait_for(60, "high bound after preemption", || {
            pod_node(&s, "high") == "node-a"
        });
        assert!(!s.kubectl(&["get", "pod", "low"]).status.success());
        wait_for(30, "Preempted event", || {
            s.ok(&["get", "events", "-o", "jsonpath={.items[*].reason}"])
                .contains("Preempted")
        });
    })
    .await;
}

/// Replaces the scheduler's Lease with one `holder` holds for `seconds`
/// (`None`: released, as client-go's ReleaseOnCancel leaves it), retrying
/// while the server renews it concurrently.
async fn set_scheduler_lease(client: &kube::Client, holder: Option<&str>, seconds: i32) {
    let api: Api<Lease> = Api::namespaced(client.clone(), "kube-system");
    for _ in 0..50 {
        let mut lease = api.get("kube-scheduler").await.expect("scheduler lease");
        let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
            k8s_openapi::jiff::Timestamp::now(),
        );
        let spec = lease.spec.get_or_insert_with(Default::default);
        spec.holder_identity = holder.map(str::to_owned);
        spec.lease_duration_seconds = Some(seconds);
        spec.renew_time = Some(now);
        match api
            .replace("kube-scheduler", &PostParams::default(), &lease)
            .await
        {
            Ok(_) => return,
            Err(kube::Error::Api(s)) if s.code == 409 => continue,
            Err(e) => panic!("replacing the scheduler lease: {e}"),
        }
    }
    panic!("the scheduler lease kept changing");
}

/// The scheduler's watches outlive its leadership, as kube-scheduler's
/// informers do: a server that lost the lease schedules nothing, and once
/// it leads again it binds what was created meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduler_leading_again_binds_what_came_while_it_stood_by() {
    let server = Arc::new(TestServer::start(&[]));
    let client = client_for(&server.kubeconfig()).await;
    let _kubelet = SimulatedKubelet::start(client.clone(), three_nodes()).await;
    let s = server.clone();
    blocking(move || {
        s.ok(&["run", "first", "--image=busybox", "--restart=Never"]);
        wait_for(30, "first pod bound", || !pod_node(&s, "first").is_empty());
    })
    .await;

    set_scheduler_lease(&client, Some("standby-elsewhere"), 3600).await;
    // The server's scheduler sees the other holder at its next retry (2 s).
    tokio::time::sleep(Duration::from_secs(4)).await;
    let s = server.clone();
    blocking(move || {
        s.ok(&[
            "run",
            "while-standing-by",
            "--image=busybox",
            "--restart=Never",
        ]);
        std::thread::sleep(Duration::from_secs(3));
        assert_eq!(
            pod_node(&s, "while-standing-by"),
            "",
            "bound without the lease"
        );
    })
    .await;

    set_scheduler_lease(&client, None, 1).await;
    let s = server.clone();
    blocking(move || {
        wait_for(30, "pod bound once the scheduler leads again", || {
            !pod_node(&s, "while-standing-by").is_empty()
        });
        s.ok(&["run", "after", "--image=busybox", "--restart=Never"]);
        wait_for(30, "a new pod bound", || !pod_node(&s, "after").is_empty());
    })
    .await;
}

/// A burst of joining nodes gets one distinct /24 each (node IPAM writes
/// them in parallel, as kube-controller-manager's range allocator does).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_joining_nodes_gets_distinct_pod_cidrs() {
    const NODES: usize = 60;
    let server = TestServer::start(&[]);
    let client = client_for(&server.kubeconfig()).await;
    let api: Api<Node> = Api::all(client);
    let none = BTreeMap::new();
    futures::future::try_join_all((0..NODES).map(|i| {
        let node = node_object(&format!("burst-{i}"), &none, json!([]));
        let api = api.clone();
        async move { api.create(&PostParams::default(), &node).await }
    }))
    .await
    .expect("create nodes");
    let mut cidrs = Vec::new();
    for _ in 0..300 {
        cidrs = api
            .list(&ListParams::default())
            .await
            .expect("list nodes")
            .items
            .into_iter()
            .filter_map(|n| n.spec.and_then(|s| s.pod_cidr))
            .collect();
        if cidrs.len() == NODES {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(cidrs.len(), NODES, "nodes with a pod CIDR: {cidrs:?}");
    let distinct: HashSet<&String> = cidrs.iter().collect();
    assert_eq!(distinct.len(), NODES, "{cidrs:?}");
}
