//! One attempt: breaker admission, endpoint choice (P2C over latency and
//! load, skipping ejected endpoints), the exchange under the per-try timeout
//! (`backendRequest`, cut to the request deadline), and the bookkeeping of
//! its outcome: latency estimate, outlier detector, breaker.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::Response;
use prometheus::IntGauge;

use super::breaker::{self, BreakerPermit, Site};
use super::deadline;
use super::error::CallError;
use super::grpc;
use super::now;
use super::outcome::Outcome;
use super::upstream::{upstream_request, Head, Upstream};
use crate::config::RouteConfig;
use crate::stack::{Breaker, DestinationStack, EndpointReport, Endpoints};
use outrigger_api::policy::FailureKind;
use outrigger_http::body::{empty, ProxyBody};
use outrigger_http::connect_time::ConnectTime;
use outrigger_http::error_response::{is_grpc, ProxyError};
use outrigger_proxy_core::metrics::Metrics;
use outrigger_resilience::grpc::Codes;
use outrigger_trace::{KeyValue, RequestTrace};

/// Latency the balancer charges an endpoint for a transport failure.
const TRANSPORT_FAILURE_COST: Duration = Duration::from_secs(1);

/// The outcome and the index of the endpoint tried. `Err` is the breaker's
/// fallback, or no endpoints at all.
pub async fn attempt<U: Upstream>(
    stack: &DestinationStack,
    upstream: &U,
    route: &RouteConfig,
    head: Head<'_>,
    body: ProxyBody,
    deadline: Option<Instant>,
    trace: Option<&RequestTrace>,
) -> Result<(Outcome, usize), CallError> {
    // One reading of the clock serves the admission, the choice and the
    // per-try limit: they happen together.
    let sent = now();
    let permit = match breaker::admit(stack, sent) {
        Ok(permit) => permit,
        Err(error) => {
            if let Some(trace) = trace {
                let cause = KeyValue::new("outrigger.error", error.cause().as_str());
                trace.event("circuit-open", vec![cause]);
            }
            return Err(error);
        }
    };
    let Some(index) = stack.choose_endpoint(sent) else {
        return Err(CallError::new(
            ProxyError::NoEndpoints,
            format!("{} has no ready endpoints", stack.label),
        ));
    };
    let endpoint = &stack.endpoints.list[index];
    let mut request = upstream_request(head, body, &endpoint.target);
    let span = trace.map(|trace| trace.attempt(request.headers_mut(), &endpoint.target));
    // Only a gRPC call has a gRPC status to read in its response.
    let grpc = is_grpc(request.headers());
    if grpc {
        grpc::pass_on_deadline(request.headers_mut(), deadline, sent);
    }
    let limit = deadline::attempt_limit(route.backend_timeout, deadline, sent);
    let mut outcome = {
        let _pending = endpoint.start();
        // Pinned where it is made: the per-try timeout then wraps a pointer
        // to it, not a copy (the exchange's future is a few KiB, and moving
        // it into the timeout was a memcpy of ~230 instructions per request;
        // callgrind, `bash bench/instructions.sh`).
        let exchange = std::pin::pin!(upstream.send(&endpoint.target, request));
        match limit {
            None => exchange.await,
            Some((at, is_deadline)) => match tokio::time::timeout_at(at.into(), exchange).await {
                Ok(outcome) => outcome,
                // The call's deadline, not the endpoint's failure: nothing is
                // recorded against it, and the breaker admission is released.
                Err(_) if is_deadline => {
                    if let Some(span) = span {
                        span.finish(None, Some("deadline"));
                    }
                    return Err(deadline::passed(stack, route));
                }
                Err(_) => Outcome::AttemptTimeout,
            },
        }
    };
    if let Some(span) = span {
        span.finish(outcome.status(), outcome.failure());
    }
    record(stack, route, index, permit, &mut outcome, sent, grpc);
    Ok((outcome, index))
}

