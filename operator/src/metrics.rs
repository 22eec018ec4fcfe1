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
