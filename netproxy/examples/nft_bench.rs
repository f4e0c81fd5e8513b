//! Service proxy benchmark: full sync of N Services x 10 endpoints and one Service's endpoints
//! changed, through libnftables in-process, side by side with `nft -f` (the Debian CLI) loading
//! the same script, in a network namespace this program creates and removes. Needs root.
//! Prints wall and CPU time (user + system, the kernel's work included): on a loaded machine
//! the CPU time is the steadier figure.
//!
//! `cargo run --release -p netproxy --example nft_bench -- 1000 10000`
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use netproxy::model::service_ports;
use netproxy::nft::{Applier, LibNftables};
use netproxy::rules::{Leftovers, RulesConfig, Ruleset, build, build_reusing};

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

fn ruleset(config: &RulesConfig, svcs: &[Service], slices: &[EndpointSlice]) -> Ruleset {
    build(config, &service_ports(svcs, slices))
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

fn bench(netns: &str, nft: &LibNftables, n: u32, dir: &Path) -> anyhow::Result<()> {
    let config = RulesConfig {
        node_name: "bench-node".into(),
        cluster_cidr: Some("10.42.0.0/16".parse()?),
        ..Default::default()
    };
    let svcs: Vec<Service> = (0..n).map(service).collect();
    let mut slices: Vec<EndpointSlice> = (0..n).map(|i| slice(i, 0)).collect();
    println!(
        "{n} services x {ENDPOINTS} endpoints (load average {})",
        load()
    );

    // Full sync into an empty namespace: build, render, apply.
    let ((full, built), wall, cpu_time) = timed(|| {
        let start = Instant::now();
        let full = ruleset(&config, &svcs, &slices);
        let tx = full.full_transaction();
        let text = tx.to_text();
        let built = start.elapsed();
        std::fs::write(dir.join(format!("full-{n}.nft")), &text)?;
        nft.apply(&tx)?;
        Ok((full, built))
    })?;
    println!(
        "  {} rules, {} chains",
        full.rule_count(),
        full.chain_count()
    );
    println!(
        "  full sync (empty table): {} wall, {} CPU (of it build + render {})",
        ms(wall),
        ms(cpu_time),
        ms(built)
    );

    // One Service's endpoints all replaced, five times: the proxier's incremental path (model of
    // every Service, rules rebuilt for the changed one, stale chains flushed and left over).
    let mut model = service_ports(&svcs, &slices);
    let mut last = full;
    let mut leftovers = Leftovers::default();
    let mut one = Vec::new();
    for round in 0..5u32 {
        let i = round * 7 % n;
        slices[i as usize] = slice(i, round + 1);
        let ((next, next_model, commands), wall, cpu_time) = timed(|| {
            let next_model = service_ports(&svcs, &slices);
            let next = build_reusing(&config, &next_model, &model, &last);
            let tx = next.incremental_transaction(&last, &mut leftovers);
            if round == 0 {
                std::fs::write(dir.join(format!("one-{n}.nft")), tx.to_text())?;
            }
            let apply = Instant::now();
            nft.apply(&tx)?;
            Ok((next, next_model, (tx.commands().len(), apply.elapsed())))
        })?;
        one.push((wall, cpu_time, commands));
        last = next;
        model = next_model;
    }
    one.sort();
    let (wall, _, (commands, apply)) = one[one.len() / 2];
    let cpu_total: Duration = one.iter().map(|o| o.1).sum();
    println!(
        "  one Service changed (median of 5, {commands} commands, stale chains left over): {} wall (of it libnftables apply {}), {} CPU on average",
        ms(wall),
        ms(apply),
        ms(cpu_total / 5)
    );

    // The same change with the stale chains deleted at once (needs nft's chain cache).
    let i = 3 % n;
    slices[i as usize] = slice(i, 9);
    let (_, wall, cpu_time) = timed(|| {
        let next_model = service_ports(&svcs, &slices);
        let next = build_reusing(&config, &next_model, &model, &last);
        let mut tx = next.diff_transaction(&last);
        if tx.is_empty() {
            tx = next.full_transaction();
        }
        nft.apply(&tx)?;
        last = next;
        model = next_model;
        Ok(())
    })?;
    println!(
        "  one Service changed, stale chains deleted in the same transaction: {} wall, {} CPU",
        ms(wall),
        ms(cpu_time)
    );

    // Periodic full resync over the existing table.
    let (_, wall, cpu_time) = timed(|| {
        let full = ruleset(&config, &svcs, &slices);
        nft.apply(&full.full_transaction())?;
        Ok(())
    })?;
    println!(
        "  full resync (table exists): {} wall, {} CPU",
        ms(wall),
        ms(cpu_time)
    );

    // The same scripts through the Debian CLI (a process per run, same text).
    let (_, wall, cpu_time) = timed(|| nft_cli(netns, &dir.join(format!("full-{n}.nft"))))?;
    println!(
        "  nft -f, full script (table exists): {} wall, {} CPU",
        ms(wall),
        ms(cpu_time)
    );
    nft.apply(&Ruleset::delete_table_transaction(&config.table))?;
    let (_, wall, cpu_time) = timed(|| nft_cli(netns, &dir.join(format!("full-{n}.nft"))))?;
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
    let nft = LibNftables::in_netns(&PathBuf::from(format!("/run/netns/{netns}")))?;
    for n in counts {
        bench(&netns, &nft, n, &dir)?;
    }
    Ok(())
}
