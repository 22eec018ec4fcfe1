//! OTLP's trace export message (`ExportTraceServiceRequest`, from
//! opentelemetry/proto/collector/trace/v1 and trace/v1), written in
//! protobuf's wire format straight from the SDK's finished spans.
//!
//! Why not the OTLP crate's generated messages: it converts every batch into
//! owned copies of every span (grouped by resource and scope, each string
//! copied) and then encodes those, about 18,000 instructions for a request's
//! two spans, more than the proxy spends forwarding the request
//! (BENCHMARKS.md, "Tracing's cost"). Here the spans are read in place and
//! each field is written once; the tests decode the result with the
//! protocol's generated types.
//!
//! A nested message is preceded by its length: it is written after room for
//! a short length, which is filled in (or widened) once the message is
//! written, so every field is visited once. (Measuring each message first,
//! as generated code does, visits a field once per enclosing message: 6
//! times for a span's attributes, and that measuring cost as much as the
//! OTLP crate's conversion.)

use std::time::{SystemTime, UNIX_EPOCH};

use opentelemetry::trace::{SpanId, SpanKind, Status, TraceFlags, TraceState};
use opentelemetry::{Array, InstrumentationScope, KeyValue, Value};
use opentelemetry_sdk::trace::SpanData;
use opentelemetry_sdk::Resource;

/// Protobuf wire types.
const VARINT: u32 = 0;
const FIXED64: u32 = 1;
const LEN: u32 = 2;
const FIXED32: u32 = 5;

type Out = Vec<u8>;

fn varint(out: &mut Out, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn key(out: &mut Out, field: u32, wire_type: u32) {
    varint(out, u64::from(field << 3 | wire_type));
}

/// A length-delimited field, written even when empty (for `oneof` members
/// and identifiers).
fn bytes(out: &mut Out, field: u32, value: &[u8]) {
    key(out, field, LEN);
    varint(out, value.len() as u64);
    out.extend_from_slice(value);
}

/// A string field; proto3 leaves out the default (empty).
fn string(out: &mut Out, field: u32, value: &str) {
    if !value.is_empty() {
        bytes(out, field, value.as_bytes());
    }
}

/// An unsigned varint field (`uint32`, enums); zero is left out.
fn uint(out: &mut Out, field: u32, value: u64) {
    if value != 0 {
        key(out, field, VARINT);
        varint(out, value);
    }
}

fn fixed64(out: &mut Out, field: u32, value: u64) {
    key(out, field, FIXED64);
    out.extend_from_slice(&value.to_le_bytes());
}

fn fixed32(out: &mut Out, field: u32, value: u32) {
    key(out, field, FIXED32);
    out.extend_from_slice(&value.to_le_bytes());
}

/// A nested message, preceded by its length, in one pass: the body is
/// written after a one-byte length (enough below 128 bytes: attributes,
/// events), and moved along when its length needs more (spans, the batch).
fn message(out: &mut Out, field: u32, body: impl FnOnce(&mut Out)) {
    key(out, field, LEN);
    let at = out.len();
    out.push(0);
    body(out);
    let length = out.len() - at - 1;
    if length < 0x80 {
        out[at] = length as u8;
    } else {
        let mut prefix = Vec::with_capacity(10);
        varint(&mut prefix, length as u64);
        out.splice(at..at + 1, prefix);
    }
}

/// `Resource`'s fields (its attributes), written once when the exporter
/// learns the resource and then copied into every export.
pub fn resource(resource: &Resource) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in resource.iter() {
        message(&mut out, 1, |out| {
            string(out, 1, k.as_str());
            message(out, 2, |out| any_value(out, v));
        });
    }
    out
}

/// The body of a gRPC `TraceService/Export` call: the gRPC message prefix
/// (uncompressed, 4-byte length) and an `ExportTraceServiceRequest` with one
/// `ResourceSpans` (`resource`: from [`resource`]) holding `spans`, a
/// `ScopeSpans` for each run of spans from the same instrumentation scope.
pub fn export_request(resource: &[u8], schema_url: Option<&str>, spans: &[SpanData]) -> Vec<u8> {
    // About 400 bytes a span, the gRPC prefix first.
    let mut out = Vec::with_capacity(5 + 64 + resource.len() + 400 * spans.len());
    out.extend_from_slice(&[0u8; 5]);
    message(&mut out, 1, |out| {
        message(out, 1, |out| out.extend_from_slice(resource));
        for run in spans.chunk_by(|a, b| a.instrumentation_scope == b.instrumentation_scope) {
            message(out, 2, |out| {
                scope_spans(out, &run[0].instrumentation_scope, run)
            });
        }
        string(out, 3, schema_url.unwrap_or(""));
    });
    let length = u32::try_from(out.len() - 5).unwrap_or(u32::MAX);
    out[1..5].copy_from_slice(&length.to_be_bytes());
    out
}

