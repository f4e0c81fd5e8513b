//! Service proxy benchmark: full sync of N Services x 10 endpoints and one Service's endpoints
//! changed, through the proxier's own path (reflector stores, change tracker, `Syncer`, libnftables
//! in-process), side by side with `nft -f` (the Debian CLI) loading the same script, in a network
//! namespace this program creates and removes. Needs root. Each sync prints where its time went.
//! Prints wall and CPU time (user + system, the kernel's work included): on a loaded machine
//! the CPU time is the steadier figure.
//!
//! `cargo run --release -p netproxy --example nft_bench -- 1000 10000`
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::runtime::reflector;
use kube::runtime::watcher::Event;
use netproxy::changes::ChangeTracker;
use netproxy::dns::DnsIndex;
use netproxy::metrics::Metrics;
use netproxy::nft::{Applier, LibNftables};
use netproxy::proxier::{SyncStats, Syncer};
use netproxy::rules::{RulesConfig, Ruleset};

const ENDPOINTS: u32 = 10;

fn service(i: u32) -> Service {
    let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 43, 0, 0)) + 100 + i);
    Service {
        metadata: ObjectMeta {
            namespace: Some("bench".into()),
            name: Some(format!("svc-{i}")),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            cluster_ip: Some(ip.to_string()),
            type_: Some("ClusterIP".into()),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: 80,
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        status: None,
    }
}

