//! A client connection that counts the bytes it carries as they pass, so a
//! tunnel that stays open for days (a message broker's connection, a
//! WebSocket) shows its traffic while it lives, and one that ends in a reset
//! keeps what it carried: `copy_bidirectional` reports totals only at the end,
//! and only when both sides close cleanly.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use outrigger_proxy_core::metrics::TunnelBytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

pin_project_lite::pin_project! {
    pub struct CountedIo<T> {
        #[pin]
        inner: T,
        bytes: TunnelBytes,
    }
}

impl<T> CountedIo<T> {
    /// Wraps the client side of a tunnel: what is read from it is `sent`
    /// (towards the upstream), what is written to it `received`.
    pub fn new(inner: T, bytes: TunnelBytes) -> Self {
        CountedIo { inner, bytes }
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
        let read = buf.filled().len() - before;
        if read > 0 {
            this.bytes.sent.inc_by(read as u64);
        }
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
            this.bytes.received.inc_by(*n as u64);
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
    use outrigger_proxy_core::metrics::Metrics;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn counts_as_bytes_pass_and_keeps_them_when_the_peer_vanishes() {
        let metrics = Metrics::new(10);
        let bytes = metrics.tunnel_bytes("outbound", "broker:5672");
        let (near, mut far) = tokio::io::duplex(64);
        let mut counted = CountedIo::new(near, bytes.clone());
        far.write_all(b"hello").await.unwrap();
        let mut buf = [0u8; 5];
        counted.read_exact(&mut buf).await.unwrap();
        // Counted while the connection is still open.
        assert_eq!(bytes.sent.get(), 5);
        counted.write_all(b"abc").await.unwrap();
        assert_eq!(bytes.received.get(), 3);
        drop(far);
        assert!(counted.write_all(&[0u8; 128]).await.is_err());
        assert_eq!((bytes.sent.get(), bytes.received.get()), (5, 3));
    }
}
