//! A connection's first bytes, cut into arbitrary reads: detection keeps
//! every byte it read for replay, and its verdict does not depend on how the
//! network happened to segment them.
#![no_main]

use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use outrigger_transport::detect::{detect, Protocol};
use tokio::io::{AsyncRead, ReadBuf};

/// Serves `data` in reads of at most `chunk` bytes, then end of stream.
struct Chunked<'a> {
    data: &'a [u8],
    chunk: usize,
}

impl AsyncRead for Chunked<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let n = self.chunk.min(self.data.len()).min(buf.remaining());
        buf.put_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Poll::Ready(Ok(()))
    }
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime")
    })
}

fn run(data: &[u8], chunk: usize) -> (Protocol, Vec<u8>) {
    runtime().block_on(async {
        let mut io = Chunked { data, chunk };
        // The stream ends, so the timeout never decides.
        let (protocol, replay) = detect(&mut io, Duration::from_secs(60))
            .await
            .expect("reading a slice cannot fail");
        (protocol, replay.to_vec())
    })
}

fuzz_target!(|input: &[u8]| {
    let Some((&chunk, data)) = input.split_first() else {
        return;
    };
    let (protocol, replay) = run(data, usize::from(chunk).max(1));
    assert!(data.starts_with(&replay), "replay must be what was read");
    match protocol {
        Protocol::Http2 => assert!(data.starts_with(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")),
        Protocol::Http1 => {
            let line_end = replay
                .windows(2)
                .position(|w| w == b"\r\n")
                .expect("a line");
            let line = &replay[..line_end];
            assert!(line.ends_with(b" HTTP/1.1") || line.ends_with(b" HTTP/1.0"));
        }
        Protocol::Opaque => {}
    }
    let (whole, _) = run(data, data.len().max(1));
    assert_eq!(protocol, whole, "segmentation changed the verdict");
});
