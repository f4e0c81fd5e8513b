//! Prometheus metrics of the API server, served as text on `/metrics`:
//! request counts and latencies, stored object counts, process memory, and
//! the embedded scheduler's attempts and queue.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    verb: String,
    resource: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DurationLabels {
    verb: String,
    resource: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResourceLabels {
    resource: String,
}

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 14))
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AttemptLabels {
    result: &'static str,
    profile: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabels {
    queue: &'static str,
}

/// kube-scheduler's buckets for scheduling attempt latency.
fn attempt_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

/// How a scheduling attempt ended (the `result` label).
#[derive(Debug, Clone, Copy)]
pub enum AttemptResult {
    Scheduled,
    Unschedulable,
    Error,
}

/// The embedded scheduler's metrics, under kube-scheduler's names, served
/// with the server's on `/metrics`. Cloning shares them.
#[derive(Clone)]
pub struct SchedulerMetrics {
    attempts: Family<AttemptLabels, Counter>,
    durations: Family<AttemptLabels, Histogram, fn() -> Histogram>,
    pending: Family<QueueLabels, Gauge>,
}

impl SchedulerMetrics {
    fn register(registry: &mut Registry) -> Self {
        let attempts = Family::<AttemptLabels, Counter>::default();
        registry.register(
            "scheduler_schedule_attempts",
            "Number of attempts to schedule pods, by the result. 'unschedulable' means a pod could not be scheduled, while 'error' means an internal scheduler problem.",
            attempts.clone(),
        );
        let durations = Family::<AttemptLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            attempt_histogram,
        );
        registry.register(
            "scheduler_scheduling_attempt_duration_seconds",
            "Scheduling attempt latency in seconds (scheduling algorithm + binding)",
            durations.clone(),
        );
        let pending = Family::<QueueLabels, Gauge>::default();
        registry.register(
            "scheduler_pending_pods",
            "Number of pending pods, by the queue type. 'active' means number of pods in activeQ; 'backoff' means number of pods in backoffQ; 'unschedulable' means number of pods in unschedulablePods.",
            pending.clone(),
        );
        Self {
            attempts,
            durations,
            pending,
        }
    }

    /// Records one attempt of scheduler `profile`, `seconds` after its
    /// cycle started (a scheduled pod's attempt ends with its binding).
    pub fn attempt(&self, profile: &'static str, result: AttemptResult, seconds: f64) {
        let labels = AttemptLabels {
            result: match result {
                AttemptResult::Scheduled => "scheduled",
                AttemptResult::Unschedulable => "unschedulable",
                AttemptResult::Error => "error",
            },
            profile,
        };
        self.attempts.get_or_create(&labels).inc();
        self.durations.get_or_create(&labels).observe(seconds);
    }

    /// Sets the pods waiting in each of the scheduling queue's parts.
    pub fn set_pending(&self, active: usize, backoff: usize, unschedulable: usize) {
        for (queue, n) in [
            ("active", active),
            ("backoff", backoff),
            ("unschedulable", unschedulable),
        ] {
            self.pending
                .get_or_create(&QueueLabels { queue })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }
}

/// The server's metrics registry.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    durations: Family<DurationLabels, Histogram, fn() -> Histogram>,
    objects: Family<ResourceLabels, Gauge>,
    rss: Gauge,
    /// The embedded scheduler's, handed to it when it starts.
    pub scheduler: SchedulerMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "apiserver_request",
            "Counter of apiserver requests broken out for each verb, resource and HTTP response code",
            requests.clone(),
        );
        let durations =
            Family::<DurationLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                latency_histogram,
            );
        registry.register(
            "apiserver_request_duration_seconds",
            "Response latency distribution in seconds for each verb and resource",
            durations.clone(),
        );
        let objects = Family::<ResourceLabels, Gauge>::default();
        registry.register(
            "apiserver_storage_objects",
            "Number of stored objects at the time of last check split by kind",
            objects.clone(),
        );
        let rss = Gauge::default();
        registry.register(
            "process_resident_memory_bytes",
            "Resident memory size in bytes",
            rss.clone(),
        );
        let scheduler = SchedulerMetrics::register(&mut registry);
        Self {
            registry,
            requests,
            durations,
            objects,
            rss,
            scheduler,
        }
    }

    /// Records one finished request.
    pub fn record(&self, verb: &str, resource: &str, code: u16, seconds: f64) {
        self.requests
            .get_or_create(&RequestLabels {
                verb: verb.into(),
                resource: resource.into(),
                code: code.to_string(),
            })
            .inc();
        self.durations
            .get_or_create(&DurationLabels {
                verb: verb.into(),
                resource: resource.into(),
            })
            .observe(seconds);
    }

    /// Sets the stored object count of a resource.
    pub fn set_objects(&self, resource: &str, count: usize) {
        self.objects
            .get_or_create(&ResourceLabels {
                resource: resource.into(),
            })
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    /// The text exposition, with the process RSS read now.
    pub fn encode(&self) -> String {
        if let Some(rss) = read_rss() {
            self.rss.set(rss);
        }
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            tracing::warn!("failed to encode metrics");
        }
        out
    }
}

fn read_rss() -> Option<i64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: i64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_request_counters_and_histograms() {
        let m = Metrics::new();
        m.record("LIST", "pods", 200, 0.01);
        m.set_objects("pods", 3);
        let text = m.encode();
        assert!(
            text.contains(
                "apiserver_request_total{verb=\"LIST\",resource=\"pods\",code=\"200\"} 1"
            )
        );
        assert!(text.contains("apiserver_request_duration_seconds_bucket"));
        assert!(text.contains("apiserver_storage_objects{resource=\"pods\"} 3"));
    }

    #[test]
    fn encodes_scheduler_attempts_and_pending_pods() {
        let m = Metrics::new();
        m.scheduler
            .attempt("default-scheduler", AttemptResult::Scheduled, 0.002);
        m.scheduler
            .attempt("default-scheduler", AttemptResult::Unschedulable, 0.001);
        m.scheduler.set_pending(2, 0, 1);
        let text = m.encode();
        for line in [
            "scheduler_schedule_attempts_total{result=\"scheduled\",profile=\"default-scheduler\"} 1",
            "scheduler_schedule_attempts_total{result=\"unschedulable\",profile=\"default-scheduler\"} 1",
            "scheduler_scheduling_attempt_duration_seconds_count{result=\"scheduled\",profile=\"default-scheduler\"} 1",
            "scheduler_pending_pods{queue=\"active\"} 2",
            "scheduler_pending_pods{queue=\"unschedulable\"} 1",
        ] {
            assert!(text.contains(line), "{line} not in:\n{text}");
        }
    }
}
