//! hostPorts (the CRI `PortMapping`s of a sandbox), as the CNI portmap plugin does them for
//! containerd: traffic to a local address of the node on the host port is DNATed to the
//! pod, in an nftables table of the runtime's own (`<bridge>-hostport`). Traffic from the
//! pod itself (hairpin) or from localhost is masqueraded so that replies come back the same
//! way. The table is rendered whole from every ready sandbox's mappings and replaced in one
//! transaction; with no mapping left it is deleted. UDP flows to a hostPort whose mapping
//! changed are then forgotten by conntrack (`stale_udp_flows`), as portmap and kubelet do.
use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::sync::Arc;

use r8s_nft::conntrack::{Conntrack, FlowFilter, NetlinkConntrack};
use tracing::{debug, warn};

use crate::proto;

/// The mark bit of connections to masquerade (portmap's default `0x2000`; kube-proxy uses
/// `0x4000`, so the two never clash).
const MASQ_MARK: u32 = 0x2000;

/// One hostPort of one pod.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
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

/// The UDP flows that the change of the table from `old` to `new` makes stale: every flow
/// to a UDP hostPort that was added, removed or now leads elsewhere. Conntrack keeps a UDP
/// flow on the path its first datagram took, so without this a client keeps sending to a
/// removed pod, or past a new mapping to whatever answered the port before (portmap's
/// `deletePortmapStaleConnections`, kubelet's hostPort conntrack cleanup). With a hostIP only
/// flows to that address are stale.
pub fn stale_udp_flows(old: &[HostPort], new: &[HostPort]) -> BTreeSet<FlowFilter> {
    let udp = |ports: &[HostPort]| -> BTreeSet<HostPort> {
        ports
            .iter()
            .filter(|p| p.protocol == "udp")
            .cloned()
            .collect()
    };
    let (old, new) = (udp(old), udp(new));
    old.symmetric_difference(&new)
        .map(|p| FlowFilter {
            orig_dst: p.host_ip,
            orig_dst_port: p.host_port,
            ..FlowFilter::default()
        })
        .collect()
}

/// Deletes the conntrack entries of the `stale` flows, opening ctnetlink (in the runtime's
/// network namespace) on first use. Failures are only logged: the table is right, and the
/// flows expire on their own.
pub async fn forget_flows(
    conntrack: &mut Option<Arc<NetlinkConntrack>>,
    stale: BTreeSet<FlowFilter>,
) {
    if stale.is_empty() {
        return;
    }
    let ports: Vec<u16> = stale.iter().map(|f| f.orig_dst_port).collect();
    let ct = match conntrack {
        Some(ct) => ct.clone(),
        None => match NetlinkConntrack::new(None) {
            Ok(ct) => conntrack.insert(Arc::new(ct)).clone(),
            Err(err) => {
                warn!(?ports, error = %err, source = ?std::error::Error::source(&err), "cannot open conntrack to delete stale udp hostPort flows");
                return;
            }
        },
    };
    match tokio::task::spawn_blocking(move || ct.delete(&stale)).await {
        Ok(Ok(deleted)) => debug!(?ports, deleted, "deleted stale udp hostPort flows"),
        Ok(Err(err)) => {
            warn!(?ports, error = %err, source = ?std::error::Error::source(&err), "failed to delete stale udp hostPort flows")
        }
        Err(err) => warn!(?ports, %err, "conntrack task failed"),
    }
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

    fn udp(host_ip: Option<Ipv4Addr>, host_port: u16, pod: u8) -> HostPort {
        HostPort {
            protocol: "udp",
            host_ip,
            host_port,
            pod_ip: Ipv4Addr::new(10, 42, 0, pod),
            container_port: 53,
        }
    }

    fn any_address(port: u16) -> FlowFilter {
        FlowFilter {
            orig_dst: None,
            orig_dst_port: port,
            ..FlowFilter::default()
        }
    }

    #[test]
    fn added_and_removed_udp_host_ports_make_their_flows_stale() {
        let kept = udp(None, 5000, 5);
        let old = [kept.clone(), udp(None, 5001, 6)];
        let host_ip = Ipv4Addr::new(10, 0, 0, 1);
        let new = [kept, udp(Some(host_ip), 5002, 7)];
        assert_eq!(
            stale_udp_flows(&old, &new).into_iter().collect::<Vec<_>>(),
            vec![
                any_address(5001),
                FlowFilter {
                    orig_dst: Some(host_ip),
                    orig_dst_port: 5002,
                    ..FlowFilter::default()
                },
            ]
        );
    }

    #[test]
    fn a_udp_host_port_moved_to_another_pod_makes_its_flows_stale() {
        let stale = stale_udp_flows(&[udp(None, 5000, 5)], &[udp(None, 5000, 6)]);
        assert_eq!(
            stale.into_iter().collect::<Vec<_>>(),
            vec![any_address(5000)]
        );
    }

    #[test]
    fn unchanged_and_tcp_host_ports_make_nothing_stale() {
        let mut tcp = udp(None, 8080, 5);
        tcp.protocol = "tcp";
        let same = [udp(None, 5000, 5)];
        assert!(stale_udp_flows(&same, &same).is_empty());
        assert!(stale_udp_flows(&[tcp], &[]).is_empty());
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
