//! The workload controllers against a real r8s-server and real kubectl. No
//! scheduler or kubelet runs here: `SimulatedNode` stands in for both,
//! binding pending pods to a fake Node and reporting them Running/Ready (or
//! finished, for job pods).

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Server, wait_for};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

const NODE: &str = "sim-node";

/// What the simulated kubelet does with a pod.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Outcome {
    /// Run and stay ready.
    Run,
    /// Run, then exit 0.
    Succeed,
    /// Run, then exit 1.
    Fail,
}

type Decide = dyn Fn(&Pod) -> Outcome + Send + Sync;

/// A scheduler + kubelet stand-in on its own thread: binds every pending
/// pod to `sim-node`, marks it Running and Ready with an IP, finishes pods
/// as `decide` says, force-deletes pods being deleted, and records how many
/// `app=web` pods were ready after every pass.
struct SimulatedNode {
    stop: Arc<AtomicBool>,
    ready_history: Arc<Mutex<Vec<usize>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SimulatedNode {
    fn start(server: &Server, decide: Box<Decide>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let ready_history = Arc::new(Mutex::new(Vec::new()));
        let kubeconfig = server.kubeconfig();
        let (s, h) = (stop.clone(), ready_history.clone());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let client = common::client_for(&kubeconfig).await;
                register_node(&client).await;
                let mut next_ip = 2u32;
                let mut ips: BTreeMap<String, String> = BTreeMap::new();
                while !s.load(Ordering::SeqCst) {
                    if let Err(e) = pass(&client, decide.as_ref(), &mut next_ip, &mut ips, &h).await
                    {
                        eprintln!("simulated node pass failed: {e}");
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            });
        });
        Self {
            stop,
            ready_history,
            thread: Some(thread),
        }
    }

    fn history(&self) -> Vec<usize> {
        self.ready_history
            .lock()
            .map(|h| h.clone())
            .unwrap_or_default()
    }

    fn clear_history(&self) {
        if let Ok(mut h) = self.ready_history.lock() {
            h.clear();
        }
    }
}

