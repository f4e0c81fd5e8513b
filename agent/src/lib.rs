//! r8s-agent, a kubelet-compatible node agent: `config` -> `run` registers the
//! Node (`node`), keeps its status and Lease fresh, and runs pods
//! (`pod_worker`, with `probe` results) with volumes (`volume`) in cgroups
//! sized and named by `qos` and `cm`; `kube_proxy` routes Services and
//! serves cluster DNS on the node; `flannel` routes pod traffic to the
//! other nodes; `image_gc` removes unused images when the disk fills.

pub mod bootstrap;
pub mod cm;
pub mod config;
pub mod eviction;
pub mod flannel;
pub mod image_gc;
pub mod insecure_tls;
pub mod kube_proxy;
pub mod kuberuntime;
pub mod node;
pub mod pod_worker;
pub mod private_file;
pub mod probe;
pub mod qos;
pub mod quantity;
pub mod runtime_service;
pub mod server;
pub mod volume;

pub use config::Config;

use std::path::Path;
use std::sync::Arc;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Reported as `containerRuntimeVersion` by the FAKE runtime.
pub const FAKE_RUNTIME_VERSION: &str = concat!("fake://", env!("CARGO_PKG_VERSION"));

/// Why the agent stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("failed to read kubeconfig {path}")]
    Kubeconfig {
        path: std::path::PathBuf,
        #[source]
        source: kube::config::KubeconfigError,
    },
    #[error("failed to load the client configuration")]
    InferConfig(#[source] kube::config::InferConfigError),
    #[error(transparent)]
    Client(#[from] bootstrap::client::ClientError),
    #[error(transparent)]
    Runtime(#[from] runtime_service::RuntimeServiceError),
    #[error("failed to join the cluster")]
    Bootstrap(#[from] bootstrap::BootstrapError),
}

/// A per-node /24 in 10.42.0.0/16 for the fake runtime, picked from the node
/// name so simulated nodes rarely share pod addresses.
fn fake_pod_ip_base(node_name: &str) -> std::net::Ipv4Addr {
    let third = node_name
        .bytes()
        .fold(0u8, |h, b| h.wrapping_mul(31).wrapping_add(b));
    std::net::Ipv4Addr::new(10, 42, third, 0)
}

/// An API client from `kubeconfig` (else the in-cluster config or
/// ~/.kube/config) sending `user_agent`; with certificate files (a joined
/// node) one that picks up their renewal without a restart.
async fn client(
    kubeconfig: Option<&Path>,
    user_agent: &'static str,
) -> Result<kube::Client, RunError> {
    bootstrap::client::build(kube_config(kubeconfig, user_agent).await?).map_err(RunError::Client)
}

async fn kube_config(
    kubeconfig: Option<&Path>,
    user_agent: &'static str,
) -> Result<kube::Config, RunError> {
    let kube_config = match kubeconfig {
        Some(path) => bootstrap::client::load_config(path)
            .await
            .map_err(|source| RunError::Kubeconfig {
                path: path.to_path_buf(),
                source,
            })?,
        None => kube::Config::infer().await.map_err(RunError::InferConfig)?,
    };
    let mut kube_config = kube_config;
    // The server names a writer's managedFields entry after its User-Agent.
    kube_config.headers.push((
        http::header::USER_AGENT,
        http::HeaderValue::from_static(user_agent),
    ));
    Ok(kube_config)
}

/// The agent's API clients: the node's own identity, and the one its
/// service proxy and pod network read the whole cluster's Nodes, Services
/// and EndpointSlices with (kube-proxy's and flannel's, as k3s gives them).
#[derive(Clone)]
pub struct ApiClients {
    pub node: kube::Client,
    pub network: kube::Client,
}

/// How long a new node waits for the node IPAM controller's podCIDR.
const POD_CIDR_WAIT: std::time::Duration = std::time::Duration::from_secs(15);

/// kubelet's User-Agent form.
pub const USER_AGENT: &str = "kubelet/v1.32.0 (linux/amd64) kubernetes/r8s";
/// kube-proxy's, for the service proxy and pod network.
pub const KUBE_PROXY_USER_AGENT: &str = "kube-proxy/v1.32.0 (linux/amd64) kubernetes/r8s";

/// Serves the kubelet API; a failure to start is logged, the agent goes on.
async fn kubelet_api(
    config: &Config,
    node_ip: std::net::IpAddr,
    evictions: Arc<eviction::EvictionHandle>,
    image_gc: Arc<image_gc::GcCounts>,
    shutdown: CancellationToken,
) {
    let cluster_ca = kube_config(config.kubeconfig.as_deref(), USER_AGENT)
        .await
        .ok()
        .and_then(|c| c.root_cert);
    let served = match server::ServerConfig::from_agent(config, node_ip, cluster_ca) {
        Ok(mut c) => {
            c.evictions = Some(evictions);
            c.image_gc = Some(image_gc);
            bootstrap::serving::apply(&mut c, config, &shutdown).await;
            server::serve(c, shutdown).await
        }
        Err(e) => Err(e),
    };
    if let Err(err) = served {
        tracing::error!(error = %err, source = ?std::error::Error::source(&err), "kubelet API not served");
    }
}

/// Runs the service proxy unless `--disable-kube-proxy`. Simulated nodes
/// (the FAKE runtime) have no pod network to route to, and many of them share
/// one host, so they run none.
async fn service_proxy(
    config: &Config,
    client: kube::Client,
    dns_host: Option<kube_proxy::DnsHost>,
    shutdown: CancellationToken,
) {
    if let (Some(proxy), Some(host)) = (&config.kube_proxy, dns_host) {
        kube_proxy::run(config, proxy, client, host, shutdown).await;
    }
}

/// Routes pod traffic to the other nodes (`--flannel-backend`). Simulated
/// nodes (the FAKE runtime) share one host and have no pods to route to.
async fn pod_network(
    config: &Config,
    clients: ApiClients,
    node_ip: std::net::IpAddr,
    shutdown: CancellationToken,
) {
    if config.fake_runtime {
        return;
    }
    let mut flannel = config.flannel.clone();
    // The embedded agent follows the server's --cluster-cidr through the
    // proxy's settings.
    if let Some(proxy) = &config.kube_proxy {
        flannel.cluster_cidr = proxy.cluster_cidr;
    }
    let settings = flannel::watch::Settings {
        config: flannel,
        node_name: config.node_name.clone(),
        node_ip,
        masquerade_table: flannel::masquerade::table_name(&config.pod_bridge),
    };
    flannel::run(clients, settings, shutdown).await;
}

/// Kubelet's image GC over CRI, shared by its own loop and the eviction
/// manager (which deletes unused images before evicting pods for disk).
type ImageGc = Arc<tokio::sync::Mutex<image_gc::Manager<image_gc::CriImages>>>;

fn image_gc_manager(
    config: &Config,
    cri: Option<cri::client::CriClient>,
    counts: Arc<image_gc::GcCounts>,
) -> Option<ImageGc> {
    let manager = image_gc::Manager::new(
        image_gc::CriImages { cri: cri? },
        config.image_gc,
        counts,
        std::time::Instant::now(),
    );
    Some(Arc::new(tokio::sync::Mutex::new(manager)))
}

/// Removes unused images as kubelet's image GC; simulated nodes (the FAKE
/// runtime) have no images.
async fn image_gc(
    config: &Config,
    client: kube::Client,
    manager: Option<ImageGc>,
    shutdown: CancellationToken,
) {
    let Some(manager) = manager else {
        return;
    };
    let events = Arc::new(image_gc::NodeEventRecorder::new(
        client,
        config.node_name.clone(),
    ));
    image_gc::run(manager, events, shutdown).await;
}

/// The eviction manager's inputs: the node's signals, pod usage through
/// CRI (none with the FAKE runtime) and the node status to flag pressure on.
fn eviction_context(
    config: &Arc<Config>,
    client: &kube::Client,
    cri: Option<cri::client::CriClient>,
    ctx: &node::NodeContext,
    health: watch::Sender<node::NodeHealth>,
) -> eviction::EvictionContext {
    let recorder = kuberuntime::events::EventRecorder::new(client.clone(), &config.node_name);
    let cgroup = config.cgroup_root.trim_start_matches('/');
    let pods_cgroups = ["", "memory", "unified"]
        .iter()
        .map(|h| {
            std::path::Path::new("/sys/fs/cgroup")
                .join(h)
                .join(cgroup)
                .join(cm::names::KUBEPODS)
        })
        .collect();
    let allocatable_memory = ctx.host.facts().ok().and_then(|facts| {
        node::object::node_status(
            &ctx.inputs(&facts),
            None,
            &node::NodeHealth::default(),
            &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::now(),
            ),
        )
        .allocatable?
        .get("memory")
        .and_then(|q| quantity::ParsedQuantity::from_quantity(q).ok())
        .map(|q| q.value())
    });
    eviction::EvictionContext {
        config: config.clone(),
        client: client.clone(),
        handle: Arc::new(eviction::EvictionHandle::new(Some(recorder))),
        signals: Arc::new(eviction::SystemSignals {
            root_dir: config.root_dir.clone(),
            image_dir: config.root_dir.join("cri"),
            pods_cgroups,
            allocatable_memory,
        }),
        stats: Arc::new(eviction::NodePodStats {
            cri,
            root_dir: config.root_dir.clone(),
            pod_logs_dir: config.pod_logs_dir.clone(),
        }),
        health,
        reclaim: None,
    }
}

/// Runs the agent until `shutdown` is cancelled: registers the Node, then
/// keeps its status and Lease fresh and runs the pods bound to it.
pub async fn run(mut config: Config, shutdown: CancellationToken) -> Result<(), RunError> {
    if let Some(join) = bootstrap::JoinConfig::from_config(&config)? {
        let joined = bootstrap::join(&config, &join, &shutdown).await?;
        config.kubeconfig = Some(joined.kubelet);
        config
            .kube_proxy_kubeconfig
            .get_or_insert(joined.kube_proxy);
    }
    let node = client(config.kubeconfig.as_deref(), USER_AGENT).await?;
    let network = match &config.kube_proxy_kubeconfig {
        Some(path) => client(Some(path), KUBE_PROXY_USER_AGENT).await?,
        None => node.clone(),
    };
    run_with_clients(config, ApiClients { node, network }, shutdown).await
}

/// `run` with ready API clients (the agent embedded in r8s-server).
pub async fn run_with_clients(
    config: Config,
    clients: ApiClients,
    shutdown: CancellationToken,
) -> Result<(), RunError> {
    let client = clients.node.clone();
    let node_ip = node::detect_node_ip(&config);
    tracing::info!(node = %config.node_name, %node_ip, "starting r8s-agent");
    let (health_tx, health_rx) = watch::channel(node::NodeHealth::default());
    let pressure_tx = health_tx.clone();
    let config = Arc::new(config);
    let mut cri = None;
    let (runtime, runtime_version, runtime_task, dns_host): (
        Arc<dyn pod_worker::PodRuntime>,
        String,
        _,
        _,
    ) = if config.fake_runtime {
        tracing::warn!("FAKE runtime: pods are reported Running but no containers run");
        let rt = pod_worker::FakeRuntime::new(fake_pod_ip_base(&config.node_name));
        (Arc::new(rt), FAKE_RUNTIME_VERSION.to_owned(), None, None)
    } else {
        if config.container_runtime_endpoint.is_none() && config.pod_cidr.is_none() {
            // The in-process runtime builds the pod network from the Node's
            // podCIDR, which a new node gets once it is registered.
            let early = node::NodeContext {
                host: Arc::new(node::SystemHost::new(config.root_dir.clone())),
                config: config.clone(),
                node_ip,
                runtime_version: format!("{}://{}", cri::RUNTIME_NAME, cri::RUNTIME_VERSION),
            };
            node::register_for_pod_cidr(&client, &early, POD_CIDR_WAIT).await;
        }
        let service =
            runtime_service::start(&config, &client, node_ip, shutdown.child_token()).await?;
        let version = service.version.clone();
        cri = Some(service.cri.clone());
        let health = tokio::spawn(runtime_service::watch_health(
            service.cri.clone(),
            health_tx,
            shutdown.clone(),
        ));
        let dns_host = match service.pod_cidr {
            Some(pod_cidr) => kube_proxy::DnsHost::PodBridge {
                bridge: config.pod_bridge.clone(),
                pod_cidr,
            },
            None => kube_proxy::DnsHost::NodeIp(node_ip),
        };
        let rt = Arc::new(service.pod_runtime);
        (rt, version, Some((service.server, health)), Some(dns_host))
    };
    let ctx = Arc::new(node::NodeContext {
        host: Arc::new(node::SystemHost::new(config.root_dir.clone())),
        config: config.clone(),
        node_ip,
        runtime_version,
    });
    let image_gc_counts = Arc::new(image_gc::GcCounts::default());
    let images = image_gc_manager(&config, cri.clone(), image_gc_counts.clone());
    let mut eviction = eviction_context(&config, &client, cri, &ctx, pressure_tx);
    eviction.reclaim = images
        .clone()
        .map(|m| Arc::new(image_gc::DiskReclaim(m)) as Arc<dyn eviction::NodeReclaim>);
    let workers = Arc::new(pod_worker::WorkerContext {
        client: client.clone(),
        runtime,
        host_ips: vec![ctx.node_ip],
        eviction: eviction.handle.clone(),
    });
    tokio::join!(
        node::run_node(client.clone(), ctx.clone(), health_rx, shutdown.clone()),
        pod_worker::run_pod_workers(
            workers,
            &ctx.config.node_name,
            ctx.config.pod_manifest_path.clone(),
            shutdown.clone()
        ),
        kubelet_api(
            &ctx.config,
            ctx.node_ip,
            eviction.handle.clone(),
            image_gc_counts.clone(),
            shutdown.clone()
        ),
        service_proxy(
            &ctx.config,
            clients.network.clone(),
            dns_host,
            shutdown.clone()
        ),
        pod_network(&ctx.config, clients, ctx.node_ip, shutdown.clone()),
        eviction::run(eviction, shutdown.clone()),
        image_gc(&ctx.config, client.clone(), images, shutdown.clone())
    );
    if let Some((server, health)) = runtime_task {
        let _ = health.await;
        // The in-process runtime stops with the shutdown token; containers
        // keep running, as they do when kubelet stops.
        if let Some(server) = server {
            let _ = server.await;
        }
    }
    tracing::info!("r8s-agent stopped");
    Ok(())
}
