//! Protocol detection: reads a connection's first bytes, with a short timeout,
//! to tell HTTP/1.x, HTTP/2 with prior knowledge, and anything else (opaque TCP).

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

/// HTTP/2 client connection preface (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The longest request line we wait for before giving up on HTTP/1.
const MAX_REQUEST_LINE: usize = 8 * 1024;

/// The longest method we take for HTTP/1 (registered ones are far shorter).
const MAX_METHOD: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http1,
    Http2,
    Opaque,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http1 => "http1",
            Protocol::Http2 => "http2",
            Protocol::Opaque => "opaque",
        }
    }
}

/// Classification of the bytes seen so far.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Known(Protocol),
    NeedMore,
}

/// Reads until the protocol is known, the timeout passes (opaque), or the peer
/// closes. Returns the protocol and every byte read, to be replayed.
pub async fn detect<IO: AsyncRead + Unpin>(
    io: &mut IO,
    timeout: Duration,
) -> std::io::Result<(Protocol, Bytes)> {
    let mut buf = BytesMut::with_capacity(1024);
    let read_loop = async {
        loop {
            if io.read_buf(&mut buf).await? == 0 {
                return Ok::<_, std::io::Error>(Protocol::Opaque);
            }
            if let Verdict::Known(protocol) = classify(&buf) {
                return Ok(protocol);
            }
        }
    };
    let protocol = match tokio::time::timeout(timeout, read_loop).await {
        Ok(result) => result?,
        // A silent client (or a server-speaks-first protocol) is forwarded as TCP.
        Err(_elapsed) => Protocol::Opaque,
    };
    Ok((protocol, buf.freeze()))
}

fn classify(buf: &[u8]) -> Verdict {
    let preface_len = buf.len().min(H2_PREFACE.len());
    if buf[..preface_len] == H2_PREFACE[..preface_len] {
        return if buf.len() >= H2_PREFACE.len() {
            Verdict::Known(Protocol::Http2)
        } else {
            Verdict::NeedMore
        };
    }
    classify_http1(buf)
}

/// An HTTP/1 request line is `METHOD SP target SP HTTP/1.x CRLF`.
fn classify_http1(buf: &[u8]) -> Verdict {
    // A method is any token (RFC 9110 tchar): extension methods with digits
    // or punctuation are HTTP too, and the full request line decides below.
    let method_len = buf.iter().take_while(|b| is_tchar(**b)).count();
    // Too long a method is opaque whatever follows (found by fuzzing: it was
    // opaque only when read in pieces).
    if method_len > MAX_METHOD {
        return Verdict::Known(Protocol::Opaque);
    }
    if method_len == buf.len() {
        return Verdict::NeedMore;
    }
    if method_len == 0 || buf[method_len] != b' ' {
        return Verdict::Known(Protocol::Opaque);
    }
    // Judge only what a longer read could not change, so the verdict never
    // depends on how the bytes were segmented: a non-printable byte or an
    // over-long line is opaque whether or not the CRLF has arrived yet.
    let line_end = buf.windows(2).position(|w| w == b"\r\n");
    let line = &buf[..line_end.unwrap_or(buf.len())];
    let printable = line
        .iter()
        .enumerate()
        .all(|(i, b)| (0x20..0x7f).contains(b) || (*b == b'\r' && i + 1 == line.len()));
    if !printable || line.len() >= MAX_REQUEST_LINE {
        return Verdict::Known(Protocol::Opaque);
    }
    if line_end.is_none() {
        return Verdict::NeedMore;
    }
    if line.ends_with(b" HTTP/1.1") || line.ends_with(b" HTTP/1.0") {
        Verdict::Known(Protocol::Http1)
    } else {
        Verdict::Known(Protocol::Opaque)
    }
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_http1_request_lines() {
        assert_eq!(
            classify(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"),
            Verdict::Known(Protocol::Http1)
        );
        assert_eq!(
            classify(b"CONNECT a:443 HTTP/1.1\r\n"),
            Verdict::Known(Protocol::Http1)
        );
        assert_eq!(classify(b"GE"), Verdict::NeedMore);
        assert_eq!(classify(b"GET /long/pa"), Verdict::NeedMore);
        // Extension methods are tokens: digits and punctuation included.
        for method in ["M0X", "BASELINE-CONTROL", "X.Y!", "V2_SYNC"] {
            let line = format!("{method} / HTTP/1.1\r\n");
            assert_eq!(
                classify(line.as_bytes()),
                Verdict::Known(Protocol::Http1),
                "{method}"
            );
        }
    }

    #[test]
    fn classifies_http2_preface_incrementally() {
        assert_eq!(classify(b"PRI * HTTP/2.0\r\n"), Verdict::NeedMore);
        assert_eq!(classify(H2_PREFACE), Verdict::Known(Protocol::Http2));
    }

    #[test]
    fn other_protocols_are_opaque() {
        // A Redis inline-array command and a TLS ClientHello.
        assert_eq!(
            classify(b"*1\r\n$4\r\nPING\r\n"),
            Verdict::Known(Protocol::Opaque)
        );
        assert_eq!(
            classify(&[0x16, 0x03, 0x01, 0x02]),
            Verdict::Known(Protocol::Opaque)
        );
        assert_eq!(
            classify(b"HELLO there\r\n"),
            Verdict::Known(Protocol::Opaque)
        );
        assert_eq!(classify(b"PRX"), Verdict::NeedMore);
    }

    #[test]
    fn verdicts_do_not_depend_on_segmentation() {
        // Found while writing the fuzz target's segmentation property: a
        // control byte used to be opaque only while the CRLF had not
        // arrived, and HTTP/1 once it had.
        assert_eq!(classify(b"GET /\x01"), Verdict::Known(Protocol::Opaque));
        assert_eq!(
            classify(b"GET /\x01 HTTP/1.1\r\n"),
            Verdict::Known(Protocol::Opaque)
        );
        let mut long = b"GET /".to_vec();
        long.resize(MAX_REQUEST_LINE + 1, b'a');
        assert_eq!(classify(&long), Verdict::Known(Protocol::Opaque));
        long.extend_from_slice(b" HTTP/1.1\r\n");
        assert_eq!(classify(&long), Verdict::Known(Protocol::Opaque));
        assert_eq!(classify(b"GET / HTTP/1.1\r"), Verdict::NeedMore);
        let method = "M".repeat(MAX_METHOD + 1);
        assert_eq!(
            classify(format!("{method} / HTTP/1.1\r\n").as_bytes()),
            Verdict::Known(Protocol::Opaque)
        );
    }

    #[tokio::test]
    async fn silent_peer_times_out_as_opaque() {
        let (mut client, _server) = tokio::io::duplex(64);
        let (protocol, bytes) = detect(&mut client, Duration::from_millis(20))
            .await
            .unwrap();
        assert_eq!(protocol, Protocol::Opaque);
        assert!(bytes.is_empty());
    }

    #[tokio::test]
    async fn returns_all_bytes_read() {
        let (mut client, mut server) = tokio::io::duplex(64);
        use tokio::io::AsyncWriteExt;
        server.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        let (protocol, bytes) = detect(&mut client, Duration::from_secs(1)).await.unwrap();
        assert_eq!(protocol, Protocol::Http1);
        assert_eq!(&bytes[..], b"GET / HTTP/1.1\r\n");
    }
}