fn scope_spans(out: &mut Out, scope: &InstrumentationScope, spans: &[SpanData]) {
    message(out, 1, |out| {
        string(out, 1, scope.name());
        string(out, 2, scope.version().unwrap_or(""));
        for kv in scope.attributes() {
            key_value(out, 3, kv);
        }
    });
    for span in spans {
        message(out, 2, |out| self::span(out, span));
    }
    string(out, 3, scope.schema_url().unwrap_or(""));
}

const FLAGS_HAS_IS_REMOTE: u32 = 0x100;
const FLAGS_IS_REMOTE: u32 = 0x200;

fn span(out: &mut Out, span: &SpanData) {
    let context = &span.span_context;
    bytes(out, 1, &context.trace_id().to_bytes());
    bytes(out, 2, &context.span_id().to_bytes());
    if context.trace_state() != &TraceState::NONE {
        string(out, 3, &context.trace_state().header());
    }
    if span.parent_span_id != SpanId::INVALID {
        bytes(out, 4, &span.parent_span_id.to_bytes());
    }
    string(out, 5, &span.name);
    uint(out, 6, kind(&span.span_kind));
    fixed64(out, 7, unix_nanos(span.start_time));
    fixed64(out, 8, unix_nanos(span.end_time));
    for kv in &span.attributes {
        key_value(out, 9, kv);
    }
    uint(out, 10, u64::from(span.dropped_attributes_count));
    for event in span.events.iter() {
        message(out, 11, |out| {
            fixed64(out, 1, unix_nanos(event.timestamp));
            string(out, 2, &event.name);
            for kv in &event.attributes {
                key_value(out, 3, kv);
            }
            uint(out, 4, u64::from(event.dropped_attributes_count));
        });
    }
    uint(out, 12, u64::from(span.events.dropped_count));
    for link in span.links.iter() {
        message(out, 13, |out| {
            let context = &link.span_context;
            bytes(out, 1, &context.trace_id().to_bytes());
            bytes(out, 2, &context.span_id().to_bytes());
            if context.trace_state() != &TraceState::NONE {
                string(out, 3, &context.trace_state().header());
            }
            for kv in &link.attributes {
                key_value(out, 4, kv);
            }
            uint(out, 5, u64::from(link.dropped_attributes_count));
            fixed32(out, 6, flags(context.trace_flags(), context.is_remote()));
        });
    }
    uint(out, 14, u64::from(span.links.dropped_count));
    match &span.status {
        Status::Unset => {}
        Status::Ok => message(out, 15, |out| uint(out, 3, 1)),
        Status::Error { description } => message(out, 15, |out| {
            string(out, 2, description);
            uint(out, 3, 2);
        }),
    }
    fixed32(
        out,
        16,
        flags(context.trace_flags(), span.parent_span_is_remote),
    );
}

/// `Span.flags` / `Link.flags`: the W3C trace flags in the low byte, then
/// whether remoteness is known (always, here) and whether it is remote.
fn flags(trace_flags: TraceFlags, remote: bool) -> u32 {
    let remote = if remote { FLAGS_IS_REMOTE } else { 0 };
    u32::from(trace_flags.to_u8()) | FLAGS_HAS_IS_REMOTE | remote
}

fn kind(kind: &SpanKind) -> u64 {
    match kind {
        SpanKind::Internal => 1,
        SpanKind::Server => 2,
        SpanKind::Client => 3,
        SpanKind::Producer => 4,
        SpanKind::Consumer => 5,
    }
}

fn unix_nanos(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |since| {
        u64::try_from(since.as_nanos()).unwrap_or(u64::MAX)
    })
}

fn key_value(out: &mut Out, field: u32, kv: &KeyValue) {
    message(out, field, |out| {
        string(out, 1, kv.key.as_str());
        message(out, 2, |out| any_value(out, &kv.value));
    });
}

