//! Command-line flags of r8s-server (kube-apiserver names) and the validated
//! `Config` the server runs from.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid --service-cluster-ip-range {0:?}: expected an IPv4 CIDR such as 10.43.0.0/16")]
    ServiceRange(String),
    #[error("invalid --cluster-cidr {0:?}: expected an IPv4 CIDR such as 10.42.0.0/16")]
    ClusterCidr(String),
    #[error("invalid --service-node-port-range {0:?}: expected a range such as 30000-32767")]
    NodePortRange(String),
    #[error("invalid --{0} {1:?}: expected a duration such as 40s, 1m30s or 500ms")]
    Duration(&'static str, String),
    #[error("invalid --authorization-mode {0:?}: supported modes are Node, RBAC and AlwaysAllow")]
    AuthorizationMode(String),
}

/// Flags of `r8s-server`; names follow kube-apiserver and k3s server.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "r8s-server",
    version,
    about = "The r8s control plane: a Kubernetes API server on an embedded store",
    long_about = "The r8s control plane: a Kubernetes API server (served over HTTPS with a CA it \
                  creates in its data dir), with the scheduler and controllers running as its \
                  clients. On first start it writes an admin kubeconfig.",
    after_help = "Join tokens: r8s-server token create|list|delete (see r8s-server token --help)."
)]
pub struct ServerFlags {
    /// Directory holding the store, the CA and the serving and client certificates.
    #[arg(
        long,
        env = "R8S_DATA_DIR",
        default_value = "/var/lib/r8s/server",
        help_heading = "Storage"
    )]
    pub data_dir: PathBuf,

    /// The IP address on which to listen for the --secure-port port
    /// (kube-apiserver --bind-address).
    #[arg(
        long,
        env = "R8S_BIND_ADDRESS",
        default_value = "0.0.0.0",
        help_heading = "Secure serving"
    )]
    pub bind_address: IpAddr,

    /// The port on which to serve HTTPS with authentication and authorization;
    /// 0 picks a free port, printed and written into the kubeconfig
    /// (kube-apiserver --secure-port).
    #[arg(
        long,
        env = "R8S_SECURE_PORT",
        default_value_t = 6443,
        help_heading = "Secure serving"
    )]
    pub secure_port: u16,

    /// The IP address on which to advertise the apiserver to members of the
    /// cluster (the `kubernetes` service endpoints); defaults to the host's
    /// primary address (kube-apiserver --advertise-address).
    #[arg(long, env = "R8S_ADVERTISE_ADDRESS", help_heading = "Secure serving")]
    pub advertise_address: Option<IpAddr>,

    /// Additional hostname or IP as a Subject Alternative Name in the serving
    /// certificate (repeatable; k3s --tls-san).
    #[arg(
        long = "tls-san",
        env = "R8S_TLS_SAN",
        value_delimiter = ',',
        help_heading = "Secure serving"
    )]
    pub tls_san: Vec<String>,

    /// Where to write the admin kubeconfig (mode 0600; k3s --write-kubeconfig).
    #[arg(
        long,
        env = "R8S_WRITE_KUBECONFIG",
        default_value = "/etc/r8s/r8s.yaml",
        help_heading = "Client"
    )]
    pub write_kubeconfig: PathBuf,

    /// A CIDR notation IP range from which to assign service cluster IPs
    /// (kube-apiserver --service-cluster-ip-range).
    #[arg(
        long,
        env = "R8S_SERVICE_CLUSTER_IP_RANGE",
        default_value = "10.43.0.0/16",
        help_heading = "Networking"
    )]
    pub service_cluster_ip_range: String,

    /// A port range to reserve for services with NodePort visibility
    /// (kube-apiserver --service-node-port-range).
    #[arg(
        long,
        env = "R8S_SERVICE_NODE_PORT_RANGE",
        default_value = "30000-32767",
        help_heading = "Networking"
    )]
    pub service_node_port_range: String,

    /// CIDR range for pods in the cluster (kube-controller-manager --cluster-cidr).
    #[arg(
        long,
        env = "R8S_CLUSTER_CIDR",
        default_value = "10.42.0.0/16",
        help_heading = "Networking"
    )]
    pub cluster_cidr: String,

    /// Start a leader election client and gain leadership before running
    /// the scheduler and controllers (kube-controller-manager --leader-elect).
    #[arg(
        long,
        env = "R8S_LEADER_ELECT",
        default_value_t = true,
        action = clap::ArgAction::Set,
        num_args = 0..=1,
        default_missing_value = "true",
        help_heading = "Controllers"
    )]
    pub leader_elect: bool,

    /// Amount of time a running Node may be unresponsive before it is
    /// marked unhealthy (kube-controller-manager --node-monitor-grace-period).
    #[arg(
        long,
        env = "R8S_NODE_MONITOR_GRACE_PERIOD",
        default_value = "40s",
        help_heading = "Controllers"
    )]
    pub node_monitor_grace_period: String,

    /// The period for syncing NodeStatus in the node lifecycle controller
    /// (kube-controller-manager --node-monitor-period).
    #[arg(
        long,
        env = "R8S_NODE_MONITOR_PERIOD",
        default_value = "5s",
        help_heading = "Controllers"
    )]
    pub node_monitor_period: String,

    /// The period for syncing the number of pods in horizontal pod
    /// autoscaler (kube-controller-manager
    /// --horizontal-pod-autoscaler-sync-period).
    #[arg(
        long,
        env = "R8S_HORIZONTAL_POD_AUTOSCALER_SYNC_PERIOD",
        default_value = "15s",
        help_heading = "Controllers"
    )]
    pub horizontal_pod_autoscaler_sync_period: String,

    /// The period for which autoscaler will look backwards and not scale
    /// down below any recommendation it made during that period
    /// (kube-controller-manager
    /// --horizontal-pod-autoscaler-downscale-stabilization).
    #[arg(
        long,
        env = "R8S_HORIZONTAL_POD_AUTOSCALER_DOWNSCALE_STABILIZATION",
        default_value = "5m0s",
        help_heading = "Controllers"
    )]
    pub horizontal_pod_autoscaler_downscale_stabilization: String,

    /// Ordered list of plug-ins to do authorization on the secure port:
    /// Node, RBAC, AlwaysAllow (kube-apiserver --authorization-mode).
    #[arg(
        long,
        env = "R8S_AUTHORIZATION_MODE",
        default_value = "Node,RBAC",
        help_heading = "Authorization"
    )]
    pub authorization_mode: String,

    /// The max length of duration signed certificates will be given;
    /// a CSR's spec.expirationSeconds may ask for less
    /// (kube-controller-manager --cluster-signing-duration).
    #[arg(
        long,
        env = "R8S_CLUSTER_SIGNING_DURATION",
        default_value = "8760h",
        help_heading = "Controllers"
    )]
    pub cluster_signing_duration: String,

    /// Do not run a node agent inside the server process. The embedded
    /// agent takes the r8s-agent settings from their R8S_* environment
    /// variables (R8S_ROOT_DIR, R8S_RUN_DIR, R8S_POD_CIDR, R8S_CGROUP_ROOT,
    /// R8S_HOSTNAME_OVERRIDE, ...; see `r8s-agent --help`).
    #[arg(long, env = "R8S_DISABLE_AGENT", help_heading = "Components")]
    pub disable_agent: bool,

    /// Log verbosity: 0 info, 1-3 debug, 4+ trace (kube-apiserver -v).
    #[arg(
        short = 'v',
        long = "v",
        env = "R8S_V",
        default_value_t = 0,
        help_heading = "Logging"
    )]
    pub verbosity: u8,

    /// Log filter in tracing's env-filter syntax (overrides -v), e.g. `info,control_plane=debug`.
    #[arg(long, env = "R8S_LOG_LEVEL", help_heading = "Logging")]
    pub log_level: Option<String>,
}

