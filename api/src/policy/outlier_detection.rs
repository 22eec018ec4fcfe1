use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::GrpcCode;
use crate::duration::Duration;

/// Envoy-style outlier detection: an endpoint that fails repeatedly is taken
/// out of load balancing for a while, longer each time it happens again.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "!has(self.baseEjectionTime) || duration(self.baseEjectionTime) > duration('0s')",
     "message": "baseEjectionTime must be greater than 0s", "fieldPath": ".baseEjectionTime"}
]))]
pub struct OutlierDetection {
    /// Consecutive failures (5xx, connection errors, timeouts, the gRPC
    /// statuses of grpcCodes) that eject an endpoint; at least 1. Default 5.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub consecutive_failures: Option<u32>,
    /// An ejection lasts this long times the number of times the endpoint has
    /// been ejected; more than 0s. Default 30s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_ejection_time: Option<Duration>,
    /// Never more than this percentage of the endpoints ejected at once, 0-100.
    /// Default 50.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 100))]
    pub max_ejection_percent: Option<u32>,
    /// gRPC statuses that count as an endpoint's failures, without repeats;
    /// read as for circuitBreaker.grpcCodes. Default [unavailable, internal,
    /// unknown, deadline-exceeded]; [] counts none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 16), extend("x-kubernetes-list-type" = "set"))]
    pub grpc_codes: Option<Vec<GrpcCode>>,
}
