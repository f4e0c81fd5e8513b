//! The multi-node scenarios on one kind cluster (1 control plane + 2
//! workers that join with a token, each node in namespaces of its own):
//! joining, a DaemonSet, a Job, logs/exec/port-forward on a worker, Service
//! traffic across nodes, DNS from every node, a rolling update under load,
//! a hostPort and pod egress on a worker, an r8s-server restart, a worker
//! that stops and comes back, and a worker
//! that is drained and deleted. Scenarios run one after another, each in a
//! namespace of its own that it deletes; the end prints a table and fails
//! if any failed. Needs root, docker-registry, skopeo, busybox-static,
//! openssl, iproute2, util-linux and kubectl (CI has them).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

use anyhow::Context;
use e2e::kind::{KindCluster, KindConfig, netns};
use e2e::kubectl::Kubectl;
use e2e::suite::Suite;
use serde_json::{Value, json};

const TIMEOUT: Duration = Duration::from_secs(90);
/// Waits for traffic (which needs routes between the nodes' pod networks).
const TRAFFIC_TIMEOUT: Duration = Duration::from_secs(45);

/// A namespace of a scenario, deleted on drop (waiting for its pods to go,
/// so that the next scenario starts on a clean cluster).
struct Namespace {
    kubectl: Kubectl,
    name: String,
}

impl Namespace {
    fn create(kubectl: &Kubectl, name: &str) -> anyhow::Result<Self> {
        kubectl.apply(&json!({
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": { "name": name },
        }))?;
        Ok(Self {
            kubectl: kubectl.clone(),
            name: name.to_owned(),
        })
    }

    /// kubectl in this namespace.
    fn k(&self, args: &[&str], stdin: Option<&str>) -> anyhow::Result<Output> {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        self.kubectl.run(&all, stdin)
    }

    fn ok(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        self.kubectl.ok(&all, None)
    }

    fn get(&self, args: &[&str]) -> anyhow::Result<Value> {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        self.kubectl.get_json(&all)
    }

    fn apply(&self, mut manifest: Value) -> anyhow::Result<()> {
        manifest["metadata"]["namespace"] = json!(self.name);
        self.kubectl.apply(&manifest)
    }

    /// The pods with label `app=<app>`.
    fn pods(&self, app: &str) -> Vec<Value> {
        self.get(&["get", "pods", "-l", &format!("app={app}")])
            .ok()
            .and_then(|v| v["items"].as_array().cloned())
            .unwrap_or_default()
    }

    /// Waits until the live (not terminating) pods of `app` are `n`, all
    /// Running and Ready, and pass `pred`; returns them.
    fn wait_pods(
        &self,
        app: &str,
        n: usize,
        timeout: Duration,
        pred: impl Fn(&[Value]) -> bool,
    ) -> anyhow::Result<Vec<Value>> {
        let mut last = String::new();
        let r = e2e::wait_for(&format!("{n} ready pods of {app}"), timeout, || {
            let pods = self.pods(app);
            last = summary(&pods);
            let live: Vec<Value> = pods
                .into_iter()
                .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
                .collect();
            (live.len() == n && live.iter().all(is_ready) && pred(&live)).then_some(live)
        });
        r.map_err(|e| anyhow::anyhow!("{e}; pods: {last}"))
    }

    /// Waits for `n` Running+Ready pods of `app` (none terminating).
    fn wait_ready_pods(
        &self,
        app: &str,
        n: usize,
        timeout: Duration,
    ) -> anyhow::Result<Vec<Value>> {
        self.wait_pods(app, n, timeout, |_| true)
    }

    /// `kubectl exec <pod> -- <cmd>`.
    fn exec(&self, pod: &str, cmd: &[&str]) -> anyhow::Result<Output> {
        let mut args = vec!["exec", pod, "--"];
        args.extend_from_slice(cmd);
        self.k(&args, None)
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = self
            .kubectl
            .run(&["delete", "namespace", &self.name, "--timeout=60s"], None);
    }
}

