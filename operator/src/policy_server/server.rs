//! HTTP front of the hub: `GET /v1/watch`, `POST /v1/ack`, with clear 4xx
//! errors for anything malformed.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use outrigger_api::stream::{
    parse_pod_port, Ack, StreamMessage, Subscription, ACK_PATH, WATCH_PATH,
};
use outrigger_transport::accept::{accept_loop, AcceptConfig};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::hub::Hub;
use crate::metrics::Metrics;

type Body = UnsyncBoxBody<Bytes, Infallible>;

#[derive(Clone)]
pub struct ServerConfig {
    pub heartbeat: Duration,
    /// Poked on every ack (status.proxies may change).
    pub acked: Arc<Notify>,
    /// TLS, required outside local mode and tests.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Who may subscribe and acknowledge.
    pub auth: Arc<super::auth::Authenticator>,
}

/// A TLS handshake must finish this fast (slow handshakes tie up a task).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

const MAX_ACK_BYTES: usize = 4096;
const MAX_NAME: usize = 253;

pub async fn serve(
    listener: TcpListener,
    hub: Arc<Hub>,
    metrics: Arc<Metrics>,
    config: ServerConfig,
    stop: CancellationToken,
) {
    let accept = AcceptConfig {
        name: "policy",
        max_connections: POLICY_MAX_CONNECTIONS,
    };
    let shared = Arc::new(Shared {
        hub,
        metrics,
        config,
    });
    let on_stop = stop.clone();
    accept_loop(
        listener,
        accept,
        stop,
        TaskTracker::new(),
        || tracing::warn!("policy server connection refused: too many open"),
        |stream, _| handle(stream, shared.clone(), on_stop.clone()),
    )
    .await;
}

/// One connection: the TLS handshake if configured, then HTTP. This future
/// is the connection's task for as long as the proxy stays connected, so it
/// holds only pointers: the handshake's state (the TLS session, over a
/// kilobyte) is boxed while it runs and moves into the boxed HTTP connection.
async fn handle(stream: tokio::net::TcpStream, shared: Arc<Shared>, stop: CancellationToken) {
    let _ = stream.set_nodelay(true);
    let connection = match shared.config.tls.clone() {
        None => connection(stream, Protocol::Detect, shared),
        Some(tls) => {
            let acceptor = tokio_rustls::TlsAcceptor::from(tls);
            let handshake = Box::pin(tokio::time::timeout(
                HANDSHAKE_TIMEOUT,
                acceptor.accept(stream),
            ));
            match handshake.await {
                Ok(Ok(stream)) => {
                    // Over TLS, ALPN says which protocol follows (RFC 9113
                    // section 3.2); without it, detect.
                    let protocol = match stream.get_ref().1.alpn_protocol() {
                        Some(b"h2") => Protocol::Http2,
                        Some(b"http/1.1") => Protocol::Http1,
                        _ => Protocol::Detect,
                    };
                    connection(stream, protocol, shared)
                }
                Ok(Err(err)) => return tracing::debug!(error = %err, "TLS handshake failed"),
                Err(_) => return tracing::debug!("TLS handshake timed out"),
            }
        }
    };
    tokio::select! {
        _ = connection => {}
        _ = stop.cancelled() => {}
    }
}

/// What every connection's requests need, behind one pointer.
struct Shared {
    hub: Arc<Hub>,
    metrics: Arc<Metrics>,
    config: ServerConfig,
}

/// Proxies' connections served at once (each proxy holds one, multiplexing
/// its subscriptions; the scale benchmark runs 10k).
const POLICY_MAX_CONNECTIONS: usize = 65_536;

/// HTTP/2 flow-control windows the server grants. Requests carry at most an
/// ack (MAX_ACK_BYTES); hyper's defaults (1 MiB each) would let a client park
/// up to a megabyte per connection in buffers that nobody reads (a watch
/// request's body is never read).
const STREAM_WINDOW: u32 = 16 * 1024;
const CONNECTION_WINDOW: u32 = 64 * 1024;
/// Response data HTTP/2 buffers per stream before it stops asking the body
/// for more (hyper's default: 400 KiB). The body yields one line at a time
/// and only the newest snapshot is kept, so a stream whose reader is slow
/// holds at most this much of stale lines, plus the one being written.
const STREAM_SEND_BUFFER: usize = 16 * 1024;

