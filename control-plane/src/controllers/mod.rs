//! The scheduler and controllers of r8s-server. They run in the server
//! process but only as clients of its API (kube-rs watchers, reflectors and
//! controllers over the in-process transport, `server::in_process`), exactly
//! like kube-scheduler and kube-controller-manager would; each lives in its
//! own module and is started by `spawn_all` once the server is ready.

pub mod bootstrapsigner;
pub mod clusterroleaggregation;
pub mod cronjob;
pub mod csr;
pub mod csrapproving;
pub mod csrsigning;
pub mod daemonset;
pub mod deployment;
pub mod disruption;
pub mod endpoints;
pub mod endpointslice;
pub mod garbagecollector;
pub mod informers;
pub mod job;
pub mod leader;
pub mod lean;
pub mod namespace;
pub mod nodeipam;
pub mod nodelifecycle;
pub mod podautoscaler;
pub mod replicaset;
pub mod resourcequota;
pub mod scheduler;
pub mod serviceaccount;
pub mod serviceaccount_tokens;
pub mod statefulset;
pub mod store;
pub mod tokencleaner;
pub mod util;

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::pki::Pki;

/// Why the loopback client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("failed to read the loopback kubeconfig")]
    Kubeconfig(#[from] kube::config::KubeconfigError),
    #[error("failed to build the loopback client")]
    Client(#[from] kube::Error),
}

/// What every controller gets.
#[derive(Clone)]
pub struct ControllerContext {
    /// A client of this server's own API.
    pub client: kube::Client,
    pub config: Arc<Config>,
    /// Cancelled when the server stops.
    pub shutdown: CancellationToken,
    /// The watches and stores the controllers share; started once every
    /// controller of this context has registered.
    pub informers: Arc<informers::SharedInformers>,
    /// The scheduler's metrics, served on the server's `/metrics`.
    pub scheduler_metrics: crate::metrics::SchedulerMetrics,
}

/// The User-Agent of the in-process controllers, as upstream's
/// kube-controller-manager sends it.
pub const LOOPBACK_USER_AGENT: &str =
    "kube-controller-manager/v1.32.0 (linux/amd64) kubernetes/r8s";

/// A client of this server at `server_url` authenticating with the admin
/// (system:masters) certificate, sending `user_agent`.
pub async fn loopback_client(
    pki: &Pki,
    server_url: &str,
    user_agent: &'static str,
) -> Result<kube::Client, ClientError> {
    let kubeconfig = kube::config::Kubeconfig::from_yaml(&crate::pki::kubeconfig(pki, server_url))?;
    let mut config = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions::default(),
    )
    .await?;
    // managedFields name a request's manager after its User-Agent product.
    config.headers.push((
        http::header::USER_AGENT,
        http::HeaderValue::from_static(user_agent),
    ));
    Ok(kube::Client::try_from(config)?)
}

/// Starts every controller as a task of its own; they stop when
/// `ctx.shutdown` is cancelled. The scheduler takes its own lease; the
/// controller-manager's controllers run while this server holds the
/// kube-controller-manager lease.
pub fn spawn_all(ctx: &ControllerContext) {
    scheduler::spawn(ctx);
    ctx.informers.start();
    let ctx = ctx.clone();
    tokio::spawn(async move {
        let gate_ctx = ctx.clone();
        leader::run_when_leader(gate_ctx, leader::CONTROLLER_MANAGER_LEASE, move |token| {
            let leading = ControllerContext {
                shutdown: token.clone(),
                informers: Arc::new(informers::SharedInformers::new(token.clone())),
                ..ctx.clone()
            };
            async move {
                spawn_controller_manager(&leading);
                leading.informers.start();
                token.cancelled().await;
            }
        })
        .await;
    });
}

/// `ctx.shutdown` is cancelled when the lease is lost.
fn spawn_controller_manager(ctx: &ControllerContext) {
    nodeipam::spawn(ctx);
    nodelifecycle::spawn(ctx);
    daemonset::spawn(ctx);
    replicaset::spawn(ctx);
    deployment::spawn(ctx);
    garbagecollector::spawn(ctx);
    namespace::spawn(ctx);
    endpointslice::spawn(ctx);
    job::spawn(ctx);
    cronjob::spawn(ctx);
    serviceaccount::spawn(ctx);
    serviceaccount_tokens::spawn(ctx);
    clusterroleaggregation::spawn(ctx);
    statefulset::spawn(ctx);
    disruption::spawn(ctx);
    podautoscaler::spawn(ctx);
    resourcequota::spawn(ctx);
    csrapproving::spawn(ctx);
    csrsigning::spawn(ctx);
    bootstrapsigner::spawn(ctx);
    tokencleaner::spawn(ctx);
}
