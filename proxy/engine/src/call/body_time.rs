//! Time limits on the response body, after its headers have arrived.
//!
//! - The request deadline (`timeouts.request`) covers the whole exchange of a
//!   *bounded* response: one whose length is known from its headers
//!   (Content-Length, or no body at all). A body still arriving at the
//!   deadline is cut.
//! - A *stream* (no declared length: chunked, server-sent events, gRPC,
//!   which never declares one) may outlive the deadline, which stops at its
//!   headers; `timeouts.idle` bounds the silence instead: no frame in either
//!   direction (response body, or request body still uploading) for that
//!   long, and the stream is cut. Idle applies to bounded bodies too, and only
//!   to destinations a policy covers.
//!
//! Cutting means ending the body with an error: hyper then closes the
//! HTTP/1.1 connection (the client sees a truncated message) or resets the
//! HTTP/2 stream. A gRPC response instead ends with trailers carrying
//! `grpc-status: 4` (DEADLINE_EXCEEDED), which gRPC clients read as the
//! call's status. Either way the upstream's body is dropped, which closes or
//! resets the upstream side too. Each cut counts in
//! `outrigger_timeouts_total{kind="request"|"idle"}`.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use prometheus::IntCounterVec;
use tokio::time::Sleep;

use crate::stack::DestinationStack;
use outrigger_http::body::{BoxError, ProxyBody};

/// How a response's body relates to the request deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// Its length is known: the deadline covers it to its end.
    Bounded,
    /// Open-ended: the deadline stopped at its headers.
    Stream,
}

/// What [`shape`] needs to know of the request, read before it is sent.
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts {
    pub head: bool,
    pub grpc: bool,
}

impl RequestFacts {
    pub fn of(method: &Method, headers: &HeaderMap) -> Self {
        RequestFacts {
            head: method == Method::HEAD,
            grpc: outrigger_http::error_response::is_grpc(headers),
        }
    }
}

/// Classifies a response. gRPC unary and streaming calls look alike on the
/// wire (neither declares a length), so a gRPC response is a stream here: a
/// classifier that knows the method's shape would make unary ones bounded.
pub fn shape(request: RequestFacts, response: &Response<ProxyBody>) -> Shape {
    let no_body = request.head
        || response.status().is_informational()
        || matches!(
            response.status(),
            StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED
        )
        || response.body().is_end_stream();
    let declared = response.headers().contains_key(header::CONTENT_LENGTH)
        || response.body().size_hint().exact().is_some();
    if no_body || (declared && !request.grpc) {
        Shape::Bounded
    } else {
        Shape::Stream
    }
}

/// When the request body last moved, on tokio's clock, while it uploads: the
/// response body's idle limit counts it as activity. Only a request with a
/// body has one (a bodiless request needs no shared state).
#[derive(Clone)]
pub struct Activity {
    base: tokio::time::Instant,
    /// Milliseconds since `base`.
    last: Arc<AtomicU64>,
}

impl Activity {
    pub fn new() -> Self {
        Activity {
            base: tokio::time::Instant::now(),
            last: Arc::new(AtomicU64::new(0)),
        }
    }

    fn touch(&self) {
        let ms = self.base.elapsed().as_millis() as u64;
        self.last.fetch_max(ms, Ordering::Relaxed);
    }

    /// `body`, noting each frame as activity.
    pub fn watch_request<B>(&self, body: B) -> Touching<B> {
        Touching {
            inner: body,
            activity: Some(self.clone()),
        }
    }
}

/// A request body that notes its frames as activity (when watched).
pub struct Touching<B> {
    inner: B,
    activity: Option<Activity>,
}

impl<B> Touching<B> {
    /// `body` as it is.
    pub fn unwatched(body: B) -> Self {
        Touching {
            inner: body,
            activity: None,
        }
    }
}

