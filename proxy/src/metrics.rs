//! Prometheus metrics of the proxy. Every family has the `outrigger_` prefix and a
//! bounded label set: destinations beyond a configured count share the label "other".

use std::collections::HashSet;
use std::sync::{Arc, RwLock};

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// Label value used once the destination label budget is spent.
const OVERFLOW_DESTINATION: &str = "other";

pub struct Metrics {
    registry: Registry,
    destinations: DestinationLabels,
    pub requests: IntCounterVec,
    pub request_duration: HistogramVec,
    pub proxy_errors: IntCounterVec,
    pub open_connections: IntGaugeVec,
    pub connections: IntCounterVec,
    pub rejected_connections: IntCounterVec,
    pub tcp_bytes: IntCounterVec,
    pub policy_version: IntGauge,
    pub policy_loaded_timestamp: IntGauge,
    pub policy_reload_errors: IntCounter,
    pub policy_last_reload_ok: IntGauge,
}

impl Metrics {
    pub fn new(max_destination_labels: usize) -> Arc<Self> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "outrigger_requests_total",
                "HTTP requests proxied, by outcome",
            ),
            &["direction", "destination", "status_class"],
        )
        .expect("valid metric");
        let request_duration = HistogramVec::new(
            HistogramOpts::new(
                "outrigger_request_duration_seconds",
                "Time from request received to response headers sent",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0, 30.0,
            ]),
            &["direction", "destination"],
        )
        .expect("valid metric");
        let proxy_errors = IntCounterVec::new(
            Opts::new(
                "outrigger_proxy_errors_total",
                "Responses the proxy produced itself, by x-outrigger-error cause",
            ),
            &["direction", "cause"],
        )
        .expect("valid metric");
        let open_connections = IntGaugeVec::new(
            Opts::new("outrigger_open_connections", "Client connections open now"),
            &["direction", "protocol"],
        )
        .expect("valid metric");
        let connections = IntCounterVec::new(
            Opts::new("outrigger_connections_total", "Client connections accepted"),
            &["direction", "protocol"],
        )
        .expect("valid metric");
        let rejected_connections = IntCounterVec::new(
            Opts::new(
                "outrigger_connections_rejected_total",
                "Client connections closed without being served",
            ),
            &["direction", "reason"],
        )
        .expect("valid metric");
        let tcp_bytes = IntCounterVec::new(
            Opts::new(
                "outrigger_tcp_bytes_total",
                "Bytes forwarded on opaque TCP connections",
            ),
            &["direction", "destination", "flow"],
        )
        .expect("valid metric");
        let policy_version = IntGauge::new(
            "outrigger_policy_version",
            "Version of the active policy (increases on every successful load)",
        )
        .expect("valid metric");
        let policy_loaded_timestamp = IntGauge::new(
            "outrigger_policy_loaded_timestamp_seconds",
            "Unix time at which the active policy was loaded",
        )
        .expect("valid metric");
        let policy_reload_errors = IntCounter::new(
            "outrigger_policy_reload_errors_total",
            "Policy loads rejected (the last good policy stayed active)",
        )
        .expect("valid metric");
        let policy_last_reload_ok = IntGauge::new(
            "outrigger_policy_last_reload_success",
            "1 when the last policy load succeeded, 0 when it was rejected",
        )
        .expect("valid metric");

        let metrics = Metrics {
            registry,
            destinations: DestinationLabels::new(max_destination_labels),
            requests,
            request_duration,
            proxy_errors,
            open_connections,
            connections,
            rejected_connections,
            tcp_bytes,
            policy_version,
            policy_loaded_timestamp,
            policy_reload_errors,
            policy_last_reload_ok,
        };
        metrics.register_all();
        Arc::new(metrics)
    }

    fn register_all(&self) {
        let collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(self.requests.clone()),
            Box::new(self.request_duration.clone()),
            Box::new(self.proxy_errors.clone()),
            Box::new(self.open_connections.clone()),
            Box::new(self.connections.clone()),
            Box::new(self.rejected_connections.clone()),
            Box::new(self.tcp_bytes.clone()),
            Box::new(self.policy_version.clone()),
            Box::new(self.policy_loaded_timestamp.clone()),
            Box::new(self.policy_reload_errors.clone()),
            Box::new(self.policy_last_reload_ok.clone()),
        ];
        for collector in collectors {
            self.registry
                .register(collector)
                .expect("metric names are unique");
        }
    }

    /// Registers a collector owned by another module (e.g. the resilience layers).
    pub fn register(&self, collector: Box<dyn prometheus::core::Collector>) {
        self.registry
            .register(collector)
            .expect("metric names are unique");
    }

    /// The label value for a destination, within the label budget.
    pub fn destination_label(&self, destination: &str) -> Arc<str> {
        self.destinations.label(destination)
    }

    /// Prometheus text exposition of every metric.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 * 1024);
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("encoding to a Vec cannot fail");
        out
    }
}

/// Remembers which destinations may appear as label values, so that a client
/// naming endless hosts cannot grow the metric set without bound.
struct DestinationLabels {
    max: usize,
    known: RwLock<HashSet<Arc<str>>>,
    overflow: Arc<str>,
}

impl DestinationLabels {
    fn new(max: usize) -> Self {
        DestinationLabels {
            max,
            known: RwLock::new(HashSet::new()),
            overflow: Arc::from(OVERFLOW_DESTINATION),
        }
    }

    fn label(&self, destination: &str) -> Arc<str> {
        if let Some(known) = self.known.read().expect("not poisoned").get(destination) {
            return known.clone();
        }
        let mut known = self.known.write().expect("not poisoned");
        if let Some(existing) = known.get(destination) {
            return existing.clone();
        }
        if known.len() >= self.max {
            return self.overflow.clone();
        }
        let label: Arc<str> = Arc::from(destination);
        known.insert(label.clone());
        label
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destination_labels_are_bounded() {
        let metrics = Metrics::new(2);
        assert_eq!(&*metrics.destination_label("a:80"), "a:80");
        assert_eq!(&*metrics.destination_label("b:80"), "b:80");
        assert_eq!(&*metrics.destination_label("c:80"), "other");
        assert_eq!(&*metrics.destination_label("a:80"), "a:80");
    }

    #[test]
    fn render_contains_prefixed_families() {
        let metrics = Metrics::new(10);
        metrics
            .requests
            .with_label_values(&["inbound", "app", "2xx"])
            .inc();
        let text = String::from_utf8(metrics.render()).unwrap();
        assert!(text.contains(
            "outrigger_requests_total{destination=\"app\",direction=\"inbound\",status_class=\"2xx\"} 1"
        ));
        assert!(text.contains("outrigger_policy_reload_errors_total 0"));
    }
}
