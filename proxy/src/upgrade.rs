//! Protocol switches and tunnels: WebSocket (and any HTTP/1.1 `Upgrade`) and
//! CONNECT. After the handshake both sides are spliced byte for byte.

use std::sync::Arc;

use http::{Method, Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::sync::OwnedSemaphorePermit;

use crate::state::ProxyState;
use outrigger_engine::guarded_body::with_guard;
use outrigger_http::body::{empty, incoming, ProxyBody};
use outrigger_http::error_response::{ErrorResponse, ProxyError};
use outrigger_http::headers::strip_hop_by_hop;
use outrigger_proxy_core::addr::Destination;
use outrigger_proxy_core::direction::Direction;
use outrigger_proxy_core::error::error_chain;
use outrigger_proxy_core::metrics::TunnelBytes;
use outrigger_transport::tcp_forward::splice_counted;

/// CONNECT to an explicit proxy: open TCP to the authority, answer 200, splice.
pub async fn tunnel(
    state: &ProxyState,
    destination: Destination,
    label: Arc<str>,
    mut request: Request<Incoming>,
    slot: Option<OwnedSemaphorePermit>,
) -> Response<ProxyBody> {
    let upstream = match state
        .engine
        .connector
        .connect_authority(&destination.connect.host, destination.connect.port)
        .await
    {
        Ok(stream) => stream,
        Err(err) => return ProxyError::ConnectFailure.response(&err.to_string()),
    };
    let client = hyper::upgrade::on(&mut request);
    let metrics = state.engine.metrics.clone();
    state.tunnels.spawn(async move {
        // The concurrency slot, if any, is held until the tunnel closes.
        let _slot = slot;
        let Ok(client) = client.await else { return };
        let bytes = metrics.tunnel_bytes(Direction::Outbound.as_str(), &label);
        splice_counted(bytes, &label, TokioIo::new(client), upstream).await;
    });
    Response::new(empty())
}

/// Forwards an upgrade request on a dedicated upstream connection (never a
/// pooled one: after a switch the connection belongs to the new protocol).
pub async fn forward_upgrade(
    state: &ProxyState,
    direction: Direction,
    destination: Destination,
    label: Arc<str>,
    mut request: Request<Incoming>,
    slot: Option<OwnedSemaphorePermit>,
) -> Response<ProxyBody> {
    let stream = match state
        .engine
        .connector
        .connect_authority(&destination.connect.host, destination.connect.port)
        .await
    {
        Ok(stream) => stream,
        Err(err) => return ProxyError::ConnectFailure.response(&err.to_string()),
    };
    let (mut sender, connection) =
        match hyper::client::conn::http1::handshake(TokioIo::new(stream)).await {
            Ok(pair) => pair,
            Err(err) => return ProxyError::UpstreamReset.response(&error_chain(&err)),
        };
    tokio::spawn(connection.with_upgrades());

    let client_upgrade = hyper::upgrade::on(&mut request);
    let is_connect = request.method() == Method::CONNECT;
    let (mut parts, body) = request.into_parts();
    strip_hop_by_hop(&mut parts.headers, true);
    parts.version = Version::HTTP_11;
    let upstream_request = Request::from_parts(parts, incoming(body));

    let mut response = match sender.send_request(upstream_request).await {
        Ok(response) => response,
        Err(err) => return ProxyError::UpstreamReset.response(&error_chain(&err)),
    };
    let switched = response.status() == StatusCode::SWITCHING_PROTOCOLS
        || (is_connect && response.status().is_success());
    let mut slot = slot;
    if switched {
        let upstream_upgrade = hyper::upgrade::on(&mut response);
        // The concurrency slot, if any, is held while the upgraded
        // connection is open.
        let bytes = state
            .engine
            .metrics
            .tunnel_bytes(direction.as_str(), &label);
        state.tunnels.spawn(splice(
            client_upgrade,
            upstream_upgrade,
            bytes,
            label,
            slot.take(),
        ));
    }
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers, switched);
    let response = Response::from_parts(parts, incoming(body));
    match slot {
        // Not switched: an ordinary response, whose body ends the request.
        Some(slot) => with_guard(response, slot),
        None => response,
    }
}

async fn splice(
    client: OnUpgrade,
    upstream: OnUpgrade,
    bytes: TunnelBytes,
    label: Arc<str>,
    _slot: Option<OwnedSemaphorePermit>,
) {
    let (client, upstream) = match tokio::try_join!(client, upstream) {
        Ok(pair) => pair,
        Err(err) => {
            tracing::debug!(error = %err, "upgrade did not complete");
            return;
        }
    };
    splice_counted(bytes, &label, TokioIo::new(client), TokioIo::new(upstream)).await;
}
