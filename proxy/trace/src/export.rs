//! The OTLP/gRPC span exporter: the SDK's batch processor hands it finished
//! spans on the processor's own thread; they are encoded there
//! ([`crate::protobuf`]) and sent as one `TraceService/Export` call over an
//! HTTP/2 connection driven by a thread of the exporter's own (a
//! current-thread runtime). Nothing of the export runs on the proxy's
//! forwarding runtime, which the OTLP crate's client (tonic) did.
//!
//! One connection, opened when the first batch is ready and kept; a
//! connection the collector closed is replaced, and a call that failed on a
//! reused connection is tried once more on a new one. A batch that still
//! cannot be delivered is dropped (the SDK reports the error) and the
//! failure is logged once until exports succeed again: spans are never
//! queued beyond the batch processor's bounded queue.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use opentelemetry_sdk::Resource;
use tokio::sync::{mpsc, oneshot};

use crate::protobuf;

/// OTLP's default export timeout (`OTEL_EXPORTER_OTLP_TIMEOUT`).
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
/// OTLP/gRPC's port when the endpoint names none.
const DEFAULT_PORT: u16 = 4317;
/// The most of a collector's answer read.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// Sends spans to one OTLP/gRPC collector.
pub struct OtlpExporter {
    endpoint: String,
    /// The resource's attributes, encoded once.
    resource: Vec<u8>,
    schema_url: Option<String>,
    calls: mpsc::Sender<Call>,
}

impl fmt::Debug for OtlpExporter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OtlpExporter")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

/// One export for the connection's thread, and where its outcome goes.
struct Call {
    body: Bytes,
    done: oneshot::Sender<Result<(), String>>,
}

/// Where the collector is: `http://host[:port]`.
#[derive(Clone)]
struct Collector {
    host: String,
    port: u16,
    uri: Uri,
}

impl Collector {
    fn parse(endpoint: &str) -> Result<Collector, String> {
        let uri: Uri = endpoint
            .parse()
            .map_err(|err| format!("OTLP endpoint {endpoint:?}: {err}"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err(format!(
                    "OTLP endpoint {endpoint}: TLS to the collector is not supported; \
                     name a collector (or its node agent) over http://"
                ))
            }
            _ => {
                return Err(format!(
                    "OTLP endpoint {endpoint:?}: expected http://HOST[:PORT], such as \
                     http://otel-collector.observability:4317"
                ))
            }
        }
        let authority = uri
            .authority()
            .ok_or_else(|| format!("OTLP endpoint {endpoint:?}: no host"))?;
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let port = authority.port_u16().unwrap_or(DEFAULT_PORT);
        let uri = Uri::builder()
            .scheme("http")
            .authority(format!("{}:{port}", authority.host()))
            .path_and_query(EXPORT_PATH)
            .build()
            .map_err(|err| format!("OTLP endpoint {endpoint:?}: {err}"))?;
        Ok(Collector {
            host: host.to_string(),
            port,
            uri,
        })
    }
}

impl OtlpExporter {
    /// An exporter to `endpoint`, with the thread that holds its connection
    /// (it ends when the exporter is dropped).
    pub fn new(endpoint: &str) -> Result<OtlpExporter, String> {
        let collector = Collector::parse(endpoint)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(|err| format!("trace exporter runtime: {err}"))?;
        // The batch processor waits for each export: one call in flight,
        // one waiting, at most.
        let (calls, received) = mpsc::channel(2);
        std::thread::Builder::new()
            .name("outrigger-otlp".to_string())
            .spawn(move || runtime.block_on(serve(collector, received)))
            .map_err(|err| format!("trace exporter thread: {err}"))?;
        Ok(OtlpExporter {
            endpoint: endpoint.to_string(),
            resource: Vec::new(),
            schema_url: None,
            calls,
        })
    }
}

