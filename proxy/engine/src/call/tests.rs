//! The composition end to end over a scripted upstream, on the paused clock.

use std::future::pending;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};

use super::testing::{breaker_config, config, counter_with, retry_settings, stack, Scripted, Step};
use super::{now, serve, Cause};
use crate::config::LimitSettings;
use outrigger_http::error_response::{ProxyError, ERROR_HEADER};

fn get() -> Request<Full<Bytes>> {
    Request::get("/").body(Full::new(Bytes::new())).unwrap()
}

#[tokio::test(start_paused = true)]
async fn the_request_deadline_covers_retries_and_backoff() {
    let mut config = config();
    config.default_route.request_timeout = Some(Duration::from_secs(1));
    config.default_route.backend_timeout = Some(Duration::from_millis(400));
    let mut retry = retry_settings(5);
    retry.backoff_base = Duration::from_millis(1);
    config.default_route.retry = Some(retry);
    let stack = stack(config, 1);
    let upstream = Scripted::new([Step::Hang; 6]);
    let started = tokio::time::Instant::now();
    let served = serve(&stack, &upstream, get(), now(), pending()).await;
    // 400ms + 400ms, then the third try is cut to what is left of the second.
    assert_eq!(started.elapsed(), Duration::from_secs(1));
    assert_eq!(served.error, Some(Cause::Proxy(ProxyError::Timeout)));
    assert_eq!(served.response.status(), 504);
    assert_eq!(served.response.headers()[ERROR_HEADER], "timeout");
    assert_eq!(upstream.times().len(), 3);
    let request_timeouts = counter_with(&stack.metrics, "outrigger_timeouts_total", "request");
    let per_try = counter_with(
        &stack.metrics,
        "outrigger_timeouts_total",
        "backend-request",
    );
    assert_eq!(request_timeouts + per_try, 3.0);
}

#[tokio::test(start_paused = true)]
async fn the_concurrency_slot_is_held_until_the_body_ends() {
    let mut config = config();
    config.limits = Some(LimitSettings {
        max_concurrent: 1,
        max_pending: 0,
        pending_timeout: Duration::from_secs(1),
    });
    let stack = stack(config, 1);
    let upstream = Scripted::new([]);
    let first = serve(&stack, &upstream, get(), now(), pending()).await;
    assert_eq!(first.error, None);
    let shed = serve(&stack, &upstream, get(), now(), pending()).await;
    assert_eq!(shed.error, Some(Cause::Proxy(ProxyError::Overloaded)));
    assert_eq!(shed.response.status(), 503);
    first.response.into_body().collect().await.unwrap();
    let next = serve(&stack, &upstream, get(), now(), pending()).await;
    assert_eq!(next.error, None);
    assert_eq!(next.response.status(), 200);
}

#[tokio::test(start_paused = true)]
async fn upstream_answers_are_not_proxy_errors() {
    let stack = stack(config(), 1);
    let upstream = Scripted::new([Step::Status(503), Step::Connect]);
    let served = serve(&stack, &upstream, get(), now(), pending()).await;
    assert_eq!(served.response.status(), 503);
    assert_eq!(served.error, None, "the app's 503 is not the proxy's");
    let served = serve(&stack, &upstream, get(), now(), pending()).await;
    assert_eq!(served.error, Some(Cause::Proxy(ProxyError::ConnectFailure)));
    assert_eq!(served.response.status(), 502);
}

