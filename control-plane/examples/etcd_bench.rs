//! The peer figure for api_bench: N raw puts to a local etcd by C concurrent
//! clients (hack/bench starts Debian's etcd on loopback and runs it).
//!
//! usage: etcd_bench ENDPOINT N CONCURRENCY

use std::time::{Duration, Instant};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (endpoint, total, concurrency) = match args.as_slice() {
        [_, e, n, c, ..] => (e.clone(), n.parse::<usize>()?, c.parse::<usize>()?),
        _ => anyhow::bail!("usage: etcd_bench ENDPOINT N CONCURRENCY"),
    };
    let value = "v".repeat(300);
    let started = Instant::now();
    let mut workers = Vec::new();
    for worker in 0..concurrency {
        let endpoint = endpoint.clone();
        let value = value.clone();
        workers.push(tokio::spawn(async move {
            let mut client = etcd_client::Client::connect([endpoint], None).await?;
            let mut latencies = Vec::new();
            let mut i = worker;
            while i < total {
                let t = Instant::now();
                client
                    .put(
                        format!("/registry/configmaps/default/bench-{i}"),
                        value.as_str(),
                        None,
                    )
                    .await?;
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
        "etcd puts: n={} concurrency={} rate={:.0}/s p50={:.2}ms p99={:.2}ms",
        latencies.len(),
        concurrency,
        latencies.len() as f64 / elapsed.as_secs_f64(),
        pct(0.50).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
    );
    Ok(())
}