enum Protocol {
    Http1,
    Http2,
    /// Plaintext, or TLS without ALPN: read the HTTP/2 preface or not.
    Detect,
}

type Reply = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

/// The HTTP connection over `io`, boxed: only the protocol in use (hyper's
/// auto-detecting connection carries the state of both).
fn connection<IO>(
    io: IO,
    protocol: Protocol,
    shared: Arc<Shared>,
) -> Pin<Box<dyn Future<Output = ()> + Send>>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    // Boxed: hyper keeps each stream's task sized for the service's future
    // for as long as the stream is open (a watch is open for the proxy's
    // life), and `route`'s future is kilobytes while a pointer is 16 bytes.
    let service = service_fn(move |request| {
        let shared = shared.clone();
        Box::pin(async move { Ok::<_, Infallible>(route(request, &shared).await) }) as Reply
    });
    let io = TokioIo::new(io);
    match protocol {
        Protocol::Http2 => {
            let connection = http2_builder().serve_connection(io, service);
            Box::pin(async move {
                let _ = connection.await;
            })
        }
        Protocol::Http1 => {
            let connection = http1::Builder::new().serve_connection(io, service);
            Box::pin(async move {
                let _ = connection.await;
            })
        }
        Protocol::Detect => {
            let mut builder = auto::Builder::new(TokioExecutor::new());
            configure_http2(&mut builder.http2());
            let connection = builder.serve_connection(io, service).into_owned();
            Box::pin(async move {
                let _ = connection.await;
            })
        }
    }
}

fn http2_builder() -> http2::Builder<TokioExecutor> {
    let mut builder = http2::Builder::new(TokioExecutor::new());
    builder
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_send_buf_size(STREAM_SEND_BUFFER);
    builder
}

fn configure_http2<E>(builder: &mut auto::Http2Builder<'_, E>) {
    builder
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_send_buf_size(STREAM_SEND_BUFFER);
}

async fn route(request: Request<Incoming>, shared: &Shared) -> Response<Body> {
    let Shared {
        hub,
        metrics,
        config,
        ..
    } = shared;
    match (request.method(), request.uri().path()) {
        (&Method::GET, WATCH_PATH) => match parse_watch(request.uri().query().unwrap_or("")) {
            Ok((proxy, subscription)) => {
                if let Err(denied) = authenticate(&request, &subscription, metrics, config).await {
                    return denied;
                }
                watch(
                    hub,
                    metrics.clone(),
                    &proxy,
                    &subscription,
                    config.heartbeat,
                )
            }
            Err(message) => error(StatusCode::BAD_REQUEST, &message),
        },
        (&Method::POST, ACK_PATH) => {
            let authorization = request
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let body = match Limited::new(request.into_body(), MAX_ACK_BYTES)
                .collect()
                .await
            {
                Ok(body) => body.to_bytes(),
                Err(_) => return error(StatusCode::PAYLOAD_TOO_LARGE, "ack body over 4096 bytes"),
            };
            match serde_json::from_slice::<Ack>(&body) {
                Ok(ack) if valid_name(&ack.proxy) => {
                    if let Err(denied) = config
                        .auth
                        .check(authorization.as_deref(), &ack.subscription)
                        .await
                    {
                        return refuse(denied, metrics);
                    }
                    hub.record_ack(&ack);
                    config.acked.notify_one();
                    empty(StatusCode::NO_CONTENT)
                }
                Ok(_) => error(
                    StatusCode::BAD_REQUEST,
                    "ack.proxy must be 1-253 printable characters",
                ),
                Err(err) => error(StatusCode::BAD_REQUEST, &format!("malformed ack: {err}")),
            }
        }
        (_, WATCH_PATH | ACK_PATH) => error(
            StatusCode::METHOD_NOT_ALLOWED,
            "use GET /v1/watch or POST /v1/ack",
        ),
        _ => error(
            StatusCode::NOT_FOUND,
            "not found; use GET /v1/watch or POST /v1/ack",
        ),
    }
}

