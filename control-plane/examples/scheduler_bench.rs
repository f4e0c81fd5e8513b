//! Scheduler throughput: pods bound per second with NODES simulated nodes
//! and PODS pending pods, against a running r8s-server started with
//! `--disable-agent` (hack/bench runs it). The bench first takes the
//! scheduler's lease (kube-system/kube-scheduler) from the server, as a
//! standby kube-scheduler would, so the pods it then creates stay pending
//! untouched; releasing the lease lets the server's scheduler take over a
//! backlog of PODS pods at once, and the rate is measured from the first to
//! the last binding seen on a watch; then how long the scheduler's
//! Scheduled events (written behind the bindings) took to catch up. With
//! SERVER_PID, the server's RSS is printed once every pod is bound and once
//! the events caught up. Everything created is deleted at the end, unless
//! R8S_BENCH_KEEP is set (to look at the loaded cluster afterwards).
//!
//! usage: scheduler_bench KUBECONFIG [NODES=1000] [PODS=10000] [CONCURRENCY=64] [SERVER_PID]

mod harness;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use control_plane::controllers::leader::{LEASE_NAMESPACE, SCHEDULER_LEASE};
use futures::TryStreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::Api;
use kube::api::WatchParams;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::core::WatchEvent;
use serde::Deserialize;
use serde_json::json;

/// What the bench's pod watch has seen.
#[derive(Default)]
struct Seen {
    /// Pods with a node.
    bound: HashSet<String>,
    /// When each binding was seen, in order.
    times: Vec<Instant>,
}

impl Seen {
    fn record(&mut self, pod: Placed, now: Instant) {
        let assigned = pod.spec.node_name.is_some_and(|n| !n.is_empty());
        if assigned && self.bound.insert(pod.metadata.name) {
            self.times.push(now);
        }
    }
}

/// The part of a pod the bench reads: decoding whole pods cost the bench
/// a third of a core at 2,000 bindings/s, on the cores the server runs on.
#[derive(Clone, Deserialize)]
struct Placed {
    metadata: PlacedMeta,
    #[serde(default)]
    spec: PlacedSpec,
}

#[derive(Clone, Deserialize)]
struct PlacedMeta {
    name: String,
}

#[derive(Clone, Default, Deserialize)]
struct PlacedSpec {
    #[serde(rename = "nodeName")]
    node_name: Option<String>,
}

/// Follows the pods of namespace `ns`, recording each binding once.
async fn watch_placements(client: kube::Client, ns: String, seen: Arc<Mutex<Seen>>) {
    loop {
        let request = kube::core::Request::new(format!("/api/v1/namespaces/{ns}/pods"))
            .watch(&WatchParams::default().timeout(290), "0");
        let events = match request {
            Ok(r) => client.request_events::<Placed>(r).await,
            Err(e) => {
                eprintln!("bench watch: {e}");
                return;
            }
        };
        let Ok(events) = events else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let mut events = std::pin::pin!(events);
        while let Ok(Some(event)) = events.try_next().await {
            if let WatchEvent::Added(p) | WatchEvent::Modified(p) = event {
                seen.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .record(p, Instant::now());
            }
        }
    }
}

