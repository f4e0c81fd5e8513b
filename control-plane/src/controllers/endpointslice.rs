//! The endpoints controllers: for every Service with a selector, the
//! matching pods with an IP become EndpointSlices (discovery.k8s.io/v1, at
//! most 100 endpoints each, one port mapping per slice, upstream
//! pkg/controller/endpointslice) and the legacy Endpoints object
//! (`endpoints.rs`). One set of watches feeds both.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, ObjectReference, Pod, Service};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;

use super::ControllerContext;
use super::endpoints;
use super::store::Store;
use super::util::{self, Key, Queue, Requeue};

pub const SERVICE_NAME: &str = "kubernetes.io/service-name";
pub const MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by";
pub const CONTROLLER_NAME: &str = "endpointslice-controller.k8s.io";
pub const MAX_ENDPOINTS_PER_SLICE: usize = 100;
const ZONE: &str = "topology.kubernetes.io/zone";

#[derive(Debug, thiserror::Error)]
pub enum EndpointsError {
    #[error("failed to {action} for service {service}")]
    Api {
        action: &'static str,
        service: String,
        #[source]
        source: kube::Error,
    },
}

struct Ctx {
    client: kube::Client,
    services: Store<Service>,
    pods: Store<Pod>,
    nodes: Store<Node>,
    slices: Store<EndpointSlice>,
}

/// Starts the EndpointSlice and Endpoints controllers.
pub fn spawn(ctx: &ControllerContext) {
    let (queue, rx) = Queue::new();
    let q = queue.clone();
    let services = ctx.informers.informer(
        Api::<Service>::all(ctx.client.clone()),
        watcher::Config::default(),
        move |s: &Service| q.add_key(util::key_of(s)),
    );
    let q = queue.clone();
    let svc_store = services.clone();
    let pods = ctx.informers.informer(
        Api::<Pod>::all(ctx.client.clone()),
        watcher::Config::default(),
        move |pod: &Pod| {
            let ns = pod.namespace().unwrap_or_default();
            for s in svc_store.state() {
                if s.namespace().as_deref() == Some(ns.as_str())
                    && selector_of(&s).is_some_and(|sel| util::labels_contain(pod.labels(), sel))
                {
                    q.add(&ns, &s.name_any());
                }
            }
        },
    );
    let nodes = ctx.informers.informer(
        Api::<Node>::all(ctx.client.clone()),
        watcher::Config::default(),
        |_: &Node| {},
    );
    let q = queue.clone();
    let slices = ctx.informers.informer(
        Api::<EndpointSlice>::all(ctx.client.clone()),
        watcher::Config::default().labels(&format!("{MANAGED_BY}={CONTROLLER_NAME}")),
        move |s: &EndpointSlice| {
            if let Some(svc) = s.labels().get(SERVICE_NAME) {
                q.add(&s.namespace().unwrap_or_default(), svc);
            }
        },
    );
    let c = Arc::new(Ctx {
        client: ctx.client.clone(),
        services,
        pods,
        nodes,
        slices,
    });
    let shutdown = ctx.shutdown.clone();
    tokio::spawn(async move {
        c.services.wait_until_ready().await;
        c.pods.wait_until_ready().await;
        c.nodes.wait_until_ready().await;
        c.slices.wait_until_ready().await;
        util::run_workers("endpointslice", 1, rx, queue, shutdown, |key| {
            let c = c.clone();
            async move { sync(&c, key).await }
        })
        .await;
    });
}

fn selector_of(s: &Service) -> Option<&BTreeMap<String, String>> {
    s.spec.as_ref()?.selector.as_ref().filter(|m| !m.is_empty())
}

/// The port a service port reaches on one pod: a number, or a container
/// port looked up by name (upstream `podutil.FindPort`).
pub fn find_port(
    pod: &Pod,
    target: Option<&IntOrString>,
    port: i32,
    protocol: &str,
) -> Option<i32> {
    match target {
        None => Some(port),
        Some(IntOrString::Int(p)) => Some(*p),
        Some(IntOrString::String(name)) => pod
            .spec
            .as_ref()?
            .containers
            .iter()
            .flat_map(|c| c.ports.iter().flatten())
            .find(|p| {
                p.name.as_deref() == Some(name.as_str())
                    && p.protocol.as_deref().unwrap_or("TCP") == protocol
            })
            .map(|p| p.container_port),
    }
}

