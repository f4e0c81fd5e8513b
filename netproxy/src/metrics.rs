//! Prometheus metrics of the sync loop (kube-proxy's names) and the `/metrics` and `/healthz`
//! HTTP endpoints.
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;
use tracing::info;

/// Errors serving metrics or health.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// Binding the listener failed.
    #[error("failed to bind {addr}")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The server failed.
    #[error("http server failed")]
    Serve(#[source] std::io::Error),
}

/// The proxier's metrics.
pub struct Metrics {
    registry: Registry,
    /// `kubeproxy_sync_proxy_rules_duration_seconds`.
    pub sync_duration: Histogram,
    /// `kubeproxy_sync_full_proxy_rules_duration_seconds`.
    pub full_sync_duration: Histogram,
    /// `kubeproxy_sync_partial_proxy_rules_duration_seconds`.
    pub partial_sync_duration: Histogram,
    /// `kubeproxy_sync_proxy_rules_last_timestamp_seconds`.
    pub last_timestamp: Gauge<f64, AtomicU64>,
    /// `kubeproxy_sync_proxy_rules_nftables_total`: rules in our table.
    pub nftables_rules: Gauge<i64, AtomicI64>,
    /// `kubeproxy_sync_proxy_rules_nftables_chains`: chains in our table.
    pub nftables_chains: Gauge<i64, AtomicI64>,
    /// `kubeproxy_sync_proxy_rules_nftables_sync_failures_total`.
    pub sync_failures: Counter,
    health: Mutex<Health>,
}

#[derive(Default, Clone, Copy)]
struct Health {
    last_updated: Option<SystemTime>,
    last_failed: bool,
}

fn buckets() -> impl Iterator<Item = f64> {
    // 1 ms .. ~16 s, as kube-proxy's ExponentialBuckets(0.001, 2, 15).
    exponential_buckets(0.001, 2.0, 15)
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let m = Self {
            sync_duration: Histogram::new(buckets()),
            full_sync_duration: Histogram::new(buckets()),
            partial_sync_duration: Histogram::new(buckets()),
            last_timestamp: Gauge::default(),
            nftables_rules: Gauge::default(),
            nftables_chains: Gauge::default(),
            sync_failures: Counter::default(),
            health: Mutex::new(Health::default()),
            registry: Registry::default(),
        };
        registry.register(
            "kubeproxy_sync_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds",
            m.sync_duration.clone(),
        );
        registry.register(
            "kubeproxy_sync_full_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds for full resyncs",
            m.full_sync_duration.clone(),
        );
        registry.register(
            "kubeproxy_sync_partial_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds for partial resyncs",
            m.partial_sync_duration.clone(),
        );
        registry.register(
            "kubeproxy_sync_proxy_rules_last_timestamp_seconds",
            "The last time proxy rules were successfully synced",
            m.last_timestamp.clone(),
        );
        registry.register(
            "kubeproxy_sync_proxy_rules_nftables_total",
            "Number of rules in the proxy's nftables table",
            m.nftables_rules.clone(),
        );
        registry.register(
            "kubeproxy_sync_proxy_rules_nftables_chains",
            "Number of chains in the proxy's nftables table",
            m.nftables_chains.clone(),
        );
        registry.register(
            "kubeproxy_sync_proxy_rules_nftables_sync_failures",
            "Number of failed nftables transactions",
            m.sync_failures.clone(),
        );
        Self { registry, ..m }
    }

    /// Records a successful sync.
    pub fn synced(&self, elapsed: Duration, full: bool, rules: usize, chains: usize) {
        let secs = elapsed.as_secs_f64();
        self.sync_duration.observe(secs);
        if full {
            self.full_sync_duration.observe(secs);
        } else {
            self.partial_sync_duration.observe(secs);
        }
        let now = SystemTime::now();
        self.last_timestamp.set(
            now.duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0),
        );
        self.nftables_rules
            .set(i64::try_from(rules).unwrap_or(i64::MAX));
        self.nftables_chains
            .set(i64::try_from(chains).unwrap_or(i64::MAX));
        if let Ok(mut h) = self.health.lock() {
            h.last_updated = Some(now);
            h.last_failed = false;
        }
    }

    /// Records a failed sync.
    pub fn failed(&self) {
        self.sync_failures.inc();
        if let Ok(mut h) = self.health.lock() {
            h.last_failed = true;
        }
    }

    /// Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// `/healthz`: healthy once rules were synced and the last sync did not fail.
    pub fn healthz(&self) -> (bool, String) {
        let h = self.health.lock().map(|h| *h).unwrap_or_default();
        let rfc = |t: SystemTime| {
            t.duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0)
        };
        let healthy = h.last_updated.is_some() && !h.last_failed;
        let body = serde_json::json!({
            "lastUpdated": h.last_updated.map(rfc),
            "currentTime": rfc(SystemTime::now()),
            "nodeHealthy": healthy,
        });
        (healthy, body.to_string())
    }
}

async fn metrics_handler(State(m): State<Arc<Metrics>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        m.encode(),
    )
}

async fn healthz_handler(State(m): State<Arc<Metrics>>) -> impl IntoResponse {
    let (ok, body) = m.healthz();
    let code = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, [(header::CONTENT_TYPE, "application/json")], body)
}

/// Serves `/metrics` (and `/healthz`, as kube-proxy's metrics port also does) on `addr`.
pub async fn serve_metrics(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> Result<(), MetricsError> {
    let app = Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(healthz_handler))
        .with_state(metrics);
    serve(addr, app, shutdown).await
}

/// Serves `/healthz` and `/livez` on `addr`.
pub async fn serve_healthz(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> Result<(), MetricsError> {
    let app = Router::new()
        .route("/healthz", get(healthz_handler))
        .route("/livez", get(healthz_handler))
        .with_state(metrics);
    serve(addr, app, shutdown).await
}

async fn serve(
    addr: SocketAddr,
    app: Router,
    shutdown: CancellationToken,
) -> Result<(), MetricsError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| MetricsError::Bind { addr, source })?;
    info!(%addr, "serving http");
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
        .map_err(MetricsError::Serve)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_use_kube_proxy_names() {
        let m = Metrics::new();
        m.synced(Duration::from_millis(3), true, 12, 4);
        let text = m.encode();
        assert!(text.contains("kubeproxy_sync_proxy_rules_duration_seconds_bucket"));
        assert!(text.contains("kubeproxy_sync_proxy_rules_last_timestamp_seconds "));
        assert!(text.contains("kubeproxy_sync_proxy_rules_nftables_total 12"));
    }

    #[test]
    fn healthz_fails_before_first_sync_and_after_a_failure() {
        let m = Metrics::new();
        assert!(!m.healthz().0);
        m.synced(Duration::from_millis(1), true, 1, 1);
        assert!(m.healthz().0);
        m.failed();
        assert!(!m.healthz().0);
    }
}