/// Waits until `done` holds for what the watch has seen, or `timeout`.
async fn wait_for(seen: &Mutex<Seen>, timeout: Duration, done: impl Fn(&Seen) -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if done(&seen.lock().unwrap_or_else(|e| e.into_inner())) {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let Some(kubeconfig) = args.get(1) else {
        anyhow::bail!(
            "usage: scheduler_bench KUBECONFIG [NODES] [PODS] [CONCURRENCY] [SERVER_PID]"
        );
    };
    let arg = |i: usize, default: usize| -> anyhow::Result<usize> {
        args.get(i)
            .map_or(Ok(default), |s| s.parse().context("a number"))
    };
    let (nodes, pods, concurrency) = (arg(2, 1000)?, arg(3, 10_000)?, arg(4, 64)?);
    let server_pid = args.get(5).map(|s| s.parse::<u32>()).transpose()?;
    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(kubeconfig).context("reading the kubeconfig")?,
        &kube::config::KubeConfigOptions::default(),
    )
    .await?;
    let client = kube::Client::try_from(config)?;
    let run = format!("sched-bench-{}", std::process::id());
    let ns_api: Api<Namespace> = Api::all(client.clone());
    ns_api
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": run}}))?,
        )
        .await?;
    let node_api: Api<Node> = Api::all(client.clone());
    let pod_api: Api<Pod> = Api::namespaced(client.clone(), &run);

    let node_name = {
        let run = run.clone();
        move |i: usize| format!("{run}-node-{i}")
    };
    let created = harness::run_load(nodes, concurrency, {
        let node_api = node_api.clone();
        let node_name = node_name.clone();
        move |i| {
            let api = node_api.clone();
            let name = node_name(i);
            async move {
                let node: Node = serde_json::from_value(json!({
                    "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
                }))?;
                api.create(&PostParams::default(), &node).await?;
                let status = json!({"status": {
                    "allocatable": {"cpu": "32", "memory": "128Gi", "pods": "110"},
                    "capacity": {"cpu": "32", "memory": "128Gi", "pods": "110"},
                    "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}]
                }});
                api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
                    .await?;
                Ok(())
            }
        }
    })
    .await?;
    println!("nodes created: {}", created.summary(concurrency));
    // A joining node gets its pod CIDR from the node IPAM controller; the
    // bench measures the scheduler once the cluster has settled, as a
    // kubelet reports Ready only once its node has a range.
    let settled = Instant::now();
    wait_for_pod_cidrs(&node_api, &run, nodes).await?;
    println!(
        "node IPAM: every node had its pod CIDR {:.2}s after the last node was created",
        settled.elapsed().as_secs_f64()
    );

    let lease_api: Api<Lease> = Api::namespaced(client.clone(), LEASE_NAMESPACE);
    hold_scheduler_lease(&lease_api, &run).await?;

    let seen = Arc::new(Mutex::new(Seen::default()));
    let watch = tokio::spawn(watch_placements(client.clone(), run.clone(), seen.clone()));

    let created = harness::run_load(pods, concurrency, {
        let pod_api = pod_api.clone();
        move |i| {
            let api = pod_api.clone();
            async move {
                let pod: Pod = serde_json::from_value(json!({
                    "metadata": {"name": format!("pod-{i}")},
                    "spec": {
                        "containers": [{"name": "c", "image": "busybox",
                            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}}]
                    }
                }))?;
                api.create(&PostParams::default(), &pod).await?;
                Ok(())
            }
        }
    })
    .await?;
    println!("pods created (pending): {}", created.summary(concurrency));
    let early = seen.lock().unwrap_or_else(|e| e.into_inner()).bound.len();
    if early > 0 {
        anyhow::bail!("{early} pods were bound while the bench held the scheduler's lease");
    }
    let events_before = events_created(&client).await?;
    let released = Instant::now();
    release_scheduler_lease(&lease_api).await?;
    wait_for(&seen, Duration::from_secs(600), |s| s.bound.len() >= pods).await;
    watch.abort();
    if let Some(pid) = server_pid {
        println!(
            "r8s-server RSS with {nodes} nodes and {pods} pods bound: {:.1} MB",
            rss_kib(pid)? as f64 / 1024.0
        );
    }
    {
        let s = seen.lock().unwrap_or_else(|e| e.into_inner());
        let n = s.bound.len();
        if let (Some(first), Some(last)) = (s.times.first(), s.times.last()) {
            let window = last.duration_since(*first).as_secs_f64().max(1e-3);
            // The middle 80 %: the rate once the new leader's caches are
            // synced and before the last stragglers.
            let (p10, p90) = (s.times[n / 10], s.times[n * 9 / 10]);
            let middle = p90.duration_since(p10).as_secs_f64().max(1e-3);
            println!(
                "scheduler: bound {n}/{pods} pods on {nodes} nodes; {:.0} pods/s from first to last binding ({window:.2}s), {:.0} pods/s over the middle 80 %, {:.2}s after the lease was released",
                n as f64 / window,
                (n * 9 / 10 - n / 10) as f64 / middle,
                last.duration_since(released).as_secs_f64(),
            );
        } else {
            println!("scheduler: no pod was bound");
        }
    }
    // The scheduler writes its Scheduled events asynchronously, behind the
    // bindings (a bounded queue, dropping when full as client-go's
    // broadcaster does): report when they caught up, and how many there are.
    let (written, caught_up) = events_settled(&client, events_before, pods).await?;
    if let Some(first) = seen.lock().unwrap_or_else(|e| e.into_inner()).times.first() {
        let span = caught_up
            .saturating_duration_since(*first)
            .as_secs_f64()
            .max(1e-3);
        println!(
            "events: {written}/{pods} Scheduled events written, the last {span:.2}s after the first binding ({:.0} pods bound and recorded/s)",
            written.min(pods as u64) as f64 / span,
        );
    }
    if let Some(pid) = server_pid {
        println!(
            "r8s-server RSS with {nodes} nodes and {pods} pods: {:.1} MB",
            rss_kib(pid)? as f64 / 1024.0
        );
    }

    if std::env::var_os("R8S_BENCH_KEEP").is_some() {
        return Ok(());
    }
    ns_api.delete(&run, &DeleteParams::default()).await?;
    harness::run_load(nodes, concurrency, move |i| {
        let api = node_api.clone();
        let name = node_name(i);
        async move {
            api.delete(&name, &DeleteParams::default()).await?;
            Ok(())
        }
    })
    .await?;
    Ok(())
}