async fn authenticate(
    request: &Request<Incoming>,
    subscription: &Subscription,
    metrics: &Metrics,
    config: &ServerConfig,
) -> Result<(), Response<Body>> {
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match config.auth.check(authorization, subscription).await {
        Ok(_) => Ok(()),
        Err(denied) => Err(refuse(denied, metrics)),
    }
}

fn refuse(denied: super::auth::Denied, metrics: &Metrics) -> Response<Body> {
    use super::auth::Denied;
    metrics
        .auth_failures
        .with_label_values(&[denied.reason()])
        .inc();
    match denied {
        Denied::Unauthenticated(message) => error(StatusCode::UNAUTHORIZED, &message),
        Denied::Forbidden(message) => error(StatusCode::FORBIDDEN, &message),
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_NAME && name.bytes().all(|b| b.is_ascii_graphic())
}

/// `proxy=ID` plus exactly one of `destination=HOST:PORT`, `inbound=NS/NAME`
/// or `pod=NS/POD:PORT`.
fn parse_watch(query: &str) -> Result<(String, Subscription), String> {
    let mut proxy = None;
    let mut subscription = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value =
            percent_decode(value).ok_or_else(|| format!("{key}: invalid percent-encoding"))?;
        let previous = match key {
            "proxy" => proxy.replace(value),
            "destination" => subscription
                .replace(Subscription::Destination(value))
                .map(|_| String::new()),
            "inbound" => subscription
                .replace(Subscription::Inbound(value))
                .map(|_| String::new()),
            "pod" => subscription
                .replace(Subscription::Pod(value))
                .map(|_| String::new()),
            other => {
                return Err(format!(
                    "unknown parameter {other:?}; use proxy, destination, inbound or pod"
                ))
            }
        };
        if previous.is_some() {
            return Err(format!(
                "{key} given twice (or more than one of destination, inbound, pod)"
            ));
        }
    }
    let proxy = proxy.ok_or("missing proxy=ID")?;
    if !valid_name(&proxy) {
        return Err("proxy must be 1-253 printable characters".into());
    }
    let subscription = subscription.ok_or(
        "missing destination=HOST:PORT, inbound=NAMESPACE/SERVICE or pod=NAMESPACE/POD:PORT",
    )?;
    let label = |s: &str| {
        !s.is_empty()
            && s.len() <= 63
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    };
    match &subscription {
        Subscription::Destination(authority) => {
            let valid = authority.len() <= MAX_NAME
                && authority.rsplit_once(':').is_some_and(|(host, port)| {
                    !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
                });
            if !valid {
                return Err(format!("destination {authority:?} is not HOST:PORT"));
            }
        }
        Subscription::Pod(pod_port) => {
            // Pod names are DNS subdomains.
            let subdomain = |s: &str| s.len() <= MAX_NAME && s.split('.').all(label);
            if !parse_pod_port(pod_port).is_some_and(|(ns, pod, _)| label(ns) && subdomain(pod)) {
                return Err(format!("pod {pod_port:?} is not NAMESPACE/POD:PORT"));
            }
        }
        Subscription::Inbound(service) => {
            if !service
                .split_once('/')
                .is_some_and(|(ns, name)| label(ns) && label(name))
            {
                return Err(format!("inbound {service:?} is not NAMESPACE/SERVICE"));
            }
        }
    }
    Ok((proxy, subscription))
}

