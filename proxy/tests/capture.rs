//! Transparent capture for real, as `outrigger-proxy init` installs it in a
//! pod: two network namespaces this test creates (and deletes) — a "pod" with
//! an app, a client, the proxy (running as its own UID) and the iptables
//! redirect, and a "server" across a veth pair. Addresses (192.0.2.0/24, a
//! documentation range) exist only inside these namespaces.

use outrigger_e2e::netns::Netns;
use outrigger_e2e::proxy::*;

const POD_IP: &str = "192.0.2.1";
const SERVER_IP: &str = "192.0.2.2";
const PROXY_UID: &str = "2102";

const POLICY: &str = "apiVersion: outrigger.dev/v1alpha1\nkind: ResiliencePolicy\nmetadata: {name: web, namespace: demo}\nspec:\n  targetRef: {kind: Service, name: web}\n  retry: {attempts: 3, backoff: {base: 1ms, max: 2ms}, budget: {percent: 100, minRetryRate: {count: 1000, interval: 1s}}}\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_traffic_is_captured_both_ways_without_loops() {
    for tool in ["ip", "iptables", "curl", "setpriv"] {
        require_tool(tool);
    }
    let id = std::process::id();
    let pod = Netns::create(&format!("orpod{id}"));
    let server = Netns::create(&format!("orsrv{id}"));
    pod.link(&server, &format!("{POD_IP}/24"), &format!("{SERVER_IP}/24"));

    // The server fails half its requests; the pod's app always answers.
    let _remote = server.spawn(&[
        tools_binary(),
        "fault-upstream",
        "--listen",
        &format!("{SERVER_IP}:8080"),
        "--failure-rate",
        "0.5",
    ]);
    let _app = pod.spawn(&[tools_binary(), "fault-upstream", "--listen", "0.0.0.0:9000"]);

    // The redirect, exactly as the injected init container runs it.
    let init = pod.exec_ok(&[proxy_binary(), "init", "--proxy-uid", PROXY_UID]);
    assert!(init.contains("# applied"), "{init}");
    // Idempotent: a second run changes nothing and adds no duplicate jumps.
    pod.exec_ok(&[proxy_binary(), "init", "--proxy-uid", PROXY_UID]);
    let saved = pod.exec_ok(&["iptables-save", "-t", "nat"]);
    assert_eq!(
        saved
            .matches("-A OUTPUT -p tcp -j OUTRIGGER_OUTBOUND")
            .count(),
        1,
        "{saved}"
    );

    let dir = temp_dir("capture");
    let policy = dir.join("policy.yaml");
    std::fs::write(&policy, POLICY).unwrap();
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&policy, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let policy_flag = format!("--policy={}", policy.display());
    let _proxy = pod.spawn(&[
        "setpriv",
        "--reuid",
        PROXY_UID,
        "--regid",
        PROXY_UID,
        "--clear-groups",
        proxy_binary(),
        "--outbound-mode=transparent",
        "--namespace=demo",
        &policy_flag,
    ]);
    pod.wait_ok(&["curl", "-sf", "http://127.0.0.1:4191/ready"])
        .await;
    server
        .wait_ok(&[
            "curl",
            "-sf",
            &format!("http://{SERVER_IP}:8080/"),
            "-H",
            "x-fault: status=200",
        ])
        .await;

    // Outbound: the app's plain connection to the server is captured; the
    // policy (found through the Host header) retries the server's 503s.
    let mut ok = 0;
    for _ in 0..20 {
        let out = pod.exec_ok(&[
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-H",
            "Host: web.demo",
            &format!("http://{SERVER_IP}:8080/"),
        ]);
        ok += usize::from(out == "200");
    }
    let metrics = pod.exec_ok(&["curl", "-sf", "http://127.0.0.1:4191/metrics"]);
    assert_eq!(
        metric_value(
            &metrics,
            "outrigger_requests_total",
            &[
                "direction=\"outbound\"",
                "destination=\"web.demo.svc.cluster.local:80\""
            ]
        ),
        20.0,
        "{metrics}"
    );
    assert!(
        metric_value(&metrics, "outrigger_retries_total", &[]) > 0.0,
        "{metrics}"
    );
    // With 50% failures and 3 retries, ~94% succeed; 12 is far above 50%.
    assert!(
        ok >= 12,
        "retries should hide most of the 50% failures: {ok}/20"
    );

    // Inbound: a client in the server namespace reaching the pod's app port
    // goes through the proxy's inbound listener first.
    for _ in 0..5 {
        let out = server.exec_ok(&[
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &format!("http://{POD_IP}:9000/"),
        ]);
        assert_eq!(out, "200");
    }
    let metrics = pod.exec_ok(&["curl", "-sf", "http://127.0.0.1:4191/metrics"]);
    assert_eq!(
        metric_value(
            &metrics,
            "outrigger_requests_total",
            &["direction=\"inbound\""]
        ),
        5.0,
        "{metrics}"
    );
    // The admin port is exempt: reachable directly from outside.
    server.exec_ok(&["curl", "-sf", &format!("http://{POD_IP}:4191/live")]);
    std::fs::remove_dir_all(&dir).unwrap();
}
