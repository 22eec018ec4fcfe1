//! The resilience engine against scripted faults: the real proxy binary, a
//! fault-injecting upstream on loopback, and exact counts of what the upstream
//! saw.

use std::time::{Duration, Instant};

use outrigger_e2e::proxy::*;
use outrigger_tools::fault_upstream::{Fault, FaultConfig, FaultUpstream, ResetPoint};

async fn upstream() -> FaultUpstream {
    FaultUpstream::start(loopback(0), FaultConfig::default())
        .await
        .unwrap()
}

/// An upstream that answers every request with 503.
async fn failing_upstream() -> FaultUpstream {
    FaultUpstream::start(
        loopback(0),
        FaultConfig {
            failure_rate: 1.0,
            ..FaultConfig::default()
        },
    )
    .await
    .unwrap()
}

/// A proxy whose inbound listener fronts `app` as Service `web`, under `spec`:
/// the server side, where the rate limit and the concurrency limit act.
async fn inbound_proxy(app: &FaultUpstream, spec: &str) -> (ProxyProcess, PolicyFile) {
    let file = PolicyFile::new("web", &policy("web", spec));
    let proxy = ProxyProcess::start(&[
        &format!("--app-addr={}", app.addr),
        "--service-name=web",
        &file.flag(),
        "--policy-poll-interval=50ms",
    ])
    .await;
    (proxy, file)
}

fn statuses(n: usize, status: u16) -> Vec<Fault> {
    (0..n).map(|_| Fault::status(status)).collect()
}

/// A caller's proxy: its outbound listener reaches `app` as Service `web`
/// (one endpoint), under `spec`. Timeouts, retries, the breaker and outlier
/// detection act here, on the calling side.
async fn caller_proxy(app: &FaultUpstream, spec: &str) -> (ProxyProcess, PolicyFile) {
    let file = PolicyFile::new(
        "web",
        &format!(
            "{}{}",
            policy("web", spec),
            endpoint_slice("web", &[app.addr.port()])
        ),
    );
    let proxy = ProxyProcess::start(&[&file.flag(), "--policy-poll-interval=50ms"]).await;
    (proxy, file)
}

/// GET / to Service `web` through the caller's proxy.
async fn get(proxy: &ProxyProcess) -> (u16, http::HeaderMap, Vec<u8>) {
    request(proxy.outbound, "GET", "/", &[("host", "web")], b"").await
}

/// GET / to the pod behind an inbound proxy.
async fn get_inbound(proxy: &ProxyProcess) -> (u16, http::HeaderMap, Vec<u8>) {
    request(proxy.inbound, "GET", "/", &[("host", "web")], b"").await
}

