//! A client connection that counts the bytes it carries, so a tunnel's
//! traffic is accounted however it ends: `copy_bidirectional` reports its
//! totals only when both sides close cleanly, and a reset would lose them.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

pin_project_lite::pin_project! {
    pub struct CountedIo<T> {
        #[pin]
        inner: T,
        read: u64,
        written: u64,
    }
}

impl<T> CountedIo<T> {
    pub fn new(inner: T) -> Self {
        CountedIo {
            inner,
            read: 0,
            written: 0,
        }
    }

    /// Bytes read from and written to the wrapped connection so far.
    pub fn counts(&self) -> (u64, u64) {
        (self.read, self.written)
    }
}

impl<T: AsyncRead> AsyncRead for CountedIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let result = this.inner.poll_read(cx, buf);
        *this.read += (buf.filled().len() - before) as u64;
        result
    }
}

impl<T: AsyncWrite> AsyncWrite for CountedIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let result = this.inner.poll_write(cx, data);
        if let Poll::Ready(Ok(n)) = &result {
            *this.written += *n as u64;
        }
        result
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn counts_what_passed_even_when_the_peer_vanishes() {
        let (near, mut far) = tokio::io::duplex(64);
        let mut counted = CountedIo::new(near);
        far.write_all(b"hello").await.unwrap();
        let mut buf = [0u8; 5];
        counted.read_exact(&mut buf).await.unwrap();
        counted.write_all(b"abc").await.unwrap();
        drop(far);
        assert!(counted.write_all(&[0u8; 128]).await.is_err());
        assert_eq!(counted.counts(), (5, 3));
    }
}
