//! r8s-proxy command line: flags (kube-proxy's names), tracing, a client, then `netproxy::run`.
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use netproxy::model::Ipv4Cidr;
use netproxy::{DnsConfig, ProxyConfig, RulesConfig, SyncPeriods};
use tokio_util::sync::CancellationToken;
use tracing::error;

/// r8s-proxy routes Kubernetes Services on this node with nftables.
///
/// Flags follow kube-proxy's: https://kubernetes.io/docs/reference/command-line-tools-reference/kube-proxy/
#[derive(Parser, Debug)]
#[command(name = "r8s-proxy", version)]
struct Args {
    /// Path to a kubeconfig file with authorization and API server location.
    #[arg(long, env = "R8S_KUBECONFIG", help_heading = "Client")]
    kubeconfig: Option<PathBuf>,

    /// If non-empty, use this string as the node name instead of the hostname.
    #[arg(long, env = "R8S_HOSTNAME_OVERRIDE", help_heading = "Node")]
    hostname_override: Option<String>,

    /// The CIDR range of the pods in the cluster. Traffic to Service cluster IPs from outside
    /// this range is masqueraded.
    #[arg(long, env = "R8S_CLUSTER_CIDR", help_heading = "Networking")]
    cluster_cidr: Option<Ipv4Cidr>,

    /// A list of CIDR ranges that contain valid node IPs for NodePort traffic
    /// (comma-separated). Empty means all local addresses.
    #[arg(
        long,
        env = "R8S_NODEPORT_ADDRESSES",
        value_delimiter = ',',
        help_heading = "Networking"
    )]
    nodeport_addresses: Vec<Ipv4Cidr>,

    /// SNAT all traffic sent via Service cluster IPs.
    #[arg(long, env = "R8S_MASQUERADE_ALL", help_heading = "Networking")]
    masquerade_all: bool,

    /// Which proxy mode to use: only 'nftables' is supported.
    #[arg(
        long,
        env = "R8S_PROXY_MODE",
        default_value = "nftables",
        help_heading = "Networking"
    )]
    proxy_mode: String,

    /// The minimum period between proxy rule resyncs (e.g. '1s', '500ms').
    #[arg(long, env = "R8S_MIN_SYNC_PERIOD", default_value = "1s", value_parser = parse_duration, help_heading = "Sync")]
    min_sync_period: Duration,

    /// An interval (e.g. '1h', '30m') at which the whole table is rewritten.
    #[arg(long, env = "R8S_SYNC_PERIOD", default_value = "1h", value_parser = parse_duration, help_heading = "Sync")]
    sync_period: Duration,

    /// The IP address and port for the metrics server to serve on; empty disables it.
    #[arg(
        long,
        env = "R8S_METRICS_BIND_ADDRESS",
        default_value = "127.0.0.1:10249",
        help_heading = "Serving"
    )]
    metrics_bind_address: String,

    /// Address (UDP and TCP) for the cluster DNS server, e.g. the node IP and port 53; it is
    /// registered as this node's endpoint of kube-system/kube-dns. Empty disables DNS.
    #[arg(
        long,
        env = "R8S_DNS_BIND_ADDRESS",
        default_value = "",
        help_heading = "DNS"
    )]
    dns_bind_address: String,

    /// The cluster DNS Service IP; the proxy creates kube-system/kube-dns with it if missing.
    /// Empty leaves the Service alone.
    #[arg(
        long,
        env = "R8S_CLUSTER_DNS",
        default_value = "10.43.0.10",
        help_heading = "DNS"
    )]
    cluster_dns: String,

    /// Resolvers for names outside the cluster domain (comma-separated ip:port); the
    /// nameservers of /etc/resolv.conf when empty.
    #[arg(
        long,
        env = "R8S_DNS_UPSTREAMS",
        value_delimiter = ',',
        help_heading = "DNS"
    )]
    dns_upstreams: Vec<SocketAddr>,

    /// Domain for this cluster; Services resolve as <svc>.<ns>.svc.<cluster-domain>.
    #[arg(
        long,
        env = "R8S_CLUSTER_DOMAIN",
        default_value = "cluster.local",
        help_heading = "DNS"
    )]
    cluster_domain: String,

    /// If true, remove the proxy's nftables table and exit.
    #[arg(long, help_heading = "Misc")]
    cleanup: bool,

    /// The IP address and port for the health check server to serve on; empty disables it.
    #[arg(
        long,
        env = "R8S_HEALTHZ_BIND_ADDRESS",
        default_value = "0.0.0.0:10256",
        help_heading = "Serving"
    )]
    healthz_bind_address: String,
}

