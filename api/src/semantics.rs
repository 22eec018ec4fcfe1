//! What a policy means, decided in one place for both ways a policy reaches a
//! proxy: compiled by the operator and streamed, or read by the proxy from its
//! policy file. The operator and the proxy's file mode call the same functions
//! here, so a policy cannot mean one thing in a file and another in a cluster:
//!
//! - defaults and inheritance: [`with_defaults`] (the effective spec: what the
//!   operator streams and shows) and [`effective`], the typed reading of it
//!   every proxy enforces (which it computes again from a streamed spec;
//!   `with_defaults` is idempotent, so both modes read the same);
//! - which policy governs a call: [`arbitrate`] (the conflict rule: of two
//!   policies on one Service and port, the oldest wins) and [`select`] (the
//!   policy for a Service port: the one naming the port, else the one
//!   naming none);
//! - Service ports and endpoint ports: [`target_port`], [`endpoint_port`]
//!   (where calls to a Service port land on an endpoint) and
//!   [`service_port_of`] (which Service port traffic arriving at an endpoint
//!   port came through).
//!
//! Pure: no I/O, no clock.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::defaults;
pub use crate::defaults::with_defaults;
use crate::policy::*;

/// Which proxy acts on a field: the same in both modes, since a call through
/// two proxies (the caller's, then the Service's pod's) must meet each field
/// once. The engine's `DestinationConfig::for_side` implements it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Chooses which policy applies (the operator, and a proxy's file mode).
    Selection,
    /// The calling pod's proxy (outbound).
    Caller,
    /// The proxies of the Service's pods (inbound).
    Server,
    /// Both: each for its own connections (connect, idle) or decisions (mode).
    Both,
}

impl Side {
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Selection => "selection",
            Side::Caller => "caller",
            Side::Server => "server",
            Side::Both => "both",
        }
    }
}

/// Each section of the spec (and the fields that differ from their
/// section) and the side that enforces it; see [`enforced_by`].
pub const ENFORCED_BY: [(&str, Side); 12] = [
    ("spec.targetRef", Side::Selection),
    ("spec.mode", Side::Both),
    ("spec.timeouts", Side::Caller),
    ("spec.timeouts.connect", Side::Both),
    ("spec.timeouts.idle", Side::Both),
    ("spec.retry", Side::Caller),
    ("spec.circuitBreaker", Side::Caller),
    ("spec.outlierDetection", Side::Caller),
    ("spec.limits", Side::Server),
    ("spec.rateLimit", Side::Server),
    ("spec.routes", Side::Caller),
    ("spec", Side::Selection),
];

/// The side that enforces the field at `path` (wire names, `[]` for list
/// items): the entry of [`ENFORCED_BY`] that is its longest prefix.
pub fn enforced_by(path: &str) -> Side {
    ENFORCED_BY
        .iter()
        .filter(|(prefix, _)| {
            path == *prefix
                || path
                    .strip_prefix(prefix)
                    .is_some_and(|rest| rest.starts_with(['.', '[']))
        })
        .max_by_key(|(prefix, _)| prefix.len())
        .map_or(Side::Selection, |(_, side)| *side)
}

/// Fields a route may not set (relative to the route), why, and where they
/// belong: they act per connection or per Service, not per request, so a
/// route's copy could only be ignored. Validation, the CRD's rules and the
/// reference all refuse them with [`not_on_route`]'s message.
pub const NOT_ON_ROUTES: [(&str, &str, &str); 3] = [
    (
        "timeouts.connect",
        "a connection serves every route",
        "spec.timeouts.connect",
    ),
    (
        "timeouts.idle",
        "a connection serves every route",
        "spec.timeouts.idle",
    ),
    (
        "retry.budget",
        "every route's retries draw on the Service's budget",
        "spec.retry.budget",
    ),
];

/// The error for a field of [`NOT_ON_ROUTES`] set on a route.
pub fn not_on_route(why: &str, instead: &str) -> String {
    format!("not allowed on a route: {why}, so set {instead}")
}

/// The name of a policy's own settings as a route: what requests no route
/// matches use, and their `route` label in metrics and logs.
pub const DEFAULT_ROUTE: &str = "default";

/// A route's name in metrics and logs: its own, else `route-<index>`.
pub fn route_name(index: usize, route: &Route) -> String {
    route
        .name
        .clone()
        .unwrap_or_else(|| format!("route-{index}"))
}

