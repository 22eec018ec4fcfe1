//! Serving one client connection as HTTP/1.1 or HTTP/2, with the limits that
//! protect the proxy (header size and read time, concurrent streams) and a
//! graceful close when the proxy drains.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;

use crate::body::ProxyBody;
use crate::idle::{self, Activity, HeadTimer, IdleIo};
use outrigger_transport::detect::Protocol;

#[derive(Debug, Clone)]
pub struct ServerLimits {
    pub header_read_timeout: Duration,
    pub max_header_bytes: usize,
    pub max_concurrent_streams: u32,
}

/// An HTTP/1 connection that has waited this long for a request head with
/// nothing received drops hyper's state for it and waits for the client's
/// next bytes with nothing but the socket.
const IDLE_AFTER: Duration = Duration::from_secs(1);

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
    match protocol {
        Protocol::Http1 => serve_http1(io, limits, drain, handle).await,
        // Boxed: an HTTP/2 connection is large, and a future holds room for
        // its largest branch, so every HTTP/1 connection task would carry it.
        Protocol::Http2 => Box::pin(serve_http2(io, limits, drain, handle)).await,
        Protocol::Opaque => unreachable!("opaque connections are not served as HTTP"),
    }
}

/// HTTP/1.1: hyper serves the connection while it is in use; one idle for
/// `IDLE_AFTER` is set aside (hyper's buffers and request slot dropped, see
/// `idle`) and served by a fresh hyper connection when bytes come again.
async fn serve_http1<IO, H, F>(io: IO, limits: &ServerLimits, drain: CancellationToken, handle: H)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Fn(Request<Incoming>) -> F + Send + Sync + Clone + 'static,
    F: Future<Output = Result<Response<ProxyBody>, Infallible>> + Send + 'static,
{
    let activity = Arc::new(Activity::new(IDLE_AFTER));
    serve_http1_with(io, activity, limits, drain, handle).await
}

