//! Everything the proxy keeps per destination: the compiled policy, the state
//! of its breaker, retry budget, limits and endpoints, and its connection pool.
//! Built once per destination and policy generation; state whose parameters a
//! new generation leaves unchanged carries over, so a policy edit does not
//! reset an open breaker or a spent budget.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use prometheus::{IntGauge, IntGaugeVec};
use rand::rngs::SmallRng;
use rand::SeedableRng;

use outrigger_http::client::UpstreamClients;
use outrigger_proxy_core::addr::HostPort;
use outrigger_proxy_core::metrics::{Metrics, RequestMetrics};
use outrigger_resilience::{CircuitBreaker, OutlierDetector, RetryBudget, TokenBucket};
use outrigger_transport::connect::Connector;

use super::balancer::{self, Endpoint};
use super::config::{BreakerSettings, BudgetConfig, DestinationConfig, OutlierSettings};
use super::limits::ConcurrencyLimit;

pub struct DestinationStack {
    /// The policy-file version and control-plane snapshot version this stack
    /// was built from; either changing rebuilds it.
    pub source: (u64, u64),
    pub direction: &'static str,
    /// Destination label in metrics.
    pub label: Arc<str>,
    pub config: Arc<DestinationConfig>,
    pub endpoints: Arc<Endpoints>,
    pub breaker: Option<Arc<Breaker>>,
    pub budget: Option<Arc<Budget>>,
    pub limit: Option<Arc<ConcurrencyLimit>>,
    pub rate_limit: Option<Arc<Mutex<TokenBucket>>>,
    pub clients: UpstreamClients,
    pub client_settings: (std::time::Duration, std::time::Duration),
    pub metrics: Arc<Metrics>,
    pub request_metrics: RequestMetrics,
    /// Set on every attempt when outlier detection is on; resolved once.
    pub ejected_endpoints_gauge: Option<IntGauge>,
}

pub struct Breaker {
    pub settings: BreakerSettings,
    /// Shared with the next generation's stack when the thresholds are unchanged.
    pub state: Arc<Mutex<CircuitBreaker>>,
    /// `outrigger_circuit_state` of this destination.
    pub gauge: IntGauge,
}

pub struct Budget {
    pub settings: BudgetConfig,
    pub state: Mutex<RetryBudget>,
}

/// A destination's endpoints and their outlier state.
pub struct Endpoints {
    pub targets: Vec<HostPort>,
    pub list: Vec<Endpoint>,
    pub outlier: Option<(OutlierSettings, Mutex<OutlierDetector<usize>>)>,
}

/// Where an endpoint's result is reported: what of a stack the outlier
/// bookkeeping needs, borrowed, so a gRPC attempt settled after its call
/// returned (from owned copies) reports the same way.
pub struct EndpointReport<'a> {
    pub direction: &'static str,
    pub label: &'a str,
    pub metrics: &'a Metrics,
    pub gauge: Option<&'a IntGauge>,
    pub dry_run: bool,
}

impl Endpoints {
    /// An attempt's result for the outlier detector (when it is on): a
    /// failure extends the endpoint's streak, and enough of them eject it
    /// (counted and logged; under `DryRun` too, where the endpoint
    /// nevertheless keeps its traffic).
    pub fn record_result(
        &self,
        report: &EndpointReport<'_>,
        index: usize,
        failure: bool,
        now: Instant,
    ) {
        let Some((_, detector)) = &self.outlier else {
            return;
        };
        let mut detector = detector.lock().expect("not poisoned");
        if let Some(ejection) = detector.record(now, &index, failure) {
            report
                .metrics
                .resilience
                .ejections
                .with_label_values(&[report.direction, report.label])
                .inc();
            let endpoint = &self.list[index].target;
            if report.dry_run {
                tracing::warn!(
                    destination = %report.label,
                    %endpoint,
                    duration = ?ejection.duration,
                    "DryRun: endpoint would be ejected after consecutive failures; it keeps its traffic"
                );
            } else {
                tracing::warn!(
                    destination = %report.label,
                    %endpoint,
                    duration = ?ejection.duration,
                    "endpoint ejected after consecutive failures"
                );
            }
        }
        if let Some(gauge) = report.gauge {
            gauge.set(detector.ejected_count(now) as i64);
        }
    }

