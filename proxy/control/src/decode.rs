//! Splitting the policy stream into messages: newline-delimited JSON, with a
//! cap on line length so a broken or hostile server cannot grow our buffer.

use bytes::{Buf, BytesMut};
use outrigger_api::stream::StreamMessage;

/// Longest line accepted (a snapshot with thousands of endpoints fits).
pub const MAX_LINE: usize = 8 * 1024 * 1024;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DecodeError {
    #[error("stream line longer than {MAX_LINE} bytes")]
    TooLong,
    #[error("malformed stream message: {0}")]
    Malformed(String),
}

#[derive(Default)]
pub struct LineDecoder {
    buffer: BytesMut,
}

impl LineDecoder {
    /// Adds bytes; returns every complete message (or error) they finish.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<Result<StreamMessage, DecodeError>> {
        self.buffer.extend_from_slice(bytes);
        let mut out = Vec::new();
        while let Some(end) = self.buffer.iter().position(|b| *b == b'\n') {
            let line = self.buffer.split_to(end);
            self.buffer.advance(1);
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            out.push(
                serde_json::from_slice(&line).map_err(|e| DecodeError::Malformed(e.to_string())),
            );
        }
        if self.buffer.len() > MAX_LINE {
            self.buffer.clear();
            out.push(Err(DecodeError::TooLong));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_lines_across_chunks() {
        let mut d = LineDecoder::default();
        assert!(d.push(br#"{"type":"heartbeat","#).is_empty());
        let out = d.push(b"\"version\":2}\n\n{\"type\":\"heartbeat\",\"version\":3}\nxx");
        assert_eq!(
            out,
            vec![
                Ok(StreamMessage::Heartbeat { version: 2 }),
                Ok(StreamMessage::Heartbeat { version: 3 })
            ]
        );
        let bad = d.push(b"\n");
        assert!(matches!(&bad[0], Err(DecodeError::Malformed(_))));
    }

    #[test]
    fn overlong_lines_are_refused() {
        let mut d = LineDecoder::default();
        let out = d.push(&vec![b'a'; MAX_LINE + 1]);
        assert_eq!(out, vec![Err(DecodeError::TooLong)]);
    }
}
