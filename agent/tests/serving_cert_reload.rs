//! The kubelet API serves a replaced serving certificate without a restart
//! (kubelet's ReloadKubeletServerCertificateFile): `--tls-cert-file` and
//! `--tls-private-key-file` are rewritten as certificate rotation does
//! (write, then rename over), and the next TLS handshake presents the new
//! certificate. No root needed.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use agent::server::{Server, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio_util::sync::CancellationToken;

struct Ca {
    cert: CertificateDer<'static>,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

fn ca() -> Ca {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key).unwrap();
    Ca {
        cert: cert.der().clone(),
        issuer: rcgen::Issuer::new(params, key),
    }
}

/// A serving certificate for 127.0.0.1 signed by `ca`: (cert PEM, key PEM).
fn serving(ca: &Ca, cn: &str) -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["node-a".to_owned()]).unwrap();
    params
        .subject_alt_names
        .push(rcgen::SanType::IpAddress([127, 0, 0, 1].into()));
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// Replaces `path` the way rotation does: a new file renamed over the old one.
fn replace(path: &Path, contents: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, contents).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// The leaf certificate the server presents in a fresh handshake.
async fn presented(ca: &Ca, port: u16) -> Vec<u8> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.cert.clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

fn der(pem: &str) -> Vec<u8> {
    CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .to_vec()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rotated_serving_certificate_is_served_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (cert_file, key_file) = (
        dir.path().join("kubelet.crt"),
        dir.path().join("kubelet.key"),
    );
    let ca = ca();
    let (first, first_key) = serving(&ca, "first");
    std::fs::write(&cert_file, &first).unwrap();
    std::fs::write(&key_file, &first_key).unwrap();
    let server = Server::bind(ServerConfig {
        address: "127.0.0.1".parse().unwrap(),
        port: 0,
        node_name: "node-a".into(),
        node_ips: vec!["127.0.0.1".parse().unwrap()],
        root_dir: dir.path().join("agent"),
        tls_cert_file: Some(cert_file.clone()),
        tls_private_key_file: Some(key_file.clone()),
        client_ca: vec![ca.cert.clone()],
        cri_endpoint: format!("unix://{}", dir.path().join("none.sock").display()),
        evictions: None,
        image_gc: None,
    })
    .await
    .unwrap();
    let port = server.local_addr().unwrap().port();
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    tokio::spawn(server.run(shutdown));
    assert_eq!(presented(&ca, port).await, der(&first));

    let (second, second_key) = serving(&ca, "second");
    replace(&key_file, &second_key);
    replace(&cert_file, &second);
    let mut seen = Vec::new();
    for _ in 0..300 {
        seen = presented(&ca, port).await;
        if seen == der(&second) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        seen,
        der(&second),
        "the rotated certificate is not served after 30 s"
    );

    // A broken file (mid-edit by an operator) keeps the last good certificate.
    replace(&cert_file, "not a certificate");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(presented(&ca, port).await, der(&second));
}