fn is_ready(pod: &Value) -> bool {
    pod["status"]["phase"] == "Running"
        && pod["status"]["conditions"].as_array().is_some_and(|c| {
            c.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

fn summary(pods: &[Value]) -> String {
    pods.iter()
        .map(|p| {
            let unscheduled = p["status"]["conditions"]
                .as_array()
                .and_then(|c| {
                    c.iter()
                        .find(|c| c["type"] == "PodScheduled" && c["status"] == "False")
                })
                .map(|c| format!("({})", c["message"].as_str().unwrap_or_default()))
                .unwrap_or_default();
            format!(
                "{}@{}:{}{}{unscheduled}",
                p["metadata"]["name"].as_str().unwrap_or("?"),
                p["spec"]["nodeName"].as_str().unwrap_or("-"),
                p["status"]["phase"].as_str().unwrap_or("?"),
                if p["metadata"]["deletionTimestamp"].is_null() {
                    ""
                } else {
                    "(terminating)"
                }
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn node_of(pod: &Value) -> String {
    pod["spec"]["nodeName"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn name_of(v: &Value) -> String {
    v["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}, stdout {:?}, stderr {:?}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn node_condition(kubectl: &Kubectl, node: &str) -> Option<String> {
    let n = kubectl.get_json(&["get", "node", node]).ok()?;
    n["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Ready")
        .and_then(|c| c["status"].as_str())
        .map(str::to_owned)
}

/// A container running `sh -c script` from the busybox image.
fn container(image: &str, name: &str, script: &str) -> Value {
    json!({ "name": name, "image": image, "command": ["sh", "-c", script] })
}

/// Pod spec pieces: only on these nodes.
fn on_nodes(nodes: &[String]) -> Value {
    json!({
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{
                    "matchExpressions": [{
                        "key": "kubernetes.io/hostname",
                        "operator": "In",
                        "values": nodes,
                    }],
                }],
            },
        },
    })
}

/// A busybox httpd answering `<version> from <hostname>` on 8080.
fn web_deployment(
    image: &str,
    name: &str,
    replicas: u32,
    workers: &[String],
    version: &str,
    spread: bool,
) -> Value {
    let mut affinity = on_nodes(workers);
    if spread {
        affinity["podAntiAffinity"] = json!({
            "requiredDuringSchedulingIgnoredDuringExecution": [{
                "labelSelector": { "matchLabels": { "app": name } },
                "topologyKey": "kubernetes.io/hostname",
            }],
        });
    }
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": { "name": name },
        "spec": {
            "replicas": replicas,
            "selector": { "matchLabels": { "app": name } },
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": { "maxUnavailable": 0, "maxSurge": 1 },
            },
            "template": {
                "metadata": { "labels": { "app": name } },
                "spec": {
                    "terminationGracePeriodSeconds": 10,
                    "affinity": affinity,
                    "tolerations": [
                        { "key": "node.kubernetes.io/unreachable", "operator": "Exists",
                          "effect": "NoExecute", "tolerationSeconds": 5 },
                        { "key": "node.kubernetes.io/not-ready", "operator": "Exists",
                          "effect": "NoExecute", "tolerationSeconds": 5 },
                    ],
                    "containers": [{
                        "name": "httpd",
                        "image": image,
                        "command": ["sh", "-c",
                            "mkdir -p /www && echo \"$VERSION from $(hostname)\" > /www/index.html && exec httpd -f -p 8080 -h /www"],
                        "env": [{ "name": "VERSION", "value": version }],
                        "ports": [{ "containerPort": 8080 }],
                        "readinessProbe": {
                            "httpGet": { "path": "/", "port": 8080 },
                            "periodSeconds": 1,
                        },
                        "lifecycle": {
                            "preStop": { "exec": { "command": ["sleep", "3"] } },
                        },
                    }],
                },
            },
        },
    })
}

fn service(name: &str, kind: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": { "name": name },
        "spec": {
            "type": kind,
            "selector": { "app": name },
            "ports": [{ "name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP" }],
        },
    })
}

/// A pod that sleeps, on `node`.
fn client_pod(image: &str, name: &str, node: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "name": name, "labels": { "app": name } },
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "nodeSelector": { "kubernetes.io/hostname": node },
            "containers": [container(image, "client", "exec sleep 3600")],
        },
    })
}

fn http_get(addr: SocketAddr) -> anyhow::Result<String> {
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    http_over(&mut s)
}

