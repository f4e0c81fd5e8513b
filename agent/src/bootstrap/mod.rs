//! Joining a cluster like kubeadm/k3s: with `--server` and `--token`, the
//! agent discovers the cluster CA (`discovery`), obtains its client
//! certificate by a CSR (`csr`) and writes `<root-dir>/kubelet.conf` with
//! `<root-dir>/pki/kubelet-client-current.pem` (kubelet's names); `rotation`
//! renews it at 70–90% of its lifetime, `client` makes the agent's API
//! client use the renewed one at once, and `serving` obtains the kubelet
//! API's certificate the same way. The node then asks, with its own
//! certificate, for one of `system:kube-proxy` (`<root-dir>/kube-proxy.conf`),
//! the identity its service proxy and pod network read Services,
//! EndpointSlices and all Nodes with, as k3s gives its agents: a node's own
//! identity may read only its own Node.

pub mod client;
pub mod csr;
pub mod discovery;
pub mod files;
pub mod rotation;
pub mod serving;
pub mod token;

use std::path::{Path, PathBuf};
use tokio_util::sync::CancellationToken;

use token::BootstrapToken;

#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error("no valid client certificate in {0} and no --token to request one")]
    NoToken(PathBuf),
    #[error(transparent)]
    Token(#[from] token::TokenError),
    #[error("discovery of the cluster at {server} failed")]
    Discovery {
        server: String,
        #[source]
        source: discovery::DiscoveryError,
    },
    #[error("failed to obtain the kubelet client certificate")]
    Csr(#[from] csr::CsrError),
    #[error(transparent)]
    Files(#[from] files::FilesError),
    #[error("failed to use {path}")]
    Kubeconfig {
        path: PathBuf,
        #[source]
        source: kube::config::KubeconfigError,
    },
    #[error("{path} names no cluster")]
    NoCluster { path: PathBuf },
    #[error("failed to build an API client from {path}")]
    Client {
        path: PathBuf,
        #[source]
        source: kube::Error,
    },
}

/// How to join: `--server`, `--token`, `--ca-cert-hash`.
#[derive(Debug, Clone)]
pub struct JoinConfig {
    pub server: String,
    pub token: Option<BootstrapToken>,
    pub ca_cert_hash: Option<String>,
}

impl JoinConfig {
    /// The join settings of `config`, if it has `--server`.
    pub fn from_config(config: &crate::Config) -> Result<Option<Self>, BootstrapError> {
        let Some(server) = config.server.clone() else {
            return Ok(None);
        };
        let token = config.token.as_deref().map(str::parse).transpose()?;
        let ca_cert_hash = config
            .ca_cert_hash
            .as_deref()
            .map(token::parse_ca_cert_hash)
            .transpose()?;
        Ok(Some(Self {
            server: server.trim_end_matches('/').to_owned(),
            token,
            ca_cert_hash,
        }))
    }
}

/// Makes sure `<root-dir>/kubelet.conf` holds a valid client certificate,
/// joining with the token when it does not; returns its path.
pub async fn ensure_kubeconfig(
    config: &crate::Config,
    join: &JoinConfig,
    shutdown: &CancellationToken,
) -> Result<PathBuf, BootstrapError> {
    let paths = files::Paths::new(&config.root_dir).kubelet;
    if paths.is_valid() {
        tracing::info!(path = %paths.kubeconfig.display(), "using the existing kubelet client certificate");
        return Ok(paths.kubeconfig);
    }
    let token = join
        .token
        .as_ref()
        .ok_or_else(|| BootstrapError::NoToken(paths.cert.clone()))?;
    let info = discovery::discover(&join.server, token, join.ca_cert_hash.as_deref())
        .await
        .map_err(|source| BootstrapError::Discovery {
            server: join.server.clone(),
            source,
        })?;
    tracing::info!(server = %join.server, token_id = %token.id, "cluster-info verified; requesting a client certificate");
    let ca_data = files::ca_data(&info.ca_pem);
    let yaml = discovery::kubeconfig_yaml(
        &join.server,
        serde_json::json!({"certificate-authority-data": ca_data}),
        serde_json::json!({"token": token.to_string()}),
    );
    let client = discovery::client_from_yaml(&join.server, &yaml)
        .await
        .map_err(|source| BootstrapError::Discovery {
            server: join.server.clone(),
            source,
        })?;
    let (key, request) = csr::build_request(&csr::Subject::node(&config.node_name), &[], &[])?;
    let cert =
        csr::request_certificate(&client, csr::KUBELET_CLIENT_SIGNER, &request, shutdown).await?;
    paths.write(&cert, &key.serialize_pem(), &join.server, &ca_data)?;
    tracing::info!(path = %paths.kubeconfig.display(), "joined the cluster; wrote the kubelet kubeconfig");
    Ok(paths.kubeconfig)
}

fn kubeconfig_error(path: &Path) -> impl FnOnce(kube::config::KubeconfigError) -> BootstrapError {
    let path = path.to_path_buf();
    move |source| BootstrapError::Kubeconfig { path, source }
}

/// The server and base64 CA bundle of a kubeconfig's first cluster.
fn cluster_of(path: &Path) -> Result<(String, String), BootstrapError> {
    kube::config::Kubeconfig::read_from(path)
        .map_err(kubeconfig_error(path))?
        .clusters
        .into_iter()
        .find_map(|c| c.cluster)
        .and_then(|c| Some((c.server?, c.certificate_authority_data.unwrap_or_default())))
        .ok_or_else(|| BootstrapError::NoCluster {
            path: path.to_path_buf(),
        })
}

/// Makes sure `<root-dir>/kube-proxy.conf` holds a valid `system:kube-proxy`
/// certificate, asking for one as the node (`kubelet_conf`) when it does
/// not; returns its path.
pub async fn ensure_kube_proxy_kubeconfig(
    config: &crate::Config,
    kubelet_conf: &Path,
    shutdown: &CancellationToken,
) -> Result<PathBuf, BootstrapError> {
    let paths = files::Paths::new(&config.root_dir).kube_proxy;
    if paths.is_valid() {
        return Ok(paths.kubeconfig);
    }
    let (server, ca_data) = cluster_of(kubelet_conf)?;
    let node = client_for(kubelet_conf).await?;
    let (key, request) = csr::build_request(&csr::Subject::kube_proxy(), &[], &[])?;
    let cert =
        csr::request_certificate(&node, csr::KUBE_APISERVER_CLIENT_SIGNER, &request, shutdown)
            .await?;
    paths.write(&cert, &key.serialize_pem(), &server, &ca_data)?;
    tracing::info!(path = %paths.kubeconfig.display(), "wrote the kube-proxy kubeconfig");
    Ok(paths.kubeconfig)
}

/// A plain client from a kubeconfig file.
async fn client_for(path: &Path) -> Result<kube::Client, BootstrapError> {
    let config = client::load_config(path)
        .await
        .map_err(kubeconfig_error(path))?;
    kube::Client::try_from(config).map_err(|source| BootstrapError::Client {
        path: path.to_path_buf(),
        source,
    })
}

/// The kubeconfigs a joined agent runs with.
#[derive(Debug, Clone)]
pub struct Joined {
    /// The node's (kubelet.conf).
    pub kubelet: PathBuf,
    /// The service proxy's and pod network's (kube-proxy.conf).
    pub kube_proxy: PathBuf,
}

/// Joins (or reuses the credentials of an earlier join) and starts the
/// rotation of both client certificates.
pub async fn join(
    config: &crate::Config,
    join: &JoinConfig,
    shutdown: &CancellationToken,
) -> Result<Joined, BootstrapError> {
    let kubelet = ensure_kubeconfig(config, join, shutdown).await?;
    let kube_proxy = ensure_kube_proxy_kubeconfig(config, &kubelet, shutdown).await?;
    let paths = files::Paths::new(&config.root_dir);
    let rotated = [
        (
            paths.kubelet.cert,
            csr::KUBELET_CLIENT_SIGNER,
            csr::Subject::node(&config.node_name),
        ),
        (
            paths.kube_proxy.cert,
            csr::KUBE_APISERVER_CLIENT_SIGNER,
            csr::Subject::kube_proxy(),
        ),
    ];
    for (file, signer, subject) in rotated {
        tokio::spawn(rotation::run(
            rotation::Rotated {
                file,
                signer,
                subject,
                dns_names: Vec::new(),
                ips: Vec::new(),
                kubeconfig: kubelet.clone(),
            },
            shutdown.clone(),
        ));
    }
    Ok(Joined {
        kubelet,
        kube_proxy,
    })
}
