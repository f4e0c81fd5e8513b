//! The API server's kubelet proxy (pods/log, pods/exec, nodes/proxy)
//! against an in-test HTTPS "kubelet" that checks the API server's client
//! certificate, serves fixed answers and echoes a WebSocket.

mod common;

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

use common::Server;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The CN of the first client certificate of a TLS session.
fn client_cn(certs: Option<&[CertificateDer<'_>]>) -> String {
    let Some(cert) = certs.and_then(|c| c.first()) else {
        return String::new();
    };
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).unwrap();
    parsed
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// The fake kubelet's answers.
async fn kubelet(
    mut req: Request<hyper::body::Incoming>,
    cn: String,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    let reply = |code: StatusCode, body: String| {
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = code;
        Ok(r)
    };
    if cn != "kube-apiserver-kubelet-client" {
        return reply(StatusCode::UNAUTHORIZED, "Unauthorized".into());
    }
    if path == "/containerLogs/default/web/main" {
        return reply(StatusCode::OK, format!("line1\nline2\nquery={query}\n"));
    }
    if path == "/containerLogs/default/web/gone" {
        return reply(
            StatusCode::BAD_REQUEST,
            "container \"gone\" in pod \"web\" is not available\n".into(),
        );
    }
    if path == "/stats/summary" {
        return reply(
            StatusCode::OK,
            r#"{"node":{"nodeName":"n1"},"pods":[]}"#.into(),
        );
    }
    if path == "/exec/default/web/main" {
        let key = req
            .headers()
            .get("sec-websocket-key")
            .map(|k| derive_accept_key(k.as_bytes()));
        let Some(accept) = key else {
            return reply(StatusCode::BAD_REQUEST, format!("not a websocket: {query}"));
        };
        let upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            let upgraded = upgrade.await.unwrap();
            let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
                TokioIo::new(upgraded),
                Role::Server,
                None,
            )
            .await;
            // First tell what the kubelet was asked, then echo.
            ws.send(Message::text(query)).await.unwrap();
            while let Some(Ok(msg)) = ws.next().await {
                if msg.is_close() {
                    break;
                }
                ws.send(msg).await.unwrap();
            }
        });
        let mut r = Response::new(Full::new(Bytes::new()));
        *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let h = r.headers_mut();
        h.insert("upgrade", "websocket".parse().unwrap());
        h.insert("connection", "Upgrade".parse().unwrap());
        h.insert("sec-websocket-accept", accept.parse().unwrap());
        h.insert(
            "sec-websocket-protocol",
            "v5.channel.k8s.io".parse().unwrap(),
        );
        return Ok(r);
    }
    reply(StatusCode::NOT_FOUND, "404 page not found".into())
}

/// Starts the fake kubelet on 127.0.0.1; returns its port.
async fn start_kubelet(ca_pem: &[u8]) -> u16 {
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec!["fake-kubelet".to_owned()]).unwrap();
    let cert = params.self_signed(&key).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem) {
        roots.add(c.unwrap()).unwrap();
    }
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .unwrap();
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![cert.der().clone()],
            PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes()).unwrap(),
        )
        .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let cn = client_cn(tls.get_ref().1.peer_certificates());
                let service = hyper::service::service_fn(move |req| kubelet(req, cn.clone()));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .with_upgrades()
                    .await;
            });
        }
    });
    port
}

fn apply(server: &Server, yaml: &str) {
    server.ok_stdin(&["apply", "--validate=false", "-f", "-"], yaml);
}

/// A Node pointing at the fake kubelet and a pod bound to it.
fn register(server: &Server, port: u16) {
    apply(
        server,
        "apiVersion: v1\nkind: Node\nmetadata:\n  name: n1\n",
    );
    let status = format!(
        r#"{{"status":{{"addresses":[{{"type":"InternalIP","address":"127.0.0.1"}},{{"type":"Hostname","address":"n1"}}],"daemonEndpoints":{{"kubeletEndpoint":{{"Port":{port}}}}}}}}}"#
    );
    server.ok(&[
        "patch",
        "node",
        "n1",
        "--subresource=status",
        "--type=merge",
        "-p",
        &status,
    ]);
    apply(
        server,
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  namespace: default\nspec:\n  nodeName: n1\n  containers:\n  - name: main\n    image: busybox\n  - name: gone\n    image: busybox\n  - name: waits\n    image: busybox\n",
    );
    server.ok(&[
        "patch",
        "pod",
        "web",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"phase":"Running","containerStatuses":[{"name":"main","ready":true,"restartCount":0,"image":"busybox","imageID":"","state":{"running":{}}},{"name":"waits","ready":false,"restartCount":0,"image":"busybox","imageID":"","state":{"waiting":{"reason":"ContainerCreating"}}}]}}"#,
    ]);
}

