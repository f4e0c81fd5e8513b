//! Registers this node's DNS server as the cluster DNS Service: `kube-system/kube-dns` with the
//! cluster DNS ClusterIP (created when missing, as k3s ships it in its coredns manifest) and an
//! EndpointSlice per node pointing at the address the DNS server listens on. The proxy's own
//! rules then DNAT `10.43.0.10:53` to it, like any other Service.
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::{Namespace, Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Api;
use kube::api::PostParams;
use tracing::{info, warn};

use crate::model::SERVICE_NAME_LABEL;

/// Namespace of the cluster DNS Service.
pub const NAMESPACE: &str = "kube-system";
/// Name of the cluster DNS Service (the name every Kubernetes DNS add-on uses).
pub const SERVICE: &str = "kube-dns";
/// `endpointslice.kubernetes.io/managed-by` value of our slices, so that the EndpointSlice
/// controller (which owns only `endpointslice-controller.k8s.io` slices) leaves them alone.
pub const MANAGED_BY: &str = "r8s-proxy";

/// Errors registering the DNS Service.
#[derive(Debug, thiserror::Error)]
pub enum KubeDnsError {
    /// An API call failed.
    #[error("failed to {step} kube-system/kube-dns")]
    Api {
        /// What was being done.
        step: &'static str,
        /// The cause.
        #[source]
        source: kube::Error,
    },
}

/// Where this node's DNS server is reachable, and the Service address it stands behind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeDns {
    /// The cluster DNS ClusterIP (`--cluster-dns`, default 10.43.0.10).
    pub cluster_ip: Ipv4Addr,
    /// This node's name (the EndpointSlice is `kube-dns-<node>`, its endpoint has this nodeName).
    pub node_name: String,
    /// Address the DNS server listens on (UDP and TCP).
    pub endpoint_ip: Ipv4Addr,
    /// Port the DNS server listens on.
    pub endpoint_port: u16,
}

