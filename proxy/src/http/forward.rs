//! The per-request path: name the destination, pick its policy, forward the
//! request upstream and stream the response back, recording what happened.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use http::{Method, Request, Response, Version};
use hyper::body::Incoming;

use super::body::ProxyBody;
use super::error_response::{grpc_error, is_grpc, ERROR_HEADER};
use super::headers::{ensure_request_id, wants_upgrade, REQUEST_ID};
use super::upgrade;
use crate::destination::{self, Destination};
use crate::direction::{ConnectionContext, Direction};
use crate::engine::call::call;
use crate::state::ProxyState;

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

    let (label, mut response) = match destination::resolve(&state, &conn, &request) {
        Err((error, detail)) => ("unknown".into(), error.response(&detail)),
        Ok(destination) => {
            let label = state
                .metrics
                .destination_label(&destination.name.to_string());
            (
                label,
                route(&state, &conn, destination, request, started).await,
            )
        }
    };

    response
        .headers_mut()
        .insert(REQUEST_ID, request_id.clone());
    record(&state, &conn, &label, &response, started);
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

async fn route(
    state: &ProxyState,
    conn: &ConnectionContext,
    destination: Destination,
    request: Request<Incoming>,
    started: Instant,
) -> Response<ProxyBody> {
    if request.method() == Method::CONNECT {
        return match conn.direction {
            // An explicit proxy's CONNECT opens a tunnel to the named authority.
            Direction::Outbound => upgrade::tunnel(state, destination, request).await,
            // Towards the app, CONNECT is the app's business: pass it through.
            Direction::Inbound => upgrade::forward_upgrade(state, destination, request).await,
        };
    }
    if request.version() <= Version::HTTP_11 && wants_upgrade(request.headers()) {
        return upgrade::forward_upgrade(state, destination, request).await;
    }

    let stack = state.stacks.get(state, conn.direction, &destination).await;
    call(stack, request, started).await
}

fn record(
    state: &ProxyState,
    conn: &ConnectionContext,
    destination: &str,
    response: &Response<ProxyBody>,
    started: Instant,
) {
    let metrics = &state.metrics;
    let direction = conn.direction.as_str();
    let class = status_class(response.status().as_u16());
    metrics
        .requests
        .with_label_values(&[direction, destination, class])
        .inc();
    metrics
        .request_duration
        .with_label_values(&[direction, destination])
        .observe(started.elapsed().as_secs_f64());
    if let Some(cause) = response.headers().get(ERROR_HEADER) {
        metrics
            .proxy_errors
            .with_label_values(&[direction, cause.to_str().unwrap_or("other")])
            .inc();
    }
}

fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// An error and its sources on one line: hyper's top-level messages alone
/// ("client error (Connect)") do not say what went wrong.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
