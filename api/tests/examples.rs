//! The example policies under examples/policies: what they parse to, that
//! they are valid, and that they survive a trip through YAML and JSON.

use outrigger_api::duration::Duration;
use outrigger_api::manifest::{parse_documents, Document, PolicyManifest};
use outrigger_api::policy::*;
use outrigger_api::validate::validate_manifest;

const PAYMENTS: &str = include_str!("../../examples/policies/payments.yaml");
const MINIMAL: &str = include_str!("../../examples/policies/minimal.yaml");
const GRPC: &str = include_str!("../../examples/policies/grpc.yaml");

fn d(text: &str) -> Option<Duration> {
    Some(Duration::parse(text).unwrap())
}

fn only_policy(text: &str) -> PolicyManifest {
    let mut documents = parse_documents(text).unwrap();
    assert_eq!(documents.len(), 1, "{documents:?}");
    match documents.remove(0) {
        Document::Policy(policy) => *policy,
        other => panic!("not a policy: {other:?}"),
    }
}

/// DESIGN.md's example, field by field.
fn payments() -> PolicyManifest {
    let mut manifest = PolicyManifest::new(
        "payments",
        ResiliencePolicySpec {
            target_ref: TargetRef::service("payments"),
            mode: Some(Mode::Enforce),
            timeouts: Some(Timeouts {
                request: d("5s"),
                backend_request: d("1s"),
                connect: d("1s"),
                idle: d("5m"),
            }),
            retry: Some(Retry {
                attempts: Some(2),
                codes: Some(vec![502, 503, 504]),
                on: Some(vec![
                    RetryOn::ConnectFailure,
                    RetryOn::RefusedStream,
                    RetryOn::Reset,
                ]),
                backoff: Some(Backoff {
                    base: d("25ms"),
                    max: d("1s"),
                }),
                budget: Some(RetryBudget {
                    percent: Some(20),
                    interval: d("10s"),
                    min_retry_rate: Some(RetryRate {
                        count: 10,
                        interval: d("1s").unwrap(),
                    }),
                }),
                non_idempotent: Some(NonIdempotent::IfIdempotencyKey),
                max_buffered_body_bytes: Some(65536),
                grpc_codes: None,
            }),
            circuit_breaker: Some(CircuitBreaker {
                failure_rate_percent: Some(50),
                minimum_requests: Some(20),
                window: d("10s"),
                slow_call: Some(SlowCall {
                    duration: d("2s").unwrap(),
                    rate_percent: 80,
                }),
                open_for: d("30s"),
                max_open_for: d("5m"),
                half_open_requests: Some(3),
                fallback: Some(Fallback {
                    status: Some(503),
                    content_type: Some("application/json".into()),
                    body: Some(r#"{"error":"payments unavailable"}"#.into()),
                }),
                failure_on: None,
                grpc_codes: None,
            }),
            outlier_detection: Some(OutlierDetection {
                consecutive_failures: Some(5),
                base_ejection_time: d("30s"),
                max_ejection_percent: Some(50),
                grpc_codes: None,
            }),
            limits: Some(Limits {
                max_concurrent_requests: Some(512),
                max_pending_requests: Some(128),
                pending_timeout: d("1s"),
            }),
            rate_limit: Some(RateLimit {
                requests_per_second: 200,
                burst: Some(50),
            }),
            routes: vec![Route {
                name: None,
                r#match: RouteMatch {
                    path_prefix: Some("/charge".into()),
                    method: Some("POST".into()),
                    ..RouteMatch::default()
                },
                timeouts: Some(Timeouts {
                    request: d("10s"),
                    ..Timeouts::default()
                }),
                retry: Some(Retry {
                    attempts: Some(0),
                    ..Retry::default()
                }),
                ..Route::default()
            }],
            exclusive_routes: false,
            backend_traffic_budget: None,
        },
    );
    manifest.metadata.namespace = Some("shop".into());
    manifest
}

#[test]
fn payments_example_is_the_design_policy() {
    assert_eq!(only_policy(PAYMENTS), payments());
}

#[test]
fn examples_are_valid() {
    assert_eq!(validate_manifest(&only_policy(PAYMENTS)), Ok(()));
    assert_eq!(validate_manifest(&only_policy(MINIMAL)), Ok(()));
    assert_eq!(validate_manifest(&only_policy(GRPC)), Ok(()));
}

#[test]
fn grpc_example_names_methods_and_codes() {
    let spec = only_policy(GRPC).spec;
    let reads = &spec.routes[0];
    assert_eq!(
        reads.r#match.grpc,
        Some(GrpcMatch {
            service: Some("inventory.v1.Inventory".into()),
            method: Some("GetItem".into()),
        })
    );
    let retry = reads.retry.as_ref().unwrap();
    assert_eq!(
        retry.grpc_codes,
        Some(vec![GrpcCode::Unavailable, GrpcCode::ResourceExhausted])
    );
    assert_eq!(retry.non_idempotent, Some(NonIdempotent::Always));
    assert_eq!(
        spec.outlier_detection.unwrap().grpc_codes,
        Some(vec![GrpcCode::Unavailable, GrpcCode::Internal])
    );
    let watch = &spec.routes[1];
    assert_eq!(watch.timeouts.as_ref().unwrap().request, d("0s"));
}

#[test]
fn payments_round_trips_through_yaml_and_json() {
    let policy = payments();
    let yaml = serde_yaml::to_string(&policy).unwrap();
    assert_eq!(only_policy(&yaml), policy, "{yaml}");
    let json = serde_json::to_string_pretty(&policy).unwrap();
    assert_eq!(only_policy(&json), policy, "{json}");
    // Durations are written in canonical Gateway form.
    assert!(yaml.contains("idle: 5m\n"), "{yaml}");
    assert!(
        json.contains(
            r#""backoff": {
        "base": "25ms",
        "max": "1s"
      }"#
        ),
        "{json}"
    );
}

#[test]
fn minimal_example_leaves_everything_else_unset() {
    let policy = only_policy(MINIMAL);
    let expected = ResiliencePolicySpec {
        target_ref: TargetRef::service("inventory"),
        retry: Some(Retry::default()),
        ..ResiliencePolicySpec::default()
    };
    assert_eq!(policy.spec, expected);
    assert_eq!(policy.metadata.namespace.as_deref(), Some("shop"));
}