async fn metric(proxy: &ProxyProcess, name: &str, fragments: &[&str]) -> f64 {
    metric_value(&proxy.metrics().await, name, fragments)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_is_retried_until_success() {
    let app = upstream().await;
    let (proxy, _file) = caller_proxy(
        &app,
        "  retry: {attempts: 2, backoff: {base: 1ms, max: 5ms}}\n",
    )
    .await;
    app.set_script(vec![
        Fault::status(503),
        Fault::status(503),
        Fault::default(),
    ]);
    let (status, _, _) = get(&proxy).await;
    assert_eq!(status, 200);
    assert_eq!(app.hits(), 3);
    assert_eq!(
        metric(
            &proxy,
            "outrigger_retries_total",
            &["reason=\"status-503\""]
        )
        .await,
        2.0
    );

    // Three failures: the last one is returned as it is.
    app.set_script(statuses(3, 503));
    let (status, headers, _) = get(&proxy).await;
    assert_eq!(status, 503);
    assert!(
        headers.get("x-outrigger-error").is_none(),
        "the upstream's own 503"
    );
    assert_eq!(app.hits(), 6);
}

/// Each attempt is built from a copy of the request's headers made before
/// the first: the upstream sees the same list, in the same order (a repeated
/// name's values too), on the third attempt as on a request never retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_request_carries_its_headers_unchanged() {
    let app = upstream().await;
    let spec = "  retry: {attempts: 2, backoff: {base: 1ms, max: 5ms}}\n";
    let (proxy, _file) = caller_proxy(&app, spec).await;
    let headers = [
        ("host", "web"),
        ("x-tag", "first"),
        ("accept", "text/plain"),
        ("x-tag", "second"),
        ("cookie", "a=1"),
        ("x-request-id", "fixed-for-the-comparison"),
    ];
    let (status, _, once) = request(proxy.outbound, "GET", "/headers", &headers, b"").await;
    assert_eq!(status, 200);
    let once = String::from_utf8(once).unwrap();
    assert!(
        once.find("x-tag: first").unwrap() < once.find("x-tag: second").unwrap(),
        "{once}"
    );
    app.set_script(vec![
        Fault::status(503),
        Fault::status(503),
        Fault::default(),
    ]);
    let hits = app.hits();
    let (status, _, retried) = request(proxy.outbound, "GET", "/headers", &headers, b"").await;
    assert_eq!(status, 200);
    assert_eq!(app.hits() - hits, 3, "answered on the third attempt");
    assert_eq!(String::from_utf8(retried).unwrap(), once);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_is_replayed_only_when_allowed() {
    let app = upstream().await;
    let spec =
        "  retry: {attempts: 2, backoff: {base: 1ms, max: 5ms}, nonIdempotent: IfIdempotencyKey}\n";
    let (proxy, _file) = caller_proxy(&app, spec).await;

    app.set_script(statuses(3, 503));
    let (status, _, _) =
        request(proxy.outbound, "POST", "/charge", &[("host", "web")], b"{}").await;
    assert_eq!(status, 503);
    assert_eq!(app.hits(), 1, "POST without Idempotency-Key is sent once");
    assert_eq!(
        metric(
            &proxy,
            "outrigger_retries_skipped_total",
            &["reason=\"non-idempotent\""]
        )
        .await,
        1.0
    );

    app.set_script(vec![
        Fault::status(503),
        Fault::status(503),
        Fault::default(),
    ]);
    let (status, _, body) = request(
        proxy.outbound,
        "POST",
        "/echo",
        &[("host", "web"), ("idempotency-key", "k-1")],
        b"payload",
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body, b"payload", "the replayed body is intact");
    assert_eq!(app.hits(), 4);

    // A reset after the upstream got the request is not replayed for POST.
    app.set_script(vec![Fault {
        reset: Some(ResetPoint::BeforeHeaders),
        ..Fault::default()
    }]);
    let (status, headers, _) = request(proxy.outbound, "POST", "/", &[("host", "web")], b"x").await;
    assert_eq!(status, 502);
    assert_eq!(headers["x-outrigger-error"], "upstream-reset");
    assert_eq!(app.hits(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_is_retried_after_connect_failure() {
    // The only endpoint refuses connections: the upstream never saw the
    // request, so even a POST without a key is retried, `attempts` times.
    let dead = free_port();
    let yaml = format!(
        "{}{}",
        policy(
            "web",
            "  retry: {attempts: 2, backoff: {base: 1ms, max: 5ms}}\n"
        ),
        endpoint_slice("web", &[dead])
    );
    let file = PolicyFile::new("dead", &yaml);
    let proxy = ProxyProcess::start(&[&file.flag()]).await;
    let (status, headers, _) = request(proxy.outbound, "POST", "/", &[("host", "web")], b"x").await;
    assert_eq!(status, 502);
    assert_eq!(headers["x-outrigger-error"], "connect-failure");
    assert_eq!(
        metric(
            &proxy,
            "outrigger_retries_total",
            &["reason=\"connect-failure\""]
        )
        .await,
        2.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backoff_gaps_and_total_time_are_bounded() {
    let app = upstream().await;
    // A generous budget: this test is about backoff, not the budget.
    let spec = "  timeouts: {request: 2s}\n  retry:\n    attempts: 3\n    backoff: {base: 40ms, max: 60ms}\n    budget: {percent: 100, minRetryRate: {count: 100, interval: 1s}}\n";
    let (proxy, _file) = caller_proxy(&app, spec).await;
    // Scheduling noise on a loaded 2-core machine; still below what an
    // uncapped or unjittered backoff would add.
    let slack = Duration::from_millis(50);
    for _ in 0..5 {
        let before = app.arrivals().len();
        app.set_script(statuses(4, 503));
        let (status, _, _) = get(&proxy).await;
        assert_eq!(status, 503);
        let arrivals = app.arrivals()[before..].to_vec();
        assert_eq!(arrivals.len(), 4);
        for (n, pair) in arrivals.windows(2).enumerate() {
            let gap = pair[1] - pair[0];
            let ceiling = Duration::from_millis((40u64 << n).min(60));
            assert!(
                gap <= ceiling + slack,
                "retry {n}: gap {gap:?} > {ceiling:?}"
            );
        }
    }

    // The whole call, retries and backoff included, stays within `request`.
    // Each attempt takes 40 ms to fail, so eleven attempts cannot fit in
    // 300 ms whatever the jitter draws (full jitter may pick zero backoff
    // every time: without the delay the deadline would cut nothing).
    let spec = "  timeouts: {request: 300ms}\n  retry: {attempts: 10, backoff: {base: 100ms, max: 100ms}}\n";
    let slow_app = upstream().await;
    let (proxy, _file) = caller_proxy(&slow_app, spec).await;
    slow_app.set_script(
        (0..20)
            .map(|_| Fault::parse("status=503; delay=40ms").unwrap())
            .collect(),
    );
    let started = Instant::now();
    let (status, _, _) = get(&proxy).await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(300) + slack * 2,
        "took {took:?}"
    );
    assert!(status == 503 || status == 504, "{status}");
    assert!(
        slow_app.hits() < 10,
        "the deadline cut retries: {}",
        slow_app.hits()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_budget_caps_retries_under_total_failure() {
    let app = failing_upstream().await;
    let spec = "  retry:\n    attempts: 3\n    backoff: {base: 1ms, max: 1ms}\n    budget: {percent: 20, interval: 10s, minRetryRate: {count: 5, interval: 1s}}\n";
    let (proxy, _file) = caller_proxy(&app, spec).await;
    let started = Instant::now();
    let originals = 300;
    for _ in 0..originals {
        let (status, _, _) = get(&proxy).await;
        assert_eq!(status, 503);
    }
    let seconds = started.elapsed().as_secs_f64().ceil();
    let retries = app.hits() as f64 - originals as f64;
    let allowed = originals as f64 * 0.20 + 5.0 * seconds;
    assert!(retries <= allowed, "{retries} retries > {allowed}");
    assert!(retries >= originals as f64 * 0.19, "budget used: {retries}");
    assert!(metric(&proxy, "outrigger_retry_budget_exhausted_total", &[]).await > 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn breaker_opens_rejects_probes_and_recovers() {
    let app = upstream().await;
    let spec = "  circuitBreaker:\n    failureRatePercent: 50\n    minimumRequests: 10\n    window: 10s\n    openFor: 1s\n    maxOpenFor: 10s\n    halfOpenRequests: 2\n    fallback: {status: 503, contentType: application/json, body: '{\"error\":\"web unavailable\"}'}\n";
    let (proxy, _file) = caller_proxy(&app, spec).await;
    let state = |proxy: &ProxyProcess| {
        let admin = proxy.admin;
        async move {
            let text = raw_get(admin, "/metrics").await.unwrap().1;
            metric_value(
                &text,
                "outrigger_circuit_state",
                &["destination=\"web.default.svc.cluster.local:80\""],
            )
        }
    };

    // Nine failures: below minimumRequests, still closed.
    app.set_script(statuses(9, 500));
    for _ in 0..9 {
        assert_eq!(get(&proxy).await.0, 500);
    }
    assert_eq!(state(&proxy).await, 0.0);
    // The tenth opens it.
    app.set_script(statuses(1, 500));
    assert_eq!(get(&proxy).await.0, 500);
    assert_eq!(state(&proxy).await, 1.0);

    // While open the upstream sees nothing; callers get the fallback.
    for _ in 0..5 {
        let (status, headers, body) = get(&proxy).await;
        assert_eq!(status, 503);
        assert_eq!(headers["x-outrigger-error"], "circuit-open");
        assert_eq!(headers["content-type"], "application/json");
        assert_eq!(headers["retry-after"], "1");
        assert_eq!(body, br#"{"error":"web unavailable"}"#);
    }
    assert_eq!(app.hits(), 10);

    // Half-open: of four concurrent requests exactly two probes go through.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    app.set_script(vec![
        Fault::parse("delay=300ms").unwrap(),
        Fault::parse("delay=300ms").unwrap(),
    ]);
    let results = futures_util::future::join_all((0..4).map(|_| get(&proxy))).await;
    let passed = results.iter().filter(|r| r.0 == 200).count();
    let rejected = results
        .iter()
        .filter(|r| {
            r.1.get("x-outrigger-error")
                .is_some_and(|v| v == "circuit-open")
        })
        .count();
    assert_eq!((passed, rejected), (2, 2));
    assert_eq!(app.hits(), 12);
    // Both probes succeeded: closed again.
    assert_eq!(state(&proxy).await, 0.0);
    assert_eq!(get(&proxy).await.0, 200);

    // Trip again, then a failed probe re-opens it for twice as long.
    app.set_script(statuses(10, 500));
    for _ in 0..10 {
        get(&proxy).await;
    }
    assert_eq!(get(&proxy).await.1["retry-after"], "1");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    app.set_script(statuses(1, 500));
    assert_eq!(get(&proxy).await.0, 500, "the probe reached the upstream");
    let (_, headers, _) = get(&proxy).await;
    assert_eq!(headers["x-outrigger-error"], "circuit-open");
    assert_eq!(
        headers["retry-after"], "2",
        "openFor doubled after a failed probe"
    );

    let metrics = proxy.metrics().await;
    assert_eq!(
        metric_value(
            &metrics,
            "outrigger_circuit_transitions_total",
            &["from=\"closed\"", "to=\"open\""]
        ),
        2.0
    );
    assert_eq!(
        metric_value(
            &metrics,
            "outrigger_circuit_transitions_total",
            &["from=\"half-open\"", "to=\"open\""]
        ),
        1.0
    );
    assert!(metric_value(&metrics, "outrigger_fallback_responses_total", &[]) >= 7.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_calls_trip_the_breaker() {
    let app = upstream().await;
    let spec = "  circuitBreaker: {minimumRequests: 5, slowCall: {duration: 50ms, ratePercent: 60}, openFor: 10s}\n";
    let (proxy, _file) = caller_proxy(&app, spec).await;
    app.set_script(
        (0..5)
            .map(|_| Fault::parse("delay=80ms").unwrap())
            .collect(),
    );
    for _ in 0..5 {
        assert_eq!(get(&proxy).await.0, 200, "slow but successful");
    }
    let (_, headers, _) = get(&proxy).await;
    assert_eq!(headers["x-outrigger-error"], "circuit-open");
    assert_eq!(app.hits(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn breaker_state_survives_an_unrelated_policy_edit() {
    let app = upstream().await;
    let spec = "  timeouts: {request: 5s}\n  circuitBreaker: {minimumRequests: 3, openFor: 30s}\n";
    let (proxy, file) = caller_proxy(&app, spec).await;
    app.set_script(statuses(3, 503));
    for _ in 0..3 {
        get(&proxy).await;
    }
    assert_eq!(get(&proxy).await.1["x-outrigger-error"], "circuit-open");
    file.write(&format!(
        "{}{}",
        policy("web", &spec.replace("5s", "6s")),
        endpoint_slice("web", &[app.addr.port()])
    ));
    let deadline = Instant::now() + Duration::from_secs(5);
    while proxy.config().await["version"] != 2 {
        assert!(Instant::now() < deadline, "edit not picked up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        get(&proxy).await.1["x-outrigger-error"],
        "circuit-open",
        "still open"
    );
    assert_eq!(app.hits(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outlier_ejection_and_return() {
    let good_a = upstream().await;
    let good_b = upstream().await;
    let bad = failing_upstream().await;
    let yaml = format!(
        "{}{}",
        policy("pool", "  outlierDetection: {consecutiveFailures: 3, baseEjectionTime: 1s, maxEjectionPercent: 50}\n"),
        endpoint_slice("pool", &[good_a.addr.port(), good_b.addr.port(), bad.addr.port()])
    );
    let file = PolicyFile::new("pool", &yaml);
    let proxy = ProxyProcess::start(&[&file.flag()]).await;
    let send = |n: usize| {
        let outbound = proxy.outbound;
        async move {
            for _ in 0..n {
                request(outbound, "GET", "/", &[("host", "pool")], b"").await;
            }
        }
    };
    // Until the bad endpoint fails three times in a row it gets traffic.
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(&proxy, "outrigger_ejections_total", &[]).await < 1.0 {
        assert!(Instant::now() < deadline, "never ejected");
        send(5).await;
    }
    assert_eq!(bad.hits(), 3);
    let before = bad.hits();
    send(60).await;
    assert_eq!(bad.hits(), before, "no traffic while ejected");
    assert!(good_a.hits() + good_b.hits() >= 60);
    assert_eq!(
        metric(&proxy, "outrigger_ejected_endpoints", &[]).await,
        1.0
    );

    // After the ejection time it is back in rotation.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while bad.hits() == before {
        assert!(Instant::now() < deadline, "never returned");
        send(5).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_outlier_ejection_is_counted_but_the_endpoint_keeps_its_traffic() {
    let good = upstream().await;
    let bad = failing_upstream().await;
    // The failing endpoint answers at once, the good one in 20ms: the
    // balancer prefers the failing one, so only an ejection keeps traffic off
    // it (two endpoints, P2C always compares both).
    let slow = Fault {
        delay: Some(Duration::from_millis(20)),
        ..Fault::default()
    };
    good.set_script(vec![slow; 500]);
    let yaml = format!(
        "{}{}",
        policy(
            "pool",
            "  mode: DryRun\n  outlierDetection: {consecutiveFailures: 3, baseEjectionTime: 30s, maxEjectionPercent: 50}\n"
        ),
        endpoint_slice("pool", &[good.addr.port(), bad.addr.port()])
    );
    let file = PolicyFile::new("pool-dry-run", &yaml);
    let proxy = ProxyProcess::start(&[&file.flag()]).await;
    let send = |n: usize| {
        let outbound = proxy.outbound;
        async move {
            for _ in 0..n {
                request(outbound, "GET", "/", &[("host", "pool")], b"").await;
            }
        }
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(&proxy, "outrigger_ejections_total", &[]).await < 1.0 {
        assert!(Instant::now() < deadline, "never ejected");
        send(5).await;
    }
    assert_eq!(
        metric(&proxy, "outrigger_ejected_endpoints", &[]).await,
        1.0
    );
    // Ejected, for 30s: under Enforce it would get nothing now.
    let before = bad.hits();
    send(60).await;
    let during = bad.hits() - before;
    assert!(
        during >= 50,
        "the ejected endpoint keeps its traffic: {during} of 60"
    );
    // Every attempt to it since the ejection is counted (those of the last
    // batch above included).
    let counted = metric(
        &proxy,
        "outrigger_dry_run_would_reject_total",
        &["reason=\"outlier-ejected\""],
    )
    .await;
    assert!(counted >= during as f64, "{counted} < {during}");
    assert!(counted <= during as f64 + 5.0, "{counted} > {during} + 5");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_more_than_max_ejection_percent() {
    let good = upstream().await;
    let mut bads = Vec::new();
    for _ in 0..2 {
        bads.push(failing_upstream().await);
    }
    let yaml = format!(
        "{}{}",
        policy("pool", "  outlierDetection: {consecutiveFailures: 2, baseEjectionTime: 30s, maxEjectionPercent: 40}\n"),
        endpoint_slice("pool", &[good.addr.port(), bads[0].addr.port(), bads[1].addr.port()])
    );
    let file = PolicyFile::new("pool-max", &yaml);
    let proxy = ProxyProcess::start(&[&file.flag()]).await;
    for _ in 0..100 {
        request(proxy.outbound, "GET", "/", &[("host", "pool")], b"").await;
    }
    assert_eq!(
        metric(&proxy, "outrigger_ejected_endpoints", &[]).await,
        1.0
    );
    assert!(
        bads.iter().all(|b| b.hits() >= 2),
        "both bad endpoints were tried"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p2c_sends_less_traffic_to_a_slow_endpoint() {
    let fast_a = upstream().await;
    let fast_b = upstream().await;
    let slow = upstream().await;
    // The slow endpoint answers in 25ms, the fast ones at once.
    slow.set_script(
        (0..1000)
            .map(|_| Fault::parse("delay=25ms").unwrap())
            .collect(),
    );
    let yaml = format!(
        "{}{}",
        policy("pool", "  timeouts: {request: 5s}\n"),
        endpoint_slice(
            "pool",
            &[fast_a.addr.port(), fast_b.addr.port(), slow.addr.port()]
        )
    );
    let file = PolicyFile::new("p2c", &yaml);
    let proxy = ProxyProcess::start(&[&file.flag()]).await;
    let outbound = proxy.outbound;
    let workers: Vec<_> = (0..4)
        .map(|_| {
            tokio::spawn(async move {
                for _ in 0..75 {
                    request(outbound, "GET", "/", &[("host", "pool")], b"").await;
                }
            })
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }
    let total = fast_a.hits() + fast_b.hits() + slow.hits();
    assert_eq!(total, 300);
    // Round robin would give it 100; P2C on latency gives it a small share.
    assert!(slow.hits() < 30, "slow endpoint got {} of 300", slow.hits());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_limit_sheds_exactly_the_excess() {
    let app = upstream().await;
    let spec = "  limits: {maxConcurrentRequests: 2, maxPendingRequests: 1, pendingTimeout: 1s}\n";
    let (proxy, _file) = inbound_proxy(&app, spec).await;
    app.set_script((0..6).map(|_| Fault::parse("delay=3s").unwrap()).collect());
    let results = futures_util::future::join_all((0..6).map(|_| get_inbound(&proxy))).await;
    let ok = results.iter().filter(|r| r.0 == 200).count();
    let shed: Vec<_> = results
        .iter()
        .filter(|r| {
            r.1.get("x-outrigger-error")
                .is_some_and(|v| v == "overloaded")
        })
        .collect();
    assert_eq!((ok, shed.len()), (2, 4));
    assert!(shed.iter().all(|r| r.0 == 503));
    assert_eq!(app.hits(), 2);
    let metrics = proxy.metrics().await;
    assert_eq!(
        metric_value(&metrics, "outrigger_shed_requests_total", &["queue-full"]),
        3.0
    );
    assert_eq!(
        metric_value(
            &metrics,
            "outrigger_shed_requests_total",
            &["pending-timeout"]
        ),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_answers_429_with_retry_after() {
    let app = upstream().await;
    let (proxy, _file) =
        inbound_proxy(&app, "  rateLimit: {requestsPerSecond: 2, burst: 3}\n").await;
    let mut limited = 0;
    for _ in 0..10 {
        let (status, headers, _) = get_inbound(&proxy).await;
        if status == 429 {
            limited += 1;
            assert_eq!(headers["x-outrigger-error"], "rate-limited");
            assert_eq!(headers["retry-after"], "1");
        }
    }
    // Ten requests well within one token's refill time (500ms): burst passes.
    assert_eq!(limited, 7);
    assert_eq!(app.hits(), 3);
    assert_eq!(
        metric(&proxy, "outrigger_rate_limited_total", &[]).await,
        7.0
    );
}

/// A call through two proxies, as between two meshed pods: the client sends
/// to the caller's outbound listener, which reaches Service `web` at the
/// server's inbound listener, which forwards to `app`. Both proxies read the
/// same policy for `web`, each from its own file.
struct Mesh {
    caller: ProxyProcess,
    server: ProxyProcess,
    _files: (PolicyFile, PolicyFile),
}

async fn mesh(app: &FaultUpstream, spec: &str) -> Mesh {
    let (server, server_file) = inbound_proxy(app, spec).await;
    let caller_file = PolicyFile::new(
        "web-caller",
        &format!(
            "{}{}",
            policy("web", spec),
            endpoint_slice("web", &[server.inbound.port()])
        ),
    );
    let caller = ProxyProcess::start(&[&caller_file.flag()]).await;
    Mesh {
        caller,
        server,
        _files: (server_file, caller_file),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_through_two_proxies_is_retried_on_one_side_only() {
    let app = failing_upstream().await;
    let mesh = mesh(
        &app,
        "  retry: {attempts: 2, backoff: {base: 1ms, max: 5ms}}\n  timeouts: {request: 5s, backendRequest: 2s}\n",
    )
    .await;
    let (status, _, _) = get(&mesh.caller).await;
    assert_eq!(status, 503);
    // One call and two retries, all from the caller; the server's proxy
    // forwards each attempt once (3 × 3 = 9 if both sides retried).
    assert_eq!(app.hits(), 3);
    assert_eq!(
        metric(&mesh.caller, "outrigger_retries_total", &[]).await,
        2.0
    );
    assert_eq!(
        metric(&mesh.server, "outrigger_retries_total", &[]).await,
        0.0
    );
    assert_eq!(
        metric(
            &mesh.server,
            "outrigger_requests_total",
            &["direction=\"inbound\""]
        )
        .await,
        3.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_act_on_the_server_side_only() {
    let app = upstream().await;
    let mesh = mesh(&app, "  rateLimit: {requestsPerSecond: 1, burst: 2}\n").await;
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let (status, headers, _) = get(&mesh.caller).await;
        if status == 429 {
            assert_eq!(headers["x-outrigger-error"], "rate-limited");
        }
        statuses.push(status);
    }
    // The caller's proxy passes the server's 429 on (not retried: 429 is not
    // in the default codes), and keeps no bucket of its own.
    assert_eq!(statuses, [200, 200, 429, 429, 429]);
    assert_eq!(app.hits(), 2);
    assert_eq!(
        metric(&mesh.server, "outrigger_rate_limited_total", &[]).await,
        3.0
    );
    assert_eq!(
        metric(&mesh.caller, "outrigger_rate_limited_total", &[]).await,
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_rejects_nothing_but_counts() {
    let app = upstream().await;
    let spec = "  mode: DryRun\n  rateLimit: {requestsPerSecond: 1, burst: 1}\n  circuitBreaker: {minimumRequests: 3, openFor: 30s}\n";
    let mesh = mesh(&app, spec).await;
    app.set_script(statuses(5, 503));
    for _ in 0..10 {
        let (_, headers, _) = get(&mesh.caller).await;
        assert!(
            headers.get("x-outrigger-error").is_none(),
            "nothing rejected in DryRun"
        );
    }
    assert_eq!(app.hits(), 10);
    // The rate limit is the server's to enforce, the breaker the caller's.
    let server = mesh.server.metrics().await;
    assert_eq!(
        metric_value(
            &server,
            "outrigger_dry_run_would_reject_total",
            &["rate-limited"]
        ),
        9.0
    );
    assert_eq!(
        metric_value(&server, "outrigger_rate_limited_total", &[]),
        0.0
    );
    let caller = mesh.caller.metrics().await;
    assert!(
        metric_value(
            &caller,
            "outrigger_dry_run_would_reject_total",
            &["circuit-open"]
        ) >= 5.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_body_is_streamed_once_and_not_retried() {
    let app = upstream().await;
    let spec = "  retry: {attempts: 2, backoff: {base: 1ms, max: 1ms}, nonIdempotent: Always, maxBufferedBodyBytes: 1024}\n";
    let (proxy, _file) = caller_proxy(&app, spec).await;
    app.set_script(statuses(3, 503));
    let body = vec![7u8; 4096];
    let (status, _, _) = request(proxy.outbound, "POST", "/", &[("host", "web")], &body).await;
    assert_eq!(status, 503);
    assert_eq!(app.hits(), 1);
    assert_eq!(
        metric(
            &proxy,
            "outrigger_retries_skipped_total",
            &["reason=\"body-too-large\""]
        )
        .await,
        1.0
    );
    // A small body is buffered and replayed.
    app.set_script(vec![Fault::status(503), Fault::default()]);
    let (status, _, echoed) = request(
        proxy.outbound,
        "POST",
        "/echo",
        &[("host", "web")],
        b"small",
    )
    .await;
    assert_eq!((status, echoed.as_slice()), (200, b"small".as_slice()));
    assert_eq!(app.hits(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_timeout_gives_504_and_grpc_gets_a_grpc_status() {
    let app = upstream().await;
    let (proxy, _file) =
        caller_proxy(&app, "  timeouts: {request: 2s, backendRequest: 100ms}\n").await;
    app.set_script(vec![Fault::parse("delay=1s").unwrap()]);
    let started = Instant::now();
    let (status, headers, _) = get(&proxy).await;
    assert_eq!(status, 504);
    assert_eq!(headers["x-outrigger-error"], "timeout");
    assert!(started.elapsed() < Duration::from_millis(800));
    assert_eq!(
        metric(
            &proxy,
            "outrigger_timeouts_total",
            &["kind=\"backend-request\""]
        )
        .await,
        1.0
    );

    app.set_script(vec![Fault::parse("delay=1s").unwrap()]);
    let (status, headers, _) = request(
        proxy.outbound,
        "POST",
        "/pkg.Service/Method",
        &[("host", "web"), ("content-type", "application/grpc")],
        b"",
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(headers["grpc-status"], "4", "DEADLINE_EXCEEDED");
    assert_eq!(headers["content-type"], "application/grpc");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_override_the_destination_policy() {
    let app = upstream().await;
    let spec = "  retry: {attempts: 2, backoff: {base: 1ms, max: 1ms}}\n  routes:\n  - match: {pathPrefix: /charge}\n    retry: {attempts: 0}\n";
    let (proxy, _file) = caller_proxy(&app, spec).await;
    app.set_script(statuses(3, 503));
    let (status, _, _) = request(proxy.outbound, "GET", "/charge/7", &[("host", "web")], b"").await;
    assert_eq!(status, 503);
    assert_eq!(app.hits(), 1, "the /charge route does not retry");
    app.set_script(statuses(3, 503));
    request(proxy.outbound, "GET", "/other", &[("host", "web")], b"").await;
    assert_eq!(app.hits(), 4, "other paths retry twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_honoured_within_the_deadline() {
    let app = upstream().await;
    let spec =
        "  timeouts: {request: 3s}\n  retry: {attempts: 1, backoff: {base: 1ms, max: 1ms}}\n";
    let (proxy, _file) = caller_proxy(&app, spec).await;
    let busy = |retry_after: &str| Fault {
        status: Some(503),
        retry_after: Some(retry_after.into()),
        ..Fault::default()
    };
    // Retry-After: 1 replaces the 1ms backoff.
    app.set_script(vec![busy("1"), Fault::default()]);
    let (status, _, _) = get(&proxy).await;
    assert_eq!(status, 200);
    let arrivals = app.arrivals();
    let gap = arrivals[1] - arrivals[0];
    assert!(gap >= Duration::from_millis(990), "waited only {gap:?}");
    // Retry-After beyond the request deadline: the 503 is returned at once.
    app.set_script(vec![busy("10"), Fault::default()]);
    let started = Instant::now();
    let (status, headers, _) = get(&proxy).await;
    assert_eq!(status, 503);
    assert_eq!(headers["retry-after"], "10");
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(app.hits(), 3);
    assert_eq!(
        metric(
            &proxy,
            "outrigger_retries_skipped_total",
            &["reason=\"deadline\""]
        )
        .await,
        1.0
    );
}

/// A body of unknown length: sent with `Transfer-Encoding: chunked` over
/// HTTP/1.1, as DATA frames over HTTP/2; trailers after the data, if any.
fn streamed_body(
    parts: &[&'static [u8]],
    trailers: Option<http::HeaderMap>,
) -> http_body_util::combinators::UnsyncBoxBody<bytes::Bytes, std::convert::Infallible> {
    use http_body_util::BodyExt;
    let mut frames: Vec<Result<hyper::body::Frame<bytes::Bytes>, std::convert::Infallible>> = parts
        .iter()
        .map(|p| Ok(hyper::body::Frame::data(bytes::Bytes::from_static(p))))
        .collect();
    frames.extend(trailers.map(|t| Ok(hyper::body::Frame::trailers(t))));
    http_body_util::StreamBody::new(futures_util::stream::iter(frames)).boxed_unsync()
}

/// POST `path` to Service `web` through `proxy`, HTTP/1.1 with a chunked body.
async fn chunked_post(proxy: &ProxyProcess, path: &str, parts: &[&'static [u8]]) -> u16 {
    use hyper_util::rt::TokioIo;
    let stream = tokio::net::TcpStream::connect(proxy.outbound)
        .await
        .unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let request = http::Request::post(path)
        .header("host", "web")
        .body(streamed_body(parts, None))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    response.status().as_u16()
}

/// POST `path` to Service `web` through `proxy` over HTTP/2 (prior knowledge).
async fn h2_post(
    proxy: &ProxyProcess,
    path: &str,
    parts: &[&'static [u8]],
    trailers: Option<http::HeaderMap>,
) -> u16 {
    let mut sender = h2_connect(proxy.outbound).await;
    let request = http::Request::post(format!("http://web{path}"))
        .body(streamed_body(parts, trailers))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    response.status().as_u16()
}

fn read_body(status: Option<u16>) -> Fault {
    Fault {
        status,
        read_body: true,
        ..Fault::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_http1_body_is_replayed_after_a_503() {
    let app = upstream().await;
    let spec = "  retry: {attempts: 2, backoff: {base: 1ms, max: 1ms}, nonIdempotent: Always, maxBufferedBodyBytes: 1024}\n";
    let (proxy, _file) = caller_proxy(&app, spec).await;
    app.set_script(vec![read_body(Some(503)), read_body(None)]);
    let status = chunked_post(&proxy, "/", &[b"first chunk, ", b"second chunk"]).await;
    assert_eq!(status, 200);
    let received = app.received();
    assert_eq!(received.len(), 2);
    assert_eq!(received[0].0, "first chunk, second chunk");
    assert_eq!(
        received[0].0, received[1].0,
        "the upstream saw the same body twice"
    );

    // Past maxBufferedBodyBytes: forwarded in full once, not retried.
    app.set_script(vec![read_body(Some(503)), read_body(None)]);
    let big: &'static [u8] = Box::leak(vec![b'z'; 800].into_boxed_slice());
    let status = chunked_post(&proxy, "/", &[big, big]).await;
    assert_eq!(status, 503);
    assert_eq!(app.received().len(), 3);
    assert_eq!(app.received()[2].0.len(), 1600);
    let skipped = |proxy: &ProxyProcess| {
        let admin = proxy.admin;
        async move {
            let text = raw_get(admin, "/metrics").await.unwrap().1;
            metric_value(
                &text,
                "outrigger_retries_skipped_total",
                &["reason=\"body-too-large\""],
            )
        }
    };
    assert_eq!(skipped(&proxy).await, 1.0);
    // A large body that needs no retry is not counted as a skipped retry.
    app.set_script(vec![read_body(None)]);
    assert_eq!(chunked_post(&proxy, "/", &[big, big]).await, 200);
    assert_eq!(skipped(&proxy).await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_body_and_trailers_are_replayed_after_a_503() {
    let app = upstream().await;
    let spec = "  retry: {attempts: 2, backoff: {base: 1ms, max: 1ms}, nonIdempotent: Always}\n";
    let (proxy, _file) = caller_proxy(&app, spec).await;
    app.set_script(vec![read_body(Some(503)), read_body(None)]);
    let mut trailers = http::HeaderMap::new();
    trailers.insert("x-checksum", "c0ffee".parse().unwrap());
    let status = h2_post(&proxy, "/", &[b"over ", b"h2"], Some(trailers.clone())).await;
    assert_eq!(status, 200);
    let received = app.received();
    assert_eq!(received.len(), 2);
    for (body, got_trailers) in &received {
        assert_eq!(body, "over h2");
        assert_eq!(got_trailers.as_ref(), Some(&trailers));
    }
    assert_eq!(
        metric(
            &proxy,
            "outrigger_retries_total",
            &["reason=\"status-503\""]
        )
        .await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shed_503_from_the_servers_proxy_is_not_retried_by_the_caller() {
    let app = upstream().await;
    let spec = "  retry: {attempts: 2, backoff: {base: 1ms, max: 1ms}}\n  limits: {maxConcurrentRequests: 1}\n";
    let mesh = mesh(&app, spec).await;
    // One slow call holds the server's only slot.
    app.set_script(vec![Fault::parse("delay=2s").unwrap()]);
    let caller = mesh.caller.outbound;
    let slow =
        tokio::spawn(async move { request(caller, "GET", "/", &[("host", "web")], b"").await });
    outrigger_e2e::wait_until(
        Duration::from_secs(5),
        "the slow call at the app",
        || async { app.hits() > 0 },
    )
    .await;
    let (status, headers, _) = get(&mesh.caller).await;
    assert_eq!(status, 503);
    assert_eq!(headers["x-outrigger-error"], "overloaded");
    assert_eq!(
        metric(&mesh.server, "outrigger_shed_requests_total", &[]).await,
        1.0,
        "shed once: not retried into the overloaded pod"
    );
    assert_eq!(
        metric(
            &mesh.caller,
            "outrigger_retries_skipped_total",
            &["reason=\"proxy-overloaded\""]
        )
        .await,
        1.0
    );
    assert_eq!(slow.await.unwrap().0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deadline_covers_a_bounded_body_and_idle_bounds_a_stream() {
    use http_body_util::BodyExt;
    use hyper_util::rt::TokioIo;
    let app = upstream().await;
    let spec = "  timeouts: {request: 500ms, idle: 1500ms}\n";
    let (proxy, _file) = caller_proxy(&app, spec).await;
    let stalled = |fault: &'static str| {
        let outbound = proxy.outbound;
        async move {
            let stream = tokio::net::TcpStream::connect(outbound).await.unwrap();
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream))
                    .await
                    .unwrap();
            tokio::spawn(connection);
            let request = http::Request::get("/")
                .header("host", "web")
                .header("x-fault", fault)
                .body(http_body_util::Empty::<bytes::Bytes>::new())
                .unwrap();
            let started = Instant::now();
            let response = sender.send_request(request).await.unwrap();
            assert_eq!(response.status(), 200);
            let body = tokio::time::timeout(Duration::from_secs(10), response.collect()).await;
            (
                body.expect("cut, not left hanging").is_err(),
                started.elapsed(),
            )
        }
    };
    // Content-Length declared: the request deadline cuts the body.
    let (cut, took) = stalled("stall=length").await;
    assert!(cut, "the client sees a truncated body");
    assert!(took >= Duration::from_millis(450), "{took:?}");
    assert!(took < Duration::from_millis(1400), "{took:?}");
    // No length: a stream outlives the deadline; idle silence ends it.
    let (cut, took) = stalled("stall=chunked").await;
    assert!(cut);
    assert!(took >= Duration::from_millis(1400), "{took:?}");
    assert!(took < Duration::from_millis(3000), "{took:?}");
    let metrics = proxy.metrics().await;
    assert_eq!(
        metric_value(&metrics, "outrigger_timeouts_total", &["kind=\"request\""]),
        1.0
    );
    assert_eq!(
        metric_value(&metrics, "outrigger_timeouts_total", &["kind=\"idle\""]),
        1.0
    );
}

/// Route names label the request, retry and timeout series and the access
/// log line; an unnamed route is `route-<index>`, requests no route matches
/// `default`. A route's retries draw on the Service's budget (here one that
/// allows none, set in spec.retry, which itself does not retry).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_are_named_in_metrics_and_logs_and_retry_within_the_budget() {
    use tokio::io::AsyncBufReadExt;
    let app = upstream().await;
    let spec = concat!(
        "  retry: {attempts: 0, budget: {percent: 0, minRetryRate: {count: 0, interval: 1s}}}\n",
        "  routes:\n",
        "  - name: charge\n",
        "    match: {pathPrefix: /charge}\n",
        "    retry: {attempts: 2, backoff: {base: 1ms, max: 5ms}}\n",
        "  - match: {pathPrefix: /slow}\n",
        "    timeouts: {request: 200ms}\n",
    );
    let file = PolicyFile::new(
        "web",
        &format!(
            "{}{}",
            policy("web", spec),
            endpoint_slice("web", &[app.addr.port()])
        ),
    );
    let mut proxy = ProxyProcess::start(&[&file.flag(), "--access-log"]).await;

    // The charge route retries, but the budget allows no retry at all.
    app.set_script(statuses(3, 503));
    let (status, _, _) = request(proxy.outbound, "GET", "/charge/1", &[("host", "web")], b"").await;
    assert_eq!(status, 503);
    assert_eq!(
        app.hits(),
        1,
        "the Service's budget holds the route's retries"
    );
    assert_eq!(
        metric(&proxy, "outrigger_retry_budget_exhausted_total", &[]).await,
        1.0
    );
    // The unnamed route's request timeout, labelled by its index.
    app.set_script(vec![Fault {
        delay: Some(Duration::from_secs(2)),
        ..Fault::default()
    }]);
    let (status, _, _) = request(proxy.outbound, "GET", "/slow", &[("host", "web")], b"").await;
    assert_eq!(status, 504);
    app.set_script(vec![]);
    let (status, _, _) = get(&proxy).await;
    assert_eq!(status, 200);

    let text = proxy.metrics().await;
    for (route, class) in [("charge", "5xx"), ("route-1", "5xx"), ("default", "2xx")] {
        assert_eq!(
            metric_value(
                &text,
                "outrigger_requests_total",
                &[
                    &format!("route=\"{route}\""),
                    &format!("status_class=\"{class}\"")
                ]
            ),
            1.0,
            "{route}: {text}"
        );
    }
    assert_eq!(
        metric_value(
            &text,
            "outrigger_timeouts_total",
            &["route=\"route-1\"", "kind=\"request\""]
        ),
        1.0,
        "{text}"
    );

    let stdout = proxy.child.stdout.take().unwrap();
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let mut routes = Vec::new();
    while routes.len() < 3 {
        let line = tokio::time::timeout(Duration::from_secs(5), lines.next_line())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let entry: serde_json::Value = serde_json::from_str(&line).unwrap();
        routes.push(entry["route"].as_str().unwrap().to_string());
    }
    assert_eq!(routes, ["charge", "route-1", "default"]);
}

/// From a file that holds the Service, an inbound request finds its policy
/// by the Service port whose targetPort is the pod port it came to (as the
/// operator does), whatever port the client's Host header names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_policy_is_chosen_by_the_service_port_leading_to_the_pod() {
    let app = upstream().await;
    let service = format!(
        "---\napiVersion: v1\nkind: Service\nmetadata: {{name: web, namespace: default}}\nspec:\n  ports:\n  - {{name: http, port: 80, targetPort: {}}}\n",
        app.addr.port()
    );
    let spec = "  rateLimit: {requestsPerSecond: 1, burst: 1}\n";
    let limited = policy("web", spec).replace(
        "targetRef: {kind: Service, name: web}",
        "targetRef: {kind: Service, name: web, port: 80}",
    );
    let file = PolicyFile::new("web", &format!("{limited}{service}"));
    let proxy = ProxyProcess::start(&[
        &format!("--app-addr={}", app.addr),
        "--service-name=web",
        &file.flag(),
    ])
    .await;
    let host = [("host", "web.default.svc.cluster.local:9999")];
    let (first, _, _) = request(proxy.inbound, "GET", "/", &host, b"").await;
    let (second, headers, _) = request(proxy.inbound, "GET", "/", &host, b"").await;
    assert_eq!((first, second), (200, 429), "the port-80 policy applies");
    assert_eq!(headers["x-outrigger-error"], "rate-limited");
}
