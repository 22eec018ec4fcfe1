//! What one attempt came back with, and what that means for the breaker, the
//! outlier detector, the retry loop and the client.

use http::{Response, StatusCode};
use outrigger_api::policy::{FailureKind, RetryOn};

use super::error::CallError;
use super::grpc::trailers_only_status;
use crate::config::RetrySettings;
use crate::stack::DestinationStack;
use outrigger_http::body::ProxyBody;
use outrigger_http::error_response::{ProxyError, ERROR_HEADER};
use outrigger_http::headers::strip_hop_by_hop;
use outrigger_proxy_core::addr::HostPort;
use outrigger_resilience::grpc::{self, Codes};

pub enum Outcome {
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
    /// The response's status, if there is a response.
    pub fn status(&self) -> Option<u16> {
        match self {
            Outcome::Response(response) => Some(response.status().as_u16()),
            _ => None,
        }
    }

    /// What went wrong when there is no response (for trace spans).
    pub fn failure(&self) -> Option<&'static str> {
        match self {
            Outcome::Response(_) => None,
            Outcome::ConnectFailure(_) => Some("connect-failure"),
            Outcome::RefusedStream(_) => Some("refused-stream"),
            Outcome::ResetBeforeRequest(_) => Some("reset-before-request"),
            Outcome::Reset(_) => Some("reset"),
            Outcome::AttemptTimeout => Some("attempt-timeout"),
        }
    }

    /// Whether the upstream provably never saw the request: safe to replay
    /// whatever the method.
    pub fn never_reached_upstream(&self) -> bool {
        matches!(
            self,
            Outcome::ConnectFailure(_) | Outcome::RefusedStream(_) | Outcome::ResetBeforeRequest(_)
        )
    }

    /// Whether the breaker counts this as a failure under `failure_on`, or
    /// as a trailers-only gRPC response with one of `grpc_codes`.
    pub fn is_breaker_failure(&self, failure_on: &[FailureKind], grpc_codes: Codes) -> bool {
        self.is_grpc_failure(grpc_codes)
            || failure_on.iter().any(|kind| match (kind, self) {
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
    /// consecutive-5xx, where local failures count as 503), and trailers-only
    /// gRPC responses with one of `grpc_codes`.
    pub fn is_endpoint_failure(&self, grpc_codes: Codes) -> bool {
        match self {
            Outcome::Response(r) => {
                r.status().is_server_error() || self.is_grpc_failure(grpc_codes)
            }
            _ => true,
        }
    }

    fn is_grpc_failure(&self, codes: Codes) -> bool {
        !codes.is_empty()
            && matches!(self, Outcome::Response(r)
            if trailers_only_status(r).is_some_and(|code| codes.contains(code)))
    }

    /// What the retry loop should make of this outcome: the one place where
    /// an outcome is classified for retries (a protocol-aware classifier,
    /// gRPC's `grpc-status` say, plugs in here).
    /// `grpc`: whether the call is a gRPC one (only those have a gRPC status).
    pub fn retry_verdict(&self, retry: &RetrySettings, grpc: bool) -> RetryVerdict {
        let Some(reason) = self.retry_reason(retry, grpc) else {
            return RetryVerdict::Final;
        };
        match self {
            // Another proxy refused the call to protect its Service: retrying
            // would multiply the load it is shedding, hop after hop.
            Outcome::Response(r) if refused_by_a_proxy(r.headers()) => {
                RetryVerdict::Refused("proxy-overloaded")
            }
            _ => RetryVerdict::Retry(reason),
        }
    }

    /// The retry reason, if the policy retries this outcome.
    fn retry_reason(&self, retry: &RetrySettings, grpc: bool) -> Option<&'static str> {
        let on = |c: RetryOn| retry.on.contains(&c);
        match self {
            Outcome::Response(r) if retry.codes.contains(&r.status().as_u16()) => {
                Some(status_reason(r.status()))
            }
            // Known before anything reached the client: a trailers-only answer.
            Outcome::Response(_) if !grpc => None,
            Outcome::Response(r) => trailers_only_status(r)
                .filter(|code| retry.grpc_codes.contains(*code))
                .map(grpc::retry_reason),
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

    /// The upstream's response, or the error this outcome means.
    pub fn into_result(
        self,
        stack: &DestinationStack,
        target: &HostPort,
    ) -> Result<Response<ProxyBody>, CallError> {
        match self {
            Outcome::Response(mut response) => {
                strip_hop_by_hop(response.headers_mut(), false);
                Ok(response)
            }
            Outcome::ConnectFailure(detail) => Err(CallError::new(
                ProxyError::ConnectFailure,
                format!("{target}: {detail}"),
            )),
            Outcome::RefusedStream(detail)
            | Outcome::ResetBeforeRequest(detail)
            | Outcome::Reset(detail) => Err(CallError::new(
                ProxyError::UpstreamReset,
                format!("{target}: {detail}"),
            )),
            Outcome::AttemptTimeout => {
                let limit = stack
                    .config
                    .default_route
                    .backend_timeout
                    .unwrap_or_default();
                Err(CallError::new(
                    ProxyError::Timeout,
                    format!(
                        "{} sent no response within the per-try timeout ({})",
                        stack.label,
                        outrigger_api::duration::Duration::from_std(limit)
                    ),
                ))
            }
        }
    }
}

/// Whether a retryable outcome is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryVerdict {
    /// Not a failure the policy retries: the caller gets it.
    Final,
    /// A failure the policy retries, for this reason (counted in
    /// `outrigger_retries_total{reason}`), if attempts, replay, budget and
    /// deadline allow.
    Retry(&'static str),
    /// A failure the policy names that must not be retried, for this reason
    /// (counted in `outrigger_retries_skipped_total{reason}`).
    Refused(&'static str),
}

/// Whether a response is another Outrigger proxy's refusal to protect its
/// Service (`x-outrigger-error: overloaded`, `circuit-open` or
/// `rate-limited`), which a caller must not retry (Envoy's
/// `x-envoy-overloaded`).
pub fn refused_by_a_proxy(headers: &http::HeaderMap) -> bool {
    headers.get(ERROR_HEADER).is_some_and(|v| {
        matches!(
            v.as_bytes(),
            b"overloaded" | b"circuit-open" | b"rate-limited"
        )
    })
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