fn slice(i: u32, generation: u32) -> EndpointSlice {
    let base = u32::from(Ipv4Addr::new(10, 42, 0, 0)) + i * ENDPOINTS + generation * 1_000_000;
    EndpointSlice {
        metadata: ObjectMeta {
            namespace: Some("bench".into()),
            name: Some(format!("svc-{i}-x")),
            labels: Some(BTreeMap::from([(
                "kubernetes.io/service-name".to_string(),
                format!("svc-{i}"),
            )])),
            ..Default::default()
        },
        address_type: "IPv4".into(),
        endpoints: (0..ENDPOINTS)
            .map(|e| Endpoint {
                addresses: vec![Ipv4Addr::from(base + e).to_string()],
                conditions: Some(EndpointConditions {
                    ready: Some(true),
                    serving: Some(true),
                    terminating: Some(false),
                }),
                node_name: Some("bench-node".into()),
                ..Default::default()
            })
            .collect(),
        ports: Some(vec![EndpointPort {
            name: Some("http".into()),
            port: Some(8080),
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
    }
}

fn nft_cli(netns: &str, file: &Path) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let out = Command::new("ip")
        .args(["netns", "exec", netns, "nft", "-f"])
        .arg(file)
        .output()
        .context("failed to run nft")?;
    let elapsed = start.elapsed();
    if !out.status.success() {
        bail!("nft failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(elapsed)
}

/// User + system CPU time of this process and of its waited-for children (`nft`), from
/// `/proc/self/stat` (clock ticks, assumed 100 per second as on every Linux the project runs on).
fn cpu() -> Duration {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return Duration::ZERO;
    };
    // Fields after the command name (which may hold spaces): state is field 3; utime, stime,
    // cutime, cstime are fields 14-17.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let ticks: u64 = rest
        .split_whitespace()
        .skip(11)
        .take(4)
        .filter_map(|f| f.parse::<u64>().ok())
        .sum();
    Duration::from_millis(ticks * 10)
}

/// Wall and CPU time of `f`.
fn timed<T>(f: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<(T, Duration, Duration)> {
    let (wall, cpu0) = (Instant::now(), cpu());
    let out = f()?;
    Ok((out, wall.elapsed(), cpu().saturating_sub(cpu0)))
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn stats(s: &SyncStats) -> String {
    format!(
        "model {} ({} Services), rules build {}, render {} ({} commands), apply {}",
        ms(s.model),
        s.recomputed,
        ms(s.build),
        ms(s.render),
        s.commands,
        ms(s.apply)
    )
}

fn bench(
    rt: &tokio::runtime::Runtime,
    netns: &str,
    nft: &Arc<LibNftables>,
    n: u32,
    dir: &Path,
) -> anyhow::Result<()> {
    let config = RulesConfig {
        node_name: "bench-node".into(),
        cluster_cidr: Some("10.42.0.0/16".parse()?),
        ..Default::default()
    };
    println!(
        "{n} services x {ENDPOINTS} endpoints (load average {})",
        load()
    );
    // The proxier's path: reflector stores, the change tracker fed with the same watch events,
    // and the syncer's incremental entry point.
    let (svc_store, mut svc_writer) = reflector::store::<Service>();
    let (eps_store, mut eps_writer) = reflector::store::<EndpointSlice>();
    let tracker = ChangeTracker::new();
    for i in 0..n {
        let ev = Event::Apply(service(i));
        svc_writer.apply_watcher_event(&ev);
        tracker.service_event(&ev);
        let ev = Event::Apply(slice(i, 0));
        eps_writer.apply_watcher_event(&ev);
        tracker.slice_event(&ev);
    }
    let applier: Arc<dyn Applier> = nft.clone();
    let mut syncer = Syncer::new(config.clone(), applier, Arc::new(Metrics::new()));
    let mut sync = |force_full: bool| {
        timed(
            || Ok(rt.block_on(syncer.sync_changes(&tracker, &svc_store, &eps_store, force_full))?),
        )
    };

    // Full sync into an empty namespace.
    let (s, wall, cpu_time) = sync(false)?;
    println!(
        "  full sync (empty table): {} wall, {} CPU; {}",
        ms(wall),
        ms(cpu_time),
        stats(&s)
    );

    // One Service's endpoints all replaced, five times (a rollout): the watch event goes to the
    // store and the tracker, then the proxier's incremental sync.
    let mut one = Vec::new();
    for round in 0..5u32 {
        let i = round * 7 % n;
        let ev = Event::Apply(slice(i, round + 1));
        eps_writer.apply_watcher_event(&ev);
        tracker.slice_event(&ev);
        let (s, wall, cpu_time) = sync(false)?;
        one.push((wall, cpu_time, s));
    }
    one.sort_by_key(|o| o.0);
    let (wall, _, s) = one[one.len() / 2];
    let cpu_total: Duration = one.iter().map(|o| o.1).sum();
    println!(
        "  one Service changed (median of 5): {} wall, {} CPU on average; {}",
        ms(wall),
        ms(cpu_total / 5),
        stats(&s)
    );

    // Periodic full resync over the existing table.
    let (s, wall, cpu_time) = sync(true)?;
    println!(
        "  full resync (table exists): {} wall, {} CPU; {}",
        ms(wall),
        ms(cpu_time),
        stats(&s)
    );
    let Some(last) = syncer.last() else {
        bail!("no ruleset after a successful sync");
    };
    println!(
        "  {} rules, {} chains",
        last.rule_count(),
        last.chain_count()
    );
    let full = dir.join(format!("full-{n}.nft"));
    std::fs::write(&full, last.full_transaction().to_text())?;

    // The cluster DNS index, rebuilt from every Service on each sync when DNS is on.
    let (_, wall, _) = timed(|| {
        let (svcs, slices) = (svc_store.state(), eps_store.state());
        Ok(DnsIndex::build(
            "cluster.local",
            svcs.iter().map(|s| s.as_ref()),
            slices.iter().map(|s| s.as_ref()),
        ))
    })?;
    println!("  dns index rebuild: {}", ms(wall));

    // The same script through the Debian CLI (a process per run, same text).
    let (_, wall, cpu_time) = timed(|| nft_cli(netns, &full))?;
    println!(
        "  nft -f, full script (table exists): {} wall, {} CPU",
        ms(wall),
        ms(cpu_time)
    );
    nft.apply(&Ruleset::delete_table_transaction(&config.table))?;
    let (_, wall, cpu_time) = timed(|| nft_cli(netns, &full))?;
    println!(
        "  nft -f, full script (empty table): {} wall, {} CPU",
        ms(wall),
        ms(cpu_time)
    );
    nft.apply(&Ruleset::delete_table_transaction(&config.table))?;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("nft_bench needs root (it creates a network namespace)");
    }
    let counts: Vec<u32> = std::env::args()
        .skip(1)
        .map(|a| a.parse().context("count must be a number"))
        .collect::<anyhow::Result<_>>()?;
    let counts = if counts.is_empty() {
        vec![1000, 10000]
    } else {
        counts
    };
    let netns = format!("r8s-bench-{:08x}", rand::random::<u32>());
    let status = Command::new("ip").args(["netns", "add", &netns]).status()?;
    if !status.success() {
        bail!("ip netns add {netns} failed");
    }
    let _netns = scopeguard::guard(netns.clone(), |ns| {
        let _ = Command::new("ip").args(["netns", "delete", &ns]).status();
    });
    let dir = std::env::temp_dir().join(&netns);
    std::fs::create_dir_all(&dir)?;
    let _dir = scopeguard::guard(dir.clone(), |d: PathBuf| {
        let _ = std::fs::remove_dir_all(d);
    });
    let nft = Arc::new(LibNftables::in_netns(&PathBuf::from(format!(
        "/run/netns/{netns}"
    )))?);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    for n in counts {
        bench(&rt, &netns, &nft, n, &dir)?;
    }
    Ok(())
}
