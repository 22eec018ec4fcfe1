//! A policy compiled for the hot path: [`semantics::effective`] (every default
//! filled in, the same in file mode and from the operator) in the engine's
//! types, routes ready to match. Built once per destination and policy
//! generation, never per request.

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, Method, StatusCode};
use outrigger_api::policy::{FailureKind, GrpcCode, NonIdempotent, ResiliencePolicySpec, RetryOn};
use outrigger_api::semantics;
use outrigger_api::stream::DestinationSnapshot;
use outrigger_proxy_core::direction::Direction;
use outrigger_proxy_policy::{ActivePolicy, ServiceRef};
use outrigger_resilience::grpc::Codes;
use outrigger_resilience::BreakerConfig;

use crate::backends::{Backends, HeaderEdits};
pub use crate::route_match::{GrpcMethod, RouteMatcher};

#[derive(Debug, Clone, PartialEq)]
pub struct DestinationConfig {
    /// Name of the policy this came from (`namespace/name`), or `None` for defaults.
    pub policy: Option<String>,
    pub dry_run: bool,
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
    pub default_route: RouteConfig,
    pub routes: Vec<(RouteMatcher, RouteConfig)>,
    /// Gateway API routes decide all routing: a request no route matches is
    /// answered 404 (`ProxyError::NoRoute`).
    pub exclusive_routes: bool,
    pub budget: Option<BudgetConfig>,
    pub breaker: Option<BreakerSettings>,
    pub outlier: Option<OutlierSettings>,
    pub limits: Option<LimitSettings>,
    pub rate_limit: Option<RateLimitSettings>,
}

/// What varies per route: timeouts and retries, and where a Gateway API
/// route sends its requests and how it changes their headers.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteConfig {
    /// The `route` label of metrics and the access log.
    pub name: Arc<str>,
    pub request_timeout: Option<Duration>,
    pub backend_timeout: Option<Duration>,
    pub retry: Option<RetrySettings>,
    /// `None`: the destination itself serves the route.
    pub backends: Option<Arc<Backends>>,
    pub request_headers: Option<HeaderEdits>,
    pub response_headers: Option<HeaderEdits>,
}

impl RouteConfig {
    /// A route that only sets timeouts and retry, served by its own
    /// destination.
    pub fn plain(
        name: Arc<str>,
        request_timeout: Option<Duration>,
        backend_timeout: Option<Duration>,
        retry: Option<RetrySettings>,
    ) -> Self {
        RouteConfig {
            name,
            request_timeout,
            backend_timeout,
            retry,
            backends: None,
            request_headers: None,
            response_headers: None,
        }
    }

