//! The kubelet API on `--port` (10250): TLS with client certificates from
//! the client CA (`tls`), then `routes` serves /healthz, /pods, logs
//! (`logs`, `log_file`), the streaming proxy to CRI (`upgrade`) and stats
//! (`stats`), finding pods through CRI labels (`lookup`).

pub mod log_file;
pub mod logs;
pub mod lookup;
pub mod routes;
pub mod serving_cert;
pub mod stats;
pub mod tls;
pub mod upgrade;

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

/// How long a client may take to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The response body of every handler.
pub type Body = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

/// Why the kubelet API could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("failed to set up TLS")]
    Tls(#[from] tls::TlsError),
    #[error("failed to listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// What the kubelet API needs from the agent configuration.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// `--address`: the IP to serve on (`0.0.0.0` for all).
    pub address: IpAddr,
    /// `--port`; 0 picks a free port (tests).
    pub port: u16,
    pub node_name: String,
    /// Addresses put in a self-signed serving certificate.
    pub node_ips: Vec<IpAddr>,
    /// `--root-dir`: the self-signed certificate goes in `pki/` there.
    pub root_dir: PathBuf,
    pub tls_cert_file: Option<PathBuf>,
    pub tls_private_key_file: Option<PathBuf>,
    /// The CA certificates that sign accepted client certificates; without
    /// any, every request is refused (no anonymous access).
    pub client_ca: Vec<rustls_pki_types::CertificateDer<'static>>,
    /// The CRI endpoint (`unix:///...`).
    pub cri_endpoint: String,
    /// The eviction manager's counts, for `kubelet_evictions` on /metrics.
    pub evictions: Option<Arc<crate::eviction::EvictionHandle>>,
    /// Image GC's counts, for `kubelet_image_garbage_collected_total` on /metrics.
    pub image_gc: Option<Arc<crate::image_gc::GcCounts>>,
}

impl ServerConfig {
    /// The kubelet API settings of the agent; `cluster_ca` (DER, from the
    /// kubeconfig) verifies clients when `--client-ca-file` is not given.
    pub fn from_agent(
        config: &crate::Config,
        node_ip: IpAddr,
        cluster_ca: Option<Vec<Vec<u8>>>,
    ) -> Result<Self, ServerError> {
        let client_ca = match &config.client_ca_file {
            Some(path) => tls::read_pem_certs(path)?,
            None => cluster_ca
                .unwrap_or_default()
                .into_iter()
                .map(rustls_pki_types::CertificateDer::from)
                .collect(),
        };
        let mut node_ips = config.node_ips.clone();
        if !node_ips.contains(&node_ip) {
            node_ips.push(node_ip);
        }
        Ok(Self {
            address: config.address,
            port: config.port,
            node_name: config.node_name.clone(),
            node_ips,
            root_dir: config.root_dir.clone(),
            tls_cert_file: config.tls_cert_file.clone(),
            tls_private_key_file: config.tls_private_key_file.clone(),
            client_ca,
            cri_endpoint: config
                .container_runtime_endpoint
                .clone()
                // Without the flag: the socket of the in-process r8s-cri.
                .unwrap_or_else(|| {
                    format!(
                        "unix://{}",
                        crate::runtime_service::in_process_socket(config).display()
                    )
                }),
            evictions: None,
            image_gc: None,
        })
    }
}

/// Shared state of the handlers.
#[derive(Debug)]
pub struct State {
    pub cri: lookup::LazyCri,
    pub node_name: String,
    pub root_dir: PathBuf,
    /// The last node CPU sample `(time nanos, core nanos)`, for usageNanoCores.
    pub last_cpu: std::sync::Mutex<Option<(i64, u64)>>,
    pub evictions: Option<Arc<crate::eviction::EvictionHandle>>,
    pub image_gc: Option<Arc<crate::image_gc::GcCounts>>,
}

/// A bound kubelet API server.
pub struct Server {
    listener: TcpListener,
    acceptor: TlsAcceptor,
    state: Arc<State>,
}

impl Server {
    /// Builds TLS and binds the listener.
    pub async fn bind(config: ServerConfig) -> Result<Self, ServerError> {
        let (cert, key) = tls::serving_files(
            config.tls_cert_file.as_deref(),
            config.tls_private_key_file.as_deref(),
            &config.root_dir,
            &config.node_name,
            &config.node_ips,
        )?;
        let tls = tls::server_config(cert, key, &config.client_ca)?;
        if config.client_ca.is_empty() {
            tracing::warn!("no client CA: every kubelet API request will be refused");
        }
        let addr = SocketAddr::new(config.address, config.port);
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ServerError::Bind { addr, source })?;
        Ok(Self {
            listener,
            acceptor: TlsAcceptor::from(tls),
            state: Arc::new(State {
                cri: lookup::LazyCri::new(config.cri_endpoint),
                node_name: config.node_name,
                root_dir: config.root_dir,
                last_cpu: std::sync::Mutex::new(None),
                evictions: config.evictions,
                image_gc: config.image_gc,
            }),
        })
    }

    /// The address actually listened on.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` is cancelled.
    pub async fn run(self, shutdown: CancellationToken) {
        tracing::info!(addr = ?self.listener.local_addr().ok(), "serving the kubelet API");
        loop {
            let (tcp, peer) = tokio::select! {
                _ = shutdown.cancelled() => break,
                accepted = self.listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(err) => {
                        tracing::warn!(%err, "failed to accept a connection");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = self.acceptor.clone();
            let state = Arc::clone(&self.state);
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await
                {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(err)) => {
                        tracing::debug!(%peer, %err, "TLS handshake failed");
                        return;
                    }
                    Err(_) => return,
                };
                // rustls verified any certificate against the client CA.
                let authenticated = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .is_some_and(|c| !c.is_empty());
                let service = hyper::service::service_fn(move |req| {
                    let state = Arc::clone(&state);
                    async move {
                        let resp = if authenticated {
                            routes::handle(state, req).await
                        } else {
                            text(StatusCode::UNAUTHORIZED, "Unauthorized")
                        };
                        Ok::<_, Infallible>(resp)
                    }
                });
                let builder = auto::Builder::new(TokioExecutor::new());
                let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), service);
                tokio::select! {
                    res = conn => if let Err(err) = res {
                        tracing::debug!(%peer, %err, "connection ended with an error");
                    },
                    _ = shutdown.cancelled() => {}
                }
            });
        }
    }
}

/// Binds and serves the kubelet API until `shutdown` is cancelled.
///
/// ```no_run
/// # async fn f(config: agent::server::ServerConfig) {
/// let shutdown = tokio_util::sync::CancellationToken::new();
/// agent::server::serve(config, shutdown).await.unwrap();
/// # }
/// ```
pub async fn serve(config: ServerConfig, shutdown: CancellationToken) -> Result<(), ServerError> {
    Server::bind(config).await?.run(shutdown).await;
    Ok(())
}

/// A whole body.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// A plain-text response.
pub fn text(status: StatusCode, body: &str) -> Response<Body> {
    let mut resp = Response::new(full(format!("{body}\n")));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// A JSON response.
pub fn json(value: &serde_json::Value) -> Response<Body> {
    let mut resp = Response::new(full(serde_json::to_vec(value).unwrap_or_default()));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}
