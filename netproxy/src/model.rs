//! Service model: turns Services and EndpointSlices into the per-port facts the rule builder needs (no I/O).
use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// Label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Default ClientIP affinity timeout (`sessionAffinityConfig.clientIP.timeoutSeconds`).
pub const DEFAULT_AFFINITY_TIMEOUT_SECONDS: u32 = 10800;

/// An IPv4 prefix such as `10.42.0.0/16`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv4Cidr {
    /// Network address (host bits cleared).
    pub addr: Ipv4Addr,
    /// Prefix length, 0..=32.
    pub len: u8,
}

/// Error parsing an [`Ipv4Cidr`].
#[derive(Debug, thiserror::Error)]
#[error("invalid IPv4 CIDR {0:?}")]
pub struct CidrError(String);

impl FromStr for Ipv4Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || CidrError(s.to_string());
        let (addr, len) = s.split_once('/').unwrap_or((s, "32"));
        let addr: Ipv4Addr = addr.parse().map_err(|_| err())?;
        let len: u8 = len.parse().map_err(|_| err())?;
        if len > 32 {
            return Err(err());
        }
        let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
        Ok(Self {
            addr: Ipv4Addr::from(u32::from(addr) & mask),
            len,
        })
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// L4 protocol of a Service port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    /// TCP (the default).
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

impl Protocol {
    fn parse(s: Option<&str>) -> Option<Self> {
        match s.unwrap_or("TCP") {
            "TCP" => Some(Self::Tcp),
            "UDP" => Some(Self::Udp),
            "SCTP" => Some(Self::Sctp),
            _ => None,
        }
    }

    /// Lowercase name as nftables and kube-proxy chain names spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
            Self::Sctp => "sctp",
        }
    }
}

/// One backend of a Service port.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Endpoint {
    /// Pod (or other backend) address.
    pub ip: Ipv4Addr,
    /// Target port, resolved through the EndpointSlice ports (named ports included).
    pub port: u16,
    /// Node the endpoint runs on, for Local traffic policies.
    pub node_name: Option<String>,
}

/// Everything the rule builder needs about one port of one Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    /// Namespace of the Service.
    pub namespace: String,
    /// Name of the Service.
    pub name: String,
    /// Name of the port (may be empty for single-port Services).
    pub port_name: String,
    /// L4 protocol.
    pub protocol: Protocol,
    /// ClusterIP.
    pub cluster_ip: Ipv4Addr,
    /// Service port.
    pub port: u16,
    /// NodePort, when allocated.
    pub node_port: Option<u16>,
    /// `spec.externalIPs` and `status.loadBalancer.ingress[].ip`.
    pub external_ips: Vec<Ipv4Addr>,
    /// ClientIP affinity timeout when `sessionAffinity: ClientIP`.
    pub affinity_timeout: Option<u32>,
    /// `internalTrafficPolicy: Local`.
    pub internal_local: bool,
    /// `externalTrafficPolicy: Local`.
    pub external_local: bool,
    /// Usable endpoints (ready, or serving-and-terminating when none is ready), sorted.
    pub endpoints: Vec<Endpoint>,
}

impl ServicePort {
    /// `ns/name/proto/portname`, the kube-proxy `ServicePortName` string that chain names carry.
    pub fn id(&self) -> String {
        format!(
            "{}/{}/{}/{}",
            self.namespace,
            self.name,
            self.protocol.as_str(),
            self.port_name
        )
    }
}

/// Key of a Service: `namespace/name`.
pub type ServiceKey = String;

/// Builds the per-port model of every routable Service, grouped by Service.
///
/// ExternalName and headless Services and non-IPv4 ClusterIPs have no rules and are skipped.
pub fn service_ports<'a>(
    services: impl IntoIterator<Item = &'a Service>,
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
) -> BTreeMap<ServiceKey, Vec<ServicePort>> {
    let mut slices_by_service: BTreeMap<(String, String), Vec<&EndpointSlice>> = BTreeMap::new();
    for slice in slices {
        if slice.address_type != "IPv4" {
            continue;
        }
        let ns = slice.metadata.namespace.clone().unwrap_or_default();
        let Some(svc) = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL))
        else {
            continue;
        };
        slices_by_service
            .entry((ns, svc.clone()))
            .or_default()
            .push(slice);
    }
    let mut out = BTreeMap::new();
    for svc in services {
        let ns = svc.metadata.namespace.clone().unwrap_or_default();
        let name = svc.metadata.name.clone().unwrap_or_default();
        let empty = Vec::new();
        let svc_slices = slices_by_service
            .get(&(ns.clone(), name.clone()))
            .unwrap_or(&empty);
        let ports = ports_of(svc, &ns, &name, svc_slices);
        if !ports.is_empty() {
            out.insert(service_key(&ns, &name), ports);
        }
    }
    out
}

