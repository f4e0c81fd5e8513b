//! Change tracking between syncs: the watch events say which Services must have their model
//! rebuilt (kube-proxy's `ServiceChangeTracker` and `EndpointsChangeTracker`), so that a sync
//! costs what changed rather than the number of Services.
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::watcher::Event;

use crate::model::{ServiceKey, service_key, slice_service};

/// What the next sync must recompute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pending {
    /// Every Service: at start, after a watch relisted, or when something global changed.
    All,
    /// These Services, each with the names of its EndpointSlices (in the Service's namespace).
    Services(BTreeMap<ServiceKey, Vec<String>>),
}

impl Pending {
    /// True when nothing changed.
    pub fn is_empty(&self) -> bool {
        matches!(self, Pending::Services(s) if s.is_empty())
    }
}

#[derive(Debug, Default)]
struct State {
    all: bool,
    changed: BTreeSet<ServiceKey>,
    /// EndpointSlice `namespace/name` -> the Service it belongs to.
    owner: HashMap<String, ServiceKey>,
    /// Service -> names of its EndpointSlices.
    slices: HashMap<ServiceKey, BTreeSet<String>>,
}

impl State {
    fn unlink(&mut self, slice: &str) {
        if let Some(svc) = self.owner.remove(slice) {
            if let Some(names) = self.slices.get_mut(&svc) {
                names.remove(slice_name(slice));
                if names.is_empty() {
                    self.slices.remove(&svc);
                }
            }
            self.changed.insert(svc);
        }
    }

    fn link(&mut self, slice: String, svc: ServiceKey) {
        self.slices
            .entry(svc.clone())
            .or_default()
            .insert(slice_name(&slice).to_string());
        self.owner.insert(slice, svc.clone());
        self.changed.insert(svc);
    }

    fn reindex(&mut self, slices: &[Arc<EndpointSlice>]) {
        self.owner.clear();
        self.slices.clear();
        for s in slices {
            if let Some(svc) = slice_service(s) {
                self.link(slice_ref(s), svc);
            }
        }
    }
}

/// `namespace/name` of an EndpointSlice.
fn slice_ref(slice: &EndpointSlice) -> String {
    service_key(
        slice.metadata.namespace.as_deref().unwrap_or_default(),
        slice.metadata.name.as_deref().unwrap_or_default(),
    )
}

fn slice_name(slice_ref: &str) -> &str {
    slice_ref.split_once('/').map_or(slice_ref, |(_, n)| n)
}

/// Records, from the Service and EndpointSlice watch events, which Services changed since the
/// last sync. Shared between the watch tasks and the sync loop.
#[derive(Debug)]
pub struct ChangeTracker {
    state: Mutex<State>,
}

impl Default for ChangeTracker {
    fn default() -> Self {
        Self::new()
    }
}

