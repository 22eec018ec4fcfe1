use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What the operator observed and did; written by the operator only.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResiliencePolicyStatus {
    /// The metadata.generation the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Accepted (the spec is valid), ResolvedRefs (the target Service exists)
    /// and Programmed (proxies run it).
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// Proxies that call the target, and how many run this generation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxies: Option<ProxyCount>,
    /// Gateway API routes attached to the target Service (HTTPRoute or
    /// GRPCRoute with the Service as a parentRef), e.g. "HTTPRoute
    /// shop/checkout": their rules replace this policy's routes on the ports
    /// they name, and the rest of this policy still applies.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<String>,
}

/// A Kubernetes-style condition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Accepted, ResolvedRefs or Programmed.
    #[serde(rename = "type")]
    pub type_: String,
    /// "True", "False" or "Unknown".
    pub status: String,
    /// A CamelCase reason for the status.
    #[serde(default)]
    pub reason: String,
    /// Human-readable detail.
    #[serde(default)]
    pub message: String,
    /// When status last changed (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
    /// The metadata.generation this condition was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// Proxies that call the policy's target.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProxyCount {
    /// Proxies subscribed to the target.
    pub total: u32,
    /// Of those, the ones that applied the current generation.
    pub current: u32,
}
