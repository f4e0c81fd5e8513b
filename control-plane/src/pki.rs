//! The server's PKI in its data dir: a CA, the HTTPS serving certificate and
//! the admin client certificate, created on first start and reused after;
//! and the admin kubeconfig that embeds them.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use base64::Engine;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

/// The admin client certificate's user (its CN) and groups (its O), which the admin
/// kubeconfig and the in-process controllers (`server::in_process`) act as.
pub const ADMIN_USER: &str = "admin";
pub const ADMIN_GROUPS: &[&str] = &["system:masters"];

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("failed to read or write {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to generate or load a certificate")]
    Cert(#[from] rcgen::Error),
}

pub type Result<T, E = PkiError> = std::result::Result<T, E>;

/// PEM files of the server's PKI.
#[derive(Debug, Clone)]
pub struct Pki {
    pub ca_cert_pem: String,
    pub serving_cert_pem: String,
    pub serving_key_pem: String,
    pub admin_cert_pem: String,
    pub admin_key_pem: String,
    /// The CA key, for signing more client certificates (agents) later.
    pub ca_key_pem: String,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> PkiError + '_ {
    move |source| PkiError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn write_private(path: &Path, contents: &str) -> Result<()> {
    agent::private_file::write_private(path, contents.as_bytes()).map_err(io_err(path))
}

fn read_opt(path: &Path) -> Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(PkiError::Io {
            path: path.to_path_buf(),
            source: e,
        }),
    }
}

fn validity(params: &mut CertificateParams, years: i32) {
    use chrono::Datelike;
    let ymd = |d: chrono::NaiveDate, add_years: i32| {
        let month = u8::try_from(d.month()).unwrap_or(1);
        // Day 28 at most, so the date exists in every month of any year.
        let day = u8::try_from(d.day().min(28)).unwrap_or(1);
        rcgen::date_time_ymd(d.year() + add_years, month, day)
    };
    let yesterday = (chrono::Utc::now() - chrono::Duration::days(1)).date_naive();
    params.not_before = ymd(yesterday, 0);
    params.not_after = ymd(yesterday, years);
}

/// Loads the PKI from `<data_dir>/tls`, creating what is missing. The serving
/// certificate is re-issued when the wanted SANs are not all in it.
pub fn ensure(data_dir: &Path, sans: &[String]) -> Result<Pki> {
    let dir = data_dir.join("tls");
    std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
    let (ca_cert_path, ca_key_path) = (dir.join("ca.crt"), dir.join("ca.key"));
    let (ca_cert_pem, ca_key_pem) = match (read_opt(&ca_cert_path)?, read_opt(&ca_key_path)?) {
        (Some(c), Some(k)) => (c, k),
        _ => {
            let key = KeyPair::generate()?;
            let mut params = CertificateParams::default();
            let mut dn = DistinguishedName::new();
            dn.push(
                DnType::CommonName,
                format!("r8s-server-ca@{}", chrono::Utc::now().timestamp()),
            );
            params.distinguished_name = dn;
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.key_usages = vec![
                KeyUsagePurpose::KeyCertSign,
                KeyUsagePurpose::CrlSign,
                KeyUsagePurpose::DigitalSignature,
            ];
            validity(&mut params, 10);
            let cert = params.self_signed(&key)?;
            let (c, k) = (cert.pem(), key.serialize_pem());
            write_private(&ca_key_path, &k)?;
            write_private(&ca_cert_path, &c)?;
            tracing::info!(path = %ca_cert_path.display(), "created the cluster CA");
            (c, k)
        }
    };
    let ca_key = KeyPair::from_pem(&ca_key_pem)?;
    let issuer = Issuer::from_ca_cert_pem(&ca_cert_pem, ca_key)?;

    let (srv_cert_path, srv_key_path) = (dir.join("serving.crt"), dir.join("serving.key"));
    let (serving_cert_pem, serving_key_pem) =
        match (read_opt(&srv_cert_path)?, read_opt(&srv_key_path)?) {
            (Some(c), Some(k)) if cert_has_sans(&c, sans) => (c, k),
            _ => {
                let key = KeyPair::generate()?;
                let mut params = CertificateParams::default();
                let mut dn = DistinguishedName::new();
                dn.push(DnType::CommonName, "kube-apiserver");
                params.distinguished_name = dn;
                params.subject_alt_names = sans
                    .iter()
                    .map(|s| match s.parse::<IpAddr>() {
                        Ok(ip) => Ok(SanType::IpAddress(ip)),
                        Err(_) => Ok(SanType::DnsName(s.clone().try_into()?)),
                    })
                    .collect::<Result<Vec<_>, rcgen::Error>>()?;
                params.key_usages = vec![
                    KeyUsagePurpose::DigitalSignature,
                    KeyUsagePurpose::KeyEncipherment,
                ];
                params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
                validity(&mut params, 1);
                let cert = params.signed_by(&key, &issuer)?;
                let (c, k) = (cert.pem(), key.serialize_pem());
                write_private(&srv_key_path, &k)?;
                write_private(&srv_cert_path, &c)?;
                tracing::info!(?sans, "issued the serving certificate");
                (c, k)
            }
        };

    let (adm_cert_path, adm_key_path) = (dir.join("admin.crt"), dir.join("admin.key"));
    let (admin_cert_pem, admin_key_pem) =
        match (read_opt(&adm_cert_path)?, read_opt(&adm_key_path)?) {
            (Some(c), Some(k)) => (c, k),
            _ => {
                let (c, k) = issue_client_cert(&issuer, ADMIN_USER, ADMIN_GROUPS)?;
                write_private(&adm_key_path, &k)?;
                write_private(&adm_cert_path, &c)?;
                (c, k)
            }
        };
    let (kc_cert_path, kc_key_path) = kubelet_client_paths(data_dir);
    if read_opt(&kc_cert_path)?.is_none() || read_opt(&kc_key_path)?.is_none() {
        let (c, k) = issue_client_cert(
            &issuer,
            "kube-apiserver-kubelet-client",
            &["system:masters"],
        )?;
        write_private(&kc_key_path, &k)?;
        write_private(&kc_cert_path, &c)?;
    }
    Ok(Pki {
        ca_cert_pem,
        serving_cert_pem,
        serving_key_pem,
        admin_cert_pem,
        admin_key_pem,
        ca_key_pem,
    })
}

