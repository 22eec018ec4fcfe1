//! HTTP/1.1 upstream connections, kept alive per target.
//!
//! hyper-util's pooled client spawns a task per HTTP/1 request to wait for the
//! connection to come back, hashes a key and boxes futures on every request;
//! beside a busy pod that was a fifth of the proxy's user CPU. Here a
//! connection goes back to its target's idle list when the response body it
//! carried has ended, and the next request takes it from there directly.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use foldhash::HashMap;
use http::{Request, Response};
use http_body::Body;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;

use super::body::ProxyBody;
use super::body_end::{OnEnd, WithEnd};
use super::connect_time::ConnectTime;
use super::send_error::SendError;
use outrigger_proxy_core::addr::HostPort;
use outrigger_transport::connect::Connector;

type Sender = SendRequest<ProxyBody>;

#[derive(Clone)]
pub struct Http1Pool {
    inner: Arc<Inner>,
}

struct Inner {
    connector: Connector,
    idle_timeout: Duration,
    max_idle_per_target: usize,
    idle: Mutex<Idle>,
}

#[derive(Default)]
struct Idle {
    /// foldhash, not SipHash: looked up twice per request (checkout and
    /// check-in); 136 instructions a request fewer (bench/instructions.sh,
    /// 35,483 -> 35,347).
    by_target: HashMap<Arc<HostPort>, Vec<(Sender, Instant)>>,
    reaper_running: bool,
}

impl Http1Pool {
    pub fn new(connector: Connector, idle_timeout: Duration, max_idle_per_target: usize) -> Self {
        Http1Pool {
            inner: Arc::new(Inner {
                connector,
                idle_timeout,
                max_idle_per_target,
                idle: Mutex::new(Idle::default()),
            }),
        }
    }

    /// Sends `request` (origin-form URI, sent as it is: the caller sets Host)
    /// to `target` on an idle connection, or on a new one when none is idle
    /// or the idle ones turn out closed.
    pub async fn send(
        &self,
        target: &Arc<HostPort>,
        mut request: Request<ProxyBody>,
    ) -> Result<Response<ProxyBody>, SendError> {
        let request_sent = track_request_body(&mut request);
        while let Some(mut sender) = self.checkout(target) {
            // Waits out the end of the previous exchange; fails if it closed.
            if sender.ready().await.is_err() {
                continue;
            }
            match sender.try_send_request(request).await {
                Ok(response) => return Ok(self.returning(target, sender, request_sent, response)),
                Err(mut err) => match err.take_message() {
                    // Closed before it took the request: try the next one.
                    Some(unsent) => request = unsent,
                    None => return Err(SendError::Failed(err.into_error().into())),
                },
            }
        }
        let connecting = tokio::time::Instant::now();
        let mut sender = self.connect(target).await?;
        let connect_time = ConnectTime(connecting.elapsed());
        match sender.try_send_request(request).await {
            Ok(response) => {
                let mut response = self.returning(target, sender, request_sent, response);
                ConnectTime::put_on(Some(connect_time), &mut response);
                Ok(response)
            }
            Err(err) => Err(SendError::after_try_send(err)),
        }
    }

    async fn connect(&self, target: &HostPort) -> Result<Sender, SendError> {
        let stream = self
            .inner
            .connector
            .connect_authority(&target.host, target.port)
            .await?;
        let (sender, connection) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|err| SendError::NotSent(err.into()))?;
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(error = %err, "upstream connection ended with an error");
            }
        });
        Ok(sender)
    }

    /// The most recently used idle connection to `target` still open.
    fn checkout(&self, target: &HostPort) -> Option<Sender> {
        let mut idle = self.inner.idle.lock().expect("not poisoned");
        let list = idle.by_target.get_mut(target)?;
        let now = Instant::now();
        while let Some((sender, since)) = list.pop() {
            if !sender.is_closed() && now.duration_since(since) < self.inner.idle_timeout {
                return Some(sender);
            }
        }
        None
    }

    /// The response, its body wrapped to hand the connection back at its end.
    fn returning(
        &self,
        target: &Arc<HostPort>,
        sender: Sender,
        request_sent: Option<Arc<AtomicBool>>,
        response: Response<Incoming>,
    ) -> Response<ProxyBody> {
        let checkin = Checkin {
            pool: Arc::downgrade(&self.inner),
            target: target.clone(),
            sender,
            request_sent,
        };
        response.map(|inner| WithEnd::new(inner, checkin).boxed_unsync())
    }
}

