//! Stale UDP conntrack entries after a Service sync: which flows the change of the Service
//! model makes stale (kube-proxy's `conntrack.CleanStaleEntries`); r8s-nft's ctnetlink client
//! deletes them.
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

pub use r8s_nft::conntrack::{Conntrack, ConntrackError, Flow, FlowFilter, NetlinkConntrack};

use crate::model::{Protocol, ServiceKey, ServicePort};

/// The addresses and ports a Service port is reached on: (address or any, port).
fn frontends(sp: &ServicePort) -> Vec<(Option<Ipv4Addr>, u16)> {
    let mut f = vec![(Some(sp.cluster_ip), sp.port)];
    f.extend(sp.external_ips.iter().map(|ip| (Some(*ip), sp.port)));
    f.extend(sp.node_port.map(|p| (None, p)));
    f
}

/// Which UDP flows the change from `old` to `new` makes stale:
/// - a Service port that had no endpoints and has some now: every flow to it that is not
///   DNATed to one of them (they met the reject or drop, and conntrack would keep them there).
///   Flows to its endpoints stay: after a restart every Service seems new, and deleting them
///   loses the replies of queries the DNS server holds until it has synced;
/// - an endpoint that is gone: every flow to the Service that was DNATed to it.
pub fn stale_flows(
    old: &BTreeMap<ServiceKey, Vec<ServicePort>>,
    new: &BTreeMap<ServiceKey, Vec<ServicePort>>,
) -> BTreeSet<FlowFilter> {
    let udp = |m: &'_ BTreeMap<ServiceKey, Vec<ServicePort>>| -> BTreeMap<String, ServicePort> {
        m.values()
            .flatten()
            .filter(|sp| sp.protocol == Protocol::Udp)
            .map(|sp| (sp.id(), sp.clone()))
            .collect()
    };
    let (old, new) = (udp(old), udp(new));
    let mut out = BTreeSet::new();
    for (id, after) in &new {
        let had = old.get(id).is_some_and(|b| !b.endpoints.is_empty());
        if !had && !after.endpoints.is_empty() {
            let endpoints: BTreeSet<Ipv4Addr> = after.endpoints.iter().map(|e| e.ip).collect();
            for (orig_dst, orig_dst_port) in frontends(after) {
                out.insert(FlowFilter {
                    orig_dst,
                    orig_dst_port,
                    reply_src: None,
                    keep_reply_srcs: endpoints.clone(),
                });
            }
        }
    }
    for (id, before) in &old {
        let kept: BTreeSet<Ipv4Addr> = new
            .get(id)
            .map(|a| a.endpoints.iter().map(|e| e.ip).collect())
            .unwrap_or_default();
        for ep in before.endpoints.iter().filter(|e| !kept.contains(&e.ip)) {
            for (orig_dst, orig_dst_port) in frontends(before) {
                out.insert(FlowFilter {
                    orig_dst,
                    orig_dst_port,
                    reply_src: Some(ep.ip),
                    keep_reply_srcs: BTreeSet::new(),
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::service_ports;
    use crate::model::tests::{service, slice};

    fn udp_model(ips: &[&str]) -> BTreeMap<ServiceKey, Vec<ServicePort>> {
        let mut svc = service("default", "dns", "10.43.0.53", &[("dns", 53)]);
        for p in svc.spec.as_mut().unwrap().ports.iter_mut().flatten() {
            p.protocol = Some("UDP".into());
        }
        let eps: Vec<(&str, &str, bool)> = ips.iter().map(|ip| (*ip, "n1", true)).collect();
        let mut sl = slice("default", "dns", ("dns", 5353), &eps);
        for p in sl.ports.iter_mut().flatten() {
            p.protocol = Some("UDP".into());
        }
        service_ports([&svc], [&sl])
    }

    #[test]
    fn removed_udp_endpoint_makes_its_flows_stale() {
        let old = udp_model(&["10.42.0.5", "10.42.0.6"]);
        let new = udp_model(&["10.42.0.6"]);
        let stale = stale_flows(&old, &new);
        assert_eq!(
            stale.into_iter().collect::<Vec<_>>(),
            vec![FlowFilter {
                orig_dst: Some("10.43.0.53".parse().unwrap()),
                orig_dst_port: 53,
                reply_src: Some("10.42.0.5".parse().unwrap()),
                keep_reply_srcs: BTreeSet::new(),
            }]
        );
    }

    #[test]
    fn first_endpoint_makes_every_flow_to_the_service_not_dnated_to_it_stale() {
        let stale = stale_flows(&udp_model(&[]), &udp_model(&["10.42.0.6"]));
        assert_eq!(
            stale.into_iter().collect::<Vec<_>>(),
            vec![FlowFilter {
                orig_dst: Some("10.43.0.53".parse().unwrap()),
                orig_dst_port: 53,
                reply_src: None,
                keep_reply_srcs: ["10.42.0.6".parse().unwrap()].into(),
            }]
        );
    }

    #[test]
    fn a_restart_keeps_the_flows_dnated_to_current_endpoints() {
        // The first sync after a restart starts from no model: every Service is new.
        let stale = stale_flows(&BTreeMap::new(), &udp_model(&["10.42.0.6"]));
        let flow = |reply_src: &str| Flow {
            orig_dst: "10.43.0.53".parse().unwrap(),
            orig_dst_port: 53,
            reply_src: reply_src.parse().unwrap(),
        };
        let deleted = |f: Flow| stale.iter().any(|s| s.matches(&f));
        assert!(!deleted(flow("10.42.0.6")), "a held query keeps its DNAT");
        assert!(deleted(flow("10.42.0.5")), "an endpoint gone while down");
        assert!(deleted(flow("10.43.0.53")), "a flow that met the reject");
    }

    #[test]
    fn unchanged_and_tcp_services_make_nothing_stale() {
        let m = udp_model(&["10.42.0.6"]);
        assert!(stale_flows(&m, &m).is_empty());
        let tcp = service_ports(
            [&service("default", "web", "10.43.0.9", &[("", 80)])],
            [&slice(
                "default",
                "web",
                ("", 80),
                &[("10.42.0.7", "n1", true)],
            )],
        );
        assert!(stale_flows(&tcp, &BTreeMap::new()).is_empty());
    }
}
