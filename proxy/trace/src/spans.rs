//! The proxy's spans: one per request (kind server: the proxy received it),
//! with a child per attempt (kind client: each went to one endpoint), and
//! what the resilience engine decided as events on the request's span:
//! retries, retries not sent and why, the circuit breaker refusing.
//!
//! Each attempt leaves with the trace context naming the attempt's span as
//! the parent, so the next proxy's (or the app's) spans hang under the
//! attempt that reached it. A request without a context starts a trace,
//! sampled at the configured ratio; one with a context keeps its sampling
//! decision (parent-based sampling). An unsampled request gets no span at
//! all (nothing is built, recorded or exported): a caller's context passes
//! on unchanged, and a request without one gets a trace id and a parent id
//! for the next hop.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

use http::{HeaderMap, Request};
use opentelemetry::trace::{
    Span as _, SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId,
    TraceState, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider, Span};
use opentelemetry_sdk::Resource;
use rand::rngs::SmallRng;
use rand::{RngCore, SeedableRng};

use crate::export::OtlpExporter;
use crate::propagation::{self, Formats};

/// How the proxy traces (`--trace-*` flags).
#[derive(Debug, Clone)]
pub struct TracingConfig {
    /// Where spans go: an OTLP/gRPC endpoint such as `http://collector:4317`.
    pub otlp_endpoint: String,
    /// The share of traces the proxy starts (requests that came without a
    /// context) that are sampled, 0.0 to 1.0.
    pub sampling: f64,
    /// `service.name` of the spans' resource.
    pub service_name: String,
    /// More resource attributes (the pod's name and namespace).
    pub resource: Vec<(String, String)>,
}

/// The proxy's tracer and its exporter. Spans are exported in batches from
/// the SDK's own thread, over a connection driven by the exporter's own
/// thread (nothing of it runs on the proxy's runtime), and a full queue
/// drops spans rather than holding memory. Clones share the exporter.
#[derive(Clone)]
pub struct Tracing {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
    /// The share of the traces the proxy starts that are sampled.
    sampling: f64,
}

impl Tracing {
    pub fn start(config: &TracingConfig) -> Result<Tracing, String> {
        let exporter = OtlpExporter::new(&config.otlp_endpoint)?;
        let resource = config
            .resource
            .iter()
            .fold(
                Resource::builder().with_service_name(config.service_name.clone()),
                |builder, (key, value)| {
                    builder.with_attribute(KeyValue::new(key.clone(), value.clone()))
                },
            )
            .build();
        // The proxy samples before it asks the SDK for a span (`request`):
        // the SDK records every span it is asked for.
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_sampler(Sampler::AlwaysOn)
            .with_resource(resource)
            .build();
        let tracer = provider.tracer("outrigger-proxy");
        Ok(Tracing {
            provider,
            tracer,
            sampling: config.sampling.clamp(0.0, 1.0),
        })
    }

