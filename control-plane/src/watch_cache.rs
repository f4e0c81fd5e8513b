//! The API server's watch cache: every object under `/registry/` in memory,
//! kept current by one store watch, so lists and watches do not hit the disk.
//!
//! - `get` / `list` are read-your-writes consistent: they first read the
//!   store's current revision and wait until the cache has applied it.
//! - The cache keeps a ring buffer of recent events; `watch(prefix, after)` is
//!   served from memory when `after` is within it, else from the store (which
//!   replays its history or answers `Compacted`).
//! - Each cache watcher has a bounded channel; a watcher that does not keep up
//!   is closed with a `Compacted` error (the client re-lists) instead of
//!   slowing the cache down.
//! - If the store watch feeding the cache fails, the cache re-lists and closes
//!   its watchers the same way.
//!
//! Keys outside `/registry/` are not cached; calls about them go to the store.

use std::collections::{BTreeMap, VecDeque};
use std::ops::Bound;
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::{CancellationToken, DropGuard};

pub use crate::storage::run_compactor;
use crate::storage::{
    Event, KeyValue, ListResult, Result, Revision, Store, StoreError, WatchStream,
};

/// The keys the cache holds.
pub const CACHE_PREFIX: &str = "/registry/";

/// Tunables of the cache.
#[derive(Debug, Clone)]
pub struct CacheConfig {
    /// Most recent events kept for watches that start in the past.
    pub history_events: usize,
    /// ...and at most this many value bytes in them.
    pub history_bytes: usize,
    /// Events buffered per watcher before it is closed as too slow.
    pub watcher_buffer: usize,
    /// How long a read waits for the cache to catch up with the store.
    pub freshness_timeout: Duration,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            history_events: 16 * 1024,
            history_bytes: 128 << 20,
            watcher_buffer: 4096,
            freshness_timeout: Duration::from_secs(15),
        }
    }
}

struct Data {
    revision: Revision,
    items: BTreeMap<String, KeyValue>,
    /// Recent events under `CACHE_PREFIX`, in revision order.
    history: VecDeque<Arc<Event>>,
    history_bytes: usize,
    /// Every cached-prefix event with a revision above this is in `history`.
    history_start: Revision,
}

struct Watcher {
    prefix: String,
    tx: mpsc::Sender<Arc<Event>>,
    /// The error the watch ends with when the cache drops it.
    end: Arc<Mutex<Option<StoreError>>>,
}

impl Watcher {
    fn close(self, e: StoreError) {
        *self.end.lock().unwrap() = Some(e);
    }
}

pub struct WatchCache {
    store: Arc<dyn Store>,
    config: CacheConfig,
    data: RwLock<Data>,
    /// Locked only while `data` is locked (read or write), so a new watcher's
    /// backlog and its registration are atomic with respect to new events.
    watchers: Mutex<Vec<Watcher>>,
    applied: watch::Sender<Revision>,
    _stop: DropGuard,
}

fn value_bytes(e: &Event) -> usize {
    match e {
        Event::Put { kv, prev } => kv.value.len() + prev.as_ref().map_or(0, |p| p.value.len()),
        Event::Delete { prev, .. } => prev.value.len(),
    }
}

impl WatchCache {
    /// Loads everything under `/registry/` and starts following the store.
    pub async fn start(store: Arc<dyn Store>) -> Result<Arc<Self>> {
        Self::start_with(store, CacheConfig::default()).await
    }

    /// [`WatchCache::start`] with explicit tunables.
    pub async fn start_with(store: Arc<dyn Store>, config: CacheConfig) -> Result<Arc<Self>> {
        let (list, stream) = Self::load(store.as_ref()).await?;
        let stop = CancellationToken::new();
        let revision = list.revision;
        let cache = Arc::new(Self {
            store,
            config,
            data: RwLock::new(Data {
                revision,
                items: list
                    .items
                    .into_iter()
                    .map(|kv| (kv.key.clone(), kv))
                    .collect(),
                history: VecDeque::new(),
                history_bytes: 0,
                history_start: revision,
            }),
            watchers: Mutex::new(Vec::new()),
            applied: watch::channel(revision).0,
            _stop: stop.clone().drop_guard(),
        });
        tokio::spawn(feed(Arc::downgrade(&cache), stream, stop));
        Ok(cache)
    }

