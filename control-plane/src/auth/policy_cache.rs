//! Keeps the authorizers' in-memory indexes current (the RBAC `Policy`, the
//! Node authorizer's `Graph`): an initial list of each followed prefix from
//! the watch cache, then one watch per prefix applied as events arrive; a
//! watch that ends (compaction, slow consumer) re-lists.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::storage::{Event, Revision, StoreError};
use crate::watch_cache::WatchCache;

use super::rbac::{CLUSTER_ROLE_BINDINGS, CLUSTER_ROLES, Policy, ROLE_BINDINGS, ROLES};

/// An index fed from stored objects under some prefixes.
pub trait Index: Send + Sync + 'static {
    /// Applies a stored value (`None`: deleted) under `key`.
    fn apply(&mut self, key: &str, value: Option<&[u8]>);
    /// Drops every object under `prefix` (before a re-list).
    fn clear(&mut self, prefix: &str);
}

impl Index for Policy {
    fn apply(&mut self, key: &str, value: Option<&[u8]>) {
        Policy::apply(self, key, value);
    }

    fn clear(&mut self, prefix: &str) {
        Policy::clear(self, prefix);
    }
}

/// The RBAC prefixes.
pub const RBAC_PREFIXES: &[&str] = &[CLUSTER_ROLES, ROLES, CLUSTER_ROLE_BINDINGS, ROLE_BINDINGS];

/// Lists `prefix` into `index` (replacing what it held); returns the revision.
async fn relist<T: Index>(
    cache: &WatchCache,
    index: &RwLock<T>,
    prefix: &str,
) -> Result<Revision, StoreError> {
    let list = cache.list(prefix).await?;
    let mut p = index.write().unwrap_or_else(|e| e.into_inner());
    p.clear(prefix);
    for kv in &list.items {
        p.apply(&kv.key, Some(&kv.value));
    }
    Ok(list.revision)
}

/// Fills `index` from the cache under `prefixes`, then follows them until
/// `shutdown`.
pub async fn start<T: Index>(
    cache: Arc<WatchCache>,
    index: Arc<RwLock<T>>,
    prefixes: &'static [&'static str],
    shutdown: CancellationToken,
) -> Result<(), StoreError> {
    for prefix in prefixes {
        let revision = relist(&cache, &index, prefix).await?;
        tokio::spawn(follow(
            Arc::clone(&cache),
            Arc::clone(&index),
            prefix,
            revision,
            shutdown.clone(),
        ));
    }
    Ok(())
}

async fn follow<T: Index>(
    cache: Arc<WatchCache>,
    index: Arc<RwLock<T>>,
    prefix: &'static str,
    mut revision: Revision,
    shutdown: CancellationToken,
) {
    loop {
        match cache.watch(prefix, revision).await {
            Ok(mut stream) => loop {
                let next = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    next = stream.next() => next,
                };
                match next {
                    Some(Ok(ev)) => {
                        revision = ev.revision();
                        let mut p = index.write().unwrap_or_else(|e| e.into_inner());
                        match &ev {
                            Event::Put { kv, .. } => p.apply(&kv.key, Some(&kv.value)),
                            Event::Delete { prev, .. } => p.apply(&prev.key, None),
                        }
                    }
                    Some(Err(err)) => {
                        tracing::debug!(prefix, %err, "authorizer index watch ended; re-listing");
                        break;
                    }
                    None => break,
                }
            },
            Err(err) => tracing::debug!(prefix, %err, "authorizer index watch failed; re-listing"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
        match relist(&cache, &index, prefix).await {
            Ok(r) => revision = r,
            Err(err) => tracing::warn!(prefix, %err, "authorizer index re-list failed"),
        }
    }
}