/// Records an attempt: its latency at once; its result in the outlier
/// detector and the breaker at once too, except for a gRPC response whose
/// status is still to come, recorded when its body shows it
/// ([`grpc::Verdict`]). `sent` is when the attempt started; `grpc`, whether
/// it is a gRPC call.
fn record(
    stack: &DestinationStack,
    route: &RouteConfig,
    index: usize,
    permit: Option<BreakerPermit>,
    outcome: &mut Outcome,
    sent: Instant,
    grpc: bool,
) {
    let now = now();
    let elapsed = now.duration_since(sent);
    let metrics = &stack.metrics.resilience;
    let endpoints = &stack.endpoints;
    // An endpoint is priced by how fast it answers: a connection opened for
    // this attempt is opened once and reused, so its set-up time is taken
    // off (priced in, one slow handshake starved a new endpoint for tens of
    // seconds). An endpoint that fails fast is not a fast endpoint: without
    // a penalty a refused port would attract the balancer's traffic.
    let cost = match outcome {
        Outcome::Response(response) => elapsed.saturating_sub(ConnectTime::take(response)),
        _ => elapsed.max(TRANSPORT_FAILURE_COST),
    };
    endpoints.list[index].observe(cost, now);
    let timeout = |kind: &str| {
        metrics
            .timeouts
            .with_label_values(&[stack.direction, &stack.label, &route.name, kind])
            .inc()
    };
    match outcome {
        Outcome::AttemptTimeout => timeout("backend-request"),
        Outcome::ConnectFailure(detail) if detail.contains("timed out") => timeout("connect"),
        _ => {}
    }
    let counted = stack.breaker.is_some() || endpoints.outlier.is_some();
    if let Outcome::Response(response) = outcome {
        if counted && grpc && grpc::status_pending(response) {
            let later = Later {
                direction: stack.direction,
                label: stack.label.clone(),
                metrics: stack.metrics.clone(),
                breaker: stack.breaker.clone().zip(permit),
                endpoints: endpoints.clone(),
                gauge: stack.ejected_endpoints_gauge.clone(),
                dry_run: stack.config.dry_run,
                index,
                elapsed,
            };
            let taken = std::mem::replace(response, Response::new(empty()));
            *response = grpc::on_verdict(taken, move |verdict| later.settle(verdict));
            return;
        }
    }
    if let Some((settings, _)) = &endpoints.outlier {
        let codes = if grpc {
            settings.grpc_codes
        } else {
            Codes::NONE
        };
        let failure = outcome.is_endpoint_failure(codes);
        stack.record_endpoint_result(index, failure, now);
    }
    breaker::record(stack, permit, outcome, grpc, elapsed, now);
}

/// An attempt's result to record once its gRPC status shows: what the
/// recording needs, owned, since the call has returned by then. Dropped
/// unsettled (the body never showed a verdict), its breaker admission is
/// released and the outlier detector hears nothing.
struct Later {
    direction: &'static str,
    label: Arc<str>,
    metrics: Arc<Metrics>,
    breaker: Option<(Arc<Breaker>, BreakerPermit)>,
    endpoints: Arc<Endpoints>,
    gauge: Option<IntGauge>,
    dry_run: bool,
    index: usize,
    elapsed: Duration,
}

