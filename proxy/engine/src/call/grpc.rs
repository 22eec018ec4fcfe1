//! What the request path reads and writes of gRPC: the client's deadline
//! (`grpc-timeout`, which shortens the call's and is passed on shrunk by the
//! time spent here), a response's status when it is known at its headers
//! (a trailers-only response, `grpc-status` among the headers), and else
//! what its body shows first: a message, or the status in its trailers.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Response};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;

use outrigger_http::body::{BoxError, ProxyBody};
use outrigger_http::error_response::is_grpc;
use outrigger_resilience::grpc::{format_timeout, parse_status, parse_timeout, UNKNOWN};

// Names parsed once: a lookup by `&str` parses and hashes the name on every
// request (about 300 instructions each, measured with callgrind).
pub const TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");
pub const STATUS: HeaderName = HeaderName::from_static("grpc-status");

/// The client's deadline for a gRPC request, if it sent a valid one. A
/// malformed value is left for the server to refuse.
fn client_timeout(headers: &HeaderMap) -> Option<Duration> {
    // The content type first: most requests are not gRPC.
    if !is_grpc(headers) {
        return None;
    }
    parse_timeout(headers.get(TIMEOUT)?.as_bytes())
}

/// When the call must end: after the route's request timeout or the gRPC
/// client's `grpc-timeout`, whichever comes first, counted from `started`.
pub fn deadline(
    request_timeout: Option<Duration>,
    headers: &HeaderMap,
    started: Instant,
) -> Option<Instant> {
    let policy = request_timeout.and_then(|t| started.checked_add(t));
    // A timeout too far out to represent is no limit.
    let client = client_timeout(headers).and_then(|t| started.checked_add(t));
    match (policy, client) {
        (Some(p), Some(c)) => Some(p.min(c)),
        (p, c) => p.or(c),
    }
}

/// Tells the server what is left of the call's deadline: a gRPC request
/// that carried a valid `grpc-timeout` leaves with the time remaining at
/// `now` (so deadlines shrink hop by hop). A request without one gets none:
/// the policy's timeout is the proxy's own, and a server told of it would
/// also end streams the proxy lets run. For a gRPC call only: the caller
/// has asked [`is_grpc`] already, so it is not asked again here.
pub fn pass_on_deadline(headers: &mut HeaderMap, deadline: Option<Instant>, now: Instant) {
    let Some(deadline) = deadline else {
        return;
    };
    let sent = headers
        .get(TIMEOUT)
        .and_then(|t| parse_timeout(t.as_bytes()));
    if sent.is_none() {
        return;
    }
    let remaining = deadline.saturating_duration_since(now);
    let value = HeaderValue::try_from(format_timeout(remaining)).expect("digits and a unit");
    headers.insert(TIMEOUT, value);
}

/// The status of a trailers-only gRPC response (HTTP 200 with `grpc-status`
/// among the headers): known before anything was passed to the client.
pub fn trailers_only_status<B>(response: &Response<B>) -> Option<u32> {
    if response.status() != http::StatusCode::OK {
        return None;
    }
    parse_status(response.headers().get(STATUS)?.as_bytes())
}

/// Whether this is a gRPC response whose status is still to come (in its
/// trailers): an HTTP 200 with a gRPC content type, no `grpc-status` among
/// its headers and a body to read.
pub fn status_pending(response: &Response<ProxyBody>) -> bool {
    response.status() == http::StatusCode::OK
        && is_grpc(response.headers())
        && !response.headers().contains_key(STATUS)
        && !response.body().is_end_stream()
}

/// What the body of a gRPC response showed first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// A response message: the server is serving the call (what a stream
    /// does after that is the app's business).
    Message,
    /// The status in the trailers (UNKNOWN when the body ended without one,
    /// as a client reads it).
    Status(u32),
    /// The body broke (the stream was reset).
    Broken,
}

/// `response` with `then` called once its body shows a [`Verdict`]. A body
/// dropped first (the client went away, a proxy timeout cut it) drops
/// `then` uncalled.
pub fn on_verdict(
    response: Response<ProxyBody>,
    then: impl FnOnce(Verdict) + Send + Unpin + 'static,
) -> Response<ProxyBody> {
    response.map(|inner| {
        Watch {
            inner,
            then: Some(then),
        }
        .boxed_unsync()
    })
}