fn labels(pairs: &[(&str, &str)]) -> Option<BTreeMap<String, String>> {
    Some(
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

impl KubeDns {
    /// The Service: no selector (its endpoints are ours), DNS on 53/UDP and 53/TCP, and
    /// `internalTrafficPolicy: Local` so that every node's pods ask their own node.
    pub fn service(&self) -> Service {
        let port = |name: &str, proto: &str| ServicePort {
            name: Some(name.into()),
            protocol: Some(proto.into()),
            port: 53,
            target_port: Some(
                k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(
                    self.endpoint_port.into(),
                ),
            ),
            ..Default::default()
        };
        Service {
            metadata: ObjectMeta {
                name: Some(SERVICE.into()),
                namespace: Some(NAMESPACE.into()),
                labels: labels(&[
                    ("k8s-app", "kube-dns"),
                    ("kubernetes.io/name", "CoreDNS"),
                    ("kubernetes.io/cluster-service", "true"),
                ]),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                type_: Some("ClusterIP".into()),
                cluster_ip: Some(self.cluster_ip.to_string()),
                cluster_ips: Some(vec![self.cluster_ip.to_string()]),
                internal_traffic_policy: Some("Local".into()),
                ports: Some(vec![port("dns", "UDP"), port("dns-tcp", "TCP")]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// This node's EndpointSlice of the Service.
    pub fn endpoint_slice(&self) -> EndpointSlice {
        let port = |name: &str, proto: &str| EndpointPort {
            name: Some(name.into()),
            protocol: Some(proto.into()),
            port: Some(self.endpoint_port.into()),
            ..Default::default()
        };
        EndpointSlice {
            metadata: ObjectMeta {
                name: Some(format!("{SERVICE}-{}", self.node_name)),
                namespace: Some(NAMESPACE.into()),
                labels: labels(&[
                    (SERVICE_NAME_LABEL, SERVICE),
                    ("endpointslice.kubernetes.io/managed-by", MANAGED_BY),
                ]),
                ..Default::default()
            },
            address_type: "IPv4".into(),
            endpoints: vec![Endpoint {
                addresses: vec![self.endpoint_ip.to_string()],
                conditions: Some(EndpointConditions {
                    ready: Some(true),
                    serving: Some(true),
                    terminating: Some(false),
                }),
                node_name: Some(self.node_name.clone()),
                ..Default::default()
            }],
            ports: Some(vec![port("dns", "UDP"), port("dns-tcp", "TCP")]),
        }
    }
}

fn already_exists(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(s) if s.code == 409)
}

/// Creates the namespace and Service when missing (an existing Service is left as the
/// administrator made it) and creates or replaces this node's EndpointSlice.
pub async fn ensure(client: &kube::Client, dns: &KubeDns) -> Result<(), KubeDnsError> {
    let api_err = |step| move |source| KubeDnsError::Api { step, source };
    let pp = PostParams::default();
    let services = Api::<Service>::namespaced(client.clone(), NAMESPACE);
    // Read first: r8s-server creates the Service at bootstrap, and an
    // agent's proxy may read it but not create namespaces or Services.
    match services.get_opt(SERVICE).await.map_err(api_err("get"))? {
        Some(existing) => {
            let ip = existing.spec.and_then(|s| s.cluster_ip);
            if ip.as_deref() != Some(dns.cluster_ip.to_string().as_str()) {
                warn!(want = %dns.cluster_ip, have = ?ip, "kube-dns service has another cluster ip");
            }
        }
        None => {
            let ns = Namespace {
                metadata: ObjectMeta {
                    name: Some(NAMESPACE.into()),
                    ..Default::default()
                },
                ..Default::default()
            };
            match Api::<Namespace>::all(client.clone()).create(&pp, &ns).await {
                Ok(_) => {}
                Err(e) if already_exists(&e) => {}
                Err(e) => return Err(api_err("create namespace of")(e)),
            }
            match services.create(&pp, &dns.service()).await {
                Ok(_) => info!(cluster_ip = %dns.cluster_ip, "created the cluster dns service"),
                Err(e) if already_exists(&e) => {}
                Err(e) => return Err(api_err("create")(e)),
            }
        }
    }
    let slices = Api::<EndpointSlice>::namespaced(client.clone(), NAMESPACE);
    let mut slice = dns.endpoint_slice();
    match slices.create(&pp, &slice).await {
        Ok(_) => {}
        Err(e) if already_exists(&e) => {
            let name = slice.metadata.name.clone().unwrap_or_default();
            let existing = slices
                .get(&name)
                .await
                .map_err(api_err("get endpointslice of"))?;
            slice.metadata.resource_version = existing.metadata.resource_version;
            slices
                .replace(&name, &pp, &slice)
                .await
                .map_err(api_err("replace endpointslice of"))?;
        }
        Err(e) => return Err(api_err("create endpointslice of")(e)),
    }
    info!(endpoint = %dns.endpoint_ip, port = dns.endpoint_port, "registered cluster dns endpoint");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::service_ports;

    fn dns() -> KubeDns {
        KubeDns {
            cluster_ip: "10.43.0.10".parse().unwrap(),
            node_name: "n1".into(),
            endpoint_ip: "10.42.0.1".parse().unwrap(),
            endpoint_port: 53,
        }
    }

    #[test]
    fn cluster_dns_service_routes_udp_and_tcp_53_to_the_node_endpoint() {
        let d = dns();
        let (svc, slice) = (d.service(), d.endpoint_slice());
        let model = service_ports([&svc], [&slice]);
        let ports = &model["kube-system/kube-dns"];
        assert_eq!(ports.len(), 2);
        for p in ports {
            assert_eq!(p.cluster_ip, d.cluster_ip);
            assert_eq!(p.port, 53);
            assert!(p.internal_local);
            assert_eq!(p.endpoints.len(), 1);
            assert_eq!(p.endpoints[0].ip, d.endpoint_ip);
            assert_eq!(p.endpoints[0].node_name.as_deref(), Some("n1"));
        }
    }

    #[test]
    fn slice_is_per_node_and_not_the_controllers() {
        let s = dns().endpoint_slice();
        assert_eq!(s.metadata.name.as_deref(), Some("kube-dns-n1"));
        let l = s.metadata.labels.unwrap();
        assert_eq!(l[SERVICE_NAME_LABEL], "kube-dns");
        assert_eq!(l["endpointslice.kubernetes.io/managed-by"], "r8s-proxy");
    }
}