/// `serve_http1` with the `Activity` handed in (tests read it).
async fn serve_http1_with<IO, H, F>(
    io: IO,
    activity: Arc<Activity>,
    limits: &ServerLimits,
    drain: CancellationToken,
    handle: H,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Fn(Request<Incoming>) -> F + Send + Sync + Clone + 'static,
    F: Future<Output = Result<Response<ProxyBody>, Infallible>> + Send + 'static,
{
    let mut io = IdleIo::new(io, activity.clone());
    let mut service = service_fn(handle);
    loop {
        // Boxed so that a connection set aside holds none of it.
        let mut connection = Box::pin(
            http1::Builder::new()
                .timer(HeadTimer(activity.clone()))
                .header_read_timeout(limits.header_read_timeout)
                .max_buf_size(limits.max_header_bytes.max(8192))
                .serve_connection(TokioIo::new(io), service)
                .with_upgrades(),
        );
        if !drive_until_idle(connection.as_mut(), &activity, &drain).await {
            return;
        }
        let parts = Pin::into_inner(connection)
            .into_parts()
            .expect("a connection set aside was not upgraded");
        activity.set_parking(false);
        activity.count_set_aside();
        (io, service) = (parts.io.into_inner(), parts.service);
        // An empty read buffer still holds hyper's 8 KiB allocation: it must
        // not live on while the connection waits.
        let read_buf = parts.read_buf;
        let next = if read_buf.is_empty() {
            drop(read_buf);
            // Drain closes idle connections, and so does the header-read
            // timeout hyper was waiting under.
            tokio::select! {
                next = idle::next_bytes(&mut io, activity.head_deadline()) => next,
                _ = drain.cancelled() => None,
            }
        } else {
            // The start of a request hyper had read: serve it at once.
            Some(read_buf)
        };
        let Some(next) = next else {
            return;
        };
        io.replay(next);
    }
}

/// Runs `connection` until it ends (false) or is found idle and closed
/// without touching the socket (true: take it back with `into_parts`).
async fn drive_until_idle<C>(
    mut connection: Pin<&mut C>,
    activity: &Activity,
    drain: &CancellationToken,
) -> bool
where
    C: Future<Output = Result<(), hyper::Error>> + GracefulShutdown,
{
    loop {
        tokio::select! {
            // The connection first: the idle flag is raised while polling it.
            biased;
            result = connection.as_mut() => {
                log_end(result);
                return false;
            }
            _ = drain.cancelled() => {
                // Finishes in-flight requests, then closes (closing idle
                // keep-alive connections at once).
                connection.as_mut().shutdown_gracefully();
                log_end(connection.await);
                return false;
            }
            _ = std::future::poll_fn(|_| match activity.take_idle() {
                true => Poll::Ready(()),
                false => Poll::Pending,
            }) => {
                activity.set_parking(true);
                // Idle: hyper closes at once, with no IO.
                connection.as_mut().shutdown_gracefully();
                let polled =
                    std::future::poll_fn(|cx| Poll::Ready(connection.as_mut().poll(cx))).await;
                match polled {
                    Poll::Ready(Ok(())) => return true,
                    Poll::Ready(Err(err)) => {
                        log_end(Err(err));
                        return false;
                    }
                    Poll::Pending => {
                        // Not idle after all: keep-alive is now off, so the
                        // connection closes after this exchange.
                        activity.set_parking(false);
                        tracing::debug!("connection was not idle when set aside");
                    }
                }
            }
        }
    }
}

/// hyper's two connection types' graceful shutdown, under one name.
trait GracefulShutdown {
    fn shutdown_gracefully(self: Pin<&mut Self>);
}

impl<I, S, B> GracefulShutdown for http1::UpgradeableConnection<I, S>
where
    S: hyper::service::HttpService<Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    B: http_body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn shutdown_gracefully(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

async fn serve_http2<IO, H, F>(io: IO, limits: &ServerLimits, drain: CancellationToken, handle: H)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Fn(Request<Incoming>) -> F + Send + Sync + Clone + 'static,
    F: Future<Output = Result<Response<ProxyBody>, Infallible>> + Send + 'static,
{
    let connection = http2::Builder::new(TokioExecutor::new())
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
        .serve_connection(
            TokioIo::new(io),
            service_fn(move |request| Box::pin(handle(request))),
        );
    let mut connection = std::pin::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => log_end(result),
        _ = drain.cancelled() => {
            // Finishes in-flight streams, then closes (GOAWAY).
            connection.as_mut().graceful_shutdown();
            log_end(connection.await);
        }
    }
}

fn log_end(result: Result<(), hyper::Error>) {
    if let Err(err) = result {
        // Clients going away mid-request are routine; say so at debug level.
        tracing::debug!(error = %err, "client connection ended with an error");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
    use tokio::time::Instant;

    fn limits() -> ServerLimits {
        ServerLimits {
            header_read_timeout: Duration::from_secs(10),
            max_header_bytes: 32 * 1024,
            max_concurrent_streams: 16,
        }
    }

    /// An HTTP/1 server on one end of a pipe; the other end is the client.
    fn start() -> (DuplexStream, Arc<Activity>, CancellationToken) {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let activity = Arc::new(Activity::new(IDLE_AFTER));
        let drain = CancellationToken::new();
        let (a, d) = (activity.clone(), drain.clone());
        tokio::spawn(async move {
            serve_http1_with(server, a, &limits(), d, |_request| async {
                Ok::<_, Infallible>(Response::new(crate::body::full("ok")))
            })
            .await
        });
        (client, activity, drain)
    }

    /// Reads one response to the request sent in `parts`.
    async fn exchange(client: &mut DuplexStream, parts: &[&[u8]]) -> String {
        for part in parts {
            client.write_all(part).await.unwrap();
            tokio::task::yield_now().await;
        }
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        while !got.ends_with(b"\r\n\r\nok") {
            let n = client.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed: {}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..n]);
        }
        String::from_utf8(got).unwrap()
    }

    async fn wait_set_aside(activity: &Activity, times: u64) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while activity.set_asides() < times {
            assert!(Instant::now() < deadline, "never set aside");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    const GET: &[u8] = b"GET / HTTP/1.1\r\nhost: a\r\n\r\n";

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_is_set_aside_and_serves_the_next_requests() {
        let (mut client, activity, _drain) = start();
        assert!(exchange(&mut client, &[GET])
            .await
            .starts_with("HTTP/1.1 200"));
        wait_set_aside(&activity, 1).await;
        // Served again, keep-alive intact, a head arriving in pieces too.
        assert!(exchange(&mut client, &[GET])
            .await
            .starts_with("HTTP/1.1 200"));
        assert!(
            exchange(&mut client, &[b"GET / HT", b"TP/1.1\r\nhost: a\r\n\r\n"])
                .await
                .starts_with("HTTP/1.1 200")
        );
        wait_set_aside(&activity, 2).await;
        // Two pipelined requests after a rest: both answered.
        client.write_all(&[GET, GET].concat()).await.unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        while got.windows(2).filter(|w| w == b"ok").count() < 2 {
            let n = client.read(&mut buf).await.unwrap();
            assert!(n > 0);
            got.extend_from_slice(&buf[..n]);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_set_aside_still_closes_at_the_header_read_timeout() {
        let (mut client, activity, _drain) = start();
        exchange(&mut client, &[GET]).await;
        let answered = Instant::now();
        wait_set_aside(&activity, 1).await;
        let mut buf = [0u8; 16];
        assert_eq!(client.read(&mut buf).await.unwrap(), 0, "closed");
        let waited = answered.elapsed();
        assert!(
            waited >= Duration::from_secs(10) && waited < Duration::from_secs(11),
            "closed after {waited:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn drain_closes_a_connection_set_aside() {
        let (mut client, activity, drain) = start();
        exchange(&mut client, &[GET]).await;
        wait_set_aside(&activity, 1).await;
        drain.cancel();
        let mut buf = [0u8; 16];
        assert_eq!(client.read(&mut buf).await.unwrap(), 0, "closed");
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_in_flight_is_not_set_aside() {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let activity = Arc::new(Activity::new(IDLE_AFTER));
        let a = activity.clone();
        tokio::spawn(async move {
            serve_http1_with(
                server,
                a,
                &limits(),
                CancellationToken::new(),
                |_request| async {
                    // A slow upstream: the answer comes after several checks.
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    Ok::<_, Infallible>(Response::new(crate::body::full("ok")))
                },
            )
            .await
        });
        let mut client = client;
        let response = exchange(&mut client, &[GET]).await;
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        assert!(!response.to_ascii_lowercase().contains("connection: close"));
        assert_eq!(activity.set_asides(), 0);
    }
}