struct Checkin {
    pool: Weak<Inner>,
    target: Arc<HostPort>,
    sender: Sender,
    /// Set when the request body has been sent in full (None: it had none).
    request_sent: Option<Arc<AtomicBool>>,
}

impl Checkin {
    fn complete(self) {
        let Some(pool) = self.pool.upgrade() else {
            return;
        };
        // A response that ended before the request body did (an early 413,
        // say) leaves the connection mid-upload: the next request would wait
        // behind it. Closing it is what the upstream expects anyway.
        let upload_unfinished = self
            .request_sent
            .is_some_and(|sent| !sent.load(Ordering::Acquire));
        if self.sender.is_closed() || upload_unfinished {
            return;
        }
        let mut idle = pool.idle.lock().expect("not poisoned");
        let list = idle.by_target.entry(self.target).or_default();
        if list.len() < pool.max_idle_per_target {
            list.push((self.sender, Instant::now()));
        }
        if !idle.reaper_running {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                idle.reaper_running = true;
                runtime.spawn(reap(Arc::downgrade(&pool), pool.idle_timeout));
            }
        }
    }
}

/// Closes connections idle longer than the idle timeout, until the pool is gone.
async fn reap(pool: Weak<Inner>, idle_timeout: Duration) {
    let period = idle_timeout.clamp(Duration::from_millis(100), Duration::from_secs(30));
    loop {
        tokio::time::sleep(period).await;
        let Some(pool) = pool.upgrade() else {
            return;
        };
        let now = Instant::now();
        let mut idle = pool.idle.lock().expect("not poisoned");
        idle.by_target.retain(|_, list| {
            list.retain(|(sender, since)| {
                !sender.is_closed() && now.duration_since(*since) < idle_timeout
            });
            !list.is_empty()
        });
    }
}

/// Wraps a request body that has content so that its end is known; `None`
/// for an empty body (nothing to wait for, nothing wrapped).
fn track_request_body(request: &mut Request<ProxyBody>) -> Option<Arc<AtomicBool>> {
    if request.body().is_end_stream() {
        return None;
    }
    let sent = Arc::new(AtomicBool::new(false));
    let inner = std::mem::replace(request.body_mut(), super::body::empty());
    *request.body_mut() = WithEnd::new(inner, Sent(sent.clone())).boxed_unsync();
    Some(sent)
}

struct Sent(Arc<AtomicBool>);

impl OnEnd for Sent {
    fn ended(self) {
        self.0.store(true, Ordering::Release);
    }
}

