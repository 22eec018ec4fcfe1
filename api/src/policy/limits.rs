use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::duration::Duration;

/// Concurrency limit on calls to the Service: past it requests wait in a
/// short queue, then are shed with 503.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "has(self.maxConcurrentRequests) || !has(self.maxPendingRequests)",
     "message": "needs maxConcurrentRequests: without a limit nothing waits",
     "fieldPath": ".maxPendingRequests"},
    {"rule": "has(self.maxConcurrentRequests) || !has(self.pendingTimeout)",
     "message": "needs maxConcurrentRequests: without a limit nothing waits",
     "fieldPath": ".pendingTimeout"}
]))]
pub struct Limits {
    /// Requests in flight at once; at least 1. Default: no limit (and then
    /// nothing waits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_concurrent_requests: Option<u32>,
    /// Requests that may wait for a free slot; 0 sheds at once. Only with
    /// maxConcurrentRequests. Default 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_pending_requests: Option<u32>,
    /// How long a request waits for a slot before it is shed. Only with
    /// maxConcurrentRequests. Default 1s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_timeout: Option<Duration>,
}

/// Token bucket on requests the Service's pods receive: past it, 429 with
/// Retry-After.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateLimit {
    /// Sustained rate per pod; at least 1.
    #[schemars(range(min = 1))]
    pub requests_per_second: u32,
    /// Requests allowed at once above the sustained rate; at least 1.
    /// Default: requestsPerSecond.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub burst: Option<u32>,
}
