//! The load harness the benchmark examples share: N operations spread over C
//! concurrent workers, then the rate and latency percentiles.

use std::future::Future;
use std::time::{Duration, Instant};

/// Latencies and wall time of one load run.
pub struct LoadResult {
    latencies: Vec<Duration>,
    elapsed: Duration,
}

impl LoadResult {
    /// `n=.. concurrency=.. rate=../s p50=..ms p99=..ms`
    pub fn summary(&self, concurrency: usize) -> String {
        let n = self.latencies.len();
        let pct = |p: f64| {
            let i = ((n as f64 - 1.0) * p).round() as usize;
            self.latencies.get(i).map_or(0.0, |d| d.as_secs_f64() * 1e3)
        };
        format!(
            "n={n} concurrency={concurrency} rate={:.0}/s p50={:.2}ms p99={:.2}ms",
            n as f64 / self.elapsed.as_secs_f64(),
            pct(0.50),
            pct(0.99),
        )
    }
}

/// Runs `op(i)` for every i in 0..total, with `concurrency` operations in
/// flight (worker w takes w, w+C, w+2C...), timing each one.
pub async fn run_load<F, Fut>(total: usize, concurrency: usize, op: F) -> anyhow::Result<LoadResult>
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send,
{
    let started = Instant::now();
    let mut workers = Vec::new();
    for worker in 0..concurrency {
        let op = op.clone();
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            for i in (worker..total).step_by(concurrency) {
                let t = Instant::now();
                op(i).await?;
                latencies.push(t.elapsed());
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut latencies = Vec::with_capacity(total);
    for w in workers {
        latencies.extend(w.await??);
    }
    let elapsed = started.elapsed();
    latencies.sort();
    Ok(LoadResult { latencies, elapsed })
}
