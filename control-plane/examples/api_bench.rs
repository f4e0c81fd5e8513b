//! Object creates per second through the HTTP API: N ConfigMaps created by C
//! concurrent kube-rs clients against a running server (hack/bench runs it).
//!
//! usage: api_bench KUBECONFIG N CONCURRENCY [NAMESPACE]

use std::time::{Duration, Instant};

use anyhow::Context;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ObjectMeta, PostParams};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (kubeconfig, total, concurrency) = match args.as_slice() {
        [_, k, n, c, ..] => (k.clone(), n.parse::<usize>()?, c.parse::<usize>()?),
        _ => anyhow::bail!("usage: api_bench KUBECONFIG N CONCURRENCY [NAMESPACE]"),
    };
    let namespace = args
        .get(4)
        .cloned()
        .unwrap_or_else(|| "default".to_string());
    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(&kubeconfig).context("reading the kubeconfig")?,
        &kube::config::KubeConfigOptions::default(),
    )
    .await?;
    let client = kube::Client::try_from(config)?;
    let api: Api<ConfigMap> = Api::namespaced(client, &namespace);
    let run = format!("bench-{}", std::process::id());

    let started = Instant::now();
    let mut workers = Vec::new();
    for worker in 0..concurrency {
        let api = api.clone();
        let run = run.clone();
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut i = worker;
            while i < total {
                let cm = ConfigMap {
                    metadata: ObjectMeta {
                        name: Some(format!("{run}-{i}")),
                        ..Default::default()
                    },
                    data: Some([("key".to_string(), "value".repeat(16))].into()),
                    ..Default::default()
                };
                let t = Instant::now();
                api.create(&PostParams::default(), &cm).await?;
                latencies.push(t.elapsed());
                i += concurrency;
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut latencies: Vec<Duration> = Vec::with_capacity(total);
    for w in workers {
        latencies.extend(w.await??);
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 - 1.0) * p) as usize];
    println!(
        "r8s-server creates: n={} concurrency={} rate={:.0}/s p50={:.2}ms p99={:.2}ms",
        latencies.len(),
        concurrency,
        latencies.len() as f64 / elapsed.as_secs_f64(),
        pct(0.50).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
    );
    Ok(())
}