/// A policy as the proxies enforce it: every default applied, every
/// inheritance resolved, every "off" spelled as `None`. Durations are
/// `std::time::Duration`.
#[derive(Debug, Clone, PartialEq)]
pub struct EffectivePolicy {
    /// mode: DryRun counts what would be rejected and lets it through.
    pub dry_run: bool,
    /// timeouts.connect (per connection, so the policy's only).
    pub connect_timeout: Duration,
    /// timeouts.idle (per connection, so the policy's only).
    pub idle_timeout: Duration,
    /// The policy's own timeouts and retry: requests no route matches.
    pub default_route: EffectiveRoute,
    /// spec.routes in order; the first whose match holds applies.
    pub routes: Vec<(RouteMatch, EffectiveRoute)>,
    /// Gateway API routes decide all routing: a request no route matches is
    /// answered 404 instead of taking the default route.
    pub exclusive_routes: bool,
    /// retry.budget, shared by every route's retries: present whenever any
    /// route (the default one included) retries, from spec.retry.budget or
    /// the default budget. No retry goes unbudgeted.
    pub retry_budget: Option<EffectiveBudget>,
    pub circuit_breaker: Option<EffectiveBreaker>,
    pub outlier_detection: Option<EffectiveOutlier>,
    /// Off without limits.maxConcurrentRequests (nothing to queue behind).
    pub limits: Option<EffectiveLimits>,
    pub rate_limit: Option<EffectiveRateLimit>,
}

