//! Defaults applied where a policy leaves a field unset (each field's doc
//! comment repeats its default), and [`with_defaults`], the effective policy.
//! Durations are plain numbers so they stay `const` and unit-explicit.

use crate::duration::Duration;
use crate::policy::*;

/// targetRef.group: the core API group.
pub const TARGET_GROUP: &str = "";
/// targetRef.kind.
pub const TARGET_KIND: &str = "Service";
/// mode.
pub const MODE: Mode = Mode::Enforce;

/// timeouts.request: a sidecar without one would hold callers forever.
pub const REQUEST_TIMEOUT_SECS: u64 = 15;
/// timeouts.connect.
pub const CONNECT_TIMEOUT_SECS: u64 = 1;
/// timeouts.idle.
pub const IDLE_TIMEOUT_SECS: u64 = 300;

/// retry.attempts (only when a retry section exists).
pub const RETRY_ATTEMPTS: u32 = 2;
/// retry.codes: the statuses a gateway or overloaded server answers with.
pub const RETRY_CODES: [u16; 3] = [502, 503, 504];
/// retry.on: only failures where the request was surely not processed, so
/// replaying is safe whatever the method.
pub const RETRY_ON: [RetryOn; 3] = [
    RetryOn::ConnectFailure,
    RetryOn::RefusedStream,
    RetryOn::ResetBeforeRequest,
];
/// retry.grpcCodes: the status a gRPC server (or its load balancer) answers
/// when it cannot take the call; the rest say more about the call itself.
pub const RETRY_GRPC_CODES: [GrpcCode; 1] = [GrpcCode::Unavailable];
/// retry.backoff.base.
pub const BACKOFF_BASE_MS: u64 = 25;
/// retry.backoff.max.
pub const BACKOFF_MAX_MS: u64 = 1000;
/// retry.budget.percent.
pub const BUDGET_PERCENT: u32 = 20;
/// retry.budget.interval.
pub const BUDGET_INTERVAL_SECS: u64 = 10;
/// retry.budget.minRetryRate.count.
pub const MIN_RETRIES_PER_SECOND: u32 = 10;
/// retry.budget.minRetryRate.interval.
pub const MIN_RETRY_INTERVAL_SECS: u64 = 1;
/// retry.nonIdempotent: never replay what may not be safe to replay.
pub const NON_IDEMPOTENT: NonIdempotent = NonIdempotent::Never;
/// retry.maxBufferedBodyBytes.
pub const MAX_BUFFERED_BODY_BYTES: u64 = 64 * 1024;

/// circuitBreaker.failureRatePercent.
pub const FAILURE_RATE_PERCENT: u32 = 50;
/// circuitBreaker.minimumRequests.
pub const MINIMUM_REQUESTS: u32 = 20;
/// circuitBreaker.window.
pub const WINDOW_SECS: u64 = 10;
/// circuitBreaker.openFor.
pub const OPEN_FOR_SECS: u64 = 30;
/// circuitBreaker.maxOpenFor.
pub const MAX_OPEN_FOR_SECS: u64 = 300;
/// circuitBreaker.halfOpenRequests.
pub const HALF_OPEN_REQUESTS: u32 = 3;
/// circuitBreaker.fallback.status.
pub const FALLBACK_STATUS: u16 = 503;
/// circuitBreaker.fallback.contentType.
pub const FALLBACK_CONTENT_TYPE: &str = "application/json";
/// circuitBreaker.fallback.body.
pub const FALLBACK_BODY: &str = r#"{"error":"circuit open"}"#;
/// circuitBreaker.failureOn.
pub const FAILURE_ON: [FailureKind; 3] = [
    FailureKind::ServerError,
    FailureKind::Timeout,
    FailureKind::ConnectionError,
];
/// circuitBreaker.grpcCodes and outlierDetection.grpcCodes: the statuses a
/// failing server answers with (the gRPC counterparts of 5xx and timeouts).
pub const GRPC_FAILURE_CODES: [GrpcCode; 4] = [
    GrpcCode::Unavailable,
    GrpcCode::Internal,
    GrpcCode::Unknown,
    GrpcCode::DeadlineExceeded,
];