impl<B: Body + Unpin> Body for Touching<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let (Poll::Ready(Some(Ok(_))), Some(activity)) = (&polled, &this.activity) {
            activity.touch();
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

/// The limits on one response body.
pub struct Limits {
    /// The request deadline, for a bounded body.
    pub deadline: Option<Instant>,
    /// The longest silence, for a destination under a policy.
    pub idle: Option<Duration>,
    pub grpc: bool,
    /// The `route` label of a cut.
    pub route: Arc<str>,
}

/// The response, its body cut at the limits (unchanged when there are none).
/// `activity` is the request body's, when it is still uploading; without it
/// the response body keeps its own.
pub fn limit(
    stack: &DestinationStack,
    response: Response<ProxyBody>,
    limits: Limits,
    activity: Option<Activity>,
) -> Response<ProxyBody> {
    if limits.deadline.is_none() && limits.idle.is_none() {
        return response;
    }
    let counter = Counter {
        timeouts: stack.metrics.resilience.timeouts.clone(),
        direction: stack.direction,
        label: stack.label.clone(),
        route: limits.route,
    };
    let idle = limits.idle.map(|limit| {
        // Activity counts from now: the headers just arrived.
        let now = tokio::time::Instant::now();
        let base = activity.as_ref().map_or(now, |a| a.base);
        Idle {
            limit,
            base,
            last: now.duration_since(base).as_millis() as u64,
            request: activity.map(|a| a.last),
        }
    });
    response.map(|inner| {
        Limited {
            inner,
            deadline: limits.deadline.map(Into::into),
            idle,
            timer: None,
            grpc: limits.grpc,
            done: false,
            counter,
        }
        .boxed_unsync()
    })
}

struct Counter {
    timeouts: IntCounterVec,
    direction: &'static str,
    label: Arc<str>,
    route: Arc<str>,
}

pin_project_lite::pin_project! {
    /// A response body under its limits. One timer serves both, set to the
    /// nearer of the deadline and the idle limit, and created only when the
    /// body first has to wait: a body that arrives whole with its headers (most
    /// small responses) never touches the timer wheel. (Measured: the two boxed
    /// timers this replaced cost two allocations and two timer registrations
    /// per request; see BENCHMARKS.md, "The resilience stack's cost".)
    struct Limited {
        inner: ProxyBody,
        deadline: Option<tokio::time::Instant>,
        idle: Option<Idle>,
        #[pin]
        timer: Option<Sleep>,
        grpc: bool,
        done: bool,
        counter: Counter,
    }
}

/// The idle limit and the activity it watches (only a body under one keeps
/// track of activity, and reads the clock for it).
struct Idle {
    limit: Duration,
    // Last activity, as milliseconds since `base`: the response body's
    // own, and the request body's while it uploads.
    base: tokio::time::Instant,
    last: u64,
    request: Option<Arc<AtomicU64>>,
}

impl Idle {
    /// When the silence passes the limit, counted from the last activity in
    /// either direction.
    fn until(&self) -> tokio::time::Instant {
        let request = self
            .request
            .as_ref()
            .map_or(0, |r| r.load(Ordering::Relaxed));
        self.base + Duration::from_millis(self.last.max(request)) + self.limit
    }

    fn touch(&mut self) {
        self.last = self.base.elapsed().as_millis() as u64;
    }
}

impl Limited {
    /// Which limit has passed, if one has; arms the timer for the nearer one
    /// otherwise.
    fn passed(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Option<&'static str> {
        let mut this = self.project();
        loop {
            let now = tokio::time::Instant::now();
            if this.deadline.is_some_and(|d| d <= now) {
                return Some("request");
            }
            let idle_until = this.idle.as_ref().map(Idle::until);
            if idle_until.is_some_and(|until| until <= now) {
                return Some("idle");
            }
            let until = match (*this.deadline, idle_until) {
                (Some(d), Some(i)) => d.min(i),
                (Some(d), None) => d,
                (None, Some(i)) => i,
                (None, None) => return None,
            };
            match this.timer.as_mut().as_pin_mut() {
                Some(timer) if timer.deadline() == until => {}
                Some(timer) => timer.reset(until),
                None => this.timer.set(Some(tokio::time::sleep_until(until))),
            }
            let timer = this.timer.as_mut().as_pin_mut().expect("armed above");
            if timer.poll(cx).is_pending() {
                return None;
            }
            // Fired: something may have moved meanwhile (the request body,
            // say); look again.
        }
    }

    fn cut(self: Pin<&mut Self>, kind: &'static str) -> Result<Frame<Bytes>, BoxError> {
        let this = self.project();
        *this.done = true;
        let counter = &this.counter;
        counter
            .timeouts
            .with_label_values(&[counter.direction, &counter.label, &counter.route, kind])
            .inc();
        let what = match kind {
            "request" => "the request timeout passed",
            _ => "the idle timeout passed",
        };
        if !*this.grpc {
            return Err(format!("response body cut: {what}").into());
        }
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("4"));
        let message = format!("outrigger: {what}");
        if let Ok(value) = HeaderValue::from_str(&message) {
            trailers.insert("grpc-message", value);
        }
        Ok(Frame::trailers(trailers))
    }
}

