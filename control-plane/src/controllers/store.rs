//! The informers' caches of objects: kube-runtime's reflector `Store`, read
//! the same way, but filled with the objects the watch decoded rather than
//! copies of them. kube-runtime's writer clones every object it stores and
//! the watch's own copy is then dropped; with pods bound by the thousand a
//! second, that copy and its drop were a visible share of the server's CPU
//! (docs/benchmarks.md).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use kube::Resource;
use kube::runtime::reflector::ObjectRef;
use tokio::sync::watch;

type Objects<K> = HashMap<ObjectRef<K>, Arc<K>>;

/// The reading side of an informer's cache.
pub struct Store<K: Resource<DynamicType = ()> + 'static> {
    objects: Arc<RwLock<Objects<K>>>,
    ready: watch::Receiver<bool>,
}

impl<K: Resource<DynamicType = ()> + 'static> Clone for Store<K> {
    fn clone(&self) -> Self {
        Self {
            objects: Arc::clone(&self.objects),
            ready: self.ready.clone(),
        }
    }
}

impl<K: Resource<DynamicType = ()> + 'static> Store<K> {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Objects<K>> {
        self.objects.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until the cache holds the watch's first list. Any number of
    /// tasks may wait at once.
    pub async fn wait_until_ready(&self) {
        let mut ready = self.ready.clone();
        // An error means the writer is gone: nothing more will come.
        let _ = ready.wait_for(|r| *r).await;
    }

    /// The object `key` names.
    pub fn get(&self, key: &ObjectRef<K>) -> Option<Arc<K>> {
        self.read().get(key).cloned()
    }

    /// Every object.
    pub fn state(&self) -> Vec<Arc<K>> {
        self.read().values().cloned().collect()
    }

    /// The objects `keep` holds for.
    pub fn state_filter(&self, mut keep: impl FnMut(&K) -> bool) -> Vec<Arc<K>> {
        self.read().values().filter(|o| keep(o)).cloned().collect()
    }

    /// Some object `matches` holds for.
    pub fn find(&self, mut matches: impl FnMut(&K) -> bool) -> Option<Arc<K>> {
        self.read().values().find(|o| matches(o)).cloned()
    }

    pub fn len(&self) -> usize {
        self.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.read().is_empty()
    }
}

/// The writing side: a watch's events applied in order.
pub struct Writer<K: Resource<DynamicType = ()> + 'static> {
    objects: Arc<RwLock<Objects<K>>>,
    /// A relist's objects, swapped in whole when it ends.
    relisted: Objects<K>,
    ready: watch::Sender<bool>,
}

/// A cache, empty and not ready.
pub fn store<K: Resource<DynamicType = ()> + 'static>() -> (Store<K>, Writer<K>) {
    let objects = Arc::new(RwLock::new(HashMap::new()));
    let (ready, ready_rx) = watch::channel(false);
    (
        Store {
            objects: Arc::clone(&objects),
            ready: ready_rx,
        },
        Writer {
            objects,
            relisted: HashMap::new(),
            ready,
        },
    )
}

impl<K: Resource<DynamicType = ()> + 'static> Writer<K> {
    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Objects<K>> {
        self.objects.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Stores an added or modified object.
    pub fn applied(&mut self, object: &Arc<K>) {
        let old = self
            .write()
            .insert(ObjectRef::from_obj(&**object), Arc::clone(object));
        // Freed after the lock is released, not while readers wait on it.
        drop(old);
    }

    /// Forgets a deleted object.
    pub fn deleted(&mut self, object: &K) {
        let old = self.write().remove(&ObjectRef::from_obj(object));
        drop(old);
    }

    /// A relist begins.
    pub fn relist_started(&mut self) {
        self.relisted = HashMap::new();
    }

    /// An object of the relist under way.
    pub fn relisted(&mut self, object: &Arc<K>) {
        self.relisted
            .insert(ObjectRef::from_obj(&**object), Arc::clone(object));
    }

    /// The relist ended: its objects replace the cache's, which is ready.
    pub fn relist_done(&mut self) {
        let listed = std::mem::take(&mut self.relisted);
        let old = std::mem::replace(&mut *self.write(), listed);
        // As in `applied`: the old objects are freed outside the lock.
        drop(old);
        self.ready.send_replace(true);
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::ObjectMeta;

    use super::*;

    fn pod(name: &str, node: &str) -> Arc<Pod> {
        Arc::new(Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                ..ObjectMeta::default()
            },
            spec: Some(k8s_openapi::api::core::v1::PodSpec {
                node_name: Some(node.into()),
                ..Default::default()
            }),
            ..Pod::default()
        })
    }

    fn key(name: &str) -> ObjectRef<Pod> {
        ObjectRef::new(name).within("default")
    }

    #[tokio::test]
    async fn a_relist_replaces_the_objects_and_wakes_every_waiter() {
        let (store, mut writer) = store::<Pod>();
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let s = store.clone();
                tokio::spawn(async move { s.wait_until_ready().await })
            })
            .collect();
        writer.relist_started();
        writer.relisted(&pod("a", "n1"));
        assert!(store.is_empty(), "a relist shows only when it is done");
        writer.relist_done();
        for w in waiters {
            tokio::time::timeout(std::time::Duration::from_secs(5), w)
                .await
                .expect("every waiter wakes")
                .unwrap();
        }
        writer.applied(&pod("b", "n2"));
        writer.applied(&pod("a", "n3"));
        assert_eq!(store.len(), 2);
        let a = store.get(&key("a")).unwrap();
        assert_eq!(a.spec.as_ref().unwrap().node_name.as_deref(), Some("n3"));
        writer.deleted(&pod("b", "n2"));
        assert!(store.get(&key("b")).is_none());
        writer.relist_started();
        writer.relisted(&pod("c", "n1"));
        writer.relist_done();
        let names: Vec<_> = store
            .state()
            .iter()
            .map(|p| p.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(names, ["c"]);
        assert!(
            store
                .find(|p| p.metadata.name.as_deref() == Some("c"))
                .is_some()
        );
        assert_eq!(store.state_filter(|p| p.metadata.name.is_none()).len(), 0);
    }
}