struct Watch<F> {
    inner: ProxyBody,
    then: Option<F>,
}

impl<F: FnOnce(Verdict)> Watch<F> {
    fn decide(&mut self, verdict: Verdict) {
        if let Some(then) = self.then.take() {
            then(verdict);
        }
    }
}

impl<F: FnOnce(Verdict) + Send + Unpin> Body for Watch<F> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if self.then.is_some() {
            let verdict = match &polled {
                Poll::Ready(Some(Ok(frame))) => match frame.trailers_ref() {
                    Some(trailers) => Some(Verdict::Status(
                        trailers
                            .get(STATUS)
                            .and_then(|v| parse_status(v.as_bytes()))
                            .unwrap_or(UNKNOWN),
                    )),
                    None => frame
                        .data_ref()
                        .filter(|data| !data.is_empty())
                        .map(|_| Verdict::Message),
                },
                Poll::Ready(Some(Err(_))) => Some(Verdict::Broken),
                Poll::Ready(None) => Some(Verdict::Status(UNKNOWN)),
                Poll::Pending => None,
            };
            if let Some(verdict) = verdict {
                self.decide(verdict);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grpc_headers(timeout: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", "application/grpc".parse().unwrap());
        headers.insert(TIMEOUT, timeout.parse().unwrap());
        headers
    }

    #[test]
    fn the_earlier_deadline_wins() {
        let started = Instant::now();
        let policy = Some(Duration::from_secs(2));
        let at = |h: &HeaderMap, p| deadline(p, h, started).map(|d| d - started);
        assert_eq!(
            at(&grpc_headers("500m"), policy),
            Some(Duration::from_millis(500))
        );
        assert_eq!(
            at(&grpc_headers("5S"), policy),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            at(&grpc_headers("3S"), None),
            Some(Duration::from_secs(3)),
            "a route without a request timeout still has the client's"
        );
        assert_eq!(
            at(&grpc_headers("bogus"), policy),
            Some(Duration::from_secs(2))
        );
        assert!(at(&grpc_headers("99999999H"), None).is_some());
        // Only gRPC requests carry a gRPC deadline.
        let mut plain = grpc_headers("1S");
        plain.remove("content-type");
        assert_eq!(at(&plain, None), None);
    }

    #[test]
    fn the_deadline_is_passed_on_only_when_the_client_sent_one() {
        let started = Instant::now();
        let mut headers = grpc_headers("1S");
        let d = deadline(None, &headers, started);
        pass_on_deadline(&mut headers, d, started + Duration::from_millis(250));
        assert_eq!(headers[TIMEOUT], "750000u");
        pass_on_deadline(&mut headers, d, started + Duration::from_secs(2));
        assert_eq!(headers[TIMEOUT], "0n", "past the deadline: nothing left");

        let mut headers = HeaderMap::new();
        headers.insert("content-type", "application/grpc".parse().unwrap());
        let d = Some(started + Duration::from_secs(1));
        pass_on_deadline(&mut headers, d, started);
        assert!(!headers.contains_key(TIMEOUT), "no deadline is invented");
        let mut headers = grpc_headers("12x");
        pass_on_deadline(&mut headers, d, started);
        assert_eq!(headers[TIMEOUT], "12x", "a malformed one is left alone");
    }

    #[test]
    fn only_a_200_with_grpc_status_in_its_headers_is_trailers_only() {
        let response = |status: u16, grpc: Option<&str>| {
            let mut r = Response::new(());
            *r.status_mut() = http::StatusCode::from_u16(status).unwrap();
            if let Some(code) = grpc {
                r.headers_mut().insert(STATUS, code.parse().unwrap());
            }
            r
        };
        assert_eq!(trailers_only_status(&response(200, Some("14"))), Some(14));
        assert_eq!(trailers_only_status(&response(200, Some("0"))), Some(0));
        assert_eq!(trailers_only_status(&response(200, None)), None);
        assert_eq!(trailers_only_status(&response(503, Some("14"))), None);
        assert_eq!(trailers_only_status(&response(200, Some("x"))), None);
    }
}
