//! The retry loop: attempts until one answers or a rule says stop. An outcome
//! is retried when the policy names its reason (`codes`, `on`), attempts are
//! left, the request may be replayed (idempotent method, `nonIdempotent`, or
//! the upstream provably never saw it), its body was buffered, the budget
//! allows, and the wait (Retry-After, else jittered backoff) ends before the
//! request deadline.

use std::time::{Instant, SystemTime};

use bytes::Bytes;
use http::request::Parts;
use http::{header, Method, Request, Response};
use http_body::Body;
use http_body_util::BodyExt;
use outrigger_api::policy::NonIdempotent;

use super::attempt::attempt;
use super::error::CallError;
use super::now;
use super::outcome::Outcome;
use super::upstream::{Head, Upstream};
use crate::config::{RetrySettings, RouteConfig};
use crate::stack::DestinationStack;
use outrigger_http::body::{empty, full, BoxError, ProxyBody};
use outrigger_http::error_response::ProxyError;
use outrigger_resilience::{parse_retry_after, Backoff};

/// A request body the proxy can forward: hyper's `Incoming`, or a test's.
pub trait RequestBody: Body<Data = Bytes, Error: Into<BoxError>> + Send + 'static {}
impl<B: Body<Data = Bytes, Error: Into<BoxError>> + Send + 'static> RequestBody for B {}

pub async fn with_retries<U: Upstream, B: RequestBody>(
    stack: &DestinationStack,
    upstream: &U,
    route: &RouteConfig,
    request: Request<B>,
    deadline: Option<Instant>,
) -> Result<Response<ProxyBody>, CallError> {
    let metrics = &stack.metrics.resilience;
    let skip = |why: &str| {
        metrics
            .retries_skipped
            .with_label_values(&[stack.direction, &stack.label, &route.name, why])
            .inc();
    };
    let (mut parts, body) = request.into_parts();
    let retry = route.retry.as_ref();
    let mut body = match retry {
        Some(retry) => replayable(body, retry.max_buffered_body_bytes).await?,
        None => Replay::Streaming(Some(body)),
    };
    if retry.is_some() && matches!(body, Replay::Streaming(_)) {
        skip("body-too-large");
    }
    let replay_ok = retry.is_some_and(|r| replay_allowed(&parts, r));
    if let Some(budget) = &stack.budget {
        let mut budget = budget.state.lock().expect("not poisoned");
        budget.record_request(now());
    }

    let mut retries_done = 0u32;
    loop {
        let Some(attempt_body) = body.take() else {
            // A streamed body was already sent once; never reached for retries.
            let detail = "request body already consumed";
            return Err(CallError::new(ProxyError::UpstreamReset, detail));
        };
        // Without retries this is the only attempt: it may take the headers.
        let head = match retry {
            Some(_) => Head::Shared(&parts),
            None => Head::Once(&mut parts),
        };
        let (outcome, index) =
            attempt(stack, upstream, route, head, attempt_body, deadline).await?;
        let target = &stack.endpoints.list[index].target;
        let (Some(retry), Some(reason)) = (retry, retry.and_then(|r| outcome.retry_reason(r)))
        else {
            return outcome.into_result(stack, target);
        };
        if retries_done >= retry.attempts {
            skip("attempts-exhausted");
            return outcome.into_result(stack, target);
        }
        if !(replay_ok || outcome.never_reached_upstream()) {
            skip("non-idempotent");
            return outcome.into_result(stack, target);
        }
        if matches!(body, Replay::Streaming(None)) {
            return outcome.into_result(stack, target);
        }
        if !withdraw_from_budget(stack) {
            return outcome.into_result(stack, target);
        }
        let delay = retry_after(&outcome).unwrap_or_else(|| {
            let backoff = Backoff {
                base: retry.backoff_base,
                max: retry.backoff_max,
            };
            backoff.delay(retries_done, &mut rand::rng())
        });
        // Retry only if the wait still leaves time for an attempt.
        if deadline.is_some_and(|d| now() + delay >= d) {
            skip("deadline");
            return outcome.into_result(stack, target);
        }
        metrics
            .retries
            .with_label_values(&[stack.direction, &stack.label, &route.name, reason])
            .inc();
        drop(outcome);
        tokio::time::sleep(delay).await;
        retries_done += 1;
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

/// The request body, either held for replay or streamed once.
enum Replay<B> {
    Buffered(Bytes),
    Streaming(Option<B>),
}

impl<B: RequestBody> Replay<B> {
    /// The body for the next attempt. An empty body is sent as `empty()`,
    /// which (zero-sized) boxes without allocating.
    fn take(&mut self) -> Option<ProxyBody> {
        match self {
            Replay::Buffered(bytes) if bytes.is_empty() => Some(empty()),
            Replay::Buffered(bytes) => Some(full(bytes.clone())),
            Replay::Streaming(body) => body.take().map(|body| match body.is_end_stream() {
                true => empty(),
                false => body.map_err(Into::into).boxed_unsync(),
            }),
        }
    }
}

/// Buffers a body for replay when it is known to fit; otherwise leaves it to
/// stream once (and the request will not be retried).
async fn replayable<B: RequestBody>(body: B, max: u64) -> Result<Replay<B>, CallError> {
    if body.is_end_stream() {
        return Ok(Replay::Buffered(Bytes::new()));
    }
    match body.size_hint().exact() {
        Some(len) if len <= max => {
            let collected = http_body_util::Limited::new(body, max as usize)
                .collect()
                .await
                .map_err(|e| {
                    CallError::new(
                        ProxyError::BadRequest,
                        format!("cannot read request body: {e}"),
                    )
                })?;
            Ok(Replay::Buffered(collected.to_bytes()))
        }
        _ => Ok(Replay::Streaming(Some(body))),
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{config, counter_with, retry_settings, stack, Scripted, Step};
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
        with_retries(stack, upstream, route, request, deadline).await
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
            ["x", "x"],
            "the buffered body is replayed"
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

    #[tokio::test(start_paused = true)]
    async fn a_streamed_body_is_sent_once_and_not_retried() {
        let stack = stack(retrying(2), 1);
        let upstream = Scripted::new([Step::Status(503), Step::Status(200)]);
        let chunks = Chunked(Some(Bytes::from_static(b"chunk")));
        let request = Request::put("/").body(chunks).unwrap();
        let response = run(&stack, &upstream, request, None).await.ok().unwrap();
        assert_eq!(response.status(), 503);
        assert_eq!(upstream.times().len(), 1);
        assert_eq!(skipped(&stack, "body-too-large"), 1.0);
    }

    /// A body of unknown length (sent chunked).
    struct Chunked(Option<Bytes>);

    impl Body for Chunked {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
            std::task::Poll::Ready(self.0.take().map(|b| Ok(http_body::Frame::data(b))))
        }
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
