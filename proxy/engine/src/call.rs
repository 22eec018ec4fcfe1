//! One request through a destination's resilience stack:
//!
//! ```text
//! rate limit (inbound) → concurrency limit → route → request timeout
//!   → [ circuit breaker → endpoint (P2C, outlier ejection) → per-try timeout ]
//!   → retry? (conditions, idempotency, replayable body, budget, backoff, deadline)
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::request::Parts;
use http::uri::PathAndQuery;
use http::{header, HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use outrigger_api::policy::{FailureKind, NonIdempotent, RetryOn};

use super::config::{BreakerSettings, RetrySettings, RouteConfig};
use super::guarded_body::with_guard;
use super::stack::DestinationStack;
use outrigger_http::body::{empty, full, incoming, ProxyBody};
use outrigger_http::client::UpstreamError;
use outrigger_http::error_response::{ErrorResponse, ProxyError, ERROR_HEADER};
use outrigger_http::h1_pool::SendError;
use outrigger_http::headers::strip_hop_by_hop;
use outrigger_proxy_core::addr::HostPort;
use outrigger_proxy_core::error::error_chain;
use outrigger_resilience::{
    parse_retry_after, Admission, Backoff, CircuitBreaker, Permit, Transition,
};

/// Latency the balancer charges an endpoint for a transport failure.
const TRANSPORT_FAILURE_COST: Duration = Duration::from_secs(1);

/// What one attempt came back with.
enum Outcome {
    Response(Response<ProxyBody>),
    /// The upstream could not be connected to: it never saw the request.
    ConnectFailure(String),
    /// An HTTP/2 upstream refused the stream: it never processed the request.
    RefusedStream(String),
    /// The request was not sent (the pooled connection closed first).
    ResetBeforeRequest(String),
    /// The connection broke after the request may have been seen.
    Reset(String),
    /// The attempt's own deadline passed (`backendRequest`).
    AttemptTimeout,
}

impl Outcome {
    /// Whether the upstream provably never saw the request: safe to replay
    /// whatever the method.
    fn never_reached_upstream(&self) -> bool {
        matches!(
            self,
            Outcome::ConnectFailure(_) | Outcome::RefusedStream(_) | Outcome::ResetBeforeRequest(_)
        )
    }

    /// Whether the breaker counts this as a failure under `failure_on`.
    fn is_breaker_failure(&self, failure_on: &[FailureKind]) -> bool {
        failure_on.iter().any(|kind| match (kind, self) {
            (FailureKind::ServerError, Outcome::Response(r)) => r.status().is_server_error(),
            (FailureKind::GatewayError, Outcome::Response(r)) => {
                matches!(r.status().as_u16(), 502..=504)
            }
            (FailureKind::Timeout, Outcome::AttemptTimeout) => true,
            (FailureKind::ConnectionError, o) => {
                !matches!(o, Outcome::Response(_) | Outcome::AttemptTimeout)
            }
            _ => false,
        })
    }

    /// Outlier detection counts 5xx, connection errors and timeouts (Envoy's
    /// consecutive-5xx, where local failures count as 503).
    fn is_endpoint_failure(&self) -> bool {
        match self {
            Outcome::Response(r) => r.status().is_server_error(),
            _ => true,
        }
    }

    /// The retry reason, if the policy retries this outcome.
    fn retry_reason(&self, retry: &RetrySettings) -> Option<&'static str> {
        let on = |c: RetryOn| retry.on.contains(&c);
        match self {
            Outcome::Response(r) if retry.codes.contains(&r.status().as_u16()) => {
                Some(status_reason(r.status()))
            }
            Outcome::Response(_) => None,
            Outcome::ConnectFailure(_) => on(RetryOn::ConnectFailure).then_some("connect-failure"),
            Outcome::RefusedStream(_) => on(RetryOn::RefusedStream).then_some("refused-stream"),
            Outcome::ResetBeforeRequest(_) => (on(RetryOn::ResetBeforeRequest)
                || on(RetryOn::Reset))
            .then_some("reset-before-request"),
            Outcome::Reset(_) => on(RetryOn::Reset).then_some("reset"),
            // A per-try timeout is a gateway timeout: retried when 504 is.
            Outcome::AttemptTimeout => retry.codes.contains(&504).then_some("backend-timeout"),
        }
    }

    fn into_response(self, stack: &DestinationStack, target: &HostPort) -> Response<ProxyBody> {
        match self {
            Outcome::Response(mut response) => {
                strip_hop_by_hop(response.headers_mut(), false);
                response
            }
            Outcome::ConnectFailure(detail) => {
                ProxyError::ConnectFailure.response(&format!("{target}: {detail}"))
            }
            Outcome::RefusedStream(detail)
            | Outcome::ResetBeforeRequest(detail)
            | Outcome::Reset(detail) => {
                ProxyError::UpstreamReset.response(&format!("{target}: {detail}"))
            }
            Outcome::AttemptTimeout => {
                let limit = stack
                    .config
                    .default_route
                    .backend_timeout
                    .unwrap_or_default();
                ProxyError::Timeout.response(&format!(
                    "{} sent no response within the per-try timeout ({})",
                    stack.label,
                    outrigger_api::duration::Duration::from_std(limit)
                ))
            }
        }
    }
}