/// What varies per route.
#[derive(Debug, Clone, PartialEq)]
pub struct EffectiveRoute {
    /// The `route` label: [`DEFAULT_ROUTE`], the route's name, or `route-<index>`.
    pub name: String,
    /// timeouts.request; `None`: no limit (0s).
    pub request_timeout: Option<Duration>,
    /// timeouts.backendRequest; `None`: no per-attempt limit (unset or 0s).
    pub backend_request_timeout: Option<Duration>,
    /// `None`: not retried (no retry section, or attempts 0).
    pub retry: Option<EffectiveRetry>,
    /// Where the route's requests go, one picked per request by weight
    /// (Gateway API backendRefs); empty: the destination itself.
    pub backends: Vec<Backend>,
    /// Request headers changed before the request goes upstream.
    pub request_headers: Option<HeaderModifier>,
    /// Response headers changed before the response goes back.
    pub response_headers: Option<HeaderModifier>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct EffectiveRetry {
    /// At least 1.
    pub attempts: u32,
    pub codes: Vec<u16>,
    pub on: Vec<RetryOn>,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    pub non_idempotent: NonIdempotent,
    pub max_buffered_body_bytes: u64,
    /// gRPC statuses retried (from trailers-only responses).
    pub grpc_codes: Vec<GrpcCode>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct EffectiveBudget {
    pub percent: u32,
    pub interval: Duration,
    pub min_retries: u32,
    pub min_retry_interval: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct EffectiveBreaker {
    pub failure_rate_percent: u32,
    pub minimum_requests: u32,
    pub window: Duration,
    /// (duration, ratePercent).
    pub slow_call: Option<(Duration, u32)>,
    pub open_for: Duration,
    pub max_open_for: Duration,
    pub half_open_requests: u32,
    pub failure_on: Vec<FailureKind>,
    pub fallback_status: u16,
    pub fallback_content_type: String,
    pub fallback_body: String,
    /// gRPC statuses counted as failures.
    pub grpc_codes: Vec<GrpcCode>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct EffectiveOutlier {
    pub consecutive_failures: u32,
    pub base_ejection_time: Duration,
    pub max_ejection_percent: u32,
    /// gRPC statuses counted as failures.
    pub grpc_codes: Vec<GrpcCode>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct EffectiveLimits {
    pub max_concurrent: u32,
    pub max_pending: u32,
    pub pending_timeout: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct EffectiveRateLimit {
    pub requests_per_second: u32,
    pub burst: u32,
}

/// `Some` of a field [`with_defaults`] always sets.
fn set<T>(value: Option<T>) -> T {
    value.expect("with_defaults sets every field of the sections it returns")
}

fn std(d: Option<crate::duration::Duration>) -> Duration {
    set(d).as_std()
}

/// A timeout where 0s means no limit.
fn limit(d: Option<crate::duration::Duration>) -> Option<Duration> {
    d.map(|d| d.as_std()).filter(|d| !d.is_zero())
}

/// The policy every proxy enforces for `spec` (valid, or the result is
/// unspecified): [`with_defaults`], read.
pub fn effective(spec: &ResiliencePolicySpec) -> EffectivePolicy {
    let spec = with_defaults(spec);
    let timeouts = set(spec.timeouts.clone());
    let default_route = EffectiveRoute {
        name: DEFAULT_ROUTE.to_string(),
        request_timeout: limit(timeouts.request),
        backend_request_timeout: limit(timeouts.backend_request),
        retry: spec.retry.as_ref().and_then(retry),
        backends: Vec::new(),
        request_headers: None,
        response_headers: None,
    };
    let routes: Vec<(RouteMatch, EffectiveRoute)> = spec
        .routes
        .iter()
        .enumerate()
        .map(|(i, route)| {
            // with_defaults resolved the inheritance: a route's fields are its own.
            let t = set(route.timeouts.clone());
            let effective = EffectiveRoute {
                name: route_name(i, route),
                request_timeout: limit(t.request),
                backend_request_timeout: limit(t.backend_request),
                retry: route.retry.as_ref().and_then(retry),
                backends: route.backends.clone(),
                request_headers: route.request_headers.clone(),
                response_headers: route.response_headers.clone(),
            };
            (route.r#match.clone(), effective)
        })
        .collect();
    let retries = default_route.retry.is_some() || routes.iter().any(|(_, r)| r.retry.is_some());
    let retry_budget = retries.then(|| {
        // with_defaults filled spec.retry's (from a BackendTrafficPolicy's
        // where spec.retry set none); retries only routes make draw on the
        // BackendTrafficPolicy's, else the default one.
        let b = spec
            .retry
            .as_ref()
            .and_then(|r| r.budget.clone())
            .or_else(|| spec.backend_traffic_budget.clone())
            .unwrap_or_else(defaults::budget);
        let min = set(b.min_retry_rate);
        EffectiveBudget {
            percent: set(b.percent),
            interval: std(b.interval),
            min_retries: min.count,
            min_retry_interval: min.interval.as_std(),
        }
    });
    EffectivePolicy {
        dry_run: spec.mode == Some(Mode::DryRun),
        connect_timeout: std(timeouts.connect),
        idle_timeout: std(timeouts.idle),
        default_route,
        routes,
        exclusive_routes: spec.exclusive_routes,
        retry_budget,
        circuit_breaker: spec.circuit_breaker.as_ref().map(|cb| {
            let fallback = set(cb.fallback.clone());
            EffectiveBreaker {
                failure_rate_percent: set(cb.failure_rate_percent),
                minimum_requests: set(cb.minimum_requests),
                window: std(cb.window),
                slow_call: cb
                    .slow_call
                    .as_ref()
                    .map(|s| (s.duration.as_std(), s.rate_percent)),
                open_for: std(cb.open_for),
                max_open_for: std(cb.max_open_for),
                half_open_requests: set(cb.half_open_requests),
                failure_on: set(cb.failure_on.clone()),
                fallback_status: set(fallback.status),
                fallback_content_type: set(fallback.content_type),
                fallback_body: set(fallback.body),
                grpc_codes: set(cb.grpc_codes.clone()),
            }
        }),
        outlier_detection: spec.outlier_detection.as_ref().map(|o| EffectiveOutlier {
            consecutive_failures: set(o.consecutive_failures),
            base_ejection_time: std(o.base_ejection_time),
            max_ejection_percent: set(o.max_ejection_percent),
            grpc_codes: set(o.grpc_codes.clone()),
        }),
        limits: spec.limits.as_ref().and_then(|l| {
            Some(EffectiveLimits {
                max_concurrent: l.max_concurrent_requests?,
                max_pending: set(l.max_pending_requests),
                pending_timeout: std(l.pending_timeout),
            })
        }),
        rate_limit: spec.rate_limit.as_ref().map(|r| EffectiveRateLimit {
            requests_per_second: r.requests_per_second,
            burst: set(r.burst).max(1),
        }),
    }
}

/// A retry section after [`with_defaults`]: `None` when it retries nothing.
fn retry(r: &Retry) -> Option<EffectiveRetry> {
    let backoff = set(r.backoff.clone());
    let attempts = set(r.attempts);
    (attempts > 0).then(|| EffectiveRetry {
        attempts,
        codes: set(r.codes.clone()),
        on: set(r.on.clone()),
        backoff_base: std(backoff.base),
        backoff_max: std(backoff.max),
        non_idempotent: set(r.non_idempotent),
        max_buffered_body_bytes: set(r.max_buffered_body_bytes),
        grpc_codes: set(r.grpc_codes.clone()),
    })
}

/// A policy as the conflict rule sees it.
#[derive(Debug, Clone)]
pub struct Claim<'a, T> {
    pub namespace: &'a str,
    pub name: &'a str,
    /// metadata.creationTimestamp, if it has one (a policy in a file often
    /// has not). Any `Ord` that orders times.
    pub created: Option<T>,
    pub target: &'a TargetRef,
}

/// Where a policy stands after [`arbitrate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// It governs its Service port (or the Service's other ports).
    Accepted,
    /// Another policy (this index among the claims) governs the same
    /// Service and port; this one applies nowhere.
    Conflicted { winner: usize },
}

/// The conflict rule. A policy claims its Service (targetRef.name, in its own
/// namespace) and port: targetRef.port, or no port (every port no
/// port-specific policy claims), so a port-specific policy and a portless
/// one do not conflict. When several claim the same Service and port, the
/// oldest wins (creationTimestamp; a policy without one, as in a file,
/// counts as older than any with one), then the first by namespace/name,
/// then the first given; the others are `Conflicted`.
///
/// Pass only valid policies: an invalid one claims nothing. Returns one
/// standing per claim, in the order given.
pub fn arbitrate<T: Ord>(claims: &[Claim<'_, T>]) -> Vec<Standing> {
    let mut order: Vec<usize> = (0..claims.len()).collect();
    // Stable: equal keys keep the order given.
    order.sort_by(|&a, &b| {
        let (a, b) = (&claims[a], &claims[b]);
        a.created
            .cmp(&b.created)
            .then_with(|| (a.namespace, a.name).cmp(&(b.namespace, b.name)))
    });
    let mut standings = vec![Standing::Accepted; claims.len()];
    let mut holders: BTreeMap<(&str, &str, Option<u16>), usize> = BTreeMap::new();
    for i in order {
        let c = &claims[i];
        let key = (c.namespace, c.target.name.as_str(), c.target.port);
        match holders.get(&key) {
            Some(&winner) => standings[i] = Standing::Conflicted { winner },
            None => {
                holders.insert(key, i);
            }
        }
    }
    standings
}

/// Of one Service's accepted policies, given as (targetRef.port, policy),
/// the one governing calls to Service port `port`: the one naming that port,
/// else the one naming no port.
pub fn select<P>(policies: impl IntoIterator<Item = (Option<u16>, P)>, port: u16) -> Option<P> {
    let mut portless = None;
    for (policy_port, policy) in policies {
        match policy_port {
            Some(p) if p == port => return Some(policy),
            Some(_) => {}
            None => {
                portless.get_or_insert(policy);
            }
        }
    }
    portless
}

/// A Service port as port resolution needs it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServicePort {
    /// The port's name ("" when unnamed); EndpointSlices name their ports
    /// after it.
    pub name: String,
    pub port: u16,
    /// The endpoint port when known from the Service alone: see [`target_port`].
    pub target_port: Option<u16>,
}

/// targetPort as the Service gives it: a number is the endpoint port, a name
/// is resolved per endpoint through its EndpointSlice (`None` here), and an
/// unset one is the Service port itself (Kubernetes' default).
pub fn target_port(port: u16, target: Option<&serde_json::Value>) -> Option<u16> {
    match target {
        None | Some(serde_json::Value::Null) => Some(port),
        Some(value) => value.as_u64().and_then(|n| u16::try_from(n).ok()),
    }
}

/// The endpoint port that calls to Service port `port` reach on an endpoint
/// whose EndpointSlice lists `endpoint_ports` (name, port). For a port the
/// Service declares (`service_port`): the slice port of the same name, else
/// the numeric targetPort, else the slice's only port. For one it does not
/// declare (or a Service not known): the slice port equal to it, else the
/// slice's only port.
pub fn endpoint_port<'a>(
    service_port: Option<&ServicePort>,
    endpoint_ports: impl IntoIterator<Item = (&'a str, u16)> + Clone,
    port: u16,
) -> Option<u16> {
    let only = || {
        let mut ports = endpoint_ports.clone().into_iter();
        match (ports.next(), ports.next()) {
            (Some((_, only)), None) => Some(only),
            _ => None,
        }
    };
    match service_port {
        Some(sp) => endpoint_ports
            .clone()
            .into_iter()
            .find(|(name, _)| *name == sp.name)
            .map(|(_, p)| p)
            .or(sp.target_port)
            .or_else(only),
        None => endpoint_ports
            .clone()
            .into_iter()
            .find(|(_, p)| *p == port)
            .map(|(_, p)| p)
            .or_else(only),
    }
}

/// The Service port whose calls land on `endpoint_port` of an endpoint
/// listing `endpoint_ports` (the inverse of [`endpoint_port`]): how inbound
/// traffic, which arrives at the pod's port, finds the Service port its
/// policy is chosen by. The first such port the Service declares.
pub fn service_port_of<'a>(
    service_ports: &[ServicePort],
    endpoint_ports: impl IntoIterator<Item = (&'a str, u16)> + Clone,
    endpoint_port: u16,
) -> Option<u16> {
    service_ports
        .iter()
        .find(|sp| {
            self::endpoint_port(Some(sp), endpoint_ports.clone(), sp.port) == Some(endpoint_port)
        })
        .map(|sp| sp.port)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(value: serde_json::Value) -> ResiliencePolicySpec {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn timeouts_apply_without_a_section_and_connect_is_the_policys() {
        let e = effective(&spec(json!({"targetRef": {"name": "p"}})));
        assert_eq!(
            e.default_route.request_timeout,
            Some(Duration::from_secs(15))
        );
        assert_eq!(e.connect_timeout, Duration::from_secs(1));
        assert_eq!(e.idle_timeout, Duration::from_secs(300));
        assert_eq!(e.default_route.retry, None);
        assert_eq!(e.retry_budget, None, "no retries, no budget");
    }

    #[test]
    fn zero_means_no_limit_and_zero_attempts_no_retry() {
        let e = effective(&spec(json!({
            "targetRef": {"name": "p"},
            "timeouts": {"request": "0s", "backendRequest": "0s"},
            "retry": {"attempts": 0}
        })));
        assert_eq!(e.default_route.request_timeout, None);
        assert_eq!(e.default_route.backend_request_timeout, None);
        assert_eq!(e.default_route.retry, None);
        assert_eq!(e.retry_budget, None);
    }

    #[test]
    fn a_route_only_retry_draws_on_the_default_budget() {
        let e = effective(&spec(json!({
            "targetRef": {"name": "p"},
            "routes": [{"match": {"method": "GET"}, "retry": {"attempts": 1}}]
        })));
        assert_eq!(e.default_route.retry, None);
        assert_eq!(e.routes[0].1.retry.as_ref().unwrap().attempts, 1);
        assert_eq!(
            e.retry_budget,
            Some(EffectiveBudget {
                percent: 20,
                interval: Duration::from_secs(10),
                min_retries: 10,
                min_retry_interval: Duration::from_secs(1),
            })
        );
    }

    #[test]
    fn routes_share_the_policys_budget_and_are_named() {
        let e = effective(&spec(json!({
            "targetRef": {"name": "p"},
            "timeouts": {"request": "5s"},
            "retry": {"attempts": 0, "budget": {"percent": 5}},
            "routes": [
                {"match": {"pathPrefix": "/a"}, "retry": {"attempts": 2}},
                {"name": "b", "match": {"pathPrefix": "/b"}}
            ]
        })));
        assert_eq!(e.retry_budget.as_ref().unwrap().percent, 5);
        let names: Vec<_> = e.routes.iter().map(|(_, r)| r.name.as_str()).collect();
        assert_eq!(names, ["route-0", "b"]);
        assert_eq!(e.routes[1].1.request_timeout, Some(Duration::from_secs(5)));
        assert_eq!(e.routes[1].1.retry, None, "inherits attempts 0");
    }

    #[test]
    fn a_streamed_effective_spec_means_what_the_spec_means() {
        let s = spec(json!({
            "targetRef": {"name": "p", "port": 80},
            "timeouts": {"backendRequest": "1s", "connect": "200ms"},
            "retry": {"codes": [503], "budget": {"minRetryRate": {"count": 1, "interval": "3s"}}},
            "circuitBreaker": {"fallback": {"status": 429}},
            "limits": {"maxConcurrentRequests": 3},
            "rateLimit": {"requestsPerSecond": 2},
            "routes": [{"match": {}, "timeouts": {"request": "2s"}, "retry": {"attempts": 1}}]
        }));
        let once = with_defaults(&s);
        assert_eq!(with_defaults(&once), once, "idempotent");
        assert_eq!(effective(&once), effective(&s));
        assert!(crate::validate::validate_spec(&once).is_ok(), "{once:?}");
    }

    fn target(name: &str, port: Option<u16>) -> TargetRef {
        TargetRef {
            port,
            ..TargetRef::service(name)
        }
    }

    #[test]
    fn the_oldest_then_the_first_by_name_wins() {
        let (web, web80) = (target("web", None), target("web", Some(80)));
        let claims = [
            Claim {
                namespace: "shop",
                name: "zeta",
                created: None::<&str>,
                target: &web,
            },
            Claim {
                namespace: "shop",
                name: "alpha",
                created: None,
                target: &web,
            },
            Claim {
                namespace: "shop",
                name: "old",
                created: None,
                target: &web80,
            },
            Claim {
                namespace: "shop",
                name: "aaa",
                created: Some("2026-01-02T00:00:00Z"),
                target: &web80,
            },
            Claim {
                namespace: "other",
                name: "zeta",
                created: None,
                target: &web,
            },
        ];
        assert_eq!(
            arbitrate(&claims),
            [
                Standing::Conflicted { winner: 1 },
                Standing::Accepted,
                Standing::Accepted,
                Standing::Conflicted { winner: 2 },
                Standing::Accepted,
            ]
        );
        let created = [
            Claim {
                namespace: "shop",
                name: "a",
                created: Some(2),
                target: &web,
            },
            Claim {
                namespace: "shop",
                name: "b",
                created: Some(1),
                target: &web,
            },
        ];
        assert_eq!(
            arbitrate(&created),
            [Standing::Conflicted { winner: 1 }, Standing::Accepted]
        );
    }

    #[test]
    fn each_field_has_its_side() {
        assert_eq!(enforced_by("spec.timeouts.request"), Side::Caller);
        assert_eq!(enforced_by("spec.timeouts.connect"), Side::Both);
        assert_eq!(enforced_by("spec.routes[].timeouts.request"), Side::Caller);
        assert_eq!(enforced_by("spec.limits.maxPendingRequests"), Side::Server);
        assert_eq!(enforced_by("spec.targetRef.port"), Side::Selection);
        assert_eq!(enforced_by("spec.retryx"), Side::Selection);
    }

    #[test]
    fn the_port_specific_policy_governs_its_port() {
        let policies = [(None, "all"), (Some(80), "http")];
        assert_eq!(select(policies, 80), Some("http"));
        assert_eq!(select(policies, 8080), Some("all"));
        assert_eq!(select([(Some(80), "http")], 8080), None);
    }

    #[test]
    fn ports_resolve_by_name_number_or_the_only_one() {
        let http = ServicePort {
            name: "http".into(),
            port: 80,
            target_port: target_port(80, Some(&json!("web"))),
        };
        let admin = ServicePort {
            name: "admin".into(),
            port: 9000,
            target_port: target_port(9000, Some(&json!(9090))),
        };
        let plain = ServicePort {
            name: String::new(),
            port: 81,
            target_port: target_port(81, None),
        };
        assert_eq!(
            (http.target_port, admin.target_port, plain.target_port),
            (None, Some(9090), Some(81))
        );
        let slice = [("http", 8080), ("admin", 9091)];
        assert_eq!(endpoint_port(Some(&http), slice, 80), Some(8080), "by name");
        assert_eq!(
            endpoint_port(Some(&admin), slice, 9000),
            Some(9091),
            "name first"
        );
        assert_eq!(
            endpoint_port(Some(&admin), [("x", 1), ("y", 2)], 9000),
            Some(9090)
        );
        assert_eq!(
            endpoint_port(Some(&http), [("", 7000)], 80),
            Some(7000),
            "the only port"
        );
        assert_eq!(endpoint_port(Some(&http), [("a", 1), ("b", 2)], 80), None);
        assert_eq!(endpoint_port(None, [("a", 1), ("b", 2)], 2), Some(2));
        assert_eq!(endpoint_port(None, [("a", 1)], 2), Some(1));
        let ports = [http, admin, plain];
        assert_eq!(service_port_of(&ports, slice, 8080), Some(80));
        assert_eq!(service_port_of(&ports, slice, 9091), Some(9000));
        assert_eq!(service_port_of(&ports, slice, 1234), None);
    }
}
