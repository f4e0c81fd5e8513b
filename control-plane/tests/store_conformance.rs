//! The backend-independent store conformance suite, run through the public
//! API against the embedded store (an etcd backend can run the same suite).

use std::sync::Arc;

use control_plane::storage::{EmbeddedStore, Store, conformance};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn embedded_store_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
    conformance::run_all(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn embedded_store_conforms_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open_async(dir.path()).await.unwrap());
        conformance::revisions_increase_by_one(store.clone()).await;
        conformance::reads_at_past_revisions(store).await;
    }
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open_async(dir.path()).await.unwrap());
    conformance::create_update_delete(store.clone()).await;
    conformance::watch_replays_then_live(store.clone()).await;
    conformance::compaction(store).await;
}
