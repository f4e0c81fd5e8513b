//! The HTTPS listener's rustls configuration: the serving certificate, ALPN
//! h2 and http/1.1, and optional client certificates verified against the CA.

use std::sync::Arc;

use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::pki::Pki;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("failed to parse a PEM certificate or key")]
    Pem(#[from] rustls_pki_types::pem::Error),
    #[error("failed to build the TLS configuration")]
    Rustls(#[from] rustls::Error),
    #[error("failed to build the client certificate verifier")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

/// The server-side TLS configuration for the API.
pub fn server_config(pki: &Pki) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pki.ca_cert_pem.as_bytes()) {
        roots.add(cert?)?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()?;
    let chain = CertificateDer::pem_slice_iter(pki.serving_cert_pem.as_bytes())
        .chain(CertificateDer::pem_slice_iter(pki.ca_cert_pem.as_bytes()))
        .collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_slice(pki.serving_key_pem.as_bytes())?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
