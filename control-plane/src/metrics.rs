//! Prometheus metrics of the API server, served as text on `/metrics`:
//! request counts and latencies, stored object counts, process memory.

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

/// The server's metrics registry.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    durations: Family<DurationLabels, Histogram, fn() -> Histogram>,
    objects: Family<ResourceLabels, Gauge>,
    rss: Gauge,
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
        Self {
            registry,
            requests,
            durations,
            objects,
            rss,
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
}