#[tokio::test(start_paused = true)]
async fn a_probe_abandoned_at_the_deadline_frees_the_half_open_breaker() {
    let mut config = breaker_config(false);
    config.default_route.request_timeout = Some(Duration::from_secs(1));
    let stack = stack(config, 1);
    let steps = [Step::Status(500), Step::Status(500), Step::Hang];
    let upstream = Scripted::new(steps);
    for _ in 0..2 {
        assert_eq!(
            serve(&stack, &upstream, get(), now(), pending())
                .await
                .error,
            None
        );
    }
    let open = serve(&stack, &upstream, get(), now(), pending()).await;
    assert_eq!(open.error, Some(Cause::CircuitOpen));
    assert_eq!(open.response.status(), 503);
    assert_eq!(open.response.headers()["retry-after"], "5");

    tokio::time::advance(Duration::from_secs(5)).await;
    // The probe hangs; the request deadline abandons it.
    let abandoned = serve(&stack, &upstream, get(), now(), pending()).await;
    assert_eq!(abandoned.error, Some(Cause::Proxy(ProxyError::Timeout)));
    // Its admission was released: the next request probes and closes the circuit.
    let next = serve(&stack, &upstream, get(), now(), pending()).await;
    assert_eq!(next.error, None);
    assert_eq!(next.response.status(), 200);
    let closed = serve(&stack, &upstream, get(), now(), pending()).await;
    assert_eq!(closed.error, None);
}

#[tokio::test(start_paused = true)]
async fn a_call_still_waiting_when_the_drain_runs_out_gets_503_shutdown() {
    let stack = stack(config(), 1);
    let upstream = Scripted::new([Step::Hang]);
    let started = tokio::time::Instant::now();
    let drain_expired = tokio::time::sleep(Duration::from_secs(5));
    let served = serve(&stack, &upstream, get(), now(), drain_expired).await;
    assert_eq!(started.elapsed(), Duration::from_secs(5));
    assert_eq!(served.error, Some(Cause::Proxy(ProxyError::Shutdown)));
    assert_eq!(served.response.status(), 503);
    assert_eq!(served.response.headers()[ERROR_HEADER], "shutdown");
}

#[tokio::test(start_paused = true)]
async fn the_deadline_covers_a_bounded_body_and_stops_at_a_streams_headers() {
    let mut config = config();
    config.policy = Some("default/web".into());
    config.idle_timeout = Duration::from_secs(30);
    config.default_route.request_timeout = Some(Duration::from_secs(2));
    let stack = stack(config, 1);
    let upstream = Scripted::new([Step::Stall(true), Step::Stall(false)]);
    for (declared, cut_after) in [(true, 2), (false, 30)] {
        let started = tokio::time::Instant::now();
        let served = serve(&stack, &upstream, get(), now(), pending()).await;
        assert_eq!(served.error, None, "headers came in time");
        let collected = served.response.into_body().collect().await;
        assert!(collected.is_err(), "cut");
        let took = started.elapsed();
        assert_eq!(took, Duration::from_secs(cut_after), "declared: {declared}");
    }
    assert_eq!(
        counter_with(&stack.metrics, "outrigger_timeouts_total", "request"),
        1.0
    );
    assert_eq!(
        counter_with(&stack.metrics, "outrigger_timeouts_total", "idle"),
        1.0
    );
}

/// Without a retry section, a bodiless HTTP/2 request the upstream never
/// processed goes once more: refused, or never written because the
/// connection was closing (a GOAWAY racing the stream's opening). Only
/// once, only HTTP/2, and not after a failed connection attempt.
#[tokio::test(start_paused = true)]
async fn without_retries_an_unprocessed_http2_get_goes_once_more() {
    let h2_get = || {
        Request::get("/")
            .version(http::Version::HTTP_2)
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    let cases = [
        (vec![Step::NotSent, Step::Status(200)], h2_get(), 200, 2),
        (vec![Step::Refused, Step::Status(200)], h2_get(), 200, 2),
        (vec![Step::NotSent, Step::NotSent], h2_get(), 502, 2),
        (vec![Step::Connect, Step::Status(200)], h2_get(), 502, 1),
        (vec![Step::NotSent, Step::Status(200)], get(), 502, 1),
    ];
    for (steps, request, status, attempts) in cases {
        let stack = stack(config(), 1);
        let upstream = Scripted::new(steps);
        let served = serve(&stack, &upstream, request, now(), pending()).await;
        assert_eq!(served.response.status(), status);
        assert_eq!(upstream.times().len(), attempts);
    }
}
