//! The original destination of a connection redirected by iptables (SO_ORIGINAL_DST).

use std::net::SocketAddr;

use tokio::net::TcpStream;

/// Where the client meant to connect before the NAT redirect, or `None` when the
/// connection was not redirected (its original destination is our own listener).
pub fn original_destination(stream: &TcpStream) -> std::io::Result<Option<SocketAddr>> {
    let original = read_original_dst(stream)?;
    let local = stream.local_addr()?;
    Ok(if original == local {
        None
    } else {
        Some(original)
    })
}

#[cfg(target_os = "linux")]
fn read_original_dst(stream: &TcpStream) -> std::io::Result<SocketAddr> {
    use nix::sys::socket::{getsockopt, sockopt};
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};

    match stream.local_addr()? {
        SocketAddr::V4(_) => {
            let addr = getsockopt(stream, sockopt::OriginalDst).map_err(std::io::Error::from)?;
            // sockaddr_in holds the address and port in network byte order.
            let ip = Ipv4Addr::from(u32::from_be(addr.sin_addr.s_addr));
            let port = u16::from_be(addr.sin_port);
            Ok(SocketAddr::V4(SocketAddrV4::new(ip, port)))
        }
        SocketAddr::V6(_) => {
            let addr =
                getsockopt(stream, sockopt::Ip6tOriginalDst).map_err(std::io::Error::from)?;
            let ip = Ipv6Addr::from(addr.sin6_addr.s6_addr);
            let port = u16::from_be(addr.sin6_port);
            Ok(SocketAddr::V6(SocketAddrV6::new(
                ip,
                port,
                addr.sin6_flowinfo,
                addr.sin6_scope_id,
            )))
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn read_original_dst(_stream: &TcpStream) -> std::io::Result<SocketAddr> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "transparent mode needs Linux (SO_ORIGINAL_DST)",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Without an iptables redirect the kernel has no NAT entry for the socket;
    /// the call must fail cleanly (or report "not redirected"), never panic.
    #[tokio::test]
    async fn unredirected_connection_has_no_original_destination() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = TcpStream::connect(addr).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        match original_destination(&server) {
            Ok(found) => assert_eq!(found, None),
            Err(err) => assert!(
                matches!(
                    err.raw_os_error(),
                    Some(libc_enoent) if libc_enoent == 2 || libc_enoent == 92
                ),
                "unexpected error {err}"
            ),
        }
        drop(client);
    }
}