/// `AnyValue`: a `oneof`, so the member is written even when it holds its
/// default (`false`, `0`, `""`).
fn any_value(out: &mut Out, value: &Value) {
    match value {
        Value::String(s) => bytes(out, 1, s.as_str().as_bytes()),
        Value::Bool(b) => {
            key(out, 2, VARINT);
            varint(out, u64::from(*b));
        }
        Value::I64(i) => {
            key(out, 3, VARINT);
            varint(out, *i as u64);
        }
        Value::F64(f) => {
            key(out, 4, FIXED64);
            out.extend_from_slice(&f.to_le_bytes());
        }
        Value::Array(array) => message(out, 5, |out| match array {
            Array::Bool(values) => elements(out, values, |b| Value::Bool(*b)),
            Array::I64(values) => elements(out, values, |i| Value::I64(*i)),
            Array::F64(values) => elements(out, values, |f| Value::F64(*f)),
            Array::String(values) => elements(out, values, |s| Value::String(s.clone())),
            _ => {}
        }),
        // A kind of value added to the API later: left out rather than
        // guessed at.
        _ => {}
    }
}

/// `ArrayValue.values`.
fn elements<T>(out: &mut Out, values: &[T], to_value: impl Fn(&T) -> Value) {
    for element in values {
        let value = to_value(element);
        message(out, 1, |out| any_value(out, &value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;
    use std::time::Duration;

    use opentelemetry::trace::{Event, Link, SpanContext, TraceId};
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::any_value;
    use opentelemetry_sdk::trace::{SpanEvents, SpanLinks};
    use prost::Message;

    fn context(trace: u128, span: u64, sampled: bool, state: &str) -> SpanContext {
        SpanContext::new(
            TraceId::from(trace),
            SpanId::from(span),
            if sampled {
                TraceFlags::SAMPLED
            } else {
                TraceFlags::default()
            },
            true,
            state.parse().expect("trace state"),
        )
    }

    fn span_data(name: &'static str, scope: &InstrumentationScope) -> SpanData {
        let start = UNIX_EPOCH + Duration::from_nanos(1_700_000_000_123_456_789);
        let mut events = SpanEvents::default();
        events.events.push(Event::new(
            "retry",
            start + Duration::from_millis(3),
            vec![
                KeyValue::new("reason", "5xx"),
                KeyValue::new("number", 2),
                KeyValue::new("delay_ms", 0.5),
                KeyValue::new("last", false),
            ],
            1,
        ));
        events.dropped_count = 3;
        let mut links = SpanLinks::default();
        links.links.push(Link::new(
            context(7, 8, false, "a=b"),
            vec![KeyValue::new("why", "")],
            0,
        ));
        SpanData {
            span_context: context(
                0x0102_0304_0506_0708_090a_0b0c_0d0e_0f10,
                0xaabb,
                true,
                "vendor=x,other=y",
            ),
            parent_span_id: SpanId::from(0xccdd),
            parent_span_is_remote: true,
            span_kind: SpanKind::Server,
            name: Cow::Borrowed(name),
            start_time: start,
            end_time: start + Duration::from_millis(12),
            attributes: vec![
                KeyValue::new("http.request.method", "GET"),
                KeyValue::new("http.response.status_code", 503),
                KeyValue::new("empty", ""),
                KeyValue::new("zero", 0),
                KeyValue::new("negative", -5),
                KeyValue::new(
                    "list",
                    Value::Array(Array::String(vec!["a".into(), "ü".into()])),
                ),
                KeyValue::new("flags", Value::Array(Array::Bool(vec![true, false]))),
            ],
            dropped_attributes_count: 2,
            events,
            links,
            status: Status::error("upstream 5xx"),
            instrumentation_scope: scope.clone(),
        }
    }

    fn decode(body: &[u8]) -> ExportTraceServiceRequest {
        assert_eq!(body[0], 0, "uncompressed");
        let length = u32::from_be_bytes(body[1..5].try_into().unwrap()) as usize;
        assert_eq!(
            length,
            body.len() - 5,
            "the gRPC prefix names the message's length"
        );
        ExportTraceServiceRequest::decode(&body[5..]).expect("a valid protobuf message")
    }

    fn string_value(
        value: &Option<opentelemetry_proto::tonic::common::v1::AnyValue>,
    ) -> Option<any_value::Value> {
        value.as_ref().and_then(|v| v.value.clone())
    }

    #[test]
    fn spans_decode_with_the_protocols_own_types() {
        let scope = InstrumentationScope::builder("outrigger-proxy")
            .with_version("0.1.0")
            .with_schema_url("https://opentelemetry.io/schemas/1.30.0")
            .with_attributes([KeyValue::new("scope.attr", true)])
            .build();
        let resource = Resource::builder_empty()
            .with_attributes([
                KeyValue::new("service.name", "checkout"),
                KeyValue::new("k8s.pod.name", "checkout-7d9f"),
            ])
            .build();
        let mut client = span_data("attempt", &scope);
        client.span_kind = SpanKind::Client;
        client.parent_span_is_remote = false;
        client.parent_span_id = SpanId::INVALID;
        client.status = Status::Ok;
        let spans = [span_data("GET checkout", &scope), client];
        let request = decode(&export_request(&super::resource(&resource), None, &spans));

        assert_eq!(request.resource_spans.len(), 1);
        let resource_spans = &request.resource_spans[0];
        let resource_attributes: Vec<_> = resource_spans
            .resource
            .as_ref()
            .expect("resource")
            .attributes
            .iter()
            .map(|kv| (kv.key.as_str(), string_value(&kv.value)))
            .collect();
        assert!(resource_attributes.contains(&(
            "service.name",
            Some(any_value::Value::StringValue("checkout".into()))
        )));
        assert_eq!(resource_attributes.len(), 2);
        assert_eq!(
            resource_spans.scope_spans.len(),
            1,
            "one scope, one ScopeSpans"
        );
        let scope_spans = &resource_spans.scope_spans[0];
        let decoded_scope = scope_spans.scope.as_ref().expect("scope");
        assert_eq!(decoded_scope.name, "outrigger-proxy");
        assert_eq!(decoded_scope.version, "0.1.0");
        assert_eq!(decoded_scope.attributes[0].key, "scope.attr");
        assert_eq!(
            scope_spans.schema_url,
            "https://opentelemetry.io/schemas/1.30.0"
        );
        assert_eq!(scope_spans.spans.len(), 2);

        let server = &scope_spans.spans[0];
        assert_eq!(server.trace_id, spans[0].span_context.trace_id().to_bytes());
        assert_eq!(server.span_id, 0xaabbu64.to_be_bytes());
        assert_eq!(server.parent_span_id, 0xccddu64.to_be_bytes());
        assert_eq!(server.trace_state, "vendor=x,other=y");
        assert_eq!(server.name, "GET checkout");
        assert_eq!(server.kind, 2);
        assert_eq!(server.start_time_unix_nano, 1_700_000_000_123_456_789);
        assert_eq!(server.end_time_unix_nano, 1_700_000_000_135_456_789);
        assert_eq!(server.flags, 0x01 | 0x100 | 0x200);
        assert_eq!(server.dropped_attributes_count, 2);
        let attributes: Vec<_> = server
            .attributes
            .iter()
            .map(|kv| (kv.key.as_str(), string_value(&kv.value)))
            .collect();
        use any_value::Value as V;
        assert_eq!(
            attributes[0],
            ("http.request.method", Some(V::StringValue("GET".into())))
        );
        assert_eq!(
            attributes[1],
            ("http.response.status_code", Some(V::IntValue(503)))
        );
        // Defaults inside the oneof are present, not absent.
        assert_eq!(
            attributes[2],
            ("empty", Some(V::StringValue(String::new())))
        );
        assert_eq!(attributes[3], ("zero", Some(V::IntValue(0))));
        assert_eq!(attributes[4], ("negative", Some(V::IntValue(-5))));
        let Some(V::ArrayValue(list)) = &attributes[5].1 else {
            panic!("an array: {:?}", attributes[5]);
        };
        let list: Vec<_> = list.values.iter().map(|v| v.value.clone()).collect();
        assert_eq!(
            list,
            [
                Some(V::StringValue("a".into())),
                Some(V::StringValue("ü".into()))
            ]
        );
        let Some(V::ArrayValue(flags)) = &attributes[6].1 else {
            panic!("an array: {:?}", attributes[6]);
        };
        assert_eq!(flags.values[1].value, Some(V::BoolValue(false)));

        assert_eq!(server.events.len(), 1);
        let event = &server.events[0];
        assert_eq!(event.name, "retry");
        assert_eq!(event.time_unix_nano, 1_700_000_000_126_456_789);
        assert_eq!(event.dropped_attributes_count, 1);
        let event_attributes: Vec<_> = event
            .attributes
            .iter()
            .map(|kv| string_value(&kv.value))
            .collect();
        assert_eq!(
            event_attributes,
            [
                Some(V::StringValue("5xx".into())),
                Some(V::IntValue(2)),
                Some(V::DoubleValue(0.5)),
                Some(V::BoolValue(false)),
            ]
        );
        assert_eq!(server.dropped_events_count, 3);
        assert_eq!(server.links.len(), 1);
        assert_eq!(server.links[0].trace_id, 7u128.to_be_bytes());
        assert_eq!(server.links[0].span_id, 8u64.to_be_bytes());
        assert_eq!(server.links[0].trace_state, "a=b");
        assert_eq!(server.links[0].flags, 0x100 | 0x200);
        let status = server.status.as_ref().expect("status");
        assert_eq!((status.code, status.message.as_str()), (2, "upstream 5xx"));

        let client = &scope_spans.spans[1];
        assert_eq!(client.kind, 3);
        assert!(client.parent_span_id.is_empty(), "a root has no parent id");
        assert_eq!(client.flags, 0x01 | 0x100);
        assert_eq!(client.status.as_ref().map(|s| s.code), Some(1));
    }

    #[test]
    fn spans_of_different_scopes_go_in_their_own_scope_spans() {
        let a = InstrumentationScope::builder("a").build();
        let b = InstrumentationScope::builder("b").build();
        let spans = [span_data("1", &a), span_data("2", &a), span_data("3", &b)];
        let request = decode(&export_request(
            &[],
            Some("https://example.invalid/schema"),
            &spans,
        ));
        let resource_spans = &request.resource_spans[0];
        assert_eq!(resource_spans.schema_url, "https://example.invalid/schema");
        let runs: Vec<_> = resource_spans
            .scope_spans
            .iter()
            .map(|s| {
                let names: Vec<_> = s.spans.iter().map(|span| span.name.as_str()).collect();
                (s.scope.as_ref().unwrap().name.as_str(), names)
            })
            .collect();
        assert_eq!(runs, [("a", vec!["1", "2"]), ("b", vec!["3"])]);
    }

    #[test]
    fn lengths_of_every_size_are_written_right() {
        // Attributes whose messages need a one-, two- and three-byte length,
        // in spans and a batch that do too.
        let scope = InstrumentationScope::builder("s").build();
        let sizes = [0usize, 1, 100, 127, 128, 200, 16_383, 16_384, 70_000];
        let spans: Vec<SpanData> = sizes
            .iter()
            .map(|&size| {
                let mut span = span_data("sized", &scope);
                span.attributes = vec![
                    KeyValue::new("big", "x".repeat(size)),
                    KeyValue::new("after", 1),
                ];
                span
            })
            .collect();
        let request = decode(&export_request(&[], None, &spans));
        let decoded = &request.resource_spans[0].scope_spans[0].spans;
        assert_eq!(decoded.len(), sizes.len());
        for (span, size) in decoded.iter().zip(sizes) {
            let Some(any_value::Value::StringValue(big)) = span.attributes[0]
                .value
                .as_ref()
                .and_then(|v| v.value.clone())
            else {
                panic!("a string");
            };
            assert_eq!(big.len(), size);
            assert_eq!(
                span.attributes[1].key, "after",
                "what follows a long field is intact"
            );
            assert_eq!(span.events[0].name, "retry");
        }
        for value in [
            0u64,
            1,
            127,
            128,
            16_383,
            16_384,
            u64::from(u32::MAX),
            u64::MAX,
        ] {
            let mut buffer = Vec::new();
            varint(&mut buffer, value);
            assert_eq!(
                prost::encoding::decode_varint(&mut &buffer[..]).unwrap(),
                value
            );
        }
    }

    #[test]
    fn an_empty_batch_is_a_valid_request() {
        let request = decode(&export_request(&[], None, &[]));
        assert_eq!(request.resource_spans.len(), 1);
        assert!(request.resource_spans[0].scope_spans.is_empty());
    }
}