/// Parses Go-style durations: `500ms`, `1s`, `5m`, `1h`, `1h30m`.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let mut total = Duration::ZERO;
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err("empty duration".into());
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .ok_or_else(|| format!("missing unit in duration {s:?}"))?;
        let (num, tail) = rest.split_at(digits);
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(tail.len());
        let (unit, next) = tail.split_at(unit_len);
        let n: f64 = num.parse().map_err(|_| format!("invalid duration {s:?}"))?;
        let secs = match unit {
            "ms" => n / 1000.0,
            "s" => n,
            "m" => n * 60.0,
            "h" => n * 3600.0,
            _ => return Err(format!("unknown unit {unit:?} in duration {s:?}")),
        };
        total += Duration::from_secs_f64(secs);
        rest = next;
    }
    Ok(total)
}

fn bind_address(s: &str) -> anyhow::Result<Option<SocketAddr>> {
    if s.is_empty() {
        return Ok(None);
    }
    s.parse()
        .map(Some)
        .with_context(|| format!("invalid bind address {s:?}"))
}

fn config(args: Args) -> anyhow::Result<ProxyConfig> {
    if args.proxy_mode != "nftables" {
        bail!(
            "unsupported proxy mode {:?}: only \"nftables\" is supported",
            args.proxy_mode
        );
    }
    let node_name = match args.hostname_override.filter(|h| !h.is_empty()) {
        Some(h) => h,
        None => std::fs::read_to_string("/proc/sys/kernel/hostname")
            .context("failed to read hostname")?
            .trim()
            .to_lowercase(),
    };
    let cluster_dns: Option<Ipv4Addr> = if args.cluster_dns.is_empty() {
        None
    } else {
        Some(
            args.cluster_dns
                .parse()
                .with_context(|| format!("invalid --cluster-dns {:?}", args.cluster_dns))?,
        )
    };
    Ok(ProxyConfig {
        netns: None,
        rules: RulesConfig {
            node_name,
            cluster_cidr: args.cluster_cidr,
            masquerade_all: args.masquerade_all,
            nodeport_addresses: args.nodeport_addresses,
            ..RulesConfig::default()
        },
        periods: SyncPeriods {
            min: args.min_sync_period,
            full: args.sync_period,
        },
        metrics_bind_address: bind_address(&args.metrics_bind_address)?,
        healthz_bind_address: bind_address(&args.healthz_bind_address)?,
        dns: bind_address(&args.dns_bind_address)?.map(|addr| DnsConfig {
            bind_address: addr,
            cluster_domain: args.cluster_domain,
            upstreams: args.dns_upstreams,
            cluster_ip: cluster_dns,
        }),
    })
}

async fn client(kubeconfig: Option<&PathBuf>) -> anyhow::Result<kube::Client> {
    let mut cfg = match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("failed to read kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .context("failed to load kubeconfig")?
        }
        None => kube::Config::infer()
            .await
            .context("failed to infer kube client config")?,
    };
    // The server names a writer's managedFields entry after its User-Agent.
    cfg.headers.push((
        http::header::USER_AGENT,
        http::HeaderValue::from_static("kube-proxy/v1.32.0 (linux/amd64) kubernetes/r8s"),
    ));
    kube::Client::try_from(cfg).context("failed to create kube client")
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    if args.cleanup {
        return match netproxy::cleanup(&RulesConfig::default().table) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                error!(
                    error = format!("{:#}", anyhow::Error::from(err)),
                    "cleanup failed"
                );
                ExitCode::FAILURE
            }
        };
    }
    let kubeconfig = args.kubeconfig.clone();
    let config = match config(args) {
        Ok(c) => c,
        Err(err) => {
            error!(error = format!("{err:#}"), "invalid configuration");
            return ExitCode::FAILURE;
        }
    };
    let shutdown = CancellationToken::new();
    tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
            match term {
                Ok(mut term) => {
                    tokio::select! {
                        _ = tokio::signal::ctrl_c() => {}
                        _ = term.recv() => {}
                    }
                }
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
            shutdown.cancel();
        }
    });
    let client = match client(kubeconfig.as_ref()).await {
        Ok(c) => c,
        Err(err) => {
            error!(error = format!("{err:#}"), "failed to connect");
            return ExitCode::FAILURE;
        }
    };
    match netproxy::run(client, config, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            error!(
                error = format!("{:#}", anyhow::Error::from(err)),
                "r8s-proxy failed"
            );
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_parse() {
        assert_eq!(parse_duration("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("3d").is_err());
    }
}
