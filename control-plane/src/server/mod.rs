//! The API server: TLS listener -> authentication -> routing (`dispatch`) ->
//! object verbs (`objects`, `watch`) on the watch cache and the store.

pub mod discovery;
pub mod dispatch;
pub mod eviction;
pub mod field_manager;
pub mod in_process;
pub mod listener;
pub mod meta;
pub mod metrics_api;
pub mod negotiate;
pub mod objects;
pub mod openapi_http;
pub mod pod_binding;
pub mod proxy;
pub mod raw_json;
pub mod render;
pub mod reviews;
pub mod route;
pub mod status;
pub mod token_request;
pub mod watch;
pub mod watch_lines;

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
    /// Authenticators and the RBAC authorizer.
    pub auth: crate::auth::Auth,
    /// Watch lines encoded once for every watch that sends the same bytes.
    pub watch_lines: watch_lines::WatchLines,
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
            auth: crate::auth::Auth::with_modes(Arc::clone(&cache), &config.authorization_modes),
            cache,
            config,
            metrics: Metrics::new(),
            shutdown,
            services: tokio::sync::Mutex::new(ServiceAllocators { ips, ports }),
            server_address,
            ready: AtomicBool::new(false),
            watch_lines: watch_lines::WatchLines::default(),
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

#[cfg(test)]
mod tests {
    use clap::Parser;
    use serde_json::{Value, json};

    use super::*;
    use crate::config::ServerFlags;
    use crate::resources::find;
    use crate::server::objects::{DeleteOptions, UpdateMode, WriteOptions};
    use crate::storage::embedded::EmbeddedStore;

    /// An Api on `store` with a /29 service range (5 addresses to hand
    /// out), its allocators restored as at startup.
    async fn start(store: &Arc<dyn Store>) -> Api {
        let store = Arc::clone(store);
        let cache = WatchCache::start(Arc::clone(&store)).await.unwrap();
        let flags =
            ServerFlags::parse_from(["r8s-server", "--service-cluster-ip-range", "10.96.0.0/29"]);
        let config = Arc::new(flags.into_config().unwrap());
        let api = Api::new(store, cache, config, CancellationToken::new(), "x".into()).unwrap();
        api.restore_service_allocations().await.unwrap();
        let ns = find("", "v1", "namespaces").unwrap();
        let _ = api
            .create(
                ns,
                None,
                json!({"metadata": {"name": "d"}}),
                &WriteOptions::default(),
            )
            .await;
        api
    }

    fn svc(name: &str) -> Value {
        json!({"metadata": {"name": name}, "spec": {"ports": [{"port": 80}]}})
    }

    #[tokio::test]
    async fn allocations_follow_dry_runs_deletes_and_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let r = find("", "v1", "services").unwrap();
        let opts = WriteOptions::default();
        let dry = WriteOptions {
            dry_run: true,
            ..Default::default()
        };
        let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(&dir.path().join("db")).unwrap());
        let api = start(&store).await;
        // Dry runs give their addresses back.
        for i in 0..5 {
            api.create(r, Some("d"), svc(&format!("dry{i}")), &dry)
                .await
                .unwrap();
        }
        let mut ips = Vec::new();
        for i in 0..4 {
            let w = api
                .create(r, Some("d"), svc(&format!("s{i}")), &opts)
                .await
                .unwrap();
            ips.push(w.object["spec"]["clusterIP"].as_str().unwrap().to_string());
        }
        // A name clash is AlreadyExists and keeps nothing.
        let err = api
            .create(r, Some("d"), svc("s0"), &opts)
            .await
            .unwrap_err();
        assert_eq!(err.code, 409);
        drop(api);

        // A restarted server knows the four addresses in use.
        let api = start(&store).await;
        let err = api
            .create(
                r,
                Some("d"),
                json!({"metadata": {"name": "x"}, "spec": {"clusterIP": ips[0], "ports": [{"port": 80}]}}),
                &opts,
            )
            .await
            .unwrap_err();
        assert_eq!(err.code, 422, "{}", err.message);
        api.create(r, Some("d"), svc("s4"), &opts).await.unwrap();
        let full = api
            .create(r, Some("d"), svc("s5"), &opts)
            .await
            .unwrap_err();
        assert_eq!(full.code, 500);
        assert_eq!(
            full.message,
            "Internal error occurred: failed to allocate a serviceIP: range is full"
        );
        // A delete gives the address back.
        api.delete(r, Some("d"), "s1", &DeleteOptions::default())
            .await
            .unwrap();
        let w = api.create(r, Some("d"), svc("s5"), &opts).await.unwrap();
        assert_eq!(w.object["spec"]["clusterIP"], json!(ips[1]));
    }

    fn node_port_svc(name: &str, port: i64) -> Value {
        json!({"metadata": {"name": name}, "spec": {"type": "NodePort", "ports": [{"port": 80, "nodePort": port}]}})
    }

    #[tokio::test]
    async fn updates_move_node_ports_and_dry_runs_keep_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(&dir.path().join("db")).unwrap());
        let api = start(&store).await;
        let r = find("", "v1", "services").unwrap();
        let opts = WriteOptions::default();
        let dry = WriteOptions {
            dry_run: true,
            ..Default::default()
        };
        api.create(r, Some("d"), node_port_svc("a", 30100), &opts)
            .await
            .unwrap();
        let err = api
            .create(r, Some("d"), node_port_svc("b", 30100), &opts)
            .await
            .unwrap_err();
        assert_eq!(
            err.message,
            "Service \"b\" is invalid: spec.ports[0].nodePort: Invalid value: 30100: provided port is already allocated"
        );
        // A dry-run update to another port keeps both ports as they were.
        let w = api
            .update(
                r,
                Some("d"),
                "a",
                node_port_svc("a", 30200),
                UpdateMode::Main,
                &dry,
            )
            .await
            .unwrap();
        assert_eq!(w.object["spec"]["ports"][0]["nodePort"], 30200);
        api.create(r, Some("d"), node_port_svc("c", 30200), &opts)
            .await
            .unwrap();
        let err = api
            .create(r, Some("d"), node_port_svc("b", 30100), &opts)
            .await
            .unwrap_err();
        assert_eq!(err.code, 422);
        // A PUT back to ClusterIP (without the clusterIP) frees the node port
        // and keeps the address.
        let ip = api.get(r, Some("d"), "a").await.unwrap()["spec"]["clusterIP"].clone();
        let w = api
            .update(r, Some("d"), "a", svc("a"), UpdateMode::Main, &opts)
            .await
            .unwrap();
        assert_eq!(w.object["spec"]["clusterIP"], ip);
        assert!(w.object["spec"]["ports"][0].get("nodePort").is_none());
        api.create(r, Some("d"), node_port_svc("b", 30100), &opts)
            .await
            .unwrap();
    }
}