fn percent_decode(value: &str) -> Option<String> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// The response body of a watch: the subscription's current snapshot, then
/// every newer one (skipping any superseded before the connection could take
/// it), and a heartbeat when nothing was sent for a while. Snapshot lines are
/// the hub's shared bytes; only heartbeats are written per stream.
fn watch(
    hub: &Arc<Hub>,
    metrics: Arc<Metrics>,
    proxy: &str,
    subscription: &Subscription,
    heartbeat: Duration,
) -> Response<Body> {
    let subscriber = hub.subscribe(proxy, subscription);
    tracing::debug!(proxy, subscription = subscription.key(), "stream opened");
    let mut ticker = tokio::time::interval(heartbeat);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let state = (subscriber, ticker, true, metrics);
    let lines = futures_util::stream::unfold(
        state,
        |(mut subscriber, mut ticker, first, metrics)| async move {
            let receiver = &mut subscriber.receiver;
            let line = if first {
                ticker.reset();
                receiver.borrow_and_update().line.clone()
            } else {
                tokio::select! {
                    changed = receiver.changed() => {
                        changed.ok()?;
                        receiver.borrow_and_update().line.clone()
                    }
                    _ = ticker.tick() => {
                        let version = receiver.borrow().snapshot.version;
                        let mut line = serde_json::to_vec(&StreamMessage::Heartbeat { version })
                            .expect("messages serialize");
                        line.push(b'\n');
                        Bytes::from(line)
                    }
                }
            };
            metrics.push_bytes.inc_by(line.len() as u64);
            Some((Frame::data(line), (subscriber, ticker, false, metrics)))
        },
    );
    let body = StreamBody::new(lines.map(Ok::<_, Infallible>));
    let mut response = Response::new(BodyExt::boxed_unsync(body));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/x-ndjson"),
    );
    response
}

fn empty(status: StatusCode) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::new()).boxed_unsync());
    *response.status_mut() = status;
    response
}

fn error(status: StatusCode, message: &str) -> Response<Body> {
    let body = serde_json::json!({"error": message}).to_string();
    let mut response = Response::new(Full::new(Bytes::from(body)).boxed_unsync());
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection's task lives as long as its proxy stays connected, and
    /// there is one per proxy: it must hold pointers, not the TLS session
    /// (over a kilobyte) or hyper's connection (several). Before: 11.6 KiB
    /// per task at 1,000 proxies (heaptrack), as big as the TLS handshake's
    /// state and hyper's auto-detecting connection.
    #[tokio::test]
    async fn a_connection_task_holds_only_pointers() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let tcp = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let index = Arc::new(crate::index::CompiledIndex::default());
        let metrics = Arc::new(Metrics::new());
        let hub = Hub::new(index, metrics.clone(), "cluster.local".into());
        let shared = Arc::new(Shared {
            hub,
            metrics,
            config: ServerConfig {
                heartbeat: Duration::from_secs(5),
                acked: Arc::default(),
                tls: None,
                auth: Arc::new(super::super::auth::Authenticator::None),
            },
        });
        let task = handle(tcp, shared, CancellationToken::new());
        let size = std::mem::size_of_val(&task);
        assert!(size <= 512, "a connection's task future is {size} bytes");
    }

    #[test]
    fn watch_queries_are_validated() {
        let (proxy, s) = parse_watch("proxy=p1&destination=payments.shop%3A8080").unwrap();
        assert_eq!(proxy, "p1");
        assert_eq!(s, Subscription::Destination("payments.shop:8080".into()));
        let (_, s) = parse_watch("proxy=p1&pod=shop/web-7d9c.x2k%3A8080").unwrap();
        assert_eq!(s, Subscription::Pod("shop/web-7d9c.x2k:8080".into()));
        for (query, message) in [
            ("destination=a:80", "missing proxy"),
            ("proxy=p", "missing destination"),
            ("proxy=p&destination=a", "is not HOST:PORT"),
            ("proxy=p&destination=a:0", "is not HOST:PORT"),
            ("proxy=p&inbound=Shop/x", "is not NAMESPACE/SERVICE"),
            ("proxy=p&destination=a:80&inbound=s/x", "given twice"),
            ("proxy=p&pod=shop/web-1", "is not NAMESPACE/POD:PORT"),
            ("proxy=p&pod=shop/Web:80", "is not NAMESPACE/POD:PORT"),
            ("proxy=p&pod=shop/web..1:80", "is not NAMESPACE/POD:PORT"),
            ("proxy=p&pod=shop/w:80&inbound=s/x", "given twice"),
            ("proxy=p&colour=red", "unknown parameter"),
            ("proxy=p&destination=%zz", "invalid percent-encoding"),
        ] {
            let err = parse_watch(query).unwrap_err();
            assert!(err.contains(message), "{query}: {err}");
        }
    }
}
