//! The controller's Events. kube-rs's `Recorder` folds events that differ
//! only in their message into one series (its key has no message), where
//! client-go's correlator keys by message too: `New size: 2` and
//! `New size: 4` are two Events upstream. One recorder per reason and
//! message keeps them apart and still counts repeats of the same one.

use std::collections::HashMap;
use std::sync::Mutex;

use kube::Resource;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};

/// Distinct messages remembered before the recorders are dropped (their
/// series then start again, as upstream's LRU cache would).
const MAX_RECORDERS: usize = 256;

const CONTROLLER: &str = "horizontal-pod-autoscaler";

pub struct Events {
    client: kube::Client,
    recorders: Mutex<HashMap<(String, String), Recorder>>,
}

impl Events {
    pub fn new(client: kube::Client) -> Self {
        Self {
            client,
            recorders: Mutex::default(),
        }
    }

    pub fn normal<K: Resource<DynamicType = ()>>(&self, obj: &K, reason: &str, note: String) {
        self.publish(obj, EventType::Normal, reason, note);
    }

    pub fn warning<K: Resource<DynamicType = ()>>(&self, obj: &K, reason: &str, note: String) {
        self.publish(obj, EventType::Warning, reason, note);
    }

    fn recorder(&self, reason: &str, note: &str) -> Recorder {
        let fresh = || {
            Recorder::new(
                self.client.clone(),
                Reporter {
                    controller: CONTROLLER.to_string(),
                    instance: None,
                },
            )
        };
        let Ok(mut map) = self.recorders.lock() else {
            return fresh();
        };
        if map.len() >= MAX_RECORDERS {
            map.clear();
        }
        map.entry((reason.to_string(), note.to_string()))
            .or_insert_with(fresh)
            .clone()
    }

    fn publish<K: Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        type_: EventType,
        reason: &str,
        note: String,
    ) {
        let recorder = self.recorder(reason, &note);
        let reference = obj.object_ref(&());
        let event = Event {
            type_,
            reason: reason.to_string(),
            note: Some(note),
            action: reason.to_string(),
            secondary: None,
        };
        tokio::spawn(async move {
            if let Err(err) = recorder.publish(&event, &reference).await {
                tracing::debug!(%err, "failed to record an event");
            }
        });
    }
}