/// The [`ServiceKey`] of a Service or of the Service an object in `namespace` names.
pub fn service_key(namespace: &str, name: &str) -> ServiceKey {
    format!("{namespace}/{name}")
}

/// The Service an EndpointSlice belongs to (its `kubernetes.io/service-name` label), if any.
pub fn slice_service(slice: &EndpointSlice) -> Option<ServiceKey> {
    let name = slice.metadata.labels.as_ref()?.get(SERVICE_NAME_LABEL)?;
    Some(service_key(
        slice.metadata.namespace.as_deref().unwrap_or_default(),
        name,
    ))
}

/// The per-port model of one Service from its own EndpointSlices (the incremental path of
/// [`service_ports`]); empty when the Service has no rules (headless, ExternalName, no IPv4).
pub fn service_model<'a>(
    svc: &Service,
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
) -> Vec<ServicePort> {
    let ns = svc.metadata.namespace.as_deref().unwrap_or_default();
    let name = svc.metadata.name.as_deref().unwrap_or_default();
    let slices: Vec<&EndpointSlice> = slices
        .into_iter()
        .filter(|s| s.address_type == "IPv4")
        .collect();
    ports_of(svc, ns, name, &slices)
}

fn ports_of(svc: &Service, ns: &str, name: &str, slices: &[&EndpointSlice]) -> Vec<ServicePort> {
    let Some(spec) = svc.spec.as_ref() else {
        return Vec::new();
    };
    if spec.type_.as_deref() == Some("ExternalName") {
        return Vec::new();
    }
    let Some(cluster_ip) = spec
        .cluster_ip
        .as_deref()
        .and_then(|ip| ip.parse::<Ipv4Addr>().ok())
    else {
        return Vec::new();
    };
    let mut external_ips: Vec<Ipv4Addr> = spec
        .external_ips
        .iter()
        .flatten()
        .filter_map(|ip| ip.parse().ok())
        .collect();
    if let Some(ingress) = svc
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
    {
        external_ips.extend(
            ingress
                .iter()
                .filter_map(|i| i.ip.as_deref()?.parse::<Ipv4Addr>().ok()),
        );
    }
    external_ips.sort();
    external_ips.dedup();
    let affinity_timeout = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
        spec.session_affinity_config
            .as_ref()
            .and_then(|c| c.client_ip.as_ref())
            .and_then(|c| c.timeout_seconds)
            .and_then(|t| u32::try_from(t).ok())
            .unwrap_or(DEFAULT_AFFINITY_TIMEOUT_SECONDS)
    });
    let internal_local = spec.internal_traffic_policy.as_deref() == Some("Local");
    let external_local = spec.external_traffic_policy.as_deref() == Some("Local");
    spec.ports
        .iter()
        .flatten()
        .filter_map(|p| {
            let protocol = Protocol::parse(p.protocol.as_deref())?;
            let port_name = p.name.clone().unwrap_or_default();
            Some(ServicePort {
                namespace: ns.to_string(),
                name: name.to_string(),
                endpoints: endpoints_for(slices, &port_name, protocol),
                port_name,
                protocol,
                cluster_ip,
                port: u16::try_from(p.port).ok()?,
                node_port: p.node_port.and_then(|n| u16::try_from(n).ok()),
                external_ips: external_ips.clone(),
                affinity_timeout,
                internal_local,
                external_local,
            })
        })
        .collect()
}

