//! Property-based fuzzing of what the proxy reads from the network before any
//! policy applies: protocol detection and the control-plane stream decoder.
//! Bounded case counts in CI (`PROPTEST_CASES` raises them); failures found are
//! saved under proptest-regressions/ and replayed first.

use std::time::Duration;

use outrigger_control::LineDecoder;
use outrigger_transport::detect::{detect, Protocol};
use proptest::prelude::*;
use tokio::io::AsyncWriteExt;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

proptest! {
    /// Any first bytes, in any chunking: a verdict, every byte kept for replay.
    #[test]
    fn detection_keeps_every_byte(data in proptest::collection::vec(any::<u8>(), 0..2048), split in 0usize..2048) {
        let (protocol, replay) = runtime().block_on(async {
            let (mut client, mut server) = tokio::io::duplex(4096);
            let split = split.min(data.len());
            server.write_all(&data[..split]).await.unwrap();
            let rest = data[split..].to_vec();
            tokio::spawn(async move {
                let _ = server.write_all(&rest).await;
                // Keep the peer open: detection must decide on bytes or time.
                tokio::time::sleep(Duration::from_secs(60)).await;
            });
            detect(&mut client, Duration::from_millis(5)).await.unwrap()
        });
        prop_assert!(data.starts_with(&replay));
        if protocol == Protocol::Http2 {
            prop_assert!(data.starts_with(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"));
        }
    }

    /// Request lines that are valid HTTP/1.1 are recognised whatever follows.
    #[test]
    fn http1_request_lines_are_recognised(method in "[A-Z]{1,10}", path in "/[!-~]{0,40}", tail in proptest::collection::vec(any::<u8>(), 0..64)) {
        let mut data = format!("{method} {path} HTTP/1.1\r\n").into_bytes();
        data.extend(tail);
        let protocol = runtime().block_on(async {
            let (mut client, mut server) = tokio::io::duplex(4096);
            server.write_all(&data).await.unwrap();
            detect(&mut client, Duration::from_millis(100)).await.unwrap().0
        });
        prop_assert_eq!(protocol, Protocol::Http1);
    }

    /// Any bytes in any chunks: the decoder never panics, and chunking does
    /// not change what it decodes.
    #[test]
    fn stream_decoder_is_chunking_independent(data in proptest::collection::vec(any::<u8>(), 0..4096), chunk in 1usize..512) {
        let whole = LineDecoder::default().push(&data);
        let mut decoder = LineDecoder::default();
        let mut pieces = Vec::new();
        for part in data.chunks(chunk) {
            pieces.extend(decoder.push(part));
        }
        prop_assert_eq!(format!("{whole:?}"), format!("{pieces:?}"));
    }

    /// Valid messages survive arbitrary surrounding noise lines.
    #[test]
    fn valid_lines_decode_among_garbage(noise in "[^\n]{0,64}", version in any::<u64>()) {
        let line = format!("{noise}\n{{\"type\":\"heartbeat\",\"version\":{version}}}\n");
        let decoded = LineDecoder::default().push(line.as_bytes());
        let expected = outrigger_api::stream::StreamMessage::Heartbeat { version };
        let found = decoded.iter().any(|m| m.as_ref().ok() == Some(&expected));
        prop_assert!(found);
    }
}
