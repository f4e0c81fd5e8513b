//! Embedded store write benchmark: creates/s and p50/p99 latency with 1 and 8
//! concurrent writers.
//!
//! `cargo run --release -p control-plane --example store_bench -- [N] [VALUE_BYTES]`
//! (N writes per run, default 5000; values default to 1024 bytes). The store
//! lives in a temp dir under `$R8S_BENCH_DIR` (default: the system temp dir).
//! Prints one `store_bench ...` result line per writer count.

mod harness;

use std::sync::Arc;

use anyhow::Context;
use control_plane::storage::{EmbeddedStore, Store};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let n: usize = args
        .next()
        .map_or(Ok(5000), |a| a.parse())
        .context("N: number of writes")?;
    let value_bytes: usize = args
        .next()
        .map_or(Ok(1024), |a| a.parse())
        .context("VALUE_BYTES")?;
    let base = std::env::var_os("R8S_BENCH_DIR").map_or_else(std::env::temp_dir, Into::into);
    for writers in [1usize, 8] {
        let dir = tempfile::tempdir_in(&base).context("temp dir")?;
        let store = Arc::new(EmbeddedStore::open(dir.path()).context("open store")?);
        let value = vec![b'x'; value_bytes];
        let result = harness::run_load(n, writers, {
            let store = store.clone();
            move |i| {
                let store = store.clone();
                let value = value.clone();
                async move {
                    store
                        .create(&format!("/registry/bench/k{i:08}"), value)
                        .await?;
                    Ok(())
                }
            }
        })
        .await?;
        println!(
            "store_bench backend=embedded value_bytes={value_bytes} {}",
            result.summary(writers)
        );
        drop(store);
    }
    Ok(())
}