/// The service's ports as they resolve on `pod`; ports that do not resolve
/// are left out, like upstream.
pub fn pod_ports(svc: &Service, pod: &Pod) -> Vec<EndpointPort> {
    svc.spec
        .iter()
        .flat_map(|s| s.ports.iter().flatten())
        .filter_map(|sp| {
            let protocol = sp.protocol.clone().unwrap_or_else(|| "TCP".into());
            let port = find_port(pod, sp.target_port.as_ref(), sp.port, &protocol)?;
            Some(EndpointPort {
                name: Some(sp.name.clone().unwrap_or_default()),
                port: Some(port),
                protocol: Some(protocol),
                app_protocol: sp.app_protocol.clone(),
            })
        })
        .collect()
}

/// Whether a pod belongs in the endpoints at all (upstream
/// `ShouldPodBeInEndpoints` with terminating pods included).
pub fn has_address(pod: &Pod) -> bool {
    let status = pod.status.as_ref();
    let phase = status.and_then(|s| s.phase.as_deref());
    !matches!(phase, Some("Succeeded") | Some("Failed"))
        && status
            .and_then(|s| s.pod_ip.as_deref())
            .is_some_and(|ip| !ip.is_empty())
}

pub fn target_ref(pod: &Pod) -> ObjectReference {
    ObjectReference {
        kind: Some("Pod".into()),
        namespace: pod.namespace(),
        name: Some(pod.name_any()),
        uid: pod.uid(),
        ..Default::default()
    }
}

/// The pod's hostname for the service, set when the pod names the service
/// as its subdomain.
pub fn hostname(svc: &Service, pod: &Pod) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    (spec.subdomain.as_deref() == Some(svc.name_any().as_str()))
        .then(|| spec.hostname.clone())
        .flatten()
}

/// The slice contents for a service: (ports, endpoints) per slice, grouped
/// by port mapping and cut at `MAX_ENDPOINTS_PER_SLICE`.
pub fn desired_slices(
    svc: &Service,
    pods: &[&Pod],
    zones: &HashMap<String, String>,
) -> Vec<(Vec<EndpointPort>, Vec<Endpoint>)> {
    let publish_not_ready = svc
        .spec
        .as_ref()
        .and_then(|s| s.publish_not_ready_addresses)
        .unwrap_or(false);
    let mut groups: Vec<(Vec<EndpointPort>, Vec<Endpoint>)> = Vec::new();
    let mut sorted: Vec<&&Pod> = pods.iter().filter(|p| has_address(p)).collect();
    sorted.sort_by_key(|p| p.name_any());
    for pod in sorted {
        let ports = pod_ports(svc, pod);
        let ready = util::is_pod_ready(pod);
        let terminating = pod.metadata.deletion_timestamp.is_some();
        let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
        let ip = pod
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.clone())
            .unwrap_or_default();
        let ep = Endpoint {
            addresses: vec![ip],
            conditions: Some(EndpointConditions {
                ready: Some(publish_not_ready || (ready && !terminating)),
                serving: Some(ready),
                terminating: Some(terminating),
            }),
            hostname: hostname(svc, pod),
            zone: node.as_ref().and_then(|n| zones.get(n).cloned()),
            node_name: node,
            target_ref: Some(target_ref(pod)),
            ..Default::default()
        };
        match groups
            .iter_mut()
            .find(|(p, eps)| *p == ports && eps.len() < MAX_ENDPOINTS_PER_SLICE)
        {
            Some((_, eps)) => eps.push(ep),
            None => groups.push((ports, vec![ep])),
        }
    }
    groups
}

async fn sync(c: &Ctx, (ns, name): Key) -> Result<Requeue, EndpointsError> {
    let Some(svc) = c.services.get(&ObjectRef::new(&name).within(&ns)) else {
        return Ok(None);
    };
    let Some(selector) = selector_of(&svc) else {
        return Ok(None);
    };
    if svc.metadata.deletion_timestamp.is_some() {
        return Ok(None);
    }
    let pods: Vec<Arc<Pod>> = c
        .pods
        .state()
        .into_iter()
        .filter(|p| {
            p.namespace().as_deref() == Some(ns.as_str())
                && util::labels_contain(p.labels(), selector)
        })
        .collect();
    let pod_refs: Vec<&Pod> = pods.iter().map(|p| p.as_ref()).collect();
    let zones: HashMap<String, String> = c
        .nodes
        .state()
        .iter()
        .filter_map(|n| Some((n.name_any(), n.labels().get(ZONE)?.clone())))
        .collect();
    let err = |action: &'static str| {
        let service = name.clone();
        move |source| EndpointsError::Api {
            action,
            service,
            source,
        }
    };
    sync_slices(c, &svc, &pod_refs, &zones)
        .await
        .map_err(err("sync endpoint slices"))?;
    endpoints::sync(&c.client, &svc, &pod_refs)
        .await
        .map_err(err("sync endpoints"))?;
    Ok(None)
}

