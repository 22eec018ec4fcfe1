//! One upstream HTTP/2 connection, driven through the h2 crate directly.
//!
//! Why not hyper's HTTP/2 client: per request it hands the request over a
//! channel to the connection's task, spawns a task that waits for the
//! response and hands it back over a second channel, and strips connection
//! headers the engine has already stripped: 69,197 instructions per
//! proxied HTTP/2 request with it, 61,002 with this (BENCHMARKS.md,
//! "HTTP/2, round three"). Here the request's own future opens the stream
//! and waits for the response; a task is spawned only to stream a request
//! body, and the connection's task does the IO.

use std::future::{poll_fn, Future};
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use h2::client::SendRequest;
use h2::{Reason, RecvStream, SendStream};
use http::{HeaderMap, Request, Response};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::oneshot;

use crate::body::{BoxError, ProxyBody};

// hyper's defaults for its HTTP/2 client, which this replaced: windows
// large enough that one response streams without waiting on the client's
// window updates, at most 1 MiB queued per stream to send, 16 KiB of
// response headers.
const STREAM_WINDOW: u32 = 2 * 1024 * 1024;
const CONNECTION_WINDOW: u32 = 5 * 1024 * 1024;
const MAX_FRAME_SIZE: u32 = 16 * 1024;
const MAX_SEND_BUFFER: usize = 1024 * 1024;
const MAX_HEADER_LIST_SIZE: u32 = 16 * 1024;
/// Streams opened before the server's SETTINGS say how many it allows (the
/// least RFC 9113 recommends servers allow).
const INITIAL_MAX_SEND_STREAMS: usize = 100;
/// A server that makes us reset this many streams (malformed responses) is
/// disconnected.
const MAX_LOCAL_ERROR_RESETS: usize = 1024;

/// How a connection checks that its peer is still there.
#[derive(Debug, Clone, Copy)]
pub struct KeepAlive {
    /// A ping goes out after this long, whether or not streams are open.
    pub interval: Duration,
    /// The connection closes when a ping's answer takes longer.
    pub timeout: Duration,
}

/// A handle on one upstream HTTP/2 connection; clones share it.
#[derive(Clone)]
pub struct Connection {
    sender: SendRequest<Bytes>,
    closed: Arc<AtomicBool>,
}

/// Why a request got no response from the connection.
#[derive(Debug)]
pub enum Failure {
    /// The connection takes no new streams (it closed, or the server sent
    /// GOAWAY): the request, given back whole, can go over another one.
    Closed(Box<Request<ProxyBody>>, h2::Error),
    /// The stream was never opened: the upstream cannot have seen it.
    NotSent(h2::Error),
    /// The stream was opened: the upstream may have seen the request.
    Failed(h2::Error),
}

/// Opens HTTP/2 (prior knowledge) on `io` and spawns the task that drives
/// the connection (its reads, writes and pings) until it closes: when the
/// server closes it, a ping goes unanswered, or every handle and stream on
/// it is gone.
pub async fn handshake<IO>(io: IO, keep_alive: KeepAlive) -> Result<Connection, h2::Error>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, mut connection) = h2::client::Builder::new()
        .initial_max_send_streams(INITIAL_MAX_SEND_STREAMS)
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_frame_size(MAX_FRAME_SIZE)
        .max_header_list_size(MAX_HEADER_LIST_SIZE)
        .max_send_buffer_size(MAX_SEND_BUFFER)
        .max_local_error_reset_streams(Some(MAX_LOCAL_ERROR_RESETS))
        .enable_push(false)
        .handshake::<_, Bytes>(io)
        .await?;
    let closed = Arc::new(AtomicBool::new(false));
    let pings = connection.ping_pong().expect("taken only here");
    let flag = closed.clone();
    tokio::spawn(async move {
        let connection = pin!(connection);
        tokio::select! {
            result = connection => {
                if let Err(err) = result {
                    tracing::debug!(error = %err, "upstream HTTP/2 connection ended with an error");
                }
            }
            () = keep_pinging(pings, keep_alive) => {}
        }
        flag.store(true, Ordering::Release);
    });
    Ok(Connection { sender, closed })
}