/// Endpoints of one Service port: the slice port with the same name and protocol gives the
/// target number, which is how named `targetPort`s resolve. Ready endpoints are used; when none
/// is ready, serving-and-terminating ones are (kube-proxy's terminating-endpoint fallback).
fn endpoints_for(slices: &[&EndpointSlice], port_name: &str, protocol: Protocol) -> Vec<Endpoint> {
    let mut ready = Vec::new();
    let mut terminating = Vec::new();
    for slice in slices {
        let Some(port) = slice.ports.iter().flatten().find_map(|p| {
            let same_name = p.name.as_deref().unwrap_or("") == port_name;
            let same_proto = Protocol::parse(p.protocol.as_deref()) == Some(protocol);
            (same_name && same_proto)
                .then_some(p.port)
                .flatten()
                .and_then(|n| u16::try_from(n).ok())
        }) else {
            continue;
        };
        for ep in &slice.endpoints {
            let cond = ep.conditions.as_ref();
            // A nil condition means "true" for ready and serving, "false" for terminating.
            let is_ready = cond.and_then(|c| c.ready).unwrap_or(true);
            let serving = cond.and_then(|c| c.serving).unwrap_or(is_ready);
            let is_terminating = cond.and_then(|c| c.terminating).unwrap_or(false);
            for addr in &ep.addresses {
                let Ok(ip) = addr.parse::<Ipv4Addr>() else {
                    continue;
                };
                let e = Endpoint {
                    ip,
                    port,
                    node_name: ep.node_name.clone(),
                };
                if is_ready && !is_terminating {
                    ready.push(e);
                } else if serving && is_terminating {
                    terminating.push(e);
                }
            }
        }
    }
    let mut eps = if ready.is_empty() { terminating } else { ready };
    eps.sort();
    eps.dedup_by(|a, b| a.ip == b.ip && a.port == b.port);
    eps
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ServicePort as K8sPort, ServiceSpec};
    use k8s_openapi::api::discovery::v1::{Endpoint as K8sEndpoint, EndpointConditions};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    /// A ClusterIP Service with one TCP port per `(name, port)`.
    pub(crate) fn service(ns: &str, name: &str, ip: &str, ports: &[(&str, i32)]) -> Service {
        Service {
            metadata: ObjectMeta {
                namespace: Some(ns.into()),
                name: Some(name.into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                cluster_ip: Some(ip.into()),
                ports: Some(
                    ports
                        .iter()
                        .map(|(n, p)| K8sPort {
                            name: (!n.is_empty()).then(|| n.to_string()),
                            port: *p,
                            protocol: Some("TCP".into()),
                            ..Default::default()
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
            status: None,
        }
    }

    /// An EndpointSlice for `svc` with one port and `(ip, node, ready)` endpoints.
    pub(crate) fn slice(
        ns: &str,
        svc: &str,
        port: (&str, i32),
        eps: &[(&str, &str, bool)],
    ) -> EndpointSlice {
        EndpointSlice {
            metadata: ObjectMeta {
                namespace: Some(ns.into()),
                name: Some(format!("{svc}-abc")),
                labels: Some([(SERVICE_NAME_LABEL.to_string(), svc.to_string())].into()),
                ..Default::default()
            },
            address_type: "IPv4".into(),
            endpoints: eps
                .iter()
                .map(|(ip, node, ready)| K8sEndpoint {
                    addresses: vec![ip.to_string()],
                    node_name: Some(node.to_string()),
                    conditions: Some(EndpointConditions {
                        ready: Some(*ready),
                        serving: Some(*ready),
                        terminating: Some(false),
                    }),
                    ..Default::default()
                })
                .collect(),
            ports: Some(vec![k8s_openapi::api::discovery::v1::EndpointPort {
                name: (!port.0.is_empty()).then(|| port.0.to_string()),
                port: Some(port.1),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
        }
    }

    #[test]
    fn cidr_parses_and_clears_host_bits() {
        let c: Ipv4Cidr = "10.42.3.4/16".parse().unwrap();
        assert_eq!(c.to_string(), "10.42.0.0/16");
        assert!("10.0.0.0/33".parse::<Ipv4Cidr>().is_err());
        assert_eq!("0.0.0.0/0".parse::<Ipv4Cidr>().unwrap().len, 0);
    }

    #[test]
    fn named_target_port_resolves_through_slice_port_name() {
        let svc = service(
            "default",
            "web",
            "10.43.0.10",
            &[("http", 80), ("metrics", 9090)],
        );
        let s1 = slice(
            "default",
            "web",
            ("http", 8080),
            &[("10.42.0.5", "n1", true)],
        );
        let s2 = slice(
            "default",
            "web",
            ("metrics", 9100),
            &[("10.42.0.5", "n1", true)],
        );
        let ports = service_ports([&svc], [&s1, &s2]);
        let web = &ports["default/web"];
        assert_eq!(web[0].endpoints[0].port, 8080);
        assert_eq!(web[1].endpoints[0].port, 9100);
    }

    #[test]
    fn only_ready_endpoints_are_used() {
        let svc = service("default", "web", "10.43.0.10", &[("", 80)]);
        let s = slice(
            "default",
            "web",
            ("", 8080),
            &[("10.42.0.5", "n1", true), ("10.42.0.6", "n1", false)],
        );
        let ports = service_ports([&svc], [&s]);
        let eps = &ports["default/web"][0].endpoints;
        assert_eq!(eps.len(), 1);
        assert_eq!(eps[0].ip, Ipv4Addr::new(10, 42, 0, 5));
    }

    #[test]
    fn headless_and_external_name_services_are_skipped() {
        let headless = service("default", "h", "None", &[("", 80)]);
        let mut ext = service("default", "e", "", &[("", 80)]);
        ext.spec.as_mut().unwrap().type_ = Some("ExternalName".into());
        assert!(service_ports([&headless, &ext], []).is_empty());
    }
}