async fn sync_slices(
    c: &Ctx,
    svc: &Service,
    pods: &[&Pod],
    zones: &HashMap<String, String>,
) -> Result<(), kube::Error> {
    let ns = svc.namespace().unwrap_or_default();
    let name = svc.name_any();
    let api: Api<EndpointSlice> = Api::namespaced(c.client.clone(), &ns);
    let mut existing: Vec<Arc<EndpointSlice>> = c
        .slices
        .state()
        .into_iter()
        .filter(|s| {
            s.namespace().as_deref() == Some(ns.as_str())
                && s.labels().get(SERVICE_NAME) == Some(&name)
        })
        .collect();
    existing.sort_by_key(|s| s.name_any());
    let mut desired = desired_slices(svc, pods, zones);
    if desired.is_empty() {
        // An empty placeholder slice, as upstream keeps.
        desired.push((Vec::new(), Vec::new()));
    }
    let mut labels: BTreeMap<String, String> = svc.labels().clone();
    labels.insert(SERVICE_NAME.into(), name.clone());
    labels.insert(MANAGED_BY.into(), CONTROLLER_NAME.into());
    if svc.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None") {
        labels.insert("service.kubernetes.io/headless".into(), String::new());
    }
    let owner = util::owner_ref(svc);
    let wanted = desired.len();
    for (i, (ports, endpoints)) in desired.into_iter().enumerate() {
        let ports = (!ports.is_empty()).then_some(ports);
        match existing.get(i) {
            Some(cur) => {
                if cur.endpoints == endpoints && cur.ports == ports && cur.labels() == &labels {
                    continue;
                }
                let mut s = (**cur).clone();
                s.endpoints = endpoints;
                s.ports = ports;
                s.metadata.labels = Some(labels.clone());
                match api.replace(&s.name_any(), &PostParams::default(), &s).await {
                    Ok(_) => {}
                    Err(e) if util::is_not_found(&e) => {}
                    Err(e) => return Err(e),
                }
            }
            None => {
                let s = EndpointSlice {
                    metadata: ObjectMeta {
                        generate_name: Some(format!("{name}-")),
                        labels: Some(labels.clone()),
                        owner_references: Some(vec![owner.clone()]),
                        ..Default::default()
                    },
                    address_type: "IPv4".into(),
                    endpoints,
                    ports,
                };
                match api.create(&PostParams::default(), &s).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(s)) if s.code == 403 => {}
                    Err(e) => return Err(e),
                }
            }
        }
    }
    if existing.len() > wanted {
        for s in &existing[wanted..] {
            match api.delete(&s.name_any(), &DeleteParams::default()).await {
                Ok(_) => {}
                Err(e) if util::is_not_found(&e) => {}
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

    fn pod(name: &str, ip: &str, ready: bool) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "d", "uid": format!("u-{name}"), "labels": {"app": "web"}},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "i",
                "ports": [{"name": "http", "containerPort": 8080}]}]},
            "status": {"phase": "Running", "podIP": ip,
                "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}
        }))
        .unwrap()
    }

    fn service() -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "d", "uid": "s1"},
            "spec": {"selector": {"app": "web"},
                "ports": [{"name": "web", "port": 80, "targetPort": "http", "protocol": "TCP"}]}
        }))
        .unwrap()
    }

    #[test]
    fn named_target_ports_resolve_per_pod() {
        let p = pod("a", "10.42.0.5", true);
        let ports = pod_ports(&service(), &p);
        assert_eq!(ports.len(), 1);
        assert_eq!(ports[0].port, Some(8080));
        assert_eq!(ports[0].name.as_deref(), Some("web"));
    }

    #[test]
    fn slices_hold_at_most_a_hundred_endpoints() {
        let pods: Vec<Pod> = (0..250)
            .map(|i| {
                pod(
                    &format!("p{i:03}"),
                    &format!("10.42.{}.{}", i / 200, i % 200 + 1),
                    true,
                )
            })
            .collect();
        let refs: Vec<&Pod> = pods.iter().collect();
        let slices = desired_slices(&service(), &refs, &HashMap::new());
        let sizes: Vec<usize> = slices.iter().map(|(_, e)| e.len()).collect();
        assert_eq!(sizes, [100, 100, 50]);
    }

    #[test]
    fn not_ready_pods_are_not_ready_endpoints() {
        let pods = [pod("a", "10.42.0.5", false)];
        let refs: Vec<&Pod> = pods.iter().collect();
        let slices = desired_slices(&service(), &refs, &HashMap::new());
        let c = slices[0].1[0].conditions.clone().unwrap();
        assert_eq!(
            (c.ready, c.serving, c.terminating),
            (Some(false), Some(false), Some(false))
        );
        assert_eq!(slices[0].1[0].node_name.as_deref(), Some("n1"));
    }
}
