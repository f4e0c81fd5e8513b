//! Start-up and shutdown of r8s-server: store, watch cache, PKI, kubeconfig,
//! bootstrap objects, then the HTTPS listener until the shutdown token fires.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::server::{Api, listener};
use crate::storage::Store;
use crate::watch_cache::WatchCache;
use crate::{bootstrap, controllers, embedded_agent, pki, storage, tls};

/// How often store history is compacted.
const COMPACTION_INTERVAL: Duration = Duration::from_secs(300);
/// How many revisions of history compaction keeps.
const COMPACTION_KEEP: u64 = 10_000;

/// How long shutdown keeps serving for the leader leases to be released.
const LEASE_RELEASE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long shutdown waits for the embedded agent.
const AGENT_STOP_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("failed to create the data dir {path}")]
    DataDir {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to open the store")]
    Store(#[source] storage::StoreError),
    #[error("failed to start the watch cache")]
    WatchCache(#[source] storage::StoreError),
    #[error("failed to listen on {addr}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to set up the PKI")]
    Pki(#[from] pki::PkiError),
    #[error("failed to build the TLS configuration")]
    Tls(#[from] tls::TlsError),
    #[error("bad service ranges")]
    ServiceRanges(#[from] crate::registry::allocator::AllocatorError),
    #[error("failed to restore the service allocations")]
    Services(#[source] storage::StoreError),
    #[error("failed to start the RBAC authorizer")]
    Rbac(#[source] storage::StoreError),
    #[error("failed to load the service account signing key")]
    ServiceAccountKey(#[from] crate::auth::sa_keys::KeyError),
    #[error("a blocking task failed")]
    Join(#[from] tokio::task::JoinError),
}

fn hostname() -> Option<String> {
    let h = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let h = h.trim().to_ascii_lowercase();
    (!h.is_empty()).then_some(h)
}

fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// Opens the store in the data dir.
async fn open_store(config: &Config) -> Result<Arc<dyn Store>, RunError> {
    let store = storage::embedded::EmbeddedStore::open_async(&config.data_dir.join("db"))
        .await
        .map_err(RunError::Store)?;
    Ok(Arc::new(store))
}

/// Starts the scheduler and controllers as clients of this server, through
/// the in-process transport (`server::in_process`).
fn start_controllers(api: Arc<Api>, config: Arc<Config>, shutdown: CancellationToken) {
    controllers::spawn_all(&controllers::ControllerContext {
        scheduler_metrics: api.metrics.scheduler.clone(),
        client: crate::server::in_process::client(api, controllers::LOOPBACK_USER_AGENT),
        config,
        informers: Arc::new(controllers::informers::SharedInformers::new(
            shutdown.clone(),
        )),
        shutdown,
    });
}

/// Starts the embedded node agent unless `--disable-agent`.
async fn start_agent(
    pki: &pki::Pki,
    server_url: &str,
    server_config: &Config,
    shutdown: CancellationToken,
) -> Option<tokio::task::JoinHandle<()>> {
    let cluster_ca_file = server_config.data_dir.join("tls/ca.crt");
    let config = match embedded_agent::agent_config_for(server_config) {
        // The kubelet API accepts the API server's client certificate.
        Ok(mut c) => {
            c.client_ca_file.get_or_insert(cluster_ca_file);
            c
        }
        Err(err) => {
            tracing::error!(error = %err, source = ?std::error::Error::source(&err), "the embedded agent is not running");
            return None;
        }
    };
    let clients = match embedded_agent::loopback_clients(pki, server_url).await {
        Ok(c) => c,
        Err(err) => {
            tracing::error!(%err, "cannot build the loopback clients; the embedded agent is not running");
            return None;
        }
    };
    match embedded_agent::spawn(config, clients, shutdown) {
        Ok(handle) => Some(handle),
        Err(err) => {
            tracing::error!(%err, "the embedded agent is not running");
            None
        }
    }
}

/// Runs the server until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), RunError> {
    std::fs::create_dir_all(&config.data_dir).map_err(|source| RunError::DataDir {
        path: config.data_dir.clone(),
        source,
    })?;
    let store = open_store(&config).await?;
    let cache = WatchCache::start(Arc::clone(&store))
        .await
        .map_err(RunError::WatchCache)?;
    // Like kube-apiserver's periodic etcd compaction: old revisions go, and
    // watches or continue tokens from before them get 410 Gone.
    tokio::spawn(storage::compactor::run_compactor(
        Arc::clone(&store),
        COMPACTION_INTERVAL,
        COMPACTION_KEEP,
    ));

    let addr = SocketAddr::new(config.bind_address, config.secure_port);
    let tcp = bind(addr).map_err(|source| RunError::Listen { addr, source })?;
    let port = tcp
        .local_addr()
        .map_err(|source| RunError::Listen { addr, source })?
        .port();
    let advertise = bootstrap::advertise_address(config.advertise_address, config.bind_address);

    let mut sans: Vec<String> = vec![
        "localhost".into(),
        "127.0.0.1".into(),
        "::1".into(),
        "kubernetes".into(),
        "kubernetes.default".into(),
        "kubernetes.default.svc".into(),
        "kubernetes.default.svc.cluster.local".into(),
        advertise.to_string(),
    ];
    if let Some(ip) = config.service_cluster_ip_range.nth(1) {
        sans.push(ip.to_string());
    }
    if !config.bind_address.is_unspecified() {
        sans.push(config.bind_address.to_string());
    }
    sans.extend(hostname());
    sans.extend(config.tls_san.iter().cloned());
    sans.dedup();
    let data_dir = config.data_dir.clone();
    let pki = tokio::task::spawn_blocking(move || pki::ensure(&data_dir, &sans)).await??;

    let client_host: IpAddr =
        if config.bind_address.is_unspecified() || config.bind_address.is_loopback() {
            IpAddr::from([127, 0, 0, 1])
        } else {
            config.bind_address
        };
    let server_url = format!("https://{}", SocketAddr::new(client_host, port));
    pki::write_kubeconfig(
        &config.write_kubeconfig,
        &pki::kubeconfig(&pki, &server_url),
    )?;
    let tls = tls::server_config(&pki)?;

    let config = Arc::new(config);
    let api = Arc::new(Api::new(
        store,
        cache,
        Arc::clone(&config),
        shutdown.clone(),
        SocketAddr::new(advertise, port).to_string(),
    )?);
    api.restore_service_allocations()
        .await
        .map_err(RunError::Services)?;
    api.auth
        .start(shutdown.clone())
        .await
        .map_err(RunError::Rbac)?;
    let sa_dir = config.data_dir.clone();
    api.auth.set_signing_key(
        tokio::task::spawn_blocking(move || crate::auth::sa_keys::SigningKey::ensure(&sa_dir))
            .await??,
    );
    tracing::info!(
        url = %server_url,
        port,
        kubeconfig = %config.write_kubeconfig.display(),
        "r8s-server is serving the Kubernetes API"
    );
    let bootstrap_api = Arc::clone(&api);
    let bootstrap_shutdown = shutdown.clone();
    let bootstrap_pki = pki.clone();
    let bootstrap_url = server_url.clone();
    let bootstrap_config = Arc::clone(&config);
    let (agent_tx, agent_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        loop {
            match bootstrap::run(&bootstrap_api, advertise, port).await {
                Ok(()) => {
                    bootstrap_api.ready.store(true, Ordering::SeqCst);
                    tracing::info!("bootstrap objects are in place; ready");
                    let server_config = bootstrap_config.clone();
                    start_controllers(
                        Arc::clone(&bootstrap_api),
                        bootstrap_config,
                        bootstrap_shutdown.clone(),
                    );
                    if !server_config.disable_agent
                        && let Some(agent) = start_agent(
                            &bootstrap_pki,
                            &bootstrap_url,
                            &server_config,
                            bootstrap_shutdown,
                        )
                        .await
                    {
                        let _ = agent_tx.send(agent);
                    }
                    return;
                }
                Err(err) => tracing::warn!(%err, "bootstrap failed; retrying"),
            }
            tokio::select! {
                _ = bootstrap_shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    });
    // The listener outlives the shutdown signal until the scheduler and the
    // controllers have released their leases through it (client-go's
    // ReleaseOnCancel), so that a standby or the next start leads at once.
    let listener_stop = CancellationToken::new();
    {
        let shutdown = shutdown.clone();
        let stop = listener_stop.clone();
        tokio::spawn(async move {
            shutdown.cancelled().await;
            controllers::leader::wait_released(LEASE_RELEASE_TIMEOUT).await;
            stop.cancel();
        });
    }
    listener::serve(tcp, tls, api, listener_stop).await;
    if let Ok(Ok(agent)) = tokio::time::timeout(AGENT_STOP_TIMEOUT, agent_rx).await {
        // The agent stops on the same token; wait for it so its runtime
        // closes cleanly, but never hang the shutdown on it.
        if tokio::time::timeout(AGENT_STOP_TIMEOUT, agent)
            .await
            .is_err()
        {
            tracing::warn!("the embedded agent did not stop in time");
        }
    }
    tracing::info!("r8s-server stopped");
    Ok(())
}
