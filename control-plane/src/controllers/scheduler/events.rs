//! core/v1 Events the scheduler and node controllers record (what
//! `kubectl describe` shows under Events), fire and forget.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use tokio::sync::Semaphore;

/// Who records the event (`source.component`, `reportingComponent`).
#[derive(Debug, Clone, Copy)]
pub struct Recorder {
    pub component: &'static str,
}

/// A reference to a pod for `involvedObject`.
pub fn pod_reference(pod: &Pod) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        namespace: pod.metadata.namespace.clone(),
        name: pod.metadata.name.clone(),
        uid: pod.metadata.uid.clone(),
        resource_version: pod.metadata.resource_version.clone(),
        ..ObjectReference::default()
    }
}

impl Recorder {
    /// Builds an event about `object` (`type_` is Normal or Warning).
    pub fn event(
        &self,
        object: ObjectReference,
        type_: &str,
        reason: &str,
        action: &str,
        message: String,
    ) -> Event {
        let now = Timestamp::now();
        let ns = object.namespace.clone().unwrap_or_else(|| "default".into());
        let name = format!(
            "{}.{:x}",
            object.name.as_deref().unwrap_or("object"),
            now.as_nanosecond()
        );
        Event {
            metadata: ObjectMeta {
                name: Some(name),
                namespace: Some(ns),
                ..ObjectMeta::default()
            },
            involved_object: object,
            reason: Some(reason.into()),
            message: Some(message),
            type_: Some(type_.into()),
            action: Some(action.into()),
            count: Some(1),
            first_timestamp: Some(Time(now)),
            last_timestamp: Some(Time(now)),
            reporting_component: Some(self.component.into()),
            reporting_instance: Some(self.component.into()),
            source: Some(EventSource {
                component: Some(self.component.into()),
                host: None,
            }),
            ..Event::default()
        }
    }

    /// Records an event; failures are only logged.
    pub async fn record(
        &self,
        client: &kube::Client,
        object: ObjectReference,
        type_: &str,
        reason: &str,
        action: &str,
        message: String,
    ) {
        write(client, &self.event(object, type_, reason, action, message)).await;
    }
}

/// Creates `event`; failures are only logged. The created object the
/// server answers with is not decoded: nothing reads it, and at thousands
/// of bindings a second its decoding was a visible share of the server's
/// CPU.
async fn write(client: &kube::Client, event: &Event) {
    let ns = event.metadata.namespace.as_deref().unwrap_or_default();
    let request = serde_json::to_vec(event)
        .map_err(kube::Error::SerdeError)
        .and_then(|body| {
            kube::core::Request::new(format!("/api/v1/namespaces/{ns}/events"))
                .create(&PostParams::default(), body)
                .map_err(kube::Error::BuildRequest)
        });
    let result = match request {
        Ok(request) => client.request_text(request).await.map(drop),
        Err(err) => Err(err),
    };
    if let Err(err) = result {
        tracing::debug!(%err, reason = event.reason.as_deref(), "failed to record an event");
    }
}

/// Events waiting to be written before new ones are dropped, as client-go's
/// broadcaster drops when its queue is full.
const SINK_CAPACITY: usize = 4096;
/// Event writes in flight at once. Each is a task of its own: an
/// in-process request runs in the task that awaits it, so writes polled
/// from one task would all share one core, fall behind the bindings and
/// fill the queue.
const SINK_PARALLELISM: usize = 64;

/// A bounded, asynchronous event writer so recording never slows the
/// component down.
#[derive(Clone)]
pub struct EventSink {
    recorder: Recorder,
    tx: tokio::sync::mpsc::Sender<Event>,
}

impl EventSink {
    /// Starts the writer task; it stops taking events with `token`.
    pub fn spawn(
        client: kube::Client,
        recorder: Recorder,
        token: tokio_util::sync::CancellationToken,
    ) -> Self {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Event>(SINK_CAPACITY);
        let permits = Arc::new(Semaphore::new(SINK_PARALLELISM));
        tokio::spawn(async move {
            loop {
                let event = tokio::select! {
                    () = token.cancelled() => return,
                    event = rx.recv() => match event {
                        Some(event) => event,
                        None => return,
                    },
                };
                let Ok(permit) = permits.clone().acquire_owned().await else {
                    return;
                };
                let client = client.clone();
                tokio::spawn(async move {
                    write(&client, &event).await;
                    drop(permit);
                });
            }
        });
        Self { recorder, tx }
    }

    /// Queues an event; dropped (with a debug log) when the queue is full.
    pub fn emit(
        &self,
        object: ObjectReference,
        type_: &str,
        reason: &str,
        action: &str,
        message: String,
    ) {
        let event = self.recorder.event(object, type_, reason, action, message);
        if self.tx.try_send(event).is_err() {
            tracing::debug!(reason, "event queue full; dropping an event");
        }
    }
}