    /// The endpoints `targets`. Those that `previous` also lists keep their
    /// latency estimate, in-flight count and, when the outlier settings are
    /// unchanged, their ejection and failure streak: a new endpoint set (a
    /// pod added or gone) or a policy edit forgets nothing about the others.
    fn new(
        targets: Vec<HostPort>,
        outlier: Option<OutlierSettings>,
        now: Instant,
        previous: Option<&Endpoints>,
    ) -> Self {
        let known: HashMap<&HostPort, usize> = previous
            .map(|p| p.targets.iter().enumerate().map(|(i, t)| (t, i)).collect())
            .unwrap_or_default();
        let old_index = |target: &HostPort| known.get(target).copied();
        let list = targets
            .iter()
            .map(|t| match (previous, old_index(t)) {
                (Some(p), Some(i)) => p.list[i].carried(),
                _ => Endpoint::new(t.clone(), now),
            })
            .collect();
        let outlier = outlier.map(|settings| {
            let carried = previous
                .and_then(|p| p.outlier.as_ref())
                .filter(|(old, _)| *old == settings);
            let detector = match carried {
                Some((_, detector)) => detector
                    .lock()
                    .expect("not poisoned")
                    .rekeyed(targets.iter().enumerate().map(|(i, t)| (i, old_index(t)))),
                None => {
                    let mut detector = OutlierDetector::new(
                        settings.consecutive_failures,
                        settings.base_ejection_time,
                        settings.max_ejection_percent,
                    );
                    detector.set_endpoints(0..targets.len());
                    detector
                }
            };
            (settings, Mutex::new(detector))
        });
        Endpoints {
            targets,
            list,
            outlier,
        }
    }
}

pub struct StackInputs<'a> {
    pub source: (u64, u64),
    pub direction: &'static str,
    pub label: Arc<str>,
    pub config: DestinationConfig,
    pub targets: Vec<HostPort>,
    pub connector: &'a Connector,
    pub metrics: Arc<Metrics>,
}

thread_local! {
    /// The balancer's random draws: a small, fast generator per thread,
    /// seeded from the OS (the draws only spread load: nothing to guess).
    /// `rand::rng()`'s cryptographic generator cost ~115 instructions per
    /// request here (callgrind, `bash bench/instructions.sh`).
    static BALANCER_DRAWS: RefCell<SmallRng> = RefCell::new(SmallRng::from_os_rng());
}

impl DestinationStack {
    /// Builds a stack, reusing from `previous` every piece of state whose
    /// settings did not change.
    pub fn build(inputs: StackInputs<'_>, previous: Option<&DestinationStack>) -> Self {
        let now = Instant::now();
        let config = inputs.config;
        let reuse = |f: &dyn Fn(&DestinationStack) -> bool| previous.filter(|p| f(p));

        let endpoints = match reuse(&|p| {
            p.endpoints.targets == inputs.targets
                && p.endpoints.outlier.as_ref().map(|o| &o.0) == config.outlier.as_ref()
        }) {
            Some(p) => p.endpoints.clone(),
            None => Arc::new(Endpoints::new(
                inputs.targets,
                config.outlier.clone(),
                now,
                previous.map(|p| &*p.endpoints),
            )),
        };
        let gauge =
            |family: &IntGaugeVec| family.with_label_values(&[inputs.direction, &inputs.label]);
        let resilience = &inputs.metrics.resilience;
        let breaker = config.breaker.as_ref().map(|settings| {
            let carried = previous
                .and_then(|p| p.breaker.as_ref())
                .filter(|b| same_thresholds(&b.settings, settings));
            Arc::new(Breaker {
                settings: settings.clone(),
                // The fallback may change without resetting the state.
                state: match carried {
                    Some(b) => b.state.clone(),
                    None => Arc::new(Mutex::new(CircuitBreaker::new(settings.thresholds))),
                },
                gauge: gauge(&resilience.circuit_state),
            })
        });
        let budget = config.budget.as_ref().map(|settings| {
            match previous
                .and_then(|p| p.budget.as_ref())
                .filter(|b| b.settings == *settings)
            {
                Some(b) => b.clone(),
                None => Arc::new(Budget {
                    settings: settings.clone(),
                    state: Mutex::new(RetryBudget::new(
                        settings.percent,
                        settings.interval,
                        (settings.min_retries, settings.min_interval),
                    )),
                }),
            }
        });
        let limit = config.limits.as_ref().map(|settings| {
            match previous
                .and_then(|p| p.limit.as_ref())
                .filter(|l| l.settings() == settings)
            {
                Some(l) => l.clone(),
                None => Arc::new(ConcurrencyLimit::new(settings.clone())),
            }
        });
        // Which side enforces it was decided by `DestinationConfig::for_side`.
        let rate_limit = config.rate_limit.as_ref().map(|settings| {
            let same = previous
                .and_then(|p| p.config.rate_limit.as_ref().zip(p.rate_limit.as_ref()))
                .filter(|(old, _)| *old == settings);
            match same {
                Some((_, bucket)) => bucket.clone(),
                None => Arc::new(Mutex::new(TokenBucket::new(
                    settings.requests_per_second,
                    settings.burst,
                ))),
            }
        });
        let client_settings = (config.connect_timeout, config.idle_timeout);
        let clients = match previous.filter(|p| p.client_settings == client_settings) {
            Some(p) => p.clients.clone(),
            None => {
                let connector = Connector {
                    connect_timeout: config.connect_timeout,
                    mark: inputs.connector.mark,
                };
                UpstreamClients::new(connector, config.idle_timeout)
            }
        };
        let request_metrics = inputs.metrics.request_metrics(
            inputs.direction,
            inputs.label.clone(),
            &config.route_names(),
        );
        let ejected_endpoints_gauge = endpoints
            .outlier
            .as_ref()
            .map(|_| gauge(&resilience.ejected_endpoints));
        let stack = DestinationStack {
            request_metrics,
            ejected_endpoints_gauge,
            source: inputs.source,
            direction: inputs.direction,
            label: inputs.label,
            config: Arc::new(config),
            endpoints,
            breaker,
            budget,
            limit,
            rate_limit,
            clients,
            client_settings,
            metrics: inputs.metrics,
        };
        stack.publish_circuit_state(now);
        if let (Some((_, detector)), Some(gauge)) =
            (&stack.endpoints.outlier, &stack.ejected_endpoints_gauge)
        {
            gauge.set(detector.lock().expect("not poisoned").ejected_count(now) as i64);
        }
        stack
    }