/// A TLS connection to the API server with the admin certificate.
async fn admin_tls(server: &Server) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let tls_dir = server.data_dir().join("tls");
    let ca = std::fs::read(tls_dir.join("ca.crt")).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(&ca) {
        roots.add(c.unwrap()).unwrap();
    }
    let chain = CertificateDer::pem_file_iter(tls_dir.join("admin.crt"))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(tls_dir.join("admin.key")).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", server.port))
        .await
        .unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn logs_stats_and_websocket_exec_reach_the_kubelet() {
    let server = Server::start();
    let ca = std::fs::read(server.data_dir().join("tls/ca.crt")).unwrap();
    let port = start_kubelet(&ca).await;
    let server = tokio::task::spawn_blocking(move || {
        register(&server, port);
        server
    })
    .await
    .unwrap();

    let server = tokio::task::spawn_blocking(move || {
        // Logs stream back with the options passed on.
        let out = server.ok(&["logs", "web", "-c", "main", "--tail=1", "--timestamps"]);
        assert!(out.starts_with("line1\nline2\n"), "{out}");
        assert!(out.contains("query=timestamps=true&tailLines=1"), "{out}");
        // A kubelet 400 becomes a BadRequest Status.
        let err = server.fails(&["logs", "web", "-c", "gone"]);
        assert!(
            err.contains(
                "Error from server (BadRequest): container \"gone\" in pod \"web\" is not available"
            ),
            "{err}"
        );
        // A waiting container is explained without asking the kubelet.
        let err = server.fails(&["logs", "web", "-c", "waits"]);
        assert!(
            err.contains(
                "container \"waits\" in pod \"web\" is waiting to start: ContainerCreating"
            ),
            "{err}"
        );
        let out = server.fails(&["logs", "web", "-c", "nope"]);
        assert!(
            out.contains("container nope is not valid for pod web"),
            "{out}"
        );
        // nodes/proxy reaches the kubelet's paths.
        let out = server.ok(&["get", "--raw", "/api/v1/nodes/n1/proxy/stats/summary"]);
        assert!(out.contains(r#""nodeName":"n1""#), "{out}");
        server
    })
    .await
    .unwrap();

    // An upgraded exec connection passes bytes both ways.
    let tls = admin_tls(&server).await;
    let url = format!(
        "wss://127.0.0.1:{}/api/v1/namespaces/default/pods/web/exec?command=echo&command=hi&container=main&stdout=true",
        server.port
    );
    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(url)
            .unwrap();
    request.headers_mut().insert(
        "sec-websocket-protocol",
        "v5.channel.k8s.io".parse().unwrap(),
    );
    let (mut ws, resp) = tokio_tungstenite::client_async(request, tls).await.unwrap();
    assert_eq!(
        resp.headers()
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok()),
        Some("v5.channel.k8s.io")
    );
    let first = ws.next().await.unwrap().unwrap();
    assert_eq!(
        first.into_text().unwrap().as_str(),
        "command=echo&command=hi&output=1"
    );
    ws.send(Message::binary(vec![0u8, b'x', b'y']))
        .await
        .unwrap();
    let echo = ws.next().await.unwrap().unwrap();
    assert_eq!(echo.into_data().as_ref(), &[0u8, b'x', b'y']);
    ws.close(None).await.unwrap();

    // Exec on an unscheduled pod is refused like upstream.
    tokio::task::spawn_blocking(move || {
        apply(
            &server,
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: pending\n  namespace: default\nspec:\n  containers:\n  - name: main\n    image: busybox\n",
        );
        let err = server.fails(&["exec", "pending", "--", "true"]);
        assert!(
            err.contains("pod pending does not have a host assigned"),
            "{err}"
        );
    })
    .await
    .unwrap();
}
