//! Pod DNS settings as kubelet's `dns.Configurer.GetPodDNS`: from the pod's
//! dnsPolicy/dnsConfig, `--cluster-dns`, `--cluster-domain` and the host's
//! resolv.conf, the servers/searches/options handed to the sandbox.

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::Pod;

/// Upstream limits (`validation.MaxDNSSearchPaths`, `MaxDNSSearchListChars`,
/// `MaxDNSNameservers`).
pub const MAX_DNS_SEARCH_PATHS: usize = 32;
pub const MAX_DNS_SEARCH_LIST_CHARS: usize = 2048;
pub const MAX_DNS_NAMESERVERS: usize = 3;

/// A resolver configuration (CRI `DNSConfig`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DnsConfig {
    pub servers: Vec<String>,
    pub searches: Vec<String>,
    pub options: Vec<String>,
}

impl DnsConfig {
    /// The resolv.conf text for this configuration.
    pub fn to_resolv_conf(&self) -> String {
        let mut out = String::new();
        if !self.searches.is_empty() {
            out.push_str(&format!("search {}\n", self.searches.join(" ")));
        }
        for s in &self.servers {
            out.push_str(&format!("nameserver {s}\n"));
        }
        if !self.options.is_empty() {
            out.push_str(&format!("options {}\n", self.options.join(" ")));
        }
        out
    }
}

/// Parses a host resolv.conf: nameservers, the last `search` line, options.
pub fn parse_resolv_conf(text: &str) -> DnsConfig {
    let mut cfg = DnsConfig::default();
    for line in text.lines() {
        let line = line.split(['#', ';']).next().unwrap_or_default();
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            ["nameserver", server, ..] => cfg.servers.push((*server).to_owned()),
            ["search", domains @ ..] => {
                cfg.searches = domains
                    .iter()
                    .map(|d| d.trim_end_matches('.').to_owned())
                    .collect();
            }
            ["options", opts @ ..] => cfg.options.extend(opts.iter().map(|o| (*o).to_owned())),
            _ => {}
        }
    }
    cfg
}

/// Why a pod's DNS could not be configured.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnsError {
    #[error("invalid DNSPolicy={0}")]
    InvalidPolicy(String),
}

fn omit_duplicates(items: Vec<String>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    items
        .into_iter()
        .filter(|i| seen.insert(i.clone()))
        .collect()
}

/// The node side of DNS: cluster DNS servers, domain, and the host resolver.
#[derive(Debug, Clone)]
pub struct DnsConfigurer {
    pub cluster_dns: Vec<IpAddr>,
    pub cluster_domain: String,
    pub host: DnsConfig,
}

enum PodDnsType {
    Cluster,
    Host,
    None,
}

impl DnsConfigurer {
    fn dns_type(pod: &Pod) -> Result<PodDnsType, DnsError> {
        let spec = pod.spec.clone().unwrap_or_default();
        let host_network = spec.host_network == Some(true);
        match spec.dns_policy.as_deref().unwrap_or("ClusterFirst") {
            "None" => Ok(PodDnsType::None),
            "ClusterFirstWithHostNet" => Ok(PodDnsType::Cluster),
            "ClusterFirst" if !host_network => Ok(PodDnsType::Cluster),
            "ClusterFirst" | "Default" => Ok(PodDnsType::Host),
            other => Err(DnsError::InvalidPolicy(other.to_owned())),
        }
    }

    /// The DNS settings of `pod`.
    pub fn pod_dns(&self, pod: &Pod) -> Result<DnsConfig, DnsError> {
        let mut cfg = self.host.clone();
        match Self::dns_type(pod)? {
            PodDnsType::None => cfg = DnsConfig::default(),
            PodDnsType::Cluster if !self.cluster_dns.is_empty() => {
                cfg.servers = self.cluster_dns.iter().map(ToString::to_string).collect();
                if !self.cluster_domain.is_empty() {
                    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
                    let d = &self.cluster_domain;
                    let mut searches = vec![format!("{ns}.svc.{d}"), format!("svc.{d}"), d.clone()];
                    searches.extend(cfg.searches);
                    cfg.searches = omit_duplicates(searches);
                }
                cfg.options = vec!["ndots:5".to_owned()];
            }
            // Without --cluster-dns, ClusterFirst pods fall back to the host's resolver.
            PodDnsType::Cluster | PodDnsType::Host => {}
        }
        if let Some(extra) = pod.spec.as_ref().and_then(|s| s.dns_config.as_ref()) {
            let mut servers = cfg.servers;
            servers.extend(extra.nameservers.clone().unwrap_or_default());
            cfg.servers = omit_duplicates(servers);
            let mut searches = cfg.searches;
            searches.extend(extra.searches.clone().unwrap_or_default());
            cfg.searches = omit_duplicates(searches);
            let mut options: BTreeMap<String, String> = cfg
                .options
                .iter()
                .map(|o| match o.split_once(':') {
                    Some((k, v)) => (k.to_owned(), v.to_owned()),
                    None => (o.clone(), String::new()),
                })
                .collect();
            for o in extra.options.iter().flatten() {
                options.insert(
                    o.name.clone().unwrap_or_default(),
                    o.value.clone().unwrap_or_default(),
                );
            }
            cfg.options = options
                .into_iter()
                .map(|(k, v)| if v.is_empty() { k } else { format!("{k}:{v}") })
                .collect();
        }
        Ok(fit_limits(cfg))
    }
}

