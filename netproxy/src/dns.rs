//! Cluster DNS answers (no I/O): what `cluster.local` names resolve to, computed from the same
//! Service and EndpointSlice caches as the proxy rules, following the Kubernetes DNS spec
//! (https://github.com/kubernetes/dns/blob/master/docs/specification.md).
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::model::SERVICE_NAME_LABEL;

/// TTL of every answer, as CoreDNS's kubernetes plugin default.
pub const TTL: u32 = 5;

/// Query types the cluster zone answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryType {
    /// IPv4 address.
    A,
    /// IPv6 address (never present: the cluster is IPv4).
    Aaaa,
    /// Service record.
    Srv,
    /// Reverse lookup.
    Ptr,
    /// Canonical name.
    Cname,
    /// Anything else.
    Other,
}

/// Data of one answer record.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum RecordData {
    /// An IPv4 address.
    A(Ipv4Addr),
    /// `priority weight port target`.
    Srv {
        /// Priority.
        priority: u16,
        /// Weight.
        weight: u16,
        /// Port.
        port: u16,
        /// Target host name (fully qualified, with trailing dot).
        target: String,
    },
    /// A name, for PTR answers.
    Ptr(String),
    /// A canonical name, for ExternalName Services.
    Cname(String),
}

/// The answer to one question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The name exists and has these records of the asked type.
    Records(Vec<RecordData>),
    /// The name exists but has no records of the asked type.
    NoData,
    /// The name does not exist in the cluster zone.
    NxDomain,
    /// The name is not in the cluster zone: forward it upstream.
    NotOurs,
}

#[derive(Debug, Default)]
struct ServiceEntry {
    cluster_ip: Option<Ipv4Addr>,
    external_name: Option<String>,
    /// Ready endpoint addresses with their optional hostnames (headless Services).
    endpoints: Vec<(Ipv4Addr, Option<String>)>,
    /// Named ports: (name, protocol lowercase, port, endpoint target port).
    ports: Vec<(String, String, u16, Option<u16>)>,
}

/// An index of the cluster zone built from one snapshot of the caches.
#[derive(Debug, Default)]
pub struct DnsIndex {
    zone: String,
    services: BTreeMap<(String, String), ServiceEntry>,
    namespaces: BTreeSet<String>,
    ptr: BTreeMap<Ipv4Addr, String>,
}

