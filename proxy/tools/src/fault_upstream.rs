//! An HTTP upstream that misbehaves on request, for tests, benchmarks and the
//! demo. Each request's behaviour comes from, in order: the next entry of a
//! script, an `x-fault` request header, or a random failure rate.
//!
//! `x-fault: status=503; delay=100ms; retry-after=2; reset=before-headers`
//! (`reset=after-headers` aborts mid-body; `hang` never answers;
//! `stall=length` or `stall=chunked` sends 200 and part of a body, declared
//! with a Content-Length or not, then nothing more; `read-body` reads the
//! whole request body first and keeps it for [`FaultUpstream::received`]).
//!
//! Paths: `/echo` streams the request body back, `/sha256` answers the body's
//! digest, `/bytes/N` streams N bytes, `/trailers` ends with trailers,
//! `/headers` (and any path under it) answers the request's headers, one
//! `name: value` line each, in the order received; anything else answers a
//! small body.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rand::Rng;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use outrigger_transport::accept::{accept_loop, AcceptConfig};

use crate::cli::FaultUpstreamArgs;
use outrigger_http::body::{full, BoxError, ProxyBody};

/// Arrival times kept for tests; later arrivals are counted but not timed.
const MAX_ARRIVALS: usize = 100_000;

/// What to do with one request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Fault {
    pub status: Option<u16>,
    pub delay: Option<Duration>,
    pub retry_after: Option<String>,
    pub reset: Option<ResetPoint>,
    pub hang: bool,
    pub stall: Option<Stall>,
    pub read_body: bool,
}

/// A response body that stops after its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stall {
    /// Declared with a Content-Length.
    Length,
    /// Of unknown length (chunked on HTTP/1.1).
    Chunked,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetPoint {
    BeforeHeaders,
    AfterHeaders,
}

impl Fault {
    pub fn status(status: u16) -> Self {
        Fault {
            status: Some(status),
            ..Fault::default()
        }
    }

    /// Parses the `x-fault` header syntax.
    pub fn parse(spec: &str) -> Result<Fault, String> {
        let mut fault = Fault::default();
        for item in spec
            .split([';', ','])
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            let (key, value) = item.split_once('=').unwrap_or((item, ""));
            match key.trim() {
                "status" => {
                    fault.status = Some(value.parse().map_err(|_| format!("bad status {value:?}"))?)
                }
                "delay" => {
                    let d = outrigger_api::duration::Duration::parse(value)
                        .map_err(|e| format!("bad delay: {e}"))?;
                    fault.delay = Some(d.as_std());
                }
                "retry-after" => fault.retry_after = Some(value.to_string()),
                "reset" => {
                    fault.reset = Some(match value {
                        "before-headers" => ResetPoint::BeforeHeaders,
                        "after-headers" => ResetPoint::AfterHeaders,
                        other => return Err(format!("bad reset point {other:?}")),
                    })
                }
                "hang" => fault.hang = true,
                "stall" => {
                    fault.stall = Some(match value {
                        "length" => Stall::Length,
                        "chunked" => Stall::Chunked,
                        other => return Err(format!("bad stall {other:?}")),
                    })
                }
                "read-body" => fault.read_body = true,
                other => return Err(format!("unknown fault {other:?}")),
            }
        }
        Ok(fault)
    }
}

#[derive(Debug, Clone)]
pub struct FaultConfig {
    pub failure_rate: f64,
    pub body_bytes: usize,
    pub script: Vec<Fault>,
}

impl Default for FaultConfig {
    fn default() -> Self {
        FaultConfig {
            failure_rate: 0.0,
            body_bytes: 2,
            script: Vec::new(),
        }
    }
}

/// What a test can observe of a running upstream.
pub struct FaultUpstream {
    pub addr: SocketAddr,
    failure_rate: Arc<AtomicU64>,
    hits: Arc<AtomicU64>,
    arrivals: Arc<Mutex<Vec<Instant>>>,
    script: Arc<Mutex<VecDeque<Fault>>>,
    received: Arc<Mutex<Vec<Received>>>,
    stop: CancellationToken,
}

/// A request body read under `read-body`, with its trailers.
pub type Received = (Bytes, Option<HeaderMap>);

