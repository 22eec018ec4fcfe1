//! gRPC through the composition, over a scripted upstream on the paused
//! clock: retries of trailers-only statuses, the client's grpc-timeout as the
//! deadline (and passed on shrunk), and gRPC failures in the breaker and the
//! outlier detector.

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use outrigger_api::policy::NonIdempotent;

use super::testing::{
    breaker_config, config, counter, counter_with, retry_settings, stack, Scripted, Step,
};
use super::{now, serve, Cause};
use crate::config::{DestinationConfig, OutlierSettings};
use outrigger_http::error_response::{grpc_error, ProxyError};

/// A unary gRPC call (a POST whose body has a known length, so it can be
/// buffered for replay), with these extra headers.
fn call(headers: &[(&str, &str)]) -> Request<Full<Bytes>> {
    let mut request = Request::post("/pkg.v1.Items/Get")
        .version(http::Version::HTTP_2)
        .header("content-type", "application/grpc");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request
        .body(Full::new(Bytes::from_static(b"\0\0\0\0\x01x")))
        .unwrap()
}

fn retrying(non_idempotent: NonIdempotent) -> DestinationConfig {
    let mut config = config();
    let mut retry = retry_settings(2);
    retry.non_idempotent = non_idempotent;
    config.default_route.retry = Some(retry);
    config
}

