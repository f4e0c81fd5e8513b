//! The kubelet API against a real in-process r8s-cri: a pod created through
//! CRI with the agent's labels prints lines; `/containerLogs` serves them
//! with tailLines, timestamps and follow; requests without a client
//! certificate get 401. Needs root and docker-registry (CI has both).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use agent::server::{Server, ServerConfig};
use bytes::Bytes;
use cri::proto;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_util::sync::CancellationToken;

const POD: &str = "web";
const UID: &str = "uid-kubelet-api-web";

fn labels(container: Option<&str>) -> HashMap<String, String> {
    let mut l = HashMap::from([
        ("io.kubernetes.pod.name".to_owned(), POD.to_owned()),
        (
            "io.kubernetes.pod.namespace".to_owned(),
            "default".to_owned(),
        ),
        ("io.kubernetes.pod.uid".to_owned(), UID.to_owned()),
    ]);
    if let Some(c) = container {
        l.insert("io.kubernetes.container.name".to_owned(), c.to_owned());
    }
    l
}

/// A test CA and a client certificate it signed (PEM).
struct Certs {
    ca: CertificateDer<'static>,
    client_cert: String,
    client_key: String,
}

fn certs() -> Certs {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "kube-apiserver-kubelet-client");
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.signed_by(&key, &issuer).unwrap();
    Certs {
        ca: ca_cert.der().clone(),
        client_cert: cert.pem(),
        client_key: key.serialize_pem(),
    }
}