fn http_over(s: &mut std::net::TcpStream) -> anyhow::Result<String> {
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

/// `wget` from `pod` until a page of `want` is served.
fn wget_until(ns: &Namespace, pod: &str, url: &str, want: &str) -> anyhow::Result<String> {
    let mut last = String::new();
    let r = e2e::wait_for(
        &format!("{url} to answer from {pod}"),
        TRAFFIC_TIMEOUT,
        || {
            let out = ns.exec(pod, &["timeout", "5", "wget", "-qO-", url]).ok()?;
            last = text(&out);
            let body = String::from_utf8_lossy(&out.stdout).into_owned();
            (out.status.success() && body.contains(want)).then_some(body)
        },
    );
    r.map_err(|e| anyhow::anyhow!("{e}; last wget: {last}"))
}

// ---------------------------------------------------------------------------
// The scenarios.

/// Every node joined, is Ready, and got its own podCIDR and address.
fn nodes_join(c: &KindCluster) -> anyhow::Result<()> {
    let nodes = c.kubectl().get_json(&["get", "nodes"])?;
    let items = nodes["items"].as_array().cloned().unwrap_or_default();
    let names: BTreeSet<String> = items.iter().map(name_of).collect();
    let want: BTreeSet<String> = c.nodes().iter().map(|n| n.name.clone()).collect();
    anyhow::ensure!(names == want, "nodes {names:?}, want {want:?}");
    let mut cidrs = BTreeSet::new();
    for n in &items {
        let name = name_of(n);
        let node = c.node(&name)?;
        let cidr = n["spec"]["podCIDR"].as_str().unwrap_or_default().to_owned();
        anyhow::ensure!(
            cidr.starts_with("10.244.") && cidr.ends_with("/24"),
            "node {name} podCIDR {cidr:?} is not a /24 of {}",
            e2e::kind::CLUSTER_CIDR
        );
        anyhow::ensure!(cidrs.insert(cidr.clone()), "podCIDR {cidr} given twice");
        let internal = n["status"]["addresses"]
            .as_array()
            .and_then(|a| a.iter().find(|a| a["type"] == "InternalIP"))
            .and_then(|a| a["address"].as_str())
            .unwrap_or_default()
            .to_owned();
        anyhow::ensure!(
            internal == node.ip.to_string(),
            "node {name} InternalIP {internal}, want {}",
            node.ip
        );
        anyhow::ensure!(
            node_condition(&c.kubectl(), &name).as_deref() == Some("True"),
            "node {name} is not Ready"
        );
    }
    // The workers joined with the token: each kept its CSR-signed client
    // credentials in its own /var/lib/r8s.
    for w in c.workers() {
        let kubelet_conf = c.node(&w)?.var_lib_r8s().join("agent/kubelet.conf");
        anyhow::ensure!(
            kubelet_conf.exists(),
            "{} is missing",
            kubelet_conf.display()
        );
    }
    Ok(())
}

/// A DaemonSet `name` of pods (container `name`) that only sleep.
fn sleeper_daemonset(c: &KindCluster, name: &str) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": { "name": name },
        "spec": {
            "selector": { "matchLabels": { "app": name } },
            "template": {
                "metadata": { "labels": { "app": name } },
                "spec": {
                    "terminationGracePeriodSeconds": 1,
                    "containers": [container(&c.busybox(), name, "exec sleep 3600")],
                },
            },
        },
    })
}