    /// The endpoint for the next attempt: power of two choices, skipping
    /// endpoints outlier detection ejected. Under `DryRun` an ejected
    /// endpoint keeps its traffic; an attempt Enforce would have sent
    /// elsewhere is counted (`dry_run_would_reject{reason="outlier-ejected"}`).
    /// `None` only without endpoints.
    pub fn choose_endpoint(&self, now: Instant) -> Option<usize> {
        let endpoints = &self.endpoints;
        let detector = endpoints
            .outlier
            .as_ref()
            .map(|(_, d)| d.lock().expect("not poisoned"));
        let ejected = |i: usize| detector.as_ref().is_some_and(|d| d.is_ejected(now, &i));
        let enforce = !self.config.dry_run;
        let index = BALANCER_DRAWS.with_borrow_mut(|draws| {
            balancer::pick(&endpoints.list, |i| enforce && ejected(i), now, draws)
        })?;
        if !enforce && ejected(index) && (0..endpoints.list.len()).any(|i| !ejected(i)) {
            self.metrics
                .resilience
                .dry_run_would_reject
                .with_label_values(&[self.direction, &self.label, "outlier-ejected"])
                .inc();
        }
        Some(index)
    }

    /// An attempt's result for the outlier detector (see
    /// [`Endpoints::record_result`]).
    pub fn record_endpoint_result(&self, index: usize, failure: bool, now: Instant) {
        let report = EndpointReport {
            direction: self.direction,
            label: &self.label,
            metrics: &self.metrics,
            gauge: self.ejected_endpoints_gauge.as_ref(),
            dry_run: self.config.dry_run,
        };
        self.endpoints.record_result(&report, index, failure, now);
    }

    pub fn publish_circuit_state(&self, now: Instant) {
        if let Some(breaker) = &self.breaker {
            let state = breaker.state.lock().expect("not poisoned").state(now);
            breaker.gauge.set(state.state_gauge_value());
        }
    }
}

