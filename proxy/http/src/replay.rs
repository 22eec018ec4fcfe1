//! A request body that can be sent more than once: read from the client once,
//! copied into a bounded buffer while the first attempt streams it (the first
//! attempt never waits for the whole body), and replayed to later attempts,
//! trailers included.
//!
//! An attempt that starts before the client has sent everything replays what
//! was buffered, then goes on reading from the client where the previous
//! attempt left off. Past `max` buffered bytes the buffer is dropped and the
//! body streams on unaffected, but it can no longer be replayed (unless no
//! attempt has read anything yet: then the next attempt can take it whole).
//!
//! Attempts are sequential: starting a new one supersedes the previous one,
//! whose body (still held by an abandoned upstream connection, say) fails
//! from then on instead of competing for the client's data.

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;

use crate::body::{empty, BoxError, ProxyBody};

/// The client's request body, shared by every attempt.
pub struct Replay {
    /// `None` for a body that had ended before the first attempt (every GET
    /// without a body): each attempt sends it empty, and nothing needs
    /// sharing, so nothing is allocated.
    shared: Option<Arc<Mutex<Shared>>>,
}

struct Shared {
    /// What the client has not sent (or the proxy not read) yet.
    rest: Option<ProxyBody>,
    /// Everything read so far, while it fits in `max`.
    chunks: Vec<Bytes>,
    trailers: Option<HeaderMap>,
    buffered: u64,
    max: u64,
    state: State,
    /// Whether any frame has been read from the client.
    read_any: bool,
    /// The attempt allowed to read: bodies of older attempts fail.
    current: u64,
    /// The current attempt's waker while it waits for the client.
    waiting: Option<Waker>,
    /// The client body's size hint: every attempt reports it, so each is
    /// framed the same way (Content-Length or chunked).
    hint: SizeHint,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Buffering while the client's body streams in.
    Reading,
    /// The whole body is buffered.
    Ended,
    /// Larger than `max`: streamed on without a copy.
    Overflowed,
    /// Reading the client's body failed.
    Failed,
}

/// Why a body cannot be replayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotReplayable {
    /// It grew past the buffer limit after part of it was sent.
    TooLarge,
    /// Reading it from the client failed.
    Failed,
}

impl Replay {
    /// Buffers at most `max` bytes of `body` for replay.
    pub fn new<B>(body: B, max: u64) -> Replay
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        if body.is_end_stream() {
            return Replay { shared: None };
        }
        let hint = body.size_hint();
        // A declared length over the limit will not fit: do not copy at all.
        let too_large = hint.exact().is_some_and(|len| len > max);
        let state = match too_large {
            true => State::Overflowed,
            false => State::Reading,
        };
        Replay {
            shared: Some(Arc::new(Mutex::new(Shared {
                rest: Some(body.map_err(Into::into).boxed_unsync()),
                chunks: Vec::new(),
                trailers: None,
                buffered: 0,
                max,
                state,
                read_any: false,
                current: 0,
                waiting: None,
                hint,
            }))),
        }
    }

    /// Whether another attempt could send the body in full.
    pub fn replayable(&self) -> Result<(), NotReplayable> {
        let Some(shared) = self.lock() else {
            return Ok(());
        };
        match shared.state {
            State::Reading | State::Ended => Ok(()),
            State::Overflowed if !shared.read_any => Ok(()),
            State::Overflowed => Err(NotReplayable::TooLarge),
            State::Failed => Err(NotReplayable::Failed),
        }
    }

    /// The body for the next attempt; any earlier attempt's body stops. Check
    /// [`Replay::replayable`] first: a body that is not sends what is left.
    pub fn attempt(&self) -> ProxyBody {
        let (Some(arc), Some(mut shared)) = (&self.shared, self.lock()) else {
            return empty();
        };
        shared.current += 1;
        if let Some(waker) = shared.waiting.take() {
            // The superseded attempt wakes to find out it is over.
            waker.wake();
        }
        if shared.state == State::Ended && shared.chunks.is_empty() && shared.trailers.is_none() {
            return empty();
        }
        AttemptBody {
            shared: arc.clone(),
            attempt: shared.current,
            position: 0,
            trailers_sent: false,
        }
        .boxed_unsync()
    }

    /// Bytes held for replay now.
    pub fn buffered(&self) -> u64 {
        self.lock().map_or(0, |shared| shared.buffered)
    }

    fn lock(&self) -> Option<MutexGuard<'_, Shared>> {
        Some(self.shared.as_ref()?.lock().expect("not poisoned"))
    }
}

