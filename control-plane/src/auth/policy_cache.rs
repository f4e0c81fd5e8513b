//! Keeps the RBAC `Policy` index current: an initial list of each RBAC
//! prefix from the watch cache, then one watch per prefix applied as events
//! arrive; a watch that ends (compaction, slow consumer) re-lists.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::storage::{Event, Revision, StoreError};
use crate::watch_cache::WatchCache;

use super::rbac::{CLUSTER_ROLE_BINDINGS, CLUSTER_ROLES, Policy, ROLE_BINDINGS, ROLES};

const PREFIXES: [&str; 4] = [CLUSTER_ROLES, ROLES, CLUSTER_ROLE_BINDINGS, ROLE_BINDINGS];

/// Lists `prefix` into `policy` (replacing what it held); returns the revision.
async fn relist(
    cache: &WatchCache,
    policy: &RwLock<Policy>,
    prefix: &str,
) -> Result<Revision, StoreError> {
    let list = cache.list(prefix).await?;
    let mut p = policy.write().unwrap_or_else(|e| e.into_inner());
    p.clear(prefix);
    for kv in &list.items {
        p.apply(&kv.key, Some(&kv.value));
    }
    Ok(list.revision)
}

/// Fills `policy` from the cache, then follows it until `shutdown`.
pub async fn start(
    cache: Arc<WatchCache>,
    policy: Arc<RwLock<Policy>>,
    shutdown: CancellationToken,
) -> Result<(), StoreError> {
    for prefix in PREFIXES {
        let revision = relist(&cache, &policy, prefix).await?;
        tokio::spawn(follow(
            Arc::clone(&cache),
            Arc::clone(&policy),
            prefix,
            revision,
            shutdown.clone(),
        ));
    }
    Ok(())
}

async fn follow(
    cache: Arc<WatchCache>,
    policy: Arc<RwLock<Policy>>,
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
                        let mut p = policy.write().unwrap_or_else(|e| e.into_inner());
                        match &ev {
                            Event::Put { kv, .. } => p.apply(&kv.key, Some(&kv.value)),
                            Event::Delete { prev, .. } => p.apply(&prev.key, None),
                        }
                    }
                    Some(Err(err)) => {
                        tracing::debug!(prefix, %err, "RBAC watch ended; re-listing");
                        break;
                    }
                    None => break,
                }
            },
            Err(err) => tracing::debug!(prefix, %err, "RBAC watch failed; re-listing"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
        match relist(&cache, &policy, prefix).await {
            Ok(r) => revision = r,
            Err(err) => tracing::warn!(prefix, %err, "RBAC re-list failed"),
        }
    }
}
