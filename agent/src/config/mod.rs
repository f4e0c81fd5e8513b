//! Agent configuration: flags (`flags`) are parsed by main and validated here
//! into the `Config` every other module takes.

pub mod eviction;
pub mod flags;
pub mod image_gc;
pub mod parse;
pub mod proxy;
pub mod reserved;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::core::v1::Taint;

pub use eviction::{EvictionSettings, Signal, Threshold, ThresholdValue};
pub use flags::AgentFlags;
pub use image_gc::ImageGcPolicy;
pub use proxy::KubeProxyConfig;
pub use reserved::ResourceReservation;

/// A flag value that did not validate.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Same shape as pflag's `invalid argument "v" for "--flag" flag: reason`.
    #[error("invalid argument {value:?} for \"--{flag}\" flag: {reason}")]
    InvalidArgument {
        flag: &'static str,
        value: String,
        reason: String,
    },
    #[error("{0}")]
    NodeLabels(String),
    #[error("empty hostname is invalid")]
    EmptyHostname,
    #[error("failed to get the hostname")]
    Hostname(#[source] std::io::Error),
    #[error(transparent)]
    ImageGc(#[from] image_gc::ImageGcConfigError),
}

pub type Result<T, E = ConfigError> = std::result::Result<T, E>;

/// The validated agent configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub kubeconfig: Option<PathBuf>,
    /// `--kube-proxy-kubeconfig`: the service proxy's and pod network's identity.
    pub kube_proxy_kubeconfig: Option<PathBuf>,
    /// `--server`, `--token`, `--ca-cert-hash`: join (see `crate::bootstrap`).
    pub server: Option<String>,
    pub token: Option<String>,
    pub ca_cert_hash: Option<String>,
    /// Node name and `kubernetes.io/hostname` label (lowercase, as kubelet).
    pub node_name: String,
    /// The node's addresses from `--node-ip` (one per family); empty means detect.
    pub node_ips: Vec<IpAddr>,
    pub node_labels: BTreeMap<String, String>,
    pub register_with_taints: Vec<Taint>,
    pub max_pods: u32,
    pub pod_manifest_path: Option<PathBuf>,
    pub cluster_dns: Vec<IpAddr>,
    pub cluster_domain: String,
    pub root_dir: PathBuf,
    pub eviction_hard: Vec<Threshold>,
    /// The eviction manager's other settings (soft thresholds, periods).
    pub eviction: EvictionSettings,
    pub kube_reserved: ResourceReservation,
    pub system_reserved: ResourceReservation,
    pub cgroup_root: String,
    /// `None`: the r8s CRI runtime in-process.
    pub container_runtime_endpoint: Option<String>,
    pub node_status_update_frequency: Duration,
    pub port: u16,
    /// `--address` of the kubelet API.
    pub address: IpAddr,
    pub tls_cert_file: Option<PathBuf>,
    pub tls_private_key_file: Option<PathBuf>,
    pub client_ca_file: Option<PathBuf>,
    /// Simulated node: pods are reported Running without running anything.
    pub fake_runtime: bool,
    /// `--pod-cidr`: the in-process runtime's pod network (over the Node's).
    pub pod_cidr: Option<String>,
    /// Socket and state of the in-process runtime live here.
    pub run_dir: PathBuf,
    pub pod_bridge: String,
    /// `--insecure-registry`: registries pulled from over plain HTTP.
    pub insecure_registries: Vec<String>,
    pub pod_logs_dir: PathBuf,
    /// The in-process service proxy and cluster DNS; `None` with
    /// `--disable-kube-proxy`.
    pub kube_proxy: Option<KubeProxyConfig>,
    /// `--flannel-backend`, `--flannel-iface`: routes to the other nodes' pods.
    pub flannel: crate::flannel::FlannelConfig,
    /// `--image-gc-*`, `--minimum-image-ttl-duration`: unused image removal.
    pub image_gc: ImageGcPolicy,
}

fn invalid(flag: &'static str, value: &str, reason: impl ToString) -> ConfigError {
    ConfigError::InvalidArgument {
        flag,
        value: value.to_owned(),
        reason: reason.to_string(),
    }
}