    /// The span of a request just received, a child of the context its
    /// headers carry (if any). The sampling decision comes first: an
    /// unsampled request gets ids to pass on and nothing else (no span is
    /// built, nothing is exported), which is most requests at the default
    /// ratio (bench/tracing.sh, BENCHMARKS.md).
    /// `direction`: the listener's (`inbound`, `outbound`), an attribute of
    /// the span. What names the span is read from `request` only when it is
    /// sampled.
    pub fn request<B>(&self, request: &Request<B>, direction: &'static str) -> RequestTrace {
        let (parent, formats) = propagation::extract(request.headers());
        let sampled = match &parent {
            Some(parent) => parent.is_sampled(),
            None => self.sampling > 0.0 && sample(self.sampling),
        };
        if !sampled {
            // A caller's unsampled context goes on as it came: the proxy
            // records nothing, so the caller's span stays the parent (as
            // W3C lets a participant that does not record do), and the
            // headers need no rewriting. Without one, the proxy starts the
            // trace and names its ids.
            let (context, pass_on) = match parent {
                Some(parent) => (parent, true),
                None => (
                    SpanContext::new(
                        random_trace_id(),
                        random_span_id(),
                        TraceFlags::default(),
                        false,
                        TraceState::default(),
                    ),
                    false,
                ),
            };
            return RequestTrace {
                context,
                formats,
                pass_on,
                recorded: None,
            };
        }
        let cx = match parent {
            Some(parent) => Context::new().with_remote_span_context(parent),
            None => Context::new(),
        };
        let method = request.method().as_str();
        // The host as the client named it (never a metric label).
        let host = request
            .uri()
            .authority()
            .map(|a| a.as_str())
            .or_else(|| request.headers().get(http::header::HOST)?.to_str().ok())
            .unwrap_or("");
        let span = self
            .tracer
            .span_builder(format!("{method} {host}"))
            .with_kind(SpanKind::Server)
            .with_attributes([
                KeyValue::new("http.request.method", method.to_string()),
                KeyValue::new("url.path", request.uri().path().to_string()),
                KeyValue::new("server.address", host.to_string()),
                KeyValue::new("outrigger.direction", direction),
            ])
            .start_with_context(&self.tracer, &cx);
        RequestTrace {
            context: span.span_context().clone(),
            formats,
            pass_on: false,
            recorded: Some(Box::new(Recorded {
                tracer: self.tracer.clone(),
                span: Mutex::new(span),
                attempts: AtomicU32::new(0),
            })),
        }
    }

    /// Exports what is queued and stops the exporter (on the proxy's exit).
    pub fn shutdown(&self) {
        if let Err(err) = self.provider.shutdown() {
            tracing::debug!(error = %err, "trace exporter shutdown");
        }
    }
}

/// One request's span, shared by the attempts the engine makes for it (the
/// engine's calls take it as an argument).
pub struct RequestTrace {
    context: SpanContext,
    formats: Formats,
    /// Unsampled with the caller's context: the request's headers carry it
    /// on unchanged.
    pass_on: bool,
    /// Sampled: the span, and what its attempts' spans need. Boxed: an
    /// unsampled request's trace (most of them) stays a few words in the
    /// request's future.
    recorded: Option<Box<Recorded>>,
}

struct Recorded {
    tracer: SdkTracer,
    span: Mutex<Span>,
    attempts: AtomicU32,
}

thread_local! {
    /// Trace and span ids must be unique, not unpredictable (W3C trace
    /// context asks for randomness, not secrecy): a small fast generator
    /// per thread, seeded from the OS. rand's `ThreadRng` (ChaCha12) cost
    /// about 200 instructions for a request's two ids and its sampling
    /// draw, this about a quarter of that (bench/instructions.sh).
    static RANDOM: RefCell<SmallRng> = RefCell::new(SmallRng::from_os_rng());
}

fn random_u64() -> u64 {
    RANDOM.with(|rng| rng.borrow_mut().next_u64())
}

/// True with probability `ratio` (0.0 to 1.0).
fn sample(ratio: f64) -> bool {
    // 53 random bits as a float in [0, 1).
    ((random_u64() >> 11) as f64) * (1.0 / (1u64 << 53) as f64) < ratio
}

fn random_trace_id() -> TraceId {
    loop {
        let id = u128::from(random_u64()) << 64 | u128::from(random_u64());
        if id != 0 {
            return TraceId::from_bytes(id.to_be_bytes());
        }
    }
}

fn random_span_id() -> SpanId {
    loop {
        let id = random_u64();
        if id != 0 {
            return SpanId::from_bytes(id.to_be_bytes());
        }
    }
}

impl RequestTrace {
    /// The trace's id, 32 hex digits (for access logs).
    pub fn trace_id(&self) -> String {
        self.context.trace_id().to_string()
    }

    /// Whether this trace is sampled (its spans are recorded and exported).
    pub fn sampled(&self) -> bool {
        self.recorded.is_some()
    }

