//! Opening TCP connections to upstreams: name resolution, connect timeout,
//! TCP_NODELAY, and the socket mark that exempts the proxy's own traffic from
//! transparent capture.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpSocket, TcpStream};

#[derive(Debug, Clone)]
pub struct Connector {
    pub connect_timeout: Duration,
    pub mark: Option<u32>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot resolve {host}: {source}")]
    Resolve { host: String, source: io::Error },
    #[error("{host} resolved to no addresses")]
    NoAddresses { host: String },
    #[error("connect to {addr} timed out after {timeout:?}")]
    Timeout { addr: SocketAddr, timeout: Duration },
    #[error("connect to {addr}: {source}")]
    Io { addr: SocketAddr, source: io::Error },
}

impl Connector {
    /// Connects to `host:port`, trying each resolved address in turn.
    pub async fn connect_authority(
        &self,
        host: &str,
        port: u16,
    ) -> Result<TcpStream, ConnectError> {
        let host_trimmed = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = host_trimmed.parse::<std::net::IpAddr>() {
            return self.connect_addr(SocketAddr::new(ip, port)).await;
        }
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host_trimmed, port))
            .await
            .map_err(|source| ConnectError::Resolve {
                host: host.to_string(),
                source,
            })?
            .collect();
        let mut last_error = None;
        for addr in addrs {
            match self.connect_addr(addr).await {
                Ok(stream) => return Ok(stream),
                Err(err) => last_error = Some(err),
            }
        }
        Err(last_error.unwrap_or(ConnectError::NoAddresses {
            host: host.to_string(),
        }))
    }

    pub async fn connect_addr(&self, addr: SocketAddr) -> Result<TcpStream, ConnectError> {
        let io_err = |source| ConnectError::Io { addr, source };
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        }
        .map_err(io_err)?;
        if let Some(mark) = self.mark {
            set_mark(&socket, mark).map_err(io_err)?;
        }
        let stream = tokio::time::timeout(self.connect_timeout, socket.connect(addr))
            .await
            .map_err(|_| ConnectError::Timeout {
                addr,
                timeout: self.connect_timeout,
            })?
            .map_err(io_err)?;
        stream.set_nodelay(true).map_err(io_err)?;
        Ok(stream)
    }
}

#[cfg(target_os = "linux")]
fn set_mark(socket: &TcpSocket, mark: u32) -> io::Result<()> {
    socket2::SockRef::from(socket).set_mark(mark)
}

#[cfg(not(target_os = "linux"))]
fn set_mark(_socket: &TcpSocket, _mark: u32) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "socket marks need Linux",
    ))
}

/// A loopback port nobody listens on (bound, then released).
#[cfg(test)]
pub(crate) fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn refused_connection_is_an_io_error() {
        let port = closed_port();
        let connector = Connector {
            connect_timeout: Duration::from_secs(1),
            mark: None,
        };
        let err = connector
            .connect_authority("127.0.0.1", port)
            .await
            .unwrap_err();
        assert!(matches!(err, ConnectError::Io { .. }), "{err}");
    }

    #[tokio::test]
    async fn resolves_localhost() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let connector = Connector {
            connect_timeout: Duration::from_secs(1),
            mark: None,
        };
        connector
            .connect_authority("localhost", port)
            .await
            .unwrap();
    }
}