/// An IPv4 network in CIDR form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Cidr {
    pub network: Ipv4Addr,
    pub prefix: u8,
}

impl Ipv4Cidr {
    pub fn parse(s: &str) -> Option<Self> {
        let (ip, prefix) = s.split_once('/')?;
        let ip: Ipv4Addr = ip.trim().parse().ok()?;
        let prefix: u8 = prefix.trim().parse().ok()?;
        if prefix > 32 {
            return None;
        }
        let mask = Self::mask(prefix);
        Some(Self {
            network: Ipv4Addr::from(u32::from(ip) & mask),
            prefix,
        })
    }

    fn mask(prefix: u8) -> u32 {
        if prefix == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(prefix))
        }
    }

    /// Whether `ip` is inside the network.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & Self::mask(self.prefix) == u32::from(self.network)
    }

    /// Number of addresses in the network.
    pub fn size(&self) -> u64 {
        1u64 << (32 - u32::from(self.prefix))
    }

    /// The `n`th address of the network (0 is the network address).
    pub fn nth(&self, n: u64) -> Option<Ipv4Addr> {
        if n >= self.size() {
            return None;
        }
        let n = u32::try_from(n).ok()?;
        Some(Ipv4Addr::from(u32::from(self.network) + n))
    }
}

impl std::fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// The validated server configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub bind_address: IpAddr,
    pub secure_port: u16,
    pub advertise_address: Option<IpAddr>,
    pub tls_san: Vec<String>,
    pub write_kubeconfig: PathBuf,
    pub service_cluster_ip_range: Ipv4Cidr,
    pub service_node_port_range: (u16, u16),
    pub cluster_cidr: Ipv4Cidr,
    pub disable_agent: bool,
    pub leader_elect: bool,
    pub node_monitor_grace_period: Duration,
    pub node_monitor_period: Duration,
    pub horizontal_pod_autoscaler_sync_period: Duration,
    pub horizontal_pod_autoscaler_downscale_stabilization: Duration,
    /// `--authorization-mode`, in order.
    pub authorization_modes: Vec<crate::auth::AuthorizationMode>,
    pub cluster_signing_duration: Duration,
}