fn parse_ips(flag: &'static str, s: &str) -> Result<Vec<IpAddr>> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.parse().map_err(|_| {
                invalid(
                    flag,
                    s,
                    format!("invalid string being converted to IP address: {p}"),
                )
            })
        })
        .collect()
}

fn is_ipv4_cidr(s: &str) -> bool {
    s.split_once('/').is_some_and(|(ip, prefix)| {
        ip.parse::<std::net::Ipv4Addr>().is_ok() && prefix.parse::<u8>().is_ok_and(|p| p <= 32)
    })
}

fn eviction_settings(flags: &AgentFlags) -> Result<EvictionSettings> {
    let soft = eviction::soft_thresholds(&flags.eviction_soft, &flags.eviction_soft_grace_period)
        .map_err(|e| invalid("eviction-soft", &flags.eviction_soft, e))?;
    let minimum_reclaim = eviction::parse_minimum_reclaims(&flags.eviction_minimum_reclaim)
        .map_err(|e| {
            invalid(
                "eviction-minimum-reclaim",
                &flags.eviction_minimum_reclaim,
                e,
            )
        })?;
    let duration = |flag: &'static str, value: &str| {
        parse::parse_go_duration(value).map_err(|e| invalid(flag, value, e))
    };
    let monitoring_period = duration(
        "eviction-monitoring-period",
        &flags.eviction_monitoring_period,
    )?;
    if monitoring_period.is_zero() {
        return Err(invalid(
            "eviction-monitoring-period",
            &flags.eviction_monitoring_period,
            "must be greater than 0",
        ));
    }
    Ok(EvictionSettings {
        soft,
        minimum_reclaim,
        max_pod_grace_period: flags.eviction_max_pod_grace_period,
        pressure_transition_period: duration(
            "eviction-pressure-transition-period",
            &flags.eviction_pressure_transition_period,
        )?,
        monitoring_period,
    })
}

impl Config {
    /// Validates flags, reading the system hostname when no override is given.
    pub fn from_flags(flags: AgentFlags) -> Result<Self> {
        let hostname = match &flags.hostname_override {
            Some(h) if !h.trim().is_empty() => h.clone(),
            _ => nix::unistd::gethostname()
                .map_err(|e| ConfigError::Hostname(e.into()))?
                .to_string_lossy()
                .into_owned(),
        };
        Self::from_flags_with_hostname(flags, &hostname)
    }

