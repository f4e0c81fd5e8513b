//! The embedded durable store (default backend): an MVCC log on redb in the
//! server's data dir.
//!
//! Layout (one redb file, `store.redb`):
//! - `log`: revision -> record (key, value or tombstone, create revision,
//!   previous revision of the key). Every write is one record at its own revision.
//! - `revs`: (key, revision) -> () — the history index used for reads at a past
//!   revision and for compaction.
//! - `live`: key -> (mod revision, create revision) for every existing key.
//! - `meta`: `rev` (current revision), `compacted` (oldest readable revision),
//!   `compact_cursor` (how far physical compaction got).
//!
//! Writes go through one writer thread that drains every queued operation into
//! one write transaction, appends the batch's log records to the write-ahead
//! log `store.wal` and syncs it (one `fdatasync` per batch: group commit),
//! commits the transaction without syncing (`Durability::None`) and then
//! acknowledges each operation. A checkpoint (a `Durability::Immediate` commit)
//! makes the database itself durable every `CHECKPOINT_INTERVAL` or
//! `CHECKPOINT_BYTES` of log, and the log starts again; opening the store
//! re-applies the log's records newer than the database's last checkpoint.
//! This is etcd's arrangement (WAL synced per batch, bbolt committed in the
//! background): one sequential write per batch instead of redb's scattered
//! page writes and header update. Reads run in
//! `spawn_blocking` on redb snapshots. Watches replay the log from disk and then
//! follow a broadcast of committed batches; a watcher that lags behind the
//! broadcast goes back to the disk and catches up, so it never misses an event
//! (it only ends with `Compacted` if the history it needs was compacted away).
//!
//! Compaction at `C` keeps exactly the state at `C` plus everything after it:
//! reads at `R >= C` and watches with `after >= C` work, older ones get
//! `Compacted`. The compacted revision is persisted at once; the old history is
//! then deleted by the writer in chunks between write batches (resumed after a
//! restart).

use std::collections::VecDeque;
use std::ops::Bound;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::{broadcast, oneshot};

use super::wal::Wal;
use super::{Event, KeyValue, ListResult, Page, Result, Revision, Store, StoreError, WatchStream};

const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
const REVS: TableDefinition<(&str, u64), ()> = TableDefinition::new("revs");
const LIVE: TableDefinition<&str, (u64, u64)> = TableDefinition::new("live");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

const META_REV: &str = "rev";
const META_COMPACTED: &str = "compacted";
const META_COMPACT_CURSOR: &str = "compact_cursor";

/// Most operations committed in one write transaction.
const MAX_BATCH: usize = 1024;
/// Writes already waiting when a batch starts that make the writer wait a
/// little for more (PostgreSQL's `commit_siblings`).
const COMMIT_SIBLINGS: usize = 4;
/// The longest a busy writer gathers a batch (see `Writer::run`): with
/// a few hundred writes in flight, larger batches halved the fdatasyncs of
/// `hack/bench scheduler` and cut the server's CPU per pod by a tenth.
const MAX_GATHER: Duration = Duration::from_millis(4);
/// A last batch at least this large means many writers are in flight, and
/// their writes keep coming: the writer then gathers for longer. A few
/// writers that each wait for their acknowledgement (`hack/bench api`'s 8
/// clients) are all in the batch soon, and a longer wait only delays them.
const CROWD: usize = 16;
/// The shortest pause in the writes that ends a gathering early.
const MIN_PAUSE: Duration = Duration::from_micros(50);
/// Log entries handled per compaction transaction.
const COMPACT_CHUNK: usize = 2048;
/// Log entries scanned per read transaction while a watch replays history.
const REPLAY_CHUNK: usize = 4096;
/// Committed batches buffered for live watchers before they lag (and re-read the disk).
const BROADCAST_CAPACITY: usize = if cfg!(test) { 64 } else { 256 };
/// Longest time the database goes without a checkpoint while writes come in
/// (and how long the writer waits idle before checkpointing the last ones).
/// (Unit tests checkpoint only by compacting or closing the store.)
const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(if cfg!(test) { 3600 } else { 1 });
/// Most write-ahead log bytes between checkpoints (also bounds the log's size).
const CHECKPOINT_BYTES: u64 = 32 << 20;

fn io_err<E: std::fmt::Display>(e: E) -> StoreError {
    StoreError::Io(e.to_string())
}

/// A decoded `log` record.
struct Record {
    key: String,
    /// `None` for a tombstone (delete).
    value: Option<Vec<u8>>,
    create_revision: Revision,
    /// The revision of the key's previous version (0 if none).
    prev_revision: Revision,
}

const KIND_PUT: u8 = 0;
const KIND_DELETE: u8 = 1;
const HEADER: usize = 1 + 8 + 8 + 4;

fn encode(
    key: &str,
    value: Option<&[u8]>,
    create_revision: Revision,
    prev_revision: Revision,
) -> Vec<u8> {
    let vlen = value.map_or(0, <[u8]>::len);
    let mut out = Vec::with_capacity(HEADER + key.len() + vlen);
    out.push(if value.is_some() {
        KIND_PUT
    } else {
        KIND_DELETE
    });
    out.extend_from_slice(&create_revision.to_le_bytes());
    out.extend_from_slice(&prev_revision.to_le_bytes());
    out.extend_from_slice(&(key.len() as u32).to_le_bytes());
    out.extend_from_slice(key.as_bytes());
    if let Some(v) = value {
        out.extend_from_slice(v);
    }
    out
}

fn decode(b: &[u8]) -> Result<Record> {
    let bad = || StoreError::Io("corrupt log record".into());
    if b.len() < HEADER {
        return Err(bad());
    }
    let kind = b[0];
    let create_revision = u64::from_le_bytes(b[1..9].try_into().map_err(|_| bad())?);
    let prev_revision = u64::from_le_bytes(b[9..17].try_into().map_err(|_| bad())?);
    let klen = u32::from_le_bytes(b[17..21].try_into().map_err(|_| bad())?) as usize;
    let rest = &b[HEADER..];
    if rest.len() < klen {
        return Err(bad());
    }
    let key = std::str::from_utf8(&rest[..klen])
        .map_err(|_| bad())?
        .to_owned();
    let value = match kind {
        KIND_PUT => Some(rest[klen..].to_vec()),
        KIND_DELETE => None,
        _ => return Err(bad()),
    };
    Ok(Record {
        key,
        value,
        create_revision,
        prev_revision,
    })
}

/// Only the key of an encoded record.
fn decode_key(b: &[u8]) -> Result<&str> {
    let bad = || StoreError::Io("corrupt log record".into());
    let klen = u32::from_le_bytes(
        b.get(17..21)
            .ok_or_else(bad)?
            .try_into()
            .map_err(|_| bad())?,
    ) as usize;
    std::str::from_utf8(b.get(HEADER..HEADER + klen).ok_or_else(bad)?).map_err(|_| bad())
}