impl ServerFlags {
    /// Validates the flags into a `Config`.
    pub fn into_config(self) -> Result<Config, ConfigError> {
        let service_cluster_ip_range = Ipv4Cidr::parse(&self.service_cluster_ip_range)
            .ok_or_else(|| ConfigError::ServiceRange(self.service_cluster_ip_range.clone()))?;
        let cluster_cidr = Ipv4Cidr::parse(&self.cluster_cidr)
            .ok_or_else(|| ConfigError::ClusterCidr(self.cluster_cidr.clone()))?;
        let service_node_port_range = parse_port_range(&self.service_node_port_range)
            .ok_or_else(|| ConfigError::NodePortRange(self.service_node_port_range.clone()))?;
        Ok(Config {
            data_dir: self.data_dir,
            bind_address: self.bind_address,
            secure_port: self.secure_port,
            advertise_address: self.advertise_address,
            tls_san: self.tls_san,
            write_kubeconfig: self.write_kubeconfig,
            service_cluster_ip_range,
            service_node_port_range,
            cluster_cidr,
            disable_agent: self.disable_agent,
            leader_elect: self.leader_elect,
            node_monitor_grace_period: parse_duration(&self.node_monitor_grace_period).ok_or_else(
                || {
                    ConfigError::Duration(
                        "node-monitor-grace-period",
                        self.node_monitor_grace_period.clone(),
                    )
                },
            )?,
            node_monitor_period: parse_duration(&self.node_monitor_period).ok_or_else(|| {
                ConfigError::Duration("node-monitor-period", self.node_monitor_period.clone())
            })?,
            horizontal_pod_autoscaler_sync_period: parse_duration(
                &self.horizontal_pod_autoscaler_sync_period,
            )
            .filter(|d| !d.is_zero())
            .ok_or_else(|| {
                ConfigError::Duration(
                    "horizontal-pod-autoscaler-sync-period",
                    self.horizontal_pod_autoscaler_sync_period.clone(),
                )
            })?,
            horizontal_pod_autoscaler_downscale_stabilization: parse_duration(
                &self.horizontal_pod_autoscaler_downscale_stabilization,
            )
            .ok_or_else(|| {
                ConfigError::Duration(
                    "horizontal-pod-autoscaler-downscale-stabilization",
                    self.horizontal_pod_autoscaler_downscale_stabilization
                        .clone(),
                )
            })?,
            authorization_modes: parse_authorization_modes(&self.authorization_mode)
                .ok_or_else(|| ConfigError::AuthorizationMode(self.authorization_mode.clone()))?,
            cluster_signing_duration: parse_duration(&self.cluster_signing_duration)
                .filter(|d| !d.is_zero())
                .ok_or_else(|| {
                    ConfigError::Duration(
                        "cluster-signing-duration",
                        self.cluster_signing_duration.clone(),
                    )
                })?,
        })
    }

