//! Prometheus metrics of the proxy. Every family has the `outrigger_` prefix and a
//! bounded label set: destinations beyond a configured count share the label
//! "other", and `route` takes its values from the policy (a route's name,
//! `route-<index>`, `default` for requests no route matches, "" for requests
//! served without a stack: tunnels, upgrades, unknown destinations), never
//! from the client.

use std::collections::HashSet;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Label value used once the destination label budget is spent.
const OVERFLOW_DESTINATION: &str = "other";

pub struct Metrics {
    registry: Registry,
    destinations: LabelBudget,
    pub requests: IntCounterVec,
    pub request_duration: HistogramVec,
    /// Requests a Gateway API route sent to each of its backends.
    pub route_backend_requests: IntCounterVec,
    /// gRPC calls by the status the client received.
    pub grpc_responses: IntCounterVec,
    pub proxy_errors: IntCounterVec,
    pub open_connections: IntGaugeVec,
    pub connections: IntCounterVec,
    pub rejected_connections: IntCounterVec,
    pub tcp_bytes: IntCounterVec,
    pub policy_version: IntGauge,
    pub policy_loaded_timestamp: IntGauge,
    pub policy_reload_errors: IntCounter,
    pub policy_last_reload_ok: IntGauge,
    pub policy_conflicts: IntGauge,
    pub resilience: ResilienceMetrics,
}

/// What the resilience engine did, per destination.
pub struct ResilienceMetrics {
    pub retries: IntCounterVec,
    pub retry_budget_exhausted: IntCounterVec,
    pub retries_skipped: IntCounterVec,
    pub timeouts: IntCounterVec,
    pub circuit_state: IntGaugeVec,
    pub circuit_transitions: IntCounterVec,
    pub fallbacks: IntCounterVec,
    pub ejections: IntCounterVec,
    pub ejected_endpoints: IntGaugeVec,
    pub shed: IntCounterVec,
    pub rate_limited: IntCounterVec,
    pub dry_run_would_reject: IntCounterVec,
}

/// Builds metric families and registers each as it is made.
struct Families<'r>(&'r Registry);

