//! Long-lived and server-first TCP through the transparent outbound proxy,
//! with real peers on both ends, as an application pod uses them: a RabbitMQ
//! broker (Debian's `rabbitmq-server`) with a Python AMQP client (pika), and
//! an SMTP server (aiosmtpd) with Python's own smtplib client.
//!
//! Each test creates a network namespace (removed at the end) where iptables
//! redirects the client's connections into the proxy's outbound listener, as
//! the injected init container does in a pod. What is simulated: the broker
//! and the mail server run in the same namespace as the client, on its
//! loopback, instead of in another pod.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use outrigger_e2e::netns::Netns;
use outrigger_e2e::proxy::*;
use outrigger_e2e::temp_dir;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

const MARK: &str = "0x4f52";
const RABBITMQ_SERVER: &str = "/usr/lib/rabbitmq/bin/rabbitmq-server";

fn peer_script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/peers")
        .join(name)
}

/// Fails the test when python3 lacks a module tests/setup.sh installs.
fn require_python_module(module: &str) {
    let ok = std::process::Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        ok,
        "python3 with {module} is needed: run `bash tests/setup.sh` (as root) first"
    );
}

/// A process started in its own process group, killed with the whole group
/// when dropped: brokers start helpers (the Erlang VM's children) that
/// killing only the first process would leave behind.
struct Group(Child);

impl Group {
    fn spawn(mut command: Command) -> Group {
        command.process_group(0).kill_on_drop(true);
        Group(command.spawn().expect("spawn"))
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        if let Some(pid) = self.0.id() {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{pid}")])
                .status();
        }
    }
}

/// A proxy in transparent outbound mode inside `ns` (listeners on the
/// namespace's loopback), with `extra` flags.
async fn transparent_proxy(ns: &Netns, outbound: u16, admin: u16, extra: &[&str]) -> Group {
    let mut command = ns.command(&[
        proxy_binary(),
        "--outbound-mode=transparent",
        &format!("--outbound-addr=127.0.0.1:{outbound}"),
        &format!("--inbound-addr=127.0.0.1:{}", outbound + 3),
        &format!("--admin-addr=127.0.0.1:{admin}"),
        &format!("--outbound-mark={MARK}"),
    ]);
    command.args(extra).stdout(Stdio::null());
    let proxy = Group::spawn(command);
    ns.wait_ok(&["curl", "-sf", &format!("http://127.0.0.1:{admin}/ready")])
        .await;
    proxy
}

/// Redirects the namespace's connections to `port` into `to_port` (the
/// proxy's outbound listener); the proxy's own marked connections go out.
fn redirect(ns: &Netns, port: u16, to_port: u16) {
    ns.exec_ok(&[
        "iptables", "-t", "nat", "-A", "OUTPUT", "-p", "tcp", "-m", "mark", "--mark", MARK, "-j",
        "RETURN",
    ]);
    ns.exec_ok(&[
        "iptables",
        "-t",
        "nat",
        "-A",
        "OUTPUT",
        "-p",
        "tcp",
        "--dport",
        &port.to_string(),
        "-j",
        "REDIRECT",
        "--to-ports",
        &to_port.to_string(),
    ]);
}

fn scrape(ns: &Netns, admin: u16) -> String {
    ns.exec_ok(&["curl", "-sf", &format!("http://127.0.0.1:{admin}/metrics")])
}

async fn next_line(lines: &mut Lines<BufReader<ChildStdout>>, what: &str) -> String {
    tokio::time::timeout(Duration::from_secs(60), lines.next_line())
        .await
        .unwrap_or_else(|_| panic!("{what}: no line within 60s"))
        .unwrap()
        .unwrap_or_else(|| panic!("{what}: output ended"))
}