/// One attempt's view of the body: the buffer from the start, then the client.
struct AttemptBody {
    shared: Arc<Mutex<Shared>>,
    attempt: u64,
    /// The next buffered chunk to send.
    position: usize,
    trailers_sent: bool,
}

impl Body for AttemptBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let mut guard = this.shared.lock().expect("not poisoned");
        let shared = &mut *guard;
        if shared.current != this.attempt {
            return Poll::Ready(Some(Err("request body superseded by a retry".into())));
        }
        if let Some(chunk) = shared.chunks.get(this.position) {
            this.position += 1;
            return Poll::Ready(Some(Ok(Frame::data(chunk.clone()))));
        }
        match shared.state {
            State::Ended => {
                let trailers = shared.trailers.clone().filter(|_| !this.trailers_sent);
                this.trailers_sent = true;
                return Poll::Ready(trailers.map(|t| Ok(Frame::trailers(t))));
            }
            State::Failed => {
                return Poll::Ready(Some(Err("the request body failed earlier".into())));
            }
            State::Reading | State::Overflowed => {}
        }
        let Some(rest) = shared.rest.as_mut() else {
            return Poll::Ready(None);
        };
        let frame = match Pin::new(rest).poll_frame(cx) {
            Poll::Pending => {
                shared.waiting = Some(cx.waker().clone());
                return Poll::Pending;
            }
            Poll::Ready(None) => {
                shared.rest = None;
                if shared.state == State::Reading {
                    shared.state = State::Ended;
                }
                // Trailers, if any, came as this attempt's last frame.
                this.trailers_sent = true;
                return Poll::Ready(None);
            }
            Poll::Ready(Some(Err(error))) => {
                shared.rest = None;
                shared.state = State::Failed;
                shared.chunks = Vec::new();
                return Poll::Ready(Some(Err(error)));
            }
            Poll::Ready(Some(Ok(frame))) => frame,
        };
        shared.read_any = true;
        if shared.state == State::Reading {
            if let Some(data) = frame.data_ref() {
                let len = data.len() as u64;
                if shared.buffered + len > shared.max {
                    shared.state = State::Overflowed;
                    shared.chunks = Vec::new();
                    shared.trailers = None;
                    shared.buffered = 0;
                } else {
                    shared.chunks.push(data.clone());
                    shared.buffered += len;
                }
            } else if let Some(trailers) = frame.trailers_ref() {
                shared.trailers = Some(trailers.clone());
            }
        }
        this.position = shared.chunks.len();
        if frame.is_trailers() {
            this.trailers_sent = true;
        }
        if shared
            .rest
            .as_ref()
            .is_some_and(|rest| rest.is_end_stream())
        {
            shared.rest = None;
            if shared.state == State::Reading {
                shared.state = State::Ended;
            }
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        let shared = self.shared.lock().expect("not poisoned");
        if shared.current != self.attempt || self.position < shared.chunks.len() {
            return false;
        }
        match shared.state {
            State::Ended => self.trailers_sent || shared.trailers.is_none(),
            State::Overflowed => shared.rest.is_none(),
            State::Reading | State::Failed => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        self.shared.lock().expect("not poisoned").hint
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures_util::StreamExt;
    use http_body_util::{BodyExt, Full, StreamBody};
    use tokio::sync::mpsc;

    use super::*;

    /// A body the test feeds frame by frame (unknown length, like chunked).
    fn channel() -> (
        mpsc::UnboundedSender<Result<Frame<Bytes>, BoxError>>,
        ProxyBody,
    ) {
        let (tx, rx) = mpsc::unbounded_channel();
        let stream = tokio_stream_from(rx);
        (tx, StreamBody::new(stream).boxed_unsync())
    }

    fn tokio_stream_from(
        mut rx: mpsc::UnboundedReceiver<Result<Frame<Bytes>, BoxError>>,
    ) -> impl futures_util::Stream<Item = Result<Frame<Bytes>, BoxError>> + Send {
        futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
    }

    fn data(s: &'static str) -> Result<Frame<Bytes>, BoxError> {
        Ok(Frame::data(Bytes::from_static(s.as_bytes())))
    }

    fn trailers() -> HeaderMap {
        let mut t = HeaderMap::new();
        t.insert("x-checksum", "abc".parse().unwrap());
        t
    }

    async fn read(body: ProxyBody) -> (Bytes, Option<HeaderMap>) {
        let collected = body.collect().await.unwrap();
        let trailers = collected.trailers().cloned();
        (collected.to_bytes(), trailers)
    }

    #[tokio::test]
    async fn a_streamed_body_is_replayed_with_its_trailers() {
        let (tx, body) = channel();
        let replay = Replay::new(body, 1024);
        tx.send(data("hello ")).unwrap();
        tx.send(data("world")).unwrap();
        tx.send(Ok(Frame::trailers(trailers()))).unwrap();
        drop(tx);
        assert_eq!(
            read(replay.attempt()).await,
            ("hello world".into(), Some(trailers()))
        );
        assert!(replay.replayable().is_ok());
        assert_eq!(
            read(replay.attempt()).await,
            ("hello world".into(), Some(trailers()))
        );
        assert_eq!(
            read(replay.attempt()).await,
            ("hello world".into(), Some(trailers()))
        );
    }

    #[tokio::test]
    async fn the_first_attempt_streams_before_the_body_is_complete() {
        let (tx, body) = channel();
        let replay = Replay::new(body, 1024);
        let mut first = replay.attempt();
        tx.send(data("a")).unwrap();
        let frame = first.frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), "a");
        // Abandoned mid-body: the next attempt replays "a", then reads on.
        let second = replay.attempt();
        assert!(first.frame().await.unwrap().is_err(), "superseded");
        tx.send(data("b")).unwrap();
        drop(tx);
        assert_eq!(read(second).await.0, "ab");
        assert_eq!(read(replay.attempt()).await.0, "ab");
    }

    #[tokio::test]
    async fn a_superseded_attempt_waiting_for_the_client_wakes_and_fails() {
        let (tx, body) = channel();
        let replay = Replay::new(body, 1024);
        let mut first = replay.attempt();
        let waiting = tokio::spawn(async move { first.frame().await.map(|f| f.is_err()) });
        tokio::time::sleep(Duration::from_millis(10)).await;
        let second = replay.attempt();
        let failed = tokio::time::timeout(Duration::from_secs(5), waiting).await;
        assert_eq!(failed.expect("woken").unwrap(), Some(true));
        tx.send(data("z")).unwrap();
        drop(tx);
        assert_eq!(read(second).await.0, "z");
    }

    #[tokio::test]
    async fn past_the_limit_the_body_streams_on_but_is_not_replayable() {
        let (tx, body) = channel();
        let replay = Replay::new(body, 4);
        tx.send(data("abc")).unwrap();
        tx.send(data("defg")).unwrap();
        tx.send(Ok(Frame::trailers(trailers()))).unwrap();
        drop(tx);
        assert_eq!(
            read(replay.attempt()).await,
            ("abcdefg".into(), Some(trailers()))
        );
        assert_eq!(replay.replayable(), Err(NotReplayable::TooLarge));
        assert_eq!(replay.buffered(), 0, "the buffer is freed");
    }

    #[tokio::test]
    async fn a_declared_length_over_the_limit_is_not_copied_but_can_go_once_unread() {
        let replay = Replay::new(Full::new(Bytes::from_static(b"0123456789")), 4);
        // Nothing read yet (say the connection was refused): still whole.
        assert!(replay.replayable().is_ok());
        let _unsent = replay.attempt();
        let body = replay.attempt();
        assert_eq!(body.size_hint().exact(), Some(10));
        assert_eq!(read(body).await.0, "0123456789");
        assert_eq!(replay.buffered(), 0);
        assert_eq!(replay.replayable(), Err(NotReplayable::TooLarge));
    }

    #[tokio::test]
    async fn a_body_that_fails_is_not_replayable() {
        let (tx, body) = channel();
        let replay = Replay::new(body, 1024);
        tx.send(data("a")).unwrap();
        tx.send(Err("client went away".into())).unwrap();
        assert!(replay.attempt().collect().await.is_err());
        assert_eq!(replay.replayable(), Err(NotReplayable::Failed));
    }

    #[tokio::test]
    async fn an_empty_body_is_replayed_as_empty() {
        let replay = Replay::new(http_body_util::Empty::<Bytes>::new(), 16);
        for _ in 0..2 {
            let body = replay.attempt();
            assert!(body.is_end_stream());
        }
        let s = futures_util::stream::iter([data("x")]).boxed();
        let replay = Replay::new(StreamBody::new(s), 16);
        let body = replay.attempt();
        assert!(!body.is_end_stream());
        assert_eq!(read(body).await.0, "x");
    }
}