impl ChangeTracker {
    /// A tracker whose first sync recomputes everything.
    pub fn new() -> Self {
        Self {
            state: Mutex::new(State {
                all: true,
                ..State::default()
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain maps behind; they stay usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a Service event (after the reflector applied it to its store).
    pub fn service_event(&self, event: &Event<Service>) {
        match event {
            Event::Apply(svc) | Event::Delete(svc) => {
                let key = service_key(
                    svc.metadata.namespace.as_deref().unwrap_or_default(),
                    svc.metadata.name.as_deref().unwrap_or_default(),
                );
                self.lock().changed.insert(key);
            }
            // The store is replaced at InitDone: objects may have gone meanwhile.
            Event::InitDone => self.lock().all = true,
            Event::Init | Event::InitApply(_) => {}
        }
    }

    /// Records an EndpointSlice event: the Service it belongs to (by its
    /// `kubernetes.io/service-name` label, and the one it belonged to before) changed.
    pub fn slice_event(&self, event: &Event<EndpointSlice>) {
        match event {
            Event::Apply(slice) => {
                let r = slice_ref(slice);
                let mut state = self.lock();
                let owner = slice_service(slice);
                if state.owner.get(&r) != owner.as_ref() {
                    state.unlink(&r);
                }
                if let Some(svc) = owner {
                    state.link(r, svc);
                }
            }
            Event::Delete(slice) => {
                let r = slice_ref(slice);
                let mut state = self.lock();
                state.unlink(&r);
                if let Some(svc) = slice_service(slice) {
                    state.changed.insert(svc);
                }
            }
            Event::InitDone => self.lock().all = true,
            Event::Init | Event::InitApply(_) => {}
        }
    }

    /// Makes the next sync recompute every Service (something global changed, or the last
    /// sync failed and its changes must not be lost).
    pub fn resync_all(&self) {
        self.lock().all = true;
    }

    /// Takes what changed since the last call. When everything must be recomputed, the slice
    /// index is rebuilt from `all_slices` (the current EndpointSlices), read under the tracker's
    /// lock so that an event applied to the store meanwhile is indexed again after it.
    pub fn take(&self, all_slices: impl FnOnce() -> Vec<Arc<EndpointSlice>>) -> Pending {
        let mut state = self.lock();
        if std::mem::take(&mut state.all) {
            state.reindex(&all_slices());
            state.changed.clear();
            return Pending::All;
        }
        let changed = std::mem::take(&mut state.changed);
        Pending::Services(
            changed
                .into_iter()
                .map(|svc| {
                    let names = state
                        .slices
                        .get(&svc)
                        .map(|n| n.iter().cloned().collect())
                        .unwrap_or_default();
                    (svc, names)
                })
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::tests::{service, slice};

    fn services(p: Pending) -> BTreeMap<ServiceKey, Vec<String>> {
        match p {
            Pending::Services(s) => s,
            Pending::All => panic!("expected a partial change"),
        }
    }

    fn started() -> ChangeTracker {
        let t = ChangeTracker::new();
        let web = Arc::new(slice("default", "web", ("", 80), &[]));
        assert_eq!(t.take(|| vec![web]), Pending::All);
        t
    }

    #[test]
    fn first_take_is_everything_then_nothing() {
        let t = started();
        assert!(t.take(Vec::new).is_empty());
    }

    #[test]
    fn a_service_change_rebuilds_only_that_service() {
        let t = started();
        let svc = service("default", "db", "10.43.0.20", &[("", 5432)]);
        t.service_event(&Event::Apply(svc));
        let got = services(t.take(Vec::new));
        assert_eq!(got.keys().collect::<Vec<_>>(), ["default/db"]);
        assert!(got["default/db"].is_empty(), "db has no slices");
    }

    #[test]
    fn a_slice_change_maps_to_its_service_by_label() {
        let t = started();
        let sl = slice("default", "web", ("", 80), &[("10.42.0.5", "n1", true)]);
        t.slice_event(&Event::Apply(sl));
        let got = services(t.take(Vec::new));
        assert_eq!(got.len(), 1);
        assert_eq!(got["default/web"], ["web-abc"]);
        // A change to the Service alone still finds its slices through the index.
        let svc = service("default", "web", "10.43.0.10", &[("", 80)]);
        t.service_event(&Event::Apply(svc));
        assert_eq!(services(t.take(Vec::new))["default/web"], ["web-abc"]);
    }

    #[test]
    fn deletes_mark_the_service_and_drop_the_slice() {
        let t = started();
        let sl = slice("default", "web", ("", 80), &[]);
        t.slice_event(&Event::Delete(sl));
        let got = services(t.take(Vec::new));
        assert!(got["default/web"].is_empty(), "{got:?}");
        let svc = service("default", "web", "10.43.0.10", &[("", 80)]);
        t.service_event(&Event::Delete(svc));
        assert!(services(t.take(Vec::new)).contains_key("default/web"));
    }

    #[test]
    fn a_slice_moving_to_another_service_marks_both() {
        let t = started();
        let mut sl = slice("default", "web", ("", 80), &[]);
        sl.metadata.labels = Some(
            [(
                crate::model::SERVICE_NAME_LABEL.to_string(),
                "api".to_string(),
            )]
            .into(),
        );
        t.slice_event(&Event::Apply(sl));
        let got = services(t.take(Vec::new));
        assert_eq!(
            got.keys().collect::<Vec<_>>(),
            ["default/api", "default/web"]
        );
        assert_eq!(got["default/api"], ["web-abc"]);
        assert!(got["default/web"].is_empty());
    }

    #[test]
    fn a_relist_or_global_change_recomputes_everything() {
        let t = started();
        t.slice_event(&Event::InitDone);
        assert_eq!(t.take(Vec::new), Pending::All);
        // The index was rebuilt from the (now empty) store.
        let svc = service("default", "web", "10.43.0.10", &[("", 80)]);
        t.service_event(&Event::Apply(svc));
        assert!(services(t.take(Vec::new))["default/web"].is_empty());
        t.resync_all();
        assert_eq!(t.take(Vec::new), Pending::All);
    }
}