fn status_reason(status: StatusCode) -> &'static str {
    match status.as_u16() {
        500 => "status-500",
        502 => "status-502",
        503 => "status-503",
        504 => "status-504",
        429 => "status-429",
        s if s >= 500 => "status-5xx",
        _ => "status-other",
    }
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
enum RequestBody {
    Replayable(Bytes),
    Streaming(Option<Incoming>),
}

impl RequestBody {
    /// The body for the next attempt. An empty body is sent as `empty()`,
    /// which (zero-sized) boxes without allocating.
    fn take(&mut self) -> Option<ProxyBody> {
        use http_body::Body;
        match self {
            RequestBody::Replayable(bytes) if bytes.is_empty() => Some(empty()),
            RequestBody::Replayable(bytes) => Some(full(bytes.clone())),
            RequestBody::Streaming(body) => body.take().map(|body| match body.is_end_stream() {
                true => empty(),
                false => incoming(body),
            }),
        }
    }
}

/// Runs one request through `stack`. `started` is when the proxy received it.
pub async fn call(
    stack: Arc<DestinationStack>,
    request: Request<Incoming>,
    started: Instant,
) -> Response<ProxyBody> {
    let metrics = &stack.metrics.resilience;
    let labels = [stack.direction, &*stack.label];
    let dry_run = stack.config.dry_run;
    let would_reject = |reason: &str| {
        metrics
            .dry_run_would_reject
            .with_label_values(&[stack.direction, &stack.label, reason])
            .inc();
    };

    if let Some(bucket) = &stack.rate_limit {
        let verdict = bucket
            .lock()
            .expect("not poisoned")
            .try_take(Instant::now());
        if let Err(retry_after) = verdict {
            if dry_run {
                would_reject("rate-limited");
            } else {
                metrics.rate_limited.with_label_values(&labels).inc();
                return rate_limited(retry_after);
            }
        }
    }

    let permit = match &stack.limit {
        None => None,
        Some(limit) => match limit.acquire().await {
            Ok(permit) => Some(permit),
            Err(shed) if dry_run => {
                would_reject(shed.as_str());
                None
            }
            Err(shed) => {
                metrics
                    .shed
                    .with_label_values(&[stack.direction, &stack.label, shed.as_str()])
                    .inc();
                return ProxyError::Overloaded.response(&format!(
                    "{} is at its concurrency limit ({})",
                    stack.label,
                    shed.as_str()
                ));
            }
        },
    };

    let route = stack
        .config
        .route(request.method(), request.uri().path(), request.headers());
    let deadline = route.request_timeout.map(|t| started + t);
    let exchange = attempts(&stack, route, request, deadline);
    let response = match deadline {
        None => exchange.await,
        Some(deadline) => match tokio::time::timeout_at(deadline.into(), exchange).await {
            Ok(response) => response,
            Err(_) => {
                metrics
                    .timeouts
                    .with_label_values(&[stack.direction, &stack.label, "request"])
                    .inc();
                ProxyError::Timeout.response(&format!(
                    "{} did not answer within the request timeout ({})",
                    stack.label,
                    outrigger_api::duration::Duration::from_std(
                        route.request_timeout.unwrap_or_default()
                    )
                ))
            }
        },
    };
    // The concurrency slot is held until the response body has been sent.
    match permit {
        Some(permit) => with_guard(response, permit),
        None => response,
    }
}

