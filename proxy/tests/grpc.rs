//! gRPC through the real proxy binary, with real gRPC peers (grpcio, from
//! tests/peers): calls of every kind pass through both sides; trailers-only
//! statuses are retried where the policy allows; grpc-timeout sets the
//! deadline and reaches the server shrunk; the breaker counts gRPC failures;
//! calls given up (by the client, or at a per-try timeout) are cancelled at
//! the server.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use outrigger_e2e::proxy::*;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

fn peer_script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/peers")
        .join(name)
}

/// Fails the test when python3 lacks `grpc` (tests/setup.sh installs it).
fn require_python_grpc() {
    let ok = std::process::Command::new("python3")
        .args(["-c", "import grpc"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        ok,
        "python3 with grpcio is needed: run `bash tests/setup.sh` (as root) first"
    );
}

/// The gRPC server peer (tests/peers/grpc_server.py); killed when dropped.
struct GrpcServer {
    port: u16,
    _child: Child,
}

impl GrpcServer {
    async fn start() -> GrpcServer {
        require_python_grpc();
        let mut child = Command::new("python3")
            .arg(peer_script("grpc_server.py"))
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .expect("gRPC server starts")
            .unwrap();
        // The server binds a port of the system's choosing and names it.
        let port = first
            .as_deref()
            .and_then(|line| line.strip_prefix("listening "))
            .and_then(|port| port.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line {first:?}"));
        GrpcServer {
            port,
            _child: child,
        }
    }

    /// Runs `commands` against it directly (not through a proxy).
    async fn direct(&self, commands: &[&str]) -> String {
        client(loopback(self.port), "direct", commands).await
    }
}

/// Runs the grpcio client (tests/peers/grpc_client.py) against `addr`,
/// naming `authority`: one output line per result.
async fn client(addr: std::net::SocketAddr, authority: &str, commands: &[&str]) -> String {
    let script = peer_script("grpc_client.py");
    let addr = addr.to_string();
    let mut args = vec![script.to_str().unwrap(), &addr, authority];
    args.extend_from_slice(commands);
    tokio::time::timeout(Duration::from_secs(60), run("python3", &args))
        .await
        .expect("the gRPC client finishes")
}

/// A caller's proxy reaching `server` as each Service of `specs`
/// (name, indented spec lines).
async fn caller_proxy(server: &GrpcServer, specs: &[(&str, &str)]) -> (ProxyProcess, PolicyFile) {
    let text: String = specs
        .iter()
        .map(|(name, spec)| {
            format!(
                "---\n{}{}",
                policy(name, spec),
                endpoint_slice(name, &[server.port])
            )
        })
        .collect();
    let file = PolicyFile::new("grpc", &text);
    let proxy = ProxyProcess::start(&[&file.flag()]).await;
    (proxy, file)
}

async fn metric(proxy: &ProxyProcess, name: &str, fragments: &[&str]) -> f64 {
    metric_value(&proxy.metrics().await, name, fragments)
}

/// The calls every side must carry untouched: unary, a server stream (one
/// that ends OK, one that fails after its messages), a client stream, and a
/// bidirectional stream whose client sends each message only after the
/// previous echo came back (a proxy holding messages back deadlocks it).
const EVERY_KIND: [&str; 6] = [
    "unary hello",
    "server-stream 3",
    "server-stream 2,fail",
    "client-stream a b c",
    "bidi x y z",
    "stats",
];
const EVERY_KIND_OUTPUT: &str = "OK hello\n0\n1\n2\nOK\n0\n1\nUNAVAILABLE stream failed\n\
                                 OK a+b+c\nX\nY\nZ\nOK\nunary=1 deadline=none\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_of_every_kind_pass_through_both_sides() {
    let server = GrpcServer::start().await;
    assert_eq!(server.direct(&EVERY_KIND).await, EVERY_KIND_OUTPUT);

    // The server's proxy, without a policy.
    let inbound = ProxyProcess::start(&[&format!("--app-addr={}", loopback(server.port))]).await;
    server.direct(&["script ok"]).await;
    let out = client(inbound.inbound, "web", &EVERY_KIND).await;
    assert_eq!(out, EVERY_KIND_OUTPUT, "through the inbound side");

    // The caller's proxy, with retries, a breaker and outlier detection.
    let spec = "  retry: {attempts: 2, nonIdempotent: Always, backoff: {base: 1ms, max: 1ms}}\n  circuitBreaker: {minimumRequests: 1}\n  outlierDetection: {consecutiveFailures: 1}\n";
    let (proxy, _file) = caller_proxy(&server, &[("web", spec)]).await;
    server.direct(&["script ok"]).await;
    let out = client(proxy.outbound, "web", &EVERY_KIND).await;
    assert_eq!(out, EVERY_KIND_OUTPUT, "through the outbound side");
    // The stream that failed after its messages was not retried: its
    // response had begun.
    assert_eq!(metric(&proxy, "outrigger_retries_total", &[]).await, 0.0);
}

/// A failed gRPC call is an HTTP 200: its status, in the headers of a
/// trailers-only answer or in the trailers after the messages, is counted
/// by route and code in `outrigger_grpc_responses_total`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_statuses_are_counted_by_route_and_code() {
    let server = GrpcServer::start().await;
    let spec =
        "  routes:\n  - name: unary\n    match: {grpc: {service: test.Echo, method: Unary}}\n";
    let (proxy, _file) = caller_proxy(&server, &[("web", spec)]).await;
    server
        .direct(&["script ok,late-unavailable,not-found"])
        .await;
    let out = client(
        proxy.outbound,
        "web",
        &["unary a", "unary b", "unary c", "server-stream 2,fail"],
    )
    .await;
    assert_eq!(out.lines().count(), 6, "{out}");
    let metrics = proxy.metrics().await;
    let count = |route: &str, status: &str| {
        metric_value(
            &metrics,
            "outrigger_grpc_responses_total",
            &[
                "direction=\"outbound\"",
                "destination=\"web.default.svc.cluster.local:80\"",
                &format!("route=\"{route}\""),
                &format!("grpc_status=\"{status}\""),
            ],
        )
    };
    // OK and UNAVAILABLE in trailers, NOT_FOUND trailers-only.
    assert_eq!(count("unary", "ok"), 1.0, "{metrics}");
    assert_eq!(count("unary", "unavailable"), 1.0, "{metrics}");
    assert_eq!(count("unary", "not-found"), 1.0, "{metrics}");
    // The stream that failed after its messages, on no named route.
    assert_eq!(count("default", "unavailable"), 1.0, "{metrics}");
    // Every one of them an HTTP 200.
    assert_eq!(
        metric_value(
            &metrics,
            "outrigger_requests_total",
            &["status_class=\"2xx\""]
        ),
        4.0,
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trailers_only_unavailable_is_retried_on_an_idempotent_route() {
    let server = GrpcServer::start().await;
    let retry = "  retry: {attempts: 2, backoff: {base: 1ms, max: 5ms}}\n";
    let idempotent = format!(
        "{retry}  routes:\n  - name: unary\n    match: {{grpc: {{service: test.Echo, method: Unary}}}}\n    retry: {{nonIdempotent: Always}}\n"
    );
    let (proxy, _file) = caller_proxy(&server, &[("web", retry), ("web-idem", &idempotent)]).await;

    // The Unary method is idempotent on web-idem's route: UNAVAILABLE
    // (a trailers-only answer) is retried.
    server.direct(&["script unavailable,unavailable"]).await;
    let reply = grpc_unary(proxy.outbound, "web-idem", "/test.Echo/Unary", b"m", &[]).await;
    assert_eq!(reply.status(), Some("0"));
    assert_eq!(reply.body, b"\0\0\0\0\x01m");
    assert_eq!(server.direct(&["stats"]).await, "unary=3 deadline=none\n");
    let retried = [
        "reason=\"grpc-unavailable\"",
        "destination=\"web-idem.default.svc.cluster.local:80\"",
    ];
    assert_eq!(
        metric(&proxy, "outrigger_retries_total", &retried).await,
        2.0
    );

    // A grpcio client's call (its body has no declared length) is replayed
    // the same way.
    server.direct(&["script unavailable"]).await;
    let out = client(proxy.outbound, "web-idem", &["unary m"]).await;
    assert_eq!(out, "OK m\n");
    assert_eq!(server.direct(&["stats"]).await, "unary=2 deadline=none\n");
    assert_eq!(
        metric(&proxy, "outrigger_retries_total", &retried).await,
        3.0
    );

    // On web (no such route) a gRPC call, a POST, is not replayed once the
    // server answered.
    server.direct(&["script unavailable"]).await;
    let reply = grpc_unary(proxy.outbound, "web", "/test.Echo/Unary", b"m", &[]).await;
    assert_eq!(reply.status(), Some("14"));
    assert_eq!(server.direct(&["stats"]).await, "unary=1 deadline=none\n");
    let skipped = [
        "reason=\"non-idempotent\"",
        "destination=\"web.default.svc.cluster.local:80\"",
    ];
    assert_eq!(
        metric(&proxy, "outrigger_retries_skipped_total", &skipped).await,
        1.0
    );

    // A status in trailers, after the response began, is passed on as it is.
    server.direct(&["script late-unavailable"]).await;
    let reply = grpc_unary(proxy.outbound, "web-idem", "/test.Echo/Unary", b"m", &[]).await;
    assert_eq!(reply.status(), Some("14"));
    assert_eq!(reply.headers["x-late"], "1");
    assert_eq!(server.direct(&["stats"]).await, "unary=1 deadline=none\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_timeout_sets_the_deadline_and_reaches_the_server_shrunk() {
    let server = GrpcServer::start().await;
    let (proxy, _file) = caller_proxy(&server, &[("web", "  timeouts: {request: 1s}\n")]).await;

    // The client's 300ms, shorter than the policy's 1s, ends the call: the
    // proxy answers DEADLINE_EXCEEDED (this client does not enforce it).
    server.direct(&["script sleep-3000"]).await;
    let started = Instant::now();
    let timeout = [("grpc-timeout", "300m")];
    let reply = grpc_unary(proxy.outbound, "web", "/test.Echo/Unary", b"m", &timeout).await;
    let took = started.elapsed();
    assert_eq!(reply.status(), Some("4"), "DEADLINE_EXCEEDED");
    assert_eq!(reply.headers["x-outrigger-error"], "timeout");
    assert!(took >= Duration::from_millis(300) && took < Duration::from_millis(900));
    // The server was told what was left: at most the client's 300ms.
    let stats = server.direct(&["stats"]).await;
    let left: f64 = stats
        .trim()
        .rsplit("deadline=")
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{stats}"));
    assert!(left > 0.1 && left <= 0.3, "{stats}");

    // A grpcio client with 5s: the policy's 1s is the deadline, and what the
    // server hears.
    server.direct(&["script sleep-3000"]).await;
    let out = client(proxy.outbound, "web", &["unary m timeout=5", "stats"]).await;
    let (call, stats) = out.split_once('\n').unwrap();
    assert_eq!(call, "DEADLINE_EXCEEDED outrigger: timeout");
    let left: f64 = stats
        .trim()
        .rsplit("deadline=")
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(left > 0.8 && left <= 1.0, "{stats}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_breaker_counts_grpc_failures() {
    let server = GrpcServer::start().await;
    let spec = "  circuitBreaker: {minimumRequests: 2, failureRatePercent: 50, openFor: 30s}\n";
    let (proxy, _file) = caller_proxy(&server, &[("web", spec), ("web-late", spec)]).await;
    // NOT_FOUND is the service's answer, not its failure.
    server.direct(&["script not-found,not-found"]).await;
    let out = client(proxy.outbound, "web", &["unary a", "unary b"]).await;
    assert_eq!(
        out,
        "NOT_FOUND scripted not-found\nNOT_FOUND scripted not-found\n"
    );
    // UNAVAILABLE and INTERNAL (trailers-only, HTTP 200) are failures: two of
    // four calls open the circuit.
    server.direct(&["script unavailable,internal"]).await;
    let out = client(proxy.outbound, "web", &["unary a", "unary b", "unary c"]).await;
    assert_eq!(
        out,
        "UNAVAILABLE scripted unavailable\nINTERNAL scripted internal\n\
         UNAVAILABLE outrigger: circuit-open\n"
    );
    assert_eq!(server.direct(&["stats"]).await, "unary=2 deadline=none\n");
    assert_eq!(
        metric(
            &proxy,
            "outrigger_circuit_state",
            &["destination=\"web.default.svc.cluster.local:80\""]
        )
        .await,
        1.0
    );

    // A status in trailers counts too, unless a message came first: streams
    // that delivered messages and then failed are successes, and UNAVAILABLE
    // and INTERNAL after the response headers open the circuit.
    server
        .direct(&["script late-unavailable,late-internal"])
        .await;
    let calls = [
        "server-stream 2,fail",
        "server-stream 2,fail",
        "unary a",
        "unary b",
        "unary c",
    ];
    let out = client(proxy.outbound, "web-late", &calls).await;
    assert_eq!(
        out,
        "0\n1\nUNAVAILABLE stream failed\n0\n1\nUNAVAILABLE stream failed\n\
         UNAVAILABLE late failure\nINTERNAL late failure\n\
         UNAVAILABLE outrigger: circuit-open\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_spent_in_the_servers_proxy_comes_off_the_deadline() {
    let server = GrpcServer::start().await;
    // The server's proxy lets one call in at a time; the next one waits.
    let limits =
        "  limits: {maxConcurrentRequests: 1, maxPendingRequests: 1, pendingTimeout: 5s}\n";
    let file = PolicyFile::new("web", &policy("web", limits));
    let inbound = ProxyProcess::start(&[
        &format!("--app-addr={}", loopback(server.port)),
        "--service-name=web",
        &file.flag(),
    ])
    .await;
    server.direct(&["script sleep-2500,ok"]).await;
    let first = tokio::spawn(client(inbound.inbound, "web", &["unary first timeout=5"]));
    // Once the first call is with the server, the second queues behind it.
    outrigger_e2e::wait_until(
        Duration::from_secs(10),
        "the first call at the server",
        || async { server.direct(&["stats"]).await.starts_with("unary=1 ") },
    )
    .await;
    let second = client(inbound.inbound, "web", &["unary second timeout=4", "stats"]).await;
    assert_eq!(first.await.unwrap(), "OK first\n");
    let (call, stats) = second.split_once('\n').unwrap();
    assert_eq!(call, "OK second");
    // It waited most of a second for the first: the server heard what was
    // left of its 3s, not 3s.
    let left: f64 = stats
        .trim()
        .rsplit("deadline=")
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(left > 1.0 && left < 2.7, "{stats}");
}

/// A GRPCRoute on Service `web`: Stats calls go to `web-v2`, everything else
/// to `web-v1`, with a header added on the way; a method no rule matches
/// would be UNIMPLEMENTED (the routes are exclusive).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_routes_send_methods_to_their_backends() {
    let (v1, v2) = (GrpcServer::start().await, GrpcServer::start().await);
    let route = "apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: web, namespace: default}
spec:
  parentRefs: [{group: \"\", kind: Service, name: web}]
  rules:
  - matches: [{method: {service: test.Echo, method: Stats}}]
    backendRefs: [{name: web-v2, port: 80}]
  - matches: [{method: {service: test.Echo, method: Unary}}, {method: {service: test.Echo, method: Script}}]
    backendRefs: [{name: web-v1, port: 80}]
";
    let text = format!(
        "{route}{}{}",
        endpoint_slice("web-v1", &[v1.port]),
        endpoint_slice("web-v2", &[v2.port])
    );
    let file = PolicyFile::new("grpc-route", &text);
    let proxy = ProxyProcess::start(&[&file.flag()]).await;
    let out = client(
        proxy.outbound,
        "web",
        &["unary a", "unary b", "stats", "server-stream 1"],
    )
    .await;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[..2], ["OK a", "OK b"], "{out}");
    // Stats went to web-v2, which served no Unary call.
    assert_eq!(lines[2], "unary=0 deadline=none", "{out}");
    assert_eq!(v1.direct(&["stats"]).await, "unary=2 deadline=none\n");
    // ServerStream matches no rule.
    assert!(lines[3].starts_with("UNIMPLEMENTED"), "{out}");
}

/// A client-streaming call opened on the h2 crate directly (the test decides
/// exactly when its stream is reset, which grpcio's clients do not let it):
/// one gRPC message sent, the stream left open.
async fn open_held_call(
    addr: std::net::SocketAddr,
) -> (
    h2::client::ResponseFuture,
    h2::SendStream<bytes::Bytes>,
    h2::client::SendRequest<bytes::Bytes>,
) {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (sender, connection) = h2::client::handshake(stream).await.unwrap();
    tokio::spawn(connection);
    let mut sender = sender.ready().await.unwrap();
    let request = http::Request::post("http://web/test.Echo/Hold")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap();
    let (response, mut body) = sender.send_request(request, false).unwrap();
    let mut message = vec![0u8, 0, 0, 0, 5];
    message.extend_from_slice(b"first");
    body.send_data(message.into(), false).unwrap();
    (response, body, sender)
}

/// The server's count of Hold calls: (started, ended). The test's calls
/// never end their streams, so only a cancel or reset ends them.
async fn held(server: &GrpcServer) -> (u32, u32) {
    let reply = server.direct(&["held"]).await;
    let count = |name: &str| {
        reply
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{reply}"))
    };
    (count("started"), count("ended"))
}

async fn wait_held(server: &GrpcServer, expected: (u32, u32), what: &str) {
    outrigger_e2e::wait_until(Duration::from_secs(20), what, || async {
        held(server).await == expected
    })
    .await;
}

/// A call given up is given up at the server too, through both proxies: the
/// client cancelling its stream, and the caller's proxy ending an attempt at
/// its per-try timeout while the client still streams. Neither leaves the
/// server holding a call nobody will finish.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_given_up_are_cancelled_at_the_server() {
    let server = GrpcServer::start().await;
    let inbound = ProxyProcess::start(&[&format!("--app-addr={}", loopback(server.port))]).await;
    let spec = "  timeouts: {backendRequest: 1s}\n";
    let text = format!(
        "---\n{}{}",
        policy("web", spec),
        endpoint_slice("web", &[inbound.inbound.port()])
    );
    let file = PolicyFile::new("grpc-cancel", &text);
    let caller = ProxyProcess::start(&[&file.flag()]).await;

    // The client cancels once the server has its first message.
    let (_response, mut stream, _connection) = open_held_call(caller.outbound).await;
    wait_held(&server, (1, 0), "the call reached the server").await;
    stream.send_reset(h2::Reason::CANCEL);
    wait_held(&server, (1, 1), "the client's cancel reached the server").await;

    // The caller's proxy gives the attempt up at 1s: the client gets the
    // proxy's answer, and the server sees the call cancelled.
    let started = Instant::now();
    let (response, _stream, _connection) = open_held_call(caller.outbound).await;
    let response = tokio::time::timeout(Duration::from_secs(10), response)
        .await
        .expect("the proxy answers at its per-try timeout")
        .unwrap();
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_eq!(
        response
            .headers()
            .get("x-outrigger-error")
            .map(|v| v.to_str().unwrap()),
        Some("timeout"),
        "{response:?}"
    );
    wait_held(&server, (2, 2), "the given-up attempt reached the server").await;
}
