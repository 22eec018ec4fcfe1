//! Test fixtures: stacks built from a config, a scripted upstream (no
//! sockets; delays run on tokio's paused clock), and metric readers.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use outrigger_api::policy::{FailureKind, NonIdempotent};
use tokio::sync::mpsc;

use super::outcome::Outcome;
use super::upstream::Upstream;
use crate::config::{BreakerSettings, DestinationConfig, RetrySettings};
use crate::stack::{DestinationStack, StackInputs};
use outrigger_http::body::{empty, ProxyBody};
use outrigger_http::connect_time::ConnectTime;
use outrigger_proxy_core::addr::HostPort;
use outrigger_proxy_core::metrics::Metrics;
use outrigger_resilience::BreakerConfig;
use outrigger_transport::connect::Connector;

pub fn config() -> DestinationConfig {
    DestinationConfig::without_policy(Duration::from_secs(1), Duration::from_secs(60))
}

/// A stack over `endpoints` endpoints on ports 9000, 9001, ...
pub fn stack(config: DestinationConfig, endpoints: u16) -> DestinationStack {
    let targets = (0..endpoints)
        .map(|i| HostPort {
            host: "10.0.0.1".into(),
            port: 9000 + i,
        })
        .collect();
    let connector = Connector {
        connect_timeout: config.connect_timeout,
        mark: None,
    };
    let inputs = StackInputs {
        source: (0, 0),
        direction: "outbound",
        label: "svc.test".into(),
        config,
        targets,
        connector: &connector,
        metrics: Metrics::new(100),
    };
    DestinationStack::build(inputs, None)
}

pub fn retry_settings(attempts: u32) -> RetrySettings {
    RetrySettings {
        attempts,
        codes: vec![502, 503, 504],
        on: vec![],
        backoff_base: Duration::from_millis(100),
        backoff_max: Duration::from_secs(1),
        non_idempotent: NonIdempotent::Never,
        max_buffered_body_bytes: 1024,
        grpc_codes: [14].into_iter().collect(),
    }
}

/// Opens after two failures of two; open for 5s; one probe.
pub fn breaker_config(dry_run: bool) -> DestinationConfig {
    let mut config = config();
    config.dry_run = dry_run;
    config.breaker = Some(BreakerSettings {
        thresholds: BreakerConfig {
            failure_rate_percent: 50,
            minimum_requests: 2,
            window: Duration::from_secs(10),
            slow_call: None,
            open_for: Duration::from_secs(5),
            max_open_for: Duration::from_secs(60),
            half_open_requests: 1,
        },
        failure_on: vec![FailureKind::ServerError],
        fallback_status: StatusCode::SERVICE_UNAVAILABLE,
        fallback_content_type: "text/plain".into(),
        fallback_body: "later".into(),
        grpc_codes: [14, 13].into_iter().collect(),
    });
    config
}

pub fn status(code: u16) -> Outcome {
    let mut response = Response::new(empty());
    *response.status_mut() = StatusCode::from_u16(code).unwrap();
    Outcome::Response(response)
}

/// The sum of a metric's samples.
pub fn counter(metrics: &Metrics, name: &str) -> f64 {
    counter_with(metrics, name, "")
}

