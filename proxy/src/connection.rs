//! One client connection as the request path sees it.

use std::net::SocketAddr;

use outrigger_proxy_core::direction::Direction;

use outrigger_engine::route_memo::RouteMemo;

/// What the proxy knows about one client connection.
#[derive(Debug)]
pub struct ConnectionContext {
    pub direction: Direction,
    pub client_addr: SocketAddr,
    /// Where the client meant to connect, when iptables redirected it here.
    pub original_dst: Option<SocketAddr>,
    /// Where its last request went.
    pub routes: RouteMemo,
}
