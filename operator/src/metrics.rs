//! Operator metrics (`outrigger_operator_` prefix).

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

pub struct Metrics {
    registry: Registry,
    pub reconciles: IntCounter,
    pub reconcile_errors: IntCounterVec,
    pub reconcile_duration: Histogram,
    pub objects: IntGaugeVec,
    pub status_writes: IntCounter,
    pub leader: IntGauge,
    pub connected_proxies: IntGauge,
    pub subscriptions: IntGauge,
    pub pushes: IntCounter,
    pub push_bytes: IntCounter,
    pub change_to_ack: Histogram,
    pub auth_failures: IntCounterVec,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let reconciles = IntCounter::new(
            "outrigger_operator_reconciles_total",
            "Recomputations of the compiled view",
        )
        .expect("valid metric");
        let reconcile_errors = IntCounterVec::new(
            Opts::new(
                "outrigger_operator_reconcile_errors_total",
                "Errors while reconciling, by kind",
            ),
            &["kind"],
        )
        .expect("valid metric");
        let reconcile_duration = Histogram::with_opts(
            HistogramOpts::new(
                "outrigger_operator_reconcile_duration_seconds",
                "Time to recompute the view and write statuses",
            )
            .buckets(vec![0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0]),
        )
        .expect("valid metric");
        let objects = IntGaugeVec::new(
            Opts::new(
                "outrigger_operator_objects_indexed",
                "Objects in the watch caches, by kind",
            ),
            &["kind"],
        )
        .expect("valid metric");
        let status_writes = IntCounter::new(
            "outrigger_operator_status_writes_total",
            "ResiliencePolicy status patches sent",
        )
        .expect("valid metric");
        let leader = IntGauge::new(
            "outrigger_operator_leader",
            "1 while this replica holds the lease and writes status",
        )
        .expect("valid metric");
        let connected_proxies = IntGauge::new(
            "outrigger_operator_connected_proxies",
            "Proxies with at least one open policy stream",
        )
        .expect("valid metric");
        let subscriptions = IntGauge::new(
            "outrigger_operator_subscriptions",
            "Distinct subscriptions with at least one open stream",
        )
        .expect("valid metric");
        let pushes = IntCounter::new(
            "outrigger_operator_pushes_total",
            "Snapshots published to a subscription (each may reach many streams)",
        )
        .expect("valid metric");
        let push_bytes = IntCounter::new(
            "outrigger_operator_push_bytes_total",
            "Bytes written on policy streams",
        )
        .expect("valid metric");
        let change_to_ack = Histogram::with_opts(
            HistogramOpts::new(
                "outrigger_operator_change_to_ack_seconds",
                "From a changed snapshot's publication to a subscribed proxy acknowledging it (a stream's first snapshot is not timed)",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
        )
        .expect("valid metric");
        let auth_failures = IntCounterVec::new(
            Opts::new(
                "outrigger_operator_auth_failures_total",
                "Policy-server requests refused, by reason (unauthenticated, forbidden)",
            ),
            &["reason"],
        )
        .expect("valid metric");
        for c in [
            Box::new(auth_failures.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(connected_proxies.clone()),
            Box::new(subscriptions.clone()),
            Box::new(pushes.clone()),
            Box::new(push_bytes.clone()),
            Box::new(change_to_ack.clone()),
        ] {
            registry.register(c).expect("unique metric names");
        }
        for c in [
            Box::new(reconciles.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(reconcile_errors.clone()),
            Box::new(reconcile_duration.clone()),
            Box::new(objects.clone()),
            Box::new(status_writes.clone()),
            Box::new(leader.clone()),
        ] {
            registry.register(c).expect("unique metric names");
        }
        Metrics {
            registry,
            reconciles,
            reconcile_errors,
            reconcile_duration,
            objects,
            status_writes,
            leader,
            connected_proxies,
            subscriptions,
            pushes,
            push_bytes,
            change_to_ack,
            auth_failures,
        }
    }

    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("encoding to a Vec cannot fail");
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
