//! The `ResiliencePolicy` spec: what users write. Optional fields stay `None`
//! when unset, so defaults (see [`crate::defaults`]) apply only where the user
//! said nothing.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::duration::Duration;

/// Resilience behaviour for calls to one Service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[cfg_attr(feature = "kube", derive(kube::CustomResource))]
#[cfg_attr(
    feature = "kube",
    kube(
        group = "outrigger.dev",
        version = "v1alpha1",
        kind = "ResiliencePolicy",
        namespaced,
        status = "ResiliencePolicyStatus",
        shortname = "rp",
        category = "outrigger",
        printcolumn = r#"{"name": "Target", "type": "string", "jsonPath": ".spec.targetRef.name"}"#,
        printcolumn = r#"{"name": "Mode", "type": "string", "jsonPath": ".spec.mode"}"#,
        printcolumn = r#"{"name": "Accepted", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Accepted\")].status"}"#,
        printcolumn = r#"{"name": "Current", "type": "integer", "jsonPath": ".status.proxies.current"}"#,
        printcolumn = r#"{"name": "Total", "type": "integer", "jsonPath": ".status.proxies.total"}"#,
        printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#
    )
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResiliencePolicySpec {
    /// The Service (and optionally port) this policy applies to.
    pub target_ref: TargetRef,
    /// `Enforce` (default) rejects what the policy rejects; `DryRun` only counts it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<Timeouts>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<Retry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub circuit_breaker: Option<CircuitBreaker>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<OutlierDetection>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<Limits>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
    /// Per-route overrides of timeouts and retry, first match wins.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub routes: Vec<Route>,
}

/// Policy attachment (Gateway API style): the Service the policy targets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.kind == 'Service'", "message": "targetRef.kind must be Service"},
    {"rule": "self.group == '' || self.group == 'core'", "message": "targetRef.group must be \"\" (core)"}
]))]
pub struct TargetRef {
    /// API group of the target: "" (core).
    #[serde(default)]
    pub group: String,
    /// Kind of the target: Service.
    #[serde(default = "default_kind")]
    pub kind: String,
    /// Name of the Service, in the policy's namespace.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,
    /// Only this Service port; all ports when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub port: Option<u16>,
}

fn default_kind() -> String {
    "Service".to_string()
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Mode {
    #[default]
    Enforce,
    DryRun,
}

/// Timeouts (Gateway API GEP-1742 names). Default: request 15s, connect 1s, idle 5m.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "!has(self.request) || !has(self.backendRequest) || duration(self.request) == duration('0s') || duration(self.backendRequest) <= duration(self.request)",
     "message": "backendRequest must be <= request", "fieldPath": ".backendRequest"}
]))]
pub struct Timeouts {
    /// The whole call, retries and backoff included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<Duration>,
    /// Each attempt; must not exceed `request`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_request: Option<Duration>,
    /// Establishing a TCP connection to an endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect: Option<Duration>,
    /// An idle pooled connection is closed after this long.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle: Option<Duration>,
}

/// Retries (Gateway API GEP-1731 meaning of `attempts`: retries after the first try).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Retry {
    /// Retries after the first try (0 disables retries). Default 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 10))]
    pub attempts: Option<u32>,
    /// Response statuses that are retried. Default [502, 503, 504].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), extend("x-kubernetes-validations" = [
        {"rule": "self.all(c, c >= 100 && c <= 599)", "message": "codes must be HTTP statuses 100-599"}
    ]))]
    pub codes: Option<Vec<u16>>,
    /// Transport failures that are retried. Default [connect-failure, refused-stream, reset-before-request].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4), extend("x-kubernetes-validations" = [
        {"rule": "self.all(x, self.exists_one(y, y == x))", "message": "conditions must not repeat"}
    ]))]
    pub on: Option<Vec<RetryOn>>,
    /// Exponential backoff with full jitter. Default base 25ms, max 1s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<Backoff>,
    /// Caps retries to a share of recent requests. Default 20% over 10s, plus 10/s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<RetryBudget>,
    /// Whether POST/PATCH may be replayed. Default Never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub non_idempotent: Option<NonIdempotent>,
    /// Larger request bodies are sent once and never replayed. Default 65536.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 16777216))]
    pub max_buffered_body_bytes: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum RetryOn {
    ConnectFailure,
    RefusedStream,
    Reset,
    ResetBeforeRequest,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "!has(self.base) || duration(self.base) > duration('0s')", "message": "base must be greater than 0s", "fieldPath": ".base"},
    {"rule": "duration(has(self.base) ? self.base : '25ms') <= duration(has(self.max) ? self.max : '1s')",
     "message": "max must be >= base", "fieldPath": ".max"}
]))]
pub struct Backoff {
    /// First retry waits up to this long. Default 25ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<Duration>,
    /// No wait exceeds this. Default 1s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<Duration>,
}

