//! The retry loop: attempts until one answers or a rule says stop. An outcome
//! is retried when the policy names its reason (`codes`, `on`) and it is not
//! another proxy's refusal (`x-outrigger-error: overloaded`...), attempts are
//! left, the request may be replayed (idempotent method, `nonIdempotent`, or
//! the upstream provably never saw it), its body is still whole in the replay
//! buffer, the wait (Retry-After up to [`RETRY_AFTER_CAP`], else jittered
//! backoff) ends before the request deadline, and the budget allows.
//!
//! The body is not read ahead: the first attempt streams it while a copy of
//! up to `maxBufferedBodyBytes` is kept for replay ([`Replay`]).

use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::request::Parts;
use http::{header, Method, Request, Response, Version};
use http_body::Body;
use http_body_util::BodyExt;
use outrigger_api::policy::NonIdempotent;

use super::attempt::attempt;
use super::error::CallError;
use super::now;
use super::outcome::{Outcome, RetryVerdict};
use super::upstream::{Head, HeaderCopy, Upstream};
use crate::config::{RetrySettings, RouteConfig};
use crate::stack::DestinationStack;
use outrigger_http::body::{empty, BoxError, ProxyBody};
use outrigger_http::error_response::is_grpc;
use outrigger_http::replay::{NotReplayable, Replay};
use outrigger_resilience::{parse_retry_after, Backoff};
use outrigger_trace::{KeyValue, RequestTrace};

/// A request body the proxy can forward: hyper's `Incoming`, or a test's.
pub trait RequestBody: Body<Data = Bytes, Error: Into<BoxError>> + Send + Unpin + 'static {}
impl<B: Body<Data = Bytes, Error: Into<BoxError>> + Send + Unpin + 'static> RequestBody for B {}

/// The longest `Retry-After` the proxy waits out before a retry; a longer one
/// (or one past the request deadline) ends retrying, and the caller gets the
/// response with its `Retry-After`.
pub const RETRY_AFTER_CAP: Duration = Duration::from_secs(10);

pub async fn with_retries<U: Upstream, B: RequestBody>(
    stack: &DestinationStack,
    upstream: &U,
    route: &RouteConfig,
    request: Request<B>,
    deadline: Option<Instant>,
    trace: Option<&RequestTrace>,
) -> Result<Response<ProxyBody>, CallError> {
    if let Some(budget) = &stack.budget {
        // Every request counts towards the budget, retried or not.
        let mut budget = budget.state.lock().expect("not poisoned");
        budget.record_request(now());
    }
    let (mut parts, body) = request.into_parts();
    let Some(retry) = route.retry.as_ref() else {
        // The only attempt, which takes the head and the body as they are,
        // but for one exception (see `replay_refused`): a bodiless HTTP/2
        // request keeps a copy of its head for it.
        // Asked once: for an HTTP/2 body it takes the stream's lock.
        let bodiless = body.is_end_stream();
        let replayable = parts.version >= Version::HTTP_2 && bodiless;
        let body = match bodiless {
            true => empty(),
            false => body.map_err(Into::into).boxed_unsync(),
        };
        let mut copy = HeaderCopy::default();
        let head = match replayable {
            true => Head::Kept(&mut parts, &mut copy),
            false => Head::Once(&mut parts),
        };
        let (outcome, index) = attempt(stack, upstream, route, head, body, deadline, trace).await?;
        if let Some(reason) = unprocessed(&outcome).filter(|_| replayable) {
            drop(outcome);
            // Boxed: rare, and the request's future would carry its room.
            copy.restore(&mut parts.headers);
            return Box::pin(replay_refused(
                stack, upstream, route, parts, deadline, trace, reason,
            ))
            .await;
        }
        return outcome.into_result(stack, &stack.endpoints.list[index].target);
    };
    let metrics = &stack.metrics.resilience;
    let skip = |why: &'static str| {
        metrics
            .retries_skipped
            .with_label_values(&[stack.direction, &stack.label, &route.name, why])
            .inc();
        if let Some(trace) = trace {
            trace.event(
                "retry-skipped",
                vec![KeyValue::new("outrigger.retry.skipped", why)],
            );
        }
    };
    let grpc = is_grpc(&parts.headers);
    let body = Replay::new(body, retry.max_buffered_body_bytes);
    let replay_ok = replay_allowed(&parts, retry);

    let mut retries_done = 0u32;
    let mut copy = HeaderCopy::default();
    loop {
        let head = Head::Kept(&mut parts, &mut copy);
        let (outcome, index) = attempt(
            stack,
            upstream,
            route,
            head,
            body.attempt(),
            deadline,
            trace,
        )
        .await?;
        let target = &stack.endpoints.list[index].target;
        let reason = match outcome.retry_verdict(retry, grpc) {
            RetryVerdict::Final => return outcome.into_result(stack, target),
            RetryVerdict::Refused(why) => {
                skip(why);
                return outcome.into_result(stack, target);
            }
            RetryVerdict::Retry(reason) => reason,
        };
        if retries_done >= retry.attempts {
            skip("attempts-exhausted");
            return outcome.into_result(stack, target);
        }
        if !(replay_ok || outcome.never_reached_upstream()) {
            skip("non-idempotent");
            return outcome.into_result(stack, target);
        }
        // Only now, when a retry is wanted, does the body's size matter.
        if let Err(why) = body.replayable() {
            skip(match why {
                NotReplayable::TooLarge => "body-too-large",
                NotReplayable::Failed => "body-failed",
            });
            return outcome.into_result(stack, target);
        }
        let delay = match retry_after(&outcome) {
            Some(wait) if wait > RETRY_AFTER_CAP => {
                skip("retry-after-too-long");
                return outcome.into_result(stack, target);
            }
            Some(wait) => wait,
            None => {
                let backoff = Backoff {
                    base: retry.backoff_base,
                    max: retry.backoff_max,
                };
                backoff.delay(retries_done, &mut rand::rng())
            }
        };
        // Retry only if the wait still leaves time for an attempt.
        if deadline.is_some_and(|d| now() + delay >= d) {
            skip("deadline");
            return outcome.into_result(stack, target);
        }
        if !withdraw_from_budget(stack) {
            return outcome.into_result(stack, target);
        }
        count_retry(stack, route, trace, reason, retries_done + 1, delay);
        drop(outcome);
        tokio::time::sleep(delay).await;
        retries_done += 1;
    }
}

