//! The OTLP exporter against a collector over real loopback sockets: an
//! HTTP/2 gRPC server in the test (hyper), which records what it receives
//! and answers as a collector would, or refuses. (The proxy's tests in
//! proxy/tests/tracing.rs send spans to a real OTLP receiver, the protocol's
//! generated service on grpcio.)

use std::borrow::Cow;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body_util::{BodyExt, Either, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::InstrumentationScope;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanExporter, SpanLinks};
use outrigger_trace::export::OtlpExporter;
use prost::Message;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

/// How the test's collector answers.
#[derive(Clone, Copy)]
enum Answer {
    Ok,
    /// A gRPC failure with no message ("trailers-only").
    Refuse(u32),
    /// An answer far longer than any export response.
    Flood,
}

/// A collector on loopback: what it received (decoded), and its tasks
/// (stopping it closes its connections).
struct Collector {
    address: SocketAddr,
    received: Arc<Mutex<Vec<ExportTraceServiceRequest>>>,
    tasks: JoinSet<()>,
}

impl Collector {
    async fn start(address: SocketAddr, answer: Answer) -> Collector {
        let listener = TcpListener::bind(address).await.expect("bind");
        let address = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = JoinSet::new();
        let recorded = received.clone();
        tasks.spawn(async move {
            let mut connections = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let recorded = recorded.clone();
                let service = hyper::service::service_fn(move |request| {
                    handle(request, recorded.clone(), answer)
                });
                connections.spawn(async move {
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Collector {
            address,
            received,
            tasks,
        }
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.address)
    }

    fn spans(&self) -> Vec<String> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .flat_map(|request| &request.resource_spans)
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| &s.spans)
            .map(|span| span.name.clone())
            .collect()
    }

    /// Stops listening and closes every connection (a collector restart).
    async fn stop(mut self) -> SocketAddr {
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
        self.address
    }
}

type AnswerBody = Either<
    Full<Bytes>,
    StreamBody<futures_util::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, Infallible>>>>,
>;

async fn handle(
    request: Request<Incoming>,
    recorded: Arc<Mutex<Vec<ExportTraceServiceRequest>>>,
    answer: Answer,
) -> Result<Response<AnswerBody>, Infallible> {
    assert_eq!(
        request.uri().path(),
        "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
    );
    assert_eq!(request.headers()["content-type"], "application/grpc");
    let body = request.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body[0], 0, "uncompressed");
    let length = u32::from_be_bytes(body[1..5].try_into().unwrap()) as usize;
    assert_eq!(length, body.len() - 5);
    let message = ExportTraceServiceRequest::decode(&body[5..]).expect("protobuf");
    match answer {
        Answer::Ok => {
            recorded.lock().unwrap().push(message);
            let mut trailers = HeaderMap::new();
            trailers.insert("grpc-status", "0".parse().unwrap());
            // An empty ExportTraceServiceResponse, then the status.
            let frames = vec![
                Ok(Frame::data(Bytes::from_static(&[0, 0, 0, 0, 0]))),
                Ok(Frame::trailers(trailers)),
            ];
            Ok(Response::builder()
                .header("content-type", "application/grpc")
                .body(Either::Right(StreamBody::new(futures_util::stream::iter(
                    frames,
                ))))
                .unwrap())
        }
        Answer::Flood => Ok(Response::builder()
            .header("content-type", "application/grpc")
            .body(Either::Left(Full::new(Bytes::from(vec![0u8; 1 << 20]))))
            .unwrap()),
        Answer::Refuse(code) => Ok(Response::builder()
            .header("content-type", "application/grpc")
            .header("grpc-status", code.to_string())
            .header("grpc-message", "queue full")
            .body(Either::Left(Full::new(Bytes::new())))
            .unwrap()),
    }
}

fn span(name: &'static str) -> SpanData {
    let now = SystemTime::now();
    SpanData {
        span_context: SpanContext::new(
            TraceId::from(rand_id()),
            SpanId::from(7u64),
            TraceFlags::SAMPLED,
            false,
            TraceState::NONE,
        ),
        parent_span_id: SpanId::INVALID,
        parent_span_is_remote: false,
        span_kind: SpanKind::Server,
        name: Cow::Borrowed(name),
        start_time: now,
        end_time: now,
        attributes: Vec::new(),
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status: Status::Unset,
        instrumentation_scope: InstrumentationScope::builder("test").build(),
    }
}

fn rand_id() -> u128 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
        | 1
}

#[tokio::test]
async fn batches_reach_the_collector_and_one_after_a_restart_too() {
    let collector = Collector::start("127.0.0.1:0".parse().unwrap(), Answer::Ok).await;
    let exporter = OtlpExporter::new(&collector.endpoint()).unwrap();
    exporter
        .export(vec![span("first"), span("second")])
        .await
        .unwrap();
    exporter.export(vec![span("third")]).await.unwrap();
    assert_eq!(collector.spans(), ["first", "second", "third"]);

    // The collector restarts: the exporter's connection is gone, the next
    // batch goes over a new one.
    let address = collector.stop().await;
    let collector = Collector::start(address, Answer::Ok).await;
    exporter.export(vec![span("after restart")]).await.unwrap();
    assert_eq!(collector.spans(), ["after restart"]);
}

#[tokio::test]
async fn a_collector_that_refuses_is_an_error_and_the_next_batch_still_goes() {
    let refusing = Collector::start("127.0.0.1:0".parse().unwrap(), Answer::Refuse(8)).await;
    let exporter = OtlpExporter::new(&refusing.endpoint()).unwrap();
    let err = exporter.export(vec![span("refused")]).await.unwrap_err();
    assert!(
        err.to_string().contains("gRPC status 8: queue full"),
        "{err}"
    );
    let address = refusing.stop().await;
    let collector = Collector::start(address, Answer::Ok).await;
    exporter.export(vec![span("accepted")]).await.unwrap();
    assert_eq!(collector.spans(), ["accepted"]);
}

#[tokio::test]
async fn no_collector_listening_fails_the_export_at_once() {
    // A port nothing listens on: bound, then released.
    let address = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let exporter = OtlpExporter::new(&format!("http://{address}")).unwrap();
    let err = tokio::time::timeout(Duration::from_secs(5), exporter.export(vec![span("lost")]))
        .await
        .expect("fails well before the export timeout")
        .unwrap_err();
    assert!(err.to_string().contains("connecting"), "{err}");
}

#[tokio::test]
async fn an_answer_too_long_is_an_error_not_read_whole() {
    let flooding = Collector::start("127.0.0.1:0".parse().unwrap(), Answer::Flood).await;
    let exporter = OtlpExporter::new(&flooding.endpoint()).unwrap();
    let err = exporter.export(vec![span("flooded")]).await.unwrap_err();
    assert!(
        err.to_string().contains("reading the collector's answer"),
        "{err}"
    );
}