#[tokio::test(start_paused = true)]
async fn a_trailers_only_status_is_retried_where_replay_is_allowed() {
    let stack = stack(retrying(NonIdempotent::Always), 1);
    let upstream = Scripted::new([
        Step::GrpcStatus(14),
        Step::GrpcStatus(14),
        Step::Status(200),
    ]);
    let served = serve(&stack, &upstream, call(&[]), now(), std::future::pending()).await;
    assert_eq!(served.response.status(), 200);
    assert_eq!(upstream.times().len(), 3);
    assert_eq!(
        upstream.bodies()[2],
        "\0\0\0\0\x01x",
        "the message is replayed"
    );
    let retries = counter_with(
        &stack.metrics,
        "outrigger_retries_total",
        "grpc-unavailable",
    );
    assert_eq!(retries, 2.0);

    // A status the policy does not list is the client's answer at once.
    let upstream = Scripted::new([Step::GrpcStatus(4), Step::Status(200)]);
    let served = serve(&stack, &upstream, call(&[]), now(), std::future::pending()).await;
    assert_eq!(served.response.headers()["grpc-status"], "4");
    assert_eq!(served.error, None, "the server's status, not the proxy's");
    assert_eq!(upstream.times().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_grpc_call_the_server_answered_is_not_replayed_by_default() {
    let stack = stack(retrying(NonIdempotent::Never), 1);
    let upstream = Scripted::new([Step::GrpcStatus(14), Step::Status(200)]);
    let served = serve(&stack, &upstream, call(&[]), now(), std::future::pending()).await;
    assert_eq!(served.response.headers()["grpc-status"], "14");
    assert_eq!(upstream.times().len(), 1);
    let skipped = counter_with(
        &stack.metrics,
        "outrigger_retries_skipped_total",
        "non-idempotent",
    );
    assert_eq!(skipped, 1.0);
    // One that never reached a server is retried whatever the method.
    let mut config = retrying(NonIdempotent::Never);
    let retry = config.default_route.retry.as_mut().unwrap();
    retry.on = vec![outrigger_api::policy::RetryOn::ConnectFailure];
    let stack = super::testing::stack(config, 1);
    let upstream = Scripted::new([Step::Connect, Step::Status(200)]);
    let served = serve(&stack, &upstream, call(&[]), now(), std::future::pending()).await;
    assert_eq!(served.response.status(), 200);
    assert_eq!(upstream.times().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn grpc_timeout_is_the_deadline_and_is_passed_on_shrunk() {
    let mut config = retrying(NonIdempotent::Always);
    config.default_route.request_timeout = Some(Duration::from_secs(10));
    let stack = stack(config, 1);
    let upstream = Scripted::new([Step::GrpcStatus(14), Step::Hang]);
    let started = tokio::time::Instant::now();
    let served = serve(
        &stack,
        &upstream,
        call(&[("grpc-timeout", "1S")]),
        now(),
        std::future::pending(),
    )
    .await;
    // The client's 1s, not the policy's 10s.
    assert_eq!(started.elapsed(), Duration::from_secs(1));
    assert_eq!(served.error, Some(Cause::Proxy(ProxyError::Timeout)));
    let response = grpc_error(served.response);
    assert_eq!(response.headers()["grpc-status"], "4", "DEADLINE_EXCEEDED");

    let times = upstream.times();
    let waited = times[1] - times[0];
    assert!(waited > Duration::ZERO && waited <= Duration::from_millis(100));
    let left = Duration::from_secs(1) - waited;
    let sent = upstream.grpc_timeouts();
    assert_eq!(sent[0].as_deref(), Some("1000000u"));
    assert_eq!(
        sent[1].as_deref(),
        Some(format!("{}u", left.as_micros()).as_str()),
        "the retry tells the server what is left"
    );

    // The policy's timeout, when it is the shorter one, is passed on.
    let upstream = Scripted::new([Step::Hang]);
    let started = tokio::time::Instant::now();
    let served = serve(
        &stack,
        &upstream,
        call(&[("grpc-timeout", "1M")]),
        now(),
        std::future::pending(),
    )
    .await;
    assert_eq!(started.elapsed(), Duration::from_secs(10));
    assert_eq!(served.error, Some(Cause::Proxy(ProxyError::Timeout)));
    assert_eq!(upstream.grpc_timeouts()[0].as_deref(), Some("10000000u"));
}

#[tokio::test(start_paused = true)]
async fn the_breaker_counts_trailers_only_grpc_failures() {
    let stack = stack(breaker_config(false), 1);
    // NOT_FOUND is an answer, not a failure of the server.
    let upstream = Scripted::new([Step::GrpcStatus(5), Step::GrpcStatus(5)]);
    for _ in 0..2 {
        serve(&stack, &upstream, call(&[]), now(), std::future::pending()).await;
    }
    assert_eq!(
        serve(&stack, &upstream, call(&[]), now(), std::future::pending())
            .await
            .error,
        None
    );

    let stack = super::testing::stack(breaker_config(false), 1);
    let upstream = Scripted::new([Step::GrpcStatus(14), Step::GrpcStatus(13)]);
    for _ in 0..2 {
        let served = serve(&stack, &upstream, call(&[]), now(), std::future::pending()).await;
        assert_eq!(served.error, None);
    }
    let open = serve(&stack, &upstream, call(&[]), now(), std::future::pending()).await;
    assert_eq!(open.error, Some(Cause::CircuitOpen));
    assert_eq!(upstream.times().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn outlier_detection_ejects_an_endpoint_answering_grpc_failures() {
    let mut config = config();
    config.outlier = Some(OutlierSettings {
        consecutive_failures: 2,
        base_ejection_time: Duration::from_secs(30),
        max_ejection_percent: 50,
        grpc_codes: [14].into_iter().collect(),
    });
    let stack = stack(config, 2);
    let upstream = Scripted::by_endpoint(|port| match port {
        9001 => Step::GrpcStatus(14),
        _ => Step::Status(200),
    });
    for _ in 0..40 {
        serve(&stack, &upstream, call(&[]), now(), std::future::pending()).await;
    }
    assert_eq!(counter(&stack.metrics, "outrigger_ejections_total"), 1.0);
    let before = upstream.calls_to(9001);
    for _ in 0..20 {
        serve(&stack, &upstream, call(&[]), now(), std::future::pending()).await;
    }
    assert_eq!(upstream.calls_to(9001), before, "ejected");
}

#[tokio::test(start_paused = true)]
async fn a_status_in_trailers_counts_unless_a_message_came_first() {
    let mut config = breaker_config(false);
    config.outlier = Some(OutlierSettings {
        consecutive_failures: 2,
        base_ejection_time: Duration::from_secs(30),
        max_ejection_percent: 100,
        grpc_codes: [14].into_iter().collect(),
    });
    // Streams that delivered a message before failing count as successes.
    let stack = stack(config.clone(), 1);
    let upstream = Scripted::new([Step::GrpcTrailers(14, true); 3]);
    for _ in 0..3 {
        let served = serve(&stack, &upstream, call(&[]), now(), std::future::pending()).await;
        assert_eq!(served.error, None);
        served.response.into_body().collect().await.unwrap();
    }
    assert_eq!(counter(&stack.metrics, "outrigger_ejections_total"), 0.0);

    // A status in trailers after headers alone is the call's result: read
    // to its end, two UNAVAILABLE open the circuit and eject the endpoint.
    let stack = super::testing::stack(config.clone(), 1);
    let upstream = Scripted::new([Step::GrpcTrailers(14, false); 2]);
    for _ in 0..2 {
        let served = serve(&stack, &upstream, call(&[]), now(), std::future::pending()).await;
        let body = served.response.into_body().collect().await.unwrap();
        assert_eq!(body.trailers().unwrap()["grpc-status"], "14");
    }
    assert_eq!(counter(&stack.metrics, "outrigger_ejections_total"), 1.0);
    let open = serve(&stack, &upstream, call(&[]), now(), std::future::pending()).await;
    assert_eq!(open.error, Some(Cause::CircuitOpen));

    // Bodies dropped before their status count for nothing.
    let stack = super::testing::stack(config, 1);
    let upstream = Scripted::new([Step::GrpcTrailers(14, false); 3]);
    for _ in 0..3 {
        let served = serve(&stack, &upstream, call(&[]), now(), std::future::pending()).await;
        assert_eq!(served.error, None);
        drop(served);
    }
    assert_eq!(counter(&stack.metrics, "outrigger_ejections_total"), 0.0);
}
