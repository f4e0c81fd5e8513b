//! Kubelet stand-ins for tests without a node agent: `FakeKubelet` binds
//! pending pods to fake Nodes and reports them Running and Ready, renewing
//! the nodes' heartbeats; `summary_kubelet` serves a Summary API
//! (`/stats/summary`) for `kubectl top` and the metrics API.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use super::Server;

/// Binds pending pods to the first schedulable of `nodes` (created on
/// start), reports them Running and Ready, renews the nodes' heartbeats and
/// finishes the deletes of terminating pods, on a thread of its own.
pub struct FakeKubelet {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeKubelet {
    pub fn start(server: &Server, nodes: &'static [&'static str]) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let kubeconfig = server.kubeconfig();
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let client = super::client_for(&kubeconfig).await;
                let api: Api<Node> = Api::all(client.clone());
                for n in nodes {
                    let node: Node =
                        serde_json::from_value(json!({"metadata": {"name": n}})).expect("node");
                    let _ = api.create(&PostParams::default(), &node).await;
                }
                let mut tick = 0u32;
                while !s.load(Ordering::SeqCst) {
                    if tick.is_multiple_of(20) {
                        heartbeat(&client, nodes).await;
                    }
                    tick += 1;
                    if let Err(e) = pass(&client, nodes).await {
                        eprintln!("fake kubelet pass failed: {e}");
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            });
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for FakeKubelet {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

async fn heartbeat(client: &kube::Client, nodes: &[&str]) {
    let api: Api<Node> = Api::all(client.clone());
    let t = now();
    for n in nodes {
        let status = json!({"status": {"conditions": [{"type": "Ready", "status": "True",
            "reason": "KubeletReady", "lastHeartbeatTime": t, "lastTransitionTime": t}]}});
        let _ = api
            .patch_status(n, &PatchParams::default(), &Patch::Merge(status))
            .await;
    }
}

async fn pass(client: &kube::Client, nodes: &[&str]) -> Result<(), kube::Error> {
    let node_api: Api<Node> = Api::all(client.clone());
    let mut schedulable = Vec::new();
    for n in nodes {
        let node = node_api.get(n).await?;
        if node.spec.and_then(|s| s.unschedulable) != Some(true) {
            schedulable.push(n.to_string());
        }
    }
    let all: Api<Pod> = Api::all(client.clone());
    for pod in all.list(&ListParams::default()).await? {
        let api: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace().unwrap_or_default());
        let name = pod.name_any();
        if pod.metadata.deletion_timestamp.is_some() {
            let _ = api
                .delete(&name, &DeleteParams::default().grace_period(0))
                .await;
            continue;
        }
        let spec = pod.spec.clone().unwrap_or_default();
        let Some(node) = spec.node_name.clone() else {
            if let Some(target) = schedulable.first() {
                let binding = json!({"apiVersion": "v1", "kind": "Binding",
                    "metadata": {"name": name}, "target": {"kind": "Node", "name": target}});
                let _ = api
                    .create_subresource::<Value, Value>(
                        "binding",
                        &name,
                        &PostParams::default(),
                        &binding,
                    )
                    .await;
            }
            continue;
        };
        if !nodes.contains(&node.as_str()) {
            continue;
        }
        let phase = pod.status.as_ref().and_then(|s| s.phase.clone());
        if phase.as_deref().is_some_and(|p| p != "Pending") {
            continue;
        }
        let t = now();
        let status = json!({"status": {
            "phase": "Running", "podIP": "10.42.0.9", "hostIP": "127.0.0.1", "startTime": t,
            "conditions": [
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": t},
                {"type": "Initialized", "status": "True", "lastTransitionTime": t},
                {"type": "ContainersReady", "status": "True", "lastTransitionTime": t},
                {"type": "Ready", "status": "True", "lastTransitionTime": t}],
            "containerStatuses": spec.containers.iter().map(|c| json!({"name": c.name, "ready": true,
                "restartCount": 0, "image": "busybox", "imageID": "", "started": true,
                "state": {"running": {"startedAt": t}}})).collect::<Vec<_>>()}});
        let _ = api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(status))
            .await;
    }
    Ok(())
}

/// A kubelet stand-in serving only `/stats/summary` over TLS on 127.0.0.1,
/// answering with whatever `summary` holds at the time; returns its port.
pub async fn summary_kubelet(summary: Arc<Mutex<Value>>) -> u16 {
    let tls = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).expect("cert");
    let cert = tls.cert.der().clone();
    let key = rustls::pki_types::PrivatePkcs8KeyDer::from(tls.signing_key.serialize_der());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("tls versions")
        .with_no_client_auth()
        .with_single_cert(vec![cert], key.into())
        .expect("server config");
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, summary) = (acceptor.clone(), summary.clone());
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let body = summary.lock().map(|s| s.to_string()).unwrap_or_default();
                        async move {
                            let (code, b) = if req.uri().path() == "/stats/summary" {
                                (200, body)
                            } else {
                                (404, String::new())
                            };
                            hyper::Response::builder()
                                .status(code)
                                .header("content-type", "application/json")
                                .body(http_body_util::Full::new(bytes::Bytes::from(b)))
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    port
}
