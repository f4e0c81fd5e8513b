//! TLS of the kubelet API: the serving certificate (given files, or a
//! self-signed `<node>@<time>` certificate kept in `<root-dir>/pki` as
//! kubelet does) and client certificates verified against the client CA.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use super::serving_cert::ReloadingCert;

/// Why the TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("failed to read or write {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to generate the serving certificate")]
    Generate(#[from] rcgen::Error),
    #[error("failed to parse a PEM certificate or key")]
    Pem(#[from] rustls_pki_types::pem::Error),
    #[error("failed to build the TLS configuration")]
    Rustls(#[from] rustls::Error),
    #[error("failed to build the client certificate verifier")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> TlsError + '_ {
    move |source| TlsError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The files of the serving certificate and key (PEM): the given ones, or a
/// self-signed pair in `<root_dir>/pki/kubelet.{crt,key}` (created once, then
/// reused).
pub fn serving_files(
    cert_file: Option<&Path>,
    key_file: Option<&Path>,
    root_dir: &Path,
    node_name: &str,
    ips: &[IpAddr],
) -> Result<(PathBuf, PathBuf), TlsError> {
    if let (Some(c), Some(k)) = (cert_file, key_file) {
        return Ok((c.to_path_buf(), k.to_path_buf()));
    }
    let dir = root_dir.join("pki");
    let (cert_path, key_path) = (dir.join("kubelet.crt"), dir.join("kubelet.key"));
    if cert_path.exists() && key_path.exists() {
        return Ok((cert_path, key_path));
    }
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(
        DnType::CommonName,
        format!("{node_name}@{}", chrono::Utc::now().timestamp()),
    );
    params.distinguished_name = dn;
    // Not a CA, so that clients may pin it as their only trust anchor.
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let mut sans = vec![SanType::DnsName(node_name.to_owned().try_into()?)];
    if node_name != "localhost" {
        sans.push(SanType::DnsName("localhost".to_owned().try_into()?));
    }
    sans.push(SanType::IpAddress(IpAddr::from([127, 0, 0, 1])));
    sans.extend(ips.iter().copied().map(SanType::IpAddress));
    params.subject_alt_names = sans;
    let (year, month, day) = yesterday();
    params.not_before = rcgen::date_time_ymd(year, month, day);
    params.not_after = rcgen::date_time_ymd(year + 1, month, day);
    let cert = params.self_signed(&key)?;
    std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
    write_private(&key_path, &key.serialize_pem())?;
    std::fs::write(&cert_path, cert.pem()).map_err(io_err(&cert_path))?;
    tracing::info!(path = %cert_path.display(), "created a self-signed kubelet serving certificate");
    Ok((cert_path, key_path))
}

/// Yesterday as (year, month, day); day 28 at most, so that the same day
/// a year later exists.
fn yesterday() -> (i32, u8, u8) {
    use chrono::Datelike;
    let t = chrono::Utc::now() - chrono::Duration::days(1);
    let month = u8::try_from(t.month()).unwrap_or(1);
    let day = u8::try_from(t.day().min(28)).unwrap_or(1);
    (t.year(), month, day)
}

fn write_private(path: &Path, contents: &str) -> Result<(), TlsError> {
    crate::private_file::write_private(path, contents.as_bytes()).map_err(io_err(path))
}

/// The certificates of a PEM file (the client CA).
pub fn read_pem_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = std::fs::read(path).map_err(io_err(path))?;
    Ok(CertificateDer::pem_slice_iter(&pem).collect::<Result<Vec<_>, _>>()?)
}

/// The server configuration serving the certificate in `cert_file` and
/// `key_file` (re-read when they change); `client_ca` verifies client
/// certificates; connections without one are accepted at TLS and answered 401.
pub fn server_config(
    cert_file: PathBuf,
    key_file: PathBuf,
    client_ca: &[CertificateDer<'static>],
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cert = Arc::new(ReloadingCert::load(cert_file, key_file, provider.clone())?);
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in client_ca {
        roots.add(cert.clone())?;
    }
    let mut config = if roots.is_empty() {
        builder.with_no_client_auth().with_cert_resolver(cert)
    } else {
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .allow_unauthenticated()
            .build()?;
        builder
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(cert)
    };
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_pair_is_created_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let ips = ["10.0.0.5".parse().unwrap()];
        let (c1, k1) = serving_files(None, None, dir.path(), "node-a", &ips).unwrap();
        let pem = std::fs::read(&c1).unwrap();
        let (c2, k2) = serving_files(None, None, dir.path(), "node-a", &ips).unwrap();
        assert_eq!((&c1, &k1), (&c2, &k2));
        assert_eq!(c1, dir.path().join("pki/kubelet.crt"));
        assert_eq!(std::fs::read(&c2).unwrap(), pem, "reused, not made again");
        server_config(c1.clone(), k1.clone(), &[]).unwrap();
        // A CA given for clients switches on client certificate checks.
        let ca = read_pem_certs(&c1).unwrap();
        server_config(c1, k1, &ca).unwrap();
    }
}
