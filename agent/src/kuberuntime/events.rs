//! Pod events as kubelet's event recorder writes them: core/v1 Events with
//! the pod as involved object (`spec.containers{name}` field paths), source
//! component `kubelet` and the node as host. Repeats of one event are
//! aggregated into its `count` as client-go's event correlator does (a
//! failing probe every second makes one Event, not thousands). Best effort:
//! a failed write is only logged.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};

/// `Normal` or `Warning`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Normal,
    Warning,
}

/// Writes events for pods of this node.
#[derive(Clone)]
pub struct EventRecorder {
    client: Client,
    node_name: String,
    seen: Arc<Mutex<EventCache>>,
}

/// How many distinct events are remembered for aggregation (client-go's
/// `maxLruCacheEntries`).
const MAX_CACHED_EVENTS: usize = 4096;

/// Events written before, by their aggregation key.
#[derive(Default)]
pub struct EventCache {
    entries: HashMap<String, (String, i32)>,
}

/// What to do with an event: create it, or bump the count of the stored one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    Create,
    Bump { name: String, count: i32 },
}

impl EventCache {
    /// The key of client-go's `getEventKey`: source, object, type, reason
    /// and message.
    pub fn key(ev: &Event) -> String {
        let o = &ev.involved_object;
        [
            ev.source.as_ref().and_then(|s| s.component.clone()),
            ev.source.as_ref().and_then(|s| s.host.clone()),
            o.namespace.clone(),
            o.name.clone(),
            o.uid.clone(),
            o.field_path.clone(),
            ev.type_.clone(),
            ev.reason.clone(),
            ev.message.clone(),
        ]
        .map(Option::unwrap_or_default)
        .join("\u{0}")
    }

    /// Decides how `ev` is written and remembers it.
    pub fn observe(&mut self, ev: &Event) -> Write {
        let key = Self::key(ev);
        if let Some((name, count)) = self.entries.get_mut(&key) {
            *count = count.saturating_add(1);
            return Write::Bump {
                name: name.clone(),
                count: *count,
            };
        }
        if self.entries.len() >= MAX_CACHED_EVENTS {
            self.entries.clear();
        }
        let name = ev.metadata.name.clone().unwrap_or_default();
        self.entries.insert(key, (name, 1));
        Write::Create
    }

    /// Forgets an event that is gone from the API (it is created anew).
    pub fn forget(&mut self, ev: &Event) {
        self.entries.remove(&Self::key(ev));
    }
}

/// The field path of a container in its pod (`spec.containers{name}` or
/// `spec.initContainers{name}`).
pub fn field_path(pod: &Pod, container: &str) -> String {
    let init = pod
        .spec
        .as_ref()
        .and_then(|s| s.init_containers.as_ref())
        .is_some_and(|ics| ics.iter().any(|c| c.name == container));
    if init {
        format!("spec.initContainers{{{container}}}")
    } else {
        format!("spec.containers{{{container}}}")
    }
}

/// The Event object kubelet would write about `pod`.
pub fn build_event(
    pod: &Pod,
    field_path: Option<String>,
    kind: EventType,
    reason: &str,
    message: &str,
    node_name: &str,
    now: Timestamp,
) -> Event {
    let m = &pod.metadata;
    let object = ObjectReference {
        api_version: Some("v1".to_owned()),
        kind: Some("Pod".to_owned()),
        name: m.name.clone(),
        namespace: m.namespace.clone(),
        uid: m.uid.clone(),
        resource_version: m.resource_version.clone(),
        field_path,
    };
    let namespace = m.namespace.clone().unwrap_or_default();
    event_about(object, &namespace, kind, reason, message, node_name, now)
}

/// The Event object kubelet writes about `object`, in `namespace`, named
/// `<object name>.<time in hex nanoseconds>` as client-go names them.
pub fn event_about(
    object: ObjectReference,
    namespace: &str,
    kind: EventType,
    reason: &str,
    message: &str,
    node_name: &str,
    now: Timestamp,
) -> Event {
    let time = Time(Timestamp::from_second(now.as_second()).unwrap_or(now));
    let name = format!(
        "{}.{:x}",
        object.name.as_deref().unwrap_or_default(),
        now.as_nanosecond()
    );
    let mut ev = Event {
        involved_object: object,
        reason: Some(reason.to_owned()),
        message: Some(message.to_owned()),
        source: Some(EventSource {
            component: Some("kubelet".to_owned()),
            host: Some(node_name.to_owned()),
        }),
        first_timestamp: Some(time.clone()),
        last_timestamp: Some(time),
        event_time: None::<MicroTime>,
        count: Some(1),
        type_: Some(
            match kind {
                EventType::Normal => "Normal",
                EventType::Warning => "Warning",
            }
            .to_owned(),
        ),
        reporting_component: Some("kubelet".to_owned()),
        reporting_instance: Some(node_name.to_owned()),
        ..Event::default()
    };
    ev.metadata.name = Some(name);
    ev.metadata.namespace = Some(namespace.to_owned());
    ev
}

