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

/// Creates `event`; failures are only logged.
async fn write(client: &kube::Client, event: &Event) {
    match create_request(event) {
        Ok(request) => send(client, request).await,
        Err(err) => tracing::debug!(%err, "failed to encode an event"),
    }
}

/// The request creating `event`.
fn create_request(event: &Event) -> Result<http::Request<Vec<u8>>, kube::Error> {
    let ns = event.metadata.namespace.as_deref().unwrap_or_default();
    let body = serde_json::to_vec(event).map_err(kube::Error::SerdeError)?;
    kube::core::Request::new(format!("/api/v1/namespaces/{ns}/events"))
        .create(&PostParams::default(), body)
        .map_err(kube::Error::BuildRequest)
}

/// Sends an event's create request; failures are only logged. The created
/// object the server answers with is not decoded: nothing reads it, and at
/// thousands of bindings a second its decoding was a visible share of the
/// server's CPU.
async fn send(client: &kube::Client, request: http::Request<Vec<u8>>) {
    if let Err(err) = client.request_text(request).await {
        tracing::debug!(%err, "failed to record an event");
    }
}

/// Events waiting to be written before new ones are dropped, as client-go's
/// broadcaster drops when its queue is full. Large enough to hold the
/// Scheduled events of a burst of tens of thousands of bindings, which are
/// written behind them (`Foreground`).
const SINK_CAPACITY: usize = 32 * 1024;
/// Event writes in flight at once. Each is a task of its own: an
/// in-process request runs in the task that awaits it, so writes polled
/// from one task would all share one core, fall behind the bindings and
/// fill the queue.
const SINK_PARALLELISM: usize = 64;
/// Event writes in flight at once while foreground work is under way.
const SINK_PARALLELISM_BEHIND: usize = 4;

/// Work that event writes give way to: while any is under way, at most
/// `SINK_PARALLELISM_BEHIND` writes are in flight. The scheduler's
/// bindings are its foreground: an event costs the server about what a
/// binding does, and written at full speed half of a burst's CPU went to
/// recording bindings rather than making them. (kube-scheduler's event
/// broadcaster writes one event at a time, within its client's QPS, and
/// drops what its queue cannot hold.)
#[derive(Clone)]
pub struct Foreground(Arc<tokio::sync::watch::Sender<usize>>);

/// One piece of foreground work, under way until dropped.
pub struct Underway(Arc<tokio::sync::watch::Sender<usize>>);

impl Default for Foreground {
    fn default() -> Self {
        Self(Arc::new(tokio::sync::watch::Sender::new(0)))
    }
}

impl Foreground {
    /// Marks a piece of foreground work under way.
    pub fn start(&self) -> Underway {
        // Waiters only ever wait for idle: they are woken by nothing else.
        self.0.send_if_modified(|n| {
            *n += 1;
            false
        });
        Underway(Arc::clone(&self.0))
    }

    fn busy(&self) -> bool {
        *self.0.borrow() > 0
    }

    async fn idle(&self) {
        let _ = self.0.subscribe().wait_for(|n| *n == 0).await;
    }
}

impl Drop for Underway {
    fn drop(&mut self) {
        self.0.send_if_modified(|n| {
            *n -= 1;
            *n == 0
        });
    }
}

/// A bounded, asynchronous event writer so recording never slows the
/// component down.
#[derive(Clone)]
pub struct EventSink {
    recorder: Recorder,
    /// Encoded requests: a backlog of thousands held as events took
    /// tens of megabytes more.
    tx: tokio::sync::mpsc::Sender<http::Request<Vec<u8>>>,
}

impl EventSink {
    /// Starts the writer task, which gives way to `foreground`; it stops
    /// taking events with `token`.
    pub fn spawn(
        client: kube::Client,
        recorder: Recorder,
        foreground: Foreground,
        token: tokio_util::sync::CancellationToken,
    ) -> Self {
        let (tx, mut rx) = tokio::sync::mpsc::channel(SINK_CAPACITY);
        let permits = Arc::new(Semaphore::new(SINK_PARALLELISM));
        let behind = Arc::new(Semaphore::new(SINK_PARALLELISM_BEHIND));
        tokio::spawn(async move {
            loop {
                let request = tokio::select! {
                    () = token.cancelled() => return,
                    request = rx.recv() => match request {
                        Some(request) => request,
                        None => return,
                    },
                };
                let Ok(permit) = permits.clone().acquire_owned().await else {
                    return;
                };
                // Held by the write while the foreground is busy; released
                // at once when it goes idle meanwhile.
                let behind_permit = if foreground.busy() {
                    tokio::select! {
                        p = behind.clone().acquire_owned() => p.ok(),
                        () = foreground.idle() => None,
                    }
                } else {
                    None
                };
                let client = client.clone();
                tokio::spawn(async move {
                    send(&client, request).await;
                    drop((permit, behind_permit));
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
        match create_request(&event) {
            Ok(request) => {
                if self.tx.try_send(request).is_err() {
                    tracing::debug!(reason, "event queue full; dropping an event");
                }
            }
            Err(err) => tracing::debug!(%err, reason, "failed to encode an event"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    /// A client whose every request takes `delay`, counting the requests
    /// in flight at once (`peak`) and done (`done`).
    fn slow_client(delay: Duration) -> (kube::Client, Arc<AtomicUsize>, Arc<AtomicUsize>) {
        let in_flight = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let done = Arc::new(AtomicUsize::new(0));
        let (i, p, d) = (in_flight.clone(), peak.clone(), done.clone());
        let service = tower::service_fn(move |_: http::Request<kube::client::Body>| {
            let (i, p, d) = (i.clone(), p.clone(), d.clone());
            async move {
                p.fetch_max(i.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
                tokio::time::sleep(delay).await;
                i.fetch_sub(1, Ordering::SeqCst);
                d.fetch_add(1, Ordering::SeqCst);
                http::Response::builder()
                    .status(201)
                    .body(String::from("{}"))
            }
        });
        (kube::Client::new(service, "default"), peak, done)
    }

    fn emit_many(sink: &EventSink, n: usize) {
        let pod = Pod {
            metadata: ObjectMeta {
                name: Some("p".into()),
                namespace: Some("default".into()),
                ..ObjectMeta::default()
            },
            ..Pod::default()
        };
        for _ in 0..n {
            sink.emit(
                pod_reference(&pod),
                "Normal",
                "Scheduled",
                "Binding",
                "m".into(),
            );
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn events_are_written_behind_the_foreground_and_all_written_after_it() {
        let token = tokio_util::sync::CancellationToken::new();
        let (client, peak, done) = slow_client(Duration::from_millis(50));
        let foreground = Foreground::default();
        let recorder = Recorder { component: "test" };
        let sink = EventSink::spawn(client, recorder, foreground.clone(), token.clone());
        let underway = foreground.start();
        emit_many(&sink, 200);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(peak.load(Ordering::SeqCst), SINK_PARALLELISM_BEHIND);
        assert!(
            done.load(Ordering::SeqCst) < 100,
            "written behind the foreground"
        );
        drop(underway);
        tokio::time::timeout(Duration::from_secs(10), async {
            while done.load(Ordering::SeqCst) < 200 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("every event is written once the foreground is idle");
        assert!(peak.load(Ordering::SeqCst) > SINK_PARALLELISM_BEHIND);
        token.cancel();
    }
}
