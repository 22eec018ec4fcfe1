//! Operator admin endpoints: /metrics, /live, /ready (after the first full
//! sync), /view (the compiled view, JSON).

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::{header, Response, StatusCode};
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use outrigger_transport::accept::{accept_loop, AcceptConfig};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::index::CompiledIndex;
use crate::metrics::Metrics;

pub struct AdminState {
    pub metrics: Arc<Metrics>,
    pub index: Arc<CompiledIndex>,
    pub ready: Arc<AtomicBool>,
}

pub async fn serve(listener: TcpListener, state: Arc<AdminState>, stop: CancellationToken) {
    let accept = AcceptConfig {
        name: "admin",
        max_connections: 256,
    };
    accept_loop(
        listener,
        accept,
        stop,
        TaskTracker::new(),
        || tracing::debug!("admin connection refused: too many open"),
        |stream, _| {
            let state = state.clone();
            async move {
                let service = service_fn(move |request: http::Request<hyper::body::Incoming>| {
                    let state = state.clone();
                    async move { Ok::<_, Infallible>(route(&state, request.uri().path())) }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            }
        },
    )
    .await;
}

fn route(state: &AdminState, path: &str) -> Response<Full<Bytes>> {
    let (status, content_type, body): (StatusCode, &str, Vec<u8>) = match path {
        "/metrics" => (
            StatusCode::OK,
            "text/plain; version=0.0.4",
            state.metrics.render(),
        ),
        "/live" => (StatusCode::OK, "text/plain", b"live\n".to_vec()),
        "/ready" if state.ready.load(Ordering::SeqCst) => {
            (StatusCode::OK, "text/plain", b"ready\n".to_vec())
        }
        "/ready" => (
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            b"caches not synced\n".to_vec(),
        ),
        "/view" => (
            StatusCode::OK,
            "application/json",
            serde_json::to_vec_pretty(&*state.index.load()).expect("the view serializes"),
        ),
        _ => (StatusCode::NOT_FOUND, "text/plain", b"not found\n".to_vec()),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_str(content_type).expect("static content types are valid"),
    );
    response
}
