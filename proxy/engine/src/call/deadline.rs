//! The request deadline (`timeouts.request`): the whole call, attempts and
//! backoff included, from when the proxy received the request; 504 `timeout`
//! when it passes.
//!
//! It has no timer of its own. Inside a call only two things wait: an
//! attempt's exchange, and the pause before a retry. The retry loop starts no
//! pause that would end past the deadline, and each attempt's one timer fires
//! at the nearer of its per-try limit and the deadline ([`attempt_limit`]);
//! when the deadline is what passed, the attempt ends the call ([`passed`]).
//! (A timer around the whole call as well cost a second registration in the
//! timer wheel per request: ~450 instructions, measured with callgrind.)
//! After the response headers, the deadline goes on bounding a body of known
//! length (`body_time`).

use std::time::{Duration, Instant};

use super::error::CallError;
use crate::config::RouteConfig;
use crate::stack::DestinationStack;
use outrigger_http::error_response::ProxyError;

/// When an attempt sent at `sent` must have its response headers: its
/// per-try limit (`backendRequest`) or the call's deadline, whichever is
/// nearer, and whether that is the call's deadline (ties go to the deadline).
pub fn attempt_limit(
    backend_timeout: Option<Duration>,
    deadline: Option<Instant>,
    sent: Instant,
) -> Option<(Instant, bool)> {
    // A per-try limit too far out to represent is no limit.
    match (backend_timeout.and_then(|t| sent.checked_add(t)), deadline) {
        (Some(per_try), Some(deadline)) if deadline <= per_try => Some((deadline, true)),
        (Some(per_try), _) => Some((per_try, false)),
        (None, Some(deadline)) => Some((deadline, true)),
        (None, None) => None,
    }
}

/// The call's answer when its deadline passed (504 `timeout`), counted in
/// `outrigger_timeouts_total{kind="request"}`.
pub fn passed(stack: &DestinationStack, route: &RouteConfig) -> CallError {
    stack
        .metrics
        .resilience
        .timeouts
        .with_label_values(&[stack.direction, &stack.label, &route.name, "request"])
        .inc();
    CallError::new(
        ProxyError::Timeout,
        format!(
            "{} did not answer within the request timeout ({})",
            stack.label,
            outrigger_api::duration::Duration::from_std(route.request_timeout.unwrap_or_default())
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::super::testing::{config, counter, stack, Scripted, Step};
    use super::super::{now, serve, Cause};
    use super::*;
    use bytes::Bytes;
    use http::Request;
    use http_body_util::Full;
    use std::future::pending;

    fn get() -> Request<Full<Bytes>> {
        Request::get("/").body(Full::new(Bytes::new())).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn slow_calls_end_at_the_deadline_with_504() {
        let mut config = config();
        config.default_route.request_timeout = Some(Duration::from_secs(2));
        let stack = stack(config, 1);
        let started = tokio::time::Instant::now();
        let upstream = Scripted::new([Step::Hang]);
        let served = serve(&stack, &upstream, get(), now(), pending()).await;
        assert_eq!(started.elapsed(), Duration::from_secs(2));
        assert_eq!(served.error, Some(Cause::Proxy(ProxyError::Timeout)));
        assert_eq!(served.response.status(), 504);
        assert_eq!(counter(&stack.metrics, "outrigger_timeouts_total"), 1.0);
    }

    #[tokio::test(start_paused = true)]
    async fn answers_before_the_deadline_pass_through() {
        let mut two_seconds = config();
        two_seconds.default_route.request_timeout = Some(Duration::from_secs(2));
        let within = stack(two_seconds, 1);
        let upstream = Scripted::new([Step::After(Duration::from_millis(1999), 200)]);
        let served = serve(&within, &upstream, get(), now(), pending()).await;
        assert_eq!(served.error, None);
        assert_eq!(served.response.status(), 200);
        // No deadline: nothing ends the call but the call.
        let mut unbounded = config();
        unbounded.default_route.request_timeout = None;
        let unbounded = stack(unbounded, 1);
        let upstream = Scripted::new([Step::Hang]);
        let bounded = tokio::time::timeout(
            Duration::from_secs(60),
            serve(&unbounded, &upstream, get(), now(), pending()),
        );
        assert!(bounded.await.is_err());
    }

    #[test]
    fn an_attempt_ends_at_the_nearer_of_its_limit_and_the_deadline() {
        let sent = Instant::now();
        let s = Duration::from_secs;
        let deadline = Some(sent + s(5));
        assert_eq!(
            attempt_limit(Some(s(2)), deadline, sent),
            Some((sent + s(2), false))
        );
        assert_eq!(
            attempt_limit(Some(s(9)), deadline, sent),
            Some((sent + s(5), true))
        );
        assert_eq!(
            attempt_limit(Some(s(5)), deadline, sent),
            Some((sent + s(5), true))
        );
        assert_eq!(
            attempt_limit(None, deadline, sent),
            Some((sent + s(5), true))
        );
        assert_eq!(
            attempt_limit(Some(s(2)), None, sent),
            Some((sent + s(2), false))
        );
        assert_eq!(attempt_limit(None, None, sent), None);
    }
}
