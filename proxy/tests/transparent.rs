//! Transparent outbound capture for real: inside a network namespace this test
//! creates (and removes), iptables redirects a client's plain connection to
//! redis-server into the proxy's outbound listener, and the proxy forwards it to
//! the original destination read with SO_ORIGINAL_DST. The proxy marks its own
//! upstream sockets, and the mark exempts them from the redirect (no loop).

use outrigger_e2e::netns::Netns;
use outrigger_e2e::proxy::*;

const MARK: &str = "0x4f52";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_client_is_captured_by_the_outbound_listener() {
    for tool in ["ip", "iptables", "redis-server", "redis-cli", "curl"] {
        require_tool(tool);
    }
    let ns = Netns::create(&format!("ortest-tp-{}", std::process::id()));
    let redis_port = "6390";
    let _redis = ns.spawn(&[
        "redis-server",
        "--port",
        redis_port,
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
    ]);
    let _proxy = ns.spawn(&[
        proxy_binary(),
        "--outbound-mode=transparent",
        "--outbound-addr=127.0.0.1:4140",
        "--inbound-addr=127.0.0.1:4143",
        "--admin-addr=127.0.0.1:4191",
        &format!("--outbound-mark={MARK}"),
        &format!("--opaque-ports={redis_port}"),
    ]);
    ns.wait_ok(&["curl", "-sf", "http://127.0.0.1:4191/ready"])
        .await;
    ns.wait_ok(&["redis-cli", "-p", redis_port, "PING"]).await;

    // The proxy's own (marked) connections return early; everything else to
    // the redis port is redirected into the outbound listener.
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
        redis_port,
        "-j",
        "REDIRECT",
        "--to-ports",
        "4140",
    ]);

    assert_eq!(
        ns.exec_ok(&["redis-cli", "-p", redis_port, "SET", "captured", "yes"])
            .trim(),
        "OK"
    );
    assert_eq!(
        ns.exec_ok(&["redis-cli", "-p", redis_port, "GET", "captured"])
            .trim(),
        "yes"
    );

    let metrics = ns.exec_ok(&["curl", "-sf", "http://127.0.0.1:4191/metrics"]);
    let destination = format!("destination=\"127.0.0.1:{redis_port}\"");
    assert_eq!(
        metric_value(
            &metrics,
            "outrigger_connections_total",
            &["direction=\"outbound\"", "protocol=\"opaque\""]
        ),
        2.0,
        "{metrics}"
    );
    assert!(
        metric_value(
            &metrics,
            "outrigger_tcp_bytes_total",
            &[&destination, "flow=\"received\""]
        ) > 0.0,
        "{metrics}"
    );
}
