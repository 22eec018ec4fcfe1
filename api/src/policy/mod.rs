//! The `ResiliencePolicy` spec: what users write. Every field that has a
//! default is an `Option` that stays `None` when unset, so "unset" and "set to
//! the default" differ and defaults ([`crate::defaults`]) apply only where the
//! user said nothing. Doc comments become the CRD's field descriptions.

mod circuit_breaker;
mod grpc;
mod limits;
mod outlier_detection;
mod retry;
mod routes;
mod status;
mod target;
mod timeouts;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use circuit_breaker::{CircuitBreaker, FailureKind, Fallback, SlowCall};
pub use grpc::GrpcCode;
pub use limits::{Limits, RateLimit};
pub use outlier_detection::OutlierDetection;
pub use retry::{Backoff, NonIdempotent, Retry, RetryBudget, RetryOn, RetryRate};
pub use routes::{
    Backend, GrpcMatch, HeaderMatch, HeaderModifier, HeaderValue, Route, RouteMatch, ValueMatch,
};
pub use status::{Condition, ProxyCount, ResiliencePolicyStatus};
pub use target::TargetRef;
pub use timeouts::Timeouts;

/// Resilience behaviour for calls to one Service: timeouts, retries, circuit
/// breaking, outlier ejection and limits. Sections left out are off, except
/// timeouts, whose defaults always apply.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
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
        printcolumn = r#"{"name": "Routes", "type": "string", "jsonPath": ".status.routes"}"#,
        printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#
    )
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "!has(self.retry) || !has(self.retry.backoff) || !has(self.retry.backoff.max) || has(self.retry.backoff.base) || duration('25ms') <= duration(self.retry.backoff.max)",
     "message": "max must be >= base (25ms when unset)", "fieldPath": ".retry.backoff.max"},
    {"rule": "!has(self.retry) || !has(self.retry.backoff) || has(self.retry.backoff.max) || !has(self.retry.backoff.base) || duration(self.retry.backoff.base) <= duration('1s')",
     "message": "base must be <= max (1s when unset)", "fieldPath": ".retry.backoff.base"}
]))]
pub struct ResiliencePolicySpec {
    /// The Service (and optionally one of its ports) this policy applies to.
    pub target_ref: TargetRef,
    /// Enforce: the policy acts. DryRun: what the breaker, limits, rate limit,
    /// retry budget and outlier detection would reject or eject is counted in
    /// metrics (ejections also logged) but let through. Default Enforce.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
    /// Timeouts of calls to the target, enforced by the calling pod's proxy
    /// (connect and idle also by the Service's pods' proxies, for their
    /// connections to the app). Unset fields default to request 15s, connect
    /// 1s, idle 5m and no per-attempt limit, even without this section.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<Timeouts>,
    /// Retries of failed calls, made by the calling pod's proxy only (the
    /// Service's own proxies never retry, so a call is not retried twice).
    /// Absent: no retries, except that an HTTP/2 request without a body
    /// that the upstream never processed (REFUSED_STREAM, above a graceful
    /// GOAWAY's last stream, or not sent because the connection was
    /// closing) is sent once more, as HTTP/2 clients do. Present: unset fields take their defaults (2 retries of
    /// 502/503/504 and unsent requests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<Retry>,
    /// Stops calling the Service while it fails, answering with a fallback;
    /// each calling pod's proxy keeps its own breaker. Absent: no circuit
    /// breaker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub circuit_breaker: Option<CircuitBreaker>,
    /// Takes failing endpoints out of the calling pod's load balancing for a
    /// while. Absent: endpoints are never ejected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<OutlierDetection>,
    /// Caps concurrent requests each of the Service's pods receives, enforced
    /// by that pod's proxy (inbound). Absent: no cap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<Limits>,
    /// Rate limit on requests the Service's own pods receive (inbound), answered
    /// with 429 and Retry-After past it. Absent: not rate limited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
    /// Per-route overrides of request timeouts and retry, enforced by the
    /// calling pod's proxy; the first route whose match holds applies, and
    /// its unset fields inherit the policy's. At most 64. Default: none
    /// (every request uses the policy's settings, labelled route default).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), extend("x-kubernetes-validations" = [
        {"rule": "self.all(r, !has(r.name) || self.exists_one(s, has(s.name) && s.name == r.name))",
         "message": "route names must be unique"}
    ]))]
    pub routes: Vec<Route>,
    /// Set when Gateway API routes (HTTPRoute, GRPCRoute) attach to the
    /// Service port: they decide all of its routing, so a request no route
    /// matches is answered 404, as Gateway API asks. Not part of the CRD.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    #[schemars(skip)]
    pub exclusive_routes: bool,
    /// The retry budget a Gateway API BackendTrafficPolicy (GEP-3388) gives
    /// the Service: what its retries draw on where spec.retry sets no
    /// budget. Not part of the CRD: the operator and file mode fill it in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(skip)]
    pub backend_traffic_budget: Option<RetryBudget>,
}

