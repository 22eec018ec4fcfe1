//! The policy stream as a hostile or broken control plane might send it: any
//! bytes, in any chunks, decode to the same messages and errors, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use outrigger_control::LineDecoder;

fuzz_target!(|input: &[u8]| {
    let Some((&chunk, data)) = input.split_first() else {
        return;
    };
    let whole = LineDecoder::default().push(data);
    let mut decoder = LineDecoder::default();
    let mut chunked = Vec::new();
    for piece in data.chunks(usize::from(chunk).max(1)) {
        chunked.extend(decoder.push(piece));
    }
    assert_eq!(whole, chunked);
    // What decodes re-encodes to a line that decodes to the same message.
    for message in whole.into_iter().flatten() {
        let mut line = serde_json::to_vec(&message).expect("a message serializes");
        line.push(b'\n');
        let again = LineDecoder::default().push(&line);
        assert_eq!(again, vec![Ok(message)]);
    }
});
