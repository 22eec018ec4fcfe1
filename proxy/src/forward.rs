//! The per-request path: name the destination, pick its policy, forward the
//! request upstream and stream the response back, recording what happened.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use http::{Method, Request, Response, Version};
use hyper::body::Incoming;

use crate::connection::ConnectionContext;
use crate::destination;
use crate::state::ProxyState;
use crate::upgrade;
use outrigger_engine::call::call;
use outrigger_engine::route_memo::Resolved;
use outrigger_engine::stack::DestinationStack;
use outrigger_http::body::ProxyBody;
use outrigger_http::error_response::{grpc_error, is_grpc, ErrorResponse, ERROR_HEADER};
use outrigger_http::headers::{ensure_request_id, wants_upgrade, REQUEST_ID};
use outrigger_proxy_core::addr::Destination;
use outrigger_proxy_core::direction::Direction;
use outrigger_proxy_core::metrics::status_class;

/// Entry point for every request a client connection carries.
pub async fn handle(
    state: Arc<ProxyState>,
    conn: Arc<ConnectionContext>,
    mut request: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    let started = Instant::now();
    let request_id = ensure_request_id(request.headers_mut());
    let method = request.method().clone();
    // Copied only for the access log: the request moves upstream.
    let path = state.access_log.then(|| request.uri().path().to_owned());
    let grpc = is_grpc(request.headers());

    let resolved = conn
        .routes
        .resolve(&request, || destination::resolve(&state, &conn, &request));
    let (label, stack, mut response) = match resolved {
        Err((error, detail)) => ("unknown".into(), None, error.response(&detail)),
        Ok(resolved) => route(&state, &conn, resolved, request, started).await,
    };

    response
        .headers_mut()
        .insert(REQUEST_ID, request_id.clone());
    record(&state, &conn, &label, stack.as_deref(), &response, started);
    if state.access_log {
        tracing::info!(
            target: "outrigger::access",
            request_id = request_id.to_str().unwrap_or(""),
            direction = conn.direction.as_str(),
            client = %conn.client_addr,
            destination = &*label,
            method = method.as_str(),
            path = path.as_deref().unwrap_or(""),
            status = response.status().as_u16(),
            error = response.headers().get(ERROR_HEADER).and_then(|v| v.to_str().ok()),
            duration_ms = started.elapsed().as_secs_f64() * 1e3,
        );
    }
    if grpc {
        response = grpc_error(response);
    }
    Ok(response)
}

/// The response, the destination's metric label, and the stack that served it
/// (tunnels and upgrades are forwarded without one).
async fn route(
    state: &ProxyState,
    conn: &ConnectionContext,
    resolved: Arc<Resolved>,
    request: Request<Incoming>,
    started: Instant,
) -> (Arc<str>, Option<Arc<DestinationStack>>, Response<ProxyBody>) {
    let destination = &resolved.destination;
    if request.method() == Method::CONNECT {
        let label = destination_label(state, destination);
        let destination = destination.clone();
        let response = match conn.direction {
            // An explicit proxy's CONNECT opens a tunnel to the named authority.
            Direction::Outbound => upgrade::tunnel(state, destination, request).await,
            // Towards the app, CONNECT is the app's business: pass it through.
            Direction::Inbound => upgrade::forward_upgrade(state, destination, request).await,
        };
        return (label, None, response);
    }
    if request.version() <= Version::HTTP_11 && wants_upgrade(request.headers()) {
        let label = destination_label(state, destination);
        let response = upgrade::forward_upgrade(state, destination.clone(), request).await;
        return (label, None, response);
    }

    let stack = state.engine.stack(conn.direction, &resolved).await;
    let response = call(stack.clone(), request, started).await;
    (stack.label.clone(), Some(stack), response)
}

fn destination_label(state: &ProxyState, destination: &Destination) -> Arc<str> {
    state
        .engine
        .metrics
        .destination_label(&destination.name.to_string())
}

fn record(
    state: &ProxyState,
    conn: &ConnectionContext,
    destination: &str,
    stack: Option<&DestinationStack>,
    response: &Response<ProxyBody>,
    started: Instant,
) {
    let metrics = &state.engine.metrics;
    let direction = conn.direction.as_str();
    let status = response.status().as_u16();
    match stack {
        Some(stack) => stack.request_metrics.record(status, started.elapsed()),
        None => {
            metrics
                .requests
                .with_label_values(&[direction, destination, status_class(status).1])
                .inc();
            metrics
                .request_duration
                .with_label_values(&[direction, destination])
                .observe(started.elapsed().as_secs_f64());
        }
    }
    if let Some(cause) = response.headers().get(ERROR_HEADER) {
        metrics
            .proxy_errors
            .with_label_values(&[direction, cause.to_str().unwrap_or("other")])
            .inc();
    }
}
