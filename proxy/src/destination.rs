//! Where a request goes: the address to connect to, and the name the request
//! used (outbound, the engine finds the Service, its policy and its state
//! from it; see `outrigger_engine::cache::locate`).

use std::net::SocketAddr;

use http::uri::Authority;
use http::{header, Request};

use crate::cli::OutboundMode;
use crate::connection::ConnectionContext;
use crate::state::ProxyState;
use outrigger_proxy_core::addr::{Destination, HostPort};
use outrigger_proxy_core::direction::Direction;
use outrigger_proxy_core::error::ProxyError;

/// Finds the destination of a request arriving on `conn`.
pub fn resolve<B>(
    state: &ProxyState,
    conn: &ConnectionContext,
    request: &Request<B>,
) -> Result<Destination, (ProxyError, String)> {
    let named = request_authority(request);
    let destination = match conn.direction {
        Direction::Inbound => {
            let app = app_addr(state, conn).ok_or_else(|| {
                (
                    ProxyError::NoDestination,
                    "inbound connection was not redirected and no --app-addr is set".to_string(),
                )
            })?;
            let connect = HostPort::from(app);
            Destination {
                name: named.unwrap_or_else(|| connect.clone()),
                connect,
            }
        }
        Direction::Outbound => {
            let transparent_dst = match state.outbound_mode {
                OutboundMode::Transparent => conn.original_dst.map(HostPort::from),
                OutboundMode::Explicit => None,
            };
            match (transparent_dst, named) {
                (Some(connect), named) => Destination {
                    name: named.unwrap_or_else(|| connect.clone()),
                    connect,
                },
                (None, Some(named)) => Destination {
                    connect: named.clone(),
                    name: named,
                },
                (None, None) => {
                    return Err((
                        ProxyError::NoDestination,
                        "request names no destination (no absolute URI, no Host header)"
                            .to_string(),
                    ))
                }
            }
        }
    };
    if let Some(addr) = destination.connect.as_socket_addr() {
        if state.is_own_listener(addr) {
            return Err((
                ProxyError::Loop,
                format!("{} is this proxy's own listener", destination.connect),
            ));
        }
    }
    Ok(destination)
}

/// The application behind the inbound listener: `--app-addr`, or loopback on
/// the port the client originally dialled (transparent capture).
pub fn app_addr(state: &ProxyState, conn: &ConnectionContext) -> Option<SocketAddr> {
    state.app_addr.or_else(|| {
        conn.original_dst
            .map(|dst| SocketAddr::new([127, 0, 0, 1].into(), dst.port()))
    })
}

/// The authority a request names: its absolute-form URI (HTTP/1 proxy style or
/// HTTP/2 `:authority`), else its Host header.
fn request_authority<B>(request: &Request<B>) -> Option<HostPort> {
    if let Some(authority) = request.uri().authority() {
        return Some(HostPort::from_authority(authority));
    }
    let host = request.headers().get(header::HOST)?.to_str().ok()?;
    let authority: Authority = host.parse().ok()?;
    Some(HostPort::from_authority(&authority))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authority_from_absolute_uri_or_host() {
        let r = Request::get("http://Payments.shop:8080/x")
            .body(())
            .unwrap();
        assert_eq!(
            request_authority(&r),
            Some(HostPort {
                host: "payments.shop".into(),
                port: 8080
            })
        );
        let r = Request::get("/x").header("host", "web").body(()).unwrap();
        assert_eq!(request_authority(&r).unwrap().to_string(), "web:80");
        let r = Request::get("/x")
            .header("host", "[::1]:81")
            .body(())
            .unwrap();
        assert_eq!(request_authority(&r).unwrap().to_string(), "[::1]:81");
        let r = Request::get("/x").body(()).unwrap();
        assert_eq!(request_authority(&r), None);
    }
}
