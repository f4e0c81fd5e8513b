//! Cluster DNS answers (no I/O): what `cluster.local` names resolve to, computed from the same
//! Service and EndpointSlice caches as the proxy rules, following the Kubernetes DNS spec
//! (https://github.com/kubernetes/dns/blob/master/docs/specification.md).
use std::collections::{BTreeMap, HashMap};
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

#[derive(Debug, Clone, Default)]
struct ServiceEntry {
    cluster_ip: Option<Ipv4Addr>,
    external_name: Option<String>,
    /// Ready endpoint addresses with their optional hostnames (headless Services).
    endpoints: Vec<(Ipv4Addr, Option<String>)>,
    /// Named ports: (name, protocol lowercase, port, endpoint target port).
    ports: Vec<(String, String, u16, Option<u16>)>,
    /// The reverse names this Service gives (its ClusterIP, its hostnamed endpoints).
    ptr: Vec<(Ipv4Addr, String)>,
}

/// `(namespace, name)` of a Service.
type ServiceKey = (String, String);

/// An index of the cluster zone, kept per Service: built from a snapshot of
/// the caches, then changed one Service at a time (`set_service`).
#[derive(Debug, Clone, Default)]
pub struct DnsIndex {
    zone: String,
    services: BTreeMap<ServiceKey, ServiceEntry>,
    /// Namespaces with Services, and how many.
    namespaces: BTreeMap<String, usize>,
    /// Reverse names by address, each with the Service that gives it (two
    /// headless Services may name one endpoint; the first answers).
    ptr: BTreeMap<Ipv4Addr, BTreeMap<ServiceKey, String>>,
}

