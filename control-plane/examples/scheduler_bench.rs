//! Scheduler throughput: pods bound per second with NODES simulated nodes
//! and PODS pending pods, against a running r8s-server started with
//! `--disable-agent` (hack/bench runs it). The nodes are created cordoned,
//! the pods then wait unschedulable; uncordoning every node releases them
//! all at once and the rate is measured from the first to the last binding
//! seen on a watch. With SERVER_PID, the server's RSS is printed once
//! every pod is bound. Everything created is deleted at the end.
//!
//! usage: scheduler_bench KUBECONFIG [NODES=1000] [PODS=10000] [CONCURRENCY=64] [SERVER_PID]

mod harness;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use serde_json::json;

#[derive(Default)]
struct Bound {
    names: HashSet<String>,
    first: Option<Instant>,
    last: Option<Instant>,
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
                    "spec": {"unschedulable": true},
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
    println!("nodes created (cordoned): {}", created.summary(concurrency));

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

    let bound = Arc::new(Mutex::new(Bound::default()));
    let watch = tokio::spawn({
        let bound = bound.clone();
        let stream = watcher::watcher(pod_api.clone(), watcher::Config::default());
        async move {
            let mut stream = stream.boxed();
            while let Some(event) = stream.next().await {
                let Ok(event) = event else { continue };
                let objects: Vec<Pod> = match event {
                    watcher::Event::Apply(p) | watcher::Event::InitApply(p) => vec![p],
                    _ => Vec::new(),
                };
                let now = Instant::now();
                let mut b = bound.lock().unwrap_or_else(|e| e.into_inner());
                for p in objects {
                    let assigned = p
                        .spec
                        .as_ref()
                        .and_then(|s| s.node_name.as_ref())
                        .is_some_and(|n| !n.is_empty());
                    if assigned && b.names.insert(p.metadata.name.clone().unwrap_or_default()) {
                        b.first.get_or_insert(now);
                        b.last = Some(now);
                    }
                }
            }
        }
    });

    let released = Instant::now();
    let uncordoned = harness::run_load(nodes, concurrency, {
        let node_api = node_api.clone();
        let node_name = node_name.clone();
        move |i| {
            let api = node_api.clone();
            let name = node_name(i);
            async move {
                api.patch(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(&json!({"spec": {"unschedulable": false}})),
                )
                .await?;
                Ok(())
            }
        }
    })
    .await?;
    println!("nodes uncordoned: {}", uncordoned.summary(concurrency));

    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let n = bound.lock().unwrap_or_else(|e| e.into_inner()).names.len();
        if n >= pods || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    watch.abort();
    {
        let b = bound.lock().unwrap_or_else(|e| e.into_inner());
        let n = b.names.len();
        if let (Some(first), Some(last)) = (b.first, b.last) {
            let window = last.duration_since(first).as_secs_f64().max(1e-3);
            println!(
                "scheduler: bound {n}/{pods} pods on {nodes} nodes; {:.0} pods/s from first to last binding ({window:.2}s), {:.2}s after uncordon started",
                n as f64 / window,
                last.duration_since(released).as_secs_f64(),
            );
        } else {
            println!("scheduler: no pod was bound");
        }
    }
    if let Some(pid) = server_pid {
        println!(
            "r8s-server RSS with {nodes} nodes and {pods} pods: {:.1} MB",
            rss_kib(pid)? as f64 / 1024.0
        );
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