    /// Validates flags with a given hostname (used when no override is set).
    pub fn from_flags_with_hostname(flags: AgentFlags, hostname: &str) -> Result<Self> {
        let node_name = flags
            .hostname_override
            .as_deref()
            .filter(|h| !h.trim().is_empty())
            .unwrap_or(hostname)
            .trim()
            .to_lowercase();
        if node_name.is_empty() {
            return Err(ConfigError::EmptyHostname);
        }
        let node_ips = match &flags.node_ip {
            Some(s) => parse_ips("node-ip", s)?,
            None => Vec::new(),
        };
        if node_ips.len() > 2
            || (node_ips.len() == 2 && node_ips[0].is_ipv4() == node_ips[1].is_ipv4())
        {
            return Err(invalid(
                "node-ip",
                flags.node_ip.as_deref().unwrap_or_default(),
                "dual-stack --node-ip must have one IPv4 and one IPv6 address",
            ));
        }
        let node_labels = parse::parse_map(&flags.node_labels, '=')
            .map_err(|e| invalid("node-labels", &flags.node_labels, e))?;
        parse::validate_node_labels(&node_labels).map_err(ConfigError::NodeLabels)?;
        let register_with_taints = parse::parse_taints(&flags.register_with_taints)
            .map_err(|e| invalid("register-with-taints", &flags.register_with_taints, e))?;
        let cluster_dns = parse_ips("cluster-dns", &flags.cluster_dns)?;
        let eviction_hard = eviction::parse_eviction_hard(&flags.eviction_hard)
            .map_err(|e| invalid("eviction-hard", &flags.eviction_hard, e))?;
        let eviction = eviction_settings(&flags)?;
        let kube_reserved = reserved::parse_reserved(&flags.kube_reserved)
            .map_err(|e| invalid("kube-reserved", &flags.kube_reserved, e))?;
        let system_reserved = reserved::parse_reserved(&flags.system_reserved)
            .map_err(|e| invalid("system-reserved", &flags.system_reserved, e))?;
        let node_status_update_frequency =
            parse::parse_go_duration(&flags.node_status_update_frequency).map_err(|e| {
                invalid(
                    "node-status-update-frequency",
                    &flags.node_status_update_frequency,
                    e,
                )
            })?;
        if node_status_update_frequency.is_zero() {
            return Err(invalid(
                "node-status-update-frequency",
                &flags.node_status_update_frequency,
                "must be greater than 0",
            ));
        }
        if let Some(cidr) = flags.pod_cidr.as_deref().filter(|c| !is_ipv4_cidr(c)) {
            return Err(invalid(
                "pod-cidr",
                cidr,
                "expected an IPv4 CIDR such as 10.42.0.0/24",
            ));
        }
        if !flags.cgroup_root.starts_with('/') {
            return Err(invalid(
                "cgroup-root",
                &flags.cgroup_root,
                "must be an absolute path",
            ));
        }
        let kube_proxy = proxy::from_flags(&flags)?;
        let image_gc = image_gc::from_flags(&flags)?;
        let flannel = crate::flannel::FlannelConfig {
            backend: flags
                .flannel_backend
                .parse()
                .map_err(|e| invalid("flannel-backend", &flags.flannel_backend, e))?,
            iface: flags.flannel_iface.clone().filter(|i| !i.is_empty()),
            direct_routing: flags.flannel_direct_routing,
            cluster_cidr: flags.cluster_cidr.trim().parse().map_err(|_| {
                invalid(
                    "cluster-cidr",
                    &flags.cluster_cidr,
                    "expected an IPv4 CIDR such as 10.42.0.0/16",
                )
            })?,
        };
        Ok(Config {
            image_gc,
            flannel,
            kube_proxy,
            kubeconfig: flags.kubeconfig,
            kube_proxy_kubeconfig: flags.kube_proxy_kubeconfig,
            server: flags.server.filter(|s| !s.is_empty()),
            token: flags.token.filter(|s| !s.is_empty()),
            ca_cert_hash: flags.ca_cert_hash.filter(|s| !s.is_empty()),
            node_name,
            node_ips,
            node_labels,
            register_with_taints,
            max_pods: flags.max_pods,
            pod_manifest_path: flags.pod_manifest_path,
            cluster_dns,
            cluster_domain: flags.cluster_domain,
            root_dir: flags.root_dir,
            eviction_hard,
            eviction,
            kube_reserved,
            system_reserved,
            cgroup_root: flags.cgroup_root,
            container_runtime_endpoint: flags.container_runtime_endpoint.filter(|e| !e.is_empty()),
            node_status_update_frequency,
            port: flags.port,
            address: flags.address,
            tls_cert_file: flags.tls_cert_file,
            tls_private_key_file: flags.tls_private_key_file,
            client_ca_file: flags.client_ca_file,
            fake_runtime: flags.fake_runtime,
            pod_cidr: flags.pod_cidr.filter(|c| !c.is_empty()),
            run_dir: flags.run_dir,
            pod_bridge: flags.pod_bridge,
            insecure_registries: flags
                .insecure_registry
                .into_iter()
                .map(|r| r.trim().to_owned())
                .filter(|r| !r.is_empty())
                .collect(),
            pod_logs_dir: flags.pod_logs_dir,
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn config(args: &[&str]) -> Result<Config> {
        let mut argv = vec!["r8s-agent"];
        argv.extend_from_slice(args);
        Config::from_flags_with_hostname(AgentFlags::try_parse_from(argv).unwrap(), "Host-A")
    }

    #[test]
    fn defaults_match_kubelet_and_r8s_design() {
        let c = config(&[]).unwrap();
        assert_eq!(c.node_name, "host-a");
        assert_eq!(c.max_pods, 110);
        assert_eq!(c.port, 10250);
        assert_eq!(c.cluster_dns, vec!["10.43.0.10".parse::<IpAddr>().unwrap()]);
        assert_eq!(c.cluster_domain, "cluster.local");
        assert_eq!(c.root_dir, PathBuf::from("/var/lib/r8s/agent"));
        assert_eq!(c.node_status_update_frequency, Duration::from_secs(10));
        assert_eq!(c.cgroup_root, "/");
        assert_eq!(c.eviction_hard.len(), 5);
        assert_eq!(c.eviction, EvictionSettings::default());
        assert!(c.kube_reserved.is_empty());
        assert!(c.container_runtime_endpoint.is_none());
    }

    #[test]
    fn flags_become_typed_values() {
        let c = config(&[
            "--hostname-override",
            "Node1",
            "--node-ip",
            "10.0.0.5",
            "--node-labels",
            "node.kubernetes.io/pool=a,team=x",
            "--register-with-taints",
            "dedicated=gpu:NoSchedule",
            "--eviction-hard",
            "memory.available<100Mi,nodefs.available<10%",
            "--kube-reserved",
            "cpu=100m,memory=256Mi",
            "--node-status-update-frequency",
            "1m",
        ])
        .unwrap();
        assert_eq!(c.node_name, "node1");
        assert_eq!(c.node_ips, vec!["10.0.0.5".parse::<IpAddr>().unwrap()]);
        assert_eq!(c.node_labels["team"], "x");
        assert_eq!(c.register_with_taints[0].effect, "NoSchedule");
        assert_eq!(c.eviction_hard.len(), 2);
        assert_eq!(c.kube_reserved["cpu"].milli_value(), 100);
        assert_eq!(c.node_status_update_frequency, Duration::from_secs(60));
    }

    #[test]
    fn insecure_registries_are_repeatable_and_comma_separated() {
        let c = config(&[
            "--insecure-registry",
            "10.0.0.1:5000,reg.local:5000",
            "--insecure-registry",
            "other:80",
        ])
        .unwrap();
        assert_eq!(
            c.insecure_registries,
            vec!["10.0.0.1:5000", "reg.local:5000", "other:80"]
        );
        assert!(config(&[]).unwrap().insecure_registries.is_empty());
    }

    #[test]
    fn invalid_flags_name_the_flag_like_pflag() {
        assert_eq!(
            config(&["--kube-reserved", "gpu=1"])
                .unwrap_err()
                .to_string(),
            "invalid argument \"gpu=1\" for \"--kube-reserved\" flag: cannot reserve \"gpu\" resource"
        );
        assert_eq!(
            config(&["--cluster-dns", "dns"]).unwrap_err().to_string(),
            "invalid argument \"dns\" for \"--cluster-dns\" flag: invalid string being converted to IP address: dns"
        );
        assert!(config(&["--node-labels", "kubernetes.io/foo=bar"]).is_err());
        assert!(config(&["--node-status-update-frequency", "0s"]).is_err());
        assert!(config(&["--pod-cidr", "10.42.0.0"]).is_err());
        assert!(config(&["--flannel-backend", "wireguard"]).is_err());
        assert_eq!(
            config(&["--eviction-soft", "memory.available<1Gi"])
                .unwrap_err()
                .to_string(),
            "invalid argument \"memory.available<1Gi\" for \"--eviction-soft\" flag: grace period must be specified for the soft eviction threshold memory.available"
        );
    }

    #[test]
    fn flannel_defaults_to_vxlan_on_the_node_ip_interface() {
        let c = config(&[]).unwrap();
        assert_eq!(c.flannel.backend, crate::flannel::Backend::Vxlan);
        assert_eq!(c.flannel.iface, None);
        assert!(c.flannel.direct_routing);
        assert_eq!(c.flannel.cluster_cidr.to_string(), "10.42.0.0/16");
        let c = config(&[
            "--flannel-backend",
            "host-gw",
            "--flannel-iface",
            "eth1",
            "--flannel-direct-routing=false",
        ])
        .unwrap();
        assert!(!c.flannel.direct_routing);
        assert_eq!(c.flannel.backend, crate::flannel::Backend::HostGw);
        assert_eq!(c.flannel.iface.as_deref(), Some("eth1"));
    }

    #[test]
    fn env_vars_feed_the_flags() {
        let flags = AgentFlags::try_parse_from(["r8s-agent", "--help"]);
        let help = flags.unwrap_err().to_string();
        assert!(help.contains("[env: R8S_MAX_PODS=]"));
        assert!(help.contains("--node-status-update-frequency"));
    }
}