fn normalize(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

impl DnsIndex {
    /// Builds the index for zone `domain` (e.g. `cluster.local`).
    pub fn build<'a>(
        domain: &str,
        services: impl IntoIterator<Item = &'a Service>,
        slices: impl IntoIterator<Item = &'a EndpointSlice>,
    ) -> Self {
        let mut idx = DnsIndex {
            zone: normalize(domain),
            ..Default::default()
        };
        for svc in services {
            let (Some(ns), Some(name), Some(spec)) = (
                svc.metadata.namespace.clone(),
                svc.metadata.name.clone(),
                svc.spec.as_ref(),
            ) else {
                continue;
            };
            idx.namespaces.insert(ns.clone());
            let mut entry = ServiceEntry::default();
            if spec.type_.as_deref() == Some("ExternalName") {
                entry.external_name = spec.external_name.as_deref().map(normalize);
            } else {
                entry.cluster_ip = spec.cluster_ip.as_deref().and_then(|ip| ip.parse().ok());
            }
            for p in spec.ports.iter().flatten() {
                if let (Some(pn), Ok(port)) = (p.name.clone(), u16::try_from(p.port)) {
                    let proto = p.protocol.as_deref().unwrap_or("TCP").to_ascii_lowercase();
                    entry.ports.push((pn, proto, port, None));
                }
            }
            if let Some(ip) = entry.cluster_ip {
                idx.ptr.insert(ip, format!("{name}.{ns}.svc.{}", idx.zone));
            }
            idx.services.insert((ns, name), entry);
        }
        for slice in slices {
            let ns = slice.metadata.namespace.clone().unwrap_or_default();
            let Some(svc) = slice
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(SERVICE_NAME_LABEL))
            else {
                continue;
            };
            let zone = idx.zone.clone();
            let Some(entry) = idx.services.get_mut(&(ns.clone(), svc.clone())) else {
                continue;
            };
            if entry.cluster_ip.is_some() || slice.address_type != "IPv4" {
                continue;
            }
            for (pn, _, _, target) in &mut entry.ports {
                *target = slice.ports.iter().flatten().find_map(|p| {
                    (p.name.as_deref() == Some(pn.as_str()))
                        .then_some(p.port)
                        .flatten()
                        .and_then(|n| u16::try_from(n).ok())
                });
            }
            for ep in &slice.endpoints {
                if ep.conditions.as_ref().and_then(|c| c.ready) == Some(false) {
                    continue;
                }
                for addr in &ep.addresses {
                    let Ok(ip) = addr.parse::<Ipv4Addr>() else {
                        continue;
                    };
                    if let Some(h) = &ep.hostname {
                        idx.ptr.insert(ip, format!("{h}.{svc}.{ns}.svc.{zone}"));
                    }
                    entry.endpoints.push((ip, ep.hostname.clone()));
                }
            }
        }
        for entry in idx.services.values_mut() {
            entry.endpoints.sort();
            entry.endpoints.dedup();
        }
        idx
    }

    /// The zone, e.g. `cluster.local` (no trailing dot).
    pub fn zone(&self) -> &str {
        &self.zone
    }

    /// Answers one question.
    pub fn answer(&self, name: &str, qtype: QueryType) -> Answer {
        let name = normalize(name);
        if let Some(rev) = name.strip_suffix(".in-addr.arpa") {
            return self.reverse(rev, qtype);
        }
        let Some(rel) = name.strip_suffix(self.zone.as_str()).and_then(|r| {
            if r.is_empty() {
                Some("")
            } else {
                r.strip_suffix('.')
            }
        }) else {
            return Answer::NotOurs;
        };
        let labels: Vec<&str> = if rel.is_empty() {
            Vec::new()
        } else {
            rel.split('.').collect()
        };
        match labels.as_slice() {
            [] | ["svc"] | ["pod"] => Answer::NoData,
            [ns, "svc"] | [ns, "pod"] => {
                if self.namespaces.contains(*ns) {
                    Answer::NoData
                } else {
                    Answer::NxDomain
                }
            }
            [svc, ns, "svc"] => self.service(ns, svc, qtype),
            [host, svc, ns, "svc"] if !host.starts_with('_') => self.endpoint(ns, svc, host, qtype),
            [port, proto, svc, ns, "svc"] if port.starts_with('_') && proto.starts_with('_') => {
                self.srv(ns, svc, &port[1..], &proto[1..], qtype)
            }
            [proto, svc, ns, "svc"] if proto.starts_with('_') => {
                // `_proto.svc.ns.svc.zone` exists when a port has that protocol.
                self.services
                    .get(&(ns.to_string(), svc.to_string()))
                    .filter(|e| e.ports.iter().any(|p| p.1 == proto[1..]))
                    .map_or(Answer::NxDomain, |_| Answer::NoData)
            }
            [ip, _ns, "pod"] => match ip.replace('-', ".").parse::<Ipv4Addr>() {
                Ok(addr) if qtype == QueryType::A => Answer::Records(vec![RecordData::A(addr)]),
                Ok(_) => Answer::NoData,
                Err(_) => Answer::NxDomain,
            },
            _ => Answer::NxDomain,
        }
    }

    fn service(&self, ns: &str, svc: &str, qtype: QueryType) -> Answer {
        let Some(e) = self.services.get(&(ns.to_string(), svc.to_string())) else {
            return Answer::NxDomain;
        };
        if let Some(target) = &e.external_name {
            return Answer::Records(vec![RecordData::Cname(format!("{target}."))]);
        }
        let records: Vec<RecordData> = match (qtype, e.cluster_ip) {
            (QueryType::A, Some(ip)) => vec![RecordData::A(ip)],
            (QueryType::A, None) => e
                .endpoints
                .iter()
                .map(|(ip, _)| RecordData::A(*ip))
                .collect(),
            (QueryType::Srv, _) => e
                .ports
                .iter()
                .flat_map(|p| self.srv_records(ns, svc, e, p))
                .collect(),
            _ => Vec::new(),
        };
        if records.is_empty() {
            Answer::NoData
        } else {
            Answer::Records(records)
        }
    }

    fn srv_records(
        &self,
        ns: &str,
        svc: &str,
        e: &ServiceEntry,
        p: &(String, String, u16, Option<u16>),
    ) -> Vec<RecordData> {
        if e.cluster_ip.is_some() {
            return vec![RecordData::Srv {
                priority: 0,
                weight: 100,
                port: p.2,
                target: format!("{svc}.{ns}.svc.{}.", self.zone),
            }];
        }
        e.endpoints
            .iter()
            .map(|(ip, host)| {
                let host = host
                    .clone()
                    .unwrap_or_else(|| ip.to_string().replace('.', "-"));
                RecordData::Srv {
                    priority: 0,
                    weight: 100,
                    port: p.3.unwrap_or(p.2),
                    target: format!("{host}.{svc}.{ns}.svc.{}.", self.zone),
                }
            })
            .collect()
    }

    fn srv(&self, ns: &str, svc: &str, port: &str, proto: &str, qtype: QueryType) -> Answer {
        let Some(e) = self.services.get(&(ns.to_string(), svc.to_string())) else {
            return Answer::NxDomain;
        };
        let Some(p) = e.ports.iter().find(|p| p.0 == port && p.1 == proto) else {
            return Answer::NxDomain;
        };
        if qtype != QueryType::Srv {
            return Answer::NoData;
        }
        match self.srv_records(ns, svc, e, p) {
            r if r.is_empty() => Answer::NoData,
            r => Answer::Records(r),
        }
    }

    fn endpoint(&self, ns: &str, svc: &str, host: &str, qtype: QueryType) -> Answer {
        let Some(e) = self.services.get(&(ns.to_string(), svc.to_string())) else {
            return Answer::NxDomain;
        };
        let ips: Vec<RecordData> = e
            .endpoints
            .iter()
            .filter(|(ip, h)| {
                h.as_deref() == Some(host) || ip.to_string().replace('.', "-") == host
            })
            .map(|(ip, _)| RecordData::A(*ip))
            .collect();
        match (ips.is_empty(), qtype) {
            (true, _) => Answer::NxDomain,
            (false, QueryType::A) => Answer::Records(ips),
            (false, _) => Answer::NoData,
        }
    }

    fn reverse(&self, rev: &str, qtype: QueryType) -> Answer {
        let octets: Vec<&str> = rev.split('.').collect();
        let [d, c, b, a] = octets.as_slice() else {
            return Answer::NotOurs;
        };
        let Ok(ip) = format!("{a}.{b}.{c}.{d}").parse::<Ipv4Addr>() else {
            return Answer::NotOurs;
        };
        match (self.ptr.get(&ip), qtype) {
            (None, _) => Answer::NotOurs,
            (Some(n), QueryType::Ptr) => Answer::Records(vec![RecordData::Ptr(format!("{n}."))]),
            (Some(_), _) => Answer::NoData,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::tests::{service, slice};

    fn index() -> DnsIndex {
        let web = service("default", "web", "10.43.0.10", &[("http", 80)]);
        let mut headless = service("default", "db", "None", &[("pg", 5432)]);
        headless.spec.as_mut().unwrap().cluster_ip = Some("None".into());
        let mut sl = slice(
            "default",
            "db",
            ("pg", 5432),
            &[
                ("10.42.0.7", "n1", true),
                ("10.42.0.8", "n1", true),
                ("10.42.0.9", "n1", false),
            ],
        );
        sl.endpoints[0].hostname = Some("db-0".into());
        DnsIndex::build("cluster.local.", [&web, &headless], [&sl])
    }

    #[test]
    fn cluster_ip_service_answers_its_cluster_ip() {
        assert_eq!(
            index().answer("web.default.svc.cluster.local.", QueryType::A),
            Answer::Records(vec![RecordData::A("10.43.0.10".parse().unwrap())])
        );
    }

    #[test]
    fn headless_service_answers_ready_endpoints() {
        assert_eq!(
            index().answer("db.default.svc.cluster.local", QueryType::A),
            Answer::Records(vec![
                RecordData::A("10.42.0.7".parse().unwrap()),
                RecordData::A("10.42.0.8".parse().unwrap()),
            ])
        );
        assert_eq!(
            index().answer("db-0.db.default.svc.cluster.local", QueryType::A),
            Answer::Records(vec![RecordData::A("10.42.0.7".parse().unwrap())])
        );
    }

    #[test]
    fn srv_for_named_ports() {
        assert_eq!(
            index().answer("_http._tcp.web.default.svc.cluster.local", QueryType::Srv),
            Answer::Records(vec![RecordData::Srv {
                priority: 0,
                weight: 100,
                port: 80,
                target: "web.default.svc.cluster.local.".into()
            }])
        );
        let Answer::Records(r) =
            index().answer("_pg._tcp.db.default.svc.cluster.local", QueryType::Srv)
        else {
            panic!("no SRV records");
        };
        assert_eq!(r.len(), 2);
        assert!(r.contains(&RecordData::Srv {
            priority: 0,
            weight: 100,
            port: 5432,
            target: "db-0.db.default.svc.cluster.local.".into()
        }));
    }

    #[test]
    fn nxdomain_versus_nodata() {
        let idx = index();
        assert_eq!(
            idx.answer("nope.default.svc.cluster.local", QueryType::A),
            Answer::NxDomain
        );
        assert_eq!(
            idx.answer("web.nope.svc.cluster.local", QueryType::A),
            Answer::NxDomain
        );
        assert_eq!(
            idx.answer("web.default.svc.cluster.local", QueryType::Aaaa),
            Answer::NoData
        );
        assert_eq!(
            idx.answer("default.svc.cluster.local", QueryType::A),
            Answer::NoData
        );
        assert_eq!(
            idx.answer("_http._udp.web.default.svc.cluster.local", QueryType::Srv),
            Answer::NxDomain
        );
        assert_eq!(idx.answer("example.com", QueryType::A), Answer::NotOurs);
    }

    #[test]
    fn pod_names_and_reverse_lookups() {
        let idx = index();
        assert_eq!(
            idx.answer("10-42-0-99.default.pod.cluster.local", QueryType::A),
            Answer::Records(vec![RecordData::A("10.42.0.99".parse().unwrap())])
        );
        assert_eq!(
            idx.answer("10.0.43.10.in-addr.arpa.", QueryType::Ptr),
            Answer::Records(vec![RecordData::Ptr(
                "web.default.svc.cluster.local.".into()
            )])
        );
        assert_eq!(
            idx.answer("1.1.168.192.in-addr.arpa", QueryType::Ptr),
            Answer::NotOurs
        );
    }
}
