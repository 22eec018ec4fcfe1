//! Accepting connections on the inbound and outbound listeners: the connection
//! limit, original-destination lookup, protocol detection, and hand-off to the
//! HTTP server or the TCP forwarder.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cli::OutboundMode;
use crate::connection::ConnectionContext;
use crate::destination::app_addr;
use crate::state::ProxyState;
use outrigger_http::server::{self, ServerLimits};
use outrigger_proxy_core::addr::HostPort;
use outrigger_proxy_core::direction::Direction;
use outrigger_transport::accept::{self, AcceptConfig};
use outrigger_transport::detect::{detect, Protocol};
use outrigger_transport::original_dst::original_destination;
use outrigger_transport::prefixed_io::PrefixedIo;
use outrigger_transport::tcp_forward;

#[derive(Debug, Clone)]
pub struct ListenerConfig {
    pub direction: Direction,
    pub max_connections: usize,
    pub detect_timeout: Duration,
    pub server: ServerLimits,
}

/// Accepts until `drain` fires; connection tasks run on `connections`.
pub async fn accept_loop(
    listener: TcpListener,
    config: Arc<ListenerConfig>,
    state: Arc<ProxyState>,
    drain: CancellationToken,
    connections: TaskTracker,
) {
    let direction = config.direction.as_str();
    let accept = AcceptConfig {
        name: direction,
        max_connections: config.max_connections,
    };
    let metrics = state.engine.metrics.clone();
    let on_reject = move || {
        metrics
            .rejected_connections
            .with_label_values(&[direction, "max-connections"])
            .inc();
    };
    accept::accept_loop(
        listener,
        accept,
        drain.clone(),
        connections,
        on_reject,
        |stream, peer| {
            let (config, state, drain) = (config.clone(), state.clone(), drain.clone());
            async move { handle_connection(stream, peer, &config, state, drain).await }
        },
    )
    .await;
}

async fn handle_connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    config: &ListenerConfig,
    state: Arc<ProxyState>,
    drain: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    let direction = config.direction;
    let original_dst = match (direction, state.outbound_mode, state.app_addr) {
        (Direction::Outbound, OutboundMode::Transparent, _) | (Direction::Inbound, _, None) => {
            original_destination(&stream).unwrap_or_else(|err| {
                tracing::debug!(error = %err, "no original destination");
                None
            })
        }
        _ => None,
    };
    let conn = ConnectionContext {
        direction,
        client_addr: peer,
        original_dst,
        routes: Default::default(),
    };
    let tcp_target = tcp_target(&state, &conn);

    let opaque_port = tcp_target
        .as_ref()
        .is_some_and(|t| state.opaque_ports.contains(&t.port));
    let (protocol, prefix) = if opaque_port {
        // Server-speaks-first protocols would stall detection: skip it.
        (Protocol::Opaque, Bytes::new())
    } else {
        // Boxed: its buffer and timer are needed only until the protocol is
        // known, not for the life of the connection task.
        match Box::pin(detect(&mut stream, config.detect_timeout)).await {
            Ok(found) => found,
            Err(err) => {
                tracing::debug!(error = %err, "client closed during protocol detection");
                return;
            }
        }
    };

    let metrics = &state.engine.metrics;
    let labels = [direction.as_str(), protocol.as_str()];
    metrics.connections.with_label_values(&labels).inc();
    let open = metrics.open_connections.with_label_values(&labels);
    open.inc();

    match protocol {
        Protocol::Opaque => match tcp_target {
            Some(target) => {
                // Boxed, like the HTTP branch: the connection task holds room
                // for its largest branch for as long as the connection lives.
                Box::pin(tcp_forward::forward(
                    &state.engine.metrics,
                    &state.engine.connector,
                    direction,
                    stream,
                    prefix,
                    target,
                ))
                .await;
            }
            None => {
                metrics
                    .rejected_connections
                    .with_label_values(&[direction.as_str(), "opaque-without-destination"])
                    .inc();
                tracing::info!(
                    client = %peer,
                    "non-HTTP connection has no destination (explicit mode); closed"
                );
            }
        },
        Protocol::Http1 | Protocol::Http2 => {
            let io = PrefixedIo::new(prefix, stream);
            let (conn, state) = (Arc::new(conn), state.clone());
            // Boxed: what an idle HTTP/1 connection holds is this future, so
            // it should not also carry room for detection and opaque TCP.
            Box::pin(server::serve(
                io,
                protocol,
                &config.server,
                drain,
                move |request| crate::forward::handle(state.clone(), conn.clone(), request),
            ))
            .await;
        }
    }
    open.dec();
}

/// Where a non-HTTP connection goes: the app for inbound, the original
/// destination for transparent outbound. Explicit outbound has none.
fn tcp_target(state: &ProxyState, conn: &ConnectionContext) -> Option<HostPort> {
    match conn.direction {
        Direction::Inbound => app_addr(state, conn).map(HostPort::from),
        Direction::Outbound => conn
            .original_dst
            .filter(|dst| !state.is_own_listener(*dst))
            .map(HostPort::from),
    }
}