/// The retry loop.
async fn attempts(
    stack: &DestinationStack,
    route: &RouteConfig,
    request: Request<Incoming>,
    deadline: Option<Instant>,
) -> Response<ProxyBody> {
    let metrics = &stack.metrics.resilience;
    let labels = [stack.direction, &*stack.label];
    let (mut parts, body) = request.into_parts();
    let retry = route.retry.as_ref();
    let mut body = match retry {
        Some(retry) => match replayable_body(body, retry.max_buffered_body_bytes).await {
            Ok(body) => body,
            Err(detail) => return ProxyError::BadRequest.response(&detail),
        },
        None => RequestBody::Streaming(Some(body)),
    };
    if retry.is_some() && matches!(body, RequestBody::Streaming(_)) {
        metrics
            .retries_skipped
            .with_label_values(&[stack.direction, &stack.label, "body-too-large"])
            .inc();
    }
    let replay_ok = retry.is_some_and(|r| replay_allowed(&parts, r));
    if let Some(budget) = &stack.budget {
        budget
            .state
            .lock()
            .expect("not poisoned")
            .record_request(Instant::now());
    }

    let mut retries_done = 0u32;
    loop {
        let Some(attempt_body) = body.take() else {
            // A streamed body was already sent once; never reached for retries.
            return ProxyError::UpstreamReset.response("request body already consumed");
        };
        // Without retries this is the only attempt: it may take the headers.
        let head = match retry {
            Some(_) => Head::Shared(&parts),
            None => Head::Once(&mut parts),
        };
        let (outcome, index) = match attempt(stack, route, head, attempt_body, deadline).await {
            Ok(pair) => pair,
            Err(fallback) => return fallback,
        };
        let target = &stack.endpoints.list[index].target;

        let Some(retry) = retry else {
            return outcome.into_response(stack, target);
        };
        let Some(reason) = outcome.retry_reason(retry) else {
            return outcome.into_response(stack, target);
        };
        let skip = |why: &str| {
            metrics
                .retries_skipped
                .with_label_values(&[stack.direction, &stack.label, why])
                .inc();
        };
        if retries_done >= retry.attempts {
            skip("attempts-exhausted");
            return outcome.into_response(stack, target);
        }
        if !(replay_ok || outcome.never_reached_upstream()) {
            skip("non-idempotent");
            return outcome.into_response(stack, target);
        }
        if matches!(body, RequestBody::Streaming(None)) {
            return outcome.into_response(stack, target);
        }
        let withdrawn = stack.budget.as_ref().is_none_or(|b| {
            b.state
                .lock()
                .expect("not poisoned")
                .try_withdraw(Instant::now())
        });
        if !withdrawn {
            metrics
                .retry_budget_exhausted
                .with_label_values(&labels)
                .inc();
            if stack.config.dry_run {
                metrics
                    .dry_run_would_reject
                    .with_label_values(&[stack.direction, &stack.label, "budget-exhausted"])
                    .inc();
            } else {
                return outcome.into_response(stack, target);
            }
        }

        let retry_after = match &outcome {
            Outcome::Response(r) => r
                .headers()
                .get(header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| parse_retry_after(v, SystemTime::now())),
            _ => None,
        };
        let backoff = Backoff {
            base: retry.backoff_base,
            max: retry.backoff_max,
        };
        let delay = retry_after.unwrap_or_else(|| backoff.delay(retries_done, &mut rand::rng()));
        // Retry only if the wait still leaves time for an attempt.
        if deadline.is_some_and(|d| Instant::now() + delay >= d) {
            skip("deadline");
            return outcome.into_response(stack, target);
        }
        metrics
            .retries
            .with_label_values(&[stack.direction, &stack.label, reason])
            .inc();
        drop(outcome);
        tokio::time::sleep(delay).await;
        retries_done += 1;
    }
}

