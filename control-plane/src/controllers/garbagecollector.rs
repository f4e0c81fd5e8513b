//! The garbage collector: watches every stored kind, and from the
//! ownerReferences between objects deletes dependents whose owners are gone
//! (background), deletes dependents before their owner (`foregroundDeletion`
//! finalizer) and strips references to an owner being orphaned (`orphan`
//! finalizer), like upstream pkg/controller/garbagecollector.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::ResourceExt;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, PropagationPolicy,
};
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;
use tokio::sync::Notify;

use super::ControllerContext;
use super::{informers, lean, util};
use crate::resources::ResourceType;

const FOREGROUND: &str = "foregroundDeletion";
const ORPHAN: &str = "orphan";
/// A full pass even without events, for owners verified absent late.
const RESYNC: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum GcError {
    #[error("failed to {action} {kind} {name}")]
    Api {
        action: &'static str,
        kind: String,
        name: String,
        #[source]
        source: kube::Error,
    },
}

/// What the collector keeps of an object: its metadata only, as
/// upstream's collector does with metadata informers (owner references,
/// finalizers and deletion state are all it reads).
type Meta = PartialObjectMeta<DynamicObject>;

struct Kind {
    r: &'static ResourceType,
    ar: ApiResource,
    store: Store<Meta>,
}

struct Gc {
    client: kube::Client,
    kinds: Vec<Kind>,
}

/// One object as the collector sees it.
struct Node {
    kind: usize,
    obj: Arc<Meta>,
}

