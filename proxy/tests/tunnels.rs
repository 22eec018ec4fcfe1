//! Traffic that is not plain request/response HTTP: WebSocket upgrades, CONNECT
//! tunnels, and opaque TCP (a real redis-server), through the real binary.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use outrigger_e2e::proxy::*;
use outrigger_tools::fault_upstream::{FaultConfig, FaultUpstream};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::process::Command;

fn peer_script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/peers")
        .join(name)
}

/// Fails the test when python3 lacks `websockets` (tests/setup.sh installs it).
fn require_python_websockets() {
    let ok = std::process::Command::new("python3")
        .args(["-c", "import websockets"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        ok,
        "python3 with websockets is needed: run `bash tests/setup.sh` (as root) first"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_echo_through_inbound() {
    let (_server, port) = start_ws_echo_server().await;
    let proxy = ProxyProcess::start(&[&format!("--app-addr={}", loopback(port))]).await;
    let out = run(
        "python3",
        &[
            peer_script("ws_client.py").to_str().unwrap(),
            &format!("ws://{}/chat", proxy.inbound),
            "hello",
            "through the proxy",
        ],
    )
    .await;
    assert_eq!(out, "hello\nthrough the proxy\nbinary-ok\n");
}

/// Starts tests/peers/ws_echo_server.py and returns it with its port.
async fn start_ws_echo_server() -> (tokio::process::Child, u16) {
    require_python_websockets();
    let mut server = Command::new("python3")
        .arg(peer_script("ws_echo_server.py"))
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(server.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .expect("websocket server starts")
        .unwrap();
    // The server binds a port of the system's choosing and names it.
    let port: u16 = first
        .as_deref()
        .and_then(|line| line.strip_prefix("listening "))
        .and_then(|port| port.parse().ok())
        .unwrap_or_else(|| panic!("unexpected first line {first:?}"));
    (server, port)
}

fn tunnel_bytes(metrics: &str, direction: &str, flow: &str) -> f64 {
    metric_value(
        metrics,
        "outrigger_tcp_bytes_total",
        &[
            &format!("direction=\"{direction}\""),
            &format!("flow=\"{flow}\""),
        ],
    )
}

/// A WebSocket lives as long as the page or the client that opened it: its
/// bytes are counted as they pass, not when it closes. The client echoes a
/// 1 MB message, then holds the connection open while the test reads the
/// counters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_bytes_count_while_the_connection_is_open() {
    let (_server, port) = start_ws_echo_server().await;
    let proxy = ProxyProcess::start(&[&format!("--app-addr={}", loopback(port))]).await;
    let mut client = Command::new("python3")
        .arg(peer_script("ws_client.py"))
        .args(["--hold", &format!("ws://{}/chat", proxy.inbound), "hello"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = client.stdin.take().unwrap();
    let mut lines = BufReader::new(client.stdout.take().unwrap()).lines();
    for expected in ["hello", "binary-ok", "holding"] {
        let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
            .await
            .expect("websocket client answers")
            .unwrap();
        assert_eq!(line.as_deref(), Some(expected));
    }
    // Open, and the 1 MB each way already counted.
    let metrics = proxy.metrics().await;
    for flow in ["sent", "received"] {
        let bytes = tunnel_bytes(&metrics, "inbound", flow);
        assert!(bytes >= 1_000_000.0, "{flow}: {bytes}\n{metrics}");
    }
    stdin.write_all(b"goodbye\n").await.unwrap();
    let last = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .expect("websocket client answers")
        .unwrap();
    assert_eq!(last.as_deref(), Some("goodbye"));
    assert!(client.wait().await.unwrap().success());
}

/// A CONNECT tunnel's bytes show while it is open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_tunnel_bytes_count_while_the_tunnel_is_open() {
    let echo = TcpListener::bind(loopback(0)).await.unwrap();
    let echo_addr = echo.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = echo.accept().await {
            tokio::spawn(async move {
                let (mut read, mut write) = stream.into_split();
                let _ = tokio::io::copy(&mut read, &mut write).await;
            });
        }
    });
    let proxy = ProxyProcess::start(&[]).await;
    let stream = tokio::net::TcpStream::connect(proxy.outbound)
        .await
        .unwrap();
    let mut stream = BufReader::new(stream);
    stream
        .get_mut()
        .write_all(format!("CONNECT {echo_addr} HTTP/1.1\r\nHost: {echo_addr}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut status = String::new();
    stream.read_line(&mut status).await.unwrap();
    assert!(status.starts_with("HTTP/1.1 200"), "{status:?}");
    loop {
        let mut header = String::new();
        stream.read_line(&mut header).await.unwrap();
        if header == "\r\n" {
            break;
        }
    }
    let payload = vec![7u8; 100_000];
    stream.get_mut().write_all(&payload).await.unwrap();
    let mut echoed = vec![0u8; payload.len()];
    stream.read_exact(&mut echoed).await.unwrap();
    assert_eq!(echoed, payload);
    let metrics = proxy.metrics().await;
    for flow in ["sent", "received"] {
        let bytes = tunnel_bytes(&metrics, "outbound", flow);
        assert!(bytes >= 100_000.0, "{flow}: {bytes}\n{metrics}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_tunnel_through_outbound() {
    require_tool("curl");
    let upstream = FaultUpstream::start(loopback(0), FaultConfig::default())
        .await
        .unwrap();
    let proxy = ProxyProcess::start(&[]).await;
    // -p makes curl open a CONNECT tunnel and speak HTTP inside it.
    let out = run(
        "curl",
        &[
            "-sS",
            "--fail",
            "-p",
            "-x",
            &format!("http://{}", proxy.outbound),
            &format!("http://{}/bytes/100000", upstream.addr),
            "-o",
            "/dev/null",
            "-w",
            "%{size_download}",
        ],
    )
    .await;
    assert_eq!(out, "100000");
    // The tunnel's bytes are counted when the proxy sees it close, which can
    // be a moment after curl has exited.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let metrics = proxy.metrics().await;
        let received = metric_value(
            &metrics,
            "outrigger_tcp_bytes_total",
            &["flow=\"received\""],
        );
        if received >= 100000.0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{metrics}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

struct Redis {
    port: u16,
    _child: tokio::process::Child,
}

async fn start_redis() -> Redis {
    require_tool("redis-server");
    require_tool("redis-cli");
    let port = free_port();
    let child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(loopback(port))
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "redis-server did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Redis {
        port,
        _child: child,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_through_inbound_detected_and_opaque_port() {
    let redis = start_redis().await;
    // Once detected as non-HTTP, and once on a port marked opaque (no detection).
    for opaque in [false, true] {
        let mut args = vec![format!("--app-addr={}", loopback(redis.port))];
        if opaque {
            args.push(format!("--opaque-ports={}", redis.port));
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let proxy = ProxyProcess::start(&args).await;
        let port = proxy.inbound.port().to_string();
        let key = format!("key-{opaque}");
        let set = run(
            "redis-cli",
            &["-p", &port, "SET", &key, "value with spaces"],
        )
        .await;
        assert_eq!(set.trim(), "OK");
        let get = run("redis-cli", &["-p", &port, "GET", &key]).await;
        assert_eq!(get.trim(), "value with spaces");
        let metrics = proxy.metrics().await;
        assert_eq!(
            metric_value(
                &metrics,
                "outrigger_connections_total",
                &["protocol=\"opaque\""]
            ),
            2.0,
            "{metrics}"
        );
        assert!(metric_value(&metrics, "outrigger_tcp_bytes_total", &["flow=\"sent\""]) > 0.0);
    }
}

/// A server that speaks first (like SMTP or MySQL) must not wait for the client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_speaks_first_on_opaque_port_does_not_stall() {
    let listener = TcpListener::bind(loopback(0)).await.unwrap();
    let banner_port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let _ = stream.write_all(b"220 banner\r\n").await;
                let mut buf = [0u8; 64];
                // Echo one client line so half-close behaviour can be checked.
                if let Ok(n) = stream.read(&mut buf).await {
                    let _ = stream.write_all(&buf[..n]).await;
                }
            });
        }
    });
    let proxy = ProxyProcess::start(&[
        &format!("--app-addr={}", loopback(banner_port)),
        &format!("--opaque-ports={banner_port}"),
        "--detect-timeout=5s",
    ])
    .await;
    let started = Instant::now();
    let mut client = tokio::net::TcpStream::connect(proxy.inbound).await.unwrap();
    let mut banner = [0u8; 12];
    client.read_exact(&mut banner).await.unwrap();
    assert_eq!(&banner, b"220 banner\r\n");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "stalled {:?}",
        started.elapsed()
    );

    // Half-close: the client shuts its write side and still reads the reply.
    client.write_all(b"QUIT\r\n").await.unwrap();
    client.shutdown().await.unwrap();
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).await.unwrap();
    assert_eq!(rest, b"QUIT\r\n");
}
