//! Periodic compaction of the store's history (like kube-apiserver's
//! five-minute etcd compaction).

use std::sync::Arc;
use std::time::Duration;

use super::{Revision, Store};

/// Every `interval`, compacts history older than the newest revision minus
/// `keep` revisions. Runs until the store is closed; spawn it.
pub async fn run_compactor(store: Arc<dyn Store>, interval: Duration, keep: Revision) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await; // the first tick is immediate
    loop {
        ticker.tick().await;
        match compact_once(store.as_ref(), keep).await {
            Ok(Some(rev)) => tracing::debug!(revision = rev, "compacted store history"),
            Ok(None) => {}
            Err(super::StoreError::Closed) => return,
            Err(e) => tracing::warn!(error = %e, "store compaction failed"),
        }
    }
}

/// Compacts history older than the newest revision minus `keep`; returns the
/// new compacted revision if it moved.
pub async fn compact_once(store: &dyn Store, keep: Revision) -> super::Result<Option<Revision>> {
    let current = store.current_revision().await?;
    let target = current.saturating_sub(keep);
    if target == 0 || target <= store.compacted_revision().await? {
        return Ok(None);
    }
    store.compact(target).await?;
    Ok(Some(target))
}
