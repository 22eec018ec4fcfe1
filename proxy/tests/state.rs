//! Where the proxy keeps its state, through the real binary: one Service port
//! is one breaker, one limit and one metric series, whatever name reached
//! it; inbound state belongs to the pod's Service and port, never to the
//! Host header a client chose; upgrades and CONNECT tunnels meet the same
//! limits as plain requests.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use outrigger_e2e::proxy::*;
use outrigger_tools::fault_upstream::{FaultConfig, FaultUpstream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The values of `label` on the series of `metric` whose text holds every
/// fragment.
fn label_values(metrics: &str, metric: &str, label: &str, fragments: &[&str]) -> BTreeSet<String> {
    let key = format!("{label}=\"");
    metrics
        .lines()
        .filter(|l| l.starts_with(metric) && l[metric.len()..].starts_with('{'))
        .filter(|l| fragments.iter().all(|f| l.contains(f)))
        .filter_map(|l| {
            let rest = &l[l.find(&key)? + key.len()..];
            Some(rest[..rest.find('"')?].to_string())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_spelling_of_a_service_meets_one_breaker_and_one_series() {
    let app = FaultUpstream::start(
        loopback(0),
        FaultConfig {
            failure_rate: 1.0,
            ..FaultConfig::default()
        },
    )
    .await
    .unwrap();
    let spec = "  circuitBreaker: {failureRatePercent: 50, minimumRequests: 4, window: 10s, openFor: 30s}\n";
    let file = PolicyFile::new(
        "web",
        &format!(
            "{}{}",
            policy("web", spec),
            endpoint_slice("web", &[app.addr.port()])
        ),
    );
    let proxy = ProxyProcess::start(&[&file.flag()]).await;
    let outbound = proxy.outbound;
    let get = |host: &'static str| async move {
        request(outbound, "GET", "/", &[("host", host)], b"").await
    };

    // Two failures by each of two spellings: four, the breaker's minimum.
    for host in ["web", "web", "web.default", "web.default:80"] {
        let (status, headers, _) = get(host).await;
        assert_eq!(status, 503, "{host}");
        assert!(
            headers.get("x-outrigger-error").is_none(),
            "the upstream's 503"
        );
    }
    assert_eq!(app.hits(), 4);
    // Opened by them, the breaker rejects the other spellings too.
    for host in [
        "web.default.svc.cluster.local",
        "web.default.svc",
        "web.default.svc.cluster.local.",
        "web",
    ] {
        let (status, headers, _) = get(host).await;
        assert_eq!(status, 503, "{host}");
        assert_eq!(headers["x-outrigger-error"], "circuit-open", "{host}");
    }
    assert_eq!(app.hits(), 4, "nothing reached the upstream while open");

    let metrics = proxy.metrics().await;
    let canonical = "web.default.svc.cluster.local:80";
    for family in [
        "outrigger_requests_total",
        "outrigger_request_duration_seconds_count",
        "outrigger_circuit_state",
        "outrigger_fallback_responses_total",
    ] {
        assert_eq!(
            label_values(&metrics, family, "destination", &["direction=\"outbound\""]),
            BTreeSet::from([canonical.to_string()]),
            "{family}: {metrics}"
        );
    }
    assert_eq!(
        metric_value(
            &metrics,
            "outrigger_circuit_state",
            &[&format!("destination=\"{canonical}\"")]
        ),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endless_external_hosts_share_a_bounded_set_of_series() {
    let proxy = ProxyProcess::start(&["--max-destination-labels=3"]).await;
    // Twelve hosts of the caller's choosing (nothing listens there: 502).
    for _ in 0..12 {
        let host = loopback(free_port()).to_string();
        let (status, headers, _) =
            request(proxy.outbound, "GET", "/", &[("host", host.as_str())], b"").await;
        assert_eq!(status, 502, "{host}");
        assert_eq!(headers["x-outrigger-error"], "connect-failure");
    }
    let metrics = proxy.metrics().await;
    let labels = label_values(
        &metrics,
        "outrigger_requests_total",
        "destination",
        &["direction=\"outbound\""],
    );
    assert_eq!(labels.len(), 4, "three hosts and `other`: {labels:?}");
    assert!(labels.contains("other"));
    assert_eq!(
        metric_value(
            &metrics,
            "outrigger_requests_total",
            &["direction=\"outbound\""]
        ),
        12.0
    );
}

/// A pod's inbound proxy whose Service `web` is limited to `spec`, with a
/// second policy for Service port 9999 that limits nothing (a client naming
/// that port in its Host header must not reach it).
async fn limited_inbound(app: SocketAddr, spec: &str) -> (ProxyProcess, PolicyFile) {
    let unlimited = "---\napiVersion: outrigger.dev/v1alpha1\nkind: ResiliencePolicy\nmetadata: {name: web-9999, namespace: default}\nspec:\n  targetRef: {kind: Service, name: web, port: 9999}\n";
    let file = PolicyFile::new(
        "web-inbound",
        &format!("{}\n{unlimited}", policy("web", spec)),
    );
    let proxy = ProxyProcess::start(&[
        &format!("--app-addr={app}"),
        "--service-name=web",
        &file.flag(),
    ])
    .await;
    (proxy, file)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_host_headers_share_one_bucket_and_one_series() {
    let app = FaultUpstream::start(loopback(0), FaultConfig::default())
        .await
        .unwrap();
    let (proxy, _file) =
        limited_inbound(app.addr, "  rateLimit: {requestsPerSecond: 1, burst: 2}\n").await;
    let mut hosts: Vec<String> = (0..16)
        .map(|i| format!("h{i}.example:{}", 8000 + i))
        .collect();
    hosts.extend(["web:9999", "web.default:9999", "web"].map(String::from));
    let (mut ok, mut limited) = (0, 0);
    for host in &hosts {
        let (status, headers, _) =
            request(proxy.inbound, "GET", "/", &[("host", host.as_str())], b"").await;
        match status {
            200 => ok += 1,
            429 => {
                assert_eq!(headers["x-outrigger-error"], "rate-limited");
                limited += 1;
            }
            other => panic!("{host}: {other}"),
        }
    }
    // Burst 2, plus at most what 1/s refills while the requests are sent.
    assert!(
        ok <= 4,
        "{ok} admitted of {}: one bucket per Host?",
        hosts.len()
    );
    assert_eq!(ok + limited, hosts.len());

    let metrics = proxy.metrics().await;
    let inbound = ["direction=\"inbound\""];
    let expected = BTreeSet::from([format!("web.default.svc.cluster.local:{}", app.addr.port())]);
    for family in [
        "outrigger_requests_total",
        "outrigger_request_duration_seconds_count",
        "outrigger_rate_limited_total",
    ] {
        assert_eq!(
            label_values(&metrics, family, "destination", &inbound),
            expected,
            "{family}: {metrics}"
        );
    }
    assert_eq!(
        metric_value(&metrics, "outrigger_rate_limited_total", &inbound),
        limited as f64
    );
}

/// An app that switches protocols on any Upgrade request, answers CONNECT
/// with 200, and then echoes bytes; other requests get a plain 200.
async fn upgrading_app() -> SocketAddr {
    let listener = TcpListener::bind(loopback(0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Some(head) = read_head(&mut stream).await else {
                    return;
                };
                let lower = head.to_ascii_lowercase();
                let answer: &[u8] = if lower.starts_with("connect ") {
                    b"HTTP/1.1 200 OK\r\n\r\n"
                } else if lower.contains("\r\nupgrade:") {
                    b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
                } else {
                    let _ = stream
                        .write_all(
                            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                        )
                        .await;
                    return;
                };
                if stream.write_all(answer).await.is_err() {
                    return;
                }
                let (mut read, mut write) = stream.split();
                let _ = tokio::io::copy(&mut read, &mut write).await;
            });
        }
    });
    addr
}

/// Reads a message head (through the blank line).
async fn read_head(stream: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).await.ok()? == 0 {
            return None;
        }
        head.push(byte[0]);
    }
    String::from_utf8(head).ok()
}

/// Sends an upgrade (WebSocket handshake) or a CONNECT to `addr`: the status,
/// the response head, and the connection (a tunnel when it switched).
async fn open(addr: SocketAddr, connect: bool) -> (u16, String, TcpStream) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = if connect {
        "CONNECT db.internal:5432 HTTP/1.1\r\nHost: db.internal:5432\r\n\r\n".to_string()
    } else {
        "GET /chat HTTP/1.1\r\nHost: web\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n".to_string()
    };
    stream.write_all(request.as_bytes()).await.unwrap();
    let head = tokio::time::timeout(Duration::from_secs(10), read_head(&mut stream))
        .await
        .expect("a response head")
        .expect("a response head");
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, head, stream)
}

