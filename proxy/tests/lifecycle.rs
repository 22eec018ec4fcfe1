//! Policy hot reload and graceful shutdown of the real proxy binary.

use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use outrigger_e2e::proxy::*;
use outrigger_tools::fault_upstream::{FaultConfig, FaultUpstream};

const POLICY: &str = r#"
apiVersion: outrigger.dev/v1alpha1
kind: ResiliencePolicy
metadata: {name: web, namespace: default}
spec:
  targetRef: {kind: Service, name: web}
  timeouts: {request: 5s}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_policy_edit_keeps_the_last_good_policy() {
    let dir = temp_dir("reload");
    let path = dir.join("policy.yaml");
    std::fs::write(&path, POLICY).unwrap();
    let proxy = ProxyProcess::start(&[
        &format!("--policy={}", path.display()),
        "--policy-poll-interval=50ms",
    ])
    .await;
    let config = proxy.config().await;
    assert_eq!(config["version"], 1);
    assert_eq!(config["policies"][0]["spec"]["timeouts"]["request"], "5s");

    // backendRequest longer than request: rejected with the field path.
    std::fs::write(
        &path,
        POLICY.replace("request: 5s", "request: 5s, backendRequest: 9s"),
    )
    .unwrap();
    wait_until(|| async {
        metric_value(
            &proxy.metrics().await,
            "outrigger_policy_reload_errors_total",
            &[],
        ) == 1.0
    })
    .await;
    let config = proxy.config().await;
    assert_eq!(config["version"], 1, "the last good policy stays active");
    assert_eq!(config["policies"][0]["spec"]["timeouts"]["request"], "5s");
    let metrics = proxy.metrics().await;
    assert_eq!(
        metric_value(&metrics, "outrigger_policy_last_reload_success", &[]),
        0.0
    );
    let (ready, _) = raw_get(proxy.admin, "/ready").await.unwrap();
    assert_eq!(
        ready, 200,
        "a rejected reload does not make the proxy unready"
    );

    // A valid edit is picked up.
    std::fs::write(&path, POLICY.replace("request: 5s", "request: 7s")).unwrap();
    wait_until(|| async { proxy.config().await["version"] == 2 }).await;
    assert_eq!(
        proxy.config().await["policies"][0]["spec"]["timeouts"]["request"],
        "7s"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_policy_at_start_is_a_clear_error() {
    let dir = temp_dir("bad-start");
    let path = dir.join("policy.yaml");
    std::fs::write(
        &path,
        POLICY.replace("name: web}", "name: web}\n  retry: {attempts: many}"),
    )
    .unwrap();
    let output = tokio::process::Command::new(proxy_binary())
        .arg(format!("--policy={}", path.display()))
        .arg("--inbound-addr=127.0.0.1:0")
        .arg("--outbound-addr=127.0.0.1:0")
        .arg("--admin-addr=127.0.0.1:0")
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("spec.retry.attempts"), "{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `kubectl logs` and log files show what the proxy writes to a pipe: plain
/// text, no terminal colour codes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_to_a_pipe_have_no_colour_codes() {
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new(proxy_binary())
        .arg("--inbound-addr=127.0.0.1:0")
        .arg("--outbound-addr=127.0.0.1:0")
        .arg("--admin-addr=127.0.0.1:0")
        .arg("--log-format=plain")
        .env_remove("NO_COLOR")
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let ready = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.contains("proxy ready") {
                return line;
            }
        }
        panic!("stderr closed before the proxy was ready");
    })
    .await
    .expect("proxy ready within 10 s");
    assert!(!ready.contains('\x1b'), "colour codes in a pipe: {ready:?}");
    assert!(ready.contains("INFO"), "{ready}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests_then_exits_zero() {
    let upstream = FaultUpstream::start(loopback(0), FaultConfig::default())
        .await
        .unwrap();
    let mut proxy = ProxyProcess::start(&[
        &format!("--app-addr={}", upstream.addr),
        "--drain-timeout=5s",
    ])
    .await;

    // Five requests the upstream holds for 1s each.
    let inbound = proxy.inbound;
    let in_flight: Vec<_> = (0..5)
        .map(|_| tokio::spawn(async move { slow_get(inbound).await }))
        .collect();
    wait_until(|| async { upstream.hits() == 5 }).await;

    let signalled = Instant::now();
    kill(Pid::from_raw(proxy.pid()), Signal::SIGTERM).unwrap();
    // Draining: readiness goes false while the admin server still answers.
    wait_until(|| async { matches!(raw_get(proxy.admin, "/ready").await, Ok((503, _))) }).await;
    // New connections are refused once the listeners are closed.
    wait_until(|| async { tokio::net::TcpStream::connect(inbound).await.is_err() }).await;

    for request in in_flight {
        assert_eq!(request.await.unwrap(), 200, "in-flight request completed");
    }
    let status = tokio::time::timeout(Duration::from_secs(10), proxy.child.wait())
        .await
        .expect("exits within the drain timeout")
        .unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(
        signalled.elapsed() < Duration::from_secs(5),
        "{:?}",
        signalled.elapsed()
    );
}