/// Reads and decodes `log[rev]`.
fn read_record(
    log: &impl ReadableTable<u64, &'static [u8]>,
    rev: Revision,
) -> Result<Option<Record>> {
    match log.get(rev).map_err(io_err)? {
        Some(g) => decode(g.value()).map(Some),
        None => Ok(None),
    }
}

/// The key value stored at `rev` (None if missing or a tombstone).
fn read_kv(
    log: &impl ReadableTable<u64, &'static [u8]>,
    rev: Revision,
) -> Result<Option<KeyValue>> {
    Ok(read_record(log, rev)?.and_then(|r| {
        r.value.map(|value| KeyValue {
            key: r.key,
            value: value.into(),
            create_revision: r.create_revision,
            mod_revision: rev,
        })
    }))
}

/// Turns `log[rev]` into a watch event.
fn record_to_event(
    log: &impl ReadableTable<u64, &'static [u8]>,
    rev: Revision,
    rec: Record,
) -> Result<Event> {
    let prev = if rec.prev_revision > 0 {
        read_kv(log, rec.prev_revision)?
    } else {
        None
    };
    Ok(match rec.value {
        Some(value) => Event::Put {
            kv: KeyValue {
                key: rec.key,
                value: value.into(),
                create_revision: rec.create_revision,
                mod_revision: rev,
            },
            prev,
        },
        None => Event::Delete {
            prev: prev.unwrap_or(KeyValue {
                key: rec.key,
                value: Bytes::new(),
                create_revision: rec.create_revision,
                mod_revision: rec.prev_revision,
            }),
            revision: rev,
        },
    })
}

fn meta_get(meta: &impl ReadableTable<&'static str, u64>, name: &str) -> Result<u64> {
    Ok(meta
        .get(name)
        .map_err(io_err)?
        .map(|g| g.value())
        .unwrap_or(0))
}

/// One committed write transaction, as broadcast to live watchers.
struct Batch {
    /// The store revision after this batch (its last event's revision).
    revision: Revision,
    events: Vec<Event>,
}

/// A value as the watch cache and its history will hold it: in a buffer of
/// exactly its length, where an encoder's vector has up to twice that.
fn exact(value: Vec<u8>) -> Bytes {
    if value.capacity() == value.len() {
        Bytes::from(value)
    } else {
        Bytes::copy_from_slice(&value)
    }
}

enum WriteOp {
    Create {
        key: String,
        value: Bytes,
    },
    Update {
        key: String,
        value: Bytes,
        expected: Revision,
    },
    Delete {
        key: String,
        expected: Option<Revision>,
    },
}

enum Outcome {
    Written(Revision),
    Deleted(Revision, KeyValue),
}

enum Request {
    Write {
        op: WriteOp,
        reply: oneshot::Sender<Result<Outcome>>,
    },
    Compact {
        revision: Revision,
        reply: oneshot::Sender<Result<()>>,
    },
}

impl Request {
    /// The reply that fails this request with `e`.
    fn failed(self, e: StoreError) -> Reply {
        match self {
            Request::Write { reply, .. } => Reply::Write(reply, Err(e)),
            Request::Compact { reply, .. } => Reply::Compact(reply, Err(e)),
        }
    }
}

struct Shared {
    db: Database,
    current: AtomicU64,
    compacted: AtomicU64,
    /// Taken when the store is dropped so live watchers end.
    events: Mutex<Option<broadcast::Sender<Arc<Batch>>>>,
}

impl Shared {
    fn subscribe(&self) -> Option<broadcast::Receiver<Arc<Batch>>> {
        self.events
            .lock()
            .unwrap()
            .as_ref()
            .map(broadcast::Sender::subscribe)
    }
}

/// The embedded MVCC store on redb. See the module docs.
/// redb's own page cache. Its default (1 GiB) fills as the file grows
/// and stays resident; reads are served by the watch cache, so redb's
/// cache mostly holds the B-tree paths that writes touch, and the kernel's
/// page cache backs the rest.
const PAGE_CACHE_BYTES: usize = 64 << 20;

pub struct EmbeddedStore {
    shared: Arc<Shared>,
    requests: Option<std_mpsc::Sender<Request>>,
    writer: Option<JoinHandle<()>>,
}

impl EmbeddedStore {
    /// Opens (or creates) the store in `dir` (created if missing). Blocks for the
    /// file open and, after a crash, redb's repair.
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(io_err)?;
        let db = Database::builder()
            .set_cache_size(PAGE_CACHE_BYTES)
            .create(dir.join("store.redb"))
            .map_err(io_err)?;
        let (rev, compacted, cursor) = {
            let mut txn = db.begin_write().map_err(io_err)?;
            txn.set_durability(Durability::Immediate).map_err(io_err)?;
            let out;
            {
                txn.open_table(LOG).map_err(io_err)?;
                txn.open_table(REVS).map_err(io_err)?;
                txn.open_table(LIVE).map_err(io_err)?;
                let meta = txn.open_table(META).map_err(io_err)?;
                out = (
                    meta_get(&meta, META_REV)?,
                    meta_get(&meta, META_COMPACTED)?,
                    meta_get(&meta, META_COMPACT_CURSOR)?,
                );
            }
            txn.commit().map_err(io_err)?;
            out
        };
        let mut wal = Wal::open(&dir.join("store.wal")).map_err(io_err)?;
        let rev = replay_wal(&db, &wal, rev)?;
        wal.reset();
        let (events_tx, _) = broadcast::channel(BROADCAST_CAPACITY);
        let shared = Arc::new(Shared {
            db,
            current: AtomicU64::new(rev),
            compacted: AtomicU64::new(compacted),
            events: Mutex::new(Some(events_tx.clone())),
        });
        let (tx, rx) = std_mpsc::channel();
        let writer = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("store-writer".into())
                .spawn(move || {
                    Writer {
                        shared,
                        events: events_tx,
                        wal,
                        last_checkpoint: Instant::now(),
                        broken: None,
                        compact_target: compacted,
                        compact_cursor: cursor,
                    }
                    .run(rx)
                })
                .map_err(io_err)?
        };
        Ok(Self {
            shared,
            requests: Some(tx),
            writer: Some(writer),
        })
    }

    /// Opens the store on a blocking thread.
    pub async fn open_async(dir: &Path) -> Result<Self> {
        let dir = dir.to_owned();
        tokio::task::spawn_blocking(move || Self::open(&dir))
            .await
            .map_err(io_err)?
    }

    async fn write(&self, op: WriteOp) -> Result<Outcome> {
        let (reply, rx) = oneshot::channel();
        let requests = self.requests.as_ref().ok_or(StoreError::Closed)?;
        requests
            .send(Request::Write { op, reply })
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&redb::ReadTransaction) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || {
            let txn = shared.db.begin_read().map_err(io_err)?;
            f(&txn)
        })
        .await
        .map_err(io_err)?
    }
}

