//! Latency figures, not a test: `cargo test -p cri --test bench -- --ignored --nocapture`
//! prints p50/p90 of RunPodSandbox+CreateContainer+StartContainer and of the
//! full cycle (plus stop and remove), comparable to KNOWN.md's containerd figures.
mod common;

use std::time::{Duration, Instant};

use cri::proto;

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark: run explicitly with --ignored"]
async fn pod_start_latency() {
    require_root!();
    let env = common::Runtime::start().await;
    let image = env.pull_busybox().await;
    let mut rt = env.runtime().await;
    let mut start = Vec::new();
    let mut cycle = Vec::new();
    for i in 0..20 {
        let t0 = Instant::now();
        let (pod, sandbox_config) = env.run_pod(&format!("bench-{i}")).await;
        env.create_and_start(
            &pod,
            &sandbox_config,
            env.container_config("c", &image, &["sleep", "1000"]),
        )
        .await;
        start.push(t0.elapsed());
        rt.stop_pod_sandbox(proto::StopPodSandboxRequest {
            pod_sandbox_id: pod.clone(),
        })
        .await
        .unwrap();
        rt.remove_pod_sandbox(proto::RemovePodSandboxRequest {
            pod_sandbox_id: pod,
        })
        .await
        .unwrap();
        cycle.push(t0.elapsed());
    }
    start.sort();
    cycle.sort();
    println!(
        "runp+create+start: p50 {:?} p90 {:?}; full cycle: p50 {:?} p90 {:?}",
        percentile(&start, 50),
        percentile(&start, 90),
        percentile(&cycle, 50),
        percentile(&cycle, 90)
    );
}
