use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::duration::Duration;

/// Timeouts, with Gateway API (GEP-1742) names and meanings; `0s` disables
/// request and backendRequest.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "!has(self.request) || !has(self.backendRequest) || duration(self.request) == duration('0s') || duration(self.backendRequest) <= duration(self.request)",
     "message": "backendRequest must be <= request", "fieldPath": ".backendRequest"}
]))]
pub struct Timeouts {
    /// The whole call, retries and backoff included; past it the caller gets
    /// 504 (a gRPC caller DEADLINE_EXCEEDED). It covers the response body
    /// too when its length is declared (Content-Length), cutting a body still
    /// arriving; for a stream (chunked without a length, server-sent events,
    /// gRPC) it ends at the response headers, and idle bounds the rest. A gRPC
    /// request's grpc-timeout header shortens it, never lengthens it. 0s: no
    /// limit. Default 15s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<Duration>,
    /// Each attempt (per-try timeout); at most request. 0s: no limit.
    /// Default: none (an attempt may use what request leaves).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_request: Option<Duration>,
    /// Establishing a TCP connection to an endpoint; more than 0s. In
    /// spec.timeouts only (a connection serves every route). Default 1s
    /// (the proxy's --connect-timeout applies only where no policy does).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect: Option<Duration>,
    /// A pooled connection idle this long is closed, and a call whose body
    /// moves in neither direction for this long is cut (a gRPC one ends with
    /// grpc-status 4). In spec.timeouts only (a connection serves every
    /// route). Default 5m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle: Option<Duration>,
}