/// A response body read to its end hands its connection back; dropped
/// before that, or broken, the connection is dropped too (hyper closes it:
/// the rest of the body is still on the wire).
impl OnEnd for Checkin {
    fn ended(self) {
        self.complete();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use bytes::Bytes;
    use http_body::Frame;

    use super::*;
    use crate::body::{empty, BoxError};

    /// An upstream answering each request on a connection with `ok`; with
    /// `close_after_each`, it closes the connection after answering (without
    /// saying so), like a server whose keep-alive timeout is very short.
    async fn upstream(close_after_each: bool) -> (Arc<HostPort>, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            loop {
                let (mut stream, _) = listener.accept().await.unwrap();
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 1024];
                    loop {
                        let n = stream.read(&mut chunk).await.unwrap_or(0);
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            buf.drain(..end + 4);
                            let reply = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                            if stream.write_all(reply).await.is_err() {
                                return;
                            }
                            if close_after_each {
                                return;
                            }
                        }
                    }
                });
            }
        });
        let target = HostPort {
            host: "127.0.0.1".into(),
            port,
        };
        (Arc::new(target), accepted)
    }

    fn pool(idle_timeout: Duration) -> Http1Pool {
        let connector = Connector {
            connect_timeout: Duration::from_secs(1),
            mark: None,
        };
        Http1Pool::new(connector, idle_timeout, 4)
    }

    async fn get(pool: &Http1Pool, target: &Arc<HostPort>) -> Result<Bytes, SendError> {
        let request = Request::get("/").body(empty()).unwrap();
        let response = pool.send(target, request).await?;
        Ok(response.into_body().collect().await.unwrap().to_bytes())
    }

    #[tokio::test]
    async fn sequential_requests_share_one_connection() {
        let (target, accepted) = upstream(false).await;
        let pool = pool(Duration::from_secs(10));
        for _ in 0..5 {
            assert_eq!(&get(&pool, &target).await.unwrap()[..], b"ok");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_response_says_whether_its_request_opened_the_connection() {
        let (target, _) = upstream(false).await;
        let pool = pool(Duration::from_secs(10));
        let mut opened = Vec::new();
        for _ in 0..3 {
            let request = Request::get("/").body(empty()).unwrap();
            let response = pool.send(&target, request).await.unwrap();
            opened.push(response.extensions().get::<ConnectTime>().is_some());
            response.into_body().collect().await.unwrap();
        }
        assert_eq!(opened, [true, false, false]);
    }

    #[tokio::test]
    async fn connection_the_upstream_closed_is_replaced_without_an_error() {
        let (target, accepted) = upstream(true).await;
        let pool = pool(Duration::from_secs(10));
        for _ in 0..3 {
            assert_eq!(&get(&pool, &target).await.unwrap()[..], b"ok");
            // Let the close arrive, as it would between real requests.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn body_dropped_unread_does_not_return_its_connection() {
        let (target, accepted) = upstream(false).await;
        let pool = pool(Duration::from_secs(10));
        let request = Request::get("/").body(empty()).unwrap();
        let response = pool.send(&target, request).await.unwrap();
        drop(response);
        assert_eq!(&get(&pool, &target).await.unwrap()[..], b"ok");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn response_ending_before_the_upload_does_not_return_its_connection() {
        use futures_util::StreamExt;
        let (target, accepted) = upstream(false).await;
        let pool = pool(Duration::from_secs(10));
        // The upstream answers at the end of the head; this body never ends.
        let chunk = futures_util::stream::once(async {
            Ok::<_, BoxError>(Frame::data(Bytes::from_static(b"part")))
        });
        let endless = http_body_util::StreamBody::new(chunk.chain(futures_util::stream::pending()));
        let request = Request::post("/").body(endless.boxed_unsync()).unwrap();
        let response = pool.send(&target, request).await.unwrap();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"ok");
        // Reusing that connection would wait behind the upload for ever.
        let next = tokio::time::timeout(Duration::from_secs(5), get(&pool, &target));
        assert_eq!(&next.await.expect("not stuck").unwrap()[..], b"ok");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn idle_connections_expire() {
        let (target, accepted) = upstream(false).await;
        let pool = pool(Duration::from_millis(100));
        get(&pool, &target).await.unwrap();
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert!(pool.inner.idle.lock().unwrap().by_target.is_empty());
        get(&pool, &target).await.unwrap();
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn refused_connection_is_a_connect_error() {
        let target = Arc::new(HostPort {
            host: "127.0.0.1".into(),
            port: {
                // A loopback port nobody listens on (bound, then released).
                let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                listener.local_addr().unwrap().port()
            },
        });
        let err = get(&pool(Duration::from_secs(1)), &target)
            .await
            .unwrap_err();
        assert!(matches!(err, SendError::Connect(_)), "{err}");
    }
}
