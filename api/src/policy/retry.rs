use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::GrpcCode;
use crate::duration::Duration;

/// Retries, with Gateway API meanings (GEP-1731 retry, GEP-3388 budget).
/// A retry happens only while the request timeout leaves time for it and the
/// budget allows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Retry {
    /// Retries after the first try, at most 10; 0 disables retries. Default 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 10))]
    pub attempts: Option<u32>,
    /// Response statuses that are retried, each 100-599; never one that
    /// another Outrigger proxy made to shed load (x-outrigger-error:
    /// overloaded, circuit-open or rate-limited). Default [502, 503, 504].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), extend("x-kubernetes-validations" = [
        {"rule": "self.all(c, c >= 100 && c <= 599)", "message": "codes must be HTTP statuses 100-599"}
    ]))]
    pub codes: Option<Vec<u16>>,
    /// Transport failures that are retried, without repeats: connect-failure
    /// (no connection), refused-stream (HTTP/2 REFUSED_STREAM, or a stream a
    /// graceful GOAWAY left unprocessed: not processed),
    /// reset-before-request (closed before the request was sent), reset (closed
    /// at any point, so the request may have been processed). Default
    /// [connect-failure, refused-stream, reset-before-request]. Quote the key
    /// as "on" for kubectl, whose YAML 1.1 parser reads a bare on as true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4), extend("x-kubernetes-validations" = [
        {"rule": "self.all(x, self.exists_one(y, y == x))", "message": "conditions must not repeat"}
    ]))]
    pub on: Option<Vec<RetryOn>>,
    /// Wait between attempts: exponential with full jitter; a Retry-After
    /// response header replaces it, and one longer than 10s or than what is
    /// left of the request timeout ends retrying. Default base 25ms, max 1s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<Backoff>,
    /// Caps retries to a share of recent requests, so retries cannot multiply
    /// the load on a struggling Service; one budget per Service, which every
    /// route's retries draw on. In spec.retry only. Default 20% over 10s,
    /// and always 10 per second (also when only routes retry).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<RetryBudget>,
    /// Whether requests with non-idempotent methods (POST, PATCH) are replayed:
    /// Never, IfIdempotencyKey (when they carry an Idempotency-Key header) or
    /// Always. Default Never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub non_idempotent: Option<NonIdempotent>,
    /// Request bodies (of any framing: Content-Length, chunked, HTTP/2,
    /// trailers included) are copied up to this many bytes as they stream to
    /// the first attempt, so they can be replayed; a larger body streams on
    /// but is not retried. At most 16777216 (16 MiB). Default 65536.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 16777216))]
    pub max_buffered_body_bytes: Option<u64>,
    /// gRPC statuses that are retried, without repeats. Read where the status
    /// is known before anything reached the caller: a trailers-only response
    /// (grpc-status in the headers, how servers answer a call that fails
    /// before sending a message); a status in trailers after a response began
    /// is passed on, never retried. gRPC calls are POSTs, so one the server
    /// answered is replayed only where nonIdempotent allows. Default
    /// [unavailable]; cancelled, deadline-exceeded, resource-exhausted and the
    /// rest are opt-in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 16), extend("x-kubernetes-list-type" = "set"))]
    pub grpc_codes: Option<Vec<GrpcCode>>,
}

/// A transport failure that may be retried (see `Retry::on`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum RetryOn {
    ConnectFailure,
    RefusedStream,
    Reset,
    ResetBeforeRequest,
}

/// Exponential backoff with full jitter: before retry n, a random wait up to
/// min(max, base * 2^(n-1)). An unset bound is inherited (on a route) or the
/// default, so comparing against it is left to rules that can see those.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "!has(self.base) || duration(self.base) > duration('0s')", "message": "base must be greater than 0s", "fieldPath": ".base"},
    {"rule": "!has(self.base) || !has(self.max) || duration(self.base) <= duration(self.max)",
     "message": "max must be >= base", "fieldPath": ".max"}
]))]
pub struct Backoff {
    /// Longest wait before the first retry; more than 0s. Default 25ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<Duration>,
    /// Longest wait before any retry; at least base. Default 1s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<Duration>,
}

/// Retry budget (GEP-3388): retries may add at most `percent` of the requests
/// seen over `interval`, and `minRetryRate` is always allowed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetryBudget {
    /// Retries as a percentage of recent requests, 0-100. Default 20.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 100))]
    pub percent: Option<u32>,
    /// How far back "recent" reaches; more than 0s. Default 10s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<Duration>,
    /// Retries allowed regardless of traffic, so a quiet Service still gets
    /// some. Default 10 per 1s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_retry_rate: Option<RetryRate>,
}

/// `count` retries per `interval`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetryRate {
    /// Retries allowed per interval.
    pub count: u32,
    /// The period count applies to; more than 0s.
    pub interval: Duration,
}

/// Whether requests with non-idempotent methods may be replayed: Never (POST
/// and PATCH are sent once), IfIdempotencyKey (replayed only when they carry
/// an Idempotency-Key header), Always (every method is replayed).
// No doc comments on the variants: they would make the schema a oneOf whose
// description replaces the field's (and its default) in the CRD.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum NonIdempotent {
    #[default]
    Never,
    IfIdempotencyKey,
    Always,
}