/// The tunnel carries bytes both ways.
async fn echoes(stream: &mut TcpStream) {
    stream.write_all(b"ping").await.unwrap();
    let mut echoed = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut echoed))
        .await
        .expect("echo")
        .unwrap();
    assert_eq!(&echoed, b"ping");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrades_and_connect_hold_a_concurrency_slot_while_open() {
    let app = upgrading_app().await;
    let (proxy, _file) = limited_inbound(app, "  limits: {maxConcurrentRequests: 1}\n").await;

    let (status, head, mut websocket) = open(proxy.inbound, false).await;
    assert_eq!(status, 101, "{head}");
    echoes(&mut websocket).await;
    // While it is open the pod is at its limit: another upgrade, a CONNECT
    // and a plain request are all shed.
    for connect in [false, true] {
        let (status, head, _) = open(proxy.inbound, connect).await;
        assert_eq!(status, 503, "{head}");
        assert!(
            head.to_ascii_lowercase()
                .contains("x-outrigger-error: overloaded"),
            "{head}"
        );
    }
    let (status, headers, _) = request(proxy.inbound, "GET", "/", &[("host", "web")], b"").await;
    assert_eq!(status, 503);
    assert_eq!(headers["x-outrigger-error"], "overloaded");

    // Closed, it frees the slot (once the proxy has seen both sides end).
    drop(websocket);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let mut tunnel = loop {
        let (status, head, stream) = open(proxy.inbound, true).await;
        if status == 200 {
            break stream;
        }
        assert_eq!(status, 503, "{head}");
        assert!(
            std::time::Instant::now() < deadline,
            "the slot was not released"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    echoes(&mut tunnel).await;
    let (status, _, _) = open(proxy.inbound, false).await;
    assert_eq!(status, 503, "the CONNECT tunnel holds the slot now");
    let metrics = proxy.metrics().await;
    assert!(
        metric_value(&metrics, "outrigger_shed_requests_total", &["queue-full"]) >= 4.0,
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrades_and_connect_meet_the_rate_limit() {
    let app = upgrading_app().await;
    let (proxy, _file) =
        limited_inbound(app, "  rateLimit: {requestsPerSecond: 1, burst: 1}\n").await;
    let (status, head, mut websocket) = open(proxy.inbound, false).await;
    assert_eq!(status, 101, "{head}");
    echoes(&mut websocket).await;
    for connect in [false, true] {
        let (status, head, _) = open(proxy.inbound, connect).await;
        assert_eq!(status, 429, "{head}");
        let head = head.to_ascii_lowercase();
        assert!(head.contains("x-outrigger-error: rate-limited"), "{head}");
        assert!(head.contains("retry-after: 1"), "{head}");
    }
    let metrics = proxy.metrics().await;
    assert_eq!(
        metric_value(&metrics, "outrigger_rate_limited_total", &[]),
        2.0,
        "{metrics}"
    );
}

/// Every series of `/metrics`, without its value.
fn series(metrics: &str) -> BTreeSet<String> {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            l.rsplit_once(' ')
                .map_or(l, |(series, _)| series)
                .to_string()
        })
        .collect()
}

/// One round of what a hostile client controls, every value fresh: hosts
/// and ports it names (plain requests, upgrades, CONNECT tunnels), methods,
/// paths, header names and values, on both sides of the proxy.
async fn hostile_round(outbound: SocketAddr, inbound: SocketAddr, n: usize) {
    let host = loopback(free_port()).to_string();
    let path = format!("/{n}/{}?q={n}", "x".repeat(n % 50));
    let method = format!("M{n}X");
    let header = format!("x-hostile-{n}");
    for (method, extra) in [
        ("GET", None),
        (method.as_str(), None),
        ("GET", Some(("upgrade", "websocket"))),
    ] {
        let mut headers = vec![("host", host.as_str()), (header.as_str(), "v")];
        if let Some(pair) = extra {
            headers.extend([pair, ("connection", "upgrade")]);
        }
        let (status, _, _) = request(outbound, method, &path, &headers, b"").await;
        assert_eq!(status, 502, "{method} {host}");
    }
    // A CONNECT tunnel to a port of its choosing (nothing listens: 502).
    let target = loopback(free_port());
    let mut stream = tokio::net::TcpStream::connect(outbound).await.unwrap();
    stream
        .write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 502");
    // The app's side: whatever path, method and headers.
    let agent = format!("hostile/{n}");
    for method in ["GET", method.as_str()] {
        let headers = [
            (header.as_str(), agent.as_str()),
            ("user-agent", agent.as_str()),
        ];
        let (status, _, _) = request(inbound, method, &path, &headers, b"").await;
        assert_eq!(status, 200, "{method} {path}");
    }
}

/// Nothing a client sends decides how many series the proxy exports: after
/// a first batch of hostile rounds has spent the destination label budget,
/// a batch twice as long with fresh values adds no series at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_never_adds_metric_series() {
    let app = FaultUpstream::start(loopback(0), FaultConfig::default())
        .await
        .unwrap();
    let proxy = ProxyProcess::start(&[
        "--max-destination-labels=3",
        &format!("--app-addr={}", app.addr),
    ])
    .await;
    for n in 0..8 {
        hostile_round(proxy.outbound, proxy.inbound, n).await;
    }
    let first = series(&proxy.metrics().await);
    for n in 8..24 {
        hostile_round(proxy.outbound, proxy.inbound, n).await;
    }
    let metrics = proxy.metrics().await;
    let second = series(&metrics);
    let added: Vec<_> = second.difference(&first).collect();
    assert!(
        added.is_empty(),
        "series added by fresh hostile input: {added:#?}"
    );
    assert!(
        second.len() < 300,
        "{} series after 24 hostile rounds\n{metrics}",
        second.len()
    );
    // The rounds were counted: the requests went into the shared series.
    assert_eq!(
        metric_value(
            &metrics,
            "outrigger_requests_total",
            &["direction=\"outbound\""]
        ),
        24.0 * 4.0,
        "{metrics}"
    );
}
