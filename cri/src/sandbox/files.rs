//! Per-pod files mounted into every container: /etc/hosts, /etc/resolv.conf, /etc/hostname.
use std::path::Path;

use crate::proto;

/// Writes hosts, resolv.conf and hostname for a pod into `dir`.
pub fn write_pod_files(
    dir: &Path,
    hostname: &str,
    ip: Option<&str>,
    dns: Option<&proto::DnsConfig>,
) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("hostname"), format!("{hostname}\n"))?;
    std::fs::write(dir.join("hosts"), hosts(hostname, ip))?;
    let resolv = match dns {
        Some(d) if !(d.servers.is_empty() && d.searches.is_empty() && d.options.is_empty()) => {
            resolv_conf(d)
        }
        _ => std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
    };
    std::fs::write(dir.join("resolv.conf"), resolv)
}

fn hosts(hostname: &str, ip: Option<&str>) -> String {
    let mut s = String::from(
        "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n",
    );
    if let Some(ip) = ip {
        s.push_str(&format!("{ip}\t{hostname}\n"));
    }
    s
}

fn resolv_conf(d: &proto::DnsConfig) -> String {
    let mut s = String::new();
    for server in &d.servers {
        s.push_str(&format!("nameserver {server}\n"));
    }
    if !d.searches.is_empty() {
        s.push_str(&format!("search {}\n", d.searches.join(" ")));
    }
    if !d.options.is_empty() {
        s.push_str(&format!("options {}\n", d.options.join(" ")));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_follows_dns_config() {
        let d = proto::DnsConfig {
            servers: vec!["10.96.0.10".into()],
            searches: vec![
                "default.svc.cluster.local".into(),
                "svc.cluster.local".into(),
            ],
            options: vec!["ndots:5".into()],
        };
        assert_eq!(
            resolv_conf(&d),
            "nameserver 10.96.0.10\nsearch default.svc.cluster.local svc.cluster.local\noptions ndots:5\n"
        );
    }

    #[test]
    fn hosts_names_the_pod_ip() {
        assert!(hosts("web-0", Some("10.244.0.5")).ends_with("10.244.0.5\tweb-0\n"));
    }
}
