//! Request tracing through two real proxies, as between two meshed pods:
//! a caller's outbound proxy (A, with a retry policy) reaches the Service
//! `web` through web's inbound proxy (B), in front of the app. Both export
//! spans over OTLP/gRPC to a real receiver (tests/peers/otlp_receiver.py:
//! the OpenTelemetry protocol's own generated service on grpcio), and the
//! app echoes the headers it received, so the tests check the trace as a
//! tracing backend would assemble it: one trace id end to end, each span's
//! parent, the retry as an event, and the context the app finally got.
//! Simulated: the pods are processes on loopback, and the Service's
//! endpoint is B's inbound listener named in A's policy file.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use outrigger_e2e::proxy::*;
use outrigger_tools::fault_upstream::{Fault, FaultConfig, FaultUpstream};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

fn peer_script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/peers")
        .join(name)
}

/// The OTLP receiver and the spans it has printed so far.
struct Receiver {
    port: u16,
    spans: Arc<Mutex<Vec<Value>>>,
    _child: Child,
}

impl Receiver {
    async fn start() -> Receiver {
        let ok = std::process::Command::new("python3")
            .args(["-c", "import grpc, opentelemetry.proto"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        assert!(
            ok,
            "python3 with grpcio and opentelemetry-proto is needed: run `bash tests/setup.sh` (as root) first"
        );
        let mut child = Command::new("python3")
            .arg(peer_script("otlp_receiver.py"))
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = tokio::time::timeout(Duration::from_secs(15), lines.next_line())
            .await
            .expect("the OTLP receiver starts")
            .unwrap();
        let port = first
            .as_deref()
            .and_then(|l| l.strip_prefix("listening "))
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line {first:?}"));
        let spans = Arc::new(Mutex::new(Vec::new()));
        let collected = spans.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                let span: Value = serde_json::from_str(&line).expect("a JSON span");
                collected.lock().unwrap().push(span);
            }
        });
        Receiver {
            port,
            spans,
            _child: child,
        }
    }

    fn endpoint(&self) -> String {
        format!("--trace-otlp-endpoint=http://127.0.0.1:{}", self.port)
    }

    /// Waits until `count` spans of `trace` have arrived; returns them.
    async fn trace(&self, trace: &str, count: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let spans: Vec<Value> = self
                .spans
                .lock()
                .unwrap()
                .iter()
                .filter(|s| s["trace_id"] == trace)
                .cloned()
                .collect();
            if spans.len() >= count {
                assert_eq!(spans.len(), count, "{spans:#?}");
                return spans;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {count} spans of {trace} arrived: {spans:#?}",
                spans.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The two proxies and the app.
struct Mesh {
    app: FaultUpstream,
    a: ProxyProcess,
    b: ProxyProcess,
    _file: PolicyFile,
}

/// A's policy for `web`: retry 503s once.
const RETRY: &str = "  retry: {attempts: 1, codes: [503], backoff: {base: 1ms, max: 1ms}}\n";

async fn mesh(receiver: &Receiver, a_flags: &[&str]) -> Mesh {
    mesh_with(receiver, a_flags, RETRY).await
}

async fn mesh_with(receiver: &Receiver, a_flags: &[&str], spec: &str) -> Mesh {
    // Spans are exported in batches; a short delay keeps the test quick
    // (the SDK reads the standard variable; proxies inherit it).
    std::env::set_var("OTEL_BSP_SCHEDULE_DELAY", "100");
    let app = FaultUpstream::start(loopback(0), FaultConfig::default())
        .await
        .unwrap();
    let endpoint = receiver.endpoint();
    let b = ProxyProcess::start(&[
        &format!("--app-addr={}", app.addr),
        &endpoint,
        "--service-name=web",
        "--pod-name=web-0",
    ])
    .await;
    let file = PolicyFile::new(
        "tracing",
        &format!(
            "{}---\n{}",
            policy("web", spec),
            endpoint_slice("web", &[b.inbound.port()])
        ),
    );
    let mut flags = vec![
        file.flag(),
        endpoint.clone(),
        "--pod-name=caller-0".to_string(),
    ];
    flags.extend(a_flags.iter().map(|f| f.to_string()));
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let a = ProxyProcess::start(&flags).await;
    Mesh {
        app,
        a,
        b,
        _file: file,
    }
}

fn by_id(spans: &[Value]) -> HashMap<String, Value> {
    spans
        .iter()
        .map(|s| (s["span_id"].as_str().unwrap().to_string(), s.clone()))
        .collect()
}

fn pod(span: &Value) -> &str {
    span["resource"]["k8s.pod.name"].as_str().unwrap_or("")
}

/// The headers the app received, from its `/headers` answer.
fn app_headers(body: &[u8]) -> HashMap<String, String> {
    String::from_utf8_lossy(body)
        .lines()
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The kinds OTLP numbers: server 2, client 3.
const SERVER: i64 = 2;
const CLIENT: i64 = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_call_is_one_trace_across_both_proxies() {
    let receiver = Receiver::start().await;
    let mut mesh = mesh(&receiver, &["--access-log"]).await;
    // The first attempt gets a 503, which A retries.
    mesh.app.set_script(vec![Fault {
        status: Some(503),
        ..Fault::default()
    }]);
    let traceparent = format!("00-{TRACE}-{CALLER_SPAN}-01");
    let (status, _, body) = request(
        mesh.a.outbound,
        "GET",
        "/headers",
        &[
            ("host", "web"),
            ("traceparent", &traceparent),
            ("tracestate", "app=1"),
        ],
        b"",
    )
    .await;
    assert_eq!(status, 200);

    // A: the request and two attempts; B: a request and an attempt for
    // each of A's attempts.
    let spans = receiver.trace(TRACE, 7).await;
    let ids = by_id(&spans);
    let of = |pod_name: &str, kind: i64| -> Vec<&Value> {
        spans
            .iter()
            .filter(|s| pod(s) == pod_name && s["kind"] == kind)
            .collect()
    };
    let a_request = of("caller-0", SERVER);
    assert_eq!(a_request.len(), 1, "{spans:#?}");
    let a_request = a_request[0];
    assert_eq!(a_request["parent_span_id"], CALLER_SPAN);
    assert_eq!(a_request["service"], "outrigger-proxy");
    assert_eq!(a_request["attributes"]["http.response.status_code"], 200);
    assert_eq!(
        a_request["attributes"]["outrigger.destination"],
        "web.default.svc.cluster.local:80"
    );
    let retry: Vec<&Value> = a_request["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["name"] == "retry")
        .collect();
    assert_eq!(retry.len(), 1, "{a_request:#?}");
    assert_eq!(retry[0]["attributes"]["outrigger.retry.number"], 1);

    let mut a_attempts = of("caller-0", CLIENT);
    a_attempts.sort_by_key(|s| s["attributes"]["outrigger.attempt"].as_i64());
    assert_eq!(a_attempts.len(), 2, "{spans:#?}");
    for attempt in &a_attempts {
        assert_eq!(attempt["parent_span_id"], a_request["span_id"]);
    }
    assert_eq!(
        a_attempts[0]["attributes"]["http.response.status_code"],
        503
    );
    assert_eq!(
        a_attempts[1]["attributes"]["http.response.status_code"],
        200
    );

    // Each of B's request spans is the child of the attempt that reached it.
    let b_requests = of("web-0", SERVER);
    assert_eq!(b_requests.len(), 2, "{spans:#?}");
    let mut parents: Vec<&str> = b_requests
        .iter()
        .map(|s| s["parent_span_id"].as_str().unwrap())
        .collect();
    parents.sort();
    let mut attempt_ids: Vec<&str> = a_attempts
        .iter()
        .map(|s| s["span_id"].as_str().unwrap())
        .collect();
    attempt_ids.sort();
    assert_eq!(parents, attempt_ids);
    assert!(b_requests.iter().all(|s| s["service"] == "web"));
    let b_attempts = of("web-0", CLIENT);
    assert_eq!(b_attempts.len(), 2, "{spans:#?}");
    for attempt in &b_attempts {
        let parent = &ids[attempt["parent_span_id"].as_str().unwrap()];
        assert_eq!(pod(parent), "web-0");
        assert_eq!(parent["kind"], SERVER);
    }

    // The app got the context of B's last attempt, and the caller's
    // tracestate untouched.
    let headers = app_headers(&body);
    let last_b_attempt = b_attempts
        .iter()
        .find(|s| s["attributes"]["http.response.status_code"] == 200)
        .unwrap();
    assert_eq!(
        headers["traceparent"],
        format!(
            "00-{TRACE}-{}-01",
            last_b_attempt["span_id"].as_str().unwrap()
        )
    );
    assert_eq!(headers["tracestate"], "app=1");

    // A's access log names the trace.
    let stdout = mesh.a.child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let line = lines.next_line().await.unwrap().unwrap();
            if line.contains("\"method\"") {
                return line;
            }
        }
    })
    .await
    .expect("an access log line");
    let entry: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(entry["trace_id"], TRACE, "{line}");
    drop(mesh.b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_without_context_starts_a_trace_and_b3_callers_keep_theirs() {
    let receiver = Receiver::start().await;
    let mesh = mesh(&receiver, &["--trace-sampling=1"]).await;

    // No context: A starts the trace (a root span), B continues it.
    let (status, _, body) =
        request(mesh.a.outbound, "GET", "/headers", &[("host", "web")], b"").await;
    assert_eq!(status, 200);
    let received = app_headers(&body);
    // No tracestate is invented: there was none to pass on.
    assert!(!received.contains_key("tracestate"), "{received:?}");
    let traceparent = &received["traceparent"];
    let trace = traceparent.split('-').nth(1).unwrap().to_string();
    assert!(traceparent.ends_with("-01"), "{traceparent}");
    let spans = receiver.trace(&trace, 4).await;
    let roots: Vec<&Value> = spans.iter().filter(|s| s["parent_span_id"] == "").collect();
    assert_eq!(roots.len(), 1, "{spans:#?}");
    assert_eq!(pod(roots[0]), "caller-0");

    // B3 multi-header context: kept, and written back in its form with the
    // proxies' spans as parents.
    let b3_trace = "80f198ee56343ba864fe8b2a57d3eff7";
    let (status, _, body) = request(
        mesh.a.outbound,
        "GET",
        "/headers",
        &[
            ("host", "web"),
            ("x-b3-traceid", b3_trace),
            ("x-b3-spanid", "e457b5a2e4d86bd1"),
            ("x-b3-sampled", "1"),
        ],
        b"",
    )
    .await;
    assert_eq!(status, 200);
    let headers = app_headers(&body);
    assert_eq!(headers["x-b3-traceid"], b3_trace);
    let spans = receiver.trace(b3_trace, 4).await;
    let ids = by_id(&spans);
    let app_parent = &ids[&headers["x-b3-spanid"]];
    assert_eq!(pod(app_parent), "web-0");
    assert_eq!(app_parent["kind"], CLIENT);
    assert_eq!(headers["x-b3-parentspanid"], app_parent["parent_span_id"]);
    let a_request = spans
        .iter()
        .find(|s| pod(s) == "caller-0" && s["kind"] == SERVER)
        .unwrap();
    assert_eq!(a_request["parent_span_id"], "e457b5a2e4d86bd1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsampled_traces_are_propagated_but_not_exported() {
    let receiver = Receiver::start().await;
    // Traces A starts are never sampled.
    let mesh = mesh(&receiver, &["--trace-sampling=0"]).await;
    let (status, _, body) =
        request(mesh.a.outbound, "GET", "/headers", &[("host", "web")], b"").await;
    assert_eq!(status, 200);
    let unsampled = app_headers(&body)["traceparent"].clone();
    assert!(unsampled.ends_with("-00"), "{unsampled}");
    let unsampled_trace = unsampled.split('-').nth(1).unwrap().to_string();

    // A caller's unsampled context reaches the app as the caller sent it,
    // through both proxies: they record nothing, so the caller's span stays
    // the parent.
    let caller_unsampled = format!("00-{TRACE}-{CALLER_SPAN}-00");
    let (status, _, body) = request(
        mesh.a.outbound,
        "GET",
        "/headers",
        &[
            ("host", "web"),
            ("traceparent", &caller_unsampled),
            ("tracestate", "vendor=opaque"),
        ],
        b"",
    )
    .await;
    assert_eq!(status, 200);
    let seen = app_headers(&body);
    assert_eq!(seen["traceparent"], caller_unsampled);
    assert_eq!(seen["tracestate"], "vendor=opaque");

    // A caller's sampled trace is exported; by the time its spans arrive,
    // the unsampled one's would have (batches go out in order).
    let traceparent = format!("00-{TRACE}-{CALLER_SPAN}-01");
    let (status, _, _) = request(
        mesh.a.outbound,
        "GET",
        "/headers",
        &[("host", "web"), ("traceparent", &traceparent)],
        b"",
    )
    .await;
    assert_eq!(status, 200);
    receiver.trace(TRACE, 4).await;
    let exported = receiver.spans.lock().unwrap().clone();
    assert!(
        exported
            .iter()
            .all(|s| s["trace_id"] != unsampled_trace.as_str()),
        "{exported:#?}"
    );
}

/// The breaker's refusal is an event on the request's span, with no
/// attempt under it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_by_the_open_circuit_is_an_event() {
    let receiver = Receiver::start().await;
    let spec = "  circuitBreaker: {minimumRequests: 2, openFor: 30s}\n";
    let mesh = mesh_with(&receiver, &[], spec).await;
    let failure = Fault {
        status: Some(503),
        ..Fault::default()
    };
    mesh.app.set_script(vec![failure.clone(), failure]);
    for _ in 0..2 {
        let (status, _, _) = request(mesh.a.outbound, "GET", "/", &[("host", "web")], b"").await;
        assert_eq!(status, 503);
    }
    let traceparent = format!("00-{TRACE}-{CALLER_SPAN}-01");
    let (status, headers, _) = request(
        mesh.a.outbound,
        "GET",
        "/",
        &[("host", "web"), ("traceparent", &traceparent)],
        b"",
    )
    .await;
    assert_eq!(status, 503);
    assert_eq!(headers["x-outrigger-error"], "circuit-open");
    let spans = receiver.trace(TRACE, 1).await;
    let span = &spans[0];
    assert_eq!(pod(span), "caller-0");
    assert_eq!(span["attributes"]["outrigger.error"], "circuit-open");
    let events: Vec<&str> = span["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(events, ["circuit-open"]);
    assert_eq!(mesh.app.hits(), 2);
}
