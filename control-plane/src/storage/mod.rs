//! The `Store`: an MVCC key-value store under the API server.
//!
//! Every write gets the next global revision (the object's resourceVersion);
//! reads can be made at a past revision until it is compacted; a watch starts
//! from a revision and replays every later event in order. Backends: the
//! embedded durable store (default) and, later, etcd v3.

use std::pin::Pin;

use futures::Stream;

pub mod compactor;
pub mod conformance;
pub mod embedded;
mod wal;

pub use compactor::run_compactor;
pub use embedded::EmbeddedStore;

/// A global store revision; objects carry it as `metadata.resourceVersion`.
pub type Revision = u64;

/// One stored key at one revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: bytes::Bytes,
    /// The revision that created this key (unchanged by updates).
    pub create_revision: Revision,
    /// The revision of the last write to this key (its resourceVersion).
    pub mod_revision: Revision,
}

/// A change seen by a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A create or an update; `prev` is the value before an update.
    Put {
        kv: KeyValue,
        prev: Option<KeyValue>,
    },
    /// A delete; `prev` is the deleted value and `revision` the delete's own revision.
    Delete { prev: KeyValue, revision: Revision },
}

impl Event {
    /// The revision at which this event happened.
    pub fn revision(&self) -> Revision {
        match self {
            Event::Put { kv, .. } => kv.mod_revision,
            Event::Delete { revision, .. } => *revision,
        }
    }

    /// The key this event is about.
    pub fn key(&self) -> &str {
        match self {
            Event::Put { kv, .. } => &kv.key,
            Event::Delete { prev, .. } => &prev.key,
        }
    }
}

/// The result of a list: the items and the store revision they were read at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListResult {
    pub revision: Revision,
    pub items: Vec<KeyValue>,
}

/// One page of a list at a revision (`Store::list_page`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub items: Vec<KeyValue>,
    /// Keys under the prefix after the page's last item, counted at the
    /// newest revision (exact unless keys changed since the page's revision;
    /// `remainingItemCount` is documented as an estimate), 0 when the page
    /// is not full.
    pub remaining: u64,
}

/// A stream of watch events in revision order. An `Err(StoreError::Compacted)`
/// item ends it when the watcher fell too far behind.
pub type WatchStream = Pin<Box<dyn Stream<Item = Result<Event>> + Send>>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("key {0} already exists")]
    AlreadyExists(String),
    #[error("key {0} not found")]
    NotFound(String),
    /// The compare-and-swap revision did not match; carries the current value.
    #[error("key {key} was modified: expected revision {expected}, found {found}")]
    Conflict {
        key: String,
        expected: Revision,
        found: Revision,
    },
    #[error("revision {requested} has been compacted (oldest available {compacted})")]
    Compacted {
        requested: Revision,
        compacted: Revision,
    },
    #[error("revision {requested} is in the future (current {current})")]
    FutureRevision {
        requested: Revision,
        current: Revision,
    },
    #[error("store i/o failed: {0}")]
    Io(String),
    #[error("store is closed")]
    Closed,
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The storage interface of the API server. Keys are `/`-separated paths such
/// as `/registry/pods/default/web`; values are the serialized objects.
/// Every write is durable before it returns.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// The newest revision (0 for an empty store).
    async fn current_revision(&self) -> Result<Revision>;

    /// The oldest revision that can still be read or watched from.
    async fn compacted_revision(&self) -> Result<Revision>;

    /// Reads one key at the newest revision, or at `revision` if given.
    async fn get(&self, key: &str, revision: Option<Revision>) -> Result<Option<KeyValue>>;

    /// Lists every key starting with `prefix`, in key order, at the newest
    /// revision or at `revision` if given.
    async fn list(&self, prefix: &str, revision: Option<Revision>) -> Result<ListResult>;

    /// Up to `limit` keys of `list(prefix, Some(revision))`, starting after
    /// `start_after` (from the first key when `None`): one page of a
    /// paginated list, read without reading the keys before it.
    async fn list_page(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        revision: Revision,
        limit: usize,
    ) -> Result<Page>;

    /// Creates a key that must not exist; returns the new revision.
    async fn create(&self, key: &str, value: Vec<u8>) -> Result<Revision>;

    /// Replaces a key whose current mod revision is `expected`; returns the new revision.
    async fn update(&self, key: &str, value: Vec<u8>, expected: Revision) -> Result<Revision>;

    /// Deletes a key, only if its mod revision is `expected` when given;
    /// returns the delete's revision and the deleted value.
    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<(Revision, KeyValue)>;

    /// Streams every event on keys starting with `prefix` with a revision
    /// greater than `after`, then live events as they happen.
    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream>;

    /// Forgets history older than `revision`; later reads and watches before it
    /// get `Compacted`.
    async fn compact(&self, revision: Revision) -> Result<()>;
}
