//! Policy distribution end to end: the operator in local mode (files instead
//! of an API server — there is none here) streams policy and endpoints to two
//! real proxies; fault-injecting upstreams count what reaches them.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use outrigger_e2e::{binary, http, temp_dir, wait_until, Process};
use outrigger_tools::fault_upstream::{Fault, FaultConfig, FaultUpstream};

const HOST: &str = "web.demo";

fn manifests(ports: &[u16], retry_attempts: u32) -> String {
    let mut text = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: web, namespace: demo}}\nspec:\n  clusterIP: 10.96.7.7\n  ports: [{{name: http, port: 80, targetPort: http}}]\n---\napiVersion: outrigger.dev/v1alpha1\nkind: ResiliencePolicy\nmetadata: {{name: web, namespace: demo}}\nspec:\n  targetRef: {{kind: Service, name: web}}\n  retry: {{attempts: {retry_attempts}, backoff: {{base: 1ms, max: 5ms}}, budget: {{percent: 100, minRetryRate: {{count: 1000, interval: 1s}}}}}}\n"
    );
    for (i, port) in ports.iter().enumerate() {
        text.push_str(&format!(
            "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: web-{i}, namespace: demo, labels: {{kubernetes.io/service-name: web}}}}\naddressType: IPv4\nports: [{{name: http, port: {port}}}]\nendpoints: [{{addresses: [127.0.0.1], conditions: {{ready: true}}}}]\n"
        ));
    }
    text
}

async fn upstream() -> FaultUpstream {
    FaultUpstream::start("127.0.0.1:0".parse().unwrap(), FaultConfig::default())
        .await
        .unwrap()
}

async fn operator(dir: &Path, policy_addr: &str) -> Process {
    operator_with(dir, policy_addr, &[]).await
}

async fn operator_with(dir: &Path, policy_addr: &str, extra: &[String]) -> Process {
    let bin = binary("outrigger-operator", "outrigger-operator").unwrap();
    let mut args = vec![
        "run".into(),
        format!("--manifests={}", dir.display()),
        "--manifests-poll=50ms".into(),
        "--admin-addr=127.0.0.1:0".into(),
        format!("--policy-addr={policy_addr}"),
        "--heartbeat=1s".into(),
    ];
    args.extend_from_slice(extra);
    // Ready once the manifests have been read and compiled.
    Process::start(&bin, &args)
        .await
        .wait_ready(Duration::from_secs(10))
        .await
}

async fn proxy(control: std::net::SocketAddr, id: &str, state_dir: Option<&Path>) -> Process {
    proxy_with(&format!("http://{control}"), id, state_dir, &[]).await
}

async fn proxy_with(
    control_url: &str,
    id: &str,
    state_dir: Option<&Path>,
    extra: &[String],
) -> Process {
    let bin = binary("outrigger-proxy", "outrigger-proxy").unwrap();
    let mut args = vec![
        "--inbound-addr=127.0.0.1:0".to_string(),
        "--outbound-addr=127.0.0.1:0".into(),
        "--admin-addr=127.0.0.1:0".into(),
        format!("--control-plane={control_url}"),
        format!("--proxy-id={id}"),
        "--namespace=demo".into(),
        "--log-level=warn".into(),
    ];
    if let Some(dir) = state_dir {
        args.push(format!("--state-dir={}", dir.display()));
    }
    args.extend_from_slice(extra);
    Process::start(&bin, &args)
        .await
        .wait_ready(Duration::from_secs(10))
        .await
}

/// GET through a proxy's outbound listener to the `web` Service.
async fn get(proxy: &Process) -> u16 {
    http(proxy.addr("outbound"), "GET", "/", HOST)
        .await
        .map(|(status, _)| status)
        .unwrap_or(0)
}

/// Whether the proxy retries 503s: a script of 503 then 200 gives 200.
async fn retries_now(proxy: &Process, app: &FaultUpstream) -> bool {
    app.set_script(vec![Fault::status(503), Fault::default()]);
    let status = get(proxy).await;
    app.set_script(vec![]);
    status == 200
}

struct Files(PathBuf);