/// Drops nameservers and search paths beyond upstream's limits.
fn fit_limits(mut cfg: DnsConfig) -> DnsConfig {
    cfg.servers.truncate(MAX_DNS_NAMESERVERS);
    cfg.searches.truncate(MAX_DNS_SEARCH_PATHS);
    while cfg.searches.join(" ").len() > MAX_DNS_SEARCH_LIST_CHARS {
        cfg.searches.pop();
    }
    cfg
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{PodDNSConfig, PodDNSConfigOption, PodSpec};

    use super::*;

    fn configurer() -> DnsConfigurer {
        DnsConfigurer {
            cluster_dns: vec!["10.43.0.10".parse().unwrap()],
            cluster_domain: "cluster.local".to_owned(),
            host: parse_resolv_conf("nameserver 1.1.1.1\nsearch example.com.\noptions edns0\n"),
        }
    }

    fn pod(policy: Option<&str>, host_network: bool) -> Pod {
        let mut p = Pod::default();
        p.metadata.namespace = Some("shop".to_owned());
        p.spec = Some(PodSpec {
            dns_policy: policy.map(str::to_owned),
            host_network: Some(host_network),
            ..PodSpec::default()
        });
        p
    }

    #[test]
    fn cluster_first_uses_cluster_dns_and_searches() {
        let cfg = configurer()
            .pod_dns(&pod(Some("ClusterFirst"), false))
            .unwrap();
        assert_eq!(
            cfg.to_resolv_conf(),
            "search shop.svc.cluster.local svc.cluster.local cluster.local example.com\nnameserver 10.43.0.10\noptions ndots:5\n"
        );
    }

    #[test]
    fn host_network_and_default_use_the_host_resolver() {
        let host = configurer().host;
        assert_eq!(
            configurer()
                .pod_dns(&pod(Some("ClusterFirst"), true))
                .unwrap(),
            host
        );
        assert_eq!(
            configurer().pod_dns(&pod(Some("Default"), false)).unwrap(),
            host
        );
        let with_host_net = configurer()
            .pod_dns(&pod(Some("ClusterFirstWithHostNet"), true))
            .unwrap();
        assert_eq!(with_host_net.servers, ["10.43.0.10"]);
    }

    #[test]
    fn none_policy_takes_only_the_pod_dns_config() {
        let mut p = pod(Some("None"), false);
        p.spec.as_mut().unwrap().dns_config = Some(PodDNSConfig {
            nameservers: Some(vec!["8.8.8.8".to_owned()]),
            searches: Some(vec!["a.example".to_owned()]),
            options: Some(vec![PodDNSConfigOption {
                name: Some("ndots".to_owned()),
                value: Some("2".to_owned()),
            }]),
        });
        let cfg = configurer().pod_dns(&p).unwrap();
        assert_eq!(cfg.servers, ["8.8.8.8"]);
        assert_eq!(cfg.searches, ["a.example"]);
        assert_eq!(cfg.options, ["ndots:2"]);
    }

    #[test]
    fn pod_options_override_cluster_defaults() {
        let mut p = pod(None, false);
        p.spec.as_mut().unwrap().dns_config = Some(PodDNSConfig {
            options: Some(vec![
                PodDNSConfigOption {
                    name: Some("ndots".to_owned()),
                    value: Some("1".to_owned()),
                },
                PodDNSConfigOption {
                    name: Some("single-request".to_owned()),
                    value: None,
                },
            ]),
            ..PodDNSConfig::default()
        });
        let cfg = configurer().pod_dns(&p).unwrap();
        assert_eq!(cfg.options, ["ndots:1", "single-request"]);
    }

    #[test]
    fn unknown_policy_is_an_error_and_limits_apply() {
        assert_eq!(
            configurer()
                .pod_dns(&pod(Some("Sometimes"), false))
                .unwrap_err()
                .to_string(),
            "invalid DNSPolicy=Sometimes"
        );
        let mut c = configurer();
        c.cluster_dns = (1..=5).map(|i| IpAddr::from([10, 0, 0, i])).collect();
        assert_eq!(c.pod_dns(&pod(None, false)).unwrap().servers.len(), 3);
    }
}
