//! Trace context in request headers: W3C `traceparent`/`tracestate` and
//! Zipkin's B3, single (`b3`) and multi (`x-b3-*`) header forms, read and
//! written here. `traceparent` is four fixed-width hex fields and B3 much
//! the same; the OpenTelemetry SDK's propagator read it through a `Context`
//! (an allocation and a parse of `tracestate` on every request, ~2,900
//! instructions per request with context, BENCHMARKS.md "Tracing's cost"),
//! and the crate that carries a B3 codec (opentelemetry-zipkin) brings an
//! exporter and an HTTP client the proxy has no use for. `tracestate` is
//! passed on as it came and parsed (by the SDK's `TraceState`) only for a
//! sampled request, whose exported spans carry it.
//!
//! A request may carry both: the W3C context wins, and both are rewritten
//! for the next hop so that each names the proxy's span as the parent.

use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};

pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");
const B3: HeaderName = HeaderName::from_static("b3");
const B3_TRACE_ID: HeaderName = HeaderName::from_static("x-b3-traceid");
const B3_SPAN_ID: HeaderName = HeaderName::from_static("x-b3-spanid");
const B3_PARENT_SPAN_ID: HeaderName = HeaderName::from_static("x-b3-parentspanid");
const B3_SAMPLED: HeaderName = HeaderName::from_static("x-b3-sampled");
const B3_FLAGS: HeaderName = HeaderName::from_static("x-b3-flags");

/// Which header forms a request's context came in, so the next hop gets
/// the same ones (W3C is always written).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Formats {
    pub b3_single: bool,
    pub b3_multi: bool,
    /// The B3 trace id had 64 bits (16 hex digits): written back that way.
    pub b3_short_id: bool,
}

