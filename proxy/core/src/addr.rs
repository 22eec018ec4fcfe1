//! Where traffic goes: a host and port, and a request's destination (the
//! address connected to, and the name policies and metrics know it by).

use std::fmt;
use std::net::SocketAddr;

use http::uri::Authority;

/// A host and port to connect to (a name is resolved with DNS at connect time).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HostPort {
    pub host: String,
    pub port: u16,
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') && !self.host.starts_with('[') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl From<SocketAddr> for HostPort {
    fn from(addr: SocketAddr) -> Self {
        HostPort {
            host: addr.ip().to_string(),
            port: addr.port(),
        }
    }
}

impl HostPort {
    /// The host (lowercased, brackets removed) and port (80 when absent).
    pub fn from_authority(authority: &Authority) -> Self {
        HostPort {
            host: authority
                .host()
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_ascii_lowercase(),
            port: authority.port_u16().unwrap_or(80),
        }
    }

    /// The address itself, when the host is an IP literal or `localhost`.
    pub fn as_socket_addr(&self) -> Option<SocketAddr> {
        let ip = if self.host == "localhost" {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            self.host.parse().ok()?
        };
        Some(SocketAddr::new(ip, self.port))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Destination {
    /// Where the proxy connects.
    pub connect: HostPort,
    /// The name the request used for its destination (the authority); equals
    /// `connect` when the request named none. Outbound it names the Service
    /// whose policy and state apply (any spelling of one Service port finds
    /// the same state); inbound it is the client's and selects nothing.
    pub name: HostPort,
}