/// Returns when a ping went unanswered for `keep_alive.timeout` or the
/// connection is gone (dropping the connection then closes it).
async fn keep_pinging(mut pings: h2::PingPong, keep_alive: KeepAlive) {
    loop {
        tokio::time::sleep(keep_alive.interval).await;
        match tokio::time::timeout(keep_alive.timeout, pings.ping(h2::Ping::opaque())).await {
            Ok(Ok(_pong)) => {}
            Ok(Err(_)) => return,
            Err(_) => {
                tracing::debug!("upstream HTTP/2 connection did not answer a ping: closing it");
                return;
            }
        }
    }
}

impl Connection {
    /// Whether the connection is known to take no new streams.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Whether `other` is a handle on the same connection.
    pub fn same_as(&self, other: &Connection) -> bool {
        Arc::ptr_eq(&self.closed, &other.closed)
    }

    /// Marks the connection closed, as a request that found it so does.
    #[cfg(test)]
    pub(crate) fn mark_closed(&self) {
        self.closed.store(true, Ordering::Release);
    }

    /// Sends `request` (its URI absolute: scheme and authority become
    /// `:scheme` and `:authority`; connection-specific headers already
    /// removed) and waits for the response head.
    pub async fn send(
        &mut self,
        request: Request<ProxyBody>,
    ) -> Result<Response<ProxyBody>, Failure> {
        // Waits while the server's limit on concurrent streams is reached.
        if let Err(err) = poll_fn(|cx| self.sender.poll_ready(cx)).await {
            self.closed.store(true, Ordering::Release);
            return Err(Failure::Closed(Box::new(request), err));
        }
        let (head, body) = request.into_parts();
        let end = body.is_end_stream();
        let (response, stream) = self
            .sender
            .send_request(Request::from_parts(head, ()), end)
            .map_err(Failure::NotSent)?;
        // The body streams on its own task: it may go on after the response
        // has come (a gRPC stream in both directions). Cancelled if the
        // request is given up before the response.
        let cancel = (!end).then(|| {
            let (cancel, cancelled) = oneshot::channel();
            tokio::spawn(send_body(body, stream, cancelled));
            CancelOnDrop(Some(cancel))
        });
        let response = response.await.map_err(Failure::Failed)?;
        if let Some(mut cancel) = cancel {
            cancel.disarm();
        }
        Ok(response.map(|recv| {
            ResponseBody {
                recv,
                state: Read::Data,
            }
            .boxed_unsync()
        }))
    }
}

/// Tells the request body's task to reset the stream when dropped armed.
struct CancelOnDrop(Option<oneshot::Sender<()>>);

impl CancelOnDrop {
    fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(cancel) = self.0.take() {
            let _ = cancel.send(());
        }
    }
}