/// Waits (60s at most: the Erlang VM starts slowly on a busy machine) until
/// something accepts connections on the namespace's `port`.
async fn wait_listening(ns: &Netns, port: u16, log: &Path) {
    let probe = format!("exec 3<>/dev/tcp/127.0.0.1/{port}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ok = ns
            .command(&["bash", "-c", &probe])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await
            .map(|s| s.success())
            .unwrap_or(false);
        if ok {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "nothing listens on {port}: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A broker connection stays open for as long as the application runs, so
/// its bytes must show while it lives, not only when it closes: the client
/// publishes and consumes in rounds over one AMQP connection, and between
/// rounds, with the connection open, the proxy's byte counters already hold
/// every message body that crossed it. AMQP's port (5672) is not in the
/// default opaque list: the client speaks first, and detection sees at once
/// that it is not HTTP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_publish_and_consume_bytes_count_while_the_connection_lives() {
    for tool in ["ip", "iptables", "curl", "epmd", "bash", RABBITMQ_SERVER] {
        require_tool(tool);
    }
    require_python_module("pika");
    let ns = Netns::create(&format!("ortest-amqp-{}", std::process::id()));
    let dir = temp_dir("rabbitmq");
    let log = dir.join("broker.log");

    // The Erlang port mapper, owned by the test (the broker would otherwise
    // start a daemon that outlives it).
    let mut epmd = ns.command(&["epmd", "-address", "127.0.0.1"]);
    epmd.stdout(Stdio::null());
    let _epmd = Group::spawn(epmd);
    let mut broker = ns.command(&[RABBITMQ_SERVER]);
    broker
        .env("HOME", &dir)
        .env("RABBITMQ_NODENAME", "rabbit@localhost")
        .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
        .env("RABBITMQ_NODE_PORT", "5672")
        .env("RABBITMQ_DIST_PORT", "25672")
        .env("RABBITMQ_MNESIA_BASE", dir.join("mnesia"))
        .env("RABBITMQ_LOG_BASE", dir.join("log"))
        .env("RABBITMQ_CONFIG_FILE", dir.join("none"))
        .env("RABBITMQ_ENABLED_PLUGINS_FILE", dir.join("enabled_plugins"))
        .env("RABBITMQ_PID_FILE", dir.join("pid"))
        .env("ERL_EPMD_ADDRESS", "127.0.0.1")
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(Stdio::null());
    let _broker = Group::spawn(broker);
    wait_listening(&ns, 5672, &log).await;

    let _proxy = transparent_proxy(&ns, 4140, 4191, &[]).await;
    redirect(&ns, 5672, 4140);

    const MESSAGES: u64 = 50;
    const SIZE: u64 = 4096;
    let mut client = ns.command(&[
        "python3",
        peer_script("amqp_client.py").to_str().unwrap(),
        "127.0.0.1",
        "5672",
        &MESSAGES.to_string(),
        &SIZE.to_string(),
    ]);
    client
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true);
    let mut client = client.spawn().unwrap();
    let mut stdin = client.stdin.take().unwrap();
    let mut lines = BufReader::new(client.stdout.take().unwrap()).lines();

    let destination = "destination=\"127.0.0.1:5672\"";
    let direction = "direction=\"outbound\"";
    for round in 1..=2u64 {
        let line = next_line(&mut lines, "amqp client").await;
        assert_eq!(line, format!("round {round} ok {}", MESSAGES * SIZE));
        // The connection is open (the client waits on its stdin): the bodies
        // published (sent) and consumed (received) are already counted.
        let metrics = scrape(&ns, 4191);
        let open = metric_value(
            &metrics,
            "outrigger_open_connections",
            &[direction, "protocol=\"opaque\""],
        );
        assert_eq!(open, 1.0, "{metrics}");
        for flow in ["flow=\"sent\"", "flow=\"received\""] {
            let bytes = metric_value(
                &metrics,
                "outrigger_tcp_bytes_total",
                &[direction, destination, flow],
            );
            assert!(
                bytes >= (round * MESSAGES * SIZE) as f64,
                "round {round}, {flow}: {bytes} bytes counted\n{metrics}"
            );
        }
        let next = if round == 1 { "again\n" } else { "close\n" };
        stdin.write_all(next.as_bytes()).await.unwrap();
        stdin.flush().await.unwrap();
    }
    assert_eq!(next_line(&mut lines, "amqp client").await, "closed");
    assert!(client.wait().await.unwrap().success());
    let metrics = scrape(&ns, 4191);
    assert_eq!(
        metric_value(
            &metrics,
            "outrigger_connections_total",
            &[direction, "protocol=\"opaque\""]
        ),
        1.0,
        "one broker connection, captured and forwarded opaquely\n{metrics}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// SMTP's server speaks first, so a client sends nothing until it has read
/// the greeting, and protocol detection, waiting for the client's first
/// bytes, stalls the greeting until it gives up (`--detect-timeout`, 1s by
/// default, 3s here to tell it apart). The mail still flows, but every
/// connection waits. Port 2525 is not in the default opaque list; what the
/// user sets is the pod annotation `outrigger.dev/opaque-ports: "2525"` (the
/// proxy's `--opaque-ports` / `OUTRIGGER_OPAQUE_PORTS`) on the client's pod,
/// and on the server's pod when it is meshed: then the greeting passes at
/// once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_first_smtp_waits_for_detection_unless_its_port_is_opaque() {
    for tool in ["ip", "iptables", "curl"] {
        require_tool(tool);
    }
    require_python_module("aiosmtpd");
    let ns = Netns::create(&format!("ortest-smtp-{}", std::process::id()));
    let mut server = ns.command(&[
        "python3",
        peer_script("smtp_peer.py").to_str().unwrap(),
        "serve",
        "127.0.0.1",
        "2525",
    ]);
    server.stdout(Stdio::piped());
    let mut server = Group::spawn(server);
    let mut delivered = BufReader::new(server.0.stdout.take().unwrap()).lines();
    assert_eq!(
        next_line(&mut delivered, "smtp server").await,
        "listening 2525"
    );

    // Two proxies side by side: one with the default opaque ports, one told
    // that 2525 is opaque; the redirect points at one, then the other.
    let detect = "--detect-timeout=3s";
    let _detecting = transparent_proxy(&ns, 4140, 4191, &[detect]).await;
    let _opaque = transparent_proxy(&ns, 4150, 4192, &[detect, "--opaque-ports=2525"]).await;
    redirect(&ns, 2525, 4140);

    const SIZE: usize = 20_000;
    let send = |ns: &Netns| {
        ns.exec_ok(&[
            "python3",
            peer_script("smtp_peer.py").to_str().unwrap(),
            "send",
            "127.0.0.1",
            "2525",
            &SIZE.to_string(),
        ])
    };
    let greeting = |out: &str| -> f64 {
        out.trim()
            .strip_prefix("greeting ")
            .and_then(|rest| rest.strip_suffix(" sent"))
            .and_then(|secs| secs.parse().ok())
            .unwrap_or_else(|| panic!("unexpected client output {out:?}"))
    };

    let waited = greeting(&send(&ns));
    assert!(
        waited >= 3.0,
        "the greeting should wait for detection to time out, came after {waited}s"
    );
    let line = next_line(&mut delivered, "smtp server").await;
    assert!(line.starts_with("delivered app@example.test "), "{line}");
    let metrics = scrape(&ns, 4191);
    assert!(
        metric_value(
            &metrics,
            "outrigger_tcp_bytes_total",
            &["destination=\"127.0.0.1:2525\"", "flow=\"sent\""]
        ) >= SIZE as f64,
        "{metrics}"
    );

    // Point the capture at the proxy that knows 2525 is opaque.
    ns.exec_ok(&[
        "iptables",
        "-t",
        "nat",
        "-R",
        "OUTPUT",
        "2",
        "-p",
        "tcp",
        "--dport",
        "2525",
        "-j",
        "REDIRECT",
        "--to-ports",
        "4150",
    ]);
    let waited = greeting(&send(&ns));
    assert!(
        waited < 3.0,
        "on an opaque port the greeting passes at once, came after {waited}s"
    );
    let line = next_line(&mut delivered, "smtp server").await;
    assert!(line.starts_with("delivered app@example.test "), "{line}");
    let metrics = scrape(&ns, 4192);
    assert_eq!(
        metric_value(
            &metrics,
            "outrigger_connections_total",
            &["direction=\"outbound\"", "protocol=\"opaque\""]
        ),
        1.0,
        "{metrics}"
    );
    assert!(
        metric_value(
            &metrics,
            "outrigger_tcp_bytes_total",
            &["destination=\"127.0.0.1:2525\"", "flow=\"sent\""]
        ) >= SIZE as f64,
        "{metrics}"
    );
}