/// Without a retry section a request gets one attempt, with one exception,
/// made by HTTP/2 clients at the connection level whatever their retry
/// settings: an HTTP/2 request without a body that the upstream provably
/// never processed goes once more (see [`unprocessed`]). nginx closes each
/// HTTP/2 connection that way after 1,000 requests, and the streams in
/// flight then would fail.
async fn replay_refused<U: Upstream>(
    stack: &DestinationStack,
    upstream: &U,
    route: &RouteConfig,
    mut parts: Parts,
    deadline: Option<Instant>,
    trace: Option<&RequestTrace>,
    reason: &'static str,
) -> Result<Response<ProxyBody>, CallError> {
    count_retry(stack, route, trace, reason, 1, Duration::ZERO);
    let head = Head::Once(&mut parts);
    let (outcome, index) = attempt(stack, upstream, route, head, empty(), deadline, trace).await?;
    outcome.into_result(stack, &stack.endpoints.list[index].target)
}

/// Whether the upstream provably never processed the request because its
/// connection was closing: it refused the stream (REFUSED_STREAM, or above
/// a graceful GOAWAY's last stream id), or the connection closed before the
/// request was written. The second happens under the first: the GOAWAY can
/// land between the client's readiness check and the stream's opening
/// (another thread runs the connection), and the request is then never
/// sent (tests/h2_upstream_goaway.rs failed ~1 run in 25 on it). A failed
/// connection attempt is not one: the upstream may be down, and that is
/// for a retry policy to handle. Returns the replay's reason (its metric
/// label).
fn unprocessed(outcome: &Outcome) -> Option<&'static str> {
    match outcome {
        Outcome::RefusedStream(_) | Outcome::ResetBeforeRequest(_) => outcome.failure(),
        _ => None,
    }
}

/// A retry, in the metrics and on the request's trace.
fn count_retry(
    stack: &DestinationStack,
    route: &RouteConfig,
    trace: Option<&RequestTrace>,
    reason: &'static str,
    number: u32,
    delay: Duration,
) {
    stack
        .metrics
        .resilience
        .retries
        .with_label_values(&[stack.direction, &stack.label, &route.name, reason])
        .inc();
    if let Some(trace) = trace {
        trace.event(
            "retry",
            vec![
                KeyValue::new("outrigger.retry.reason", reason),
                KeyValue::new("outrigger.retry.delay_ms", delay.as_millis() as i64),
                KeyValue::new("outrigger.retry.number", i64::from(number)),
            ],
        );
    }
}