impl FaultUpstream {
    pub async fn start(addr: SocketAddr, config: FaultConfig) -> std::io::Result<FaultUpstream> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            hits: Arc::new(AtomicU64::new(0)),
            arrivals: Arc::new(Mutex::new(Vec::new())),
            script: Arc::new(Mutex::new(config.script.into())),
            failure_rate: Arc::new(AtomicU64::new(config.failure_rate.to_bits())),
            body: Bytes::from(vec![b'x'; config.body_bytes]),
            received: Arc::default(),
        });
        let stop = CancellationToken::new();
        tokio::spawn(accept(listener, shared.clone(), stop.clone()));
        Ok(FaultUpstream {
            addr,
            failure_rate: shared.failure_rate.clone(),
            hits: shared.hits.clone(),
            arrivals: shared.arrivals.clone(),
            script: shared.script.clone(),
            received: shared.received.clone(),
            stop,
        })
    }

    /// Requests received so far (each attempt counts).
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::SeqCst)
    }

    /// Changes the share of requests answered with 503 (0.0–1.0).
    pub fn set_failure_rate(&self, rate: f64) {
        self.failure_rate.store(rate.to_bits(), Ordering::SeqCst);
    }

    /// When each request arrived, in order.
    pub fn arrivals(&self) -> Vec<Instant> {
        self.arrivals.lock().expect("not poisoned").clone()
    }

    /// The request bodies read under `read-body`, in order.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().expect("not poisoned").clone()
    }

    /// Replaces the script: the next requests get these faults, in order.
    pub fn set_script(&self, faults: Vec<Fault>) {
        *self.script.lock().expect("not poisoned") = faults.into();
    }
}

