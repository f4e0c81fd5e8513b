//! The agent's credentials on disk, with kubelet's names:
//! `<root-dir>/kubelet.conf` (a kubeconfig naming the cluster CA and the
//! client certificate file), `<root-dir>/pki/kubelet-client-current.pem`
//! and `<root-dir>/pki/kubelet-server-current.pem` (certificate + key);
//! the in-process kube-proxy's `<root-dir>/kube-proxy.conf` and
//! `<root-dir>/pki/kube-proxy-client-current.pem` alike.

use std::path::{Path, PathBuf};

use base64::Engine;

#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    #[error("failed to write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Validity of the certificate in a PEM file (first certificate):
/// (notBefore, notAfter) as Unix seconds.
pub fn cert_validity(pem: &[u8]) -> Option<(i64, i64)> {
    let (_, p) = x509_parser::pem::parse_x509_pem(pem).ok()?;
    let cert = p.parse_x509().ok()?;
    let v = cert.validity();
    Some((v.not_before.timestamp(), v.not_after.timestamp()))
}

/// Writes `contents` to `path` atomically with mode 0600.
pub fn write_private(path: &Path, contents: &[u8]) -> Result<(), FilesError> {
    crate::private_file::write_private(path, contents).map_err(|source| FilesError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// One client identity: a kubeconfig naming its certificate file.
#[derive(Debug, Clone)]
pub struct ClientFiles {
    pub kubeconfig: PathBuf,
    /// Certificate and key, in one file.
    pub cert: PathBuf,
}

impl ClientFiles {
    /// Whether the kubeconfig and an unexpired certificate exist.
    pub fn is_valid(&self) -> bool {
        self.kubeconfig.exists()
            && std::fs::read(&self.cert)
                .ok()
                .and_then(|pem| cert_validity(&pem))
                .is_some_and(|(_, not_after)| not_after > chrono::Utc::now().timestamp())
    }

    /// Writes the certificate+key and a kubeconfig for `server` using them;
    /// `ca_data` is the cluster CA bundle, base64 PEM.
    pub fn write(
        &self,
        cert_pem: &str,
        key_pem: &str,
        server: &str,
        ca_data: &str,
    ) -> Result<(), FilesError> {
        write_private(&self.cert, format!("{cert_pem}{key_pem}").as_bytes())?;
        let file = self.cert.display().to_string();
        let yaml = super::discovery::kubeconfig_yaml(
            server,
            serde_json::json!({"certificate-authority-data": ca_data}),
            serde_json::json!({"client-certificate": file, "client-key": file}),
        );
        write_private(&self.kubeconfig, yaml.as_bytes())
    }
}

/// The base64 form of a CA bundle in a kubeconfig.
pub fn ca_data(ca_pem: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(ca_pem)
}

/// Where the credentials live under a root dir.
#[derive(Debug, Clone)]
pub struct Paths {
    pub kubelet: ClientFiles,
    pub kube_proxy: ClientFiles,
    pub server_cert: PathBuf,
}

impl Paths {
    pub fn new(root_dir: &Path) -> Self {
        let pki = root_dir.join("pki");
        Self {
            kubelet: ClientFiles {
                kubeconfig: root_dir.join("kubelet.conf"),
                cert: pki.join("kubelet-client-current.pem"),
            },
            kube_proxy: ClientFiles {
                kubeconfig: root_dir.join("kube-proxy.conf"),
                cert: pki.join("kube-proxy-client-current.pem"),
            },
            server_cert: pki.join("kubelet-server-current.pem"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_client_certificate_is_valid_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::new(dir.path()).kubelet;
        assert!(!paths.is_valid());
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::default()
            .self_signed(&key)
            .unwrap();
        paths
            .write(
                &cert.pem(),
                &key.serialize_pem(),
                "https://h:6443",
                &ca_data(cert.pem().as_bytes()),
            )
            .unwrap();
        assert!(paths.is_valid());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&paths.cert).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let kc = kube::config::Kubeconfig::read_from(&paths.kubeconfig).unwrap();
        let user = kc.auth_infos[0].auth_info.as_ref().unwrap();
        assert_eq!(
            user.client_certificate.as_deref(),
            Some(paths.cert.to_str().unwrap())
        );
    }
}