/// The client certificate and key the API server presents to kubelets
/// (`kube-apiserver-kubelet-client`, group `system:masters`).
pub fn kubelet_client_paths(data_dir: &Path) -> (PathBuf, PathBuf) {
    let dir = data_dir.join("tls");
    (
        dir.join("kubelet-client.crt"),
        dir.join("kubelet-client.key"),
    )
}

/// Issues a client certificate with user `cn` and groups `orgs`; returns (cert, key) PEM.
pub fn issue_client_cert(
    issuer: &Issuer<'_, KeyPair>,
    cn: &str,
    orgs: &[&str],
) -> Result<(String, String)> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    for o in orgs {
        dn.push(DnType::OrganizationName, *o);
    }
    dn.push(DnType::CommonName, cn);
    params.distinguished_name = dn;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    validity(&mut params, 1);
    let cert = params.signed_by(&key, issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn cert_has_sans(pem: &str, wanted: &[String]) -> bool {
    let Ok((_, pem)) = x509_parser::pem::parse_x509_pem(pem.as_bytes()) else {
        return false;
    };
    let Ok(cert) = pem.parse_x509() else {
        return false;
    };
    if cert.validity().not_after.timestamp() < chrono::Utc::now().timestamp() + 86400 * 30 {
        return false;
    }
    let Ok(Some(ext)) = cert.subject_alternative_name() else {
        return false;
    };
    let have: Vec<String> = ext
        .value
        .general_names
        .iter()
        .filter_map(|n| match n {
            x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_string()),
            x509_parser::extensions::GeneralName::IPAddress(b) => match b.len() {
                4 => <[u8; 4]>::try_from(*b)
                    .ok()
                    .map(|a| IpAddr::from(a).to_string()),
                16 => <[u8; 16]>::try_from(*b)
                    .ok()
                    .map(|a| IpAddr::from(a).to_string()),
                _ => None,
            },
            _ => None,
        })
        .collect();
    wanted.iter().all(|w| have.contains(w))
}

/// The admin kubeconfig: embedded CA, admin client certificate, `server` URL.
pub fn kubeconfig(pki: &Pki, server: &str) -> String {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n    certificate-authority-data: {}\n    server: {}\n  name: default\ncontexts:\n- context:\n    cluster: default\n    user: default\n  name: default\ncurrent-context: default\npreferences: {{}}\nusers:\n- name: default\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\n",
        b64(&pki.ca_cert_pem),
        server,
        b64(&pki.admin_cert_pem),
        b64(&pki.admin_key_pem)
    )
}

/// Writes the kubeconfig atomically with mode 0600.
pub fn write_kubeconfig(path: &Path, contents: &str) -> Result<()> {
    write_private(path, contents)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pki_is_created_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let sans = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        let a = ensure(dir.path(), &sans).unwrap();
        let b = ensure(dir.path(), &sans).unwrap();
        assert_eq!(a.ca_cert_pem, b.ca_cert_pem);
        assert_eq!(a.serving_cert_pem, b.serving_cert_pem);
        assert_eq!(a.admin_cert_pem, b.admin_cert_pem);
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(dir.path().join("tls/ca.key"))
                .unwrap()
                .permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn serving_cert_is_reissued_for_new_sans() {
        let dir = tempfile::tempdir().unwrap();
        let a = ensure(dir.path(), &["localhost".to_string()]).unwrap();
        let b = ensure(
            dir.path(),
            &["localhost".to_string(), "10.1.2.3".to_string()],
        )
        .unwrap();
        assert_eq!(a.ca_cert_pem, b.ca_cert_pem);
        assert_ne!(a.serving_cert_pem, b.serving_cert_pem);
        assert!(cert_has_sans(
            &b.serving_cert_pem,
            &["10.1.2.3".to_string()]
        ));
    }
}