/// Starts the collector.
pub fn spawn(ctx: &ControllerContext) {
    let changed = Arc::new(Notify::new());
    let mut kinds = Vec::new();
    for r in util::stored_kinds() {
        if r.plural == "events" {
            continue;
        }
        let ar = util::api_resource(r);
        let writer = reflector::store::Writer::<Meta>::new(ar.clone());
        let reader = writer.as_reader();
        // Metadata-only requests (PartialObjectMetadata), as upstream's collector.
        let api: Api<Meta> = Api::all_with(ctx.client.clone(), &ar);
        // Owner references, finalizers and deletion state are all it reads:
        // decoded without managedFields; annotations can hold kubectl's copy
        // of the object.
        let stream = lean::watcher(api, &ar, watcher::Config::default())
            .default_backoff()
            .modify(|o: &mut Meta| {
                let meta = &mut o.metadata;
                meta.annotations = None;
                meta.labels = None;
            })
            .reflect(writer);
        let notify = changed.clone();
        let mut relevance = Relevance::default();
        informers::follow(
            ar.kind.clone(),
            stream,
            ctx.shutdown.clone(),
            move |event: watcher::Event<Meta>| {
                if relevance.may_change_a_decision(&event) {
                    notify.notify_one();
                }
            },
        );
        kinds.push(Kind {
            r,
            ar,
            store: reader,
        });
    }
    let gc = Gc {
        client: ctx.client.clone(),
        kinds,
    };
    let shutdown = ctx.shutdown.clone();
    tokio::spawn(async move {
        for k in &gc.kinds {
            let _ = k.store.wait_until_ready().await;
        }
        loop {
            if let Err(err) = gc.sweep().await {
                tracing::debug!(%err, "garbage collection pass failed; retrying");
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = changed.notified() => {}
                _ = tokio::time::sleep(RESYNC) => {}
            }
            // Let a burst of events settle into one pass.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
}

/// Which watch events of one kind can change what a pass decides, so that
/// the pass (a walk over every object) does not run for updates that touch
/// no owner relation, such as a pod's binding or status.
#[derive(Default)]
struct Relevance {
    /// Objects last seen with owner references or being deleted.
    involved: HashSet<String>,
}

impl Relevance {
    fn may_change_a_decision(&mut self, event: &watcher::Event<Meta>) -> bool {
        match event {
            watcher::Event::Init => {
                self.involved.clear();
                false
            }
            // The pass after the list (InitDone) looks at everything.
            watcher::Event::InitApply(o) => {
                self.update(o);
                false
            }
            watcher::Event::InitDone => true,
            // A deleted owner leaves its dependents to collect.
            watcher::Event::Delete(o) => {
                if let Some(uid) = o.uid() {
                    self.involved.remove(&uid);
                }
                true
            }
            // An owner being deleted, a dependent's references, or a
            // dependent that just lost them (a foreground owner waits on it).
            watcher::Event::Apply(o) => self.update(o),
        }
    }

    /// Records whether `o` is involved now; true when it is or was.
    fn update(&mut self, o: &Meta) -> bool {
        let Some(uid) = o.uid() else {
            return false;
        };
        let involved = !o.owner_references().is_empty() || o.metadata.deletion_timestamp.is_some();
        if involved {
            self.involved.insert(uid);
            true
        } else {
            self.involved.remove(&uid)
        }
    }
}

impl Gc {
    fn api(&self, kind: usize, ns: Option<&str>) -> Api<DynamicObject> {
        let k = &self.kinds[kind];
        match ns.filter(|_| k.r.namespaced) {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, &k.ar),
            None => Api::all_with(self.client.clone(), &k.ar),
        }
    }

    fn kind_of(&self, r: &OwnerReference) -> Option<usize> {
        let (group, _version) = match r.api_version.split_once('/') {
            Some((g, v)) => (g, v),
            None => ("", r.api_version.as_str()),
        };
        self.kinds
            .iter()
            .position(|k| k.r.group == group && k.r.kind == r.kind)
    }

    fn err(
        &self,
        action: &'static str,
        node: &Node,
    ) -> impl FnOnce(kube::Error) -> GcError + use<> {
        let kind = self.kinds[node.kind].r.kind.to_string();
        let name = node.obj.name_any();
        move |source| GcError::Api {
            action,
            kind,
            name,
            source,
        }
    }

    async fn sweep(&self) -> Result<(), GcError> {
        let mut by_uid: HashMap<String, Node> = HashMap::new();
        let mut dependents: HashMap<String, Vec<String>> = HashMap::new();
        for (i, k) in self.kinds.iter().enumerate() {
            for obj in k.store.state() {
                let Some(uid) = obj.uid() else { continue };
                for r in obj.owner_references() {
                    dependents
                        .entry(r.uid.clone())
                        .or_default()
                        .push(uid.clone());
                }
                by_uid.insert(uid, Node { kind: i, obj });
            }
        }
        let mut first_err = None;
        // Owners waiting on the collector.
        for (uid, node) in &by_uid {
            if node.obj.metadata.deletion_timestamp.is_none() {
                continue;
            }
            let fins = node.obj.finalizers();
            let deps: Vec<&Node> = dependents
                .get(uid)
                .into_iter()
                .flatten()
                .filter_map(|d| by_uid.get(d))
                .collect();
            let res = if fins.iter().any(|f| f == ORPHAN) {
                self.orphan(node, uid, &deps).await
            } else if fins.iter().any(|f| f == FOREGROUND) {
                self.foreground(node, uid, &deps).await
            } else {
                Ok(())
            };
            if let Err(e) = res {
                first_err.get_or_insert(e);
            }
        }
        // Dependents whose owners are gone.
        let mut absent_cache: HashMap<String, bool> = HashMap::new();
        for node in by_uid.values() {
            let refs = node.obj.owner_references();
            if refs.is_empty() || node.obj.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let mut absent = Vec::new();
            for r in refs {
                if by_uid
                    .get(&r.uid)
                    .is_some_and(|o| o.obj.name_any() == r.name)
                {
                    continue;
                }
                let gone = match absent_cache.get(&r.uid) {
                    Some(g) => *g,
                    None => {
                        let g = self.owner_gone(r, node.obj.namespace().as_deref()).await;
                        absent_cache.insert(r.uid.clone(), g);
                        g
                    }
                };
                if gone {
                    absent.push(r.uid.clone());
                }
            }
            if absent.is_empty() {
                continue;
            }
            let res = if absent.len() == refs.len() {
                tracing::info!(kind = self.kinds[node.kind].r.kind, ns = ?node.obj.namespace(), name = %node.obj.name_any(), "deleting dependent of a deleted owner");
                self.delete(node, PropagationPolicy::Background).await
            } else {
                let gone: HashSet<String> = absent.into_iter().collect();
                self.remove_refs(node, &gone).await
            };
            if let Err(e) = res {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Whether the owner is really gone: a live read, since the watches of
    /// different kinds are not in step.
    async fn owner_gone(&self, r: &OwnerReference, ns: Option<&str>) -> bool {
        let Some(kind) = self.kind_of(r) else {
            return false;
        };
        match self.api(kind, ns).get_opt(&r.name).await {
            Ok(None) => true,
            Ok(Some(o)) => o.uid().as_deref() != Some(r.uid.as_str()),
            Err(_) => false,
        }
    }

    async fn delete(&self, node: &Node, policy: PropagationPolicy) -> Result<(), GcError> {
        let dp = DeleteParams {
            propagation_policy: Some(policy),
            preconditions: Some(kube::api::Preconditions {
                uid: node.obj.uid(),
                resource_version: None,
            }),
            ..Default::default()
        };
        match self
            .api(node.kind, node.obj.namespace().as_deref())
            .delete(&node.obj.name_any(), &dp)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if util::is_not_found(&e) || util::is_conflict(&e) => Ok(()),
            Err(e) => Err(self.err("delete", node)(e)),
        }
    }

    async fn patch_meta(
        &self,
        node: &Node,
        meta: serde_json::Value,
        action: &'static str,
    ) -> Result<(), GcError> {
        let mut meta = meta;
        meta["resourceVersion"] = json!(node.obj.resource_version());
        match self
            .api(node.kind, node.obj.namespace().as_deref())
            .patch(
                &node.obj.name_any(),
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": meta})),
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if util::is_not_found(&e) => Ok(()),
            Err(e) => Err(self.err(action, node)(e)),
        }
    }

    async fn remove_refs(&self, node: &Node, uids: &HashSet<String>) -> Result<(), GcError> {
        let left: Vec<&OwnerReference> = node
            .obj
            .owner_references()
            .iter()
            .filter(|r| !uids.contains(&r.uid))
            .collect();
        let refs = if left.is_empty() {
            serde_json::Value::Null
        } else {
            json!(left)
        };
        self.patch_meta(
            node,
            json!({"ownerReferences": refs}),
            "remove owner references of",
        )
        .await
    }

    async fn remove_finalizer(&self, node: &Node, finalizer: &str) -> Result<(), GcError> {
        let left: Vec<&String> = node
            .obj
            .finalizers()
            .iter()
            .filter(|f| *f != finalizer)
            .collect();
        let fins = if left.is_empty() {
            serde_json::Value::Null
        } else {
            json!(left)
        };
        self.patch_meta(node, json!({"finalizers": fins}), "remove the finalizer of")
            .await
    }

    /// Strips references to the owner, then lets it go.
    async fn orphan(&self, owner: &Node, uid: &str, deps: &[&Node]) -> Result<(), GcError> {
        let only: HashSet<String> = [uid.to_string()].into_iter().collect();
        for d in deps {
            self.remove_refs(d, &only).await?;
        }
        tracing::info!(kind = self.kinds[owner.kind].r.kind, name = %owner.obj.name_any(), orphaned = deps.len(), "orphaned dependents");
        self.remove_finalizer(owner, ORPHAN).await
    }

    /// Deletes the dependents (in the foreground too); the owner goes once
    /// no dependent blocks it.
    async fn foreground(&self, owner: &Node, uid: &str, deps: &[&Node]) -> Result<(), GcError> {
        let mut blocking = false;
        for d in deps {
            let blocks = d
                .obj
                .owner_references()
                .iter()
                .any(|r| r.uid == uid && r.block_owner_deletion == Some(true));
            blocking |= blocks;
            if d.obj.metadata.deletion_timestamp.is_none() {
                self.delete(d, PropagationPolicy::Foreground).await?;
            }
        }
        if blocking {
            return Ok(());
        }
        self.remove_finalizer(owner, FOREGROUND).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(uid: &str, owned: bool, deleting: bool) -> Meta {
        let mut m = json!({"name": uid, "uid": uid});
        if owned {
            m["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                "name": "rs", "uid": "owner"}]);
        }
        if deleting {
            m["deletionTimestamp"] = json!("2024-01-01T00:00:00Z");
        }
        serde_json::from_value(
            json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata", "metadata": m}),
        )
        .unwrap()
    }

    #[test]
    fn only_owner_relations_and_deletions_start_a_pass() {
        use watcher::Event::{Apply, Delete, Init, InitApply, InitDone};
        let mut r = Relevance::default();
        let mut seen = |e| r.may_change_a_decision(&e);
        assert!(!seen(Init));
        assert!(!seen(InitApply(meta("a", true, false))));
        assert!(seen(InitDone));
        // A binding or status update of an object nobody owns.
        assert!(!seen(Apply(meta("p", false, false))));
        assert!(seen(Apply(meta("p", false, true))));
        assert!(seen(Apply(meta("d", true, false))));
        // Its owner reference removed: a foreground owner may be waiting.
        assert!(seen(Apply(meta("d", false, false))));
        assert!(!seen(Apply(meta("d", false, false))));
        assert!(seen(Apply(meta("a", false, false))));
        assert!(seen(Delete(meta("q", false, false))));
    }
}