/// Waits until the `count` nodes of this run all have `spec.podCIDR`.
async fn wait_for_pod_cidrs(api: &Api<Node>, run: &str, count: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let with_cidr = api
            .list(&Default::default())
            .await?
            .items
            .iter()
            .filter(|n| {
                n.metadata
                    .name
                    .as_deref()
                    .is_some_and(|m| m.starts_with(run))
            })
            .filter(|n| n.spec.as_ref().is_some_and(|s| s.pod_cidr.is_some()))
            .count();
        if with_cidr >= count {
            return Ok(());
        }
        if Instant::now() > deadline {
            anyhow::bail!("only {with_cidr} of {count} nodes got a pod CIDR in 300 s");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Events the server has created so far (its `apiserver_request_total`).
async fn events_created(client: &kube::Client) -> anyhow::Result<u64> {
    const SERIES: &str = r#"apiserver_request_total{verb="POST",resource="events",code="201"} "#;
    let request = http::Request::get("/metrics").body(Vec::new())?;
    let metrics = client.request_text(request).await?;
    Ok(metrics
        .lines()
        .find_map(|l| l.strip_prefix(SERIES))
        .map(|v| v.trim().parse::<f64>().map(|v| v as u64))
        .transpose()?
        .unwrap_or(0))
}

/// Waits until `expected` events were created after `before`, or none for
/// 2 s: how many were, and when the count last grew.
async fn events_settled(
    client: &kube::Client,
    before: u64,
    expected: usize,
) -> anyhow::Result<(u64, Instant)> {
    let mut last = (events_created(client).await? - before, Instant::now());
    while last.0 < expected as u64 && last.1.elapsed() < Duration::from_secs(2) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = events_created(client).await? - before;
        if now != last.0 {
            last = (now, Instant::now());
        }
    }
    Ok(last)
}

/// How long the server's scheduler may take to see that another holder has
/// the lease and stop: its retry period (2 s), with a margin.
const LEADER_HANDOVER: Duration = Duration::from_secs(4);

/// Takes the scheduler's lease for an hour as `holder`, retrying while the
/// server renews it concurrently, then waits for the server to stand down.
async fn hold_scheduler_lease(api: &Api<Lease>, holder: &str) -> anyhow::Result<()> {
    for _ in 0..50 {
        let mut lease = api.get(SCHEDULER_LEASE).await?;
        let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
        let spec = lease.spec.get_or_insert_with(Default::default);
        spec.holder_identity = Some(holder.into());
        spec.lease_duration_seconds = Some(3600);
        spec.acquire_time = Some(now.clone());
        spec.renew_time = Some(now);
        match api
            .replace(SCHEDULER_LEASE, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => {
                tokio::time::sleep(LEADER_HANDOVER).await;
                return Ok(());
            }
            Err(kube::Error::Api(s)) if s.code == 409 => continue,
            Err(e) => return Err(e.into()),
        }
    }
    anyhow::bail!("could not take the scheduler's lease")
}

/// Gives the lease up as client-go's ReleaseOnCancel does: no holder, so
/// the server's next retry takes it.
async fn release_scheduler_lease(api: &Api<Lease>) -> anyhow::Result<()> {
    let mut lease = api.get(SCHEDULER_LEASE).await?;
    let spec = lease.spec.get_or_insert_with(Default::default);
    spec.holder_identity = None;
    spec.lease_duration_seconds = Some(1);
    api.replace(SCHEDULER_LEASE, &PostParams::default(), &lease)
        .await?;
    Ok(())
}

/// VmRSS of a process, from /proc.
fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading the status of process {pid}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS in /proc/PID/status")
}
