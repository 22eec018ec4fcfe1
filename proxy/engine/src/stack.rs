//! Everything the proxy keeps per destination: the compiled policy, the state
//! of its breaker, retry budget, limits and endpoints, and its connection pool.
//! Built once per destination and policy generation; state whose parameters a
//! new generation leaves unchanged carries over, so a policy edit does not
//! reset an open breaker or a spent budget.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use prometheus::{IntGauge, IntGaugeVec};

use outrigger_http::client::UpstreamClients;
use outrigger_proxy_core::addr::HostPort;
use outrigger_proxy_core::metrics::{Metrics, RequestMetrics};
use outrigger_resilience::{CircuitBreaker, OutlierDetector, RetryBudget, TokenBucket};
use outrigger_transport::connect::Connector;

use super::balancer::Endpoint;
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

impl Endpoints {
    fn new(targets: Vec<HostPort>, outlier: Option<OutlierSettings>, now: Instant) -> Self {
        let list = targets
            .iter()
            .map(|t| Endpoint::new(t.clone(), now))
            .collect();
        let outlier = outlier.map(|settings| {
            let mut detector = OutlierDetector::new(
                settings.consecutive_failures,
                settings.base_ejection_time,
                settings.max_ejection_percent,
            );
            detector.set_endpoints((0..targets.len()).collect::<Vec<_>>());
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
            None => Arc::new(Endpoints::new(inputs.targets, config.outlier.clone(), now)),
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
        stack
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