async fn slow_get(addr: std::net::SocketAddr) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: app\r\nx-fault: delay=1s\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response.split(' ').nth(1).unwrap().parse().unwrap()
}

async fn wait_until<F, Fut>(mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if condition().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("condition not reached within 10s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_still_waiting_when_the_drain_times_out_gets_503_shutdown() {
    let upstream = FaultUpstream::start(loopback(0), FaultConfig::default())
        .await
        .unwrap();
    let mut proxy = ProxyProcess::start(&[
        &format!("--app-addr={}", upstream.addr),
        "--drain-timeout=500ms",
    ])
    .await;
    let inbound = proxy.inbound;
    let waiting = tokio::spawn(async move {
        request(
            inbound,
            "GET",
            "/",
            &[("host", "app"), ("x-fault", "delay=30s")],
            b"",
        )
        .await
    });
    wait_until(|| async { upstream.hits() == 1 }).await;
    let signalled = Instant::now();
    kill(Pid::from_raw(proxy.pid()), Signal::SIGTERM).unwrap();
    let (status, headers, _) = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("answered after the drain timeout")
        .unwrap();
    assert_eq!(status, 503);
    assert_eq!(headers["x-outrigger-error"], "shutdown");
    assert!(signalled.elapsed() >= Duration::from_millis(450));
    let status = tokio::time::timeout(Duration::from_secs(5), proxy.child.wait())
        .await
        .expect("exits soon after")
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

/// Two policies for one Service in one file: the operator's rule picks one
/// (the oldest, then the first by namespace/name), and the proxy says so in
/// a warning naming both, a gauge, and /config.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicting_policies_are_resolved_logged_and_counted() {
    use tokio::io::AsyncBufReadExt;
    let text = format!(
        "{}\n---\n{}",
        policy("web", "  timeouts: {request: 1s}\n")
            .replace("name: web, namespace", "name: zeta, namespace"),
        policy("web", "  timeouts: {request: 2s}\n")
            .replace("name: web, namespace", "name: alpha, namespace"),
    );
    let file = PolicyFile::new("conflict", &text);
    let proxy = ProxyProcess::start(&[&file.flag()]).await;
    let metrics = proxy.metrics().await;
    assert!(
        metrics.contains("outrigger_policy_conflicts 1"),
        "{metrics}"
    );
    let config = proxy.config().await;
    assert_eq!(config["conflicts"][0]["policy"], "default/zeta", "{config}");
    assert_eq!(
        config["conflicts"][0]["winner"], "default/alpha",
        "{config}"
    );

    let mut child = tokio::process::Command::new(proxy_binary())
        .arg(file.flag())
        .arg("--inbound-addr=127.0.0.1:0")
        .arg("--outbound-addr=127.0.0.1:0")
        .arg("--admin-addr=127.0.0.1:0")
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let warning = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.contains("WARN") && line.contains("default/zeta") {
                return line;
            }
        }
        panic!("no warning before stderr closed");
    })
    .await
    .expect("a warning within 10s");
    assert!(
        warning.contains("default/alpha applies and default/zeta is ignored"),
        "{warning}"
    );
}