impl Drop for SimulatedNode {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn register_node(client: &kube::Client) {
    let nodes: Api<Node> = Api::all(client.clone());
    let node: Node = serde_json::from_value(json!({
        "metadata": {"name": NODE, "labels": {"topology.kubernetes.io/zone": "zone-a"}},
    }))
    .expect("node");
    let _ = nodes.create(&PostParams::default(), &node).await;
    let status = json!({"status": {"conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}]}});
    let _ = nodes
        .patch_status(NODE, &PatchParams::default(), &Patch::Merge(status))
        .await;
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

async fn pass(
    client: &kube::Client,
    decide: &Decide,
    next_ip: &mut u32,
    ips: &mut BTreeMap<String, String>,
    history: &Mutex<Vec<usize>>,
) -> Result<(), kube::Error> {
    let all: Api<Pod> = Api::all(client.clone());
    for pod in all.list(&ListParams::default()).await? {
        let ns = pod.namespace().unwrap_or_default();
        let name = pod.name_any();
        let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
        let spec = pod.spec.clone().unwrap_or_default();
        if pod.metadata.deletion_timestamp.is_some() {
            let _ = api
                .delete(
                    &name,
                    &DeleteParams {
                        grace_period_seconds: Some(0),
                        ..Default::default()
                    },
                )
                .await;
            continue;
        }
        if spec.node_name.is_none() {
            let binding = json!({"apiVersion": "v1", "kind": "Binding",
                "metadata": {"name": name}, "target": {"kind": "Node", "name": NODE}});
            let _ = api
                .create_subresource::<Value, Value>(
                    "binding",
                    &name,
                    &PostParams::default(),
                    &binding,
                )
                .await;
            continue;
        }
        let phase = pod
            .status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_default();
        let uid = pod.uid().unwrap_or_default();
        let ip = ips
            .entry(uid)
            .or_insert_with(|| {
                *next_ip += 1;
                format!("10.42.0.{}", *next_ip)
            })
            .clone();
        let containers: Vec<String> = spec.containers.iter().map(|c| c.name.clone()).collect();
        let outcome = decide(&pod);
        let status = match (phase.as_str(), outcome) {
            ("" | "Pending", _) => running_status(&ip, &containers),
            ("Running", Outcome::Succeed) => finished_status(&ip, &containers, 0),
            ("Running", Outcome::Fail) => finished_status(&ip, &containers, 1),
            _ => continue,
        };
        let _ = api
            .patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": status})),
            )
            .await;
    }
    let web = all.list(&ListParams::default().labels("app=web")).await?;
    let ready = web
        .iter()
        .filter(|p| {
            p.metadata.deletion_timestamp.is_none()
                && p.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .count();
    if let Ok(mut h) = history.lock() {
        h.push(ready);
    }
    Ok(())
}

fn running_status(ip: &str, containers: &[String]) -> Value {
    let t = now();
    json!({
        "phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}], "hostIP": "127.0.0.1", "startTime": t,
        "conditions": [
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": t},
            {"type": "Initialized", "status": "True", "lastTransitionTime": t},
            {"type": "ContainersReady", "status": "True", "lastTransitionTime": t},
            {"type": "Ready", "status": "True", "lastTransitionTime": t}],
        "containerStatuses": containers.iter().map(|c| json!({"name": c, "ready": true, "restartCount": 0,
            "image": "busybox", "imageID": "", "started": true, "state": {"running": {"startedAt": t}}})).collect::<Vec<_>>()
    })
}

fn finished_status(ip: &str, containers: &[String], code: i32) -> Value {
    let t = now();
    json!({
        "phase": if code == 0 { "Succeeded" } else { "Failed" }, "podIP": ip,
        "conditions": [{"type": "Ready", "status": "False", "reason": "PodCompleted", "lastTransitionTime": t}],
        "containerStatuses": containers.iter().map(|c| json!({"name": c, "ready": false, "restartCount": 0,
            "image": "busybox", "imageID": "", "state": {"terminated": {"exitCode": code,
                "reason": if code == 0 { "Completed" } else { "Error" }, "startedAt": t, "finishedAt": t}}})).collect::<Vec<_>>()
    })
}

fn json_of(server: &Server, args: &[&str]) -> Value {
    let mut a = args.to_vec();
    a.extend(["-o", "json"]);
    serde_json::from_str(&server.ok(&a)).expect("kubectl json")
}

fn count_pods(server: &Server, ns: &str, selector: &str) -> usize {
    json_of(server, &["get", "pods", "-n", ns, "-l", selector])["items"]
        .as_array()
        .map(Vec::len)
        .unwrap_or(0)
}

#[test]
fn deployment_rolls_out_scales_undoes_and_deletes() {
    let server = Server::start();
    let node = SimulatedNode::start(&server, Box::new(|_| Outcome::Run));
    server.ok(&[
        "create",
        "deployment",
        "web",
        "--image=busybox",
        "--replicas=3",
    ]);
    server.ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    assert_eq!(count_pods(&server, "default", "app=web"), 3);
    let d = json_of(&server, &["get", "deployment", "web"]);
    assert_eq!(d["status"]["readyReplicas"], 3);
    assert_eq!(d["status"]["updatedReplicas"], 3);
    assert_eq!(
        d["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "1"
    );
    let progressing = d["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Progressing").cloned())
        .expect("Progressing condition");
    assert_eq!(progressing["reason"], "NewReplicaSetAvailable");
    let rs = json_of(&server, &["get", "rs", "-l", "app=web"]);
    let rs_name = rs["items"][0]["metadata"]["name"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let hash = rs["items"][0]["metadata"]["labels"]["pod-template-hash"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert_eq!(rs_name, format!("web-{hash}"));
    wait_for(30, "scaling events", || {
        let describe = server.ok(&["describe", "deployment", "web"]);
        describe.contains("ScalingReplicaSet")
            && describe.contains(&format!("Scaled up replica set {rs_name} from 0 to 3"))
    });
    assert!(
        hash.len() >= 6
            && hash
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()),
        "{hash}"
    );

    // A rolling update never drops below replicas - maxUnavailable (3 - 0).
    node.clear_history();
    server.ok(&["set", "image", "deployment/web", "busybox=busybox:1.36"]);
    server.ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    let history = node.history();
    assert!(!history.is_empty());
    assert!(
        history.iter().all(|n| *n >= 3),
        "ready pods during the rollout: {history:?}"
    );
    let d = json_of(&server, &["get", "deployment", "web"]);
    assert_eq!(
        d["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "2"
    );
    let images: Vec<String> = json_of(&server, &["get", "pods", "-l", "app=web"])["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .map(|p| {
            p["spec"]["containers"][0]["image"]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .collect();
    assert_eq!(images, vec!["busybox:1.36"; 3]);

    server.ok(&["rollout", "undo", "deployment/web"]);
    server.ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    let d = json_of(&server, &["get", "deployment", "web"]);
    assert_eq!(
        d["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "3"
    );
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "busybox"
    );
    let old_rs = json_of(&server, &["get", "rs", &rs_name]);
    assert_eq!(
        old_rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "3"
    );
    assert_eq!(
        old_rs["metadata"]["annotations"]["deployment.kubernetes.io/revision-history"],
        "1"
    );
    let history = server.ok(&["rollout", "history", "deployment/web"]);
    assert!(history.contains("REVISION"), "{history}");
    assert!(
        history.lines().any(|l| l.trim_start().starts_with('2')),
        "{history}"
    );
    assert!(
        history.lines().any(|l| l.trim_start().starts_with('3')),
        "{history}"
    );

    server.ok(&["scale", "deployment/web", "--replicas=5"]);
    server.ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    wait_for(30, "5 web pods", || {
        count_pods(&server, "default", "app=web") == 5
    });
    let d = json_of(&server, &["get", "deployment", "web"]);
    assert_eq!(d["status"]["availableReplicas"], 5);
    let table = server.ok(&["get", "deployment", "web"]);
    assert!(table.contains("5/5"), "{table}");

    // Background deletion removes the sets and pods.
    server.ok(&["delete", "deployment", "web"]);
    wait_for(30, "web replica sets gone", || {
        json_of(&server, &["get", "rs", "-l", "app=web"])["items"]
            .as_array()
            .is_some_and(Vec::is_empty)
    });
    wait_for(30, "web pods gone", || {
        count_pods(&server, "default", "app=web") == 0
    });
}

#[test]
fn deletion_cascades_orphan_and_foreground() {
    let server = Server::start();
    let _node = SimulatedNode::start(&server, Box::new(|_| Outcome::Run));
    server.ok(&[
        "create",
        "deployment",
        "keep",
        "--image=busybox",
        "--replicas=2",
    ]);
    server.ok(&["rollout", "status", "deployment/keep", "--timeout=60s"]);
    server.ok(&["delete", "deployment", "keep", "--cascade=orphan"]);
    wait_for(30, "deployment keep gone", || {
        !server
            .kubectl(&["get", "deployment", "keep"])
            .status
            .success()
    });
    let rs = json_of(&server, &["get", "rs", "-l", "app=keep"]);
    let items = rs["items"].as_array().cloned().unwrap_or_default();
    assert_eq!(items.len(), 1);
    wait_for(30, "owner references dropped", || {
        json_of(&server, &["get", "rs", "-l", "app=keep"])["items"][0]["metadata"]["ownerReferences"].is_null()
    });
    assert_eq!(count_pods(&server, "default", "app=keep"), 2);

    server.ok(&[
        "create",
        "deployment",
        "fg",
        "--image=busybox",
        "--replicas=2",
    ]);
    server.ok(&["rollout", "status", "deployment/fg", "--timeout=60s"]);
    server.ok(&[
        "delete",
        "deployment",
        "fg",
        "--cascade=foreground",
        "--wait=false",
    ]);
    // While dependents remain the owner is still there, marked for deletion.
    let d = server.kubectl(&["get", "deployment", "fg", "-o", "json"]);
    if d.status.success() {
        let d: Value = serde_json::from_slice(&d.stdout).expect("json");
        assert!(d["metadata"]["deletionTimestamp"].is_string());
        assert!(
            d["metadata"]["finalizers"]
                .as_array()
                .is_some_and(|f| f.iter().any(|x| x == "foregroundDeletion"))
        );
    }
    wait_for(30, "fg pods gone", || {
        count_pods(&server, "default", "app=fg") == 0
    });
    wait_for(30, "deployment fg gone", || {
        !server
            .kubectl(&["get", "deployment", "fg"])
            .status
            .success()
    });
    assert!(
        json_of(&server, &["get", "rs", "-l", "app=fg"])["items"]
            .as_array()
            .is_some_and(Vec::is_empty)
    );

    // A running pod held by a finalizer goes once the finalizer is removed
    // after its node's final (grace 0) delete.
    let held = r#"{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "held", "finalizers": ["example.com/hold"]},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]}}"#;
    server.ok_stdin(&["create", "-f", "-"], held);
    wait_for(30, "held running", || {
        json_of(&server, &["get", "pod", "held"])["status"]["phase"] == "Running"
    });
    server.ok(&["delete", "pod", "held", "--wait=false"]);
    wait_for(30, "held grace period shortened to 0", || {
        json_of(&server, &["get", "pod", "held"])["metadata"]["deletionGracePeriodSeconds"] == 0
    });
    server.ok(&[
        "patch",
        "pod",
        "held",
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":null}}"#,
    ]);
    wait_for(30, "held gone", || {
        !server.kubectl(&["get", "pod", "held"]).status.success()
    });
}

#[test]
fn job_retries_a_failed_pod_and_completes() {
    let server = Server::start();
    let failed_once = Arc::new(AtomicBool::new(false));
    let f = failed_once.clone();
    let _node = SimulatedNode::start(
        &server,
        Box::new(move |pod: &Pod| {
            match pod.labels().get("job-name").map(String::as_str) {
                None => return Outcome::Run,
                Some("pi") => {}
                Some(_) => return Outcome::Succeed,
            }
            let running = pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
            if running && !f.swap(true, Ordering::SeqCst) {
                Outcome::Fail
            } else {
                Outcome::Succeed
            }
        }),
    );
    let job = r#"{"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "pi"},
        "spec": {"completions": 3, "parallelism": 1, "backoffLimit": 4,
            "template": {"spec": {"restartPolicy": "Never",
                "containers": [{"name": "pi", "image": "busybox", "command": ["true"]}]}}}}"#;
    server.ok_stdin(&["create", "-f", "-"], job);
    let out = server.kubectl(&[
        "wait",
        "--for=condition=complete",
        "job/pi",
        "--timeout=90s",
    ]);
    assert!(
        out.status.success(),
        "job pi did not complete:\n{}\n{}",
        server.ok(&["get", "job", "pi", "-o", "yaml"]),
        server.ok(&["get", "pods", "-o", "wide", "--show-labels"])
    );
    let j = json_of(&server, &["get", "job", "pi"]);
    assert_eq!(j["status"]["succeeded"], 3);
    assert_eq!(j["status"]["failed"], 1);
    assert!(j["status"]["completionTime"].is_string());
    let types: Vec<&str> = j["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["type"].as_str())
        .collect();
    assert!(
        types.contains(&"SuccessCriteriaMet") && types.contains(&"Complete"),
        "{types:?}"
    );
    // Every pod lost its tracking finalizer.
    let pods = json_of(&server, &["get", "pods", "-l", "job-name=pi"]);
    for p in pods["items"].as_array().into_iter().flatten() {
        assert!(p["metadata"]["finalizers"].is_null(), "{}", p["metadata"]);
    }
    assert!(failed_once.load(Ordering::SeqCst));

    // Indexed: every index completes once; a ttl of 0 deletes the job after.
    let indexed = r#"{"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "idx"},
        "spec": {"completions": 3, "parallelism": 3, "completionMode": "Indexed",
            "template": {"spec": {"restartPolicy": "Never",
                "containers": [{"name": "c", "image": "busybox"}]}}}}"#;
    server.ok_stdin(&["create", "-f", "-"], indexed);
    server.ok(&[
        "wait",
        "--for=condition=complete",
        "job/idx",
        "--timeout=60s",
    ]);
    let j = json_of(&server, &["get", "job", "idx"]);
    assert_eq!(j["status"]["completedIndexes"], "0-2");
    let pods = json_of(&server, &["get", "pods", "-l", "job-name=idx"]);
    let mut hostnames: Vec<&str> = pods["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["spec"]["hostname"].as_str())
        .collect();
    hostnames.sort_unstable();
    assert_eq!(hostnames, ["idx-0", "idx-1", "idx-2"]);

    let ttl = r#"{"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "short"},
        "spec": {"ttlSecondsAfterFinished": 0,
            "template": {"spec": {"restartPolicy": "Never",
                "containers": [{"name": "c", "image": "busybox"}]}}}}"#;
    server.ok_stdin(&["create", "-f", "-"], ttl);
    wait_for(60, "job short deleted after finishing", || {
        !server.kubectl(&["get", "job", "short"]).status.success()
    });
}

#[test]
fn cronjob_creates_jobs_on_schedule() {
    let server = Server::start();
    let _node = SimulatedNode::start(
        &server,
        Box::new(|pod: &Pod| {
            if pod.labels().contains_key("job-name") {
                Outcome::Succeed
            } else {
                Outcome::Run
            }
        }),
    );
    server.ok(&[
        "create",
        "cronjob",
        "tick",
        "--image=busybox",
        "--schedule=* * * * *",
    ]);
    // The first run is at the next full minute.
    wait_for(75, "a job of cron job tick", || {
        json_of(&server, &["get", "jobs"])["items"]
            .as_array()
            .is_some_and(|items| !items.is_empty())
    });
    let jobs = json_of(&server, &["get", "jobs"]);
    let job = &jobs["items"][0];
    let name = job["metadata"]["name"].as_str().unwrap_or("").to_string();
    let minutes: i64 = name
        .strip_prefix("tick-")
        .and_then(|m| m.parse().ok())
        .expect("job name tick-<minutes>");
    let scheduled =
        job["metadata"]["annotations"]["batch.kubernetes.io/cronjob-scheduled-timestamp"]
            .as_str()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .expect("scheduled timestamp");
    assert_eq!(scheduled.timestamp() / 60, minutes);
    assert_eq!(job["metadata"]["ownerReferences"][0]["kind"], "CronJob");
    server.ok(&[
        "wait",
        "--for=condition=complete",
        &format!("job/{name}"),
        "--timeout=60s",
    ]);
    wait_for(30, "lastSuccessfulTime", || {
        let cj = json_of(&server, &["get", "cronjob", "tick"]);
        cj["status"]["lastScheduleTime"].is_string()
            && cj["status"]["lastSuccessfulTime"].is_string()
    });
}

#[test]
fn namespace_gets_defaults_and_deletion_removes_its_contents() {
    let server = Server::start();
    let _node = SimulatedNode::start(&server, Box::new(|_| Outcome::Run));
    server.ok(&["create", "namespace", "x"]);
    wait_for(30, "default service account", || {
        server
            .kubectl(&["get", "serviceaccount", "default", "-n", "x"])
            .status
            .success()
    });
    wait_for(30, "kube-root-ca.crt", || {
        server
            .kubectl(&["get", "configmap", "kube-root-ca.crt", "-n", "x"])
            .status
            .success()
    });
    let cm = json_of(
        &server,
        &["get", "configmap", "kube-root-ca.crt", "-n", "x"],
    );
    let ca = std::fs::read_to_string(server.data_dir().join("tls").join("ca.crt")).expect("ca");
    assert_eq!(cm["data"]["ca.crt"].as_str(), Some(ca.as_str()));
    // Recreated when deleted.
    server.ok(&["delete", "serviceaccount", "default", "-n", "x"]);
    wait_for(30, "default service account back", || {
        server
            .kubectl(&["get", "serviceaccount", "default", "-n", "x"])
            .status
            .success()
    });

    server.ok(&[
        "create",
        "deployment",
        "app",
        "--image=busybox",
        "--replicas=2",
        "-n",
        "x",
    ]);
    server.ok(&[
        "create",
        "configmap",
        "cfg",
        "--from-literal=a=b",
        "-n",
        "x",
    ]);
    server.ok(&[
        "rollout",
        "status",
        "deployment/app",
        "-n",
        "x",
        "--timeout=60s",
    ]);
    server.ok(&["delete", "namespace", "x", "--wait=false"]);
    let err = server.fails(&["create", "configmap", "late", "-n", "x"]);
    assert!(
        err.contains("unable to create new content in namespace x because it is being terminated")
            || err.contains("not found"),
        "{err}"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while server.kubectl(&["get", "namespace", "x"]).status.success() {
        assert!(
            std::time::Instant::now() < deadline,
            "namespace x not gone:\n{}\n{}",
            server.ok(&["get", "namespace", "x", "-o", "yaml"]),
            server.ok(&["get", "all", "-n", "x"])
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let pods = json_of(&server, &["get", "pods", "-A"]);
    assert!(
        pods["items"]
            .as_array()
            .into_iter()
            .flatten()
            .all(|p| p["metadata"]["namespace"] != "x")
    );
}

#[test]
fn service_endpoints_follow_ready_pods_with_named_ports() {
    let server = Server::start();
    let _node = SimulatedNode::start(&server, Box::new(|_| Outcome::Run));
    let manifest = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: echo}
spec:
  replicas: 2
  selector: {matchLabels: {app: echo}}
  template:
    metadata: {labels: {app: echo}}
    spec:
      containers:
      - name: echo
        image: busybox
        ports: [{name: http, containerPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: echo}
spec:
  selector: {app: echo}
  ports: [{name: web, port: 80, targetPort: http}]
"#;
    server.ok_stdin(&["apply", "-f", "-"], manifest);
    server.ok(&["rollout", "status", "deployment/echo", "--timeout=60s"]);
    wait_for(30, "two ready endpoints", || {
        let s = json_of(
            &server,
            &[
                "get",
                "endpointslices",
                "-l",
                "kubernetes.io/service-name=echo",
            ],
        );
        s["items"].as_array().is_some_and(|items| {
            items.len() == 1
                && items[0]["endpoints"]
                    .as_array()
                    .is_some_and(|e| e.len() == 2)
        })
    });
    let s = json_of(
        &server,
        &[
            "get",
            "endpointslices",
            "-l",
            "kubernetes.io/service-name=echo",
        ],
    );
    let slice = &s["items"][0];
    assert_eq!(slice["addressType"], "IPv4");
    assert_eq!(
        slice["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"],
        "endpointslice-controller.k8s.io"
    );
    assert_eq!(slice["ports"][0]["port"], 8080);
    assert_eq!(slice["ports"][0]["name"], "web");
    let ep = &slice["endpoints"][0];
    assert_eq!(ep["conditions"]["ready"], true);
    assert_eq!(ep["nodeName"], NODE);
    assert_eq!(ep["zone"], "zone-a");
    assert_eq!(ep["targetRef"]["kind"], "Pod");

    wait_for(30, "legacy endpoints", || {
        let e = server.kubectl(&["get", "endpoints", "echo", "-o", "json"]);
        e.status.success()
            && serde_json::from_slice::<Value>(&e.stdout).is_ok_and(|e| {
                e["subsets"][0]["addresses"]
                    .as_array()
                    .is_some_and(|a| a.len() == 2)
            })
    });
    let e = json_of(&server, &["get", "endpoints", "echo"]);
    assert_eq!(e["subsets"][0]["ports"][0]["port"], 8080);
    assert_eq!(
        e["metadata"]["labels"]["endpointslice.kubernetes.io/skip-mirror"],
        "true"
    );
    let table = server.ok(&["get", "endpoints", "echo"]);
    assert!(table.contains(":8080"), "{table}");
    let describe = server.ok(&["describe", "service", "echo"]);
    assert!(
        describe.contains("Endpoints:") && describe.contains(":8080"),
        "{describe}"
    );

    server.ok(&["scale", "deployment/echo", "--replicas=0"]);
    wait_for(30, "endpoints emptied", || {
        let s = json_of(
            &server,
            &[
                "get",
                "endpointslices",
                "-l",
                "kubernetes.io/service-name=echo",
            ],
        );
        s["items"].as_array().is_some_and(|items| {
            items.len() == 1 && items[0]["endpoints"].as_array().is_none_or(Vec::is_empty)
        })
    });
}

#[test]
fn statefulset_creates_ordered_pods_with_claims_and_rolls() {
    let server = Server::start();
    let _node = SimulatedNode::start(&server, Box::new(|_| Outcome::Run));
    let manifest = r#"
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db}
spec:
  serviceName: db
  replicas: 3
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec:
      containers: [{name: db, image: busybox}]
  volumeClaimTemplates:
  - metadata: {name: data}
    spec:
      accessModes: [ReadWriteOnce]
      resources: {requests: {storage: 1Gi}}
"#;
    server.ok_stdin(&["apply", "-f", "-"], manifest);
    server.ok(&["rollout", "status", "statefulset/db", "--timeout=60s"]);
    let pods = json_of(&server, &["get", "pods", "-l", "app=db"]);
    let mut names: Vec<&str> = pods["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["metadata"]["name"].as_str())
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["db-0", "db-1", "db-2"]);
    let claims = server.ok(&["get", "pvc", "-o", "name"]);
    for i in 0..3 {
        assert!(
            claims.contains(&format!("persistentvolumeclaim/data-db-{i}")),
            "{claims}"
        );
    }
    let before = json_of(&server, &["get", "statefulset", "db"]);
    server.ok(&["set", "image", "statefulset/db", "db=busybox:1.36"]);
    server.ok(&["rollout", "status", "statefulset/db", "--timeout=90s"]);
    let after = json_of(&server, &["get", "statefulset", "db"]);
    assert_ne!(
        before["status"]["updateRevision"],
        after["status"]["updateRevision"]
    );
    assert_eq!(
        after["status"]["currentRevision"],
        after["status"]["updateRevision"]
    );
    assert_eq!(after["status"]["updatedReplicas"], 3);
    let images: Vec<String> = json_of(&server, &["get", "pods", "-l", "app=db"])["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            p["spec"]["containers"][0]["image"]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .collect();
    assert_eq!(images, vec!["busybox:1.36"; 3]);
    server.ok(&["scale", "statefulset/db", "--replicas=1"]);
    wait_for(30, "db scaled to one pod", || {
        count_pods(&server, "default", "app=db") == 1
    });
    assert!(server.kubectl(&["get", "pod", "db-0"]).status.success());
}