    /// The tracing filter the flags ask for.
    pub fn log_filter(&self) -> String {
        if let Some(level) = &self.log_level {
            return level.clone();
        }
        match self.verbosity {
            0 => "info".into(),
            1..=3 => "info,control_plane=debug".into(),
            _ => "debug,control_plane=trace".into(),
        }
    }
}

/// A Go `time.Duration` string (`40s`, `1m30s`, `500ms`, `1h`).
pub fn parse_duration(s: &str) -> Option<Duration> {
    let mut rest = s.trim();
    if rest.is_empty() {
        return None;
    }
    if rest == "0" {
        return Some(Duration::ZERO);
    }
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let value: f64 = rest[..end].parse().ok()?;
        rest = &rest[end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_end] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[unit_end..];
        total += Duration::try_from_secs_f64(value * unit).ok()?;
    }
    Some(total)
}

/// A comma-separated `--authorization-mode` list (no mode twice).
fn parse_authorization_modes(s: &str) -> Option<Vec<crate::auth::AuthorizationMode>> {
    let mut modes = Vec::new();
    for m in s.split(',') {
        let mode = crate::auth::AuthorizationMode::parse(m)?;
        if modes.contains(&mode) {
            return None;
        }
        modes.push(mode);
    }
    Some(modes)
}

fn parse_port_range(s: &str) -> Option<(u16, u16)> {
    let (a, b) = s.split_once('-')?;
    let (a, b): (u16, u16) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
    (a <= b && a > 0).then_some((a, b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_kube_apiserver_and_k3s() {
        let flags = ServerFlags::parse_from(["r8s-server"]);
        let config = flags.into_config().unwrap();
        assert_eq!(config.secure_port, 6443);
        assert_eq!(config.service_cluster_ip_range.to_string(), "10.43.0.0/16");
        assert_eq!(config.service_node_port_range, (30000, 32767));
        assert_eq!(config.write_kubeconfig, PathBuf::from("/etc/r8s/r8s.yaml"));
        assert_eq!(
            config.horizontal_pod_autoscaler_sync_period,
            Duration::from_secs(15)
        );
        assert_eq!(
            config.horizontal_pod_autoscaler_downscale_stabilization,
            Duration::from_secs(300)
        );
    }

    #[test]
    fn cidr_contains_and_indexes() {
        let c = Ipv4Cidr::parse("10.43.7.9/16").unwrap();
        assert_eq!(c.network, Ipv4Addr::new(10, 43, 0, 0));
        assert!(c.contains(Ipv4Addr::new(10, 43, 255, 1)));
        assert!(!c.contains(Ipv4Addr::new(10, 44, 0, 1)));
        assert_eq!(c.nth(1), Some(Ipv4Addr::new(10, 43, 0, 1)));
        assert_eq!(c.nth(65536), None);
    }

    #[test]
    fn authorization_modes_and_signing_duration_parse() {
        use crate::auth::AuthorizationMode;
        let config = ServerFlags::parse_from(["r8s-server"])
            .into_config()
            .unwrap();
        assert_eq!(config.authorization_modes, AuthorizationMode::DEFAULT);
        assert_eq!(
            config.cluster_signing_duration,
            Duration::from_secs(365 * 24 * 3600)
        );
        let config = ServerFlags::parse_from([
            "r8s-server",
            "--authorization-mode",
            "RBAC,AlwaysAllow",
            "--cluster-signing-duration",
            "90s",
        ])
        .into_config()
        .unwrap();
        assert_eq!(
            config.authorization_modes,
            [AuthorizationMode::Rbac, AuthorizationMode::AlwaysAllow]
        );
        assert_eq!(config.cluster_signing_duration, Duration::from_secs(90));
        for bad in ["ABAC", "Node,Node", ""] {
            assert!(
                ServerFlags::parse_from(["r8s-server", "--authorization-mode", bad])
                    .into_config()
                    .is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn durations_parse_like_go() {
        assert_eq!(parse_duration("40s"), Some(Duration::from_secs(40)));
        assert_eq!(parse_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("5x"), None);
        let config = ServerFlags::parse_from(["r8s-server", "--leader-elect=false"])
            .into_config()
            .unwrap();
        assert!(!config.leader_elect);
        assert_eq!(config.node_monitor_grace_period, Duration::from_secs(40));
    }

    #[test]
    fn bad_port_range_is_rejected() {
        let flags = ServerFlags::parse_from(["r8s-server", "--service-node-port-range", "5-2"]);
        assert!(flags.into_config().is_err());
    }
}
