//! The legacy Endpoints object of a Service with a selector (upstream
//! pkg/controller/endpoint): ready pods in `addresses`, the rest in
//! `notReadyAddresses`, one subset per port mapping; driven by the
//! EndpointSlice controller's watches.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, Pod, Service,
};
use kube::ResourceExt;
use kube::api::{Api, ObjectMeta, PostParams};

use super::endpointslice::{has_address, hostname, pod_ports, target_ref};
use super::util;

/// Label telling the EndpointSlice mirroring controller to leave the object alone.
pub const SKIP_MIRROR: &str = "endpointslice.kubernetes.io/skip-mirror";

/// The subsets for a service's pods.
pub fn subsets(svc: &Service, pods: &[&Pod]) -> Vec<EndpointSubset> {
    let publish_not_ready = svc
        .spec
        .as_ref()
        .and_then(|s| s.publish_not_ready_addresses)
        .unwrap_or(false);
    let mut out: Vec<EndpointSubset> = Vec::new();
    for pod in pods.iter().filter(|p| has_address(p)) {
        let terminating = pod.metadata.deletion_timestamp.is_some();
        if terminating && !publish_not_ready {
            continue;
        }
        let ports: Vec<EndpointPort> = pod_ports(svc, pod)
            .into_iter()
            .map(|p| EndpointPort {
                name: p.name.filter(|n| !n.is_empty()),
                port: p.port.unwrap_or(0),
                protocol: p.protocol,
                app_protocol: p.app_protocol,
            })
            .collect();
        if ports.is_empty()
            && svc
                .spec
                .as_ref()
                .and_then(|s| s.ports.as_ref())
                .is_some_and(|p| !p.is_empty())
        {
            continue;
        }
        let addr = EndpointAddress {
            ip: pod
                .status
                .as_ref()
                .and_then(|s| s.pod_ip.clone())
                .unwrap_or_default(),
            hostname: hostname(svc, pod),
            node_name: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
            target_ref: Some(target_ref(pod)),
        };
        let ready = publish_not_ready || util::is_pod_ready(pod);
        let idx = match out
            .iter()
            .position(|s| s.ports.as_deref().unwrap_or_default() == ports.as_slice())
        {
            Some(i) => i,
            None => {
                out.push(EndpointSubset {
                    ports: (!ports.is_empty()).then_some(ports),
                    ..Default::default()
                });
                out.len() - 1
            }
        };
        let list = if ready {
            out[idx].addresses.get_or_insert_with(Vec::new)
        } else {
            out[idx].not_ready_addresses.get_or_insert_with(Vec::new)
        };
        list.push(addr);
    }
    for s in &mut out {
        for list in [s.addresses.as_mut(), s.not_ready_addresses.as_mut()]
            .into_iter()
            .flatten()
        {
            list.sort_by(|a, b| a.ip.cmp(&b.ip));
        }
    }
    out
}

/// Writes the Endpoints object of `svc`.
pub async fn sync(client: &kube::Client, svc: &Service, pods: &[&Pod]) -> Result<(), kube::Error> {
    let ns = svc.namespace().unwrap_or_default();
    let name = svc.name_any();
    let api: Api<Endpoints> = Api::namespaced(client.clone(), &ns);
    let subsets = subsets(svc, pods);
    let subsets = (!subsets.is_empty()).then_some(subsets);
    let mut labels: BTreeMap<String, String> = svc.labels().clone();
    labels.insert(SKIP_MIRROR.into(), "true".into());
    if svc.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None") {
        labels.insert("service.kubernetes.io/headless".into(), String::new());
    }
    match api.get_opt(&name).await? {
        Some(cur) => {
            if cur.subsets == subsets && cur.labels() == &labels {
                return Ok(());
            }
            let mut ep = cur;
            ep.subsets = subsets;
            ep.metadata.labels = Some(labels);
            api.replace(&name, &PostParams::default(), &ep).await?;
        }
        None => {
            let ep = Endpoints {
                metadata: ObjectMeta {
                    name: Some(name),
                    labels: Some(labels),
                    ..Default::default()
                },
                subsets,
            };
            match api.create(&PostParams::default(), &ep).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 409 || s.code == 403 => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ready_and_not_ready_pods_split_into_address_lists() {
        let svc: Service = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "d"},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080, "protocol": "TCP"}]}
        }))
        .unwrap();
        let pod = |name: &str, ip: &str, ready: &str| -> Pod {
            serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "d"},
                "spec": {"containers": [{"name": "c", "image": "i"}]},
                "status": {"phase": "Running", "podIP": ip, "conditions": [{"type": "Ready", "status": ready}]}
            }))
            .unwrap()
        };
        let pods = [
            pod("a", "10.0.0.2", "True"),
            pod("b", "10.0.0.1", "False"),
            pod("c", "10.0.0.3", "True"),
        ];
        let refs: Vec<&Pod> = pods.iter().collect();
        let s = subsets(&svc, &refs);
        assert_eq!(s.len(), 1);
        let ips: Vec<&str> = s[0]
            .addresses
            .iter()
            .flatten()
            .map(|a| a.ip.as_str())
            .collect();
        assert_eq!(ips, ["10.0.0.2", "10.0.0.3"]);
        assert_eq!(s[0].not_ready_addresses.as_ref().map(Vec::len), Some(1));
        assert_eq!(s[0].ports.as_ref().unwrap()[0].port, 8080);
    }
}
