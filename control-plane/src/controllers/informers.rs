//! Shared informers, as kube-controller-manager's `SharedInformerFactory`:
//! the controllers of one leadership term share one watch and one store per
//! resource and selector, each adding its own change handler. With a store
//! per controller, every pod was decoded and held once per controller that
//! watches pods (six of them).
//!
//! Controllers register while they are spawned; `start` then opens the
//! watches. A registration after `start` gets a watch of its own.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};

use kube::Resource;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

use super::lean;
use super::store::{self, Store};

/// What the informers' objects must be.
pub trait Object:
    Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static
{
}

impl<K> Object for K where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static
{
}

/// What a watch event did to an object.
pub enum Change<'a, K> {
    /// In the watch's initial list, or listed again by a relist.
    Listed(&'a K),
    /// Added or modified.
    Applied(&'a K),
    /// Deleted: its last state.
    Deleted(&'a K),
}

impl<K> Clone for Change<'_, K> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<K> Copy for Change<'_, K> {}

impl<'a, K> Change<'a, K> {
    /// The object, whatever happened to it.
    pub fn object(self) -> &'a K {
        match self {
            Change::Listed(o) | Change::Applied(o) | Change::Deleted(o) => o,
        }
    }
}

type Handler<K> = Box<dyn FnMut(Change<'_, K>) + Send>;

/// One watch: the resource type, its URL (namespace included) and selectors.
type WatchKey = (TypeId, String, Option<String>, Option<String>);

/// The informers of one leadership term.
pub struct SharedInformers {
    shutdown: CancellationToken,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    pending: HashMap<WatchKey, Box<dyn PendingWatch>>,
    started: bool,
}

impl SharedInformers {
    /// Informers whose watches stop when `shutdown` is cancelled.
    pub fn new(shutdown: CancellationToken) -> Self {
        Self {
            shutdown,
            state: Mutex::default(),
        }
    }

    /// The store of `api`'s objects (matching `config`'s selectors), and
    /// `on_change` called with every added, modified or deleted object (and
    /// every object of a relist) after the store has it.
    pub fn informer<K: Object>(
        &self,
        api: Api<K>,
        config: watcher::Config,
        mut on_change: impl FnMut(&K) + Send + 'static,
    ) -> Store<K> {
        let handler = Box::new(move |c: Change<'_, K>| on_change(c.object()));
        self.register(api, config, handler, true)
            .expect("a store was asked for")
    }

    /// Like [`SharedInformers::informer`], telling lists, changes and
    /// deletions apart.
    pub fn informer_changes<K: Object>(
        &self,
        api: Api<K>,
        config: watcher::Config,
        on_change: impl FnMut(Change<'_, K>) + Send + 'static,
    ) -> Store<K> {
        self.register(api, config, Box::new(on_change), true)
            .expect("a store was asked for")
    }

    /// `on_change` called with every changed object, for watches that only
    /// trigger work on other objects (no store is kept for them unless
    /// another controller asks for one).
    pub fn watch<K: Object>(
        &self,
        api: Api<K>,
        config: watcher::Config,
        mut on_change: impl FnMut(&K) + Send + 'static,
    ) {
        let handler = Box::new(move |c: Change<'_, K>| on_change(c.object()));
        self.register(api, config, handler, false);
    }

    /// Like [`SharedInformers::watch`], telling deletions apart.
    pub fn watch_changes<K: Object>(
        &self,
        api: Api<K>,
        config: watcher::Config,
        on_change: impl FnMut(Change<'_, K>) + Send + 'static,
    ) {
        self.register(api, config, Box::new(on_change), false);
    }

    /// Opens every registered watch.
    pub fn start(&self) {
        let pending = {
            let mut state = self.state.lock().unwrap();
            state.started = true;
            std::mem::take(&mut state.pending)
        };
        for watch in pending.into_values() {
            watch.start(self.shutdown.clone());
        }
    }

    fn register<K: Object>(
        &self,
        api: Api<K>,
        config: watcher::Config,
        handler: Handler<K>,
        keep_store: bool,
    ) -> Option<Store<K>> {
        let mut state = self.state.lock().unwrap();
        if state.started {
            tracing::debug!(kind = %K::kind(&()), "informer registered after start: watching on its own");
            let mut watch = Pending::new(api, config);
            watch.add(handler, keep_store);
            let store = watch.reader();
            Box::new(watch).start(self.shutdown.clone());
            return store;
        }
        let key = (
            TypeId::of::<K>(),
            api.resource_url().to_string(),
            config.label_selector.clone(),
            config.field_selector.clone(),
        );
        let watch = state
            .pending
            .entry(key)
            .or_insert_with(|| Box::new(Pending::new(api, config)));
        let watch = watch
            .as_any()
            .downcast_mut::<Pending<K>>()
            .expect("keyed by type");
        watch.add(handler, keep_store);
        watch.reader()
    }
}

/// A watch with its handlers, before it starts.
struct Pending<K: Object> {
    api: Api<K>,
    config: watcher::Config,
    store: Option<(Store<K>, store::Writer<K>)>,
    handlers: Vec<Handler<K>>,
}

impl<K: Object> Pending<K> {
    fn new(api: Api<K>, config: watcher::Config) -> Self {
        Self {
            api,
            config,
            store: None,
            handlers: Vec::new(),
        }
    }

    fn add(&mut self, handler: Handler<K>, keep_store: bool) {
        if keep_store && self.store.is_none() {
            self.store = Some(store::store());
        }
        self.handlers.push(handler);
    }

    /// The store's reading side, when one is kept.
    fn reader(&self) -> Option<Store<K>> {
        self.store.as_ref().map(|(reader, _)| reader.clone())
    }
}

/// A `Pending` of any type.
trait PendingWatch: Send {
    fn as_any(&mut self) -> &mut dyn Any;
    fn start(self: Box<Self>, shutdown: CancellationToken);
}

impl<K: Object> PendingWatch for Pending<K> {
    fn as_any(&mut self) -> &mut dyn Any {
        self
    }

    fn start(self: Box<Self>, shutdown: CancellationToken) {
        let Pending {
            api,
            config,
            store,
            mut handlers,
        } = *self;
        let mut writer = store.map(|(_, writer)| writer);
        // The store (when kept) has each object before the handlers see it,
        // as with kube-runtime's `reflect`.
        let on_event = move |event: watcher::Event<K>| match event {
            watcher::Event::Init => {
                if let Some(w) = &mut writer {
                    w.relist_started();
                }
            }
            watcher::Event::InitApply(o) => {
                let o = Arc::new(o);
                if let Some(w) = &mut writer {
                    w.relisted(&o);
                }
                handlers.iter_mut().for_each(|h| h(Change::Listed(&o)));
            }
            watcher::Event::InitDone => {
                if let Some(w) = &mut writer {
                    w.relist_done();
                }
            }
            watcher::Event::Apply(o) => {
                let o = Arc::new(o);
                if let Some(w) = &mut writer {
                    w.applied(&o);
                }
                handlers.iter_mut().for_each(|h| h(Change::Applied(&o)));
            }
            watcher::Event::Delete(o) => {
                if let Some(w) = &mut writer {
                    w.deleted(&o);
                }
                handlers.iter_mut().for_each(|h| h(Change::Deleted(&o)));
            }
        };
        // Without managedFields, as client-go's informers with
        // kube-controller-manager's transform: the controllers never read
        // them, and keeping them would roughly double what the stores hold.
        let stream = lean::watcher(api, &(), config).default_backoff();
        follow(K::kind(&()).into_owned(), stream, shutdown, on_event);
    }
}

/// Calls `on_item` with every item of a watch stream of `kind` until
/// `shutdown`, in a task of its own.
pub(super) fn follow<K: Send + 'static>(
    kind: String,
    stream: impl futures::Stream<Item = Result<K, watcher::Error>> + Send + 'static,
    shutdown: CancellationToken,
    mut on_item: impl FnMut(K) + Send + 'static,
) {
    tokio::spawn(async move {
        use futures::StreamExt;
        let mut stream = std::pin::pin!(stream);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                item = stream.next() => match item {
                    Some(Ok(item)) => on_item(item),
                    Some(Err(err)) => tracing::debug!(%kind, %err, "watch error; retrying"),
                    None => break,
                },
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{Node, Pod};

    use super::*;

    fn client() -> kube::Client {
        let config = kube::Config::new("https://127.0.0.1:1".parse().unwrap());
        kube::Client::try_from(config).unwrap()
    }

    #[tokio::test]
    async fn one_watch_per_resource_and_selector() {
        let informers = SharedInformers::new(CancellationToken::new());
        let pods = || Api::<Pod>::all(client());
        informers.informer(pods(), watcher::Config::default(), |_| {});
        informers.watch(pods(), watcher::Config::default(), |_| {});
        informers.informer(pods(), watcher::Config::default().labels("app=web"), |_| {});
        informers.watch(
            Api::<Pod>::namespaced(client(), "kube-system"),
            watcher::Config::default(),
            |_| {},
        );
        informers.watch(
            Api::<Node>::all(client()),
            watcher::Config::default(),
            |_| {},
        );
        let state = informers.state.lock().unwrap();
        assert_eq!(state.pending.len(), 4);
        assert!(
            state
                .pending
                .keys()
                .any(|k| k.0 == TypeId::of::<Pod>() && k.1 == "/api/v1/pods" && k.2.is_none())
        );
    }

    #[tokio::test]
    async fn a_store_is_kept_only_when_asked_for() {
        let informers = SharedInformers::new(CancellationToken::new());
        informers.watch(
            Api::<Node>::all(client()),
            watcher::Config::default(),
            |_| {},
        );
        assert_eq!(node_watch(&informers), (false, 1));
        informers.informer(
            Api::<Node>::all(client()),
            watcher::Config::default(),
            |_| {},
        );
        assert_eq!(node_watch(&informers), (true, 2));
    }

    /// Whether the (only) pending watch, of nodes, keeps a store, and how
    /// many handlers it has.
    fn node_watch(informers: &SharedInformers) -> (bool, usize) {
        let mut state = informers.state.lock().unwrap();
        let watch = state.pending.values_mut().next().unwrap();
        let nodes = watch.as_any().downcast_mut::<Pending<Node>>().unwrap();
        (nodes.store.is_some(), nodes.handlers.len())
    }
}
