//! The admin listener: metrics, liveness, readiness, the active policy, and a
//! loopback-only shutdown for Jobs whose main container has finished.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use outrigger_http::body::{full, ProxyBody};
use outrigger_proxy_core::metrics::Metrics;
use outrigger_proxy_policy::PolicyStore;
use outrigger_transport::accept::{accept_loop, AcceptConfig};

/// Readiness: true once listeners are bound and policy is loaded, false again
/// from the moment the proxy starts draining.
#[derive(Default)]
pub struct Readiness(AtomicBool);

impl Readiness {
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::SeqCst);
    }
    pub fn get(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

pub struct AdminState {
    pub metrics: Arc<Metrics>,
    pub policy: Arc<PolicyStore>,
    pub readiness: Arc<Readiness>,
    /// Cancelled by `POST /shutdown`: starts the same drain as SIGTERM.
    pub shutdown: CancellationToken,
    /// The control-plane client, whose subscriptions `/config` lists.
    pub control: Option<Arc<outrigger_control::ControlPlane>>,
    /// Addresses of the proxy's listeners, shown by `/config`.
    pub listeners: serde_json::Value,
}

/// Connections the admin listener serves at once (scrapers and probes).
const ADMIN_MAX_CONNECTIONS: usize = 256;

/// Serves the admin API until `stop` fires.
pub async fn serve(listener: TcpListener, state: Arc<AdminState>, stop: CancellationToken) {
    let config = AcceptConfig {
        name: "admin",
        max_connections: ADMIN_MAX_CONNECTIONS,
    };
    accept_loop(
        listener,
        config,
        stop,
        TaskTracker::new(),
        || tracing::debug!("admin connection refused: too many open"),
        |stream, peer| {
            let state = state.clone();
            async move {
                let service = service_fn(move |request| {
                    let state = state.clone();
                    async move { Ok::<_, Infallible>(route(&state, peer, request)) }
                });
                let _ = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(std::time::Duration::from_secs(10))
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            }
        },
    )
    .await;
}

fn route(state: &AdminState, peer: SocketAddr, request: Request<Incoming>) -> Response<ProxyBody> {
    match (request.method(), request.uri().path()) {
        (&Method::GET, "/metrics") => respond(
            StatusCode::OK,
            "text/plain; version=0.0.4",
            state.metrics.render(),
        ),
        (&Method::GET, "/live") => text(StatusCode::OK, "live\n"),
        (&Method::GET, "/ready") => {
            if state.readiness.get() {
                text(StatusCode::OK, "ready\n")
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
            }
        }
        (&Method::GET, "/config") => {
            let active = state.policy.current();
            let body = serde_json::json!({
                "version": active.version,
                "source": active.source,
                "checksum": active.checksum,
                "loadedAt": active.loaded_at
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs_f64())
                    .unwrap_or(0.0),
                "policies": active.policies,
                "conflicts": active.conflicts,
                // Gateway API routes of the file, per Service parent: whether
                // each is accepted and its references resolve.
                "routes": active.routes,
                "listeners": state.listeners,
                "control": state.control.as_ref().map(|c| c.describe()),
            });
            respond(
                StatusCode::OK,
                "application/json",
                serde_json::to_vec_pretty(&body).expect("JSON values serialize"),
            )
        }
        (&Method::POST, "/shutdown") => {
            // Anyone who can reach the pod IP could otherwise stop the proxy.
            if !peer.ip().is_loopback() {
                return text(
                    StatusCode::FORBIDDEN,
                    "shutdown is accepted from loopback only\n",
                );
            }
            tracing::info!("shutdown requested through the admin API");
            state.shutdown.cancel();
            text(StatusCode::ACCEPTED, "draining\n")
        }
        (_, "/metrics" | "/live" | "/ready" | "/config" | "/shutdown") => {
            text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n")
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found; try /metrics, /live, /ready, /config, POST /shutdown\n",
        ),
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<ProxyBody> {
    respond(
        status,
        "text/plain; charset=utf-8",
        body.as_bytes().to_vec(),
    )
}

fn respond(status: StatusCode, content_type: &'static str, body: Vec<u8>) -> Response<ProxyBody> {
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}
