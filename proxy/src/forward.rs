//! The per-request path: name the destination, pick its policy, forward the
//! request upstream and stream the response back, recording what happened.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use http::{Method, Request, Response, Version};
use hyper::body::Incoming;

use crate::connection::ConnectionContext;
use crate::destination;
use crate::grpc_status::{count_status, StatusSeries};
use crate::state::ProxyState;
use crate::upgrade;
use outrigger_engine::call::{admit, call};
use outrigger_engine::route_memo::Resolved;
use outrigger_engine::stack::DestinationStack;
use outrigger_engine::steer::steer;
use outrigger_http::body::ProxyBody;
use outrigger_http::error_response::{grpc_error, is_grpc, ErrorResponse, ERROR_HEADER};
use outrigger_http::headers::{ensure_request_id, wants_upgrade, REQUEST_ID};
use outrigger_proxy_core::direction::Direction;
use outrigger_proxy_core::metrics::status_class;
use outrigger_trace::propagation::trace_id_of;
use outrigger_trace::RequestTrace;

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
    // Tracing on: the request's span, handed down to the engine's attempts.
    // Off: nothing but this check.
    let trace = state
        .tracing
        .as_ref()
        .map(|tracing| tracing.request(&request, conn.direction.as_str()));
    // For the access log when tracing is off: the id a caller's trace has.
    let caller_trace_id = (state.access_log && trace.is_none())
        .then(|| trace_id_of(request.headers()))
        .flatten();

    let resolved = conn
        .routes
        .resolve(&request, || destination::resolve(&state, &conn, &request));
    let (label, stack, mut response, answered) = match resolved {
        Err((error, detail)) => (
            "unknown".into(),
            None,
            error.response(&detail),
            Answered::Proxy(error.cause()),
        ),
        Ok(resolved) => route(&state, &conn, resolved, request, started, trace.as_ref()).await,
    };
    // The route that served it, by the policy's name for it; "" when none
    // did (tunnels, upgrades, no destination).
    let route_name = stack.as_ref().map(|(_, route)| route.clone());
    let route_label = route_name.as_deref().unwrap_or("");
    let stack = stack.map(|(stack, _)| stack);

    response
        .headers_mut()
        .insert(REQUEST_ID, request_id.clone());
    let status = response.status().as_u16();
    let cause = answered.cause(&response);
    record(
        &state,
        &conn,
        &label,
        route_label,
        stack.as_deref(),
        status,
        cause,
        started,
    );
    if let Some(trace) = &trace {
        trace.finish(status, &label, route_label, cause);
    }
    if state.access_log {
        let trace_id = trace.as_ref().map(|t| t.trace_id()).or(caller_trace_id);
        tracing::info!(
            target: "outrigger::access",
            request_id = request_id.to_str().unwrap_or(""),
            trace_id = trace_id.as_deref().unwrap_or(""),
            direction = conn.direction.as_str(),
            client = %conn.client_addr,
            destination = &*label,
            route = route_label,
            method = method.as_str(),
            path = path.as_deref().unwrap_or(""),
            status = response.status().as_u16(),
            error = response.headers().get(ERROR_HEADER).and_then(|v| v.to_str().ok()),
            duration_ms = started.elapsed().as_secs_f64() * 1e3,
        );
    }
    if grpc {
        response = grpc_error(response);
        let series = StatusSeries::new(
            &state.engine.metrics,
            conn.direction.as_str(),
            label,
            route_name.unwrap_or_else(|| "".into()),
        );
        response = count_status(response, series);
    }
    Ok(response)
}

/// Who answered a request.
enum Answered {
    Upstream,
    /// The proxy, for this cause.
    Proxy(&'static str),
    /// A tunnel or upgrade: the proxy if it set `x-outrigger-error`.
    Tunnel,
}

impl Answered {
    /// The cause counted in `outrigger_proxy_errors_total`.
    fn cause<'a>(&self, response: &'a Response<ProxyBody>) -> Option<&'a str> {
        match self {
            Answered::Upstream => None,
            Answered::Proxy(cause) => Some(cause),
            Answered::Tunnel => response
                .headers()
                .get(ERROR_HEADER)
                .map(|v| v.to_str().unwrap_or("other")),
        }
    }
}

/// The destination's metric label, the stack and route that served the
/// request (tunnels and upgrades have no route: an empty one), the response,
/// and who answered it.
async fn route(
    state: &ProxyState,
    conn: &ConnectionContext,
    resolved: Arc<Resolved>,
    request: Request<Incoming>,
    started: Instant,
    trace: Option<&RequestTrace>,
) -> (
    Arc<str>,
    Option<(Arc<DestinationStack>, Arc<str>)>,
    Response<ProxyBody>,
    Answered,
) {
    let stack = state.engine.stack(conn.direction, &resolved).await;
    let label = stack.label.clone();
    let connect = request.method() == Method::CONNECT;
    if connect || (request.version() <= Version::HTTP_11 && wants_upgrade(request.headers())) {
        // Upgrades and tunnels meet the same rate and concurrency limits as
        // plain requests, and hold their slot while they are open.
        let slot = match admit(&stack).await {
            Ok(slot) => slot,
            Err(served) => {
                let cause = served.error.map_or("other", |c| c.as_str());
                let route = served.route;
                return (
                    label,
                    Some((stack, route)),
                    served.response,
                    Answered::Proxy(cause),
                );
            }
        };
        let destination = resolved.destination.clone();
        let response = match (connect, conn.direction) {
            // An explicit proxy's CONNECT opens a tunnel to the named authority.
            (true, Direction::Outbound) => {
                upgrade::tunnel(state, destination, label.clone(), request, slot).await
            }
            // Towards the app, CONNECT is the app's business: pass it through.
            _ => {
                upgrade::forward_upgrade(
                    state,
                    conn.direction,
                    destination,
                    label.clone(),
                    request,
                    slot,
                )
                .await
            }
        };
        return (label, Some((stack, "".into())), response, Answered::Tunnel);
    }

    let stop = state.drain_expired.cancelled();
    let served = if stack.config.steers() {
        // Gateway API routes: the route picks the Service that serves it.
        steer(&state.engine, &stack, request, started, trace, stop).await
    } else {
        call(stack.clone(), request, started, trace, stop).await
    };
    let answered = match served.error {
        Some(cause) => Answered::Proxy(cause.as_str()),
        None => Answered::Upstream,
    };
    (
        label,
        Some((stack, served.route)),
        served.response,
        answered,
    )
}

#[allow(clippy::too_many_arguments)]
fn record(
    state: &ProxyState,
    conn: &ConnectionContext,
    destination: &str,
    route: &str,
    stack: Option<&DestinationStack>,
    status: u16,
    cause: Option<&str>,
    started: Instant,
) {
    let metrics = &state.engine.metrics;
    let direction = conn.direction.as_str();
    match stack {
        Some(stack) => stack
            .request_metrics
            .record(route, status, started.elapsed()),
        None => {
            metrics
                .requests
                .with_label_values(&[direction, destination, route, status_class(status).1])
                .inc();
            metrics
                .request_duration
                .with_label_values(&[direction, destination, route])
                .observe(started.elapsed().as_secs_f64());
        }
    }
    if let Some(cause) = cause {
        metrics
            .proxy_errors
            .with_label_values(&[direction, cause])
            .inc();
    }
}