impl Later {
    fn settle(self, verdict: grpc::Verdict) {
        let now = now();
        let site = Site {
            direction: self.direction,
            label: &self.label,
            metrics: &self.metrics,
        };
        let failure = |codes: outrigger_resilience::grpc::Codes, broken: bool| match verdict {
            grpc::Verdict::Message => false,
            grpc::Verdict::Status(code) => codes.contains(code),
            grpc::Verdict::Broken => broken,
        };
        if let Some((settings, _)) = &self.endpoints.outlier {
            let failed = failure(settings.grpc_codes, true);
            let report = EndpointReport {
                direction: self.direction,
                label: &self.label,
                metrics: &self.metrics,
                gauge: self.gauge.as_ref(),
                dry_run: self.dry_run,
            };
            self.endpoints
                .record_result(&report, self.index, failed, now);
        }
        if let Some((breaker, held)) = self.breaker {
            let settings = &breaker.settings;
            let broken = settings.failure_on.contains(&FailureKind::ConnectionError);
            let failed = failure(settings.grpc_codes, broken);
            breaker::settle(&site, &breaker, held, failed, self.elapsed, now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{config, counter, counter_with, gauge, stack, Scripted, Step};
    use super::super::Cause;
    use super::*;
    use crate::config::OutlierSettings;
    use http::Request;

    async fn try_once(
        stack: &DestinationStack,
        upstream: &Scripted,
        deadline: Option<Instant>,
    ) -> Result<(Outcome, usize), CallError> {
        let (mut parts, ()) = Request::get("/").body(()).unwrap().into_parts();
        let route = &stack.config.default_route;
        let head = Head::Once(&mut parts);
        let body = outrigger_http::body::empty();
        attempt(stack, upstream, route, head, body, deadline, None).await
    }

    async fn once(
        stack: &DestinationStack,
        upstream: &Scripted,
        deadline: Option<Instant>,
    ) -> (Outcome, usize) {
        match try_once(stack, upstream, deadline).await {
            Ok(pair) => pair,
            Err(error) => panic!("not admitted: {error:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_balancer_prices_an_answer_without_its_connection_set_up() {
        let ms = Duration::from_millis;
        let stack = stack(config(), 1);
        let upstream = Scripted::new([Step::Opened(ms(50), ms(2), 200)]);
        let (outcome, index) = once(&stack, &upstream, None).await;
        let Outcome::Response(response) = outcome else {
            panic!("answered")
        };
        assert!(
            response.extensions().get::<ConnectTime>().is_none(),
            "taken off the response, not passed on to the client"
        );
        assert_eq!(stack.endpoints.list[index].estimate(now()), ms(2));
    }

    #[tokio::test(start_paused = true)]
    async fn per_try_timeout_is_cut_to_the_deadline() {
        let mut config = config();
        config.default_route.backend_timeout = Some(Duration::from_secs(2));
        let stack = stack(config, 1);
        let upstream = Scripted::new([Step::Hang, Step::Hang]);
        let started = tokio::time::Instant::now();
        let (outcome, _) = once(&stack, &upstream, None).await;
        assert!(matches!(outcome, Outcome::AttemptTimeout));
        assert_eq!(started.elapsed(), Duration::from_secs(2));
        // Cut to the call's deadline, the attempt ends the call: a request
        // timeout, not the endpoint's (nothing counts against it).
        let started = tokio::time::Instant::now();
        let deadline = Some(now() + Duration::from_millis(700));
        let error = try_once(&stack, &upstream, deadline).await.err();
        let error = error.expect("the deadline ends the call");
        assert_eq!(error.cause(), Cause::Proxy(ProxyError::Timeout));
        assert_eq!(started.elapsed(), Duration::from_millis(700));
        assert_eq!(counter(&stack.metrics, "outrigger_timeouts_total"), 2.0);
        let request = counter_with(&stack.metrics, "outrigger_timeouts_total", "request");
        assert_eq!(request, 1.0);
    }

    #[tokio::test(start_paused = true)]
    async fn failing_endpoint_is_ejected_and_then_avoided() {
        let mut config = config();
        config.outlier = Some(OutlierSettings {
            consecutive_failures: 1,
            base_ejection_time: Duration::from_secs(30),
            max_ejection_percent: 50,
            grpc_codes: Default::default(),
        });
        let stack = stack(config, 2);
        // Endpoint 1 refuses connections; endpoint 0 answers.
        let upstream = Scripted::by_endpoint(|port| match port {
            9001 => Step::Connect,
            _ => Step::Status(200),
        });
        for _ in 0..40 {
            once(&stack, &upstream, None).await;
        }
        assert_eq!(counter(&stack.metrics, "outrigger_ejections_total"), 1.0);
        assert_eq!(gauge(&stack.metrics, "outrigger_ejected_endpoints"), 1.0);
        let before = upstream.calls_to(9001);
        for _ in 0..50 {
            let (outcome, index) = once(&stack, &upstream, None).await;
            assert_eq!(index, 0);
            assert!(matches!(outcome, Outcome::Response(_)));
        }
        assert_eq!(upstream.calls_to(9001), before);
        // After the ejection time it is no longer counted as ejected.
        tokio::time::advance(Duration::from_secs(31)).await;
        once(&stack, &upstream, None).await;
        assert_eq!(gauge(&stack.metrics, "outrigger_ejected_endpoints"), 0.0);
    }

    #[tokio::test(start_paused = true)]
    async fn no_endpoints_is_an_error() {
        let stack = stack(config(), 0);
        let upstream = Scripted::new([]);
        let (mut parts, ()) = Request::get("/").body(()).unwrap().into_parts();
        let route = &stack.config.default_route;
        let body = outrigger_http::body::empty();
        let result = attempt(
            &stack,
            &upstream,
            route,
            Head::Once(&mut parts),
            body,
            None,
            None,
        )
        .await;
        let response = result.err().expect("no endpoints").into_response();
        assert_eq!(response.status(), 503);
        assert_eq!(response.headers()["x-outrigger-error"], "no-endpoints");
    }
}
