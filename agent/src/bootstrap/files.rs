//! The agent's credentials on disk, with kubelet's names:
//! `<root-dir>/kubelet.conf` (a kubeconfig naming the cluster CA and the
//! client certificate file), `<root-dir>/pki/kubelet-client-current.pem`
//! and `<root-dir>/pki/kubelet-server-current.pem` (certificate + key).

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

/// Where the credentials live under a root dir.
#[derive(Debug, Clone)]
pub struct Paths {
    pub kubeconfig: PathBuf,
    pub client_cert: PathBuf,
    pub server_cert: PathBuf,
}

impl Paths {
    pub fn new(root_dir: &Path) -> Self {
        Self {
            kubeconfig: root_dir.join("kubelet.conf"),
            client_cert: root_dir.join("pki").join("kubelet-client-current.pem"),
            server_cert: root_dir.join("pki").join("kubelet-server-current.pem"),
        }
    }

    /// Whether kubelet.conf and an unexpired client certificate exist.
    pub fn has_valid_client_cert(&self) -> bool {
        self.kubeconfig.exists()
            && std::fs::read(&self.client_cert)
                .ok()
                .and_then(|pem| cert_validity(&pem))
                .is_some_and(|(_, not_after)| not_after > chrono::Utc::now().timestamp())
    }

    /// Writes the client certificate+key and a kubeconfig using them.
    pub fn write_client(
        &self,
        cert_pem: &str,
        key_pem: &str,
        server: &str,
        ca_pem: &[u8],
    ) -> Result<(), FilesError> {
        write_private(&self.client_cert, format!("{cert_pem}{key_pem}").as_bytes())?;
        let file = self.client_cert.display().to_string();
        let yaml = super::discovery::kubeconfig_yaml(
            server,
            serde_json::json!({
                "certificate-authority-data": base64::engine::general_purpose::STANDARD.encode(ca_pem),
            }),
            serde_json::json!({"client-certificate": file, "client-key": file}),
        );
        write_private(&self.kubeconfig, yaml.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_client_certificate_is_valid_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::new(dir.path());
        assert!(!paths.has_valid_client_cert());
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::default()
            .self_signed(&key)
            .unwrap();
        paths
            .write_client(
                &cert.pem(),
                &key.serialize_pem(),
                "https://h:6443",
                cert.pem().as_bytes(),
            )
            .unwrap();
        assert!(paths.has_valid_client_cert());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&paths.client_cert)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let kc = kube::config::Kubeconfig::read_from(&paths.kubeconfig).unwrap();
        let user = kc.auth_infos[0].auth_info.as_ref().unwrap();
        assert_eq!(
            user.client_certificate.as_deref(),
            Some(paths.client_cert.to_str().unwrap())
        );
    }
}