/// The context a request arrived with (a remote parent), if any valid one.
pub fn extract(headers: &HeaderMap) -> (Option<SpanContext>, Formats) {
    let mut formats = Formats::default();
    let present = Present::scan(headers);
    let b3 = present
        .b3
        .then(|| extract_b3(headers, &mut formats))
        .flatten();
    if present.traceparent {
        let parsed = headers
            .get(TRACEPARENT)
            .and_then(|value| parse_traceparent(value.as_bytes()));
        if let Some((trace_id, span_id, flags)) = parsed {
            // Only a sampled request's spans carry the state (exported);
            // an unsampled one passes the header on as it came.
            let state = match flags.is_sampled() {
                true => headers
                    .get(TRACESTATE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_default(),
                false => TraceState::default(),
            };
            let span = SpanContext::new(trace_id, span_id, flags, true, state);
            return (Some(span), formats);
        }
    }
    (b3, formats)
}

/// `traceparent` (W3C Trace Context, level 1): `VV-TRACEID-SPANID-FF`,
/// lowercase hex. Version `ff` is invalid; version 00 is exactly 55
/// characters; a later version may append fields after a dash, which are
/// ignored. All-zero ids are invalid; of the flags only "sampled" is kept.
fn parse_traceparent(value: &[u8]) -> Option<(TraceId, SpanId, TraceFlags)> {
    if value.len() < 55 || value[2] != b'-' || value[35] != b'-' || value[52] != b'-' {
        return None;
    }
    let version = hex_number(&value[..2])?;
    match version {
        0xff => return None,
        0 if value.len() != 55 => return None,
        _ if value.len() > 55 && value[55] != b'-' => return None,
        _ => {}
    }
    let trace_id = hex_number(&value[3..35])?;
    let span_id = hex_number(&value[36..52])?;
    let flags = hex_number(&value[53..55])?;
    if trace_id == 0 || span_id == 0 {
        return None;
    }
    Some((
        TraceId::from(trace_id),
        SpanId::from(span_id as u64),
        TraceFlags::new(flags as u8) & TraceFlags::SAMPLED,
    ))
}

/// Lowercase hex digits (at most 32) as a number; anything else is `None`.
fn hex_number(digits: &[u8]) -> Option<u128> {
    digits.iter().try_fold(0u128, |number, digit| {
        let value = match digit {
            b'0'..=b'9' => digit - b'0',
            b'a'..=b'f' => digit - b'a' + 10,
            _ => return None,
        };
        Some(number << 4 | u128::from(value))
    })
}

/// Writes `span` as the parent for the next hop, in W3C form and in the B3
/// forms the request came with (`parent`: the span the proxy's span is a
/// child of, for B3's parent id).
pub fn inject(headers: &mut HeaderMap, span: &SpanContext, parent: SpanId, formats: Formats) {
    headers.insert(TRACEPARENT, traceparent(span));
    if !(formats.b3_single || formats.b3_multi) {
        return;
    }
    let trace_id = span.trace_id().to_string();
    let trace_id = if formats.b3_short_id {
        trace_id[16..].to_string()
    } else {
        trace_id
    };
    let sampled = if span.is_sampled() { "1" } else { "0" };
    let set = |headers: &mut HeaderMap, name: HeaderName, value: String| {
        if let Ok(value) = HeaderValue::try_from(value) {
            headers.insert(name, value);
        }
    };
    if formats.b3_single {
        let mut value = format!("{trace_id}-{}-{sampled}", span.span_id());
        if parent != SpanId::INVALID {
            value = format!("{value}-{parent}");
        }
        set(headers, B3, value);
    }
    if formats.b3_multi {
        set(headers, B3_TRACE_ID, trace_id);
        set(headers, B3_SPAN_ID, span.span_id().to_string());
        set(headers, B3_SAMPLED, sampled.to_string());
        headers.remove(B3_FLAGS);
        match parent {
            SpanId::INVALID => headers.remove(B3_PARENT_SPAN_ID),
            parent => {
                set(headers, B3_PARENT_SPAN_ID, parent.to_string());
                None
            }
        };
    }
}

/// `traceparent` for `span`, written here rather than by the SDK's
/// propagator: that one also rewrites `tracestate` on every request (empty
/// when there is none, re-serialized when there is), where a proxy has
/// nothing to add and should pass the caller's on as it came; and it goes
/// through a `Context` and a formatted `String` per request.
fn traceparent(span: &SpanContext) -> HeaderValue {
    let mut out = [0u8; 55];
    out[..3].copy_from_slice(b"00-");
    hex_into(&mut out[3..35], &span.trace_id().to_bytes());
    out[35] = b'-';
    hex_into(&mut out[36..52], &span.span_id().to_bytes());
    out[52] = b'-';
    hex_into(&mut out[53..55], &[u8::from(span.is_sampled())]);
    HeaderValue::from_bytes(&out).expect("hex digits and dashes")
}

/// Two lowercase hex digits for every byte value: one lookup per byte where
/// splitting nibbles took two (every traced request writes 25 bytes).
const HEX_PAIRS: [[u8; 2]; 256] = {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut pairs = [[0u8; 2]; 256];
    let mut byte = 0;
    while byte < 256 {
        pairs[byte] = [DIGITS[byte >> 4], DIGITS[byte & 0xf]];
        byte += 1;
    }
    pairs
};

fn hex_into(out: &mut [u8], bytes: &[u8]) {
    for (pair, byte) in out.chunks_exact_mut(2).zip(bytes) {
        pair.copy_from_slice(&HEX_PAIRS[usize::from(*byte)]);
    }
}

/// The trace id a request carries (W3C, else B3), as 32 hex digits,
/// without building any context: for access logs when tracing is off.
pub fn trace_id_of(headers: &HeaderMap) -> Option<String> {
    let (span, _) = extract(headers);
    span.map(|span| span.trace_id().to_string())
}

/// Which context headers a request has, found in one pass over its header
/// names: most requests carry none, and comparing a few names costs less
/// than hashing each candidate name for a lookup (`traceparent`, `b3`,
/// `x-b3-traceid`), which a request without context would pay in full.
struct Present {
    traceparent: bool,
    b3: bool,
}

impl Present {
    fn scan(headers: &HeaderMap) -> Present {
        let mut present = Present {
            traceparent: false,
            b3: false,
        };
        for name in headers.keys() {
            let name = name.as_str();
            if name == TRACEPARENT.as_str() {
                present.traceparent = true;
            } else if name == B3.as_str() || name.starts_with("x-b3-") {
                present.b3 = true;
            }
        }
        present
    }
}

fn extract_b3(headers: &HeaderMap, formats: &mut Formats) -> Option<SpanContext> {
    if let Some(value) = headers.get(B3).and_then(|v| v.to_str().ok()) {
        formats.b3_single = true;
        let mut fields = value.split('-');
        let trace_id = fields.next()?;
        let span_id = fields.next()?;
        let sampled = fields.next();
        return b3_context(trace_id, span_id, sampled, formats);
    }
    let get = |name: &HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    let trace_id = get(&B3_TRACE_ID)?;
    formats.b3_multi = true;
    let span_id = get(&B3_SPAN_ID)?;
    let sampled = match get(&B3_FLAGS) {
        Some("1") => Some("d"),
        _ => get(&B3_SAMPLED),
    };
    b3_context(trace_id, span_id, sampled, formats)
}

fn b3_context(
    trace_id: &str,
    span_id: &str,
    sampled: Option<&str>,
    formats: &mut Formats,
) -> Option<SpanContext> {
    let hex = |s: &str| s.bytes().all(|b| b.is_ascii_hexdigit());
    if !(trace_id.len() == 16 || trace_id.len() == 32) || !hex(trace_id) {
        return None;
    }
    if span_id.len() != 16 || !hex(span_id) {
        return None;
    }
    formats.b3_short_id = trace_id.len() == 16;
    let trace_id = TraceId::from_hex(trace_id).ok()?;
    let span_id = SpanId::from_hex(span_id).ok()?;
    // "1", "true" or "d" (debug) sample; "0" does not; absent: not decided
    // upstream, so the proxy's sampler decides (treated as not sampled by
    // the parent-based sampler, as an unsampled parent).
    let flags = match sampled {
        Some("1" | "true" | "d") => TraceFlags::SAMPLED,
        _ => TraceFlags::default(),
    };
    let span = SpanContext::new(trace_id, span_id, flags, true, TraceState::default());
    span.is_valid().then_some(span)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    HeaderName::try_from(*k).unwrap(),
                    HeaderValue::try_from(*v).unwrap(),
                )
            })
            .collect()
    }

    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const PARENT: &str = "00f067aa0ba902b7";

    #[test]
    fn w3c_context_is_read_and_rewritten_with_the_new_parent() {
        let h = headers(&[
            ("traceparent", &format!("00-{TRACE}-{PARENT}-01")),
            ("tracestate", "vendor=opaque"),
        ]);
        let (span, formats) = extract(&h);
        let span = span.unwrap();
        assert_eq!(span.trace_id().to_string(), TRACE);
        assert_eq!(span.span_id().to_string(), PARENT);
        assert!(span.is_sampled() && span.is_remote());
        assert_eq!(formats, Formats::default());

        let child_id = SpanId::from_hex("1111111111111111").unwrap();
        let child = SpanContext::new(
            span.trace_id(),
            child_id,
            span.trace_flags(),
            false,
            span.trace_state().clone(),
        );
        let mut out = h.clone();
        inject(&mut out, &child, span.span_id(), formats);
        assert_eq!(
            out["traceparent"],
            format!("00-{TRACE}-1111111111111111-01")
        );
        assert_eq!(out["tracestate"], "vendor=opaque");
        assert!(!out.contains_key("b3"));
    }

    #[test]
    fn b3_single_and_multi_are_read_and_written_back_in_their_form() {
        for h in [
            headers(&[("b3", &format!("{TRACE}-{PARENT}-1"))]),
            headers(&[
                ("x-b3-traceid", TRACE),
                ("x-b3-spanid", PARENT),
                ("x-b3-sampled", "1"),
            ]),
        ] {
            let (span, formats) = extract(&h);
            let span = span.unwrap();
            assert_eq!(span.trace_id().to_string(), TRACE);
            assert!(span.is_sampled());
            let child = SpanContext::new(
                span.trace_id(),
                SpanId::from_hex("2222222222222222").unwrap(),
                span.trace_flags(),
                false,
                TraceState::default(),
            );
            let mut out = h.clone();
            inject(&mut out, &child, span.span_id(), formats);
            assert_eq!(
                out["traceparent"],
                format!("00-{TRACE}-2222222222222222-01")
            );
            if formats.b3_single {
                assert_eq!(out["b3"], format!("{TRACE}-2222222222222222-1-{PARENT}"));
            } else {
                assert_eq!(out["x-b3-spanid"], "2222222222222222");
                assert_eq!(out["x-b3-parentspanid"], PARENT);
                assert_eq!(out["x-b3-traceid"], TRACE);
            }
        }
    }

    #[test]
    fn short_b3_trace_ids_stay_short_and_w3c_wins_over_b3() {
        let h = headers(&[("b3", &format!("{}-{PARENT}-0", &TRACE[16..]))]);
        let (span, formats) = extract(&h);
        let span = span.unwrap();
        assert!(formats.b3_short_id && !span.is_sampled());
        assert_eq!(
            span.trace_id().to_string(),
            format!("0000000000000000{}", &TRACE[16..])
        );
        let mut out = h.clone();
        inject(&mut out, &span, SpanId::INVALID, formats);
        assert_eq!(out["b3"], format!("{}-{PARENT}-0", &TRACE[16..]));

        let both = headers(&[
            ("traceparent", &format!("00-{TRACE}-{PARENT}-01")),
            ("b3", "0000000000000001-0000000000000002-1"),
        ]);
        assert_eq!(extract(&both).0.unwrap().trace_id().to_string(), TRACE);
    }

    #[test]
    fn malformed_contexts_are_ignored() {
        for h in [
            headers(&[("traceparent", "00-zz-00f067aa0ba902b7-01")]),
            headers(&[("traceparent", &format!("00-{}-{PARENT}-01", "0".repeat(32)))]),
            headers(&[("b3", "1")]),
            headers(&[("b3", "abc-def")]),
            headers(&[("x-b3-traceid", TRACE)]),
            headers(&[("x-b3-traceid", TRACE), ("x-b3-spanid", "0000000000000000")]),
        ] {
            assert!(extract(&h).0.is_none(), "{h:?}");
        }
        assert_eq!(trace_id_of(&HeaderMap::new()), None);
    }

    #[test]
    fn traceparent_follows_the_w3c_rules() {
        let read = |value: &str| {
            extract(&headers(&[("traceparent", value)])).0.map(|span| {
                (
                    span.trace_id().to_string(),
                    span.span_id().to_string(),
                    span.is_sampled(),
                )
            })
        };
        let ours = Some((TRACE.to_string(), PARENT.to_string(), true));
        assert_eq!(read(&format!("00-{TRACE}-{PARENT}-01")), ours);
        // Flags other than "sampled" are not ours to act on.
        assert_eq!(read(&format!("00-{TRACE}-{PARENT}-03")), ours);
        assert_eq!(
            read(&format!("00-{TRACE}-{PARENT}-00")),
            Some((TRACE.to_string(), PARENT.to_string(), false))
        );
        // A later version may add fields; they are ignored.
        assert_eq!(read(&format!("01-{TRACE}-{PARENT}-01-what-comes")), ours);
        assert_eq!(read(&format!("01-{TRACE}-{PARENT}-01")), ours);
        for invalid in [
            format!("ff-{TRACE}-{PARENT}-01"),
            format!("00-{TRACE}-{PARENT}-01-more"),
            format!("01-{TRACE}-{PARENT}-01x"),
            format!("00-{}-{PARENT}-01", TRACE.to_uppercase()),
            format!("00-{TRACE}-{}-01", "0".repeat(16)),
            format!("00-{TRACE}-{PARENT}-1"),
            format!("00-{TRACE}-{PARENT}-0g"),
            format!("0-{TRACE}-{PARENT}-01"),
            format!("00_{TRACE}-{PARENT}-01"),
            String::new(),
        ] {
            assert_eq!(read(&invalid), None, "{invalid}");
        }
    }

    #[test]
    fn tracestate_is_read_for_sampled_contexts_only() {
        let state = |flags: &str| {
            let h = headers(&[
                ("traceparent", &format!("00-{TRACE}-{PARENT}-{flags}")),
                ("tracestate", "vendor=opaque,other=x"),
            ]);
            extract(&h).0.unwrap().trace_state().header()
        };
        assert_eq!(state("01"), "vendor=opaque,other=x");
        // Unsampled: the header goes on as it came; nothing reads it.
        assert_eq!(state("00"), "");
    }
}