fn normalize(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// The Service an EndpointSlice belongs to.
fn slice_service(slice: &EndpointSlice) -> Option<ServiceKey> {
    let svc = slice.metadata.labels.as_ref()?.get(SERVICE_NAME_LABEL)?;
    Some((
        slice.metadata.namespace.clone().unwrap_or_default(),
        svc.clone(),
    ))
}

impl DnsIndex {
    /// An empty index for zone `domain` (e.g. `cluster.local`).
    pub fn new(domain: &str) -> Self {
        DnsIndex {
            zone: normalize(domain),
            ..Default::default()
        }
    }

    /// Builds the index for zone `domain` from every Service and EndpointSlice.
    pub fn build<'a>(
        domain: &str,
        services: impl IntoIterator<Item = &'a Service>,
        slices: impl IntoIterator<Item = &'a EndpointSlice>,
    ) -> Self {
        let mut by_service: HashMap<ServiceKey, Vec<&EndpointSlice>> = HashMap::new();
        for slice in slices {
            if let Some(key) = slice_service(slice) {
                by_service.entry(key).or_default().push(slice);
            }
        }
        let mut idx = DnsIndex::new(domain);
        for svc in services {
            let (Some(ns), Some(name)) = (&svc.metadata.namespace, &svc.metadata.name) else {
                continue;
            };
            let key = (ns.clone(), name.clone());
            let slices = by_service.remove(&key).unwrap_or_default();
            idx.set_service(key, Some(svc), slices);
        }
        idx
    }

    /// Replaces what Service `key` contributes (`None`: it is gone) with
    /// what `svc` and its EndpointSlices `slices` give.
    pub fn set_service<'a>(
        &mut self,
        key: ServiceKey,
        svc: Option<&Service>,
        slices: impl IntoIterator<Item = &'a EndpointSlice>,
    ) {
        if let Some(old) = self.services.remove(&key) {
            for (ip, _) in &old.ptr {
                if let Some(names) = self.ptr.get_mut(ip) {
                    names.remove(&key);
                    if names.is_empty() {
                        self.ptr.remove(ip);
                    }
                }
            }
            if let Some(n) = self.namespaces.get_mut(&key.0) {
                *n -= 1;
                if *n == 0 {
                    self.namespaces.remove(&key.0);
                }
            }
        }
        let Some(entry) = svc.and_then(|s| self.entry(&key, s, slices)) else {
            return;
        };
        for (ip, name) in &entry.ptr {
            self.ptr
                .entry(*ip)
                .or_default()
                .insert(key.clone(), name.clone());
        }
        *self.namespaces.entry(key.0.clone()).or_default() += 1;
        self.services.insert(key, entry);
    }

    fn entry<'a>(
        &self,
        (ns, name): &ServiceKey,
        svc: &Service,
        slices: impl IntoIterator<Item = &'a EndpointSlice>,
    ) -> Option<ServiceEntry> {
        let spec = svc.spec.as_ref()?;
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
            entry
                .ptr
                .push((ip, format!("{name}.{ns}.svc.{}", self.zone)));
            return Some(entry);
        }
        for slice in slices {
            if slice.address_type != "IPv4" {
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
                        entry
                            .ptr
                            .push((ip, format!("{h}.{name}.{ns}.svc.{}", self.zone)));
                    }
                    entry.endpoints.push((ip, ep.hostname.clone()));
                }
            }
        }
        entry.endpoints.sort();
        entry.endpoints.dedup();
        Some(entry)
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
                if self.namespaces.contains_key(*ns) {
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
        match (self.ptr.get(&ip).and_then(|n| n.values().next()), qtype) {
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

    fn key(ns: &str, name: &str) -> ServiceKey {
        (ns.into(), name.into())
    }

    #[test]
    fn changing_one_service_at_a_time_matches_a_full_build() {
        let web = service("default", "web", "10.43.0.10", &[("http", 80)]);
        let mut headless = service("default", "db", "None", &[("pg", 5432)]);
        headless.spec.as_mut().unwrap().cluster_ip = Some("None".into());
        let mut sl = slice("default", "db", ("pg", 5432), &[("10.42.0.7", "n1", true)]);
        sl.endpoints[0].hostname = Some("db-0".into());
        let other = service("tools", "ci", "10.43.0.11", &[("http", 80)]);

        let mut idx = DnsIndex::build("cluster.local", [&web], []);
        idx.set_service(key("default", "db"), Some(&headless), [&sl]);
        idx.set_service(key("tools", "ci"), Some(&other), []);
        let full = DnsIndex::build("cluster.local", [&web, &headless, &other], [&sl]);
        assert_eq!(format!("{idx:?}"), format!("{full:?}"));

        // Gone again: its namespace, names and reverse names go with it.
        idx.set_service(key("tools", "ci"), None, []);
        assert_eq!(
            idx.answer("x.tools.svc.cluster.local", QueryType::A),
            Answer::NxDomain
        );
        assert_eq!(
            idx.answer("tools.svc.cluster.local", QueryType::A),
            Answer::NxDomain
        );
        assert_eq!(
            idx.answer("11.0.43.10.in-addr.arpa", QueryType::Ptr),
            Answer::NotOurs
        );
        // A headless Service whose endpoint left: no record, no reverse name.
        idx.set_service(key("default", "db"), Some(&headless), []);
        assert_eq!(
            idx.answer("db-0.db.default.svc.cluster.local", QueryType::A),
            Answer::NxDomain
        );
        assert_eq!(
            idx.answer("7.0.42.10.in-addr.arpa", QueryType::Ptr),
            Answer::NotOurs
        );
        assert_eq!(
            format!("{idx:?}"),
            format!(
                "{:?}",
                DnsIndex::build("cluster.local", [&web, &headless], [])
            )
        );
    }

    #[test]
    fn an_address_two_services_name_keeps_the_other_name_when_one_goes() {
        let mut a = service("default", "a", "None", &[("p", 80)]);
        a.spec.as_mut().unwrap().cluster_ip = Some("None".into());
        let mut b = a.clone();
        b.metadata.name = Some("b".into());
        let mut sa = slice("default", "a", ("p", 80), &[("10.42.0.7", "n1", true)]);
        sa.endpoints[0].hostname = Some("h".into());
        let mut sb = slice("default", "b", ("p", 80), &[("10.42.0.7", "n1", true)]);
        sb.endpoints[0].hostname = Some("h".into());
        let mut idx = DnsIndex::build("cluster.local", [&a, &b], [&sa, &sb]);
        idx.set_service(key("default", "a"), None, []);
        assert_eq!(
            idx.answer("7.0.42.10.in-addr.arpa", QueryType::Ptr),
            Answer::Records(vec![RecordData::Ptr(
                "h.b.default.svc.cluster.local.".into()
            )])
        );
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
