//! An HTTP/2 upstream that closes its connections gracefully: real nginx,
//! which sends GOAWAY (NO_ERROR) after `keepalive_requests` requests on a
//! connection (1,000 by default; a handful here, so that it happens many
//! times in one test). Streams the proxy already sent above the GOAWAY's
//! last stream id were never processed, so a retry policy replays them,
//! whatever the method, and the client sees no error; without one, those
//! without a body still go once more.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use outrigger_e2e::proxy::*;
use tokio::task::JoinSet;

/// nginx serving `ok` over HTTP/2 with prior knowledge on `port`, closing
/// each connection gracefully after `requests` requests. Killed on drop.
struct Nginx {
    port: u16,
    _child: tokio::process::Child,
}

impl Nginx {
    async fn start(requests: u32) -> Nginx {
        require_tool("nginx");
        let dir = temp_dir("nginx-goaway");
        let port = free_port();
        let d = dir.display();
        let conf = format!(
            "worker_processes 1;\ndaemon off;\nmaster_process off;\n\
             error_log {d}/error.log warn;\npid {d}/nginx.pid;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n\
               proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n\
               uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
               keepalive_requests {requests};\n\
               server {{\n    listen 127.0.0.1:{port} http2;\n\
                 location / {{ return 200 \"ok\"; }}\n  }}\n}}\n"
        );
        let path = dir.join("nginx.conf");
        std::fs::write(&path, conf).unwrap();
        let child = tokio::process::Command::new("nginx")
            .args(["-c", &path.display().to_string(), "-p", &d.to_string()])
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("nginx starts");
        outrigger_e2e::wait_until(Duration::from_secs(10), "nginx listens", || async {
            tokio::net::TcpStream::connect(loopback(port)).await.is_ok()
        })
        .await;
        Nginx {
            port,
            _child: child,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_refused_by_a_graceful_goaway_are_replayed_whatever_the_method() {
    let nginx = Nginx::start(50).await;
    // The budget is lifted: this many refusals in a few hundred requests is
    // the test's doing.
    let (proxy, _file) = caller_proxy(
        &nginx,
        "  retry: {attempts: 3, backoff: {base: 1ms, max: 5ms}, budget: {percent: 100}}\n",
    )
    .await;
    // 300 GETs and 100 POSTs, 16 at a time, over one HTTP/2 connection to
    // the proxy, which multiplexes them onto its connection to nginx: 8
    // GOAWAYs or more, each with streams in flight.
    all_succeed_after_replays(&proxy, 400, Some(4)).await;
}

/// Without a retry section a request gets one attempt, but an HTTP/2
/// request without a body that the upstream never processed is sent once
/// more, as HTTP/2 clients do: a graceful close fails no GET.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_retry_section_unprocessed_gets_still_go_once_more() {
    let nginx = Nginx::start(50).await;
    let (proxy, _file) = caller_proxy(&nginx, "  timeouts: {request: 10s}\n").await;
    all_succeed_after_replays(&proxy, 400, None).await;
}

/// A caller's proxy reaching nginx as Service `web` under `spec`.
async fn caller_proxy(nginx: &Nginx, spec: &str) -> (ProxyProcess, PolicyFile) {
    let file = PolicyFile::new(
        "web",
        &format!(
            "{}{}",
            policy("web", spec),
            endpoint_slice("web", &[nginx.port])
        ),
    );
    let proxy = ProxyProcess::start(&[&file.flag(), "--policy-poll-interval=50ms"]).await;
    (proxy, file)
}

/// `calls` succeed, and streams were refused and replayed on the way (the
/// scenario happened).
async fn all_succeed_after_replays(proxy: &ProxyProcess, n: usize, post_every: Option<usize>) {
    let failures = calls(proxy, n, post_every).await;
    assert!(
        failures.is_empty(),
        "{} failed: {failures:?}",
        failures.len()
    );
    let metrics = proxy.metrics().await;
    let replayed = metric_value(
        &metrics,
        "outrigger_retries_total",
        &["reason=\"refused-stream\""],
    );
    assert!(replayed >= 1.0, "no stream was refused: {metrics}");
}

/// `n` calls to Service `web` through `proxy`'s outbound listener, 16 at a
/// time over one HTTP/2 connection: GETs without a body, and every
/// `post_every`-th a POST with one. The calls that did not get nginx's
/// `ok`, described.
async fn calls(proxy: &ProxyProcess, n: usize, post_every: Option<usize>) -> Vec<String> {
    let sender = h2_connect(proxy.outbound).await;
    let in_flight = Arc::new(tokio::sync::Semaphore::new(16));
    let mut calls = JoinSet::new();
    for i in 0..n {
        let mut sender = sender.clone();
        let in_flight = in_flight.clone();
        calls.spawn(async move {
            let _permit = in_flight.acquire().await.unwrap();
            let post = post_every.is_some_and(|every| i % every == 0);
            let (method, body) = match post {
                true => ("POST", bytes::Bytes::from_static(b"x")),
                false => ("GET", bytes::Bytes::new()),
            };
            let request = http::Request::builder()
                .method(method)
                .uri("http://web/")
                .body(Full::new(body))
                .unwrap();
            let response = sender.send_request(request).await.unwrap();
            let status = response.status().as_u16();
            let error = response
                .headers()
                .get("x-outrigger-error")
                .map(|v| v.to_str().unwrap().to_owned());
            let body = response.into_body().collect().await.unwrap().to_bytes();
            (method, status, error, body)
        });
    }
    let mut failures = Vec::new();
    while let Some(call) = calls.join_next().await {
        let (method, status, error, body) = call.unwrap();
        if status != 200 || &body[..] != b"ok" {
            failures.push(format!("{method} {status} {error:?} {body:?}"));
        }
    }
    failures
}
