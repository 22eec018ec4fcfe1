use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::GrpcCode;
use crate::duration::Duration;

/// Circuit breaker for calls to the Service (resilience4j/opossum style):
/// closed, it counts outcomes over a rolling window and opens past a failure
/// or slow-call rate; open, it answers with the fallback at once; after
/// openFor it lets probes through (half-open) and closes if they succeed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "!has(self.window) || (duration(self.window) >= duration('1s') && duration(self.window) <= duration('10m'))",
     "message": "window must be between 1s and 10m", "fieldPath": ".window"},
    {"rule": "!has(self.openFor) || duration(self.openFor) > duration('0s')", "message": "openFor must be greater than 0s", "fieldPath": ".openFor"},
    {"rule": "!has(self.maxOpenFor) || duration(has(self.openFor) ? self.openFor : '30s') <= duration(self.maxOpenFor)",
     "message": "maxOpenFor must be >= openFor (30s when unset)", "fieldPath": ".maxOpenFor"},
    {"rule": "has(self.maxOpenFor) || !has(self.openFor) || duration(self.openFor) <= duration('5m')",
     "message": "openFor must be <= maxOpenFor (5m when unset)", "fieldPath": ".openFor"}
]))]
pub struct CircuitBreaker {
    /// Opens the circuit when at least this percentage of the calls in the
    /// window failed, 0-100. Default 50.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 100))]
    pub failure_rate_percent: Option<u32>,
    /// Calls the window must hold before its rates are judged; at least 1.
    /// Default 20.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub minimum_requests: Option<u32>,
    /// Rolling window of outcomes, 1s to 10m (kept in buckets). Default 10s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<Duration>,
    /// Also opens when too many calls are slow. Default: slowness is not judged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slow_call: Option<SlowCall>,
    /// How long the circuit stays open before probing; doubles each time it
    /// opens again without having recovered, up to maxOpenFor. More than 0s.
    /// Default 30s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_for: Option<Duration>,
    /// The longest the circuit stays open; at least openFor. Default 5m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_open_for: Option<Duration>,
    /// Probes let through while half-open; all must succeed to close the
    /// circuit. At least 1. Default 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub half_open_requests: Option<u32>,
    /// The response callers get while the circuit is open. Default status 503,
    /// application/json, {"error":"circuit open"}.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<Fallback>,
    /// Outcomes that count as failures: server-error (any 5xx), gateway-error
    /// (502, 503, 504), timeout, connection-error. Default [server-error,
    /// timeout, connection-error].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4))]
    pub failure_on: Option<Vec<FailureKind>>,
    /// gRPC statuses that count as failures, without repeats (a gRPC error
    /// is an HTTP 200 response, so failureOn does not see it). Read from a
    /// trailers-only response (grpc-status in the headers), else from the
    /// trailers, unless a response message came first: a stream that
    /// delivered a message counts as a success. Default [unavailable,
    /// internal, unknown, deadline-exceeded]; [] counts none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 16), extend("x-kubernetes-list-type" = "set"))]
    pub grpc_codes: Option<Vec<GrpcCode>>,
}

/// Slow-call detection: opens the circuit when at least ratePercent of the
/// calls in the window took duration or longer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SlowCall {
    /// Calls taking at least this long are slow; more than 0s.
    pub duration: Duration,
    /// Slow-call percentage that opens the circuit, 0-100.
    #[schemars(range(max = 100))]
    pub rate_percent: u32,
}

/// The response sent instead of calling an open circuit's Service.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Fallback {
    /// Status code, 200-599. Default 503.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 200, max = 599))]
    pub status: Option<u16>,
    /// Content-Type of the body: a header value (visible ASCII, spaces and
    /// tabs), at most 256 characters. Default application/json.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256), regex(pattern = r"^[\t -~]*$"))]
    pub content_type: Option<String>,
    /// The body, at most 4096 bytes. Default {"error":"circuit open"}.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub body: Option<String>,
}

/// An outcome the circuit breaker counts as a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum FailureKind {
    /// Any 5xx response.
    ServerError,
    /// A 502, 503 or 504 response.
    GatewayError,
    /// The attempt timed out.
    Timeout,
    /// No connection, or it broke before a response.
    ConnectionError,
}