/// Streams the request body to the upstream, frame by frame, as the
/// stream's window allows. Stops when the upstream resets the stream, and
/// resets it when the body fails or the request was given up (also while
/// waiting for window: a stalled upstream must still see the cancel).
async fn send_body(
    mut body: ProxyBody,
    mut stream: SendStream<Bytes>,
    cancelled: oneshot::Receiver<()>,
) {
    let mut give_up = GiveUp(Some(cancelled));
    loop {
        let next = poll_fn(|cx| {
            if give_up.poll(cx) {
                return Poll::Ready(Step::Cancel);
            }
            if stream.poll_reset(cx).is_ready() {
                return Poll::Ready(Step::Stop);
            }
            Pin::new(&mut body).poll_frame(cx).map(Step::Frame)
        })
        .await;
        let frame = match next {
            Step::Cancel => return stream.send_reset(Reason::CANCEL),
            Step::Stop => return,
            Step::Frame(None) => {
                let _ = stream.send_data(Bytes::new(), true);
                return;
            }
            Step::Frame(Some(Err(err))) => {
                tracing::debug!(error = %err, "request body failed: resetting the upstream stream");
                return stream.send_reset(reset_reason(&*err));
            }
            Step::Frame(Some(Ok(frame))) => frame,
        };
        let frame = match frame.into_data() {
            Ok(data) => {
                let end = body.is_end_stream();
                match send_data(&mut stream, data, end, &mut give_up).await {
                    Ok(()) if !end => continue,
                    Ok(()) | Err(Unsent::Closed) => return,
                    Err(Unsent::Cancelled) => return stream.send_reset(Reason::CANCEL),
                }
            }
            Err(frame) => frame,
        };
        if let Ok(trailers) = frame.into_trailers() {
            let _ = stream.send_trailers(trailers);
            return;
        }
    }
}

enum Step {
    Cancel,
    Stop,
    Frame(Option<Result<Frame<Bytes>, BoxError>>),
}

/// The request's give-up signal as the body's task sees it: armed until the
/// response comes (the sender is then dropped without a word).
struct GiveUp(Option<oneshot::Receiver<()>>);

impl GiveUp {
    /// Whether the request was given up before its response.
    fn poll(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(signal) = &mut self.0 else {
            return false;
        };
        match Pin::new(signal).poll(cx) {
            Poll::Ready(Ok(())) => true,
            Poll::Ready(Err(_)) => {
                // Disarmed: the response came, the body goes on.
                self.0 = None;
                false
            }
            Poll::Pending => false,
        }
    }
}

/// Why a piece of body was not sent.
enum Unsent {
    /// The stream closed or failed: nothing more can be sent.
    Closed,
    /// The request was given up while waiting for window.
    Cancelled,
}

/// Sends `data` as the stream's send window allows, the last piece ending
/// the stream when `end`.
async fn send_data(
    stream: &mut SendStream<Bytes>,
    mut data: Bytes,
    end: bool,
    give_up: &mut GiveUp,
) -> Result<(), Unsent> {
    if data.is_empty() {
        return match end {
            true => stream.send_data(data, true).map_err(|_| Unsent::Closed),
            false => Ok(()),
        };
    }
    while !data.is_empty() {
        stream.reserve_capacity(data.len());
        let granted = poll_fn(|cx| {
            if give_up.poll(cx) {
                return Poll::Ready(Err(Unsent::Cancelled));
            }
            stream.poll_capacity(cx).map(|granted| match granted {
                Some(Ok(granted)) => Ok(granted),
                Some(Err(_)) | None => Err(Unsent::Closed),
            })
        })
        .await?;
        if granted == 0 {
            continue;
        }
        let piece = data.split_to(granted.min(data.len()));
        stream
            .send_data(piece, end && data.is_empty())
            .map_err(|_| Unsent::Closed)?;
    }
    Ok(())
}