/// Whether the policy acts or only counts what it would do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum Mode {
    #[default]
    Enforce,
    DryRun,
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;

    #[test]
    fn enums_use_their_wire_names() {
        let names = |v: Value| v.to_string();
        assert_eq!(
            names(json!([Mode::Enforce, Mode::DryRun])),
            r#"["Enforce","DryRun"]"#
        );
        assert_eq!(
            names(json!([
                RetryOn::ConnectFailure,
                RetryOn::RefusedStream,
                RetryOn::Reset,
                RetryOn::ResetBeforeRequest
            ])),
            r#"["connect-failure","refused-stream","reset","reset-before-request"]"#
        );
        assert_eq!(
            names(json!([
                NonIdempotent::Never,
                NonIdempotent::IfIdempotencyKey,
                NonIdempotent::Always
            ])),
            r#"["Never","IfIdempotencyKey","Always"]"#
        );
        assert_eq!(
            names(json!([
                FailureKind::ServerError,
                FailureKind::GatewayError,
                FailureKind::Timeout,
                FailureKind::ConnectionError
            ])),
            r#"["server-error","gateway-error","timeout","connection-error"]"#
        );
    }

    #[test]
    fn unset_stays_unset_on_the_wire() {
        let spec: ResiliencePolicySpec = serde_json::from_value(json!({
            "targetRef": {"name": "p"},
            "retry": {},
            "routes": []
        }))
        .unwrap();
        assert_eq!(spec.target_ref, TargetRef::service("p"));
        assert_eq!(spec.retry, Some(Retry::default()));
        assert_eq!(
            serde_json::to_value(&spec).unwrap(),
            json!({"targetRef": {"group": "", "kind": "Service", "name": "p"}, "retry": {}})
        );
    }

    #[test]
    fn route_match_keeps_its_keyword_name() {
        let route: Route = serde_json::from_value(json!({
            "match": {"pathPrefix": "/a", "headers": [{"name": "x", "value": "1"}]}
        }))
        .unwrap();
        assert_eq!(route.r#match.path_prefix.as_deref(), Some("/a"));
        assert_eq!(
            serde_json::to_value(&route).unwrap(),
            json!({"match": {"pathPrefix": "/a", "headers": [{"name": "x", "value": "1"}]}})
        );
    }

    #[test]
    fn condition_type_is_spelled_type() {
        let status: ResiliencePolicyStatus = serde_json::from_value(json!({
            "observedGeneration": 3,
            "conditions": [{"type": "Accepted", "status": "True"}],
            "proxies": {"total": 12, "current": 11}
        }))
        .unwrap();
        assert_eq!(status.conditions[0].type_, "Accepted");
        assert_eq!(status.conditions[0].reason, "");
        assert_eq!(status.proxies.as_ref().map(|p| p.current), Some(11));
    }

    /// The API server refuses what validation refuses on a route, with the
    /// same message, pointing at the field.
    #[test]
    fn the_schema_refuses_per_service_fields_on_routes() {
        let schema = serde_json::to_value(schemars::schema_for!(Route)).unwrap();
        let rules = schema["x-kubernetes-validations"].as_array().unwrap();
        for (field, why, instead) in crate::semantics::NOT_ON_ROUTES {
            let message = crate::semantics::not_on_route(why, instead);
            assert!(
                rules.iter().any(|r| r["message"] == message.as_str()
                    && r["fieldPath"] == format!(".{field}").as_str()),
                "no rule for {field}: {rules:?}"
            );
        }
    }

    /// Doc comments are the CRD's field descriptions: none may be missing.
    #[test]
    fn every_field_is_described() {
        fn walk(schema: &Value, path: &str, missing: &mut Vec<String>) {
            if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
                for (name, property) in properties {
                    let path = format!("{path}.{name}");
                    if property.get("description").is_none() {
                        missing.push(path.clone());
                    }
                    walk(property, &path, missing);
                }
            }
            for key in ["items", "anyOf", "oneOf", "allOf"] {
                match schema.get(key) {
                    Some(Value::Array(subs)) => subs.iter().for_each(|s| walk(s, path, missing)),
                    Some(sub) => walk(sub, path, missing),
                    None => {}
                }
            }
        }
        let root = serde_json::to_value(schemars::schema_for!(ResiliencePolicySpec)).unwrap();
        let status = serde_json::to_value(schemars::schema_for!(ResiliencePolicyStatus)).unwrap();
        let mut missing = Vec::new();
        walk(&root, "spec", &mut missing);
        walk(&status, "status", &mut missing);
        for (name, def) in root["$defs"].as_object().unwrap() {
            walk(def, name, &mut missing);
        }
        for (name, def) in status["$defs"].as_object().unwrap() {
            walk(def, name, &mut missing);
        }
        assert!(missing.is_empty(), "undocumented: {missing:?}");
    }
}
