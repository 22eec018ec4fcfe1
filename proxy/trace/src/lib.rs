//! Request tracing for the proxy, off unless an OTLP endpoint is configured:
//! trace context read from and written to headers (`propagation`), the
//! spans the proxy makes for requests and their attempts (`spans`), and
//! their export to an OTLP/gRPC collector (`export`, encoding them with
//! `protobuf`).
#![forbid(unsafe_code)]

pub mod export;
pub mod propagation;
mod protobuf;
pub mod spans;

pub use opentelemetry::KeyValue;
pub use spans::{AttemptSpan, RequestTrace, Tracing, TracingConfig};