/// Whether the budget allows a retry; `DryRun` only counts a refusal.
fn withdraw_from_budget(stack: &DestinationStack) -> bool {
    let Some(budget) = &stack.budget else {
        return true;
    };
    if budget
        .state
        .lock()
        .expect("not poisoned")
        .try_withdraw(now())
    {
        return true;
    }
    let metrics = &stack.metrics.resilience;
    let labels = [stack.direction, &*stack.label];
    metrics
        .retry_budget_exhausted
        .with_label_values(&labels)
        .inc();
    if stack.config.dry_run {
        metrics
            .dry_run_would_reject
            .with_label_values(&[stack.direction, &stack.label, "budget-exhausted"])
            .inc();
    }
    stack.config.dry_run
}

fn retry_after(outcome: &Outcome) -> Option<std::time::Duration> {
    let Outcome::Response(response) = outcome else {
        return None;
    };
    let value = response.headers().get(header::RETRY_AFTER)?.to_str().ok()?;
    parse_retry_after(value, SystemTime::now())
}

/// GET, HEAD, OPTIONS, PUT, DELETE and TRACE are idempotent (RFC 9110 §9.2.2).
fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

/// Whether the request may be replayed after the upstream may have seen it.
fn replay_allowed(parts: &Parts, retry: &RetrySettings) -> bool {
    is_idempotent(&parts.method)
        || match retry.non_idempotent {
            NonIdempotent::Always => true,
            NonIdempotent::IfIdempotencyKey => parts.headers.contains_key("idempotency-key"),
            NonIdempotent::Never => false,
        }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{
        chunked, config, counter_with, retry_settings, stack, Scripted, Step,
    };
    use super::*;
    use crate::config::BudgetConfig;
    use http_body_util::Full;
    use outrigger_api::policy::RetryOn;
    use std::time::Duration;

    fn get() -> Request<Full<Bytes>> {
        Request::get("/").body(Full::new(Bytes::new())).unwrap()
    }

    fn post(body: &'static str) -> Request<Full<Bytes>> {
        Request::post("/")
            .body(Full::new(Bytes::from(body)))
            .unwrap()
    }

    fn retrying(attempts: u32) -> crate::config::DestinationConfig {
        let mut config = config();
        config.default_route.retry = Some(retry_settings(attempts));
        config
    }

    async fn run<B: RequestBody>(
        stack: &DestinationStack,
        upstream: &Scripted,
        request: Request<B>,
        deadline: Option<Instant>,
    ) -> Result<Response<ProxyBody>, CallError> {
        let route = &stack.config.default_route;
        with_retries(stack, upstream, route, request, deadline, None).await
    }

    fn skipped(stack: &DestinationStack, reason: &str) -> f64 {
        counter_with(&stack.metrics, "outrigger_retries_skipped_total", reason)
    }

    #[tokio::test(start_paused = true)]
    async fn retries_a_listed_status_with_backoff_and_counts_the_reason() {
        let stack = stack(retrying(2), 1);
        let upstream = Scripted::new([Step::Status(503), Step::Status(503), Step::Status(200)]);
        let response = run(&stack, &upstream, get(), None).await.ok().unwrap();
        assert_eq!(response.status(), 200);
        let times = upstream.times();
        assert_eq!(times.len(), 3);
        // Jittered backoff: up to base (100ms) then up to 2×base.
        assert!(times[1] - times[0] <= Duration::from_millis(100));
        assert!(times[2] - times[1] <= Duration::from_millis(200));
        assert_eq!(
            counter_with(&stack.metrics, "outrigger_retries_total", "status-503"),
            2.0
        );
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_when_attempts_run_out() {
        let stack = stack(retrying(1), 1);
        let upstream = Scripted::new([Step::Status(502), Step::Status(502), Step::Status(200)]);
        let response = run(&stack, &upstream, get(), None).await.ok().unwrap();
        assert_eq!(response.status(), 502);
        assert_eq!(upstream.times().len(), 2);
        assert_eq!(skipped(&stack, "attempts-exhausted"), 1.0);
    }

    #[tokio::test(start_paused = true)]
    async fn post_is_replayed_only_when_the_upstream_never_saw_it() {
        let mut config = retrying(2);
        let retry = config.default_route.retry.as_mut().unwrap();
        retry.on = vec![RetryOn::ConnectFailure, RetryOn::Reset];
        let stack = stack(config, 1);
        let upstream = Scripted::new([Step::Status(503)]);
        let response = run(&stack, &upstream, post("x"), None).await.ok().unwrap();
        assert_eq!(response.status(), 503);
        assert_eq!(skipped(&stack, "non-idempotent"), 1.0);

        let upstream = Scripted::new([Step::Connect, Step::Status(201)]);
        let response = run(&stack, &upstream, post("x"), None).await.ok().unwrap();
        assert_eq!(response.status(), 201);
        assert_eq!(
            upstream.bodies(),
            ["", "x"],
            "not sent to the refused connection, then sent in full"
        );

        let upstream = Scripted::new([Step::Reset, Step::Status(201)]);
        let error = run(&stack, &upstream, post("x"), None).await.err().unwrap();
        assert_eq!(error.into_response().status(), 502);
        assert_eq!(skipped(&stack, "non-idempotent"), 2.0);
    }

    #[tokio::test(start_paused = true)]
    async fn idempotency_key_allows_replay_when_configured() {
        let mut config = retrying(1);
        let retry = config.default_route.retry.as_mut().unwrap();
        retry.non_idempotent = NonIdempotent::IfIdempotencyKey;
        let stack = stack(config, 1);
        let upstream = Scripted::new([Step::Status(503), Step::Status(200)]);
        let mut request = post("pay");
        request
            .headers_mut()
            .insert("idempotency-key", "k1".parse().unwrap());
        let response = run(&stack, &upstream, request, None).await.ok().unwrap();
        assert_eq!(response.status(), 200);
    }

    fn trailers() -> http::HeaderMap {
        let mut trailers = http::HeaderMap::new();
        trailers.insert("x-checksum", "c0ffee".parse().unwrap());
        trailers
    }

    #[tokio::test(start_paused = true)]
    async fn a_chunked_body_is_replayed_with_its_trailers() {
        let stack = stack(retrying(2), 1);
        let upstream = Scripted::new([Step::Status(503), Step::Status(200)]);
        let (tx, body) = chunked();
        for part in ["chunk ", "by ", "chunk"] {
            tx.send(http_body::Frame::data(Bytes::from(part))).unwrap();
        }
        tx.send(http_body::Frame::trailers(trailers())).unwrap();
        drop(tx);
        let request = Request::put("/").body(body).unwrap();
        let response = run(&stack, &upstream, request, None).await.ok().unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(upstream.bodies(), ["chunk by chunk", "chunk by chunk"]);
        assert_eq!(upstream.trailers(), [Some(trailers()), Some(trailers())]);
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_attempt_streams_the_body_as_it_comes() {
        let stack = stack(retrying(2), 1);
        let upstream = Scripted::new([Step::Early(503), Step::Status(200)]);
        let (tx, body) = chunked();
        tx.send(http_body::Frame::data(Bytes::from("head ")))
            .unwrap();
        let request = Request::put("/").body(body).unwrap();
        let started = tokio::time::Instant::now();
        let rest_later = async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            tx.send(http_body::Frame::data(Bytes::from("tail")))
                .unwrap();
        };
        let (result, ()) = tokio::join!(run(&stack, &upstream, request, None), rest_later);
        assert_eq!(result.ok().unwrap().status(), 200);
        let times = upstream.times();
        assert_eq!(times[0], started, "not held until the body is complete");
        // The first attempt was answered after one frame; the retry replays
        // that frame and reads the rest from the client.
        assert_eq!(upstream.bodies(), ["head ", "head tail"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_past_the_limit_is_sent_once_and_not_retried() {
        let stack = stack(retrying(2), 1);
        let upstream = Scripted::new([Step::Status(503), Step::Status(200)]);
        let (tx, body) = chunked();
        for _ in 0..3 {
            tx.send(http_body::Frame::data(Bytes::from(vec![b'x'; 500])))
                .unwrap();
        }
        drop(tx);
        let request = Request::put("/").body(body).unwrap();
        let response = run(&stack, &upstream, request, None).await.ok().unwrap();
        assert_eq!(response.status(), 503);
        assert_eq!(upstream.times().len(), 1);
        assert_eq!(upstream.bodies()[0].len(), 1500, "forwarded in full");
        assert_eq!(skipped(&stack, "body-too-large"), 1.0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_large_body_is_counted_as_skipped_only_when_a_retry_was_needed() {
        let mut config = retrying(2);
        config.default_route.retry.as_mut().unwrap().on = vec![RetryOn::ConnectFailure];
        let stack = stack(config, 1);
        let big = || Request::put("/").body(Full::new(Bytes::from(vec![b'x'; 4096])));
        let upstream = Scripted::new([Step::Status(200), Step::Status(404)]);
        for _ in 0..2 {
            run(&stack, &upstream, big().unwrap(), None)
                .await
                .ok()
                .unwrap();
        }
        assert_eq!(skipped(&stack, "body-too-large"), 0.0, "nothing to retry");
        let upstream = Scripted::new([Step::Status(503)]);
        run(&stack, &upstream, big().unwrap(), None)
            .await
            .ok()
            .unwrap();
        assert_eq!(skipped(&stack, "body-too-large"), 1.0);
        // Never read (the connection was refused): even a large body goes again.
        let upstream = Scripted::new([Step::Connect, Step::Status(200)]);
        let response = run(&stack, &upstream, big().unwrap(), None)
            .await
            .ok()
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(upstream.bodies()[1].len(), 4096);
    }

    #[tokio::test(start_paused = true)]
    async fn another_proxys_refusal_is_not_retried() {
        let mut config = retrying(2);
        config.default_route.retry.as_mut().unwrap().codes = vec![429, 503];
        let stack = stack(config, 1);
        for cause in ["overloaded", "circuit-open", "rate-limited"] {
            let code = if cause == "rate-limited" { 429 } else { 503 };
            let upstream = Scripted::new([Step::ProxyRefusal(code, cause), Step::Status(200)]);
            let response = run(&stack, &upstream, get(), None).await.ok().unwrap();
            assert_eq!(response.status(), code);
            assert_eq!(response.headers()["x-outrigger-error"], cause, "passed on");
            assert_eq!(upstream.times().len(), 1, "{cause} not retried");
        }
        assert_eq!(skipped(&stack, "proxy-overloaded"), 3.0);
        // Any other proxy-made 503 (an endpoint that is shutting down, say)
        // is retried as usual.
        let upstream = Scripted::new([Step::ProxyRefusal(503, "shutdown"), Step::Status(200)]);
        let response = run(&stack, &upstream, get(), None).await.ok().unwrap();
        assert_eq!(response.status(), 200);
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_after_past_the_cap_is_not_waited_for() {
        let stack = stack(retrying(2), 1);
        let upstream = Scripted::new([Step::RetryAfter(503, "10"), Step::Status(200)]);
        let started = tokio::time::Instant::now();
        let response = run(&stack, &upstream, get(), None).await.ok().unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(
            started.elapsed(),
            RETRY_AFTER_CAP,
            "the cap itself is waited"
        );
        let upstream = Scripted::new([Step::RetryAfter(503, "11"), Step::Status(200)]);
        let started = tokio::time::Instant::now();
        let response = run(&stack, &upstream, get(), None).await.ok().unwrap();
        assert_eq!(response.status(), 503);
        assert_eq!(response.headers()["retry-after"], "11");
        assert_eq!(started.elapsed(), Duration::ZERO);
        assert_eq!(skipped(&stack, "retry-after-too-long"), 1.0);
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_replaces_backoff_unless_it_passes_the_deadline() {
        let stack = stack(retrying(2), 1);
        let upstream = Scripted::new([Step::RetryAfter(503, "2"), Step::Status(200)]);
        let response = run(&stack, &upstream, get(), None).await.ok().unwrap();
        assert_eq!(response.status(), 200);
        let times = upstream.times();
        assert_eq!(times[1] - times[0], Duration::from_secs(2));

        let upstream = Scripted::new([Step::RetryAfter(503, "5"), Step::Status(200)]);
        let deadline = Some(now() + Duration::from_secs(3));
        let response = run(&stack, &upstream, get(), deadline).await.ok().unwrap();
        assert_eq!(response.status(), 503);
        assert_eq!(upstream.times().len(), 1);
        assert_eq!(skipped(&stack, "deadline"), 1.0);
    }

    #[tokio::test(start_paused = true)]
    async fn an_empty_budget_stops_retries() {
        let mut config = retrying(3);
        config.budget = Some(BudgetConfig {
            percent: 0,
            interval: Duration::from_secs(10),
            min_retries: 1,
            min_interval: Duration::from_secs(10),
        });
        let stack = stack(config, 1);
        let upstream = Scripted::new([Step::Status(503); 5]);
        let response = run(&stack, &upstream, get(), None).await.ok().unwrap();
        assert_eq!(response.status(), 503);
        // One retry from the floor, then the budget is spent.
        assert_eq!(upstream.times().len(), 2);
        assert_eq!(
            counter_with(&stack.metrics, "outrigger_retry_budget_exhausted_total", ""),
            1.0
        );
    }

    #[tokio::test(start_paused = true)]
    async fn per_try_timeouts_are_retried_as_504() {
        let mut config = retrying(1);
        config.default_route.backend_timeout = Some(Duration::from_millis(500));
        let stack = stack(config, 1);
        let upstream = Scripted::new([Step::Hang, Step::Status(200)]);
        let response = run(&stack, &upstream, get(), None).await.ok().unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(
            counter_with(&stack.metrics, "outrigger_retries_total", "backend-timeout"),
            1.0
        );
    }
}