    /// Starts an attempt to `endpoint`: a child span, named in `headers` as
    /// the parent of whatever the attempt reaches.
    pub fn attempt(
        &self,
        headers: &mut HeaderMap,
        endpoint: &dyn std::fmt::Display,
    ) -> AttemptSpan {
        let Some(recorded) = &self.recorded else {
            if self.pass_on {
                return AttemptSpan { span: None };
            }
            let context = SpanContext::new(
                self.context.trace_id(),
                random_span_id(),
                self.context.trace_flags(),
                false,
                self.context.trace_state().clone(),
            );
            propagation::inject(headers, &context, self.context.span_id(), self.formats);
            return AttemptSpan { span: None };
        };
        let number = recorded.attempts.fetch_add(1, Ordering::Relaxed) + 1;
        let cx = Context::new().with_remote_span_context(self.context.clone());
        let span = recorded
            .tracer
            .span_builder("attempt")
            .with_kind(SpanKind::Client)
            .with_attributes([
                KeyValue::new("server.address", endpoint.to_string()),
                KeyValue::new("outrigger.attempt", i64::from(number)),
            ])
            .start_with_context(&recorded.tracer, &cx);
        propagation::inject(
            headers,
            span.span_context(),
            self.context.span_id(),
            self.formats,
        );
        AttemptSpan { span: Some(span) }
    }

    /// Records what the engine decided, as an event on the request's span.
    pub fn event(&self, name: &'static str, attributes: Vec<KeyValue>) {
        if let Some(recorded) = &self.recorded {
            let mut span = recorded.span.lock().expect("not poisoned");
            span.add_event(name, attributes);
        }
    }

    /// Ends the request's span with its response (`error`: the proxy's own
    /// answer, by its `x-outrigger-error` cause).
    /// `destination`: where the proxy sent it, as its metrics name it.
    pub fn finish(&self, status: u16, destination: &str, route: &str, error: Option<&str>) {
        let Some(recorded) = &self.recorded else {
            return;
        };
        let mut span = recorded.span.lock().expect("not poisoned");
        span.set_attribute(KeyValue::new(
            "http.response.status_code",
            i64::from(status),
        ));
        span.set_attribute(KeyValue::new(
            "outrigger.destination",
            destination.to_string(),
        ));
        span.set_attribute(KeyValue::new("outrigger.route", route.to_string()));
        if let Some(cause) = error {
            span.set_attribute(KeyValue::new("outrigger.error", cause.to_string()));
        }
        if status >= 500 {
            span.set_status(Status::error(error.unwrap_or("upstream 5xx").to_string()));
        }
        span.end();
    }
}

/// One attempt's span; ends when the attempt's outcome is known.
pub struct AttemptSpan {
    span: Option<Span>,
}

impl AttemptSpan {
    /// Ends the span: the response status, or what went wrong.
    pub fn finish(self, status: Option<u16>, error: Option<&str>) {
        let Some(mut span) = self.span else {
            return;
        };
        if let Some(status) = status {
            span.set_attribute(KeyValue::new(
                "http.response.status_code",
                i64::from(status),
            ));
        }
        if let Some(error) = error {
            span.set_attribute(KeyValue::new("error.type", error.to_string()));
            span.set_status(Status::error(error.to_string()));
        }
        span.end();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn sampling_draws_keep_to_the_ratio() {
        assert!((0..10_000).all(|_| !sample(0.0)));
        assert!((0..10_000).all(|_| sample(1.0)));
        let draws = 100_000;
        let hits = (0..draws).filter(|_| sample(0.25)).count();
        // 7 standard deviations either side.
        let share = hits as f64 / draws as f64;
        assert!((share - 0.25).abs() < 0.01, "{share}");
    }

    #[test]
    fn ids_are_never_zero_and_do_not_repeat() {
        let traces: HashSet<TraceId> = (0..10_000).map(|_| random_trace_id()).collect();
        let spans: HashSet<SpanId> = (0..10_000).map(|_| random_span_id()).collect();
        assert_eq!((traces.len(), spans.len()), (10_000, 10_000));
        assert!(!traces.contains(&TraceId::INVALID) && !spans.contains(&SpanId::INVALID));
        // Another thread's generator is seeded apart.
        let other: HashSet<TraceId> =
            std::thread::spawn(|| (0..10_000).map(|_| random_trace_id()).collect())
                .join()
                .unwrap();
        assert!(traces.is_disjoint(&other));
    }
}