/// A DaemonSet runs a pod on every node, each with an address of its
/// node's podCIDR.
fn daemonset(c: &KindCluster) -> anyhow::Result<()> {
    let ns = Namespace::create(&c.kubectl(), "e2e-daemonset")?;
    ns.apply(sleeper_daemonset(c, "ds"))?;
    let n = c.nodes().len();
    let pods = ns.wait_ready_pods("ds", n, TIMEOUT)?;
    let on: BTreeSet<String> = pods.iter().map(node_of).collect();
    anyhow::ensure!(on.len() == n, "daemon pods on {on:?}");
    let ds = ns.get(&["get", "daemonset", "ds"])?;
    anyhow::ensure!(
        ds["status"]["desiredNumberScheduled"] == n && ds["status"]["numberReady"] == n,
        "daemonset status {}",
        ds["status"]
    );
    let nodes = c.kubectl().get_json(&["get", "nodes"])?;
    let cidr_of: BTreeMap<String, String> = nodes["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|n| {
            (
                name_of(n),
                n["spec"]["podCIDR"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    for p in &pods {
        let ip = p["status"]["podIP"].as_str().unwrap_or_default();
        let cidr = cidr_of.get(&node_of(p)).cloned().unwrap_or_default();
        let net = cidr.trim_end_matches("0/24");
        anyhow::ensure!(
            !net.is_empty() && ip.starts_with(net),
            "pod {} on {} has IP {ip}, outside the node's podCIDR {cidr}",
            name_of(p),
            node_of(p)
        );
    }
    Ok(())
}

/// A Job on a worker runs to completion; its log is readable.
fn job(c: &KindCluster) -> anyhow::Result<()> {
    let ns = Namespace::create(&c.kubectl(), "e2e-job")?;
    let workers = c.workers();
    ns.apply(json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": { "name": "compute" },
        "spec": {
            "backoffLimit": 2,
            "template": {
                "metadata": { "labels": { "app": "compute" } },
                "spec": {
                    "restartPolicy": "Never",
                    "affinity": on_nodes(&workers),
                    "containers": [container(&c.busybox(), "compute",
                        "echo result=$((6*7)) on $(hostname)")],
                },
            },
        },
    }))?;
    let mut last = Value::Null;
    let r = e2e::wait_for("the job to complete", TIMEOUT, || {
        let j = ns.get(&["get", "job", "compute"]).ok()?;
        last = j["status"].clone();
        (j["status"]["succeeded"] == 1).then_some(())
    });
    r.map_err(|e| anyhow::anyhow!("{e}; status {last}"))?;
    let pods = ns.pods("compute");
    let node = pods.first().map(node_of).unwrap_or_default();
    anyhow::ensure!(workers.contains(&node), "the job ran on {node:?}");
    let logs = ns.ok(&["logs", "job/compute"])?;
    anyhow::ensure!(logs.contains("result=42"), "job log {logs:?}");
    Ok(())
}

/// `kubectl logs`, `exec` and `port-forward` reach a pod on a worker
/// (through r8s-server to the worker's kubelet API).
fn logs_exec_port_forward(c: &KindCluster) -> anyhow::Result<()> {
    let ns = Namespace::create(&c.kubectl(), "e2e-streams")?;
    let worker = c.workers().last().cloned().unwrap_or_default();
    ns.apply(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "name": "web", "labels": { "app": "web" } },
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "nodeSelector": { "kubernetes.io/hostname": worker },
            "containers": [container(&c.busybox(), "web",
                "echo started on $(hostname); mkdir -p /www && echo page-of-web > /www/index.html && exec httpd -f -p 8080 -h /www")],
        },
    }))?;
    ns.wait_ready_pods("web", 1, TIMEOUT)?;
    let logs = e2e::wait_for("the pod's log", TIMEOUT, || {
        let l = ns.ok(&["logs", "web"]).ok()?;
        l.contains("started on web").then_some(l)
    })?;
    anyhow::ensure!(logs.contains("started"), "{logs}");
    let out = ns.exec("web", &["sh", "-c", "echo $((6*7)); cat /www/index.html"])?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    anyhow::ensure!(
        out.status.success() && stdout.contains("42") && stdout.contains("page-of-web"),
        "exec: {}",
        text(&out)
    );
    let failing = ns.exec("web", &["sh", "-c", "exit 3"])?;
    anyhow::ensure!(
        failing.status.code() == Some(3),
        "exec exit: {}",
        text(&failing)
    );

    let mut pf = ns
        .kubectl
        .command(&[
            "-n",
            &ns.name,
            "port-forward",
            "pod/web",
            ":8080",
            "--address",
            "127.0.0.1",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut pf_guard = scopeguard::guard(&mut pf, |pf| {
        let _ = pf.kill();
        let _ = pf.wait();
    });
    let stdout = pf_guard
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("no port-forward stdout"))?;
    let mut reader = BufReader::new(stdout);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    // kubectl goes on printing "Handling connection for ...": keep reading,
    // or it dies of a closed pipe.
    std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
    // "Forwarding from 127.0.0.1:PORT -> 8080"
    let local = line
        .split_whitespace()
        .nth(2)
        .and_then(|a| a.parse::<SocketAddr>().ok())
        .ok_or_else(|| anyhow::anyhow!("port-forward printed {line:?}"))?;
    let page = http_get(local)?;
    anyhow::ensure!(page.contains("page-of-web"), "port-forward page {page:?}");
    // A second connection over the same forward.
    let page = http_get(local)?;
    anyhow::ensure!(page.contains("page-of-web"), "port-forward page {page:?}");
    Ok(())
}