    /// A consistent list of the cached prefix and a watch of every key after it.
    async fn load(store: &dyn Store) -> Result<(ListResult, WatchStream)> {
        let list = store.list(CACHE_PREFIX, None).await?;
        // Everything, not only the cached prefix: the cache's revision must
        // follow the store's even when other keys are written.
        let stream = store.watch("", list.revision).await?;
        Ok((list, stream))
    }

    /// The newest revision the cache has applied.
    pub async fn revision(&self) -> Result<Revision> {
        Ok(*self.applied.borrow())
    }

    /// Waits until the cache has applied `target`.
    async fn wait_for(&self, target: Revision) -> Result<()> {
        if *self.applied.borrow() >= target {
            return Ok(());
        }
        let mut rx = self.applied.subscribe();
        match tokio::time::timeout(self.config.freshness_timeout, rx.wait_for(|r| *r >= target))
            .await
        {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(StoreError::Closed),
            Err(_) => Err(StoreError::Io(format!(
                "watch cache did not reach revision {target} within {:?}",
                self.config.freshness_timeout
            ))),
        }
    }

    /// Waits until the cache holds every write acknowledged before the call.
    async fn wait_fresh(&self) -> Result<()> {
        let target = self.store.current_revision().await?;
        self.wait_for(target).await
    }

    /// One key, as fresh as every write acknowledged before the call.
    pub async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        if !key.starts_with(CACHE_PREFIX) {
            return self.store.get(key, None).await;
        }
        self.wait_fresh().await?;
        Ok(self.data.read().unwrap().items.get(key).cloned())
    }

    /// Every key under `prefix`, in key order, consistent with every write
    /// acknowledged before the call (read-your-writes).
    pub async fn list(&self, prefix: &str) -> Result<ListResult> {
        if !prefix.starts_with(CACHE_PREFIX) {
            return self.store.list(prefix, None).await;
        }
        self.wait_fresh().await?;
        let data = self.data.read().unwrap();
        let items = data
            .items
            .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, v)| v.clone())
            .collect();
        Ok(ListResult {
            revision: data.revision,
            items,
        })
    }

    /// The first `n` keys of `list(prefix)` and how many keys follow them:
    /// the first page of a list without a selector, without copying the
    /// keys past it.
    pub async fn list_head(&self, prefix: &str, n: usize) -> Result<(ListResult, u64)> {
        if !prefix.starts_with(CACHE_PREFIX) {
            let revision = self.store.current_revision().await?;
            let page = self.store.list_page(prefix, None, revision, n).await?;
            return Ok((
                ListResult {
                    revision,
                    items: page.items,
                },
                page.remaining,
            ));
        }
        self.wait_fresh().await?;
        let data = self.data.read().unwrap();
        let mut keys = data
            .items
            .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix));
        let items = keys.by_ref().take(n).map(|(_, v)| v.clone()).collect();
        let rest = keys.count() as u64;
        Ok((
            ListResult {
                revision: data.revision,
                items,
            },
            rest,
        ))
    }

    /// Events on keys under `prefix` after revision `after`, then live ones;
    /// `Compacted` when `after` is older than the history kept.
    pub async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream> {
        if !prefix.starts_with(CACHE_PREFIX) {
            return self.store.watch(prefix, after).await;
        }
        enum Step {
            Store,
            Ready(WatchStream),
            Wait,
        }
        loop {
            let step = {
                let data = self.data.read().unwrap();
                if after < data.history_start {
                    Step::Store
                } else if after <= data.revision {
                    let start = data.history.partition_point(|e| e.revision() <= after);
                    let backlog: Vec<Event> = data
                        .history
                        .range(start..)
                        .filter(|e| e.key().starts_with(prefix))
                        .map(|e| (**e).clone())
                        .collect();
                    let (tx, rx) = mpsc::channel(self.config.watcher_buffer);
                    let end = Arc::new(Mutex::new(None));
                    self.watchers.lock().unwrap().push(Watcher {
                        prefix: prefix.to_owned(),
                        tx,
                        end: end.clone(),
                    });
                    Step::Ready(watcher_stream(backlog, rx, end))
                } else {
                    Step::Wait
                }
            };
            match step {
                Step::Store => return self.store.watch(prefix, after).await,
                Step::Ready(stream) => return Ok(stream),
                Step::Wait => {}
            }
            // A revision the cache has not applied yet.
            let current = self.store.current_revision().await?;
            if after > current {
                return Err(StoreError::FutureRevision {
                    requested: after,
                    current,
                });
            }
            self.wait_for(after).await?;
        }
    }

    /// Applies a run of store events (in revision order).
    fn apply(&self, events: Vec<Event>) {
        let mut data = self.data.write().unwrap();
        let mut watchers = self.watchers.lock().unwrap();
        for ev in events {
            let rev = ev.revision();
            if rev <= data.revision {
                continue;
            }
            data.revision = rev;
            if !ev.key().starts_with(CACHE_PREFIX) {
                continue;
            }
            match &ev {
                Event::Put { kv, .. } => {
                    data.items.insert(kv.key.clone(), kv.clone());
                }
                Event::Delete { prev, .. } => {
                    data.items.remove(&prev.key);
                }
            }
            let ev = Arc::new(ev);
            if !watchers.is_empty() {
                let mut i = 0;
                while i < watchers.len() {
                    let w = &watchers[i];
                    let keep = if ev.key().starts_with(w.prefix.as_str()) {
                        match w.tx.try_send(ev.clone()) {
                            Ok(()) => true,
                            Err(mpsc::error::TrySendError::Full(_)) => {
                                let w = watchers.swap_remove(i);
                                tracing::debug!(prefix = %w.prefix, revision = rev, "closing a watcher that fell behind");
                                w.close(StoreError::Compacted {
                                    requested: rev - 1,
                                    compacted: rev,
                                });
                                continue;
                            }
                            Err(mpsc::error::TrySendError::Closed(_)) => false,
                        }
                    } else {
                        // Drop watchers whose client went away.
                        !w.tx.is_closed()
                    };
                    if keep {
                        i += 1;
                    } else {
                        watchers.swap_remove(i);
                    }
                }
            }
            data.history_bytes += value_bytes(&ev);
            data.history.push_back(ev);
            while data.history.len() > self.config.history_events
                || (data.history_bytes > self.config.history_bytes && data.history.len() > 1)
            {
                let old = data.history.pop_front().expect("history is not empty");
                data.history_bytes -= value_bytes(&old);
                data.history_start = old.revision();
            }
        }
        let rev = data.revision;
        drop(watchers);
        drop(data);
        self.applied.send_replace(rev);
    }

    /// Replaces the whole cache with a fresh list (after the store watch
    /// failed); watchers are closed since they may have missed events.
    async fn resync(&self) -> Result<WatchStream> {
        let (list, stream) = Self::load(self.store.as_ref()).await?;
        let mut data = self.data.write().unwrap();
        let mut watchers = self.watchers.lock().unwrap();
        let rev = list.revision.max(data.revision);
        for w in watchers.drain(..) {
            w.close(StoreError::Compacted {
                requested: data.revision,
                compacted: rev,
            });
        }
        data.items = list
            .items
            .into_iter()
            .map(|kv| (kv.key.clone(), kv))
            .collect();
        data.history.clear();
        data.history_bytes = 0;
        data.revision = list.revision;
        data.history_start = list.revision;
        drop(watchers);
        drop(data);
        self.applied.send_replace(list.revision);
        Ok(stream)
    }
}

