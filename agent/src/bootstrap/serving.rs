//! The kubelet serving certificate of a joined node, by a
//! `kubernetes.io/kubelet-serving` CSR (CN `system:node:<name>`, O
//! `system:nodes`, SANs the node's hostname and addresses), kept in
//! `<root-dir>/pki/kubelet-server-current.pem` and rotated like the client
//! certificate. r8s-server approves such requests for a node's own
//! addresses (upstream leaves them to an operator or an external approver).

use std::net::IpAddr;
use std::path::PathBuf;

use tokio_util::sync::CancellationToken;

use super::{BootstrapError, csr, files, rotation};

/// Makes sure a valid serving certificate for `ips` is on disk, requesting
/// one with the agent's client when needed; returns the PEM file (cert and
/// key) and starts its rotation.
pub async fn ensure(
    config: &crate::Config,
    client: &kube::Client,
    ips: &[IpAddr],
    shutdown: &CancellationToken,
) -> Result<PathBuf, BootstrapError> {
    let paths = files::Paths::new(&config.root_dir);
    let dns_names = vec![config.node_name.clone()];
    let current = std::fs::read(&paths.server_cert)
        .ok()
        .filter(|pem| covers(pem, &dns_names, ips))
        .and_then(|pem| files::cert_validity(&pem))
        .is_some_and(|(_, na)| na > chrono::Utc::now().timestamp());
    if !current {
        let (key, request) =
            csr::build_request(&csr::Subject::node(&config.node_name), &dns_names, ips)?;
        let cert =
            csr::request_certificate(client, csr::KUBELET_SERVING_SIGNER, &request, shutdown)
                .await?;
        files::write_private(
            &paths.server_cert,
            format!("{cert}{}", key.serialize_pem()).as_bytes(),
        )?;
        tracing::info!(path = %paths.server_cert.display(), "obtained the kubelet serving certificate");
    }
    tokio::spawn(rotation::run(
        rotation::Rotated {
            file: paths.server_cert.clone(),
            signer: csr::KUBELET_SERVING_SIGNER,
            subject: csr::Subject::node(&config.node_name),
            dns_names,
            ips: ips.to_vec(),
            kubeconfig: paths.kubelet.kubeconfig.clone(),
        },
        shutdown.clone(),
    ));
    Ok(paths.server_cert)
}

/// Whether the certificate names every wanted DNS name and IP.
fn covers(pem: &[u8], dns: &[String], ips: &[IpAddr]) -> bool {
    let Ok((_, p)) = x509_parser::pem::parse_x509_pem(pem) else {
        return false;
    };
    let Ok(cert) = p.parse_x509() else {
        return false;
    };
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return false;
    };
    let names = &san.value.general_names;
    use x509_parser::extensions::GeneralName;
    dns.iter().all(|d| {
        names
            .iter()
            .any(|n| matches!(n, GeneralName::DNSName(x) if x == d))
    }) && ips.iter().all(|ip| {
        let want = match ip {
            IpAddr::V4(v4) => v4.octets().to_vec(),
            IpAddr::V6(v6) => v6.octets().to_vec(),
        };
        names
            .iter()
            .any(|n| matches!(n, GeneralName::IPAddress(b) if *b == want.as_slice()))
    })
}

/// For a joined node without `--tls-cert-file`: serves the kubelet API
/// with a CSR-signed certificate; on failure the self-signed one stays.
pub async fn apply(
    server: &mut crate::server::ServerConfig,
    config: &crate::Config,
    shutdown: &CancellationToken,
) {
    if config.server.is_none() || config.tls_cert_file.is_some() {
        return;
    }
    let Some(kubeconfig) = &config.kubeconfig else {
        return;
    };
    let client = match client(kubeconfig).await {
        Ok(c) => c,
        Err(err) => {
            tracing::warn!(%err, "no client for the serving certificate request; serving a self-signed certificate");
            return;
        }
    };
    match ensure(config, &client, &server.node_ips, shutdown).await {
        Ok(path) => {
            server.tls_cert_file = Some(path.clone());
            server.tls_private_key_file = Some(path);
        }
        Err(err) => {
            tracing::warn!(error = %err, source = ?std::error::Error::source(&err), "no kubelet serving certificate; serving a self-signed certificate");
        }
    }
}

async fn client(kubeconfig: &std::path::Path) -> Result<kube::Client, String> {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig).map_err(|e| e.to_string())?;
    let c = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
        .await
        .map_err(|e| e.to_string())?;
    kube::Client::try_from(c).map_err(|e| e.to_string())
}
