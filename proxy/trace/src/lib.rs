//! Request tracing for the proxy, off unless an OTLP endpoint is configured:
//! trace context read from and written to headers (`propagation`), and the
//! spans the proxy makes for requests and their attempts (`spans`).
#![forbid(unsafe_code)]

pub mod propagation;
pub mod spans;

pub use opentelemetry::KeyValue;
pub use spans::{AttemptSpan, RequestTrace, Tracing, TracingConfig};
