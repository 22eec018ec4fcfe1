//! Which listener a connection came through.

use std::net::SocketAddr;

use crate::route_memo::RouteMemo;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Traffic to the pod, forwarded to the application.
    Inbound,
    /// Traffic from the application to other services.
    Outbound,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        }
    }
}

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