#[cfg(test)]
impl EmbeddedStore {
    /// (log entries, revs entries, compaction cursor) as committed.
    fn physical_state(&self) -> (u64, u64, Revision) {
        use redb::ReadableTableMetadata;
        let txn = self.shared.db.begin_read().unwrap();
        let log = txn.open_table(LOG).unwrap().len().unwrap();
        let revs = txn.open_table(REVS).unwrap().len().unwrap();
        let cursor = meta_get(&txn.open_table(META).unwrap(), META_COMPACT_CURSOR).unwrap();
        (log, revs, cursor)
    }
}

impl Drop for EmbeddedStore {
    fn drop(&mut self) {
        self.shared.events.lock().unwrap().take();
        self.requests.take();
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

/// Checks a read revision against the snapshot's current and compacted revisions.
/// The values of the keys under `prefix` (after `start_after`, when given)
/// as they were at revision `at`, in key order, at most `limit` of them.
fn items_at(
    revs: &impl ReadableTable<(&'static str, u64), ()>,
    log: &impl ReadableTable<u64, &'static [u8]>,
    prefix: &str,
    start_after: Option<&str>,
    at: Revision,
    limit: usize,
) -> Result<Vec<KeyValue>> {
    // Versions come in (key, revision) order: each key's newest <= at is the
    // last one seen before the key changes. A key deleted by then has a
    // tombstone there and is left out.
    let start = match start_after {
        Some(key) => Bound::Excluded((key, u64::MAX)),
        None => Bound::Included((prefix, 0)),
    };
    let mut items = Vec::new();
    let mut pending: Option<(String, Revision)> = None;
    let take = |pending: Option<(String, Revision)>, items: &mut Vec<KeyValue>| -> Result<()> {
        if let Some((_, rev)) = pending
            && let Some(kv) = read_kv(log, rev)?
        {
            items.push(kv);
        }
        Ok(())
    };
    for entry in revs
        .range::<(&str, u64)>((start, Bound::Unbounded))
        .map_err(io_err)?
    {
        let (k, _) = entry.map_err(io_err)?;
        let (key, rev) = k.value();
        if !key.starts_with(prefix) || items.len() >= limit {
            break;
        }
        if rev > at {
            continue;
        }
        match &mut pending {
            Some((last, newest)) if last == key => *newest = rev,
            _ => {
                take(pending.take(), &mut items)?;
                if items.len() >= limit {
                    return Ok(items);
                }
                pending = Some((key.to_owned(), rev));
            }
        }
    }
    if items.len() < limit {
        take(pending, &mut items)?;
    }
    Ok(items)
}

fn check_read_rev(requested: Revision, current: Revision, compacted: Revision) -> Result<()> {
    if requested > current {
        return Err(StoreError::FutureRevision { requested, current });
    }
    if requested < compacted {
        return Err(StoreError::Compacted {
            requested,
            compacted,
        });
    }
    Ok(())
}

#[async_trait::async_trait]
impl Store for EmbeddedStore {
    async fn current_revision(&self) -> Result<Revision> {
        Ok(self.shared.current.load(Ordering::Acquire))
    }

    async fn compacted_revision(&self) -> Result<Revision> {
        Ok(self.shared.compacted.load(Ordering::Acquire))
    }

    async fn get(&self, key: &str, revision: Option<Revision>) -> Result<Option<KeyValue>> {
        let key = key.to_owned();
        self.read(move |txn| {
            let log = txn.open_table(LOG).map_err(io_err)?;
            match revision {
                None => {
                    let live = txn.open_table(LIVE).map_err(io_err)?;
                    let Some(rev) = live.get(key.as_str()).map_err(io_err)?.map(|g| g.value().0)
                    else {
                        return Ok(None);
                    };
                    read_kv(&log, rev)
                }
                Some(at) => {
                    let meta = txn.open_table(META).map_err(io_err)?;
                    check_read_rev(
                        at,
                        meta_get(&meta, META_REV)?,
                        meta_get(&meta, META_COMPACTED)?,
                    )?;
                    let revs = txn.open_table(REVS).map_err(io_err)?;
                    let found = revs
                        .range((key.as_str(), 0u64)..=(key.as_str(), at))
                        .map_err(io_err)?
                        .next_back()
                        .transpose()
                        .map_err(io_err)?
                        .map(|(k, _)| k.value().1);
                    match found {
                        Some(rev) => read_kv(&log, rev),
                        None => Ok(None),
                    }
                }
            }
        })
        .await
    }

    async fn list(&self, prefix: &str, revision: Option<Revision>) -> Result<ListResult> {
        let prefix = prefix.to_owned();
        self.read(move |txn| {
            let log = txn.open_table(LOG).map_err(io_err)?;
            let meta = txn.open_table(META).map_err(io_err)?;
            let current = meta_get(&meta, META_REV)?;
            let mut items = Vec::new();
            match revision {
                None => {
                    let live = txn.open_table(LIVE).map_err(io_err)?;
                    for entry in live.range(prefix.as_str()..).map_err(io_err)? {
                        let (k, v) = entry.map_err(io_err)?;
                        if !k.value().starts_with(prefix.as_str()) {
                            break;
                        }
                        if let Some(kv) = read_kv(&log, v.value().0)? {
                            items.push(kv);
                        }
                    }
                    Ok(ListResult {
                        revision: current,
                        items,
                    })
                }
                Some(at) => {
                    check_read_rev(at, current, meta_get(&meta, META_COMPACTED)?)?;
                    let revs = txn.open_table(REVS).map_err(io_err)?;
                    Ok(ListResult {
                        revision: at,
                        items: items_at(&revs, &log, &prefix, None, at, usize::MAX)?,
                    })
                }
            }
        })
        .await
    }

    async fn list_page(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        revision: Revision,
        limit: usize,
    ) -> Result<Page> {
        let prefix = prefix.to_owned();
        let start_after = start_after.map(str::to_owned);
        self.read(move |txn| {
            let log = txn.open_table(LOG).map_err(io_err)?;
            let meta = txn.open_table(META).map_err(io_err)?;
            let current = meta_get(&meta, META_REV)?;
            check_read_rev(revision, current, meta_get(&meta, META_COMPACTED)?)?;
            let revs = txn.open_table(REVS).map_err(io_err)?;
            let items = items_at(
                &revs,
                &log,
                &prefix,
                start_after.as_deref(),
                revision,
                limit,
            )?;
            let remaining = match items.last() {
                Some(last) if items.len() == limit => {
                    let live = txn.open_table(LIVE).map_err(io_err)?;
                    let mut n = 0u64;
                    for entry in live
                        .range::<&str>((Bound::Excluded(last.key.as_str()), Bound::Unbounded))
                        .map_err(io_err)?
                    {
                        if !entry
                            .map_err(io_err)?
                            .0
                            .value()
                            .starts_with(prefix.as_str())
                        {
                            break;
                        }
                        n += 1;
                    }
                    n
                }
                _ => 0,
            };
            Ok(Page { items, remaining })
        })
        .await
    }

    async fn create(&self, key: &str, value: Vec<u8>) -> Result<Revision> {
        match self
            .write(WriteOp::Create {
                key: key.to_owned(),
                value: exact(value),
            })
            .await?
        {
            Outcome::Written(rev) | Outcome::Deleted(rev, _) => Ok(rev),
        }
    }

    async fn update(&self, key: &str, value: Vec<u8>, expected: Revision) -> Result<Revision> {
        match self
            .write(WriteOp::Update {
                key: key.to_owned(),
                value: exact(value),
                expected,
            })
            .await?
        {
            Outcome::Written(rev) | Outcome::Deleted(rev, _) => Ok(rev),
        }
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<(Revision, KeyValue)> {
        match self
            .write(WriteOp::Delete {
                key: key.to_owned(),
                expected,
            })
            .await?
        {
            Outcome::Deleted(rev, kv) => Ok((rev, kv)),
            Outcome::Written(_) => Err(StoreError::Io("unexpected write outcome".into())),
        }
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream> {
        let current = self.shared.current.load(Ordering::Acquire);
        if after > current {
            return Err(StoreError::FutureRevision {
                requested: after,
                current,
            });
        }
        let compacted = self.shared.compacted.load(Ordering::Acquire);
        if after < compacted {
            return Err(StoreError::Compacted {
                requested: after,
                compacted,
            });
        }
        let rx = self.shared.subscribe().ok_or(StoreError::Closed)?;
        let state = WatchState {
            shared: self.shared.clone(),
            prefix: prefix.to_owned(),
            last: after,
            rx: Some(rx),
            pending: VecDeque::new(),
            live: false,
            done: false,
        };
        Ok(Box::pin(futures::stream::unfold(state, WatchState::next)))
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        let (reply, rx) = oneshot::channel();
        let requests = self.requests.as_ref().ok_or(StoreError::Closed)?;
        requests
            .send(Request::Compact { revision, reply })
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }
}

/// History read from disk by a replaying watcher.
struct Replay {
    events: Vec<Event>,
    /// Every log entry up to here was scanned.
    scanned_to: Revision,
    /// The scan reached the snapshot's current revision.
    at_head: bool,
}

fn read_history(shared: &Shared, prefix: &str, after: Revision) -> Result<Replay> {
    let txn = shared.db.begin_read().map_err(io_err)?;
    let meta = txn.open_table(META).map_err(io_err)?;
    let current = meta_get(&meta, META_REV)?;
    let compacted = meta_get(&meta, META_COMPACTED)?;
    if after < compacted {
        return Err(StoreError::Compacted {
            requested: after,
            compacted,
        });
    }
    let log = txn.open_table(LOG).map_err(io_err)?;
    let mut events = Vec::new();
    let mut scanned = 0;
    let mut scanned_to = after;
    let mut records = Vec::new();
    for entry in log.range(after + 1..).map_err(io_err)? {
        let (k, v) = entry.map_err(io_err)?;
        let rev = k.value();
        scanned_to = rev;
        scanned += 1;
        if decode_key(v.value())?.starts_with(prefix) {
            records.push((rev, decode(v.value())?));
        }
        if scanned >= REPLAY_CHUNK {
            break;
        }
    }
    for (rev, rec) in records {
        events.push(record_to_event(&log, rev, rec)?);
    }
    if scanned < REPLAY_CHUNK {
        Ok(Replay {
            events,
            scanned_to: current.max(scanned_to),
            at_head: true,
        })
    } else {
        Ok(Replay {
            events,
            scanned_to,
            at_head: false,
        })
    }
}

struct WatchState {
    shared: Arc<Shared>,
    prefix: String,
    /// Every event up to this revision was delivered (or skipped as not matching).
    last: Revision,
    rx: Option<broadcast::Receiver<Arc<Batch>>>,
    pending: VecDeque<Event>,
    /// Following the broadcast (else replaying from disk).
    live: bool,
    done: bool,
}

impl WatchState {
    async fn next(mut self) -> Option<(Result<Event>, Self)> {
        loop {
            if let Some(e) = self.pending.pop_front() {
                return Some((Ok(e), self));
            }
            if self.done {
                return None;
            }
            if !self.live {
                // Subscribe before reading the disk so that nothing committed
                // after the read is missed; duplicates are skipped by revision.
                if self.rx.is_none() {
                    match self.shared.subscribe() {
                        Some(rx) => self.rx = Some(rx),
                        None => return self.fail(StoreError::Closed),
                    }
                }
                let shared = self.shared.clone();
                let prefix = self.prefix.clone();
                let after = self.last;
                let res =
                    tokio::task::spawn_blocking(move || read_history(&shared, &prefix, after))
                        .await
                        .map_err(io_err)
                        .and_then(|r| r);
                match res {
                    Ok(replay) => {
                        self.pending.extend(replay.events);
                        self.last = replay.scanned_to;
                        self.live = replay.at_head;
                    }
                    Err(e) => return self.fail(e),
                }
                continue;
            }
            let rx = self.rx.as_mut().expect("live watcher has a receiver");
            match rx.recv().await {
                Ok(batch) => {
                    if batch.revision <= self.last {
                        continue;
                    }
                    for e in &batch.events {
                        if e.revision() > self.last && e.key().starts_with(self.prefix.as_str()) {
                            self.pending.push_back(e.clone());
                        }
                    }
                    self.last = batch.revision;
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    // Fell behind the broadcast: catch up from the disk.
                    self.live = false;
                    self.rx = None;
                }
                Err(broadcast::error::RecvError::Closed) => return self.fail(StoreError::Closed),
            }
        }
    }

    fn fail(mut self, e: StoreError) -> Option<(Result<Event>, Self)> {
        self.done = true;
        self.pending.clear();
        Some((Err(e), self))
    }
}

/// Re-applies the write-ahead log's records newer than `durable` (the
/// database's revision at its last checkpoint) and makes them durable; returns
/// the revision reached. The current round of frames starts at the log's
/// start with revision `durable + 1` or earlier; a frame that skips ahead
/// (or a record older than one applied) belongs to an earlier round.
fn replay_wal(db: &Database, wal: &Wal, durable: Revision) -> Result<Revision> {
    let corrupt = || StoreError::Io("corrupt write-ahead log frame".into());
    let frames = wal.frames().map_err(io_err)?;
    let mut applied = durable;
    let mut txn = db.begin_write().map_err(io_err)?;
    txn.set_durability(Durability::Immediate).map_err(io_err)?;
    {
        let mut t = Tables::open(&txn, 0)?;
        'frames: for frame in &frames {
            let (first, mut rest) = frame.split_at_checked(8).ok_or_else(corrupt)?;
            let mut rev = u64::from_le_bytes(first.try_into().map_err(|_| corrupt())?);
            while !rest.is_empty() {
                let (len, tail) = rest.split_at_checked(4).ok_or_else(corrupt)?;
                let len = u32::from_le_bytes(len.try_into().map_err(|_| corrupt())?) as usize;
                let (record, tail) = tail.split_at_checked(len).ok_or_else(corrupt)?;
                rest = tail;
                if rev > applied + 1 {
                    break 'frames;
                }
                if rev == applied + 1 {
                    let r = decode(record)?;
                    t.put(
                        &r.key,
                        r.value.as_deref(),
                        rev,
                        r.create_revision,
                        r.prev_revision,
                    )?;
                    applied = rev;
                }
                rev += 1;
            }
        }
        if applied != durable {
            txn.open_table(META)
                .map_err(io_err)?
                .insert(META_REV, applied)
                .map_err(io_err)?;
        }
    }
    if applied == durable {
        txn.abort().map_err(io_err)?;
    } else {
        tracing::info!(
            from = durable + 1,
            to = applied,
            "store: replayed the write-ahead log"
        );
        txn.commit().map_err(io_err)?;
    }
    Ok(applied)
}

struct Writer {
    shared: Arc<Shared>,
    events: broadcast::Sender<Arc<Batch>>,
    wal: Wal,
    /// When the database was last made durable on its own.
    last_checkpoint: Instant,
    /// Set when the log or the database failed in the middle of a batch: the
    /// disk may then hold writes the store did not acknowledge, so every later
    /// write fails until a restart replays the log.
    broken: Option<String>,
    /// Physical compaction goes up to here...
    compact_target: Revision,
    /// ...and has handled every log entry up to here.
    compact_cursor: Revision,
}

impl Writer {
    fn run(mut self, rx: std_mpsc::Receiver<Request>) {
        // Writers usually wait for their previous acknowledgement before sending
        // the next write; right after a batch is acknowledged they come back
        // within microseconds. Waiting briefly for as many requests as the last
        // batch had keeps them in one batch instead of splitting them into two
        // half-size batches that each pay a full fsync.
        let mut expected = 1usize;
        let mut window = Duration::from_micros(200);
        let mut last_commit = Duration::ZERO;
        loop {
            let compacting = self.compact_cursor < self.compact_target && self.broken.is_none();
            let first = if compacting {
                match rx.try_recv() {
                    Ok(r) => Some(r),
                    Err(std_mpsc::TryRecvError::Empty) => None,
                    Err(std_mpsc::TryRecvError::Disconnected) => break,
                }
            } else if self.wal.is_empty() {
                match rx.recv() {
                    Ok(r) => Some(r),
                    Err(_) => break,
                }
            } else {
                let idle = CHECKPOINT_INTERVAL.saturating_sub(self.last_checkpoint.elapsed());
                match rx.recv_timeout(idle) {
                    Ok(r) => Some(r),
                    Err(std_mpsc::RecvTimeoutError::Timeout) => {
                        self.checkpoint();
                        continue;
                    }
                    Err(std_mpsc::RecvTimeoutError::Disconnected) => break,
                }
            };
            if let Some(first) = first {
                let mut batch = vec![first];
                batch.extend(rx.try_iter().take(MAX_BATCH - 1));
                if batch.len() >= COMMIT_SIBLINGS {
                    // Writes kept coming while the last batch committed:
                    // more are on their way (the scheduler's bindings and
                    // events). Gather them for up to a commit's time, as
                    // PostgreSQL's commit_delay does when commit_siblings
                    // are active, so that a commit's fixed cost (the
                    // fdatasync, redb's commit) is shared by more writes.
                    // A pause of a quarter of a commit ends the wait early.
                    // After a `CROWD`ed batch the wait is up to two commits'
                    // time, and a pause must last half a commit once more
                    // writes came.
                    // The writer sleeps in slices of that pause rather than
                    // waiting on the channel: woken by every write, it
                    // switched in and out once per request, and so did the
                    // threads sending them, at ten thousand writes a second.
                    let (gather, later_pause) = if expected >= CROWD {
                        (
                            (last_commit * 2).min(MAX_GATHER),
                            (last_commit / 2).clamp(MIN_PAUSE, MAX_GATHER / 2),
                        )
                    } else {
                        (last_commit.min(MAX_GATHER / 2), window)
                    };
                    let deadline = Instant::now() + gather;
                    let mut pause = window;
                    while batch.len() < MAX_BATCH {
                        let left = deadline.saturating_duration_since(Instant::now());
                        if left.is_zero() {
                            break;
                        }
                        std::thread::sleep(left.min(pause));
                        let before = batch.len();
                        batch.extend(rx.try_iter().take(MAX_BATCH - before));
                        if batch.len() == before {
                            break;
                        }
                        pause = later_pause;
                    }
                } else if batch.len() < expected {
                    let deadline = Instant::now() + window;
                    while batch.len() < expected && batch.len() < MAX_BATCH {
                        let left = deadline.saturating_duration_since(Instant::now());
                        match rx.recv_timeout(left) {
                            Ok(r) => {
                                batch.push(r);
                                batch.extend(rx.try_iter().take(MAX_BATCH - batch.len()));
                            }
                            Err(_) => break,
                        }
                    }
                }
                expected = batch.len();
                let started = Instant::now();
                self.commit_batch(batch);
                last_commit = started.elapsed();
                // Wait at most a quarter of a commit's time for stragglers.
                window = (last_commit / 4).clamp(MIN_PAUSE, MAX_GATHER / 2);
                if self.wal.len() >= CHECKPOINT_BYTES
                    || self.last_checkpoint.elapsed() >= CHECKPOINT_INTERVAL
                {
                    self.checkpoint();
                }
            }
            if self.compact_cursor < self.compact_target
                && self.broken.is_none()
                && let Err(e) = self.compact_chunk()
            {
                tracing::error!(error = %e, "store compaction failed");
                // Try again after the next request rather than spinning.
                match rx.recv() {
                    Ok(r) => self.commit_batch(vec![r]),
                    Err(_) => break,
                }
            }
        }
        self.checkpoint();
    }

    /// Makes every commit so far durable in the database itself, so that the
    /// write-ahead log can start again.
    fn checkpoint(&mut self) {
        if self.wal.is_empty() || self.broken.is_some() {
            return;
        }
        let res: Result<()> = (|| {
            let mut txn = self.shared.db.begin_write().map_err(io_err)?;
            txn.set_durability(Durability::Immediate).map_err(io_err)?;
            txn.commit().map_err(io_err)
        })();
        match res {
            Ok(()) => self.checkpointed(),
            Err(e) => {
                // The log still holds everything: try again after another interval.
                tracing::error!(error = %e, "store checkpoint failed");
                self.last_checkpoint = Instant::now();
            }
        }
    }

    fn checkpointed(&mut self) {
        self.wal.reset();
        self.last_checkpoint = Instant::now();
    }

    fn commit_batch(&mut self, batch: Vec<Request>) {
        if let Some(broken) = &self.broken {
            for req in batch {
                req.failed(StoreError::Io(broken.clone())).send();
            }
            return;
        }
        let start_rev = self.shared.current.load(Ordering::Acquire);
        let mut rev = start_rev;
        let mut compacted = self.shared.compacted.load(Ordering::Acquire);
        let mut events = Vec::new();
        let mut replies: Vec<Reply> = Vec::with_capacity(batch.len());
        let res: Result<()> = (|| {
            let mut txn = self.shared.db.begin_write().map_err(io_err)?;
            let frame;
            {
                let mut t = Tables::open(&txn, start_rev + 1)?;
                let mut meta = txn.open_table(META).map_err(io_err)?;
                let mut fatal: Option<StoreError> = None;
                for req in batch {
                    if fatal.is_some() {
                        replies.push(req.failed(StoreError::Closed));
                        continue;
                    }
                    match req {
                        Request::Write { op, reply } => {
                            let out = t.apply(op, &mut rev, &mut events);
                            if let Err(StoreError::Io(e)) = &out {
                                fatal = Some(StoreError::Io(e.clone()));
                            }
                            replies.push(Reply::Write(reply, out));
                        }
                        Request::Compact { revision, reply } => {
                            let out = if revision > rev {
                                Err(StoreError::FutureRevision {
                                    requested: revision,
                                    current: rev,
                                })
                            } else if revision > compacted {
                                match meta.insert(META_COMPACTED, revision) {
                                    Ok(_) => {
                                        compacted = revision;
                                        Ok(())
                                    }
                                    Err(e) => {
                                        fatal = Some(io_err(e));
                                        Err(StoreError::Closed)
                                    }
                                }
                            } else {
                                Ok(())
                            };
                            replies.push(Reply::Compact(reply, out));
                        }
                    }
                }
                if let Some(e) = fatal {
                    return Err(e);
                }
                if rev != start_rev {
                    meta.insert(META_REV, rev).map_err(io_err)?;
                }
                frame = t.frame;
            }
            if compacted != self.shared.compacted.load(Ordering::Acquire) {
                // Rare (the compactor's few calls an hour): this batch is a checkpoint.
                txn.set_durability(Durability::Immediate).map_err(io_err)?;
                txn.commit().map_err(io_err)?;
                self.checkpointed();
                return Ok(());
            }
            if rev == start_rev {
                // Only failed preconditions: nothing to make durable.
                txn.abort().map_err(io_err)?;
                return Ok(());
            }
            txn.set_durability(Durability::None).map_err(io_err)?;
            if let Err(e) = self.wal.append(&frame) {
                self.broken = Some(format!("write-ahead log failed: {e}"));
                return Err(io_err(e));
            }
            if let Err(e) = txn.commit() {
                self.broken = Some(format!("commit after the write-ahead log failed: {e}"));
                return Err(io_err(e));
            }
            Ok(())
        })();
        match res {
            Ok(()) => {
                self.shared.current.store(rev, Ordering::Release);
                self.shared.compacted.store(compacted, Ordering::Release);
                self.compact_target = compacted;
                if !events.is_empty() {
                    let _ = self.events.send(Arc::new(Batch {
                        revision: rev,
                        events,
                    }));
                }
                for r in replies {
                    r.send();
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "store write transaction failed");
                for r in replies {
                    r.fail(&e);
                }
            }
        }
    }

    /// Deletes one chunk of history superseded at or before the compaction target.
    fn compact_chunk(&mut self) -> Result<()> {
        let mut txn = self.shared.db.begin_write().map_err(io_err)?;
        txn.set_durability(Durability::Immediate).map_err(io_err)?;
        let cursor;
        {
            let mut log = txn.open_table(LOG).map_err(io_err)?;
            let mut revs = txn.open_table(REVS).map_err(io_err)?;
            let mut meta = txn.open_table(META).map_err(io_err)?;
            let mut entries = Vec::new();
            for entry in log
                .range(self.compact_cursor + 1..=self.compact_target)
                .map_err(io_err)?
            {
                let (k, v) = entry.map_err(io_err)?;
                entries.push((k.value(), decode(v.value())?));
                if entries.len() >= COMPACT_CHUNK {
                    break;
                }
            }
            let full = entries.len() >= COMPACT_CHUNK;
            for (rev, rec) in &entries {
                // This entry supersedes the key's previous version.
                if rec.prev_revision > 0 {
                    log.remove(rec.prev_revision).map_err(io_err)?;
                    revs.remove((rec.key.as_str(), rec.prev_revision))
                        .map_err(io_err)?;
                }
                if rec.value.is_none() {
                    log.remove(*rev).map_err(io_err)?;
                    revs.remove((rec.key.as_str(), *rev)).map_err(io_err)?;
                }
            }
            cursor = if full {
                entries.last().map_or(self.compact_target, |e| e.0)
            } else {
                self.compact_target
            };
            meta.insert(META_COMPACT_CURSOR, cursor).map_err(io_err)?;
        }
        txn.commit().map_err(io_err)?;
        self.checkpointed();
        self.compact_cursor = cursor;
        Ok(())
    }
}

enum Reply {
    Write(oneshot::Sender<Result<Outcome>>, Result<Outcome>),
    Compact(oneshot::Sender<Result<()>>, Result<()>),
}

impl Reply {
    fn send(self) {
        match self {
            Reply::Write(tx, r) => {
                let _ = tx.send(r);
            }
            Reply::Compact(tx, r) => {
                let _ = tx.send(r);
            }
        }
    }

    fn fail(self, e: &StoreError) {
        let e = StoreError::Io(e.to_string());
        match self {
            Reply::Write(tx, _) => {
                let _ = tx.send(Err(e));
            }
            Reply::Compact(tx, _) => {
                let _ = tx.send(Err(e));
            }
        }
    }
}

struct Tables<'t> {
    log: redb::Table<'t, u64, &'static [u8]>,
    revs: redb::Table<'t, (&'static str, u64), ()>,
    live: redb::Table<'t, &'static str, (u64, u64)>,
    /// The write-ahead log frame of the records put: the first one's revision
    /// (u64 LE), then each record (u32 LE length, bytes) at the following revisions.
    frame: Vec<u8>,
}

impl<'t> Tables<'t> {
    fn open(txn: &'t redb::WriteTransaction, first_revision: Revision) -> Result<Self> {
        Ok(Self {
            log: txn.open_table(LOG).map_err(io_err)?,
            revs: txn.open_table(REVS).map_err(io_err)?,
            live: txn.open_table(LIVE).map_err(io_err)?,
            frame: first_revision.to_le_bytes().to_vec(),
        })
    }

    fn live_get(&self, key: &str) -> Result<Option<(Revision, Revision)>> {
        Ok(self.live.get(key).map_err(io_err)?.map(|g| g.value()))
    }

    fn current_kv(&self, key: &str, mod_revision: Revision) -> Result<KeyValue> {
        read_kv(&self.log, mod_revision)?
            .ok_or_else(|| StoreError::Io(format!("missing log record {mod_revision} for {key}")))
    }

    fn put(
        &mut self,
        key: &str,
        value: Option<&[u8]>,
        rev: Revision,
        create_revision: Revision,
        prev_revision: Revision,
    ) -> Result<()> {
        let record = encode(key, value, create_revision, prev_revision);
        self.log.insert(rev, record.as_slice()).map_err(io_err)?;
        self.frame
            .extend_from_slice(&(record.len() as u32).to_le_bytes());
        self.frame.extend_from_slice(&record);
        self.revs.insert((key, rev), ()).map_err(io_err)?;
        if value.is_some() {
            self.live
                .insert(key, (rev, create_revision))
                .map_err(io_err)?;
        } else {
            self.live.remove(key).map_err(io_err)?;
        }
        Ok(())
    }

    fn apply(
        &mut self,
        op: WriteOp,
        rev: &mut Revision,
        events: &mut Vec<Event>,
    ) -> Result<Outcome> {
        match op {
            WriteOp::Create { key, value } => {
                if self.live_get(&key)?.is_some() {
                    return Err(StoreError::AlreadyExists(key));
                }
                let new = *rev + 1;
                self.put(&key, Some(value.as_ref()), new, new, 0)?;
                *rev = new;
                events.push(Event::Put {
                    kv: KeyValue {
                        key,
                        value,
                        create_revision: new,
                        mod_revision: new,
                    },
                    prev: None,
                });
                Ok(Outcome::Written(new))
            }
            WriteOp::Update {
                key,
                value,
                expected,
            } => {
                let Some((found, create)) = self.live_get(&key)? else {
                    return Err(StoreError::NotFound(key));
                };
                if found != expected {
                    return Err(StoreError::Conflict {
                        key,
                        expected,
                        found,
                    });
                }
                let prev = self.current_kv(&key, found)?;
                let new = *rev + 1;
                self.put(&key, Some(value.as_ref()), new, create, found)?;
                *rev = new;
                events.push(Event::Put {
                    kv: KeyValue {
                        key,
                        value,
                        create_revision: create,
                        mod_revision: new,
                    },
                    prev: Some(prev),
                });
                Ok(Outcome::Written(new))
            }
            WriteOp::Delete { key, expected } => {
                let Some((found, create)) = self.live_get(&key)? else {
                    return Err(StoreError::NotFound(key));
                };
                if let Some(expected) = expected
                    && found != expected
                {
                    return Err(StoreError::Conflict {
                        key,
                        expected,
                        found,
                    });
                }
                let prev = self.current_kv(&key, found)?;
                let new = *rev + 1;
                self.put(&key, None, new, create, found)?;
                *rev = new;
                events.push(Event::Delete {
                    prev: prev.clone(),
                    revision: new,
                });
                Ok(Outcome::Deleted(new, prev))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::conformance;

    fn store() -> (tempfile::TempDir, Arc<dyn Store>) {
        let dir = tempfile::tempdir().unwrap();
        let s = EmbeddedStore::open(dir.path()).unwrap();
        (dir, Arc::new(s))
    }

    #[tokio::test]
    async fn conformance_revisions() {
        let (_d, s) = store();
        conformance::revisions_increase_by_one(s).await;
    }

    #[tokio::test]
    async fn conformance_create_update_delete() {
        let (_d, s) = store();
        conformance::create_update_delete(s).await;
    }

    #[tokio::test]
    async fn conformance_past_reads() {
        let (_d, s) = store();
        conformance::reads_at_past_revisions(s).await;
    }

    #[tokio::test]
    async fn conformance_prefix() {
        let (_d, s) = store();
        conformance::list_prefix_isolation(s).await;
    }

    #[tokio::test]
    async fn conformance_list_pages() {
        let (_d, s) = store();
        conformance::list_pages(s).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn conformance_watch() {
        let (_d, s) = store();
        conformance::watch_replays_then_live(s).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn conformance_watch_concurrent() {
        let (_d, s) = store();
        conformance::watch_concurrent_writers(s).await;
    }

    #[tokio::test]
    async fn conformance_compaction() {
        let (_d, s) = store();
        conformance::compaction(s).await;
    }

    #[tokio::test]
    async fn conformance_all_on_one_store() {
        let (_d, s) = store();
        conformance::run_all(s).await;
    }

    #[tokio::test]
    async fn reopen_keeps_data_and_revision() {
        let dir = tempfile::tempdir().unwrap();
        let (r1, r3);
        {
            let s = EmbeddedStore::open(dir.path()).unwrap();
            r1 = s.create("/registry/a", b"1".to_vec()).await.unwrap();
            s.create("/registry/b", b"2".to_vec()).await.unwrap();
            r3 = s.update("/registry/a", b"3".to_vec(), r1).await.unwrap();
            s.delete("/registry/b", None).await.unwrap();
            s.compact(r3).await.unwrap();
        }
        let s = EmbeddedStore::open(dir.path()).unwrap();
        assert_eq!(s.current_revision().await.unwrap(), 4);
        assert_eq!(s.compacted_revision().await.unwrap(), r3);
        let a = s.get("/registry/a", None).await.unwrap().unwrap();
        assert_eq!(a.value, &b"3"[..]);
        assert_eq!(a.mod_revision, r3);
        assert_eq!(a.create_revision, r1);
        assert!(s.get("/registry/b", None).await.unwrap().is_none());
        assert_eq!(s.create("/registry/c", vec![]).await.unwrap(), 5);
        assert!(matches!(
            s.get("/registry/a", Some(r1)).await,
            Err(StoreError::Compacted { .. })
        ));
    }

    /// What a crash leaves: the files as they are on disk while the store runs,
    /// with the commits since the last checkpoint only in the write-ahead log.
    #[tokio::test]
    async fn files_left_by_a_crash_hold_every_acknowledged_write() {
        use futures::StreamExt;
        let dir = tempfile::tempdir().unwrap();
        let s = EmbeddedStore::open(dir.path()).unwrap();
        // A first round of the log, ended by a checkpoint (compacting is one)...
        for i in 0..40 {
            s.create(&format!("/registry/k{i:02}"), vec![b'a'; 300])
                .await
                .unwrap();
        }
        let r = s.update("/registry/k01", b"u".to_vec(), 2).await.unwrap();
        s.delete("/registry/k02", None).await.unwrap();
        s.compact(r).await.unwrap();
        let checkpointed = s.current_revision().await.unwrap();
        // ...then a shorter round that overwrites the start of the log.
        s.create("/registry/new", b"n".to_vec()).await.unwrap();
        s.update("/registry/k01", b"v".to_vec(), r).await.unwrap();
        s.delete("/registry/k03", None).await.unwrap();
        let head = s.current_revision().await.unwrap();

        let crashed = tempfile::tempdir().unwrap();
        let db_only = tempfile::tempdir().unwrap();
        for f in ["store.redb", "store.wal"] {
            std::fs::copy(dir.path().join(f), crashed.path().join(f)).unwrap();
        }
        std::fs::copy(
            dir.path().join("store.redb"),
            db_only.path().join("store.redb"),
        )
        .unwrap();

        // The database alone is at the checkpoint: the later writes are only in the log.
        let without_log = EmbeddedStore::open(db_only.path()).unwrap();
        assert_eq!(without_log.current_revision().await.unwrap(), checkpointed);

        let c = EmbeddedStore::open(crashed.path()).unwrap();
        assert_eq!(c.current_revision().await.unwrap(), head);
        assert_eq!(
            c.list("/registry/", None).await.unwrap(),
            s.list("/registry/", None).await.unwrap()
        );
        async fn history(st: &EmbeddedStore, after: Revision) -> Vec<Event> {
            let w = st.watch("/registry/", after).await.unwrap();
            w.take(3).map(Result::unwrap).collect().await
        }
        assert_eq!(
            history(&c, checkpointed).await,
            history(&s, checkpointed).await
        );
        assert_eq!(c.create("/registry/after", vec![]).await.unwrap(), head + 1);
        drop(c);
        // The replayed writes and the new one were made durable.
        let c = EmbeddedStore::open(crashed.path()).unwrap();
        assert_eq!(c.current_revision().await.unwrap(), head + 1);
        assert_eq!(
            c.get("/registry/k01", None).await.unwrap().unwrap().value,
            &b"v"[..]
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn lagging_watcher_catches_up_from_disk() {
        use futures::StreamExt;
        let (_d, s) = store();
        let mut w = s.watch("/registry/", 0).await.unwrap();
        // Far more batches than the broadcast holds, none read meanwhile.
        let n = BROADCAST_CAPACITY as u64 + 500;
        for i in 0..n {
            s.create(&format!("/registry/k{i:06}"), vec![1])
                .await
                .unwrap();
        }
        for i in 1..=n {
            let e = w.next().await.unwrap().unwrap();
            assert_eq!(e.revision(), i);
        }
    }

    /// Physical compaction over several chunks, checked against a model, and
    /// resumed after a restart.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn compaction_across_chunks_matches_model() {
        use std::collections::BTreeMap;
        let dir = tempfile::tempdir().unwrap();
        let s = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
        // 16 writers, each on its own keys: creates, updates, deletes, re-creates.
        let mut tasks = Vec::new();
        for t in 0..16u64 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                let mut log = Vec::new(); // (key, rev, Some(value) | None)
                for i in 0..400u64 {
                    let key = format!("/registry/m/t{t:02}/k{}", i % 7);
                    let cur = s.get(&key, None).await.unwrap();
                    let value = format!("{t}-{i}").into_bytes();
                    match cur {
                        None => {
                            let r = s.create(&key, value.clone()).await.unwrap();
                            log.push((key, r, Some(value)));
                        }
                        Some(kv) if i % 5 == 0 => {
                            let (r, _) = s.delete(&key, Some(kv.mod_revision)).await.unwrap();
                            log.push((key, r, None));
                        }
                        Some(kv) => {
                            let r = s
                                .update(&key, value.clone(), kv.mod_revision)
                                .await
                                .unwrap();
                            log.push((key, r, Some(value)));
                        }
                    }
                }
                log
            }));
        }
        type Versions = Vec<(Revision, Option<Vec<u8>>)>;
        let mut history: BTreeMap<String, Versions> = BTreeMap::new();
        for t in tasks {
            for (k, r, v) in t.await.unwrap() {
                history.entry(k).or_default().push((r, v));
            }
        }
        let current = s.current_revision().await.unwrap();
        assert_eq!(current, 16 * 400);
        let state_at = |at: Revision| -> Vec<(String, Vec<u8>, Revision)> {
            history
                .iter()
                .filter_map(|(k, vs)| {
                    let (r, v) = vs.iter().rev().find(|(r, _)| *r <= at)?;
                    v.as_ref().map(|v| (k.clone(), v.clone(), *r))
                })
                .collect()
        };
        let check = |s: Arc<EmbeddedStore>, at: Revision| {
            let want = state_at(at);
            async move {
                let got = s.list("/registry/m/", Some(at)).await.unwrap();
                let got: Vec<_> = got
                    .items
                    .into_iter()
                    .map(|kv| (kv.key, kv.value.to_vec(), kv.mod_revision))
                    .collect();
                assert_eq!(got, want, "state at {at}");
            }
        };
        for at in [1, 100, 2000, 4000, current] {
            check(s.clone(), at).await;
        }
        let target = 4000;
        s.compact(target).await.unwrap();
        // Wait for the background deletion.
        let deadline = Instant::now() + Duration::from_secs(20);
        while s.physical_state().2 < target {
            assert!(
                Instant::now() < deadline,
                "physical compaction did not finish"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let kept: u64 = history
            .values()
            .map(|vs| {
                let after = vs.iter().filter(|(r, _)| *r > target).count() as u64;
                let at = vs
                    .iter()
                    .rev()
                    .find(|(r, _)| *r <= target)
                    .is_some_and(|(_, v)| v.is_some());
                after + u64::from(at)
            })
            .sum();
        let (log_len, revs_len, _) = s.physical_state();
        assert_eq!((log_len, revs_len), (kept, kept));
        for at in [target, target + 1, 5000, current] {
            check(s.clone(), at).await;
        }
        assert!(matches!(
            s.list("/registry/m/", Some(target - 1)).await,
            Err(StoreError::Compacted { .. })
        ));
        // Every event after the compacted revision replays, with prev values.
        let mut w = s.watch("/registry/m/", target).await.unwrap();
        for rev in target + 1..=current {
            let e = conformance::next_event(&mut w).await;
            assert_eq!(e.revision(), rev);
            if let Event::Delete { prev, .. } = &e {
                let (_, v, r) = state_at(rev - 1)
                    .into_iter()
                    .find(|(k, _, _)| k == &prev.key)
                    .unwrap();
                assert_eq!((&prev.value[..], prev.mod_revision), (&v[..], r));
            }
        }
        drop(w);

        // A compaction interrupted by a restart resumes.
        s.compact(current).await.unwrap();
        drop(s);
        let s = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
        let deadline = Instant::now() + Duration::from_secs(20);
        while s.physical_state().2 < current {
            assert!(Instant::now() < deadline, "compaction did not resume");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let live = state_at(current).len() as u64;
        assert_eq!(s.physical_state().0, live);
        check(s.clone(), current).await;
    }

    #[tokio::test]
    async fn group_commit_batches_concurrent_writes() {
        let (_d, s) = store();
        let mut tasks = Vec::new();
        for t in 0..16 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..50 {
                    s.create(&format!("/registry/t{t}/{i}"), vec![0; 100])
                        .await
                        .unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(s.current_revision().await.unwrap(), 800);
        assert_eq!(s.list("/registry/", None).await.unwrap().items.len(), 800);
    }
}
