//! hostPorts (the CRI `PortMapping`s of a sandbox), as the CNI portmap plugin does them for
//! containerd: traffic to a local address of the node on the host port is DNATed to the
//! pod, in an nftables table of the runtime's own (`<bridge>-hostport`). Traffic from the
//! pod itself (hairpin) or from localhost is masqueraded so that replies come back the same
//! way. The table is rendered whole from every ready sandbox's mappings and replaced in one
//! transaction; with no mapping left it is deleted.
use std::fmt::Write as _;
use std::net::Ipv4Addr;

use tracing::warn;

use crate::proto;

/// The mark bit of connections to masquerade (portmap's default `0x2000`; kube-proxy uses
/// `0x4000`, so the two never clash).
const MASQ_MARK: u32 = 0x2000;

/// One hostPort of one pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    pub protocol: &'static str,
    /// Only traffic to this address; `None`: any local address.
    pub host_ip: Option<Ipv4Addr>,
    pub host_port: u16,
    pub pod_ip: Ipv4Addr,
    pub container_port: u16,
}

/// The name of the runtime's hostPort table: one per node bridge, so that several runtimes
/// in one network namespace (tests) never share a table.
pub fn table_name(bridge: &str) -> String {
    format!("{bridge}-hostport")
}

/// The hostPorts of a sandbox with address `pod_ip`. Mappings without a host port, or with
/// an IPv6 host address (the pod network is IPv4), are skipped.
pub fn of_sandbox(pod_ip: Ipv4Addr, mappings: &[proto::PortMapping]) -> Vec<HostPort> {
    mappings
        .iter()
        .filter_map(|m| {
            let host_port = u16::try_from(m.host_port).ok().filter(|p| *p > 0)?;
            let container_port = u16::try_from(m.container_port).ok().filter(|p| *p > 0)?;
            let protocol = match proto::Protocol::try_from(m.protocol) {
                Ok(proto::Protocol::Udp) => "udp",
                Ok(proto::Protocol::Sctp) => "sctp",
                _ => "tcp",
            };
            let host_ip = match m.host_ip.as_str() {
                "" | "0.0.0.0" => None,
                ip => match ip.parse::<Ipv4Addr>() {
                    Ok(ip) => Some(ip),
                    Err(_) => {
                        warn!(
                            host_ip = ip,
                            host_port, "skipping hostPort: not an IPv4 address"
                        );
                        return None;
                    }
                },
            };
            Some(HostPort {
                protocol,
                host_ip,
                host_port,
                pod_ip,
                container_port,
            })
        })
        .collect()
}

/// Lets localhost reach hostPorts (portmap's `snat` for 127.0.0.1): traffic from 127/8 is
/// masqueraded on its way to the pod, which the kernel allows only with `route_localnet`
/// on the bridge.
pub fn allow_localhost(bridge: &str) {
    let path = format!("/proc/sys/net/ipv4/conf/{bridge}/route_localnet");
    if let Err(err) = std::fs::write(&path, "1") {
        warn!(path, ?err, "cannot allow hostPorts from localhost");
    }
}

/// The transaction that leaves exactly `ports` in `table`: the table is created (so that the
/// delete never fails), deleted, and created again with its rules, all at once.
pub fn render(table: &str, ports: &[HostPort]) -> String {
    let mut s = r8s_nft::delete_table_commands(table).join("\n") + "\n";
    if ports.is_empty() {
        return s;
    }
    let _ = writeln!(s, "table ip {table} {{");
    // `dstnat` (-100) is a priority name of prerouting only in nft 1.0.6.
    for hook in ["prerouting", "output"] {
        let _ = writeln!(
            s,
            "  chain {hook} {{\n    type nat hook {hook} priority -100; policy accept;\n    fib daddr type local jump hostports\n  }}"
        );
    }
    let _ = writeln!(
        s,
        "  chain postrouting {{\n    type nat hook postrouting priority srcnat; policy accept;\n    meta mark & {MASQ_MARK:#x} == {MASQ_MARK:#x} masquerade\n  }}"
    );
    s.push_str("  chain hostports {\n");
    for p in ports {
        let dst = match p.host_ip {
            Some(ip) => format!("ip daddr {ip} {} dport {}", p.protocol, p.host_port),
            None => format!("{} dport {}", p.protocol, p.host_port),
        };
        for src in [p.pod_ip.to_string(), "127.0.0.0/8".to_string()] {
            let _ = writeln!(
                s,
                "    ip saddr {src} {dst} meta mark set meta mark | {MASQ_MARK:#x}"
            );
        }
        let _ = writeln!(s, "    {dst} dnat to {}:{}", p.pod_ip, p.container_port);
    }
    s.push_str("  }\n}\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapping(
        protocol: proto::Protocol,
        host_ip: &str,
        host: i32,
        container: i32,
    ) -> proto::PortMapping {
        proto::PortMapping {
            protocol: protocol as i32,
            container_port: container,
            host_port: host,
            host_ip: host_ip.into(),
        }
    }

    #[test]
    fn mappings_without_host_port_or_with_ipv6_are_skipped() {
        let ip = Ipv4Addr::new(10, 42, 0, 5);
        let ports = of_sandbox(
            ip,
            &[
                mapping(proto::Protocol::Tcp, "", 8080, 80),
                mapping(proto::Protocol::Udp, "10.0.0.1", 5353, 53),
                mapping(proto::Protocol::Tcp, "", 0, 81),
                mapping(proto::Protocol::Tcp, "::1", 9090, 90),
                mapping(proto::Protocol::Sctp, "0.0.0.0", 7000, 7000),
            ],
        );
        assert_eq!(
            ports,
            vec![
                HostPort {
                    protocol: "tcp",
                    host_ip: None,
                    host_port: 8080,
                    pod_ip: ip,
                    container_port: 80
                },
                HostPort {
                    protocol: "udp",
                    host_ip: Some(Ipv4Addr::new(10, 0, 0, 1)),
                    host_port: 5353,
                    pod_ip: ip,
                    container_port: 53
                },
                HostPort {
                    protocol: "sctp",
                    host_ip: None,
                    host_port: 7000,
                    pod_ip: ip,
                    container_port: 7000
                },
            ]
        );
    }

    #[test]
    fn no_ports_deletes_the_table() {
        assert_eq!(
            render("r8s0-hostport", &[]),
            "add table ip r8s0-hostport\ndelete table ip r8s0-hostport\n"
        );
    }

    #[test]
    fn a_port_is_dnated_and_hairpin_and_localhost_are_masqueraded() {
        let ports = of_sandbox(
            Ipv4Addr::new(10, 42, 0, 5),
            &[mapping(proto::Protocol::Udp, "10.0.0.1", 5353, 53)],
        );
        let script = render("r8s0-hostport", &ports);
        for line in [
            "fib daddr type local jump hostports",
            "type nat hook output priority -100; policy accept;",
            "meta mark & 0x2000 == 0x2000 masquerade",
            "ip saddr 10.42.0.5 ip daddr 10.0.0.1 udp dport 5353 meta mark set meta mark | 0x2000",
            "ip saddr 127.0.0.0/8 ip daddr 10.0.0.1 udp dport 5353 meta mark set meta mark | 0x2000",
            "ip daddr 10.0.0.1 udp dport 5353 dnat to 10.42.0.5:53",
        ] {
            assert!(script.contains(line), "{line:?} missing from\n{script}");
        }
        assert!(script.starts_with(
            "add table ip r8s0-hostport\ndelete table ip r8s0-hostport\ntable ip r8s0-hostport {"
        ));
    }
}