/// One attempt: breaker admission, endpoint choice, the exchange under the
/// per-try timeout, and the bookkeeping of its outcome, with the index of the
/// endpoint tried. `Err` is the breaker's fallback response.
async fn attempt(
    stack: &DestinationStack,
    route: &RouteConfig,
    head: Head<'_>,
    body: ProxyBody,
    deadline: Option<Instant>,
) -> Result<(Outcome, usize), Response<ProxyBody>> {
    let permit = match &stack.breaker {
        None => None,
        Some(breaker) => {
            let (admission, transition) = breaker
                .state
                .lock()
                .expect("not poisoned")
                .try_acquire_with_transition(Instant::now());
            if let Some(t) = transition {
                report_transition(stack, t);
            }
            stack.publish_circuit_state(Instant::now());
            match admission {
                Admission::Allowed(permit) => Some(BreakerPermit {
                    breaker: breaker.state.clone(),
                    permit: Some(permit),
                }),
                Admission::Rejected { retry_after } => {
                    if stack.config.dry_run {
                        stack
                            .metrics
                            .resilience
                            .dry_run_would_reject
                            .with_label_values(&[stack.direction, &stack.label, "circuit-open"])
                            .inc();
                        None
                    } else {
                        stack
                            .metrics
                            .resilience
                            .fallbacks
                            .with_label_values(&[stack.direction, &stack.label])
                            .inc();
                        return Err(fallback(&breaker.settings, retry_after));
                    }
                }
            }
        }
    };

    let endpoints = &stack.endpoints;
    let now = Instant::now();
    let index = {
        let outlier = endpoints
            .outlier
            .as_ref()
            .map(|(_, d)| d.lock().expect("not poisoned"));
        super::balancer::pick(
            &endpoints.list,
            |i| outlier.as_ref().is_some_and(|d| d.is_ejected(now, &i)),
            now,
            &mut rand::rng(),
        )
    };
    let Some(index) = index else {
        return Err(
            ProxyError::NoEndpoints.response(&format!("{} has no ready endpoints", stack.label))
        );
    };
    let endpoint = &endpoints.list[index];
    let target = &endpoint.target;

    let request = upstream_request(head, body, target);
    let per_try = match (route.backend_timeout, deadline) {
        (Some(t), Some(d)) => Some(t.min(d.saturating_duration_since(Instant::now()))),
        (Some(t), None) => Some(t),
        (None, _) => None,
    };
    let sent = Instant::now();
    let outcome = {
        let _pending = endpoint.start();
        let exchange = stack.clients.send(target, request);
        let result = match per_try {
            Some(limit) => tokio::time::timeout(limit, exchange).await.ok(),
            None => Some(exchange.await),
        };
        match result {
            None => Outcome::AttemptTimeout,
            Some(Ok(response)) => Outcome::Response(response),
            Some(Err(err)) => classify_error(&err),
        }
    };
    let done = Instant::now();
    let elapsed = done.duration_since(sent);
    record_outcome(stack, index, permit, &outcome, elapsed, done);
    Ok((outcome, index))
}

