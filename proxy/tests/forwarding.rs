//! Forwarding through the real proxy binary with real clients (curl, raw
//! sockets) and a fault-injecting upstream, all on loopback.

use std::time::Duration;

use outrigger_e2e::proxy::*;
use outrigger_tools::fault_upstream::{FaultConfig, FaultUpstream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn upstream() -> FaultUpstream {
    FaultUpstream::start(loopback(0), FaultConfig::default())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_streams_50_mib_both_ways_with_checksums() {
    require_tool("curl");
    let upstream = upstream().await;
    let proxy = ProxyProcess::start(&[&format!("--app-addr={}", upstream.addr)]).await;
    let dir = temp_dir("inbound-large");
    let size = 50 * 1024 * 1024;
    let (file, digest) = random_file(&dir, "body.bin", size);

    // Upload: the upstream hashes what it received.
    let answer = run(
        "curl",
        &[
            "-sS",
            "--fail",
            "--data-binary",
            &format!("@{}", file.display()),
            &format!("http://{}/sha256", proxy.inbound),
        ],
    )
    .await;
    assert_eq!(answer.trim(), format!("{digest} {size}"));

    // Chunked upload, echoed back and hashed on our side.
    let echoed = dir.join("echoed.bin");
    run(
        "curl",
        &[
            "-sS",
            "--fail",
            "-H",
            "Transfer-Encoding: chunked",
            "--data-binary",
            &format!("@{}", file.display()),
            "-o",
            echoed.to_str().unwrap(),
            &format!("http://{}/echo", proxy.inbound),
        ],
    )
    .await;
    let echoed_digest = run("sha256sum", &[echoed.to_str().unwrap()]).await;
    assert!(echoed_digest.starts_with(&digest), "echo changed the body");

    // Download of a streamed 50 MiB body.
    let downloaded = run(
        "sh",
        &[
            "-c",
            &format!(
                "curl -sS --fail http://{}/bytes/{size} | wc -c",
                proxy.inbound
            ),
        ],
    )
    .await;
    assert_eq!(downloaded.trim(), size.to_string());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_explicit_proxy_forwards_by_absolute_uri_and_host() {
    require_tool("curl");
    let upstream = upstream().await;
    let proxy = ProxyProcess::start(&[]).await;
    let dir = temp_dir("outbound");
    let (file, digest) = random_file(&dir, "body.bin", 5 * 1024 * 1024);

    // Like HTTP_PROXY: absolute-form request line.
    let answer = run(
        "curl",
        &[
            "-sS",
            "--fail",
            "-x",
            &format!("http://{}", proxy.outbound),
            "--data-binary",
            &format!("@{}", file.display()),
            &format!("http://{}/sha256", upstream.addr),
        ],
    )
    .await;
    assert!(answer.starts_with(&digest), "{answer}");

    // Origin-form with a Host header naming the destination.
    let headers = run(
        "curl",
        &[
            "-sS",
            "--fail",
            "-D",
            "-",
            "-o",
            "/dev/null",
            "-H",
            &format!("Host: {}", upstream.addr),
            "-H",
            "x-request-id: fixed-id-1",
            &format!("http://{}/", proxy.outbound),
        ],
    )
    .await;
    assert!(headers.contains("x-request-id: fixed-id-1"), "{headers}");
    assert_eq!(upstream.hits(), 2);

    let metrics = proxy.metrics().await;
    let dest = format!("destination=\"{}\"", upstream.addr);
    assert_eq!(
        metric_value(
            &metrics,
            "outrigger_requests_total",
            &["direction=\"outbound\"", &dest, "2xx"]
        ),
        2.0,
        "{metrics}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_errors_are_labelled() {
    let proxy = ProxyProcess::start(&[]).await;
    // Nobody listens on this port: 502 naming the cause.
    let dead = loopback(free_port());
    let mut stream = tokio::net::TcpStream::connect(proxy.outbound)
        .await
        .unwrap();
    let request =
        format!("GET http://{dead}/ HTTP/1.1\r\nHost: {dead}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 502"), "{response}");
    assert!(
        response.contains("x-outrigger-error: connect-failure"),
        "{response}"
    );
    assert!(response.contains("x-request-id: "), "{response}");

    // A request addressed to the proxy itself would loop.
    let (status, _) = raw_get(proxy.outbound, "/").await.unwrap();
    assert_eq!(status, 508);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_prior_knowledge_both_ways_keeps_trailers() {
    require_tool("curl");
    let upstream = upstream().await;
    let proxy = ProxyProcess::start(&[&format!("--app-addr={}", upstream.addr)]).await;
    let out = run(
        "curl",
        &[
            "-sS",
            "--fail",
            "--http2-prior-knowledge",
            "-w",
            "\nversion=%{http_version}\n",
            "--data-binary",
            "hello over h2",
            &format!("http://{}/echo", proxy.inbound),
        ],
    )
    .await;
    assert!(out.starts_with("hello over h2\nversion=2"), "{out}");

    // The upstream sees the authority the client named, not the address
    // the proxy connected to.
    for authority in ["reviews.shop:9080", "reviews"] {
        let out = run(
            "curl",
            &[
                "-sS",
                "--fail",
                "--http2-prior-knowledge",
                "-H",
                &format!("Host: {authority}"),
                &format!("http://{}/headers", proxy.inbound),
            ],
        )
        .await;
        assert!(
            out.starts_with(&format!(":authority: {authority}\n")),
            "{out}"
        );
    }

    // Request ids, sent never-indexed in HPACK (a fresh value per request),
    // arrive intact both ways, request after request on one connection:
    // the client's own id, then ids the proxy generates. (A hyper client:
    // curl 7.88 cannot reuse a prior-knowledge connection.)
    for given in [Some("fixed-id-2"), None] {
        let seen = h2_request_ids(proxy.inbound, given, 3).await;
        for (response, echoed) in &seen {
            assert_eq!(response, echoed, "{seen:?}");
            match given {
                Some(id) => assert_eq!(response, id),
                None => assert_eq!(response.len(), 36, "{seen:?}"),
            }
        }
        if given.is_none() {
            assert!(
                seen[0].0 != seen[1].0 && seen[1].0 != seen[2].0,
                "each request its own id: {seen:?}"
            );
        }
    }

    // Trailers: a hyper HTTP/2 client sees the upstream's trailers intact.
    let trailers = h2_trailers(proxy.inbound, "/trailers").await;
    assert_eq!(trailers.get("grpc-status").unwrap(), "0");
    assert_eq!(trailers.get("x-checksum").unwrap(), "abc123");

    let metrics = proxy.metrics().await;
    assert_eq!(
        metric_value(
            &metrics,
            "outrigger_connections_total",
            &["protocol=\"http2\""]
        ),
        6.0,
        "{metrics}"
    );
}

/// `requests` GETs of /headers on one HTTP/2 connection, with `id` as their
/// x-request-id when given: each response's x-request-id and the one the
/// upstream echoes from the request it received.
async fn h2_request_ids(
    addr: std::net::SocketAddr,
    id: Option<&str>,
    requests: usize,
) -> Vec<(String, String)> {
    use http_body_util::{BodyExt, Empty};
    let mut sender = h2_connect(addr).await;
    let mut seen = Vec::new();
    for _ in 0..requests {
        let mut request = http::Request::get(format!("http://{addr}/headers"));
        if let Some(id) = id {
            request = request.header("x-request-id", id);
        }
        let request = request.body(Empty::<bytes::Bytes>::new()).unwrap();
        let response = sender.send_request(request).await.unwrap();
        assert_eq!(response.status(), 200);
        let returned = response.headers()["x-request-id"]
            .to_str()
            .unwrap()
            .to_owned();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let body = String::from_utf8(body.to_vec()).unwrap();
        let echoed = body
            .lines()
            .find_map(|line| line.strip_prefix("x-request-id: "))
            .unwrap_or_else(|| panic!("no x-request-id reached the upstream: {body}"))
            .to_owned();
        seen.push((returned, echoed));
    }
    seen
}

async fn h2_trailers(addr: std::net::SocketAddr, path: &str) -> http::HeaderMap {
    use http_body_util::{BodyExt, Empty};
    let mut sender = h2_connect(addr).await;
    let request = http::Request::get(format!("http://{addr}{path}"))
        .header("te", "trailers")
        .body(Empty::<bytes::Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let collected = response.into_body().collect().await.unwrap();
    collected.trailers().cloned().expect("trailers present")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_headers_get_431() {
    let upstream = upstream().await;
    let proxy = ProxyProcess::start(&[&format!("--app-addr={}", upstream.addr)]).await;
    let mut stream = tokio::net::TcpStream::connect(proxy.inbound).await.unwrap();
    let big = "a".repeat(64 * 1024);
    let request = format!("GET / HTTP/1.1\r\nHost: app\r\nX-Big: {big}\r\n\r\n");
    // The proxy may answer and close before reading everything: ignore write errors.
    let _ = stream.write_all(request.as_bytes()).await;
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut response)).await;
    let text = String::from_utf8_lossy(&response);
    assert!(text.starts_with("HTTP/1.1 431"), "{text}");
    assert_eq!(upstream.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_client_is_closed_after_header_timeout() {
    let upstream = upstream().await;
    let proxy = ProxyProcess::start(&[
        &format!("--app-addr={}", upstream.addr),
        "--header-read-timeout=1s",
    ])
    .await;
    let mut stream = tokio::net::TcpStream::connect(proxy.inbound).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    // Trickle one header byte every 200ms; the proxy must hang up around 1s.
    let closed_after = loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut buf = [0u8; 256];
        let write = stream.write_all(b"X").await;
        let read = tokio::time::timeout(Duration::from_millis(1), stream.read(&mut buf)).await;
        if write.is_err()
            || matches!(read, Ok(Ok(0)) | Ok(Err(_)))
            || matches!(read, Ok(Ok(n)) if n > 0)
        {
            break started.elapsed();
        }
        assert!(started.elapsed() < Duration::from_secs(8), "never closed");
    };
    assert!(
        closed_after >= Duration::from_millis(800),
        "closed too early: {closed_after:?}"
    );
    assert!(
        closed_after < Duration::from_secs(4),
        "closed too late: {closed_after:?}"
    );
    assert_eq!(upstream.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_has_one_json_line_per_request() {
    use tokio::io::AsyncBufReadExt;
    let upstream = upstream().await;
    let mut proxy =
        ProxyProcess::start(&[&format!("--app-addr={}", upstream.addr), "--access-log"]).await;
    let (status, _) = raw_get(proxy.inbound, "/orders?id=7").await.unwrap();
    assert_eq!(status, 200);
    let stdout = proxy.child.stdout.take().unwrap();
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(5), lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let entry: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(entry["direction"], "inbound");
    assert_eq!(entry["method"], "GET");
    assert_eq!(entry["path"], "/orders");
    assert_eq!(entry["status"], 200);
    assert_eq!(entry["request_id"].as_str().unwrap().len(), 36, "{line}");
    assert!(entry["duration_ms"].as_f64().unwrap() >= 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_limit_are_closed() {
    let upstream = upstream().await;
    let proxy = ProxyProcess::start(&[
        &format!("--app-addr={}", upstream.addr),
        "--max-connections=2",
    ])
    .await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = tokio::net::TcpStream::connect(proxy.inbound).await.unwrap();
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 12];
        stream.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"HTTP/1.1 200");
        held.push(stream);
    }
    // The third is accepted by the kernel and closed by the proxy at once.
    let mut third = tokio::net::TcpStream::connect(proxy.inbound).await.unwrap();
    let _ = third.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await;
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), third.read_to_end(&mut buf)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{read:?} {buf:?}");
    let metrics = proxy.metrics().await;
    assert_eq!(
        metric_value(
            &metrics,
            "outrigger_connections_rejected_total",
            &["max-connections"]
        ),
        1.0
    );
    // Closing one frees a slot.
    drop(held.pop());
    let inbound = proxy.inbound;
    outrigger_e2e::wait_until(Duration::from_secs(5), "a slot freed", || async move {
        matches!(raw_get(inbound, "/").await, Ok((200, _)))
    })
    .await;
}

/// A keep-alive upstream that counts the connections it accepted and the ones
/// that were closed on it (by the proxy: it never closes them itself).
async fn counting_upstream() -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let listener = tokio::net::TcpListener::bind(loopback(0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (accepted, closed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (a, c) = (accepted.clone(), closed.clone());
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            a.fetch_add(1, Ordering::SeqCst);
            let c = c.clone();
            tokio::spawn(async move {
                let mut pending = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => pending.extend_from_slice(&chunk[..n]),
                    }
                    while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                        pending.drain(..end + 4);
                        let reply = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                        if stream.write_all(reply).await.is_err() {
                            break;
                        }
                    }
                }
                c.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    (addr, accepted, closed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_connections_are_reused_across_clients_and_closed_when_idle() {
    use std::sync::atomic::Ordering;
    let (upstream, accepted, closed) = counting_upstream().await;
    let app = format!("--app-addr={upstream}");
    let proxy = ProxyProcess::start(&[&app, "--pool-idle-timeout=300ms"]).await;
    // Each request on a new client connection (raw_get sends Connection: close).
    for _ in 0..5 {
        let (status, body) = raw_get(proxy.inbound, "/").await.unwrap();
        assert_eq!((status, body.as_str()), (200, "ok"));
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "one kept-alive upstream connection"
    );
    assert_eq!(closed.load(Ordering::SeqCst), 0);

    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while closed.load(Ordering::SeqCst) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "idle upstream connection not closed after --pool-idle-timeout"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The next request opens a new connection and succeeds.
    let (status, _) = raw_get(proxy.inbound, "/").await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}