/// A Deployment spread over the workers serves through a ClusterIP Service
/// from a pod on the control plane (every request crosses nodes) and through
/// a NodePort from the cluster network.
fn service_traffic(c: &KindCluster) -> anyhow::Result<()> {
    let ns = Namespace::create(&c.kubectl(), "e2e-services")?;
    let workers = c.workers();
    ns.apply(web_deployment(&c.busybox(), "web", 2, &workers, "v1", true))?;
    ns.apply(service("web", "NodePort"))?;
    ns.apply(client_pod(&c.busybox(), "client", e2e::kind::CONTROL_PLANE))?;
    let pods = ns.wait_ready_pods("web", 2, TIMEOUT)?;
    let on: BTreeSet<String> = pods.iter().map(node_of).collect();
    anyhow::ensure!(on.len() == 2, "web pods not spread: {}", summary(&pods));
    ns.wait_ready_pods("client", 1, TIMEOUT)?;
    let svc = ns.get(&["get", "service", "web"])?;
    let cluster_ip = svc["spec"]["clusterIP"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let node_port = svc["spec"]["ports"][0]["nodePort"]
        .as_u64()
        .and_then(|p| u16::try_from(p).ok())
        .ok_or_else(|| anyhow::anyhow!("web has no nodePort: {svc}"))?;

    // Pod to pod across nodes, then through the ClusterIP: both backends.
    for p in &pods {
        let ip = p["status"]["podIP"].as_str().unwrap_or_default();
        wget_until(&ns, "client", &format!("http://{ip}:8080/"), "v1 from")?;
    }
    let url = format!("http://{cluster_ip}/");
    let mut seen = BTreeSet::new();
    for _ in 0..20 {
        seen.insert(wget_until(&ns, "client", &url, "v1 from")?);
        if seen.len() > 1 {
            break;
        }
    }
    anyhow::ensure!(seen.len() > 1, "only one backend answered: {seen:?}");

    // NodePort from the cluster network, on every node (the control plane
    // has no backend: it forwards to a worker).
    let net = &c.network().netns;
    for node in c.nodes() {
        let addr = SocketAddr::from((node.ip, node_port));
        let page = e2e::wait_for(
            &format!("NodePort {addr} to answer"),
            TRAFFIC_TIMEOUT,
            || {
                netns::run_in(net, || http_get(addr).ok())
                    .ok()
                    .flatten()
                    .filter(|p| p.contains("v1 from"))
            },
        )?;
        anyhow::ensure!(
            page.starts_with("HTTP/1.") && page.contains(" 200 "),
            "{page}"
        );
    }
    Ok(())
}

/// A hostPort answers on its worker's address from the cluster network; a
/// pod reaches itself through its Service (hairpin); and a pod's connection
/// to the cluster network (outside the cluster CIDR) arrives from its node's
/// address (flannel's masquerade).
fn host_port_and_egress(c: &KindCluster) -> anyhow::Result<()> {
    let ns = Namespace::create(&c.kubectl(), "e2e-hostport")?;
    let worker = c.workers().first().cloned().context("no worker")?;
    let node_ip = c.node(&worker)?.ip;
    let mut web = web_deployment(&c.busybox(), "hp", 1, &[worker], "v1", false);
    web["spec"]["template"]["spec"]["containers"][0]["ports"] =
        json!([{ "containerPort": 8080, "hostPort": 18080 }]);
    ns.apply(web)?;
    ns.apply(service("hp", "ClusterIP"))?;
    let pods = ns.wait_ready_pods("hp", 1, TIMEOUT)?;
    let pod = name_of(&pods[0]);
    let cluster_ip = ns.get(&["get", "service", "hp"])?["spec"]["clusterIP"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    wget_until(&ns, &pod, &format!("http://{cluster_ip}/"), "v1 from")?;
    let net = c.network();
    let addr = SocketAddr::from((node_ip, 18080));
    e2e::wait_for(
        &format!("hostPort {addr} to answer"),
        TRAFFIC_TIMEOUT,
        || {
            netns::run_in(&net.netns, || http_get(addr).ok())
                .ok()
                .flatten()
                .filter(|p| p.contains("v1 from"))
        },
    )?;

    let gateway = net.gateway;
    let listener = netns::run_in(&net.netns, || std::net::TcpListener::bind((gateway, 0)))??;
    listener.set_nonblocking(true)?;
    let port = listener.local_addr()?.port();
    let out = ns.exec(
        &pod,
        &[
            "sh",
            "-c",
            &format!("echo hi | timeout 5 nc {gateway} {port}"),
        ],
    )?;
    let (_, peer) = e2e::wait_for("the pod's connection", Duration::from_secs(10), || {
        listener.accept().ok()
    })
    .map_err(|e| anyhow::anyhow!("{e}; nc: {}", text(&out)))?;
    anyhow::ensure!(
        peer.ip() == std::net::IpAddr::V4(node_ip),
        "the pod's connection came from {peer}, not from its node {node_ip}"
    );
    Ok(())
}

/// Cluster DNS names resolve from pods on every node.
fn dns(c: &KindCluster) -> anyhow::Result<()> {
    let ns = Namespace::create(&c.kubectl(), "e2e-dns")?;
    ns.apply(service("web", "ClusterIP"))?;
    ns.apply(sleeper_daemonset(c, "probe"))?;
    let pods = ns.wait_ready_pods("probe", c.nodes().len(), TIMEOUT)?;
    let web_ip = ns.get(&["get", "service", "web"])?["spec"]["clusterIP"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let kubernetes_ip = c
        .kubectl()
        .get_json(&["get", "service", "kubernetes", "-n", "default"])?["spec"]["clusterIP"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let names = [
        (
            "kubernetes.default.svc.cluster.local",
            kubernetes_ip.as_str(),
        ),
        ("web.e2e-dns.svc.cluster.local", web_ip.as_str()),
    ];
    for p in &pods {
        let pod = name_of(p);
        for (name, want) in names {
            let mut last = String::new();
            let r = e2e::wait_for(
                &format!("{name} to resolve on {}", node_of(p)),
                TRAFFIC_TIMEOUT,
                || {
                    let out = ns.exec(&pod, &["timeout", "5", "nslookup", name]).ok()?;
                    last = text(&out);
                    let stdout = String::from_utf8_lossy(&out.stdout);
                    (out.status.success()
                        && stdout.lines().any(|l| {
                            l.starts_with("Address") && l.contains(want) && !l.contains("#53")
                        }))
                    .then_some(())
                },
            );
            r.map_err(|e| anyhow::anyhow!("{e}; want {want}; last: {last}"))?;
        }
    }
    Ok(())
}

/// A rolling update of a Deployment behind a Service, while a client on
/// another node sends a bounded stream of requests: none fails.
fn rolling_update(c: &KindCluster) -> anyhow::Result<()> {
    let ns = Namespace::create(&c.kubectl(), "e2e-rollout")?;
    let workers = c.workers();
    ns.apply(web_deployment(
        &c.busybox(),
        "web",
        2,
        &workers,
        "v1",
        false,
    ))?;
    ns.apply(service("web", "ClusterIP"))?;
    ns.apply(client_pod(&c.busybox(), "client", e2e::kind::CONTROL_PLANE))?;
    ns.wait_ready_pods("web", 2, TIMEOUT)?;
    ns.wait_ready_pods("client", 1, TIMEOUT)?;
    wget_until(&ns, "client", "http://web/", "v1 from")?;

    // At most 400 requests; stops after 15 answers in a row from v2.
    let script = "ok=0; fail=0; v2=0; i=0; \
        while [ $i -lt 400 ]; do i=$((i+1)); \
          if out=$(timeout 3 wget -qO- http://web/ 2>&1); then ok=$((ok+1)); else fail=$((fail+1)); echo \"FAIL $i: $out\"; fi; \
          case \"$out\" in v2*) v2=$((v2+1));; *) v2=0;; esac; \
          [ $v2 -ge 15 ] && break; sleep 0.1; \
        done; echo \"ok=$ok fail=$fail v2=$v2\"";
    let kubectl = ns.kubectl.clone();
    let name = ns.name.clone();
    let load = std::thread::spawn(move || {
        kubectl.run(
            &["-n", &name, "exec", "client", "--", "sh", "-c", script],
            None,
        )
    });
    std::thread::sleep(Duration::from_secs(2));
    ns.ok(&["set", "env", "deployment/web", "VERSION=v2"])?;
    ns.ok(&["rollout", "status", "deployment/web", "--timeout=120s"])?;
    let out = load
        .join()
        .map_err(|_| anyhow::anyhow!("load thread panicked"))??;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let last = stdout.lines().last().unwrap_or_default();
    anyhow::ensure!(out.status.success(), "load loop: {}", text(&out));
    anyhow::ensure!(
        last.contains(" fail=0 ") && last.contains("v2=15"),
        "requests failed during the rollout or v2 never served: {stdout}"
    );
    Ok(())
}

/// r8s-server stops and starts again: pods keep running (same pods, no
/// restarts), every node is Ready again and a new pod schedules.
fn server_restart(c: &mut KindCluster) -> anyhow::Result<()> {
    let ns = Namespace::create(&c.kubectl(), "e2e-restart")?;
    let all: Vec<String> = c.nodes().iter().map(|n| n.name.clone()).collect();
    ns.apply(web_deployment(&c.busybox(), "web", 2, &all, "v1", true))?;
    let before = ns.wait_ready_pods("web", 2, TIMEOUT)?;
    let uids = |pods: &[Value]| -> BTreeMap<String, String> {
        pods.iter()
            .map(|p| {
                (
                    p["metadata"]["uid"].as_str().unwrap_or_default().to_owned(),
                    p["status"]["containerStatuses"][0]["containerID"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                )
            })
            .collect()
    };
    c.stop_server()?;
    c.start_server()?;
    c.wait_ready(TIMEOUT)?;
    let after = ns.wait_ready_pods("web", 2, TIMEOUT)?;
    anyhow::ensure!(
        uids(&before) == uids(&after),
        "pods or containers changed across the restart: {} -> {}",
        summary(&before),
        summary(&after)
    );
    for p in &after {
        let restarts = &p["status"]["containerStatuses"][0]["restartCount"];
        anyhow::ensure!(*restarts == 0, "pod {} restarted: {restarts}", name_of(p));
    }
    ns.apply(client_pod(&c.busybox(), "fresh", &c.workers()[0]))?;
    ns.wait_ready_pods("fresh", 1, TIMEOUT)?;
    Ok(())
}

/// Two `web` pods spread over the workers, Ready; returns the worker with
/// the most of them and the other one.
fn web_on_workers(c: &KindCluster, ns: &Namespace) -> anyhow::Result<(String, String)> {
    let workers = c.workers();
    ns.apply(web_deployment(
        &c.busybox(),
        "web",
        2,
        &workers,
        "v1",
        false,
    ))?;
    let pods = ns.wait_ready_pods("web", 2, TIMEOUT)?;
    let busiest = workers
        .iter()
        .max_by_key(|w| pods.iter().filter(|p| node_of(p) == **w).count())
        .cloned()
        .unwrap_or_default();
    let other = workers
        .iter()
        .find(|w| **w != busiest)
        .cloned()
        .unwrap_or_default();
    Ok((busiest, other))
}

/// A worker dies (its whole pid namespace): the Node turns NotReady, the
/// Deployment's pods there are evicted (tolerationSeconds 5) and run on the
/// other worker; the worker boots again and rejoins.
fn worker_stop(c: &mut KindCluster) -> anyhow::Result<()> {
    let ns = Namespace::create(&c.kubectl(), "e2e-failover")?;
    // The worker with the most pods dies.
    let (victim, survivor) = web_on_workers(c, &ns)?;
    c.stop_node(&victim)?;
    let kubectl = c.kubectl();
    let failover = (|| {
        e2e::wait_for(&format!("{victim} to be NotReady"), TIMEOUT, || {
            (node_condition(&kubectl, &victim).as_deref() != Some("True")).then_some(())
        })?;
        ns.wait_pods("web", 2, TIMEOUT, |pods| {
            pods.iter().all(|p| node_of(p) == survivor)
        })
    })();
    // The worker comes back even when the failover failed, for the
    // scenarios after this one.
    c.start_node(&victim)?;
    failover?;
    e2e::wait_for(&format!("{victim} to be Ready again"), TIMEOUT, || {
        (node_condition(&kubectl, &victim).as_deref() == Some("True")).then_some(())
    })?;
    // It runs pods again.
    ns.apply(client_pod(&c.busybox(), "back", &victim))?;
    ns.wait_ready_pods("back", 1, TIMEOUT)?;
    Ok(())
}

/// A worker is drained and deleted: its pods move, the Node is gone, and
/// its processes are stopped.
fn drain_and_delete(c: &mut KindCluster) -> anyhow::Result<()> {
    let ns = Namespace::create(&c.kubectl(), "e2e-drain")?;
    // The worker with the most pods leaves.
    let (leaving, staying) = web_on_workers(c, &ns)?;
    let kubectl = c.kubectl();
    kubectl.ok(
        &[
            "drain",
            &leaving,
            "--ignore-daemonsets",
            "--delete-emptydir-data",
            "--timeout=90s",
        ],
        None,
    )?;
    let node = kubectl.get_json(&["get", "node", &leaving])?;
    anyhow::ensure!(
        node["spec"]["unschedulable"] == true,
        "not cordoned: {}",
        node["spec"]
    );
    ns.wait_pods("web", 2, TIMEOUT, |pods| {
        pods.iter().all(|p| node_of(p) == staying)
    })?;
    kubectl.ok(&["delete", "node", &leaving], None)?;
    c.stop_node(&leaving)?;
    let gone = kubectl.run(&["get", "node", &leaving], None)?;
    anyhow::ensure!(
        !gone.status.success() && String::from_utf8_lossy(&gone.stderr).contains("NotFound"),
        "node {leaving} still exists: {}",
        text(&gone)
    );
    let node = c.node(&leaving)?;
    anyhow::ensure!(node.init_pid().is_none(), "{leaving} still runs");
    anyhow::ensure!(!node.cgroups().exists(), "{leaving} cgroups are left");
    Ok(())
}

#[test]
fn multinode_scenarios() -> anyhow::Result<()> {
    if !e2e::is_root() {
        eprintln!("skipping: this test needs root (CI runs it as root)");
        return Ok(());
    }
    let images = Path::new(env!("CARGO_TARGET_TMPDIR")).join("images");
    let mut suite = Suite::default();
    let mut cluster = None;
    suite.run("cluster up (1 control plane + 2 workers)", || {
        cluster = Some(KindCluster::start(KindConfig {
            workers: 2,
            images,
            ..KindConfig::default()
        })?);
        Ok(())
    });
    if let Some(mut c) = cluster {
        suite.run("1 nodes join, Ready, podCIDRs", || nodes_join(&c));
        suite.run("2 daemonset on every node", || daemonset(&c));
        suite.run("3 job completes on a worker", || job(&c));
        suite.run("4 logs/exec/port-forward on a worker", || {
            logs_exec_port_forward(&c)
        });
        suite.run("8 service across nodes, NodePort", || service_traffic(&c));
        suite.run("9 DNS from every node", || dns(&c));
        suite.run("10 rolling update, no failed request", || {
            rolling_update(&c)
        });
        suite.run("11 hostPort, hairpin, pod egress as its node", || {
            host_port_and_egress(&c)
        });
        suite.run("5 r8s-server restart", || server_restart(&mut c));
        suite.run("6 worker stops, pods move, rejoins", || worker_stop(&mut c));
        suite.run("7 drain + delete node", || drain_and_delete(&mut c));
        if !suite.failed().is_empty() {
            eprintln!("{}", c.logs_tail(40));
        }
        let start = std::time::Instant::now();
        drop(c);
        eprintln!("cluster removed in {:.1} s", start.elapsed().as_secs_f64());
    }
    eprintln!("\n{}", suite.table());
    let failed = suite.failed();
    anyhow::ensure!(failed.is_empty(), "failed scenarios: {failed:?}");
    Ok(())
}