/// outlierDetection.consecutiveFailures.
pub const CONSECUTIVE_FAILURES: u32 = 5;
/// outlierDetection.baseEjectionTime.
pub const BASE_EJECTION_SECS: u64 = 30;
/// outlierDetection.maxEjectionPercent.
pub const MAX_EJECTION_PERCENT: u32 = 50;

/// limits.maxPendingRequests: shed at once rather than queue unasked.
pub const MAX_PENDING_REQUESTS: u32 = 0;
/// limits.pendingTimeout.
pub const PENDING_TIMEOUT_SECS: u64 = 1;

fn ms(v: u64) -> Option<Duration> {
    Some(Duration::from_millis(v))
}

fn secs(v: u64) -> Option<Duration> {
    Some(Duration::from_secs(v))
}

/// The effective policy: every field of every section the user set, with the
/// defaults above where they left it unset; routes inherit unset request,
/// backendRequest and retry fields from the policy's own. Sections the user
/// did not write stay absent (no retries, breaker or limits nobody asked
/// for), except timeouts, which always apply. A route carries no connect or
/// idle timeout and no retry budget of its own (a connection and the budget
/// serve every route): those are the policy's.
///
/// Idempotent, so the operator can send its result and the proxy apply it
/// again: [`crate::semantics::effective`] reads policies through it in both
/// modes.
pub fn with_defaults(spec: &ResiliencePolicySpec) -> ResiliencePolicySpec {
    let timeouts = timeouts(spec.timeouts.as_ref(), None);
    // A BackendTrafficPolicy's budget stands in for one spec.retry leaves unset.
    let traffic_budget = spec.backend_traffic_budget.as_ref().map(filled_budget);
    let retry = spec
        .retry
        .as_ref()
        .map(|r| match (&r.budget, &traffic_budget) {
            (None, Some(budget)) => retry(
                &Retry {
                    budget: Some(budget.clone()),
                    ..r.clone()
                },
                None,
            ),
            _ => retry(r, None),
        });
    let routes = spec
        .routes
        .iter()
        .map(|route| {
            let own = route.timeouts.clone().unwrap_or_default();
            Route {
                name: route.name.clone(),
                r#match: route.r#match.clone(),
                timeouts: Some(Timeouts {
                    request: own.request.or(timeouts.request),
                    backend_request: own.backend_request.or(timeouts.backend_request),
                    connect: None,
                    idle: None,
                }),
                retry: match (&route.retry, &retry) {
                    (Some(own), parent) => Some(self::retry(own, parent.as_ref())),
                    (None, parent) => parent.clone(),
                }
                .map(|r| Retry { budget: None, ..r }),
                backends: route.backends.clone(),
                request_headers: route.request_headers.clone(),
                response_headers: route.response_headers.clone(),
                source: route.source.clone(),
            }
        })
        .collect();
    ResiliencePolicySpec {
        target_ref: spec.target_ref.clone(),
        mode: Some(spec.mode.unwrap_or(MODE)),
        timeouts: Some(timeouts),
        retry,
        circuit_breaker: spec.circuit_breaker.as_ref().map(|cb| CircuitBreaker {
            failure_rate_percent: cb.failure_rate_percent.or(Some(FAILURE_RATE_PERCENT)),
            minimum_requests: cb.minimum_requests.or(Some(MINIMUM_REQUESTS)),
            window: cb.window.or(secs(WINDOW_SECS)),
            slow_call: cb.slow_call.clone(),
            open_for: cb.open_for.or(secs(OPEN_FOR_SECS)),
            max_open_for: cb.max_open_for.or(secs(MAX_OPEN_FOR_SECS)),
            half_open_requests: cb.half_open_requests.or(Some(HALF_OPEN_REQUESTS)),
            fallback: Some(fallback(cb.fallback.clone().unwrap_or_default())),
            failure_on: cb.failure_on.clone().or_else(|| Some(FAILURE_ON.to_vec())),
            grpc_codes: cb
                .grpc_codes
                .clone()
                .or_else(|| Some(GRPC_FAILURE_CODES.to_vec())),
        }),
        outlier_detection: spec.outlier_detection.as_ref().map(|o| OutlierDetection {
            consecutive_failures: o.consecutive_failures.or(Some(CONSECUTIVE_FAILURES)),
            base_ejection_time: o.base_ejection_time.or(secs(BASE_EJECTION_SECS)),
            max_ejection_percent: o.max_ejection_percent.or(Some(MAX_EJECTION_PERCENT)),
            grpc_codes: o
                .grpc_codes
                .clone()
                .or_else(|| Some(GRPC_FAILURE_CODES.to_vec())),
        }),
        // The queue exists only behind a concurrency limit.
        limits: spec
            .limits
            .as_ref()
            .map(|l| match l.max_concurrent_requests {
                Some(max) => Limits {
                    max_concurrent_requests: Some(max),
                    max_pending_requests: l.max_pending_requests.or(Some(MAX_PENDING_REQUESTS)),
                    pending_timeout: l.pending_timeout.or(secs(PENDING_TIMEOUT_SECS)),
                },
                None => l.clone(),
            }),
        rate_limit: spec.rate_limit.as_ref().map(|r| RateLimit {
            requests_per_second: r.requests_per_second,
            burst: r.burst.or(Some(r.requests_per_second)),
        }),
        routes,
        exclusive_routes: spec.exclusive_routes,
        backend_traffic_budget: traffic_budget,
    }
}

