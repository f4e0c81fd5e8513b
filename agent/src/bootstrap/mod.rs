//! Joining a cluster like kubeadm/k3s: with `--server` and `--token`, the
//! agent discovers the cluster CA (`discovery`), obtains its client
//! certificate by a CSR (`csr`) and writes `<root-dir>/kubelet.conf` with
//! `<root-dir>/pki/kubelet-client-current.pem` (kubelet's names); `rotation`
//! renews it at 70–90% of its lifetime, `client` makes the agent's API
//! client use the renewed one at once, and `serving` obtains the kubelet
//! API's certificate the same way.

pub mod client;
pub mod csr;
pub mod discovery;
pub mod files;
pub mod rotation;
pub mod serving;
pub mod token;

use std::path::PathBuf;

use base64::Engine;
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
    let paths = files::Paths::new(&config.root_dir);
    if paths.has_valid_client_cert() {
        tracing::info!(path = %paths.kubeconfig.display(), "using the existing kubelet client certificate");
        return Ok(paths.kubeconfig);
    }
    let token = join
        .token
        .as_ref()
        .ok_or_else(|| BootstrapError::NoToken(paths.client_cert.clone()))?;
    let info = discovery::discover(&join.server, token, join.ca_cert_hash.as_deref())
        .await
        .map_err(|source| BootstrapError::Discovery {
            server: join.server.clone(),
            source,
        })?;
    tracing::info!(server = %join.server, token_id = %token.id, "cluster-info verified; requesting a client certificate");
    let ca_b64 = base64::engine::general_purpose::STANDARD.encode(&info.ca_pem);
    let yaml = discovery::kubeconfig_yaml(
        &join.server,
        serde_json::json!({"certificate-authority-data": ca_b64}),
        serde_json::json!({"token": token.to_string()}),
    );
    let client = discovery::client_from_yaml(&join.server, &yaml)
        .await
        .map_err(|source| BootstrapError::Discovery {
            server: join.server.clone(),
            source,
        })?;
    let (key, request) = csr::build_request(&config.node_name, &[], &[])?;
    let cert =
        csr::request_certificate(&client, csr::KUBELET_CLIENT_SIGNER, &request, shutdown).await?;
    paths.write_client(&cert, &key.serialize_pem(), &join.server, &info.ca_pem)?;
    tracing::info!(path = %paths.kubeconfig.display(), "joined the cluster; wrote the kubelet kubeconfig");
    Ok(paths.kubeconfig)
}

/// Joins (or reuses the credentials of an earlier join) and starts the
/// client certificate's rotation; returns the kubeconfig to run with.
pub async fn join(
    config: &crate::Config,
    join: &JoinConfig,
    shutdown: &CancellationToken,
) -> Result<PathBuf, BootstrapError> {
    let kubeconfig = ensure_kubeconfig(config, join, shutdown).await?;
    let paths = files::Paths::new(&config.root_dir);
    tokio::spawn(rotation::run(
        rotation::Rotated {
            file: paths.client_cert,
            signer: csr::KUBELET_CLIENT_SIGNER,
            node_name: config.node_name.clone(),
            dns_names: Vec::new(),
            ips: Vec::new(),
            kubeconfig: kubeconfig.clone(),
        },
        shutdown.clone(),
    ));
    Ok(kubeconfig)
}