/// A breaker admission that must be answered: recorded with the outcome, or
/// released if the attempt is abandoned (the caller went away, the request
/// deadline passed), so a half-open breaker never waits for a lost probe.
struct BreakerPermit {
    breaker: Arc<std::sync::Mutex<CircuitBreaker>>,
    permit: Option<Permit>,
}

impl Drop for BreakerPermit {
    fn drop(&mut self) {
        if let Some(permit) = self.permit.take() {
            self.breaker.lock().expect("not poisoned").release(permit);
        }
    }
}

fn report_transition(stack: &DestinationStack, t: Transition) {
    stack
        .metrics
        .resilience
        .circuit_transitions
        .with_label_values(&[
            stack.direction,
            &stack.label,
            t.from.as_str(),
            t.to.as_str(),
        ])
        .inc();
    tracing::warn!(
        destination = %stack.label,
        from = t.from.as_str(),
        to = t.to.as_str(),
        reason = t.reason,
        "circuit breaker changed state"
    );
}

fn record_outcome(
    stack: &DestinationStack,
    index: usize,
    permit: Option<BreakerPermit>,
    outcome: &Outcome,
    elapsed: Duration,
    now: Instant,
) {
    let metrics = &stack.metrics.resilience;
    let labels = [stack.direction, &*stack.label];
    let endpoints = &stack.endpoints;
    // An endpoint that fails fast is not a fast endpoint: without a penalty a
    // refused port would attract the balancer's traffic.
    let cost = match outcome {
        Outcome::Response(_) => elapsed,
        _ => elapsed.max(TRANSPORT_FAILURE_COST),
    };
    endpoints.list[index].observe(cost, now);
    match outcome {
        Outcome::AttemptTimeout => metrics
            .timeouts
            .with_label_values(&[stack.direction, &stack.label, "backend-request"])
            .inc(),
        Outcome::ConnectFailure(detail) if detail.contains("timed out") => metrics
            .timeouts
            .with_label_values(&[stack.direction, &stack.label, "connect"])
            .inc(),
        _ => {}
    }
    if let Some((_, detector)) = &endpoints.outlier {
        let mut detector = detector.lock().expect("not poisoned");
        if let Some(ejection) = detector.record(now, &index, outcome.is_endpoint_failure()) {
            metrics.ejections.with_label_values(&labels).inc();
            tracing::warn!(
                destination = %stack.label,
                endpoint = %endpoints.list[index].target,
                duration = ?ejection.duration,
                "endpoint ejected after consecutive failures"
            );
        }
        if let Some(gauge) = &stack.ejected_endpoints_gauge {
            gauge.set(detector.ejected_count(now) as i64);
        }
    }
    if let (Some(breaker), Some(mut held)) = (&stack.breaker, permit) {
        let failure = outcome.is_breaker_failure(&breaker.settings.failure_on);
        if let Some(permit) = held.permit.take() {
            let transition = breaker
                .state
                .lock()
                .expect("not poisoned")
                .record(now, permit, failure, elapsed);
            if let Some(t) = transition {
                report_transition(stack, t);
            }
        }
        stack.publish_circuit_state(now);
    }
}

/// Maps a client error to what it means for retries.
fn classify_error(err: &UpstreamError) -> Outcome {
    let detail = error_chain(err);
    match err {
        UpstreamError::Http1(SendError::Connect(_)) => Outcome::ConnectFailure(detail),
        UpstreamError::Http1(SendError::NotSent(_)) => Outcome::ResetBeforeRequest(detail),
        UpstreamError::Http1(SendError::Failed(_)) => Outcome::Reset(detail),
        UpstreamError::Http2(err) if err.is_connect() => Outcome::ConnectFailure(detail),
        UpstreamError::Http2(err) => {
            let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
            while let Some(e) = source {
                if let Some(h2) = e.downcast_ref::<h2::Error>() {
                    if h2.reason() == Some(h2::Reason::REFUSED_STREAM) {
                        return Outcome::RefusedStream(detail);
                    }
                }
                if let Some(hyper_err) = e.downcast_ref::<hyper::Error>() {
                    // Canceled: the connection closed before the request was written.
                    if hyper_err.is_canceled() {
                        return Outcome::ResetBeforeRequest(detail);
                    }
                }
                source = e.source();
            }
            Outcome::Reset(detail)
        }
    }
}