/// The reset that passes a failed body on: the client's own reset code when
/// it reset its stream, else INTERNAL_ERROR.
fn reset_reason(err: &(dyn std::error::Error + 'static)) -> Reason {
    let mut source = Some(err);
    while let Some(err) = source {
        if let Some(reason) = err.downcast_ref::<h2::Error>().and_then(h2::Error::reason) {
            return reason;
        }
        source = err.source();
    }
    Reason::INTERNAL_ERROR
}

/// A response body read from the upstream stream: its data, then its
/// trailers. Received bytes give their window back at once: what the proxy
/// buffers is bounded by the client side's window, not this one.
struct ResponseBody {
    recv: RecvStream,
    state: Read,
}

#[derive(PartialEq)]
enum Read {
    Data,
    Trailers,
    Done,
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if this.state == Read::Data {
            match ready!(this.recv.poll_data(cx)) {
                Some(Ok(data)) => {
                    let _ = this.recv.flow_control().release_capacity(data.len());
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Err(err)) => {
                    this.state = Read::Done;
                    return Poll::Ready(Some(Err(err.into())));
                }
                None => this.state = Read::Trailers,
            }
        }
        if this.state == Read::Done {
            return Poll::Ready(None);
        }
        let trailers: Result<Option<HeaderMap>, h2::Error> = ready!(this.recv.poll_trailers(cx));
        this.state = Read::Done;
        Poll::Ready(match trailers {
            Ok(Some(trailers)) => Some(Ok(Frame::trailers(trailers))),
            Ok(None) => None,
            Err(err) => Some(Err(err.into())),
        })
    }

    fn is_end_stream(&self) -> bool {
        self.state == Read::Done || self.recv.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        match self.is_end_stream() {
            true => SizeHint::with_exact(0),
            false => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use http_body_util::{BodyExt, StreamBody};
    use hyper::body::Incoming;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use tokio::net::{TcpListener, TcpStream};
    use tokio::sync::mpsc;

    use super::*;

    const KEEP_ALIVE: KeepAlive = KeepAlive {
        interval: Duration::from_secs(20),
        timeout: Duration::from_secs(10),
    };

    /// hyper's HTTP/2 server on a loopback port, answering with `answer`.
    async fn upstream<F, Fut>(answer: F) -> TcpStream
    where
        F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Response<ProxyBody>> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let service = hyper::service::service_fn(move |request| {
                let answer = answer.clone();
                async move { Ok::<_, Infallible>(answer(request).await) }
            });
            let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
        TcpStream::connect(address).await.unwrap()
    }

    fn post(body: ProxyBody) -> Request<ProxyBody> {
        Request::post("http://upstream.test/echo")
            .version(http::Version::HTTP_2)
            .body(body)
            .unwrap()
    }

    /// A request body fed frame by frame through a channel.
    fn channel_body() -> (mpsc::Sender<Result<Frame<Bytes>, BoxError>>, ProxyBody) {
        let (tx, rx) = mpsc::channel(4);
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|frame| (frame, rx))
        });
        (tx, StreamBody::new(stream).boxed_unsync())
    }

    #[tokio::test]
    async fn bodies_larger_than_the_windows_and_trailers_go_both_ways() {
        // The upstream echoes the body's length and its trailers back, as a
        // body and trailers of its own.
        let io = upstream(|request: Request<Incoming>| async move {
            let collected = request.into_body().collect().await.unwrap();
            let trailers = collected.trailers().cloned().unwrap_or_default();
            let length = collected.to_bytes().len();
            let echo = vec![b'x'; length];
            let frames = futures_util::stream::iter([
                Ok::<_, BoxError>(Frame::data(Bytes::from(echo))),
                Ok(Frame::trailers(trailers)),
            ]);
            Response::new(StreamBody::new(frames).boxed_unsync())
        })
        .await;
        let mut connection = handshake(io, KEEP_ALIVE).await.unwrap();
        let (tx, body) = channel_body();
        let sending = tokio::spawn(async move {
            // 3 MiB in 64 KiB frames: past the 64 KiB default window hyper's
            // server grants, so it waits on window updates.
            for _ in 0..48 {
                tx.send(Ok(Frame::data(Bytes::from(vec![b'a'; 64 * 1024]))))
                    .await
                    .unwrap();
            }
            let mut trailers = HeaderMap::new();
            trailers.insert("grpc-status", "0".parse().unwrap());
            tx.send(Ok(Frame::trailers(trailers))).await.unwrap();
        });
        let response = connection.send(post(body)).await.unwrap();
        assert_eq!(response.version(), http::Version::HTTP_2);
        let collected = response.into_body().collect().await.unwrap();
        sending.await.unwrap();
        assert_eq!(collected.trailers().unwrap()["grpc-status"], "0");
        assert_eq!(collected.to_bytes().len(), 48 * 64 * 1024);
    }

    /// An upstream (the h2 crate's server) that takes one request and
    /// reports how its body ended: the reset's reason, or `None` at a clean
    /// end. It never answers.
    async fn body_end_seen_upstream() -> (TcpStream, oneshot::Receiver<Option<Reason>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (seen_tx, seen_rx) = oneshot::channel();
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let mut connection = h2::server::handshake(stream).await.unwrap();
            let (request, _respond) = connection.accept().await.unwrap().unwrap();
            tokio::spawn(async move { while connection.accept().await.is_some() {} });
            let mut body = request.into_body();
            let end = loop {
                match body.data().await {
                    Some(Ok(_)) => continue,
                    Some(Err(err)) => break err.reason(),
                    None => break None,
                }
            };
            let _ = seen_tx.send(end);
            std::future::pending::<()>().await;
        });
        (TcpStream::connect(address).await.unwrap(), seen_rx)
    }

    #[tokio::test]
    async fn a_request_given_up_before_its_response_resets_the_upstream_stream() {
        let (io, seen) = body_end_seen_upstream().await;
        let mut connection = handshake(io, KEEP_ALIVE).await.unwrap();
        let (tx, body) = channel_body();
        tx.send(Ok(Frame::data(Bytes::from_static(b"first"))))
            .await
            .unwrap();
        // Given up (a per-try timeout, say) while the body still streams.
        let request = connection.send(post(body));
        assert!(
            tokio::time::timeout(Duration::from_millis(200), request)
                .await
                .is_err(),
            "the upstream never answers"
        );
        let end = tokio::time::timeout(Duration::from_secs(10), seen)
            .await
            .expect("the upstream saw the body end")
            .unwrap();
        assert_eq!(end, Some(Reason::CANCEL));
        drop(tx);
    }

    #[tokio::test]
    async fn a_request_given_up_while_its_body_waits_for_window_still_resets() {
        // The upstream reads but never gives window back: after 64 KiB the
        // body's task waits for capacity that never comes.
        let (io, seen) = body_end_seen_upstream().await;
        let mut connection = handshake(io, KEEP_ALIVE).await.unwrap();
        let (tx, body) = channel_body();
        tx.send(Ok(Frame::data(Bytes::from(vec![b'a'; 128 * 1024]))))
            .await
            .unwrap();
        let request = connection.send(post(body));
        assert!(
            tokio::time::timeout(Duration::from_millis(200), request)
                .await
                .is_err(),
            "the upstream never answers"
        );
        let end = tokio::time::timeout(Duration::from_secs(10), seen)
            .await
            .expect("the upstream saw the body end")
            .unwrap();
        assert_eq!(end, Some(Reason::CANCEL));
        drop(tx);
    }

    #[tokio::test]
    async fn a_failed_request_body_resets_the_stream_with_the_clients_reason() {
        let (io, seen) = body_end_seen_upstream().await;
        let connection = handshake(io, KEEP_ALIVE).await.unwrap();
        let (tx, body) = channel_body();
        // The request fails with its body: a handle kept here keeps the
        // connection open until the upstream has seen the reset.
        let mut sender = connection.clone();
        let request = tokio::spawn(async move { sender.send(post(body)).await });
        tx.send(Ok(Frame::data(Bytes::from_static(b"part"))))
            .await
            .unwrap();
        // The client reset its own stream mid-body, with its own code.
        let client_reset: BoxError = Box::new(h2::Error::from(Reason::ENHANCE_YOUR_CALM));
        tx.send(Err(client_reset)).await.unwrap();
        let end = tokio::time::timeout(Duration::from_secs(10), seen)
            .await
            .expect("the upstream saw the body end")
            .unwrap();
        assert_eq!(end, Some(Reason::ENHANCE_YOUR_CALM));
        request.abort();
    }

    #[tokio::test]
    async fn a_body_that_ends_ends_the_stream_cleanly() {
        let (io, seen) = body_end_seen_upstream().await;
        let mut connection = handshake(io, KEEP_ALIVE).await.unwrap();
        let (tx, body) = channel_body();
        let request = tokio::spawn(async move { connection.send(post(body)).await });
        tx.send(Ok(Frame::data(Bytes::from_static(b"all of it"))))
            .await
            .unwrap();
        drop(tx);
        let end = tokio::time::timeout(Duration::from_secs(10), seen)
            .await
            .expect("the upstream saw the body end")
            .unwrap();
        assert_eq!(end, None);
        request.abort();
    }

    #[tokio::test]
    async fn requests_past_the_servers_stream_limit_wait_for_a_free_stream() {
        use std::sync::atomic::AtomicUsize;
        // The server allows 2 streams at once and holds each a moment; it
        // notes the most it ever had open.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (open, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (o, m) = (open.clone(), most.clone());
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let service = hyper::service::service_fn(move |_request| {
                let (open, most) = (o.clone(), m.clone());
                async move {
                    let now = open.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    open.fetch_sub(1, Ordering::SeqCst);
                    Ok::<_, Infallible>(Response::new(crate::body::full("ok")))
                }
            });
            let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .max_concurrent_streams(2)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
        let io = TcpStream::connect(address).await.unwrap();
        let connection = handshake(io, KEEP_ALIVE).await.unwrap();
        // Let the server's SETTINGS arrive: before them the client may open
        // up to INITIAL_MAX_SEND_STREAMS, as RFC 9113 allows.
        let mut first = connection.clone();
        first
            .send(post(crate::body::full("warm-up")))
            .await
            .unwrap()
            .into_body()
            .collect()
            .await
            .unwrap();
        let mut requests = tokio::task::JoinSet::new();
        for _ in 0..20 {
            let mut connection = connection.clone();
            requests.spawn(async move {
                let response = connection.send(post(crate::body::full("x"))).await?;
                let body = response.into_body().collect().await.unwrap().to_bytes();
                Ok::<_, Failure>(body)
            });
        }
        while let Some(answer) = requests.join_next().await {
            assert_eq!(&answer.unwrap().unwrap()[..], b"ok");
        }
        assert_eq!(
            most.load(Ordering::SeqCst),
            2,
            "never past the server's limit"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_peer_that_never_answers_pings_is_closed() {
        // Takes the connection and reads everything, answering nothing.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut sink = tokio::io::sink();
            let _ = tokio::io::copy(&mut stream, &mut sink).await;
        });
        let io = TcpStream::connect(address).await.unwrap();
        let connection = handshake(io, KEEP_ALIVE).await.unwrap();
        let started = tokio::time::Instant::now();
        while !connection.is_closed() {
            assert!(started.elapsed() < Duration::from_secs(60), "never closed");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_secs(30),
            "closed after {waited:?}: one interval and one timeout"
        );
    }

    #[tokio::test]
    async fn a_connection_the_server_closed_gives_the_request_back() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let service = hyper::service::service_fn(|_request| async {
                Ok::<_, Infallible>(Response::new(crate::body::empty()))
            });
            let connection = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service);
            let mut connection = pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                _ = stop_rx => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
        });
        let io = TcpStream::connect(address).await.unwrap();
        let mut connection = handshake(io, KEEP_ALIVE).await.unwrap();
        let get = || {
            Request::get("http://upstream.test/")
                .version(http::Version::HTTP_2)
                .body(crate::body::empty())
                .unwrap()
        };
        connection.send(get()).await.unwrap();
        stop_tx.send(()).unwrap();
        let started = std::time::Instant::now();
        while !connection.is_closed() {
            assert!(started.elapsed() < Duration::from_secs(10), "never closed");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        match connection.send(get()).await {
            Err(Failure::Closed(request, _)) => assert_eq!(request.uri().path(), "/"),
            other => panic!("{other:?}"),
        }
    }
}