fn watcher_stream(
    backlog: Vec<Event>,
    rx: mpsc::Receiver<Arc<Event>>,
    end: Arc<Mutex<Option<StoreError>>>,
) -> WatchStream {
    let live = futures::stream::unfold(Some((rx, end)), |state| async move {
        let (mut rx, end) = state?;
        match rx.recv().await {
            Some(e) => Some((Ok((*e).clone()), Some((rx, end)))),
            None => {
                let err = end.lock().unwrap().take()?;
                Some((Err(err), None))
            }
        }
    });
    Box::pin(futures::stream::iter(backlog.into_iter().map(Ok)).chain(live))
}

/// Follows the store watch and applies its events to the cache.
async fn feed(weak: Weak<WatchCache>, stream: WatchStream, stop: CancellationToken) {
    let mut chunks = stream.ready_chunks(1024);
    loop {
        let items = tokio::select! {
            _ = stop.cancelled() => return,
            items = chunks.next() => items,
        };
        let Some(cache) = weak.upgrade() else { return };
        let mut failure = None;
        match items {
            Some(items) => {
                let mut events = Vec::with_capacity(items.len());
                for item in items {
                    match item {
                        Ok(e) => events.push(e),
                        Err(e) => {
                            failure = Some(e);
                            break;
                        }
                    }
                }
                cache.apply(events);
            }
            None => failure = Some(StoreError::Closed),
        }
        let Some(err) = failure else { continue };
        tracing::warn!(error = %err, "watch cache lost its store watch; re-listing");
        let mut backoff = Duration::from_millis(50);
        loop {
            match cache.resync().await {
                Ok(stream) => {
                    chunks = stream.ready_chunks(1024);
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "watch cache re-list failed");
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::EmbeddedStore;
    use crate::storage::conformance::{assert_quiet, next_event};

    fn store() -> (tempfile::TempDir, Arc<dyn Store>) {
        let dir = tempfile::tempdir().unwrap();
        let s = EmbeddedStore::open(dir.path()).unwrap();
        (dir, Arc::new(s))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn the_head_of_a_list_and_the_count_after_it() {
        let (_d, s) = store();
        for k in ["a", "b", "c", "d"] {
            s.create(&format!("/registry/pods/ns/{k}"), k.as_bytes().to_vec())
                .await
                .unwrap();
        }
        s.create("/registry/podsx/a", vec![]).await.unwrap();
        s.create("/other/x/1", b"1".to_vec()).await.unwrap();
        s.create("/other/x/2", b"2".to_vec()).await.unwrap();
        let c = WatchCache::start(s.clone()).await.unwrap();
        let whole = c.list("/registry/pods/").await.unwrap();
        for n in 0..6 {
            let (head, rest) = c.list_head("/registry/pods/", n).await.unwrap();
            assert_eq!(head.revision, whole.revision);
            assert_eq!(head.items[..], whole.items[..n.min(4)], "n={n}");
            assert_eq!(rest, 4u64.saturating_sub(n as u64), "n={n}");
        }
        // Outside the cached prefixes, the store's first page.
        let (head, rest) = c.list_head("/other/x/", 1).await.unwrap();
        assert_eq!(head.items.len(), 1);
        assert_eq!(head.items[0].value, &b"1"[..]);
        assert_eq!(rest, 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn read_your_writes() {
        let (_d, s) = store();
        s.create("/registry/pods/ns/pre", b"0".to_vec())
            .await
            .unwrap();
        let c = WatchCache::start(s.clone()).await.unwrap();
        assert_eq!(c.list("/registry/pods/").await.unwrap().items.len(), 1);
        for i in 0..200 {
            let key = format!("/registry/pods/ns/p{i}");
            let rev = s.create(&key, format!("{i}").into_bytes()).await.unwrap();
            let got = c.get(&key).await.unwrap().unwrap();
            assert_eq!(got.mod_revision, rev);
            let l = c.list("/registry/pods/ns/").await.unwrap();
            assert!(l.revision >= rev);
            assert_eq!(l.items.len(), i + 2);
        }
        // Sibling prefixes do not leak.
        s.create("/registry/podsx/a", vec![]).await.unwrap();
        assert_eq!(c.list("/registry/pods/").await.unwrap().items.len(), 201);
        assert_eq!(c.list("/registry/podsx/").await.unwrap().items.len(), 1);
        let (rev, _) = s.delete("/registry/pods/ns/p0", None).await.unwrap();
        assert!(c.get("/registry/pods/ns/p0").await.unwrap().is_none());
        assert_eq!(c.revision().await.unwrap(), rev);
        // Keys outside the cache still advance it and read through.
        let r = s.create("/other/x", b"x".to_vec()).await.unwrap();
        assert_eq!(c.get("/other/x").await.unwrap().unwrap().mod_revision, r);
        c.list("/registry/").await.unwrap();
        assert_eq!(c.revision().await.unwrap(), r);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn watch_from_memory_and_store() {
        let (_d, s) = store();
        let mut revs = Vec::new();
        for i in 0..5 {
            revs.push(
                s.create(&format!("/registry/cm/a{i}"), vec![i])
                    .await
                    .unwrap(),
            );
        }
        let cfg = CacheConfig {
            history_events: 4,
            ..Default::default()
        };
        let c = WatchCache::start_with(s.clone(), cfg).await.unwrap();
        let start = c.revision().await.unwrap();
        for i in 0..6 {
            s.create(&format!("/registry/cm/b{i}"), vec![i])
                .await
                .unwrap();
            s.create(&format!("/registry/secrets/b{i}"), vec![i])
                .await
                .unwrap();
        }
        let cur = s.current_revision().await.unwrap();
        c.list("/registry/").await.unwrap();
        // Old: from the store's history (before the cache even started).
        let mut w = c.watch("/registry/cm/", 0).await.unwrap();
        for i in 0..5 {
            assert_eq!(next_event(&mut w).await.key(), format!("/registry/cm/a{i}"));
        }
        for i in 0..6 {
            assert_eq!(next_event(&mut w).await.key(), format!("/registry/cm/b{i}"));
        }
        // Recent: from memory.
        let mut w2 = c.watch("/registry/cm/", cur - 2).await.unwrap();
        assert_eq!(next_event(&mut w2).await.key(), "/registry/cm/b5");
        // From now.
        let mut w3 = c.watch("/registry/cm/", cur).await.unwrap();
        // Older than the ring but newer than the start: the store.
        let mut w4 = c.watch("/registry/secrets/", start).await.unwrap();
        for i in 0..6 {
            assert_eq!(
                next_event(&mut w4).await.key(),
                format!("/registry/secrets/b{i}")
            );
        }
        let r = s.create("/registry/cm/c", vec![]).await.unwrap();
        for w in [&mut w, &mut w2, &mut w3] {
            let e = next_event(w).await;
            assert_eq!((e.key(), e.revision()), ("/registry/cm/c", r));
            assert_quiet(w).await;
        }
        // Future revisions.
        assert!(matches!(
            c.watch("/registry/cm/", r + 10).await,
            Err(StoreError::FutureRevision { .. })
        ));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn watch_no_gaps_under_concurrent_writes() {
        let (_d, s) = store();
        let c = WatchCache::start(s.clone()).await.unwrap();
        let base = c.revision().await.unwrap();
        let mut tasks = Vec::new();
        for t in 0..8 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..100 {
                    s.create(&format!("/registry/pods/t{t}/{i}"), vec![0; 32])
                        .await
                        .unwrap();
                }
            }));
        }
        let mut watchers = vec![(base, c.watch("/registry/pods/", base).await.unwrap())];
        for _ in 0..4 {
            tokio::time::sleep(Duration::from_millis(3)).await;
            let from = c.revision().await.unwrap();
            watchers.push((from, c.watch("/registry/pods/", from).await.unwrap()));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let end = s.current_revision().await.unwrap();
        assert_eq!(end, base + 800);
        for (from, mut w) in watchers {
            for rev in from + 1..=end {
                assert_eq!(next_event(&mut w).await.revision(), rev);
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn slow_watcher_is_closed_with_an_error() {
        let (_d, s) = store();
        let cfg = CacheConfig {
            watcher_buffer: 8,
            ..Default::default()
        };
        let c = WatchCache::start_with(s.clone(), cfg).await.unwrap();
        let mut slow = c.watch("/registry/pods/", 0).await.unwrap();
        let mut fast = c.watch("/registry/pods/", 0).await.unwrap();
        // The fast watcher reads each event before the next write, so it is
        // never more than one behind however loaded the machine is (a reader
        // task of its own could fall 8 behind and be closed too).
        for i in 0..50 {
            s.create(&format!("/registry/pods/{i}"), vec![])
                .await
                .unwrap();
            assert_eq!(next_event(&mut fast).await.revision(), i + 1);
        }
        let mut got = 0;
        loop {
            match tokio::time::timeout(Duration::from_secs(5), slow.next())
                .await
                .unwrap()
            {
                Some(Ok(e)) => {
                    got += 1;
                    assert_eq!(e.revision(), got);
                }
                Some(Err(StoreError::Compacted { .. })) => break,
                other => panic!("unexpected: {other:?}"),
            }
        }
        assert!((8..50).contains(&got), "got {got}");
        assert!(slow.next().await.is_none());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn compacted_watch_and_compactor() {
        let (_d, s) = store();
        let c = WatchCache::start_with(
            s.clone(),
            CacheConfig {
                history_events: 2,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        for i in 0..10 {
            s.create(&format!("/registry/pods/{i}"), vec![])
                .await
                .unwrap();
        }
        let compactor = tokio::spawn(run_compactor(s.clone(), Duration::from_millis(20), 3));
        tokio::time::timeout(Duration::from_secs(5), async {
            while s.compacted_revision().await.unwrap() != 7 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .unwrap();
        compactor.abort();
        c.list("/registry/").await.unwrap();
        match c.watch("/registry/pods/", 2).await {
            Err(StoreError::Compacted { .. }) => {}
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("watch before the compacted revision"),
        }
        let mut w = c.watch("/registry/pods/", 7).await.unwrap();
        assert_eq!(next_event(&mut w).await.revision(), 8);
        let mut w = c.watch("/registry/pods/", 9).await.unwrap();
        assert_eq!(next_event(&mut w).await.revision(), 10);
    }
}