/// Retry budget (GEP-3388).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetryBudget {
    /// Retries may add at most this percentage of recent requests. Default 20.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 100))]
    pub percent: Option<u32>,
    /// The window "recent" means. Default 10s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<Duration>,
    /// Retries always allowed regardless of traffic. Default 10 per 1s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_retry_rate: Option<RetryRate>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetryRate {
    pub count: u32,
    pub interval: Duration,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum NonIdempotent {
    #[default]
    Never,
    IfIdempotencyKey,
    Always,
}

/// Circuit breaker per destination. Defaults: 50%, 20 requests, 10s window,
/// open 30s doubling to 5m, 3 half-open probes, fallback 503.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "!has(self.window) || (duration(self.window) >= duration('1s') && duration(self.window) <= duration('10m'))",
     "message": "window must be between 1s and 10m", "fieldPath": ".window"},
    {"rule": "!has(self.openFor) || duration(self.openFor) > duration('0s')", "message": "openFor must be greater than 0s", "fieldPath": ".openFor"},
    {"rule": "duration(has(self.openFor) ? self.openFor : '30s') <= duration(has(self.maxOpenFor) ? self.maxOpenFor : '5m')",
     "message": "openFor must be <= maxOpenFor", "fieldPath": ".openFor"}
]))]
pub struct CircuitBreaker {
    /// Failure rate (percent of calls in the window) that opens the circuit. Default 50.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 100))]
    pub failure_rate_percent: Option<u32>,
    /// Calls the window must hold before the rate is judged. Default 20.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub minimum_requests: Option<u32>,
    /// Rolling window of outcomes, 1s to 10m. Default 10s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slow_call: Option<SlowCall>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_for: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_open_for: Option<Duration>,
    /// Probes admitted while half-open; all must succeed to close. Default 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub half_open_requests: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<Fallback>,
    /// What counts as a failure. Default [server-error, timeout, connection-error].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4))]
    pub failure_on: Option<Vec<FailureKind>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SlowCall {
    /// Calls at least this long are slow.
    pub duration: Duration,
    /// Slow-call rate (percent) that opens the circuit.
    #[schemars(range(max = 100))]
    pub rate_percent: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Fallback {
    /// Status of the fallback response. Default 503.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 200, max = 599))]
    pub status: Option<u16>,
    /// Default application/json.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// At most 4096 bytes. Default {"error":"circuit open"}.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub body: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum FailureKind {
    /// Any 5xx.
    ServerError,
    /// 502, 503, 504 only.
    GatewayError,
    Timeout,
    ConnectionError,
}

/// Envoy-style outlier detection. Defaults: 5 failures, 30s, 50%.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "!has(self.baseEjectionTime) || duration(self.baseEjectionTime) > duration('0s')",
     "message": "baseEjectionTime must be greater than 0s", "fieldPath": ".baseEjectionTime"}
]))]
pub struct OutlierDetection {
    /// Consecutive failures (5xx, connection errors, timeouts) that eject an endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub consecutive_failures: Option<u32>,
    /// An ejection lasts this long times the endpoint's ejection count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_ejection_time: Option<Duration>,
    /// Never more than this percentage of endpoints ejected at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 100))]
    pub max_ejection_percent: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Limits {
    /// Requests in flight to the destination at once; more wait or are shed (503).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_concurrent_requests: Option<u32>,
    /// Requests that may wait for a slot. Default 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_pending_requests: Option<u32>,
    /// Default 1s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_timeout: Option<Duration>,
}

/// Inbound token bucket: 429 with Retry-After past the rate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateLimit {
    /// Sustained rate; beyond it inbound requests get 429 with Retry-After.
    #[schemars(range(min = 1))]
    pub requests_per_second: u32,
    /// Default: requestsPerSecond.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Route {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(rename = "match")]
    pub r#match: RouteMatch,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<Timeouts>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<Retry>,
}

/// Which requests a route applies to; all given conditions must hold.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "!(has(self.pathPrefix) && has(self.pathExact))", "message": "set pathPrefix or pathExact, not both"}
]))]
pub struct RouteMatch {
    /// Path prefix by segments: /charge matches /charge and /charge/1, not /charges.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024), regex(pattern = r"^/"))]
    pub path_prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024), regex(pattern = r"^/"))]
    pub path_exact: Option<String>,
    /// An uppercase HTTP method such as GET.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[A-Z]+$"))]
    pub method: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub headers: Vec<HeaderMatch>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HeaderMatch {
    #[schemars(
        length(min = 1, max = 256),
        regex(pattern = r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")
    )]
    pub name: String,
    #[schemars(length(max = 4096))]
    pub value: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResiliencePolicyStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default)]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxies: Option<ProxyCount>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
    #[serde(default)]
    pub reason: String,
    #[serde(default)]
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ProxyCount {
    pub total: u32,
    pub current: u32,
}
