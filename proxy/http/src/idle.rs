//! Telling when hyper's HTTP/1 server connection sits idle between requests,
//! so that its per-connection state (an 8 KiB read buffer, an 8 KiB
//! header-write buffer, the slot for the request future) can be dropped
//! while the client holds a keep-alive connection open and sends nothing.
//!
//! hyper does not say when it is idle, but it shows it: between requests it
//! waits for the next request head and arms its header-read timer for that
//! wait (and only for that wait), and it drops the timer once a head has
//! arrived. The timer is ours ([`HeadTimer`]): besides the header-read
//! deadline it wakes once after `idle_after`, and if nothing has been read
//! since the wait began and every write was flushed (the connection's IO,
//! [`IdleIo`], counts reads and remembers refused writes), it flags the
//! connection idle. Closing it then (`graceful_shutdown`) ends it without any
//! IO, and `into_parts` hands back the socket to serve again on the next
//! request. Busy connections pay nothing for this but the timer's flag.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What one client connection's IO and header timer have seen. Shared by the
/// IO and timer (inside hyper's connection) and the task serving it; all of
/// them run on that task, so relaxed loads and stores are enough.
#[derive(Debug)]
pub(crate) struct Activity {
    /// Reads that returned bytes.
    reads: AtomicU64,
    /// `reads` when hyper last started waiting for a request head.
    reads_when_armed: AtomicU64,
    /// The header-read deadline of the current wait, in ns after `base`.
    deadline_ns: AtomicU64,
    /// The last write returned `Pending`: hyper holds unflushed bytes.
    write_blocked: AtomicBool,
    /// hyper has waited `idle_after` for a head with nothing read.
    idle: AtomicBool,
    /// The connection is being set aside: a shutdown must leave the socket open.
    parking: AtomicBool,
    /// Times the connection was set aside.
    set_asides: AtomicU64,
    idle_after: Duration,
    base: Instant,
}

impl Activity {
    /// Flags the connection idle once hyper has waited `idle_after` for a
    /// request head with nothing read and nothing left to write.
    pub(crate) fn new(idle_after: Duration) -> Self {
        Activity {
            reads: AtomicU64::new(0),
            reads_when_armed: AtomicU64::new(0),
            deadline_ns: AtomicU64::new(0),
            write_blocked: AtomicBool::new(false),
            idle: AtomicBool::new(false),
            parking: AtomicBool::new(false),
            set_asides: AtomicU64::new(0),
            idle_after,
            base: tokio::time::Instant::now().into_std(),
        }
    }

    /// Whether the connection was flagged idle since the last call.
    pub(crate) fn take_idle(&self) -> bool {
        self.idle.swap(false, Relaxed)
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
        self.reads_when_armed
            .store(self.reads.load(Relaxed), Relaxed);
        let ns = deadline.saturating_duration_since(self.base).as_nanos();
        self.deadline_ns
            .store(u64::try_from(ns).unwrap_or(u64::MAX), Relaxed);
    }

    /// hyper is still waiting for the head it armed the timer for.
    fn check_idle(&self) {
        if !self.write_blocked.load(Relaxed)
            && self.reads.load(Relaxed) == self.reads_when_armed.load(Relaxed)
        {
            self.idle.store(true, Relaxed);
        }
    }
}

/// hyper's header-read timer: a tokio sleep that also flags the connection
/// idle (see the module's doc).
#[derive(Debug, Clone)]
pub(crate) struct HeadTimer(pub(crate) Arc<Activity>);

impl hyper::rt::Timer for HeadTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        self.sleep_until(self.now() + duration)
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        self.0.armed(deadline);
        let deadline = tokio::time::Instant::from_std(deadline);
        let check = tokio::time::Instant::now() + self.0.idle_after;
        Box::pin(HeadWait {
            sleep: tokio::time::sleep_until(check.min(deadline)),
            deadline,
            checking: check < deadline,
            activity: self.0.clone(),
        })
    }

    // tokio's clock, which the sleeps run on (and tests can pause).
    fn now(&self) -> Instant {
        tokio::time::Instant::now().into_std()
    }
}

pin_project_lite::pin_project! {
    struct HeadWait {
        #[pin]
        sleep: tokio::time::Sleep,
        deadline: tokio::time::Instant,
        // The sleep ends at the idle check, not yet at the deadline.
        checking: bool,
        activity: Arc<Activity>,
    }
}

impl std::future::Future for HeadWait {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut this = self.project();
        loop {
            std::task::ready!(this.sleep.as_mut().poll(cx));
            if !*this.checking {
                return Poll::Ready(());
            }
            // Polled by hyper, so it still waits for this head.
            *this.checking = false;
            this.activity.check_idle();
            this.sleep.as_mut().reset(*this.deadline);
        }
    }
}

impl hyper::rt::Sleep for HeadWait {}

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

    #[tokio::test(start_paused = true)]
    async fn a_wait_for_a_head_with_nothing_read_is_flagged_idle() {
        let activity = Arc::new(Activity::new(Duration::from_secs(1)));
        let timer = HeadTimer(activity.clone());
        let wait = timer.sleep(Duration::from_secs(10));
        tokio::time::timeout(Duration::from_secs(2), wait)
            .await
            .unwrap_err();
        assert!(activity.take_idle());
        assert!(!activity.take_idle(), "taken");
    }

    #[tokio::test(start_paused = true)]
    async fn a_partial_head_is_not_idle_and_the_deadline_still_ends_the_wait() {
        let activity = Arc::new(Activity::new(Duration::from_secs(1)));
        let (mut client, server) = tokio::io::duplex(64);
        let mut io = IdleIo::new(server, activity.clone());
        let timer = HeadTimer(activity.clone());
        let started = tokio::time::Instant::now();
        let wait = timer.sleep(Duration::from_secs(10));
        client.write_all(b"GET").await.unwrap();
        let mut buf = [0u8; 8];
        assert_eq!(io.read(&mut buf).await.unwrap(), 3);
        wait.await;
        assert!(!activity.take_idle());
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_secs(10) && waited < Duration::from_millis(10_010),
            "{waited:?}"
        );
    }

    #[tokio::test]
    async fn replayed_bytes_come_first_and_parking_keeps_the_socket_open() {
        let activity = Arc::new(Activity::new(Duration::from_secs(1)));
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
