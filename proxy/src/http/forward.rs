//! The per-request path: name the destination, pick its policy, forward the
//! request upstream and stream the response back, recording what happened.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::uri::{PathAndQuery, Scheme};
use http::{HeaderValue, Method, Request, Response, Uri, Version};
use hyper::body::Incoming;

use super::body::{incoming, ProxyBody};
use super::error_response::{ProxyError, ERROR_HEADER};
use super::headers::{ensure_request_id, strip_hop_by_hop, wants_upgrade, REQUEST_ID};
use super::upgrade;
use crate::destination::{self, Destination};
use crate::direction::{ConnectionContext, Direction};
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
    let path = request.uri().path().to_owned();

    let (label, mut response) = match destination::resolve(&state, &conn, &request) {
        Err((error, detail)) => ("unknown".into(), error.response(&detail)),
        Ok(destination) => {
            let label = state
                .metrics
                .destination_label(&destination.name.to_string());
            (label, route(&state, &conn, destination, request).await)
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
            path,
            status = response.status().as_u16(),
            error = response.headers().get(ERROR_HEADER).and_then(|v| v.to_str().ok()),
            duration_ms = started.elapsed().as_secs_f64() * 1e3,
        );
    }
    Ok(response)
}

async fn route(
    state: &ProxyState,
    conn: &ConnectionContext,
    destination: Destination,
    request: Request<Incoming>,
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

    let timeout = request_timeout(state, conn, &destination);
    let upstream_request = match upstream_request(request, &destination) {
        Ok(r) => r,
        Err(detail) => return ProxyError::BadRequest.response(&detail),
    };
    let exchange = state.clients.send(upstream_request);
    let result = match timeout {
        Some(limit) => match tokio::time::timeout(limit, exchange).await {
            Ok(result) => result,
            Err(_) => {
                return ProxyError::Timeout.response(&format!(
                    "{} sent no response within {}",
                    destination.name,
                    outrigger_api::duration::Duration::from_std(limit)
                ))
            }
        },
        None => exchange.await,
    };
    match result {
        Ok(response) => {
            let (mut parts, body) = response.into_parts();
            strip_hop_by_hop(&mut parts.headers, false);
            Response::from_parts(parts, incoming(body))
        }
        Err(err) => {
            let kind = if err.is_connect() {
                ProxyError::ConnectFailure
            } else {
                ProxyError::UpstreamReset
            };
            let detail = format!("{}: {}", destination.connect, error_chain(&err));
            tracing::debug!(destination = %destination.name, error = %detail, "upstream failed");
            kind.response(&detail)
        }
    }
}

/// The request timeout the destination's policy sets, if any.
fn request_timeout(
    state: &ProxyState,
    conn: &ConnectionContext,
    destination: &Destination,
) -> Option<Duration> {
    let active = state.policy.current();
    let policy = match (conn.direction, &state.service_name) {
        (Direction::Inbound, Some(service)) => {
            state
                .matcher
                .find_service(&active.policies, service, destination.connect.port)
        }
        _ => state.matcher.find(
            &active.policies,
            &destination.name.host,
            destination.name.port,
        ),
    }?;
    policy
        .spec
        .timeouts
        .as_ref()?
        .request
        .map(|d| d.as_std())
        .filter(|d| !d.is_zero())
}

/// Rewrites a client request for the upstream hop: absolute URI naming the
/// connect address (which the pooled client dials), hop-by-hop headers removed.
pub fn upstream_request(
    request: Request<Incoming>,
    destination: &Destination,
) -> Result<Request<ProxyBody>, String> {
    let (mut parts, body) = request.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    parts.uri = Uri::builder()
        .scheme(Scheme::HTTP)
        .authority(destination.connect.to_string())
        .path_and_query(path)
        .build()
        .map_err(|e| format!("cannot build upstream URI: {e}"))?;
    if parts.version < Version::HTTP_2 {
        // The upstream hop is always HTTP/1.1, whatever the client spoke.
        if !parts.headers.contains_key(http::header::HOST) {
            let host = HeaderValue::from_str(&destination.name.to_string())
                .map_err(|e| format!("invalid host: {e}"))?;
            parts.headers.insert(http::header::HOST, host);
        }
        parts.version = Version::HTTP_11;
    }
    strip_hop_by_hop(&mut parts.headers, false);
    Ok(Request::from_parts(parts, incoming(body)))
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