impl Files {
    fn write(&self, text: &str) {
        let temp = self.0.join("web.yaml.tmp");
        std::fs::write(&temp, text).unwrap();
        std::fs::rename(&temp, self.0.join("web.yaml")).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_edit_reaches_both_proxies() {
    let app = upstream().await;
    let files = Files(temp_dir("edit"));
    files.write(&manifests(&[app.addr.port()], 2));
    let op = operator(&files.0, "127.0.0.1:0").await;
    let control = op.addr("policy");
    let (a, b) = (
        proxy(control, "proxy-a", None).await,
        proxy(control, "proxy-b", None).await,
    );

    for p in [&a, &b] {
        let before = app.hits();
        app.set_script(vec![
            Fault::status(503),
            Fault::status(503),
            Fault::default(),
        ]);
        assert_eq!(get(p).await, 200, "retried twice per the policy");
        assert_eq!(app.hits() - before, 3);
    }

    let edited = Instant::now();
    files.write(&manifests(&[app.addr.port()], 0));
    for p in [&a, &b] {
        wait_until(Duration::from_secs(10), "retries off", || async {
            !retries_now(p, &app).await
        })
        .await;
    }
    eprintln!(
        "policy edit applied by both proxies after {:?}",
        edited.elapsed()
    );
    assert!(edited.elapsed() < Duration::from_secs(5));

    // Both proxies acknowledged the new version.
    let admin = op.addr("admin");
    let metrics = http(admin, "GET", "/metrics", "a").await.unwrap().1;
    assert!(
        metrics.contains("outrigger_operator_connected_proxies 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("outrigger_operator_change_to_ack_seconds_count"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_changes_lose_no_request_under_load() {
    let (old, new) = (upstream().await, upstream().await);
    let files = Files(temp_dir("endpoints"));
    files.write(&manifests(&[old.addr.port()], 0));
    let op = operator(&files.0, "127.0.0.1:0").await;
    let p = Arc::new(proxy(op.addr("policy"), "proxy-load", None).await);

    let failures = Arc::new(AtomicU64::new(0));
    let sent = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (p, failures, sent, stop) = (p.clone(), failures.clone(), sent.clone(), stop.clone());
        tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(20);
            while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                if get(&p).await != 200 {
                    failures.fetch_add(1, Ordering::SeqCst);
                }
                sent.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    wait_until(
        Duration::from_secs(5),
        "traffic to the first endpoint",
        || async { old.hits() > 20 },
    )
    .await;

    files.write(&manifests(&[old.addr.port(), new.addr.port()], 0));
    wait_until(
        Duration::from_secs(5),
        "the added endpoint gets traffic",
        || async { new.hits() > 20 },
    )
    .await;

    files.write(&manifests(&[new.addr.port()], 0));
    // Once the removal has propagated, the old endpoint gets nothing more.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let old_hits = old.hits();
    let before = sent.load(Ordering::SeqCst);
    wait_until(
        Duration::from_secs(5),
        "more traffic after removal",
        || async { sent.load(Ordering::SeqCst) > before + 50 },
    )
    .await;
    assert_eq!(
        old.hits(),
        old_hits,
        "removed endpoint still receives traffic"
    );

    stop.store(true, Ordering::SeqCst);
    load.await.unwrap();
    assert_eq!(
        failures.load(Ordering::SeqCst),
        0,
        "of {} requests",
        sent.load(Ordering::SeqCst)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxies_ride_out_an_operator_outage_and_restart_from_state() {
    let app = upstream().await;
    let files = Files(temp_dir("outage"));
    files.write(&manifests(&[app.addr.port()], 2));
    let policy_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let policy_addr = format!("127.0.0.1:{policy_port}");
    let mut op = operator(&files.0, &policy_addr).await;
    let control = op.addr("policy");
    let state = temp_dir("proxy-state");
    let mut a = proxy(control, "proxy-a", Some(&state)).await;
    let b = proxy(control, "proxy-b", None).await;
    for p in [&a, &b] {
        assert!(retries_now(p, &app).await);
    }

    // The operator goes away: both proxies keep the policy and the endpoints
    // (web.demo does not resolve in DNS: success proves the snapshot is used).
    op.kill().await;
    for _ in 0..10 {
        for p in [&a, &b] {
            assert!(retries_now(p, &app).await, "policy kept through the outage");
        }
    }

    // A proxy restarted during the outage starts from its state dir.
    a.kill().await;
    let a = proxy(control, "proxy-a", Some(&state)).await;
    assert!(
        retries_now(&a, &app).await,
        "restarted proxy uses the persisted policy"
    );
    let config = http(a.addr("admin"), "GET", "/config", "a")
        .await
        .unwrap()
        .1;
    assert!(config.contains("\"state-dir\""), "{config}");

    // The operator returns (same address) with an edited policy: both resync.
    files.write(&manifests(&[app.addr.port()], 0));
    let _op = operator(&files.0, &policy_addr).await;
    for p in [&a, &b] {
        wait_until(Duration::from_secs(20), "resync after restart", || async {
            !retries_now(p, &app).await
        })
        .await;
    }
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// A client that stops reading for a while is not queued for: the operator
/// keeps only the newest snapshot per subscription, so its memory stays flat,
/// and the client gets the latest state when it resumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_consumer_gets_only_the_newest_snapshot() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let files = Files(temp_dir("slow"));
    // 400 endpoints make each snapshot ~10 KiB, so socket buffers fill fast.
    let big = |max_ms: u32| {
        let mut text = manifests(&[], 1).replace("max: 5ms", &format!("max: {max_ms}ms"));
        let addresses: Vec<String> = (0..400)
            .map(|i| format!("10.9.{}.{}", i / 200, i % 200 + 1))
            .collect();
        text.push_str(&format!(
            "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: web-big, namespace: demo, labels: {{kubernetes.io/service-name: web}}}}\naddressType: IPv4\nports: [{{name: http, port: 8080}}]\nendpoints: [{{addresses: [{}]}}]\n",
            addresses.join(", ")
        ));
        text
    };
    files.write(&big(1));
    let op = operator(&files.0, "127.0.0.1:0").await;
    let pid = op.child.id().unwrap();

    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(op.addr("policy")).await.unwrap();
    let (read, mut write) = stream.into_split();
    write
        .write_all(b"GET /v1/watch?proxy=slow&destination=web.demo.svc.cluster.local:80 HTTP/1.1\r\nHost: op\r\n\r\n")
        .await
        .unwrap();
    let mut lines = BufReader::new(read).lines();
    let first = loop {
        let line = lines.next_line().await.unwrap().unwrap();
        if line.starts_with("{\"type\":\"snapshot\"") {
            break line;
        }
    };
    assert!(first.contains("\"max\":\"1ms\""), "{first}");

    // Thirty edits while the client reads nothing.
    let rss_before = rss_kib(pid);
    for max in 2..=31 {
        files.write(&big(max));
        tokio::time::sleep(Duration::from_millis(80)).await;
    }
    let rss_after = rss_kib(pid);
    assert!(
        rss_after < rss_before + 16 * 1024,
        "operator RSS grew from {rss_before} to {rss_after} KiB"
    );

    // Resuming, the client soon sees the last edit, having skipped most.
    let mut snapshots = 0;
    let reached_last = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.starts_with("{\"type\":\"snapshot\"") {
                snapshots += 1;
                if line.contains("\"max\":\"31ms\"") {
                    return true;
                }
            }
        }
        false
    })
    .await;
    assert_eq!(reached_last, Ok(true));
    // How many of the 30 arrive depends on kernel socket buffers (the operator
    // produces a line only when the connection can take one); the hub-level
    // test in operator/src/policy_server/hub.rs shows the coalescing itself.
    assert!(snapshots <= 30);
    eprintln!(
        "slow consumer: {snapshots} of 30 snapshots delivered; RSS {rss_before} -> {rss_after} KiB"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_clear_4xx() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let files = Files(temp_dir("malformed"));
    files.write(&manifests(&[], 0));
    let op = operator(&files.0, "127.0.0.1:0").await;
    let policy = op.addr("policy");
    async fn raw(addr: std::net::SocketAddr, request: &[u8]) -> String {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream.write_all(request).await.unwrap();
        let mut response = String::new();
        tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut response))
            .await
            .unwrap()
            .unwrap();
        response
    }
    for (request, status, message) in [
        ("GET /v1/watch?destination=web.demo:80 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n".to_string(), "400", "missing proxy"),
        ("GET /v1/watch?proxy=p&destination=nope HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n".into(), "400", "is not HOST:PORT"),
        ("GET /v1/watch?proxy=p&inbound=../etc HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n".into(), "400", "NAMESPACE/SERVICE"),
        ("DELETE /v1/watch HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n".into(), "405", "use GET"),
        ("GET /admin HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n".into(), "404", "not found"),
        ("POST /v1/ack HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nConnection: close\r\n\r\n{nope".into(), "400", "malformed ack"),
        (format!("POST /v1/ack HTTP/1.1\r\nHost: a\r\nContent-Length: 10000\r\nConnection: close\r\n\r\n{}", "x".repeat(10000)), "413", "4096 bytes"),
    ] {
        let response = raw(policy, request.as_bytes()).await;
        assert!(response.starts_with(&format!("HTTP/1.1 {status}")), "{request:?} -> {response}");
        assert!(response.contains(message), "{request:?} -> {response}");
    }
    // The server still serves a good subscription afterwards.
    let response = http(op.addr("admin"), "GET", "/ready", "a").await.unwrap();
    assert_eq!(response.0, 200);
}

fn gen_certs(name: &str) -> PathBuf {
    let dir = temp_dir(name);
    let bin = binary("outrigger-operator", "outrigger-operator").unwrap();
    let status = std::process::Command::new(bin)
        .arg("gen-certs")
        .arg(&dir)
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    dir
}

/// The policy stream over TLS: a proxy pinned to the operator's CA gets its
/// policy; one pinned to another CA gets nothing (and falls back to DNS, which
/// cannot resolve the Service here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_stream_over_tls_with_a_pinned_ca() {
    let app = upstream().await;
    let files = Files(temp_dir("tls"));
    files.write(&manifests(&[app.addr.port()], 2));
    let certs = gen_certs("certs");
    let op = operator_with(
        &files.0,
        "127.0.0.1:0",
        &[
            format!("--tls-cert={}", certs.join("tls.crt").display()),
            format!("--tls-key={}", certs.join("tls.key").display()),
        ],
    )
    .await;
    let url = format!("https://127.0.0.1:{}", op.addr("policy").port());
    let ca = |dir: &Path| format!("--control-ca={}", dir.join("ca.crt").display());

    let trusted = proxy_with(&url, "trusted", None, &[ca(&certs)]).await;
    assert!(retries_now(&trusted, &app).await, "policy arrived over TLS");

    let other = gen_certs("other-certs");
    let stranger = proxy_with(
        &url,
        "stranger",
        None,
        &[ca(&other), "--control-initial-wait=300ms".into()],
    )
    .await;
    assert_eq!(
        get(&stranger).await,
        502,
        "no snapshot from an untrusted server"
    );

    // https without a CA is refused at start, with the reason.
    let bin = binary("outrigger-proxy", "outrigger-proxy").unwrap();
    let output = std::process::Command::new(bin)
        .args([
            "--inbound-addr=127.0.0.1:0",
            "--outbound-addr=127.0.0.1:0",
            "--admin-addr=127.0.0.1:0",
        ])
        .arg(format!("--control-plane={url}"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("pass --control-ca"));
}

/// Local mode with a shared token: a proxy with the token is served, one
/// without gets nothing (401s, counted), and falls back to DNS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_token_is_required_when_configured() {
    let app = upstream().await;
    let files = Files(temp_dir("token"));
    files.write(&manifests(&[app.addr.port()], 2));
    let secrets = temp_dir("token-secret");
    std::fs::write(secrets.join("token"), "t0ken\n").unwrap();
    std::fs::write(secrets.join("wrong"), "nope\n").unwrap();
    let op = operator_with(
        &files.0,
        "127.0.0.1:0",
        &[
            "--auth=shared-token".into(),
            format!("--shared-token-file={}", secrets.join("token").display()),
        ],
    )
    .await;
    let url = format!("http://{}", op.addr("policy"));
    let good = proxy_with(
        &url,
        "good",
        None,
        &[format!(
            "--control-token-file={}",
            secrets.join("token").display()
        )],
    )
    .await;
    assert!(retries_now(&good, &app).await);
    let bad = proxy_with(
        &url,
        "bad",
        None,
        &[
            format!("--control-token-file={}", secrets.join("wrong").display()),
            "--control-initial-wait=300ms".into(),
        ],
    )
    .await;
    assert_eq!(get(&bad).await, 502);
    let metrics = http(op.addr("admin"), "GET", "/metrics", "a")
        .await
        .unwrap()
        .1;
    assert!(
        metrics.contains("outrigger_operator_auth_failures_total{reason=\"unauthenticated\"}"),
        "{metrics}"
    );
}

/// `count` Services `web0.demo` … with a retry policy each, all backed by `port`.
fn many_services(count: usize, port: u16, retry_attempts: u32) -> String {
    (0..count)
        .map(|i| {
            format!(
                "apiVersion: v1\nkind: Service\nmetadata: {{name: web{i}, namespace: demo}}\nspec:\n  clusterIP: 10.96.8.{n}\n  ports: [{{name: http, port: 80, targetPort: http}}]\n---\napiVersion: outrigger.dev/v1alpha1\nkind: ResiliencePolicy\nmetadata: {{name: web{i}, namespace: demo}}\nspec:\n  targetRef: {{kind: Service, name: web{i}}}\n  retry: {{attempts: {retry_attempts}, backoff: {{base: 1ms, max: 5ms}}, budget: {{percent: 100, minRetryRate: {{count: 1000, interval: 1s}}}}}}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: web{i}-a, namespace: demo, labels: {{kubernetes.io/service-name: web{i}}}}}\naddressType: IPv4\nports: [{{name: http, port: {port}}}]\nendpoints: [{{addresses: [127.0.0.1], conditions: {{ready: true}}}}]\n---\n",
                n = i + 1
            )
        })
        .collect()
}

/// Established TCP connections whose remote end is `port` on loopback (the
/// client side of connections to a server on `port`), from /proc/net/tcp{,6}.
fn connections_to(port: u16) -> usize {
    let port = format!("{port:04X}");
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .map(|text| {
            text.lines()
                .skip(1)
                .filter(|line| {
                    let fields: Vec<&str> = line.split_whitespace().collect();
                    // sl local_address rem_address st: 01 = ESTABLISHED
                    fields.len() > 3
                        && fields[2].rsplit(':').next() == Some(port.as_str())
                        && fields[3] == "01"
                })
                .count()
        })
        .sum()
}

/// The proxy's control-plane subscriptions from its `/config`:
/// (subscription key, connected, retry attempts of the applied snapshot).
async fn subscriptions(proxy: &Process) -> Vec<(String, bool, serde_json::Value)> {
    let config = http(proxy.addr("admin"), "GET", "/config", "a")
        .await
        .map(|(_, body)| body)
        .unwrap_or_default();
    let config: serde_json::Value = serde_json::from_str(&config).unwrap_or_default();
    config["control"]["subscriptions"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|s| {
            (
                s["subscription"].to_string(),
                s["connected"].as_bool() == Some(true),
                s["destination"].clone(),
            )
        })
        .collect()
}

/// A proxy watching several destinations multiplexes their streams (and its
/// acks) on one HTTP/2 connection to the policy server, and after an operator
/// restart that one connection carries every subscription again, with the
/// policy as it is now.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_holds_one_connection_for_all_its_subscriptions() {
    const SERVICES: usize = 5;
    let app = upstream().await;
    let files = Files(temp_dir("one-conn"));
    files.write(&many_services(SERVICES, app.addr.port(), 2));
    let policy_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let policy_addr = format!("127.0.0.1:{policy_port}");
    let mut op = operator(&files.0, &policy_addr).await;
    let proxy = proxy(op.addr("policy"), "proxy-a", None).await;
    for i in 0..SERVICES {
        let host = format!("web{i}.demo");
        let status = http(proxy.addr("outbound"), "GET", "/", &host)
            .await
            .map(|(status, _)| status)
            .unwrap_or(0);
        assert_eq!(status, 200, "{host} through its snapshot's endpoints");
    }
    let all_connected = |subs: &[(String, bool, serde_json::Value)]| {
        subs.len() >= SERVICES && subs.iter().all(|(_, connected, _)| *connected)
    };
    wait_until(
        Duration::from_secs(10),
        "every stream connected",
        || async { all_connected(&subscriptions(&proxy).await) },
    )
    .await;
    let subs = subscriptions(&proxy).await;
    assert_eq!(
        connections_to(policy_port),
        1,
        "one connection for {} subscriptions: {:?}",
        subs.len(),
        subs.iter().map(|(key, _, _)| key).collect::<Vec<_>>()
    );

    // The operator restarts (same address) with every policy edited; the
    // proxy resubscribes everything on one new connection.
    op.kill().await;
    files.write(&many_services(SERVICES, app.addr.port(), 0));
    let _op = operator(&files.0, &policy_addr).await;
    wait_until(
        Duration::from_secs(20),
        "every subscription resynced",
        || async {
            let subs = subscriptions(&proxy).await;
            all_connected(&subs)
                && subs
                    .iter()
                    .filter(|(key, _, _)| key.contains("web"))
                    .count()
                    == SERVICES
                && subs
                    .iter()
                    .filter(|(key, _, _)| key.contains("web"))
                    .all(|(_, _, destination)| !destination.to_string().contains("\"attempts\":2"))
        },
    )
    .await;
    let subs = subscriptions(&proxy).await;
    assert_eq!(
        connections_to(policy_port),
        1,
        "one connection after the restart: {:?}",
        subs.iter().map(|(key, _, _)| key).collect::<Vec<_>>()
    );
}