/// An HTTPS client of the kubelet API trusting its self-signed cert.
fn tls_client(root_dir: &Path, client: Option<&Certs>) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(root_dir.join("pki/kubelet.crt")).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match client {
        Some(c) => builder
            .with_client_auth_cert(
                CertificateDer::pem_slice_iter(c.client_cert.as_bytes())
                    .collect::<Result<Vec<_>, _>>()
                    .unwrap(),
                PrivateKeyDer::from_pem_slice(c.client_key.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// GETs `path`; returns the status and the body as it streams.
async fn get(
    connector: &tokio_rustls::TlsConnector,
    port: u16,
    path: &str,
) -> (u16, hyper::body::Incoming) {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let tls = connector
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get(path)
        .header("host", "127.0.0.1")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    (resp.status().as_u16(), resp.into_body())
}

async fn get_text(connector: &tokio_rustls::TlsConnector, port: u16, path: &str) -> (u16, String) {
    let (code, body) = get(connector, port, path).await;
    let bytes = body.collect().await.unwrap().to_bytes();
    (code, String::from_utf8_lossy(&bytes).into_owned())
}

/// The numbers of the `lineN` lines of a log text.
fn numbers(text: &str) -> Vec<u32> {
    text.lines()
        .filter_map(|l| l.rsplit("line").next()?.parse().ok())
        .collect()
}

/// Pulls busybox and starts pod `web` with container `main` printing
/// `line0`, `line1`, ... every 200 ms.
async fn start_pod(cri: &cri::client::CriClient, image: &str, logs: &Path) {
    let mut rt = cri.runtime.clone();
    cri.image
        .clone()
        .pull_image(proto::PullImageRequest {
            image: Some(proto::ImageSpec {
                image: image.to_owned(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    let sandbox_config = proto::PodSandboxConfig {
        metadata: Some(proto::PodSandboxMetadata {
            name: POD.into(),
            uid: UID.into(),
            namespace: "default".into(),
            attempt: 0,
        }),
        hostname: POD.into(),
        log_directory: logs.display().to_string(),
        labels: labels(None),
        ..Default::default()
    };
    let sandbox = rt
        .run_pod_sandbox(proto::RunPodSandboxRequest {
            config: Some(sandbox_config.clone()),
            runtime_handler: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .pod_sandbox_id;
    let id = rt
        .create_container(proto::CreateContainerRequest {
            pod_sandbox_id: sandbox,
            config: Some(proto::ContainerConfig {
                metadata: Some(proto::ContainerMetadata {
                    name: "main".into(),
                    attempt: 0,
                }),
                image: Some(proto::ImageSpec {
                    image: image.to_owned(),
                    ..Default::default()
                }),
                command: [
                    "sh",
                    "-c",
                    "i=0; while true; do echo line$i; i=$((i+1)); sleep 0.2; done",
                ]
                .map(String::from)
                .to_vec(),
                log_path: "main/0.log".into(),
                labels: labels(Some("main")),
                ..Default::default()
            }),
            sandbox_config: Some(sandbox_config),
        })
        .await
        .unwrap()
        .into_inner()
        .container_id;
    rt.start_container(proto::StartContainerRequest { container_id: id })
        .await
        .unwrap();
}

/// Removes every sandbox the runtime has (and so their containers).
async fn remove_pods(socket: &Path) {
    if let Ok(cri) = cri::client::connect_path(socket).await {
        let _ = cri.remove_all_sandboxes().await;
    }
}

/// Removes what the runtime may leave: mounts under `dir`, the bridge and
/// the cgroup parent in every hierarchy.
fn remove_host_leftovers(dir: &Path, bridge: &str, cgroup_parent: &str) {
    let base = dir.display().to_string();
    let mut mounts: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_owned))
        .filter(|m| m.starts_with(&base))
        .collect();
    mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for m in mounts {
        let _ = nix::mount::umount2(m.as_str(), nix::mount::MntFlags::MNT_DETACH);
    }
    let _ = std::process::Command::new("ip")
        .args(["link", "del", bridge])
        .stderr(std::process::Stdio::null())
        .status();
    let rel = cgroup_parent.trim_start_matches('/');
    let mut roots: Vec<PathBuf> = vec![PathBuf::from("/sys/fs/cgroup")];
    if let Ok(d) = std::fs::read_dir("/sys/fs/cgroup") {
        roots.extend(d.flatten().map(|e| e.path()).filter(|p| p.is_dir()));
    }
    for root in roots {
        let _ = std::fs::remove_dir(root.join(rel));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn container_logs_tail_timestamps_follow_and_client_certs() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipping: this test needs root (CI runs it as root)");
        return;
    }
    let registry =
        e2e::registry::Registry::start(&Path::new(env!("CARGO_TARGET_TMPDIR")).join("images"))
            .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let n: u32 = rand_u32();
    let bridge = format!("r8sk{n:08x}");
    let cgroup_parent = format!("/r8s-test-k{n:08x}");
    let socket = dir.path().join("cri.sock");
    let cri_config = cri::Config {
        listen: socket.clone(),
        root: dir.path().join("root"),
        state: dir.path().join("state"),
        cgroup_parent: cgroup_parent.clone(),
        insecure_registries: vec![registry.addr.clone()],
        pod_cidr: format!("10.245.{}.0/24", 100 + n % 150).parse().unwrap(),
        bridge: bridge.clone(),
        streaming_address: cri::config::DEFAULT_STREAMING_ADDRESS.parse().unwrap(),
    };
    let _ = cri::become_subreaper();
    let shutdown = CancellationToken::new();
    let cri_task = tokio::spawn(cri::serve(cri_config, shutdown.clone()));

    let body = {
        let dir = dir.path().to_path_buf();
        let socket = socket.clone();
        let image = registry.busybox();
        let shutdown = shutdown.clone();
        tokio::spawn(async move { checks(&dir, &socket, &image, shutdown).await })
    };
    let outcome = body.await;

    remove_pods(&socket).await;
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(20), cri_task).await;
    remove_host_leftovers(dir.path(), &bridge, &cgroup_parent);
    if let Err(err) = outcome {
        std::panic::resume_unwind(err.into_panic());
    }
}

fn rand_u32() -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    nanos ^ std::process::id().rotate_left(16)
}

async fn checks(dir: &Path, socket: &Path, image: &str, shutdown: CancellationToken) {
    let mut cri = None;
    for _ in 0..200 {
        if let Ok(c) = cri::client::connect_path(socket).await {
            cri = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let cri = cri.expect("r8s-cri did not come up");
    start_pod(&cri, image, &dir.join("logs")).await;

    let certs = certs();
    let root_dir = dir.join("agent");
    let server = Server::bind(ServerConfig {
        address: "127.0.0.1".parse().unwrap(),
        port: 0,
        node_name: "node-a".into(),
        node_ips: vec!["127.0.0.1".parse().unwrap()],
        root_dir: root_dir.clone(),
        tls_cert_file: None,
        tls_private_key_file: None,
        client_ca: vec![certs.ca.clone()],
        cri_endpoint: format!("unix://{}", socket.display()),
        evictions: None,
        image_gc: None,
    })
    .await
    .unwrap();
    let port = server.local_addr().unwrap().port();
    tokio::spawn(server.run(shutdown));
    let client = tls_client(&root_dir, Some(&certs));
    let anonymous = tls_client(&root_dir, None);

    let (code, text) = get_text(&anonymous, port, "/containerLogs/default/web/main").await;
    assert_eq!((code, text.as_str()), (401, "Unauthorized\n"));
    let (code, text) = get_text(&client, port, "/healthz").await;
    assert_eq!((code, text.trim()), (200, "ok"));

    // Wait (bounded) for a few lines to be written.
    let mut all = String::new();
    for _ in 0..100 {
        all = get_text(&client, port, "/containerLogs/default/web/main")
            .await
            .1;
        if numbers(&all).len() >= 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(numbers(&all).len() >= 4, "{all:?}");
    assert_eq!(numbers(&all)[..3], [0, 1, 2]);

    let (code, tail) = get_text(&client, port, "/containerLogs/default/web/main?tailLines=2").await;
    assert_eq!(code, 200);
    let tail_numbers = numbers(&tail);
    assert_eq!(tail_numbers.len(), 2, "{tail:?}");
    assert_eq!(tail_numbers[1], tail_numbers[0] + 1);

    let (_, stamped) = get_text(
        &client,
        port,
        "/containerLogs/default/web/main?tailLines=1&timestamps=true",
    )
    .await;
    let (ts, line) = stamped.trim_end().split_once(' ').unwrap();
    assert!(
        chrono::DateTime::parse_from_rfc3339(ts).is_ok(),
        "{stamped:?}"
    );
    assert!(line.starts_with("line"), "{stamped:?}");

    // follow: lines written after the request arrive on the same response.
    let (code, mut body) = get(
        &client,
        port,
        "/containerLogs/default/web/main?follow=true&tailLines=1",
    )
    .await;
    assert_eq!(code, 200);
    let mut seen = String::new();
    let first = loop {
        let frame = body.frame().await.unwrap().unwrap();
        seen.push_str(&String::from_utf8_lossy(&frame.into_data().unwrap()));
        if let Some(n) = numbers(&seen).first() {
            break *n;
        }
    };
    let later = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let frame = body.frame().await.unwrap().unwrap();
            seen.push_str(&String::from_utf8_lossy(&frame.into_data().unwrap()));
            if let Some(n) = numbers(&seen).into_iter().find(|n| *n > first) {
                return n;
            }
        }
    })
    .await
    .expect("no new line while following");
    assert_eq!(later, first + 1, "{seen:?}");

    let (code, text) = get_text(&client, port, "/containerLogs/default/nope/main").await;
    assert_eq!(code, 404, "{text}");
    let (code, text) = get_text(&client, port, "/containerLogs/default/web/other").await;
    assert_eq!(code, 400, "{text}");
    let (code, pods) = get_text(&client, port, "/pods").await;
    assert_eq!(code, 200);
    assert!(pods.contains(UID), "{pods}");
}