impl Drop for FaultUpstream {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

struct Shared {
    hits: Arc<AtomicU64>,
    arrivals: Arc<Mutex<Vec<Instant>>>,
    script: Arc<Mutex<VecDeque<Fault>>>,
    /// An f64 as bits, so the rate can change while serving.
    failure_rate: Arc<AtomicU64>,
    body: Bytes,
    received: Arc<Mutex<Vec<Received>>>,
}

async fn accept(listener: TcpListener, shared: Arc<Shared>, stop: CancellationToken) {
    let config = AcceptConfig {
        name: "fault-upstream",
        // A load generator's connections, not a defence: effectively unbounded.
        max_connections: 1 << 20,
    };
    let on_stop = stop.clone();
    accept_loop(
        listener,
        config,
        stop,
        TaskTracker::new(),
        || {},
        |stream, _| {
            let _ = stream.set_nodelay(true);
            let (shared, stop) = (shared.clone(), on_stop.clone());
            async move {
                let service = service_fn(move |request| respond(shared.clone(), request));
                let builder = auto::Builder::new(TokioExecutor::new());
                let connection =
                    builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                tokio::select! {
                    _ = connection => {}
                    _ = stop.cancelled() => {}
                }
            }
        },
    )
    .await;
}

async fn respond(
    shared: Arc<Shared>,
    request: Request<Incoming>,
) -> Result<Response<ProxyBody>, BoxError> {
    shared.hits.fetch_add(1, Ordering::SeqCst);
    {
        // Bounded: a benchmark may send millions of requests.
        let mut arrivals = shared.arrivals.lock().expect("not poisoned");
        if arrivals.len() < MAX_ARRIVALS {
            arrivals.push(Instant::now());
        }
    }
    let fault = next_fault(&shared, request.headers())?;
    let request = if fault.read_body {
        let (parts, body) = request.into_parts();
        let collected = body.collect().await?;
        let trailers = collected.trailers().cloned();
        let mut received = shared.received.lock().expect("not poisoned");
        // Bounded, like the arrivals.
        if received.len() < 1000 {
            received.push((collected.to_bytes(), trailers));
        }
        Request::from_parts(parts, outrigger_http::body::empty())
    } else {
        request.map(|body| body.map_err(BoxError::from).boxed_unsync())
    };
    if let Some(delay) = fault.delay {
        tokio::time::sleep(delay).await;
    }
    if fault.hang {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
    if fault.reset == Some(ResetPoint::BeforeHeaders) {
        // An error from the service makes hyper abort the connection (h1) or
        // reset the stream (h2) without a response.
        return Err("injected reset before headers".into());
    }
    if let Some(stall) = fault.stall {
        use futures_util::StreamExt;
        let first = futures_util::stream::iter([Ok::<_, BoxError>(Frame::data(
            Bytes::from_static(b"partial"),
        ))]);
        let stalled = first.chain(futures_util::stream::pending());
        let mut response = Response::new(StreamBody::new(stalled).boxed_unsync());
        if stall == Stall::Length {
            response
                .headers_mut()
                .insert(http::header::CONTENT_LENGTH, HeaderValue::from(100));
        }
        return Ok(response);
    }
    let mut response = match fault.status {
        Some(status) => {
            let mut r = Response::new(full(format!("injected {status}\n")));
            *r.status_mut() = StatusCode::from_u16(status)?;
            r
        }
        None => serve_path(&shared, request).await?,
    };
    if let Some(retry_after) = &fault.retry_after {
        response.headers_mut().insert(
            http::header::RETRY_AFTER,
            HeaderValue::from_str(retry_after)?,
        );
    }
    if fault.reset == Some(ResetPoint::AfterHeaders) {
        let chunks: Vec<Result<Frame<Bytes>, BoxError>> = vec![
            Ok(Frame::data(Bytes::from_static(b"partial"))),
            Err("injected reset after headers".into()),
        ];
        let body = StreamBody::new(futures_util::stream::iter(chunks));
        *response.body_mut() = body.boxed_unsync();
    }
    Ok(response)
}

fn next_fault(shared: &Shared, headers: &HeaderMap) -> Result<Fault, BoxError> {
    if let Some(fault) = shared.script.lock().expect("not poisoned").pop_front() {
        return Ok(fault);
    }
    if let Some(spec) = headers.get("x-fault") {
        return Ok(Fault::parse(spec.to_str()?)?);
    }
    let failure_rate = f64::from_bits(shared.failure_rate.load(Ordering::Relaxed));
    if failure_rate > 0.0 && rand::rng().random_bool(failure_rate.clamp(0.0, 1.0)) {
        return Ok(Fault::status(503));
    }
    Ok(Fault::default())
}

async fn serve_path(
    shared: &Shared,
    request: Request<ProxyBody>,
) -> Result<Response<ProxyBody>, BoxError> {
    let path = request.uri().path().to_owned();
    if path == "/echo" {
        return Ok(Response::new(request.into_body()));
    }
    if path == "/headers" || path.starts_with("/headers/") {
        // HTTP/2 carries the authority in the URI (`:authority`), not Host.
        let authority = request
            .uri()
            .authority()
            .map(|authority| format!(":authority: {authority}\n"))
            .unwrap_or_default();
        let lines: String = request
            .headers()
            .iter()
            .map(|(name, value)| format!("{name}: {}\n", String::from_utf8_lossy(value.as_bytes())))
            .collect();
        let lines = authority + &lines;
        return Ok(Response::new(full(lines)));
    }
    if path == "/sha256" {
        let mut hasher = Sha256::new();
        let mut length = 0u64;
        let mut body = request.into_body();
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame?.into_data() {
                length += data.len() as u64;
                hasher.update(&data);
            }
        }
        let hex: String = hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        return Ok(Response::new(full(format!("{hex} {length}\n"))));
    }
    if let Some(count) = path.strip_prefix("/bytes/") {
        let total: usize = count.parse()?;
        return Ok(Response::new(pattern_body(total)));
    }
    if path == "/trailers" {
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        trailers.insert("x-checksum", HeaderValue::from_static("abc123"));
        let frames: Vec<Result<Frame<Bytes>, Infallible>> = vec![
            Ok(Frame::data(Bytes::from_static(b"body before trailers"))),
            Ok(Frame::trailers(trailers)),
        ];
        let body = StreamBody::new(futures_util::stream::iter(frames));
        return Ok(Response::new(
            body.map_err(|never| match never {}).boxed_unsync(),
        ));
    }
    Ok(Response::new(full(shared.body.clone())))
}

/// `total` bytes of a repeating pattern, streamed in 64 KiB frames.
fn pattern_body(total: usize) -> ProxyBody {
    const CHUNK: usize = 64 * 1024;
    let chunk: Bytes = (0..CHUNK)
        .map(|i| (i % 251) as u8)
        .collect::<Vec<u8>>()
        .into();
    let frames = (0..total.div_ceil(CHUNK)).map(move |i| {
        let len = CHUNK.min(total - i * CHUNK);
        Ok::<_, Infallible>(Frame::data(chunk.slice(..len)))
    });
    StreamBody::new(futures_util::stream::iter(frames))
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// `outrigger-proxy fault-upstream`: serve until interrupted.
pub async fn run(args: FaultUpstreamArgs) -> anyhow::Result<()> {
    let upstream = FaultUpstream::start(
        args.listen,
        FaultConfig {
            failure_rate: args.failure_rate,
            body_bytes: args.body_bytes,
            script: Vec::new(),
        },
    )
    .await?;
    println!("fault upstream listening on http://{}", upstream.addr);
    tokio::signal::ctrl_c().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_fault_header() {
        let f = Fault::parse("status=503; delay=100ms; retry-after=2").unwrap();
        assert_eq!(f.status, Some(503));
        assert_eq!(f.delay, Some(Duration::from_millis(100)));
        assert_eq!(f.retry_after.as_deref(), Some("2"));
        assert_eq!(
            Fault::parse("reset=after-headers").unwrap().reset,
            Some(ResetPoint::AfterHeaders)
        );
        assert!(Fault::parse("hang").unwrap().hang);
        assert!(Fault::parse("status=abc").is_err());
        assert!(Fault::parse("explode").is_err());
    }
}
