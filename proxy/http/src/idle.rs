//! Telling when hyper's HTTP/1 server connection sits idle between requests,
//! so that its per-connection state (an 8 KiB read buffer, an 8 KiB
//! header-write buffer, the slot for the request future) can be dropped
//! while the client holds a keep-alive connection open and sends nothing.
//!
//! hyper does not say when it is idle, but it shows it: between requests it
//! waits for the next request head and arms its header-read timer for that
//! wait (and only for that wait), and it drops the timer once a head has
//! arrived. The timer is ours ([`HeadTimer`]), and so is the connection's
//! IO ([`IdleIo`]), which counts reads and remembers whether the last write
//! was refused (unflushed response bytes). hyper waiting for a head, with
//! nothing read since it started waiting and every write flushed, is idle:
//! closing it then (`graceful_shutdown`) ends it without any IO, and
//! `into_parts` hands back the socket to serve again on the next request.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What one client connection's IO and header timer have seen. Shared by the
/// IO and timer (inside hyper's connection) and the task serving it; all of
/// them run on that task, so relaxed ordering is enough.
#[derive(Debug)]
pub(crate) struct Activity {
    /// Reads that returned bytes.
    reads: AtomicU64,
    /// `reads` when hyper last started waiting for a request head.
    reads_when_armed: AtomicU64,
    /// Times hyper started waiting for a request head.
    arms: AtomicU64,
    /// Header timers alive: hyper is waiting for a head while this is > 0.
    waiting_for_head: AtomicUsize,
    /// The header-read deadline of the current wait, in ns after `base`.
    deadline_ns: AtomicU64,
    /// The last write returned `Pending`: hyper holds unflushed bytes.
    write_blocked: AtomicBool,
    /// The connection is being set aside: a shutdown must leave the socket open.
    parking: AtomicBool,
    /// Times the connection was set aside.
    set_asides: AtomicU64,
    base: Instant,
}

impl Activity {
    pub(crate) fn new() -> Self {
        Activity {
            reads: AtomicU64::new(0),
            reads_when_armed: AtomicU64::new(0),
            arms: AtomicU64::new(0),
            waiting_for_head: AtomicUsize::new(0),
            deadline_ns: AtomicU64::new(0),
            write_blocked: AtomicBool::new(false),
            parking: AtomicBool::new(false),
            set_asides: AtomicU64::new(0),
            base: Instant::now(),
        }
    }

    /// While hyper waits for a request head with nothing read and nothing
    /// left to write: which wait it is. The same wait seen at two checks a
    /// period apart means the connection was idle for the whole period.
    pub(crate) fn idle_wait(&self) -> Option<u64> {
        let idle = self.waiting_for_head.load(Relaxed) > 0
            && !self.write_blocked.load(Relaxed)
            && self.reads.load(Relaxed) == self.reads_when_armed.load(Relaxed);
        idle.then(|| self.arms.load(Relaxed))
    }

    /// When hyper would have closed the idle connection for sending no head.
    pub(crate) fn head_deadline(&self) -> Instant {
        self.base + Duration::from_nanos(self.deadline_ns.load(Relaxed))
    }

    pub(crate) fn count_set_aside(&self) {
        self.set_asides.fetch_add(1, Relaxed);
    }

    #[cfg(test)]
    pub(crate) fn set_asides(&self) -> u64 {
        self.set_asides.load(Relaxed)
    }

    pub(crate) fn set_parking(&self, parking: bool) {
        self.parking.store(parking, Relaxed);
    }

    fn armed(&self, deadline: Instant) {
        self.arms.store(self.arms.load(Relaxed) + 1, Relaxed);
        self.reads_when_armed
            .store(self.reads.load(Relaxed), Relaxed);
        self.waiting_for_head.fetch_add(1, Relaxed);
        let ns = deadline.saturating_duration_since(self.base).as_nanos();
        self.deadline_ns
            .store(u64::try_from(ns).unwrap_or(u64::MAX), Relaxed);
    }
}

/// hyper's header-read timer: a tokio sleep that also tells [`Activity`]
/// when hyper starts and stops waiting for a request head.
#[derive(Debug, Clone)]
pub(crate) struct HeadTimer(pub(crate) Arc<Activity>);

impl hyper::rt::Timer for HeadTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        self.sleep_until(Instant::now() + duration)
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        self.0.armed(deadline);
        Box::pin(HeadWait {
            sleep: tokio::time::sleep_until(deadline.into()),
            _waiting: Waiting(self.0.clone()),
        })
    }
}