    /// Whether the route does more than time and retry requests: picks a
    /// backend or changes headers (`forward.rs` then routes it itself).
    pub fn steers(&self) -> bool {
        self.backends.is_some() || self.request_headers.is_some() || self.response_headers.is_some()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct RetrySettings {
    pub attempts: u32,
    pub codes: Vec<u16>,
    pub on: Vec<RetryOn>,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    pub non_idempotent: NonIdempotent,
    pub max_buffered_body_bytes: u64,
    /// gRPC statuses retried (from trailers-only responses).
    pub grpc_codes: Codes,
}

#[derive(Debug, Clone, PartialEq)]
pub struct BudgetConfig {
    pub percent: u32,
    pub interval: Duration,
    pub min_retries: u32,
    pub min_interval: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct BreakerSettings {
    /// The state machine's thresholds.
    pub thresholds: BreakerConfig,
    pub failure_on: Vec<FailureKind>,
    pub fallback_status: StatusCode,
    pub fallback_content_type: String,
    pub fallback_body: String,
    /// gRPC statuses counted as failures.
    pub grpc_codes: Codes,
}

#[derive(Debug, Clone, PartialEq)]
pub struct OutlierSettings {
    pub consecutive_failures: u32,
    pub base_ejection_time: Duration,
    pub max_ejection_percent: u32,
    /// gRPC statuses counted as an endpoint's failures.
    pub grpc_codes: Codes,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LimitSettings {
    pub max_concurrent: u32,
    pub max_pending: u32,
    pub pending_timeout: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RateLimitSettings {
    pub requests_per_second: u32,
    pub burst: u32,
}

impl DestinationConfig {
    /// Behaviour without any policy: plain forwarding with the proxy's connect
    /// and idle timeouts; no request timeout, retries, breaker or limits the
    /// user did not ask for. The same in both modes.
    pub fn without_policy(connect_timeout: Duration, idle_timeout: Duration) -> Self {
        DestinationConfig {
            policy: None,
            dry_run: false,
            connect_timeout,
            idle_timeout,
            default_route: RouteConfig::plain(semantics::DEFAULT_ROUTE.into(), None, None, None),
            routes: Vec::new(),
            exclusive_routes: false,
            budget: None,
            breaker: None,
            outlier: None,
            limits: None,
            rate_limit: None,
        }
    }

    /// A policy compiled for the hot path. What it means (defaults,
    /// inheritance, what is off) is [`semantics::effective`]'s, the same
    /// whether the spec came from a file or, already with its defaults, from
    /// the operator; this only converts types.
    pub fn compile(name: String, spec: &ResiliencePolicySpec) -> Self {
        let e = semantics::effective(spec);
        DestinationConfig {
            policy: Some(name),
            dry_run: e.dry_run,
            connect_timeout: e.connect_timeout,
            idle_timeout: e.idle_timeout,
            default_route: route_config(e.default_route),
            routes: e
                .routes
                .into_iter()
                .map(|(m, route)| (RouteMatcher::compile(&m), route_config(route)))
                .collect(),
            exclusive_routes: e.exclusive_routes,
            budget: e.retry_budget.map(|b| BudgetConfig {
                percent: b.percent,
                interval: b.interval,
                min_retries: b.min_retries,
                min_interval: b.min_retry_interval,
            }),
            breaker: e.circuit_breaker.map(breaker),
            outlier: e.outlier_detection.map(|o| OutlierSettings {
                consecutive_failures: o.consecutive_failures,
                base_ejection_time: o.base_ejection_time,
                max_ejection_percent: o.max_ejection_percent,
                grpc_codes: codes(&o.grpc_codes),
            }),
            limits: e.limits.map(|l| LimitSettings {
                max_concurrent: l.max_concurrent,
                max_pending: l.max_pending,
                pending_timeout: l.pending_timeout,
            }),
            rate_limit: e.rate_limit.map(|r| RateLimitSettings {
                requests_per_second: r.requests_per_second,
                burst: r.burst,
            }),
        }
    }

    /// File mode: the policy the active policy file holds for calls to
    /// `service` on Service port `port` (the conflict rule and the choice by
    /// port are [`semantics`]'), else the proxy's own settings.
    pub fn from_policy_file(
        active: &ActivePolicy,
        service: Option<&ServiceRef>,
        port: u16,
        connect_timeout: Duration,
        idle_timeout: Duration,
    ) -> Self {
        match service.and_then(|s| active.policy_for(s, port)) {
            Some(p) => DestinationConfig::compile(
                format!(
                    "{}/{}",
                    p.metadata.namespace.as_deref().unwrap_or("default"),
                    p.metadata.name
                ),
                &p.spec,
            ),
            None => DestinationConfig::without_policy(connect_timeout, idle_timeout),
        }
    }

    /// Operator mode: the policy a snapshot carries (the operator chose it
    /// by the same rules), compiled here as a file's would be, else the
    /// proxy's own settings.
    pub fn from_snapshot(
        snapshot: &DestinationSnapshot,
        connect_timeout: Duration,
        idle_timeout: Duration,
    ) -> Self {
        match &snapshot.policy {
            Some(policy) => DestinationConfig::compile(policy.name.clone(), &policy.spec),
            None => DestinationConfig::without_policy(connect_timeout, idle_timeout),
        }
    }

    /// The `route` label of every route, the default one first.
    pub fn route_names(&self) -> Vec<Arc<str>> {
        std::iter::once(self.default_route.name.clone())
            .chain(self.routes.iter().map(|(_, r)| r.name.clone()))
            .collect()
    }

    /// The part of the policy this side enforces, so that a call through two
    /// proxies meets each field once:
    ///
    /// | side | enforces |
    /// |---|---|
    /// | outbound (the caller's proxy) | timeouts, retries and their budget, circuit breaker, outlier detection, balancing |
    /// | inbound (each of the Service's pods) | rate limit, concurrency limit |
    ///
    /// Retrying on both sides would multiply attempts (3 × 3 calls for one
    /// failing request); limiting on the caller's side would cap each caller
    /// separately instead of protecting the pod. `mode` and the connect/idle
    /// timeouts of the side's own connections apply to both.
    pub fn for_side(mut self, direction: Direction) -> Self {
        match direction {
            Direction::Inbound => {
                self.default_route = RouteConfig::plain(self.default_route.name, None, None, None);
                self.routes.clear();
                self.exclusive_routes = false;
                self.budget = None;
                self.breaker = None;
                self.outlier = None;
            }
            Direction::Outbound => {
                self.limits = None;
                self.rate_limit = None;
            }
        }
        self
    }

    /// The first route whose match holds, else the destination's defaults
    /// (also when routes are exclusive: see [`Self::matched_route`]).
    /// `target` is the path with its query (`/a?b=c`).
    pub fn route(&self, method: &Method, target: &str, headers: &HeaderMap) -> &RouteConfig {
        self.matched_route(method, target, headers)
            .unwrap_or(&self.default_route)
    }

    /// The first route whose match holds; the destination's defaults when
    /// none does, unless routes are exclusive (`None`: answer 404).
    pub fn matched_route(
        &self,
        method: &Method,
        target: &str,
        headers: &HeaderMap,
    ) -> Option<&RouteConfig> {
        match self
            .routes
            .iter()
            .find(|(m, _)| m.matches(method, target, headers))
        {
            Some((_, config)) => Some(config),
            None if self.exclusive_routes => None,
            None => Some(&self.default_route),
        }
    }

    /// Whether a request's route must be chosen before its stack is
    /// (routes are exclusive, or one picks backends or changes headers).
    pub fn steers(&self) -> bool {
        self.exclusive_routes || self.routes.iter().any(|(_, r)| r.steers())
    }
}

/// The set of gRPC codes a policy lists.
fn codes(listed: &[GrpcCode]) -> Codes {
    listed.iter().map(|c| c.number()).collect()
}

fn route_config(route: semantics::EffectiveRoute) -> RouteConfig {
    RouteConfig {
        backends: Backends::compile(&route.backends),
        request_headers: route.request_headers.as_ref().map(HeaderEdits::compile),
        response_headers: route.response_headers.as_ref().map(HeaderEdits::compile),
        name: route.name.into(),
        request_timeout: route.request_timeout,
        backend_timeout: route.backend_request_timeout,
        retry: route.retry.map(|r| RetrySettings {
            attempts: r.attempts,
            codes: r.codes,
            on: r.on,
            backoff_base: r.backoff_base,
            backoff_max: r.backoff_max,
            non_idempotent: r.non_idempotent,
            max_buffered_body_bytes: r.max_buffered_body_bytes,
            grpc_codes: codes(&r.grpc_codes),
        }),
    }
}

fn breaker(cb: semantics::EffectiveBreaker) -> BreakerSettings {
    BreakerSettings {
        thresholds: BreakerConfig {
            failure_rate_percent: cb.failure_rate_percent,
            minimum_requests: cb.minimum_requests,
            window: cb.window,
            slow_call: cb.slow_call,
            open_for: cb.open_for,
            max_open_for: cb.max_open_for,
            half_open_requests: cb.half_open_requests,
        },
        failure_on: cb.failure_on,
        // Validation keeps it 200-599.
        fallback_status: StatusCode::from_u16(cb.fallback_status)
            .unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
        fallback_content_type: cb.fallback_content_type,
        fallback_body: cb.fallback_body,
        grpc_codes: codes(&cb.grpc_codes),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use outrigger_api::manifest::{parse_documents, Document};

    fn secs(v: u64) -> Duration {
        Duration::from_secs(v)
    }

    fn compile(yaml: &str) -> DestinationConfig {
        let text = format!(
            "apiVersion: outrigger.dev/v1alpha1\nkind: ResiliencePolicy\nmetadata: {{name: p}}\nspec:\n  targetRef: {{name: p}}\n{yaml}"
        );
        let Document::Policy(p) = parse_documents(&text).unwrap().remove(0) else {
            panic!()
        };
        DestinationConfig::compile("default/p".into(), &p.spec)
    }

    #[test]
    fn each_side_enforces_its_own_fields() {
        let full = compile(concat!(
            "  timeouts: {request: 2s, backendRequest: 1s, connect: 300ms}\n",
            "  retry: {attempts: 3}\n",
            "  circuitBreaker: {}\n",
            "  outlierDetection: {}\n",
            "  limits: {maxConcurrentRequests: 4}\n",
            "  rateLimit: {requestsPerSecond: 5}\n",
            "  routes: [{match: {pathPrefix: /a}, retry: {attempts: 1}}]\n",
        ));
        let outbound = full.clone().for_side(Direction::Outbound);
        assert!(outbound.default_route.retry.is_some());
        assert_eq!(
            outbound.default_route.request_timeout,
            Some(Duration::from_secs(2))
        );
        assert!(outbound.budget.is_some() && outbound.breaker.is_some());
        assert!(outbound.outlier.is_some());
        assert_eq!(outbound.routes.len(), 1);
        assert!(outbound.limits.is_none() && outbound.rate_limit.is_none());

        let inbound = full.for_side(Direction::Inbound);
        assert!(inbound.limits.is_some() && inbound.rate_limit.is_some());
        let route = inbound.route(&Method::GET, "/a", &HeaderMap::new());
        assert_eq!(route.retry, None);
        assert_eq!(route.request_timeout, None);
        assert_eq!(route.backend_timeout, None);
        assert!(inbound.budget.is_none() && inbound.breaker.is_none());
        assert!(inbound.outlier.is_none());
        // The connection to the pod's own app keeps the policy's connect timeout.
        assert_eq!(inbound.connect_timeout, Duration::from_millis(300));
    }

    #[test]
    fn defaults_fill_unset_fields() {
        let c = compile("  retry: {}\n  circuitBreaker: {}\n");
        let retry = c.default_route.retry.as_ref().unwrap();
        assert_eq!(retry.attempts, 2);
        assert_eq!(retry.codes, vec![502, 503, 504]);
        assert_eq!(retry.non_idempotent, NonIdempotent::Never);
        assert_eq!(retry.max_buffered_body_bytes, 65536);
        assert!(retry.grpc_codes.contains(14) && !retry.grpc_codes.contains(4));
        assert_eq!(c.budget.as_ref().unwrap().percent, 20);
        let b = c.breaker.unwrap();
        let t = b.thresholds;
        assert_eq!(
            (
                t.failure_rate_percent,
                t.minimum_requests,
                t.half_open_requests
            ),
            (50, 20, 3)
        );
        assert_eq!(b.fallback_status, StatusCode::SERVICE_UNAVAILABLE);
        for code in [14, 13, 2, 4] {
            assert!(b.grpc_codes.contains(code), "{code}");
        }
        assert!(!b.grpc_codes.contains(1) && !b.grpc_codes.contains(5));
    }

    #[test]
    fn grpc_routes_match_grpc_calls_to_their_method() {
        let c = compile(concat!(
            "  retry: {grpcCodes: [unavailable, resource-exhausted]}\n",
            "  outlierDetection: {grpcCodes: []}\n",
            "  routes:\n",
            "  - name: get\n",
            "    match: {grpc: {service: pkg.v1.Items, method: Get}}\n",
            "    retry: {nonIdempotent: Always}\n",
            "  - name: items\n",
            "    match: {grpc: {service: pkg.v1.Items}}\n",
            "    retry: {grpcCodes: [cancelled]}\n",
            "  - name: any-grpc\n",
            "    match: {grpc: {}}\n",
        ));
        let mut grpc = HeaderMap::new();
        grpc.insert("content-type", "application/grpc+proto".parse().unwrap());
        let route = |path: &str, h: &HeaderMap| c.route(&Method::POST, path, h).name.to_string();
        assert_eq!(route("/pkg.v1.Items/Get", &grpc), "get");
        assert_eq!(route("/pkg.v1.Items/List", &grpc), "items");
        assert_eq!(route("/pkg.v1.Other/Get", &grpc), "any-grpc");
        // Not a gRPC path (/service/method): no gRPC match holds.
        assert_eq!(route("/pkg.v1.Items/Get/x", &grpc), "default");
        assert_eq!(route("/pkg.v1.Items", &grpc), "default");
        // Not gRPC: the same path does not match.
        assert_eq!(route("/pkg.v1.Items/Get", &HeaderMap::new()), "default");
        let get = c.route(&Method::POST, "/pkg.v1.Items/Get", &grpc);
        let retry = get.retry.as_ref().unwrap();
        assert_eq!(retry.non_idempotent, NonIdempotent::Always);
        assert!(retry.grpc_codes.contains(8), "inherited");
        let items = c.route(&Method::POST, "/pkg.v1.Items/List", &grpc);
        let codes = items.retry.as_ref().unwrap().grpc_codes;
        assert!(codes.contains(1) && !codes.contains(14), "replaced");
        assert!(c.outlier.as_ref().unwrap().grpc_codes.is_empty());
    }

    #[test]
    fn routes_override_and_inherit() {
        let c = compile(
            "  timeouts: {request: 5s, backendRequest: 1s}\n  retry: {attempts: 3, codes: [503]}\n  routes:\n  - match: {pathPrefix: /charge, method: POST}\n    timeouts: {request: 10s}\n    retry: {attempts: 0}\n  - match: {pathPrefix: /slow}\n    retry: {backoff: {base: 1s, max: 2s}}\n",
        );
        let h = HeaderMap::new();
        let charge = c.route(&Method::POST, "/charge/1", &h);
        assert_eq!(charge.request_timeout, Some(secs(10)));
        assert_eq!(charge.backend_timeout, Some(secs(1)), "inherited");
        assert!(charge.retry.is_none(), "attempts: 0 disables retries");
        // GET /charge does not match the POST route.
        assert_eq!(&*c.route(&Method::GET, "/charge", &h).name, "default");
        assert_eq!(&*c.route(&Method::POST, "/charges", &h).name, "default");
        let slow = c.route(&Method::GET, "/slow", &h).retry.as_ref().unwrap();
        assert_eq!((slow.attempts, slow.codes.clone()), (3, vec![503]));
        assert_eq!(slow.backoff_base, secs(1));
    }

    #[test]
    fn limits_need_a_concurrency_cap() {
        assert!(compile("  limits: {maxPendingRequests: 3}\n")
            .limits
            .is_none());
        let l = compile("  limits: {maxConcurrentRequests: 2}\n")
            .limits
            .unwrap();
        assert_eq!((l.max_concurrent, l.max_pending), (2, 0));
    }

    #[test]
    fn every_retry_is_under_the_services_budget() {
        // Only a route retries: the default budget still caps it.
        let c = compile("  routes: [{name: reads, match: {method: GET}, retry: {attempts: 1}}]\n");
        assert!(c.default_route.retry.is_none());
        let budget = c.budget.as_ref().expect("a route's retries have a budget");
        assert_eq!((budget.percent, budget.min_retries), (20, 10));
        // Nothing retries: no budget to keep.
        assert!(compile("  retry: {attempts: 0}\n").budget.is_none());
    }

    #[test]
    fn routes_are_labelled_by_name_or_index() {
        let c = compile(
            "  routes:\n  - {name: charge, match: {pathPrefix: /charge}}\n  - match: {pathPrefix: /x}\n",
        );
        let names: Vec<String> = c.route_names().iter().map(|n| n.to_string()).collect();
        assert_eq!(names, ["default", "charge", "route-1"]);
    }

    #[test]
    fn the_policys_defaults_not_the_proxys_apply() {
        let c = compile("");
        assert_eq!(c.connect_timeout, secs(1));
        assert_eq!(c.idle_timeout, secs(300));
        assert_eq!(c.default_route.request_timeout, Some(secs(15)));
        let none = DestinationConfig::without_policy(Duration::from_millis(250), secs(90));
        assert_eq!(
            (none.connect_timeout, none.idle_timeout),
            (Duration::from_millis(250), secs(90))
        );
        assert_eq!(none.default_route.request_timeout, None);
    }
}