impl SpanExporter for OtlpExporter {
    fn export(
        &self,
        batch: Vec<SpanData>,
    ) -> impl std::future::Future<Output = OTelSdkResult> + Send {
        let body = Bytes::from(protobuf::export_request(
            &self.resource,
            self.schema_url.as_deref(),
            &batch,
        ));
        drop(batch);
        let calls = self.calls.clone();
        async move {
            let (done, outcome) = oneshot::channel();
            calls
                .send(Call { body, done })
                .await
                .map_err(|_| OTelSdkError::AlreadyShutdown)?;
            match outcome.await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(err)) => Err(OTelSdkError::InternalFailure(err)),
                Err(_) => Err(OTelSdkError::AlreadyShutdown),
            }
        }
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.resource = protobuf::resource(resource);
        self.schema_url = resource.schema_url().map(str::to_string);
    }
}

/// The connection's thread: each call in turn, under the export timeout.
async fn serve(collector: Collector, mut calls: mpsc::Receiver<Call>) {
    let mut connection = None;
    // Whether the last export failed: a failure is logged when it starts.
    let mut failing = false;
    while let Some(call) = calls.recv().await {
        let outcome = match tokio::time::timeout(
            EXPORT_TIMEOUT,
            send(&collector, &mut connection, call.body),
        )
        .await
        {
            Ok(outcome) => outcome,
            Err(_) => {
                connection = None;
                Err(format!("no answer in {EXPORT_TIMEOUT:?}"))
            }
        };
        match &outcome {
            Ok(()) => {
                if std::mem::replace(&mut failing, false) {
                    tracing::info!(collector = %collector.uri, "trace export works again");
                }
            }
            Err(err) => {
                if !std::mem::replace(&mut failing, true) {
                    tracing::warn!(
                        collector = %collector.uri,
                        error = %err,
                        "trace export failed; spans are dropped until it works again"
                    );
                }
            }
        }
        let _ = call.done.send(outcome);
    }
}

/// What went wrong with a call: the connection (worth one more try on a
/// new one, if it was reused) or the collector's answer (not).
enum Failure {
    Connection(String),
    Answer(String),
}

async fn send(
    collector: &Collector,
    connection: &mut Option<SendRequest<Full<Bytes>>>,
    body: Bytes,
) -> Result<(), String> {
    let reused = connection.as_ref().is_some_and(|c| !c.is_closed());
    if !reused {
        *connection = Some(connect(collector).await?);
    }
    let sender = connection.as_mut().expect("connected above");
    match call(collector, sender, body.clone()).await {
        Ok(()) => Ok(()),
        Err(Failure::Answer(err)) => Err(err),
        Err(Failure::Connection(err)) if !reused => {
            *connection = None;
            Err(err)
        }
        Err(Failure::Connection(_)) => {
            // The collector may have closed the connection while it was
            // idle (a restart, an idle timeout): once more on a new one.
            let mut fresh = connect(collector).await?;
            let outcome = call(collector, &mut fresh, body).await;
            *connection = Some(fresh);
            outcome.map_err(|failure| match failure {
                Failure::Connection(err) => {
                    *connection = None;
                    err
                }
                Failure::Answer(err) => err,
            })
        }
    }
}