impl Body for Limited {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.done {
            return Poll::Ready(None);
        }
        match Pin::new(self.as_mut().project().inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                // The timer is not moved on each frame: when it fires,
                // `passed` re-arms it from the last activity. Without an idle
                // limit activity is never asked for: the clock is not read.
                if let Some(idle) = self.as_mut().project().idle {
                    idle.touch();
                }
                return Poll::Ready(Some(Ok(frame)));
            }
            Poll::Ready(other) => return Poll::Ready(other),
            Poll::Pending => {}
        }
        match self.as_mut().passed(cx) {
            Some(kind) => Poll::Ready(Some(self.as_mut().cut(kind))),
            None => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        match self.done {
            true => SizeHint::with_exact(0),
            false => self.inner.size_hint(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::now;
    use super::super::testing::{config, counter_with, stack};
    use super::*;
    use tokio::sync::mpsc;

    type Frames = mpsc::UnboundedSender<Frame<Bytes>>;

    /// A response whose body the test feeds; `length` declares a Content-Length.
    fn response(length: Option<u64>) -> (Frames, Response<ProxyBody>) {
        let (tx, body) = super::super::testing::chunked();
        let body = body.map_err(|never| match never {}).boxed_unsync();
        let mut response = Response::new(body);
        if let Some(length) = length {
            response
                .headers_mut()
                .insert(header::CONTENT_LENGTH, length.into());
        }
        (tx, response)
    }

    fn data(s: &'static str) -> Frame<Bytes> {
        Frame::data(Bytes::from_static(s.as_bytes()))
    }

    fn facts(grpc: bool) -> RequestFacts {
        RequestFacts { head: false, grpc }
    }

    #[test]
    fn declared_lengths_are_bounded_the_rest_are_streams() {
        let (_tx, with_length) = response(Some(10));
        assert_eq!(shape(facts(false), &with_length), Shape::Bounded);
        let (_tx, chunked) = response(None);
        assert_eq!(shape(facts(false), &chunked), Shape::Stream);
        assert_eq!(shape(facts(true), &with_length), Shape::Stream, "gRPC");
        let head = RequestFacts {
            head: true,
            grpc: false,
        };
        assert_eq!(shape(head, &chunked), Shape::Bounded, "HEAD has no body");
        let empty = Response::new(outrigger_http::body::empty());
        assert_eq!(shape(facts(false), &empty), Shape::Bounded);
    }

    #[tokio::test(start_paused = true)]
    async fn a_bounded_body_still_arriving_at_the_deadline_is_cut() {
        let stack = stack(config(), 1);
        let (tx, response) = response(Some(10));
        let deadline = Some(now() + Duration::from_secs(2));
        let limits = Limits {
            deadline,
            idle: None,
            grpc: false,
            route: "default".into(),
        };
        let mut body = limit(&stack, response, limits, None).into_body();
        tx.send(data("12345")).unwrap();
        let started = tokio::time::Instant::now();
        assert!(body.frame().await.unwrap().is_ok());
        let cut = body.frame().await.unwrap();
        assert!(cut.is_err(), "cut with an error: the connection is reset");
        assert_eq!(started.elapsed(), Duration::from_secs(2));
        assert!(body.frame().await.is_none());
        assert_eq!(
            counter_with(&stack.metrics, "outrigger_timeouts_total", "request"),
            1.0
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_is_cut_after_idle_silence_not_at_the_deadline() {
        let stack = stack(config(), 1);
        let (tx, response) = response(None);
        let limits = Limits {
            deadline: None,
            idle: Some(Duration::from_secs(5)),
            grpc: false,
            route: "default".into(),
        };
        let mut body = limit(&stack, response, limits, None).into_body();
        let started = tokio::time::Instant::now();
        // Events every 4s keep it alive well past any deadline.
        let feeder = tokio::spawn(async move {
            for _ in 0..5 {
                tokio::time::sleep(Duration::from_secs(4)).await;
                tx.send(data("event")).unwrap();
            }
            // Then silence, with the sender kept open.
            std::future::pending::<()>().await;
        });
        for _ in 0..5 {
            assert!(body.frame().await.unwrap().is_ok());
        }
        assert!(body.frame().await.unwrap().is_err());
        assert_eq!(started.elapsed(), Duration::from_secs(25));
        assert_eq!(
            counter_with(&stack.metrics, "outrigger_timeouts_total", "idle"),
            1.0
        );
        feeder.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn an_uploading_request_body_counts_as_activity() {
        let stack = stack(config(), 1);
        let (_tx, response) = response(None);
        let activity = Activity::new();
        let limits = Limits {
            deadline: None,
            idle: Some(Duration::from_secs(5)),
            grpc: false,
            route: "default".into(),
        };
        let mut body = limit(&stack, response, limits, Some(activity.clone())).into_body();
        let (up, upload) = super::super::testing::chunked();
        let mut upload = activity.watch_request(upload);
        let started = tokio::time::Instant::now();
        let uploader = async move {
            for _ in 0..3 {
                tokio::time::sleep(Duration::from_secs(3)).await;
                up.send(Frame::data(Bytes::from("part"))).unwrap();
                upload.frame().await;
            }
            up
        };
        let (cut, _up) = tokio::join!(body.frame(), uploader);
        assert!(cut.unwrap().is_err());
        // Last upload at 9s, then 5s of silence.
        assert_eq!(started.elapsed(), Duration::from_secs(14));
    }

    #[tokio::test(start_paused = true)]
    async fn a_grpc_response_ends_with_deadline_exceeded_trailers() {
        let stack = stack(config(), 1);
        let (tx, response) = response(None);
        let limits = Limits {
            deadline: None,
            idle: Some(Duration::from_secs(1)),
            grpc: true,
            route: "default".into(),
        };
        let body = limit(&stack, response, limits, None).into_body();
        tx.send(data("message")).unwrap();
        let collected = body.collect().await.expect("ends cleanly, with trailers");
        let trailers = collected.trailers().cloned().unwrap();
        assert_eq!(trailers["grpc-status"], "4");
        assert_eq!(collected.to_bytes(), "message");
        drop(tx);
    }
}