impl Families<'_> {
    fn register<C: prometheus::core::Collector + Clone + 'static>(&self, collector: C) -> C {
        self.0
            .register(Box::new(collector.clone()))
            .expect("metric names are unique");
        collector
    }

    fn counters(&self, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
        self.register(IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"))
    }

    fn gauges(&self, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
        self.register(IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric"))
    }

    fn counter(&self, name: &str, help: &str) -> IntCounter {
        self.register(IntCounter::new(name, help).expect("valid metric"))
    }

    fn gauge(&self, name: &str, help: &str) -> IntGauge {
        self.register(IntGauge::new(name, help).expect("valid metric"))
    }
}

const DEST: [&str; 2] = ["direction", "destination"];
const ROUTE: [&str; 3] = ["direction", "destination", "route"];

impl Metrics {
    pub fn new(max_destination_labels: usize) -> Arc<Self> {
        let registry = Registry::new();
        let f = Families(&registry);
        let request_duration = f.register(
            HistogramVec::new(
                HistogramOpts::new(
                    "outrigger_request_duration_seconds",
                    "Time from request received to response headers sent",
                )
                .buckets(vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    10.0, 30.0,
                ]),
                &ROUTE,
            )
            .expect("valid metric"),
        );
        let resilience = ResilienceMetrics {
            retries: f.counters(
                "outrigger_retries_total",
                "Retries sent, by the reason the previous attempt failed",
                &["direction", "destination", "route", "reason"],
            ),
            retry_budget_exhausted: f.counters(
                "outrigger_retry_budget_exhausted_total",
                "Retries not sent because the retry budget was spent",
                &DEST,
            ),
            retries_skipped: f.counters(
                "outrigger_retries_skipped_total",
                "Failed attempts not retried although the policy retries them, by why",
                &["direction", "destination", "route", "reason"],
            ),
            timeouts: f.counters(
                "outrigger_timeouts_total",
                "Timeouts, by kind (request, backend-request, connect, idle)",
                &["direction", "destination", "route", "kind"],
            ),
            circuit_state: f.gauges(
                "outrigger_circuit_state",
                "Circuit breaker state: 0 closed, 1 open, 2 half-open",
                &DEST,
            ),
            circuit_transitions: f.counters(
                "outrigger_circuit_transitions_total",
                "Circuit breaker state changes",
                &["direction", "destination", "from", "to"],
            ),
            fallbacks: f.counters(
                "outrigger_fallback_responses_total",
                "Fallback responses served while the circuit was open",
                &DEST,
            ),
            ejections: f.counters(
                "outrigger_ejections_total",
                "Endpoints ejected by outlier detection",
                &DEST,
            ),
            ejected_endpoints: f.gauges(
                "outrigger_ejected_endpoints",
                "Endpoints ejected right now",
                &DEST,
            ),
            shed: f.counters(
                "outrigger_shed_requests_total",
                "Requests refused by the concurrency limit, by reason",
                &["direction", "destination", "reason"],
            ),
            rate_limited: f.counters(
                "outrigger_rate_limited_total",
                "Inbound requests refused by the rate limit",
                &DEST,
            ),
            dry_run_would_reject: f.counters(
                "outrigger_dry_run_would_reject_total",
                "Requests (attempts, for circuit-open and outlier-ejected) a DryRun policy would have rejected or sent elsewhere, by reason",
                &["direction", "destination", "reason"],
            ),
        };
        Arc::new(Metrics {
            destinations: LabelBudget::new(max_destination_labels),
            requests: f.counters(
                "outrigger_requests_total",
                "HTTP requests proxied, by outcome",
                &["direction", "destination", "route", "status_class"],
            ),
            request_duration,
            route_backend_requests: f.counters(
                "outrigger_route_backend_requests_total",
                "Requests a Gateway API route sent to a backend Service (destination: the Service the client named; backend: the one that served it)",
                &["direction", "destination", "route", "backend"],
            ),
            grpc_responses: f.counters(
                "outrigger_grpc_responses_total",
                "gRPC calls answered, by the grpc-status the client received (a defined code's name, other, or none)",
                &["direction", "destination", "route", "grpc_status"],
            ),
            proxy_errors: f.counters(
                "outrigger_proxy_errors_total",
                "Responses the proxy produced itself, by x-outrigger-error cause",
                &["direction", "cause"],
            ),
            open_connections: f.gauges(
                "outrigger_open_connections",
                "Client connections open now",
                &["direction", "protocol"],
            ),
            connections: f.counters(
                "outrigger_connections_total",
                "Client connections accepted",
                &["direction", "protocol"],
            ),
            rejected_connections: f.counters(
                "outrigger_connections_rejected_total",
                "Client connections closed without being served",
                &["direction", "reason"],
            ),
            tcp_bytes: f.counters(
                "outrigger_tcp_bytes_total",
                "Bytes forwarded on opaque TCP connections, upgraded connections (WebSocket) and CONNECT tunnels, counted as they pass",
                &["direction", "destination", "flow"],
            ),
            policy_version: f.gauge(
                "outrigger_policy_version",
                "Version of the active policy (increases on every successful load)",
            ),
            policy_loaded_timestamp: f.gauge(
                "outrigger_policy_loaded_timestamp_seconds",
                "Unix time at which the active policy was loaded",
            ),
            policy_reload_errors: f.counter(
                "outrigger_policy_reload_errors_total",
                "Policy loads rejected (the last good policy stayed active)",
            ),
            policy_last_reload_ok: f.gauge(
                "outrigger_policy_last_reload_success",
                "1 when the last policy load succeeded, 0 when it was rejected",
            ),
            policy_conflicts: f.gauge(
                "outrigger_policy_conflicts",
                "Policies in the active policy file that apply nowhere: another policy targets \
                 the same Service and port (the oldest wins, then the first by namespace/name)",
            ),
            resilience,
            registry,
        })
    }

    /// Registers a collector owned by another module.
    pub fn register(&self, collector: Box<dyn prometheus::core::Collector>) {
        self.registry
            .register(collector)
            .expect("metric names are unique");
    }

    /// Request counters and histograms of one destination and its routes
    /// (`routes`: their `route` labels), resolved once so that recording a
    /// request hashes no label values.
    pub fn request_metrics(
        &self,
        direction: &'static str,
        destination: Arc<str>,
        routes: &[Arc<str>],
    ) -> RequestMetrics {
        RequestMetrics {
            duration: self.request_duration.clone(),
            requests: self.requests.clone(),
            routes: routes
                .iter()
                .map(|name| RouteSeries {
                    name: name.clone(),
                    duration: OnceLock::new(),
                    by_class: Default::default(),
                })
                .collect(),
            direction,
            destination,
        }
    }

    /// The byte counters of one tunnel's destination, resolved once so that
    /// the bytes of a long-lived connection are counted as they pass.
    pub fn tunnel_bytes(&self, direction: &str, destination: &str) -> TunnelBytes {
        TunnelBytes {
            sent: self
                .tcp_bytes
                .with_label_values(&[direction, destination, "sent"]),
            received: self
                .tcp_bytes
                .with_label_values(&[direction, destination, "received"]),
        }
    }

    /// The label value for a destination, within the label budget.
    pub fn destination_label(&self, destination: &str) -> Arc<str> {
        self.destinations.label(destination)
    }

    /// How many destinations get a label value of their own
    /// (`--max-destination-labels`).
    pub fn max_destination_labels(&self) -> usize {
        self.destinations.max
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

/// `outrigger_tcp_bytes_total` of one tunnel: `sent` counts the client's
/// bytes on their way to the upstream, `received` the upstream's bytes on
/// their way back.
#[derive(Clone)]
pub struct TunnelBytes {
    pub sent: IntCounter,
    pub received: IntCounter,
}

/// The request series of one direction and destination, by route.
pub struct RequestMetrics {
    duration: HistogramVec,
    requests: IntCounterVec,
    routes: Vec<RouteSeries>,
    direction: &'static str,
    destination: Arc<str>,
}

/// One route's series, each resolved on first use so that routes and status
/// classes never seen do not appear as zero series.
struct RouteSeries {
    name: Arc<str>,
    duration: OnceLock<Histogram>,
    by_class: [OnceLock<IntCounter>; 5],
}

impl RequestMetrics {
    /// Records a request the route labelled `route` served.
    pub fn record(&self, route: &str, status: u16, elapsed: Duration) {
        let (index, class) = status_class(status);
        let labels = [self.direction, &*self.destination, route];
        let with_class = [self.direction, &*self.destination, route, class];
        match self.routes.iter().find(|r| &*r.name == route) {
            Some(series) => {
                series.by_class[index]
                    .get_or_init(|| self.requests.with_label_values(&with_class))
                    .inc();
                series
                    .duration
                    .get_or_init(|| self.duration.with_label_values(&labels))
                    .observe(elapsed.as_secs_f64());
            }
            // Not one of the stack's routes (none is): resolved each time.
            None => {
                self.requests.with_label_values(&with_class).inc();
                self.duration
                    .with_label_values(&labels)
                    .observe(elapsed.as_secs_f64());
            }
        }
    }
}

/// The `class` label of a status code, and its index among the five.
pub fn status_class(status: u16) -> (usize, &'static str) {
    match status {
        100..=199 => (0, "1xx"),
        200..=299 => (1, "2xx"),
        300..=399 => (2, "3xx"),
        400..=499 => (3, "4xx"),
        _ => (4, "5xx"),
    }
}

/// Remembers which values (destinations, subscriptions) may appear as label
/// values, so that a client naming endless hosts cannot grow the metric set
/// without bound: past `max` distinct values, every new one is "other".
pub struct LabelBudget {
    max: usize,
    known: RwLock<HashSet<Arc<str>>>,
    overflow: Arc<str>,
}

impl LabelBudget {
    pub fn new(max: usize) -> Self {
        LabelBudget {
            max,
            known: RwLock::new(HashSet::new()),
            overflow: Arc::from(OVERFLOW_DESTINATION),
        }
    }

    pub fn label(&self, destination: &str) -> Arc<str> {
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
    fn request_metrics_count_by_class_and_show_only_classes_seen() {
        let metrics = Metrics::new(10);
        let web = metrics.request_metrics(
            "outbound",
            "web:80".into(),
            &["default".into(), "charge".into()],
        );
        web.record("default", 200, Duration::from_millis(3));
        web.record("default", 204, Duration::from_millis(1));
        web.record("default", 503, Duration::from_millis(2));
        web.record("charge", 503, Duration::from_millis(2));
        let text = String::from_utf8(metrics.render()).unwrap();
        let series = |route: &str, class: &str| {
            format!(
                "outrigger_requests_total{{destination=\"web:80\",direction=\"outbound\",route=\"{route}\",status_class=\"{class}\"}}"
            )
        };
        assert!(
            text.contains(&format!("{} 2", series("default", "2xx"))),
            "{text}"
        );
        assert!(
            text.contains(&format!("{} 1", series("default", "5xx"))),
            "{text}"
        );
        assert!(
            text.contains(&format!("{} 1", series("charge", "5xx"))),
            "{text}"
        );
        assert!(!text.contains(&series("default", "4xx")), "{text}");
        assert!(!text.contains(&series("charge", "2xx")), "{text}");
        assert!(text.contains(
            "outrigger_request_duration_seconds_count{destination=\"web:80\",direction=\"outbound\",route=\"default\"} 3"
        ));
    }

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
            .with_label_values(&["inbound", "app", "default", "2xx"])
            .inc();
        let text = String::from_utf8(metrics.render()).unwrap();
        assert!(text.contains(
            "outrigger_requests_total{destination=\"app\",direction=\"inbound\",route=\"default\",status_class=\"2xx\"} 1"
        ));
        assert!(text.contains("outrigger_policy_reload_errors_total 0"));
        assert!(text.contains("outrigger_policy_conflicts 0"));
    }
}