/// A budget with the defaults where it leaves fields unset.
fn filled_budget(own: &RetryBudget) -> RetryBudget {
    let default = budget();
    RetryBudget {
        percent: own.percent.or(default.percent),
        interval: own.interval.or(default.interval),
        min_retry_rate: own.min_retry_rate.clone().or(default.min_retry_rate),
    }
}

/// The retry budget of a Service whose policy sets none: what spec.retry
/// gets without a budget, and what retries only routes make draw on.
pub fn budget() -> RetryBudget {
    RetryBudget {
        percent: Some(BUDGET_PERCENT),
        interval: secs(BUDGET_INTERVAL_SECS),
        min_retry_rate: Some(RetryRate {
            count: MIN_RETRIES_PER_SECOND,
            interval: Duration::from_secs(MIN_RETRY_INTERVAL_SECS),
        }),
    }
}

fn fallback(own: Fallback) -> Fallback {
    Fallback {
        status: own.status.or(Some(FALLBACK_STATUS)),
        content_type: own
            .content_type
            .or_else(|| Some(FALLBACK_CONTENT_TYPE.to_string())),
        body: own.body.or_else(|| Some(FALLBACK_BODY.to_string())),
    }
}

fn timeouts(own: Option<&Timeouts>, parent: Option<&Timeouts>) -> Timeouts {
    let own = own.cloned().unwrap_or_default();
    let parent = parent.cloned().unwrap_or(Timeouts {
        request: secs(REQUEST_TIMEOUT_SECS),
        backend_request: None,
        connect: secs(CONNECT_TIMEOUT_SECS),
        idle: secs(IDLE_TIMEOUT_SECS),
    });
    Timeouts {
        request: own.request.or(parent.request),
        backend_request: own.backend_request.or(parent.backend_request),
        connect: own.connect.or(parent.connect),
        idle: own.idle.or(parent.idle),
    }
}