pin_project_lite::pin_project! {
    struct HeadWait {
        #[pin]
        sleep: tokio::time::Sleep,
        _waiting: Waiting,
    }
}

impl std::future::Future for HeadWait {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.project().sleep.poll(cx)
    }
}

impl hyper::rt::Sleep for HeadWait {}

/// Counts one wait for a head while it lives.
struct Waiting(Arc<Activity>);

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.waiting_for_head.fetch_sub(1, Relaxed);
    }
}

/// The client connection as hyper sees it: replays bytes read while it was
/// set aside, records reads and refused writes in [`Activity`], and leaves
/// the socket open when hyper shuts it down to set the connection aside.
pub(crate) struct IdleIo<IO> {
    replay: Bytes,
    io: IO,
    activity: Arc<Activity>,
}

impl<IO> IdleIo<IO> {
    pub(crate) fn new(io: IO, activity: Arc<Activity>) -> Self {
        IdleIo {
            replay: Bytes::new(),
            io,
            activity,
        }
    }

    /// Bytes to hand to the next reader before the socket's own.
    pub(crate) fn replay(&mut self, bytes: Bytes) {
        debug_assert!(self.replay.is_empty());
        self.replay = bytes;
    }

    fn count_read(&self) {
        let reads = &self.activity.reads;
        reads.store(reads.load(Relaxed) + 1, Relaxed);
    }

    fn record_write<T>(&self, result: Poll<T>) -> Poll<T> {
        self.activity
            .write_blocked
            .store(result.is_pending(), Relaxed);
        result
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for IdleIo<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.replay.is_empty() {
            let n = self.replay.len().min(buf.remaining());
            buf.put_slice(&self.replay[..n]);
            self.replay.advance(n);
            if self.replay.is_empty() {
                // Release the allocation, not just the bytes.
                self.replay = Bytes::new();
            }
            self.count_read();
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let result = Pin::new(&mut self.io).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.count_read();
        }
        result
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for IdleIo<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.io).poll_write(cx, buf);
        self.record_write(result)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.record_write(result)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.activity.parking.load(Relaxed) {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Waits for the next bytes of a connection set aside: `None` when the
/// client closed it, it failed, or nothing came before `deadline`.
pub(crate) async fn next_bytes<IO: AsyncRead + Unpin>(
    io: &mut IdleIo<IO>,
    deadline: Instant,
) -> Option<Bytes> {
    let read = std::future::poll_fn(|cx| {
        // On the stack for this poll only: a connection waiting here holds
        // no buffer.
        let mut space = [0u8; 1024];
        let mut buf = ReadBuf::new(&mut space);
        Pin::new(&mut *io)
            .poll_read(cx, &mut buf)
            .map_ok(|()| Bytes::copy_from_slice(buf.filled()))
    });
    match tokio::time::timeout_at(deadline.into(), read).await {
        Ok(Ok(bytes)) if !bytes.is_empty() => Some(bytes),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::rt::Timer;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_wait_for_a_head_with_nothing_read_is_idle_until_bytes_come() {
        let activity = Arc::new(Activity::new());
        let (client, server) = tokio::io::duplex(64);
        let mut io = IdleIo::new(server, activity.clone());
        assert_eq!(activity.idle_wait(), None, "not waiting for a head");
        let timer = HeadTimer(activity.clone());
        let wait = timer.sleep(Duration::from_secs(10));
        let first = activity.idle_wait();
        assert!(first.is_some());
        assert_eq!(activity.idle_wait(), first, "the same wait");

        let mut client = client;
        client.write_all(b"GET").await.unwrap();
        let mut buf = [0u8; 8];
        assert_eq!(io.read(&mut buf).await.unwrap(), 3);
        assert_eq!(activity.idle_wait(), None, "a partial head was read");
        drop(wait);
        assert_eq!(activity.waiting_for_head.load(Relaxed), 0);
    }

    #[tokio::test]
    async fn replayed_bytes_come_first_and_parking_keeps_the_socket_open() {
        let activity = Arc::new(Activity::new());
        let (mut client, server) = tokio::io::duplex(64);
        let mut io = IdleIo::new(server, activity.clone());
        io.replay(Bytes::from_static(b"GET "));
        client.write_all(b"/ HTTP/1.1").await.unwrap();
        let mut got = vec![0u8; 14];
        io.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"GET / HTTP/1.1");

        activity.set_parking(true);
        io.shutdown().await.unwrap();
        io.write_all(b"still open").await.unwrap();
        let mut echoed = vec![0u8; 10];
        client.read_exact(&mut echoed).await.unwrap();
        assert_eq!(&echoed, b"still open");
    }
}
