//! Service proxy benchmark: full sync of N Services x 10 endpoints and one Service's endpoints
//! changed, through libnftables in-process, side by side with `nft -f` (the Debian CLI) loading
//! the same ruleset, in a network namespace this program creates and removes. Needs root.
//!
//! `cargo run --release -p netproxy --example nft_bench -- 1000 10000`
use std::collections::BTreeMap;
use std::io::Write;
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
use netproxy::rules::{RulesConfig, Ruleset, build};

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

fn nft_cli(netns: &str, args: &[&str], file: &Path) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let out = Command::new("ip")
        .args(["netns", "exec", netns, "nft"])
        .args(args)
        .arg("-f")
        .arg(file)
        .output()
        .context("failed to run nft")?;
    let elapsed = start.elapsed();
    if !out.status.success() {
        bail!("nft failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(elapsed)
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn bench(netns: &str, nft: &LibNftables, n: u32, dir: &Path) -> anyhow::Result<()> {
    let config = RulesConfig {
        node_name: "bench-node".into(),
        cluster_cidr: Some("10.42.0.0/16".parse()?),
        ..Default::default()
    };
    let svcs: Vec<Service> = (0..n).map(service).collect();
    let mut slices: Vec<EndpointSlice> = (0..n).map(|i| slice(i, 0)).collect();

    let start = Instant::now();
    let full = ruleset(&config, &svcs, &slices);
    let tx = full.full_transaction();
    let built = start.elapsed();
    nft.apply(&tx)?;
    let full_time = start.elapsed();

    // One Service's endpoints all replaced: the incremental path of a sync.
    slices[0] = slice(0, 1);
    let start = Instant::now();
    let changed = ruleset(&config, &svcs, &slices);
    let diff = changed.diff_transaction(&full);
    let diff_built = start.elapsed();
    nft.apply(&diff)?;
    let diff_time = start.elapsed();

    println!(
        "{n} services x {ENDPOINTS} endpoints: {} rules, {} chains",
        full.rule_count(),
        full.chain_count()
    );
    println!(
        "  libnftables in-process: full sync {} (build {}), one service changed {} (build {}, {} commands)",
        ms(full_time),
        ms(built),
        ms(diff_time),
        ms(diff_built),
        diff.commands().len()
    );

    // The same two transactions through the CLI, then the same ruleset as nft text.
    let json_full = dir.join(format!("full-{n}.json"));
    std::fs::write(&json_full, tx.to_json())?;
    let json_diff = dir.join(format!("diff-{n}.json"));
    std::fs::write(&json_diff, diff.to_json())?;
    let cli_full_json = nft_cli(netns, &["-j"], &json_full)?;
    let cli_diff_json = nft_cli(netns, &["-j"], &json_diff)?;

    let listed = Command::new("ip")
        .args([
            "netns",
            "exec",
            netns,
            "nft",
            "list",
            "table",
            "ip",
            &config.table,
        ])
        .output()
        .context("failed to list table")?;
    let text_full = dir.join(format!("full-{n}.nft"));
    let mut f = std::fs::File::create(&text_full)?;
    writeln!(f, "add table ip {0}\ndelete table ip {0}", config.table)?;
    f.write_all(&listed.stdout)?;
    drop(f);
    let cli_full_text = nft_cli(netns, &[], &text_full)?;
    println!(
        "  nft -j -f (CLI, same JSON): full sync {}, one service changed {}",
        ms(cli_full_json),
        ms(cli_diff_json)
    );
    println!(
        "  nft -f (CLI, same ruleset as text): full sync {}",
        ms(cli_full_text)
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
