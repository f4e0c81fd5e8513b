//! Embedded store write benchmark: creates/s and p50/p99 latency with 1 and 8
//! concurrent writers.
//!
//! `cargo run --release -p control-plane --example store_bench -- [N] [VALUE_BYTES]`
//! (N writes per run, default 5000; values default to 1024 bytes). The store
//! lives in a temp dir under `$R8S_BENCH_DIR` (default: the system temp dir).
//! Prints one `store_bench ...` result line per writer count.

use std::sync::Arc;
use std::time::{Duration, Instant};

use control_plane::storage::{EmbeddedStore, Store};

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args
        .next()
        .map_or(5000, |a| a.parse().expect("N: number of writes"));
    let value_bytes: usize = args
        .next()
        .map_or(1024, |a| a.parse().expect("VALUE_BYTES"));
    let base = std::env::var_os("R8S_BENCH_DIR").map_or_else(std::env::temp_dir, Into::into);
    for writers in [1usize, 8] {
        let dir = tempfile::tempdir_in(&base).expect("temp dir");
        let store = Arc::new(EmbeddedStore::open(dir.path()).expect("open store"));
        let value = vec![b'x'; value_bytes];
        let per_writer = n.div_ceil(writers);
        let started = Instant::now();
        let mut tasks = Vec::new();
        for w in 0..writers {
            let store = store.clone();
            let value = value.clone();
            tasks.push(tokio::spawn(async move {
                let mut lat = Vec::with_capacity(per_writer);
                for i in 0..per_writer {
                    let t = Instant::now();
                    store
                        .create(&format!("/registry/bench/w{w}/k{i:08}"), value.clone())
                        .await
                        .expect("create");
                    lat.push(t.elapsed());
                }
                lat
            }));
        }
        let mut lat: Vec<Duration> = Vec::new();
        for t in tasks {
            lat.extend(t.await.expect("writer"));
        }
        let elapsed = started.elapsed();
        lat.sort();
        let pct =
            |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)].as_secs_f64() * 1e3;
        println!(
            "store_bench backend=embedded writers={writers} n={} value_bytes={value_bytes} puts_per_sec={:.0} p50_ms={:.3} p99_ms={:.3} elapsed_s={:.2}",
            lat.len(),
            lat.len() as f64 / elapsed.as_secs_f64(),
            pct(0.50),
            pct(0.99),
            elapsed.as_secs_f64(),
        );
        drop(store);
    }
}
