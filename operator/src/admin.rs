//! Operator admin endpoints: /metrics, /live, /ready (after the first full
//! sync), /view (the compiled view, JSON), /proxies (the proxies streaming
//! from this replica, JSON; read by the `outrigger` CLI). All read-only.

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
use crate::policy_server::{ConnectedProxy, Hub};

pub struct AdminState {
    pub metrics: Arc<Metrics>,
    pub index: Arc<CompiledIndex>,
    pub ready: Arc<AtomicBool>,
    pub hub: Arc<Hub>,
    /// This replica's name (the Lease identity), shown in /proxies.
    pub replica: Option<String>,
}

/// The body of `/proxies` (the `outrigger` CLI reads it with this type).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProxiesView {
    /// The operator's version, so the CLI can show which one answered.
    pub version: String,
    pub replica: Option<String>,
    pub proxies: Vec<ConnectedProxy>,
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
        "/proxies" => (
            StatusCode::OK,
            "application/json",
            serde_json::to_vec_pretty(&ProxiesView {
                version: env!("CARGO_PKG_VERSION").to_string(),
                replica: state.replica.clone(),
                proxies: state.hub.connected_proxies(),
            })
            .expect("the proxies serialize"),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::compile;
    use http_body_util::BodyExt;
    use outrigger_api::stream::Subscription;

    async fn body(response: Response<Full<Bytes>>) -> serde_json::Value {
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn proxies_lists_connected_proxies_as_json() {
        let index = Arc::new(CompiledIndex::default());
        index.store(compile(&[], &[], &[]));
        let metrics = Arc::new(Metrics::new());
        let hub = Hub::new(index.clone(), metrics.clone(), "cluster.local".into());
        let state = AdminState {
            metrics,
            index,
            ready: Arc::default(),
            hub: hub.clone(),
            replica: Some("operator-0".into()),
        };
        let empty = body(route(&state, "/proxies")).await;
        assert_eq!(empty["proxies"], serde_json::json!([]));
        assert_eq!(empty["replica"], "operator-0");
        assert_eq!(empty["version"], env!("CARGO_PKG_VERSION"));

        let _stream = hub.subscribe("web-1", &Subscription::Destination("web.shop:80".into()));
        let response = route(&state, "/proxies");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        let listed = body(response).await;
        let proxy = &listed["proxies"][0];
        assert_eq!(proxy["proxy"], "web-1");
        assert_eq!(proxy["streams"], 1);
        assert!(proxy["connectedSince"].is_string());
        let watch = &proxy["subscriptions"][0];
        assert_eq!(watch["subscription"], "dst:web.shop:80");
        assert_eq!(watch["applied"], serde_json::Value::Null, "no ack yet");
        assert_eq!(watch["current"], false);
    }
}