/// Buffers a body for replay when it is known to fit; otherwise leaves it to
/// stream once (and the request will not be retried).
async fn replayable_body(body: Incoming, max: u64) -> Result<RequestBody, String> {
    use http_body::Body;
    if body.is_end_stream() {
        return Ok(RequestBody::Replayable(Bytes::new()));
    }
    match body.size_hint().exact() {
        Some(len) if len <= max => {
            let collected = http_body_util::Limited::new(body, max as usize)
                .collect()
                .await
                .map_err(|e| format!("cannot read request body: {e}"))?;
            Ok(RequestBody::Replayable(collected.to_bytes()))
        }
        _ => Ok(RequestBody::Streaming(Some(body))),
    }
}

/// The request for one attempt, addressed to the chosen endpoint.
/// The request head an attempt is built from: shared when it may be replayed.
enum Head<'a> {
    Shared(&'a Parts),
    Once(&'a mut Parts),
}

fn upstream_request(head: Head<'_>, body: ProxyBody, target: &HostPort) -> Request<ProxyBody> {
    let (parts, headers) = match head {
        Head::Shared(parts) => (parts, parts.headers.clone()),
        Head::Once(parts) => {
            let headers = std::mem::take(&mut parts.headers);
            (&*parts, headers)
        }
    };
    let http2 = parts.version >= Version::HTTP_2;
    let path = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    let uri = if http2 {
        // hyper's HTTP/2 pool keys connections by the URI's authority.
        Uri::try_from(format!("http://{target}{path}")).expect("target and path form a URI")
    } else {
        Uri::from(path)
    };
    let mut request = Request::new(body);
    *request.method_mut() = parts.method.clone();
    *request.version_mut() = if http2 {
        Version::HTTP_2
    } else {
        Version::HTTP_11
    };
    *request.uri_mut() = uri;
    *request.headers_mut() = headers;
    strip_hop_by_hop(request.headers_mut(), false);
    if !http2 && !request.headers().contains_key(header::HOST) {
        // HTTP/1.1 needs a Host: the absolute-form URI's authority when the
        // client sent one (and no Host), else the target.
        let host = match parts.uri.authority() {
            Some(authority) => HeaderValue::from_str(authority.as_str()),
            None => HeaderValue::try_from(target.to_string()),
        };
        if let Ok(host) = host {
            request.headers_mut().insert(header::HOST, host);
        }
    }
    request
}

fn fallback(settings: &BreakerSettings, retry_after: Duration) -> Response<ProxyBody> {
    let mut response = Response::new(full(settings.fallback_body.clone()));
    *response.status_mut() = settings.fallback_status;
    let headers = response.headers_mut();
    headers.insert(ERROR_HEADER, HeaderValue::from_static("circuit-open"));
    if let Ok(content_type) = HeaderValue::from_str(&settings.fallback_content_type) {
        headers.insert(header::CONTENT_TYPE, content_type);
    }
    headers.insert(header::RETRY_AFTER, retry_after_value(retry_after));
    response
}

fn rate_limited(retry_after: Duration) -> Response<ProxyBody> {
    let mut response =
        ProxyError::RateLimited.response("request rate above the policy's rateLimit");
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, retry_after_value(retry_after));
    response
}

/// Retry-After carries whole seconds; round up so clients never come back early.
fn retry_after_value(wait: Duration) -> HeaderValue {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    HeaderValue::from(secs.max(1))
}
