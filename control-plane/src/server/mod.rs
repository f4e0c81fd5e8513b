//! The API server: TLS listener -> authentication -> routing (`dispatch`) ->
//! object verbs (`objects`, `watch`) on the watch cache and the store.

pub mod convert;
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
use crate::storage::Store;
use crate::watch_cache::WatchCache;

/// Shared state of every request.
pub struct Api {
    pub store: Arc<dyn Store>,
    pub cache: Arc<WatchCache>,
    pub config: Arc<Config>,
    pub metrics: Metrics,
    /// Cancelled on shutdown: ends watches.
    pub shutdown: CancellationToken,
    /// Serializes Service IP/port allocation with the Service writes.
    pub service_lock: tokio::sync::Mutex<()>,
    /// `host:port` clients reach the server at (APIVersions).
    pub server_address: String,
    /// Set once the bootstrap objects are written (`/readyz`).
    pub ready: AtomicBool,
}

impl Api {
    pub fn new(
        store: Arc<dyn Store>,
        cache: Arc<WatchCache>,
        config: Arc<Config>,
        shutdown: CancellationToken,
        server_address: String,
    ) -> Self {
        Self {
            store,
            cache,
            config,
            metrics: Metrics::new(),
            shutdown,
            service_lock: tokio::sync::Mutex::new(()),
            server_address,
            ready: AtomicBool::new(false),
        }
    }
}