/// Breaker state may carry over when everything but the fallback is unchanged.
fn same_thresholds(a: &BreakerSettings, b: &BreakerSettings) -> bool {
    a.thresholds == b.thresholds && a.failure_on == b.failure_on
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn target(port: u16) -> HostPort {
        HostPort {
            host: "10.0.0.1".into(),
            port,
        }
    }

    fn config(dry_run: bool) -> DestinationConfig {
        let mut config =
            DestinationConfig::without_policy(Duration::from_secs(1), Duration::from_secs(60));
        config.dry_run = dry_run;
        config.outlier = Some(OutlierSettings {
            consecutive_failures: 2,
            base_ejection_time: Duration::from_secs(30),
            max_ejection_percent: 50,
            grpc_codes: Default::default(),
        });
        config
    }

    fn build(
        config: DestinationConfig,
        ports: &[u16],
        metrics: &Arc<Metrics>,
        previous: Option<&DestinationStack>,
    ) -> DestinationStack {
        let connector = Connector {
            connect_timeout: config.connect_timeout,
            mark: None,
        };
        DestinationStack::build(
            StackInputs {
                source: (0, 0),
                direction: "outbound",
                label: "web.shop.svc.cluster.local:80".into(),
                config,
                targets: ports.iter().map(|p| target(*p)).collect(),
                connector: &connector,
                metrics: metrics.clone(),
            },
            previous,
        )
    }

    fn index_of(stack: &DestinationStack, port: u16) -> usize {
        stack
            .endpoints
            .targets
            .iter()
            .position(|t| t.port == port)
            .unwrap()
    }

    fn ejected(stack: &DestinationStack, port: u16, now: Instant) -> bool {
        let (_, detector) = stack.endpoints.outlier.as_ref().unwrap();
        let detector = detector.lock().unwrap();
        detector.is_ejected(now, &index_of(stack, port))
    }

    fn counter(metrics: &Metrics, name: &str, fragment: &str) -> f64 {
        let text = String::from_utf8(metrics.render()).unwrap();
        text.lines()
            .filter(|l| l.starts_with(name) && l.contains(fragment))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    #[tokio::test]
    async fn a_new_endpoint_set_keeps_what_is_known_of_endpoints_that_stay() {
        let metrics = Metrics::new(10);
        let now = Instant::now();
        let old = build(config(false), &[9000, 9001, 9002], &metrics, None);
        // 9001 is ejected, 9002 has one failure of two, 9000 is slow and busy.
        for _ in 0..2 {
            old.record_endpoint_result(index_of(&old, 9001), true, now);
        }
        old.record_endpoint_result(index_of(&old, 9002), true, now);
        old.endpoints.list[0].observe(Duration::from_millis(400), now);
        let in_flight = old.endpoints.list[0].start();

        // A pod is added (9003), another removed (9000 stays, in a new order).
        let new = build(
            config(false),
            &[9003, 9002, 9001, 9000],
            &metrics,
            Some(&old),
        );
        assert!(ejected(&new, 9001, now), "the ejection survives");
        assert!(!ejected(&new, 9003, now) && !ejected(&new, 9002, now));
        // The streak survived: one more failure ejects 9002 (now 2 of 4).
        new.record_endpoint_result(index_of(&new, 9002), true, now);
        assert!(ejected(&new, 9002, now));
        let slow = &new.endpoints.list[index_of(&new, 9000)];
        assert!(slow.estimate(now) >= Duration::from_millis(399));
        assert_eq!(slow.pending(), 1, "requests in flight still count");
        drop(in_flight);
        assert_eq!(slow.pending(), 0);
        assert_eq!(new.endpoints.list[0].estimate(now), Duration::ZERO);
        assert_eq!(
            counter(&metrics, "outrigger_ejected_endpoints", "outbound"),
            2.0
        );
        // Ejected endpoints are (all but) skipped by the new list's balancer
        // too: P2C draws a few times to avoid them, so rarely lands on one.
        let to_ejected = (0..1000)
            .map(|_| new.endpoints.targets[new.choose_endpoint(now).unwrap()].port)
            .filter(|port| [9001, 9002].contains(port))
            .count();
        assert!(to_ejected < 50, "{to_ejected} of 1000 to ejected endpoints");
    }

    #[tokio::test]
    async fn dry_run_counts_ejections_but_keeps_sending_to_the_endpoint() {
        let metrics = Metrics::new(10);
        let now = Instant::now();
        let stack = build(config(true), &[9000, 9001], &metrics, None);
        for _ in 0..2 {
            stack.record_endpoint_result(index_of(&stack, 9001), true, now);
        }
        assert!(ejected(&stack, 9001, now), "the detector still decides");
        assert_eq!(
            counter(&metrics, "outrigger_ejections_total", "outbound"),
            1.0
        );
        assert_eq!(
            counter(&metrics, "outrigger_ejected_endpoints", "outbound"),
            1.0
        );
        let mut to_ejected = 0;
        for _ in 0..400 {
            let i = stack.choose_endpoint(now).unwrap();
            to_ejected += usize::from(stack.endpoints.targets[i].port == 9001);
        }
        assert!(
            to_ejected > 100,
            "the ejected endpoint keeps its traffic: {to_ejected}"
        );
        assert_eq!(
            counter(
                &metrics,
                "outrigger_dry_run_would_reject_total",
                "outlier-ejected"
            ),
            to_ejected as f64
        );
        // Enforced, the same ejection takes it out of rotation.
        let enforced = build(config(false), &[9000, 9001], &metrics, None);
        for _ in 0..2 {
            enforced.record_endpoint_result(index_of(&enforced, 9001), true, now);
        }
        for _ in 0..200 {
            let i = enforced.choose_endpoint(now).unwrap();
            assert_eq!(enforced.endpoints.targets[i].port, 9000);
        }
    }
}