impl EventRecorder {
    pub fn new(client: Client, node_name: impl Into<String>) -> Self {
        Self {
            client,
            node_name: node_name.into(),
            seen: Arc::default(),
        }
    }

    /// Records an event about `pod` (and one of its containers) in the
    /// background.
    pub fn record(
        &self,
        pod: &Pod,
        container: Option<&str>,
        kind: EventType,
        reason: &str,
        message: &str,
    ) {
        let ev = build_event(
            pod,
            container.map(|c| field_path(pod, c)),
            kind,
            reason,
            message,
            &self.node_name,
            Timestamp::now(),
        );
        self.write(ev);
    }

    /// The node this recorder writes for (the events' source host).
    pub fn node_name(&self) -> &str {
        &self.node_name
    }

    /// Writes `ev` in the background: created, or, when the same event was
    /// written before, its count bumped.
    pub fn write(&self, ev: Event) {
        let ns = ev.metadata.namespace.clone().unwrap_or_default();
        let api: Api<Event> = Api::namespaced(self.client.clone(), &ns);
        let seen = self.seen.clone();
        let write = seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .observe(&ev);
        tokio::spawn(async move {
            if let Write::Bump { name, count } = write {
                let patch = serde_json::json!({
                    "count": count,
                    "lastTimestamp": ev.last_timestamp,
                });
                match api
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                {
                    Ok(_) => return,
                    Err(kube::Error::Api(s)) if s.is_not_found() => {
                        // Expired or deleted: start over with a new event.
                        let mut seen = seen.lock().unwrap_or_else(PoisonError::into_inner);
                        seen.forget(&ev);
                        seen.observe(&ev);
                    }
                    Err(err) => {
                        tracing::debug!(error = %err, reason = ?ev.reason, "failed to update event");
                        return;
                    }
                }
            }
            if let Err(err) = api.create(&PostParams::default(), &ev).await {
                tracing::debug!(error = %err, reason = ?ev.reason, "failed to record event");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{Container, PodSpec};

    use super::*;

    #[test]
    fn events_point_at_the_container() {
        let mut p = Pod::default();
        p.metadata.name = Some("web".to_owned());
        p.metadata.namespace = Some("default".to_owned());
        p.spec = Some(PodSpec {
            init_containers: Some(vec![Container {
                name: "init".to_owned(),
                ..Container::default()
            }]),
            ..PodSpec::default()
        });
        assert_eq!(field_path(&p, "init"), "spec.initContainers{init}");
        assert_eq!(field_path(&p, "app"), "spec.containers{app}");
        let ev = build_event(
            &p,
            Some(field_path(&p, "app")),
            EventType::Warning,
            "BackOff",
            "Back-off restarting failed container",
            "node-1",
            Timestamp::now(),
        );
        assert_eq!(ev.type_.as_deref(), Some("Warning"));
        assert_eq!(ev.source.unwrap().component.as_deref(), Some("kubelet"));
        assert!(ev.metadata.name.unwrap().starts_with("web."));
    }

    #[test]
    fn repeated_events_bump_the_count_of_the_first() {
        let mut p = Pod::default();
        p.metadata.name = Some("web".to_owned());
        p.metadata.namespace = Some("default".to_owned());
        let ev = |msg: &str, t: i64| {
            build_event(
                &p,
                Some("spec.containers{app}".to_owned()),
                EventType::Warning,
                "Unhealthy",
                msg,
                "node-1",
                Timestamp::from_second(t).unwrap(),
            )
        };
        let mut cache = EventCache::default();
        let first = ev("Readiness probe failed: no", 1);
        assert_eq!(cache.observe(&first), Write::Create);
        let name = first.metadata.name.clone().unwrap();
        assert_eq!(
            cache.observe(&ev("Readiness probe failed: no", 2)),
            Write::Bump { name, count: 2 }
        );
        assert_eq!(
            cache.observe(&ev("Liveness probe failed: no", 3)),
            Write::Create
        );
        cache.forget(&first);
        assert_eq!(
            cache.observe(&ev("Readiness probe failed: no", 4)),
            Write::Create
        );
    }
}