async fn connect(collector: &Collector) -> Result<SendRequest<Full<Bytes>>, String> {
    let stream = tokio::time::timeout(
        CONNECT_TIMEOUT,
        tokio::net::TcpStream::connect((collector.host.as_str(), collector.port)),
    )
    .await
    .map_err(|_| format!("connecting: no answer in {CONNECT_TIMEOUT:?}"))?
    .map_err(|err| format!("connecting: {err}"))?;
    let _ = stream.set_nodelay(true);
    let (sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .map_err(|err| format!("HTTP/2 handshake: {err}"))?;
    tokio::spawn(async move {
        if let Err(err) = connection.await {
            tracing::debug!(error = %err, "trace export connection ended");
        }
    });
    Ok(sender)
}

async fn call(
    collector: &Collector,
    sender: &mut SendRequest<Full<Bytes>>,
    body: Bytes,
) -> Result<(), Failure> {
    sender
        .ready()
        .await
        .map_err(|err| Failure::Connection(err.to_string()))?;
    let request = Request::post(collector.uri.clone())
        .header(http::header::CONTENT_TYPE, "application/grpc")
        .header(http::header::TE, "trailers")
        .header("grpc-timeout", "10S")
        .header(http::header::USER_AGENT, "outrigger-proxy")
        .body(Full::new(body))
        .expect("a valid request");
    let response = sender
        .send_request(request)
        .await
        .map_err(|err| Failure::Connection(err.to_string()))?;
    let status = response.status();
    if status != http::StatusCode::OK {
        return Err(Failure::Answer(format!(
            "the collector answered HTTP {status}"
        )));
    }
    // A failed call is usually "trailers-only": the status in the headers.
    if let Some(outcome) = grpc_status(response.headers()) {
        return outcome.map_err(Failure::Answer);
    }
    // The answer is an ExportTraceServiceResponse (empty, or a partial
    // success with a message): a few bytes. More is not read.
    let collected = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
        .collect()
        .await
        .map_err(|err| Failure::Connection(format!("reading the collector's answer: {err}")))?;
    match collected.trailers().and_then(grpc_status) {
        Some(outcome) => outcome.map_err(Failure::Answer),
        None => Err(Failure::Answer(
            "the collector's answer ended without a gRPC status".to_string(),
        )),
    }
}

/// `grpc-status` (and `grpc-message`) in `headers`, if there.
fn grpc_status(headers: &HeaderMap) -> Option<Result<(), String>> {
    let status = headers.get("grpc-status")?;
    if status == "0" {
        return Some(Ok(()));
    }
    let message = headers
        .get("grpc-message")
        .and_then(|m| m.to_str().ok())
        .unwrap_or("");
    Some(Err(format!(
        "the collector answered gRPC status {}{}{}",
        status.to_str().unwrap_or("?"),
        if message.is_empty() { "" } else { ": " },
        message
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_http_with_a_host() {
        let collector = Collector::parse("http://otel-collector.observability:4318").unwrap();
        assert_eq!(
            (collector.host.as_str(), collector.port),
            ("otel-collector.observability", 4318)
        );
        assert_eq!(
            collector.uri.to_string(),
            "http://otel-collector.observability:4318/opentelemetry.proto.collector.trace.v1.TraceService/Export"
        );
        let collector = Collector::parse("http://collector").unwrap();
        assert_eq!(collector.port, 4317, "OTLP/gRPC's port by default");
        let collector = Collector::parse("http://[::1]:4317/").unwrap();
        assert_eq!(collector.host, "::1");
        assert_eq!(collector.uri.authority().unwrap().as_str(), "[::1]:4317");

        let https = Collector::parse("https://collector:4317").err().unwrap();
        assert!(
            https.contains("TLS to the collector is not supported"),
            "{https}"
        );
        let bare = Collector::parse("collector:4317").err().unwrap();
        assert!(bare.contains("expected http://HOST[:PORT]"), "{bare}");
        assert!(Collector::parse("http://").is_err());
        assert!(Collector::parse("not a uri").is_err());
    }

    #[test]
    fn grpc_status_reads_codes_and_messages() {
        let mut headers = HeaderMap::new();
        assert_eq!(grpc_status(&headers), None);
        headers.insert("grpc-status", "0".parse().unwrap());
        assert_eq!(grpc_status(&headers), Some(Ok(())));
        headers.insert("grpc-status", "14".parse().unwrap());
        headers.insert("grpc-message", "collector%20overloaded".parse().unwrap());
        assert_eq!(
            grpc_status(&headers),
            Some(Err(
                "the collector answered gRPC status 14: collector%20overloaded".to_string()
            ))
        );
    }
}
