//! The API server: TLS listener -> authentication -> routing (`dispatch`) ->
//! object verbs (`objects`, `watch`) on the watch cache and the store.

pub mod discovery;
pub mod dispatch;
pub mod listener;
pub mod meta;
pub mod negotiate;
pub mod objects;
pub mod render;
pub mod reviews;
pub mod route;
pub mod status;
pub mod watch;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::registry::allocator::{
    AllocatorError, NodePortAllocator, ServiceIpAllocator, mark_service,
};
use crate::storage::{Store, StoreError};
use crate::watch_cache::WatchCache;

/// Shared state of every request.
pub struct Api {
    pub store: Arc<dyn Store>,
    pub cache: Arc<WatchCache>,
    pub config: Arc<Config>,
    pub metrics: Metrics,
    /// Cancelled on shutdown: ends watches.
    pub shutdown: CancellationToken,
    /// The Service ClusterIP/NodePort allocators; held across a Service
    /// write so allocation and store stay in step.
    pub services: tokio::sync::Mutex<ServiceAllocators>,
    /// `host:port` clients reach the server at (APIVersions).
    pub server_address: String,
    /// Set once the bootstrap objects are written (`/readyz`).
    pub ready: AtomicBool,
}

/// What the Service allocators hand out: cluster IPs and node ports.
#[derive(Debug)]
pub struct ServiceAllocators {
    pub ips: ServiceIpAllocator,
    pub ports: NodePortAllocator,
}

impl Api {
    /// The shared state; the service allocators start empty (see
    /// `restore_service_allocations`).
    pub fn new(
        store: Arc<dyn Store>,
        cache: Arc<WatchCache>,
        config: Arc<Config>,
        shutdown: CancellationToken,
        server_address: String,
    ) -> Result<Self, AllocatorError> {
        let ips = ServiceIpAllocator::new(&config.service_cluster_ip_range.to_string())?;
        let (first, last) = config.service_node_port_range;
        let ports = NodePortAllocator::new(first, last);
        Ok(Self {
            store,
            cache,
            config,
            metrics: Metrics::new(),
            shutdown,
            services: tokio::sync::Mutex::new(ServiceAllocators { ips, ports }),
            server_address,
            ready: AtomicBool::new(false),
        })
    }

    /// Marks what every stored Service holds as used; run at startup before
    /// serving, so a restarted server never hands out an address twice.
    pub async fn restore_service_allocations(&self) -> Result<(), StoreError> {
        let list = self.store.list("/registry/services/", None).await?;
        let mut alloc = self.services.lock().await;
        let ServiceAllocators { ips, ports } = &mut *alloc;
        for kv in &list.items {
            match serde_json::from_slice::<serde_json::Value>(&kv.value) {
                Ok(svc) => mark_service(ips, ports, &svc),
                Err(err) => tracing::warn!(key = %kv.key, %err, "stored service is not JSON"),
            }
        }
        tracing::info!(
            services = list.items.len(),
            cluster_ips = ips.used(),
            node_ports = ports.used(),
            "service allocations restored"
        );
        Ok(())
    }
}
