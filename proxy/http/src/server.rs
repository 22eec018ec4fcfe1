//! Serving one client connection as HTTP/1.1 or HTTP/2, with the limits that
//! protect the proxy (header size and read time, concurrent streams) and a
//! graceful close when the proxy drains.

use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;

use crate::body::ProxyBody;
use outrigger_transport::detect::Protocol;

#[derive(Debug, Clone)]
pub struct ServerLimits {
    pub header_read_timeout: Duration,
    pub max_header_bytes: usize,
    pub max_concurrent_streams: u32,
}

/// Serves `io` until the client closes it, or until `drain` fires and the
/// in-flight requests on it have finished; `handle` answers each request.
pub async fn serve<IO, H, F>(
    io: IO,
    protocol: Protocol,
    limits: &ServerLimits,
    drain: CancellationToken,
    handle: H,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Fn(Request<Incoming>) -> F + Send + Sync + Clone + 'static,
    F: Future<Output = Result<Response<ProxyBody>, Infallible>> + Send + 'static,
{
    let service = service_fn(handle);
    let io = TokioIo::new(io);
    // Each arm owns a different connection type; the drain logic is the same.
    macro_rules! drive {
        ($connection:expr) => {{
            let mut connection = std::pin::pin!($connection);
            tokio::select! {
                result = connection.as_mut() => log_end(result),
                _ = drain.cancelled() => {
                    // Finishes in-flight requests, then closes (GOAWAY on HTTP/2,
                    // closing idle keep-alive connections on HTTP/1.1).
                    connection.as_mut().graceful_shutdown();
                    log_end(connection.await);
                }
            }
        }};
    }
    match protocol {
        Protocol::Http1 => drive!(http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .max_buf_size(limits.max_header_bytes.max(8192))
            .serve_connection(io, service)
            .with_upgrades()),
        Protocol::Http2 => drive!(http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .max_concurrent_streams(limits.max_concurrent_streams)
            .max_header_list_size(limits.max_header_bytes as u32)
            // Rapid reset (CVE-2023-44487): a client that opens and cancels
            // streams faster than they are served is disconnected.
            .max_pending_accept_reset_streams(Some(32))
            .max_local_error_reset_streams(Some(128))
            // Idle clients are pinged and dropped when they stop answering.
            .keep_alive_interval(Some(std::time::Duration::from_secs(30)))
            .keep_alive_timeout(std::time::Duration::from_secs(10))
            .serve_connection(io, service)),
        Protocol::Opaque => unreachable!("opaque connections are not served as HTTP"),
    }
}

fn log_end(result: Result<(), hyper::Error>) {
    if let Err(err) = result {
        // Clients going away mid-request are routine; say so at debug level.
        tracing::debug!(error = %err, "client connection ended with an error");
    }
}
