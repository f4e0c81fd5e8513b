//! The agent's API client when its kubeconfig names client certificate
//! files (a joined node's `kubelet.conf`): like kubelet's certificate
//! manager, a renewed certificate is used without a restart. Each request
//! goes through the current inner `kube::Client`; when the certificate or
//! key file changes (checked at most once a second) a new inner client is
//! built from the same `kube::Config`, which re-reads the files, and the
//! old one's pooled connections close once their last request ends, so
//! the server sees the new certificate on the next request.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use futures::future::BoxFuture;
use http::{Request, Response};
use kube::client::Body;

/// How often the files are looked at, at most.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// Why a client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("failed to build the API client")]
    Build(#[source] kube::Error),
}

/// What identifies one version of the credential files: modification time,
/// inode and size of each (files are replaced by rename, so the inode moves).
type Stamp = Vec<Option<(SystemTime, u64, u64)>>;

fn stamp(files: &[PathBuf]) -> Stamp {
    use std::os::unix::fs::MetadataExt;
    files
        .iter()
        .map(|f| {
            let m = std::fs::metadata(f).ok()?;
            Some((m.modified().ok()?, m.ino(), m.len()))
        })
        .collect()
}

struct Current {
    stamp: Stamp,
    checked: Instant,
    client: kube::Client,
}

/// The tower service behind the agent's `kube::Client`.
#[derive(Clone)]
struct Reloading {
    config: kube::Config,
    files: Vec<PathBuf>,
    current: Arc<Mutex<Current>>,
}

impl Reloading {
    /// The inner client for the files as they are now.
    fn client(&self) -> kube::Client {
        let mut cur = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if cur.checked.elapsed() < CHECK_EVERY {
            return cur.client.clone();
        }
        cur.checked = Instant::now();
        let now = stamp(&self.files);
        if now == cur.stamp {
            return cur.client.clone();
        }
        match kube::Client::try_from(self.config.clone()) {
            Ok(client) => {
                tracing::info!(files = ?self.files, "client certificate changed; new connections use it");
                cur.stamp = now;
                cur.client = client;
            }
            // A half-written pair is retried on the next check.
            Err(err) => {
                tracing::warn!(files = ?self.files, %err, "cannot load the changed client certificate; keeping the current one")
            }
        }
        cur.client.clone()
    }
}

impl tower::Service<Request<Body>> for Reloading {
    type Response = Response<Body>;
    type Error = kube::Error;
    type Future = BoxFuture<'static, Result<Response<Body>, kube::Error>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let client = self.client();
        Box::pin(async move { client.send(req).await })
    }
}

/// The client configuration of a kubeconfig file (its current context).
pub async fn load_config(
    path: &std::path::Path,
) -> Result<kube::Config, kube::config::KubeconfigError> {
    let kc = kube::config::Kubeconfig::read_from(path)?;
    kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default()).await
}

/// The certificate and key files `config` reads, if it names any.
pub fn credential_files(config: &kube::Config) -> Vec<PathBuf> {
    let auth = &config.auth_info;
    let mut files: Vec<PathBuf> = [&auth.client_certificate, &auth.client_key]
        .into_iter()
        .flatten()
        .map(PathBuf::from)
        .collect();
    files.dedup();
    files
}

/// A client for `config`; when it authenticates with certificate files,
/// one that follows their renewal.
pub fn build(config: kube::Config) -> Result<kube::Client, ClientError> {
    let files = credential_files(&config);
    if files.is_empty() {
        return kube::Client::try_from(config).map_err(ClientError::Build);
    }
    let default_ns = config.default_namespace.clone();
    let current = Current {
        stamp: stamp(&files),
        checked: Instant::now(),
        client: kube::Client::try_from(config.clone()).map_err(ClientError::Build)?,
    };
    let service = Reloading {
        config,
        files,
        current: Arc::new(Mutex::new(current)),
    };
    Ok(kube::Client::new(service, default_ns))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replaced_file_changes_the_stamp() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("cert.pem");
        std::fs::write(&f, "one").unwrap();
        let files = vec![f.clone()];
        let first = stamp(&files);
        assert_eq!(first, stamp(&files));
        let tmp = dir.path().join("cert.pem.tmp");
        std::fs::write(&tmp, "two").unwrap();
        std::fs::rename(&tmp, &f).unwrap();
        assert_ne!(first, stamp(&files));
        std::fs::remove_file(&f).unwrap();
        assert_eq!(stamp(&files), vec![None]);
    }

    #[test]
    fn only_certificate_files_are_followed() {
        let yaml = "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:6443\nusers:\n- name: u\n  user:\n    client-certificate: /x/pem\n    client-key: /x/pem\ncontexts:\n- name: c\n  context: {cluster: c, user: u}\ncurrent-context: c\n";
        let kc = kube::config::Kubeconfig::from_yaml(yaml).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let config = rt
            .block_on(kube::Config::from_custom_kubeconfig(
                kc,
                &kube::config::KubeConfigOptions::default(),
            ))
            .unwrap();
        assert_eq!(credential_files(&config), vec![PathBuf::from("/x/pem")]);
    }
}