/// The sum of a metric's samples that have a label with this value ("": any).
pub fn counter_with(metrics: &Metrics, name: &str, label_value: &str) -> f64 {
    let text = String::from_utf8(metrics.render()).unwrap();
    let wanted = format!("=\"{label_value}\"");
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter(|l| label_value.is_empty() || l.contains(&wanted))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

pub fn gauge(metrics: &Metrics, name: &str) -> f64 {
    counter(metrics, name)
}

/// What the scripted upstream does with one request.
#[derive(Clone, Copy)]
pub enum Step {
    Status(u16),
    /// A status with a `Retry-After` header.
    RetryAfter(u16, &'static str),
    /// A status made by another Outrigger proxy (`x-outrigger-error`).
    ProxyRefusal(u16, &'static str),
    /// A status sent after reading only the first frame of the body.
    Early(u16),
    /// Connection refused: the request was never seen.
    Connect,
    /// The connection broke after the request was sent.
    Reset,
    /// The pooled connection closed before the request was written.
    NotSent,
    /// An HTTP/2 upstream refused the stream unprocessed.
    Refused,
    /// No answer, ever.
    Hang,
    /// This status after this long.
    After(Duration, u16),
    /// This status after opening a connection (the first duration) and
    /// waiting for the answer on it (the second).
    Opened(Duration, Duration, u16),
    /// A trailers-only gRPC response with this `grpc-status`.
    GrpcStatus(u32),
    /// A gRPC response whose `grpc-status` comes in trailers, after a
    /// message (true) or not.
    GrpcTrailers(u32, bool),
    /// 200 and a body that never ends, declared with a Content-Length (true)
    /// or not.
    Stall(bool),
}

type ByEndpoint = Box<dyn Fn(u16) -> Step + Send + Sync>;

/// An upstream that answers from a script (in order, or by endpoint port)
/// and remembers when each request came and what its body was.
pub struct Scripted {
    steps: Mutex<VecDeque<Step>>,
    by_endpoint: Option<ByEndpoint>,
    seen: Mutex<Vec<Seen>>,
    /// The `grpc-timeout` each request carried.
    grpc_timeouts: Mutex<Vec<Option<String>>>,
}

/// One request the scripted upstream got: endpoint port, arrival, body read,
/// and the body's trailers.
type Seen = (u16, tokio::time::Instant, Bytes, Option<http::HeaderMap>);

impl Scripted {
    pub fn new(steps: impl IntoIterator<Item = Step>) -> Self {
        Scripted {
            steps: Mutex::new(steps.into_iter().collect()),
            by_endpoint: None,
            seen: Mutex::default(),
            grpc_timeouts: Mutex::default(),
        }
    }

    pub fn by_endpoint(f: impl Fn(u16) -> Step + Send + Sync + 'static) -> Self {
        Scripted {
            by_endpoint: Some(Box::new(f)),
            ..Scripted::new([])
        }
    }

    pub fn times(&self) -> Vec<tokio::time::Instant> {
        self.seen.lock().unwrap().iter().map(|s| s.1).collect()
    }

    pub fn bodies(&self) -> Vec<String> {
        let seen = self.seen.lock().unwrap();
        seen.iter()
            .map(|s| String::from_utf8_lossy(&s.2).into_owned())
            .collect()
    }

    pub fn grpc_timeouts(&self) -> Vec<Option<String>> {
        self.grpc_timeouts.lock().unwrap().clone()
    }

    pub fn trailers(&self) -> Vec<Option<http::HeaderMap>> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .map(|s| s.3.clone())
            .collect()
    }

    pub fn calls_to(&self, port: u16) -> usize {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.0 == port)
            .count()
    }
}

impl Upstream for Scripted {
    async fn send(&self, target: &Arc<HostPort>, request: Request<ProxyBody>) -> Outcome {
        let step = match &self.by_endpoint {
            Some(f) => f(target.port),
            None => self
                .steps
                .lock()
                .unwrap()
                .pop_front()
                .unwrap_or(Step::Status(200)),
        };
        let arrived = tokio::time::Instant::now();
        let timeout = request.headers().get("grpc-timeout");
        let timeout = timeout.map(|v| v.to_str().unwrap().to_owned());
        self.grpc_timeouts.lock().unwrap().push(timeout);
        let mut body = request.into_body();
        let (body, trailers) = match step {
            // Never connected: nothing of the body was sent.
            Step::Connect => (Bytes::new(), None),
            Step::Early(_) => match body.frame().await {
                Some(Ok(frame)) => (frame.into_data().unwrap_or_default(), None),
                _ => (Bytes::new(), None),
            },
            _ => match body.collect().await {
                Ok(collected) => {
                    let trailers = collected.trailers().cloned();
                    (collected.to_bytes(), trailers)
                }
                Err(_) => (Bytes::new(), None),
            },
        };
        self.seen
            .lock()
            .unwrap()
            .push((target.port, arrived, body, trailers));
        let respond = |code: u16, header: Option<(&'static str, &'static str)>| {
            let Outcome::Response(mut response) = status(code) else {
                unreachable!()
            };
            if let Some((name, value)) = header {
                response.headers_mut().insert(name, value.parse().unwrap());
            }
            Outcome::Response(response)
        };
        match step {
            Step::Status(code) | Step::Early(code) => respond(code, None),
            Step::RetryAfter(code, value) => respond(code, Some(("retry-after", value))),
            Step::ProxyRefusal(code, cause) => respond(code, Some(("x-outrigger-error", cause))),
            Step::Connect => Outcome::ConnectFailure("connection refused".into()),
            Step::Reset => Outcome::Reset("connection reset".into()),
            Step::NotSent => Outcome::ResetBeforeRequest("connection closed".into()),
            Step::Refused => Outcome::RefusedStream("refused stream".into()),
            Step::Hang => std::future::pending().await,
            Step::After(delay, code) => {
                tokio::time::sleep(delay).await;
                respond(code, None)
            }
            Step::Opened(connect, answer, code) => {
                tokio::time::sleep(connect + answer).await;
                let mut outcome = respond(code, None);
                if let Outcome::Response(response) = &mut outcome {
                    response.extensions_mut().insert(ConnectTime(connect));
                }
                outcome
            }
            Step::GrpcTrailers(code, message) => {
                let mut frames = VecDeque::new();
                if message {
                    frames.push_back(Frame::data(Bytes::from_static(b"\0\0\0\0\x01m")));
                }
                let mut trailers = http::HeaderMap::new();
                trailers.insert("grpc-status", code.into());
                frames.push_back(Frame::trailers(trailers));
                let mut response = Response::new(Frames(frames).boxed_unsync());
                response
                    .headers_mut()
                    .insert("content-type", "application/grpc".parse().unwrap());
                Outcome::Response(response)
            }
            Step::GrpcStatus(code) => {
                let Outcome::Response(mut response) = status(200) else {
                    unreachable!()
                };
                let headers = response.headers_mut();
                headers.insert("content-type", "application/grpc".parse().unwrap());
                headers.insert("grpc-status", code.into());
                Outcome::Response(response)
            }
            Step::Stall(declared) => {
                let (tx, body) = chunked();
                // The sender lives in the body: it never ends.
                let body = Stalled(body, tx).map_err(|never| match never {});
                let mut response = Response::new(body.boxed_unsync());
                if declared {
                    response
                        .headers_mut()
                        .insert(http::header::CONTENT_LENGTH, 100.into());
                }
                Outcome::Response(response)
            }
        }
    }
}

/// A request body of unknown length (sent chunked), fed frame by frame
/// through the sender; it ends when the sender is dropped.
pub fn chunked() -> (mpsc::UnboundedSender<Frame<Bytes>>, ChannelBody) {
    let (tx, rx) = mpsc::unbounded_channel();
    (tx, ChannelBody(rx))
}

pub struct ChannelBody(mpsc::UnboundedReceiver<Frame<Bytes>>);

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|frame| frame.map(Ok))
    }
}

/// A body that never ends: it holds its own sender.
struct Stalled(
    ChannelBody,
    #[allow(dead_code)] mpsc::UnboundedSender<Frame<Bytes>>,
);

impl Body for Stalled {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Pin::new(&mut self.0).poll_frame(cx)
    }
}

/// A body of the given frames.
struct Frames(VecDeque<Frame<Bytes>>);

impl Body for Frames {
    type Data = Bytes;
    type Error = outrigger_http::body::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Poll::Ready(self.0.pop_front().map(Ok))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_empty()
    }
}