fn retry(own: &Retry, parent: Option<&Retry>) -> Retry {
    let parent = parent.cloned().unwrap_or_else(|| Retry {
        attempts: Some(RETRY_ATTEMPTS),
        codes: Some(RETRY_CODES.to_vec()),
        on: Some(RETRY_ON.to_vec()),
        backoff: Some(Backoff {
            base: ms(BACKOFF_BASE_MS),
            max: ms(BACKOFF_MAX_MS),
        }),
        budget: Some(budget()),
        non_idempotent: Some(NON_IDEMPOTENT),
        max_buffered_body_bytes: Some(MAX_BUFFERED_BODY_BYTES),
        grpc_codes: Some(RETRY_GRPC_CODES.to_vec()),
    });
    let own_backoff = own.backoff.clone().unwrap_or_default();
    let parent_backoff = parent.backoff.clone().unwrap_or_default();
    let own_budget = own.budget.clone().unwrap_or_default();
    let parent_budget = parent.budget.clone().unwrap_or_default();
    Retry {
        attempts: own.attempts.or(parent.attempts),
        codes: own.codes.clone().or(parent.codes),
        on: own.on.clone().or(parent.on),
        backoff: Some(Backoff {
            base: own_backoff.base.or(parent_backoff.base),
            max: own_backoff.max.or(parent_backoff.max),
        }),
        budget: Some(RetryBudget {
            percent: own_budget.percent.or(parent_budget.percent),
            interval: own_budget.interval.or(parent_budget.interval),
            min_retry_rate: own_budget.min_retry_rate.or(parent_budget.min_retry_rate),
        }),
        non_idempotent: own.non_idempotent.or(parent.non_idempotent),
        max_buffered_body_bytes: own
            .max_buffered_body_bytes
            .or(parent.max_buffered_body_bytes),
        grpc_codes: own.grpc_codes.clone().or(parent.grpc_codes),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: serde_json::Value) -> ResiliencePolicySpec {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn fills_only_sections_the_user_wrote() {
        let s = with_defaults(&spec(serde_json::json!({
            "targetRef": {"name": "p"},
            "retry": {"attempts": 1}
        })));
        assert_eq!(s.mode, Some(Mode::Enforce));
        assert_eq!(s.timeouts.as_ref().unwrap().request, secs(15));
        let r = s.retry.unwrap();
        assert_eq!(r.attempts, Some(1));
        assert_eq!(r.backoff.unwrap().max, ms(1000));
        assert!(s.circuit_breaker.is_none());
        assert!(s.limits.is_none());
    }

    #[test]
    fn a_breaker_section_gets_every_default() {
        let s = with_defaults(&spec(serde_json::json!({
            "targetRef": {"name": "p"},
            "circuitBreaker": {"fallback": {"status": 429}},
            "rateLimit": {"requestsPerSecond": 7}
        })));
        let cb = s.circuit_breaker.unwrap();
        assert_eq!(cb.open_for, secs(30));
        assert_eq!(cb.failure_on, Some(FAILURE_ON.to_vec()));
        assert_eq!(cb.grpc_codes, Some(GRPC_FAILURE_CODES.to_vec()));
        assert_eq!(
            cb.fallback,
            Some(Fallback {
                status: Some(429),
                content_type: Some("application/json".into()),
                body: Some(r#"{"error":"circuit open"}"#.into()),
            })
        );
        assert_eq!(s.rate_limit.unwrap().burst, Some(7));
    }

    #[test]
    fn routes_inherit_then_override() {
        let s = with_defaults(&spec(serde_json::json!({
            "targetRef": {"name": "p"},
            "timeouts": {"request": "5s", "backendRequest": "1s"},
            "retry": {"attempts": 3, "codes": [503]},
            "routes": [{"match": {"pathPrefix": "/charge"}, "timeouts": {"request": "10s"},
                        "retry": {"attempts": 0}}]
        })));
        let route = &s.routes[0];
        let t = route.timeouts.as_ref().unwrap();
        assert_eq!((t.request, t.backend_request), (secs(10), secs(1)));
        let r = route.retry.as_ref().unwrap();
        assert_eq!((r.attempts, r.codes.clone()), (Some(0), Some(vec![503])));
        assert_eq!(r.grpc_codes, Some(vec![GrpcCode::Unavailable]));
    }
}
