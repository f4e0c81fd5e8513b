//! The kubelet API's serving certificate, re-read from its files when they
//! change (kubelet's ReloadKubeletServerCertificateFile): a certificate that
//! was rotated (the joined node's CSR rotation) or replaced by an operator is
//! served from the next TLS handshake on, without a restart.

use std::fmt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::tls::TlsError;

/// How often a handshake looks at the files (a `stat` of each).
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// What identifies one version of a file: inode (a rename-over replaces it),
/// size and modification time.
type Stamp = (u64, u64, i64, i64);

fn stamp(path: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.ino(), m.size(), m.mtime(), m.mtime_nsec()))
}

struct Loaded {
    key: Arc<CertifiedKey>,
    stamps: (Option<Stamp>, Option<Stamp>),
    checked: Instant,
}

/// A serving certificate kept in PEM files (one file may hold both).
pub struct ReloadingCert {
    cert_path: PathBuf,
    key_path: PathBuf,
    provider: Arc<CryptoProvider>,
    check_every: Duration,
    loaded: RwLock<Loaded>,
}

impl fmt::Debug for ReloadingCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReloadingCert")
            .field("cert_path", &self.cert_path)
            .field("key_path", &self.key_path)
            .finish_non_exhaustive()
    }
}

impl ReloadingCert {
    /// Loads the pair now; a pair that cannot be loaded is an error here,
    /// while a later bad version is logged and the last good one kept.
    pub fn load(
        cert_path: PathBuf,
        key_path: PathBuf,
        provider: Arc<CryptoProvider>,
    ) -> Result<Self, TlsError> {
        let stamps = (stamp(&cert_path), stamp(&key_path));
        let key = Arc::new(read_pair(&cert_path, &key_path, &provider)?);
        Ok(Self {
            cert_path,
            key_path,
            provider,
            check_every: CHECK_EVERY,
            loaded: RwLock::new(Loaded {
                key,
                stamps,
                checked: Instant::now(),
            }),
        })
    }

    /// The certificate to serve now, re-read first when a file changed.
    pub fn current(&self) -> Arc<CertifiedKey> {
        if let Some(reloaded) = self.reload_if_changed() {
            return reloaded;
        }
        self.read_loaded().key.clone()
    }

    fn read_loaded(&self) -> std::sync::RwLockReadGuard<'_, Loaded> {
        self.loaded.read().unwrap_or_else(|e| e.into_inner())
    }

    fn reload_if_changed(&self) -> Option<Arc<CertifiedKey>> {
        if self.read_loaded().checked.elapsed() < self.check_every {
            return None;
        }
        let mut loaded = self.loaded.write().unwrap_or_else(|e| e.into_inner());
        loaded.checked = Instant::now();
        let stamps = (stamp(&self.cert_path), stamp(&self.key_path));
        if stamps == loaded.stamps {
            return None;
        }
        match read_pair(&self.cert_path, &self.key_path, &self.provider) {
            Ok(key) => {
                loaded.key = Arc::new(key);
                loaded.stamps = stamps;
                tracing::info!(cert = %self.cert_path.display(), "loaded the changed kubelet serving certificate");
                Some(loaded.key.clone())
            }
            // Kept unchanged in `stamps`, so the next check tries again.
            Err(err) => {
                tracing::warn!(cert = %self.cert_path.display(), error = %err, source = ?std::error::Error::source(&err), "cannot load the changed serving certificate; serving the previous one");
                None
            }
        }
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

fn read_pair(
    cert_path: &Path,
    key_path: &Path,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| TlsError::Io { path, source }
    };
    let cert_pem = std::fs::read(cert_path).map_err(io(cert_path))?;
    let key_pem = std::fs::read(key_path).map_err(io(key_path))?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem).collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem)?;
    Ok(CertifiedKey::from_der(chain, key, provider)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(cn: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec![cn.to_owned()]).unwrap();
        let cert = params.self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn served(cert: &ReloadingCert) -> Vec<u8> {
        cert.current().cert[0].to_vec()
    }

    fn der(pem: &str) -> Vec<u8> {
        CertificateDer::from_pem_slice(pem.as_bytes())
            .unwrap()
            .to_vec()
    }

    fn provider() -> Arc<CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    #[test]
    fn a_replaced_pair_is_served_after_the_check_and_a_broken_one_keeps_the_last_good() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("server.pem");
        let (c1, k1) = pair("one");
        std::fs::write(&file, format!("{c1}{k1}")).unwrap();
        let mut cert = ReloadingCert::load(file.clone(), file.clone(), provider()).unwrap();
        cert.check_every = Duration::ZERO;
        assert_eq!(served(&cert), der(&c1));

        let (c2, k2) = pair("two");
        crate::private_file::write_private(&file, format!("{c2}{k2}").as_bytes()).unwrap();
        assert_eq!(served(&cert), der(&c2));

        crate::private_file::write_private(&file, b"not a certificate").unwrap();
        assert_eq!(served(&cert), der(&c2));

        let (c3, k3) = pair("three");
        crate::private_file::write_private(&file, format!("{c3}{k3}").as_bytes()).unwrap();
        assert_eq!(served(&cert), der(&c3));
    }

    #[test]
    fn files_are_not_looked_at_again_within_the_check_interval() {
        let dir = tempfile::tempdir().unwrap();
        let (cert_path, key_path) = (dir.path().join("c.crt"), dir.path().join("c.key"));
        let (c1, k1) = pair("one");
        std::fs::write(&cert_path, &c1).unwrap();
        std::fs::write(&key_path, &k1).unwrap();
        let mut cert =
            ReloadingCert::load(cert_path.clone(), key_path.clone(), provider()).unwrap();
        cert.check_every = Duration::from_secs(3600);
        let (c2, k2) = pair("two");
        crate::private_file::write_private(&cert_path, c2.as_bytes()).unwrap();
        crate::private_file::write_private(&key_path, k2.as_bytes()).unwrap();
        assert_eq!(served(&cert), der(&c1));
    }

    #[test]
    fn a_pair_that_cannot_be_read_at_start_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        assert!(ReloadingCert::load(missing.clone(), missing, provider()).is_err());
    }
}
