//! The API server's watch cache: every object under `/registry/` in memory,
//! kept current by one store watch, so lists and watches do not hit the disk.
//! Placeholder that reads through to the store; the storage work replaces it.

use std::sync::Arc;

use crate::storage::{KeyValue, ListResult, Result, Revision, Store, WatchStream};

pub struct WatchCache {
    store: Arc<dyn Store>,
}

impl WatchCache {
    /// Loads everything under `/registry/` and starts following the store.
    pub async fn start(store: Arc<dyn Store>) -> Result<Arc<Self>> {
        Ok(Arc::new(Self { store }))
    }

    /// The newest revision the cache has applied.
    pub async fn revision(&self) -> Result<Revision> {
        self.store.current_revision().await
    }

    /// One key, as fresh as every write acknowledged before the call.
    pub async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        self.store.get(key, None).await
    }

    /// Every key under `prefix`, in key order, consistent with every write
    /// acknowledged before the call (read-your-writes).
    pub async fn list(&self, prefix: &str) -> Result<ListResult> {
        self.store.list(prefix, None).await
    }

    /// Events on keys under `prefix` after revision `after`, then live ones;
    /// `Compacted` when `after` is older than the history kept.
    pub async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream> {
        self.store.watch(prefix, after).await
    }
}
