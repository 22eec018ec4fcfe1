//! Outrigger observed through a real Prometheus, the way the chart sets it
//! up: `helm install` on the test node (the operator as the chart's
//! Deployment, injected apps in a labelled namespace), a Prometheus on the
//! host whose scrape jobs are the rendered chart's PodMonitor and
//! ServiceMonitor translated as the Prometheus Operator would
//! (`common/prometheus.rs`: pods by their `outrigger-admin` container port,
//! init containers included, the operator by its metrics Service's
//! EndpointSlices, the same paths and schemes, the relabelling that gives
//! series their namespace, pod, container and job labels; intervals set to
//! 1s through the chart's values). Traffic through the proxies with known
//! counts (plain calls, calls retried twice, a policy edit adding a circuit
//! breaker, calls that open it, calls past an inbound rate limit with a
//! retry budget of zero, calls past a request timeout and a concurrency
//! limit, a DryRun rate limit, failing calls ejecting one of two endpoints,
//! a watch without a token) is then read back with
//! `/api/v1/query`: request totals and rates, the retry ratio, the breaker's
//! state, its transition and fallbacks, the operator's change-to-ack
//! histogram, rate-limited calls, exhausted budget, timeouts, shed calls,
//! what DryRun would have rejected, the ejection, the refused watch. Every
//! expression of the chart's PrometheusRule is evaluated (the breaker
//! alert's condition holds for the pod whose breaker is open, later the
//! budget alert's for the pod whose budget ran out; the others are quiet in
//! this healthy install: a leader, both operators up under the
//! ServiceMonitor's job label, proxies connected) and every query of the
//! chart's Grafana dashboard returns data, except the allow-listed ones
//! (NO_DATA_HERE), which need an event this test does not create. Finally
//! `promtool check metrics` on the real /metrics of two proxies (after that
//! traffic) and of both operator replicas.
//!
//! Simulated:
//! - Kubernetes service discovery. Debian's Prometheus is built without
//!   `kubernetes_sd_configs`, so the test discovers (`Discovery`): it lists
//!   pods, Services and EndpointSlices from the test API server every half
//!   second and writes file_sd targets with the `__meta_kubernetes_*` labels
//!   Prometheus's `pod` and `endpointslice` roles give; the relabelling
//!   then runs in the real Prometheus.
//! - The Prometheus Operator's translation of the monitors, written here for
//!   the fields the chart uses (an unknown field fails the test).
//! - What the test node simulates (docs/architecture.md, "Testing on one
//!   machine"): kubelet, kube-proxy, the EndpointSlice and Deployment
//!   controllers; the API server is the test one.
//!
//! Real: Prometheus, promtool, the proxy, the operator, the chart, helm.
//! Needs root, `ip`, `iptables`, curl, helm, prometheus and promtool
//! (`bash tests/setup.sh`).

mod common;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::prometheus::*;
use common::*;
use outrigger_e2e::binary;
use outrigger_e2e::kube_api::KubeApi;
use serde_json::{json, Value};

/// The chart's values for monitoring, as a user turns it on; 1s intervals so
/// the test sees changes quickly.
const MONITORING: &[&str] = &[
    "monitoring.podMonitor.enabled=true",
    "monitoring.podMonitor.interval=1s",
    "monitoring.podMonitor.scrapeTimeout=1s",
    "monitoring.serviceMonitor.enabled=true",
    "monitoring.serviceMonitor.interval=1s",
    "monitoring.serviceMonitor.scrapeTimeout=1s",
    "monitoring.prometheusRule.enabled=true",
    "monitoring.dashboard.enabled=true",
];

/// Dashboard queries allowed to return nothing here, each with why: the
/// event behind them is not part of this test's traffic. The text to find in
/// the expression, and the reason.
const NO_DATA_HERE: &[(&str, &str)] = &[(
    "outrigger_operator_reconcile_errors_total",
    "status writes fail only when the API server fails them",
)];

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Runs `test-load` in a client pod `name` and waits for its summary; returns
/// it and the Unix time at which the test saw the load end.
fn run_load(
    api: &KubeApi,
    node: &NodeProcess,
    state: &std::path::Path,
    name: &str,
    url: &str,
    rate: u32,
    seconds: u64,
) -> (LoadSummary, f64) {
    start_load(api, name, url, rate, seconds);
    let (summary, log) = load_result(api, node, state, name, Duration::from_secs(90 + seconds));
    let ended = now();
    assert_eq!(
        summary.requests,
        u64::from(rate) * seconds,
        "every request of the load was made:\n{log}"
    );
    (summary, ended)
}

fn within(value: f64, expected: f64, tolerance: f64) -> bool {
    (value - expected).abs() <= expected * tolerance
}

#[test]
fn prometheus_scrapes_as_the_chart_says_and_the_rules_and_dashboard_hold() {
    require_node_tools();
    for tool in ["prometheus", "promtool"] {
        outrigger_e2e::require_tool(tool);
    }
    let began = Instant::now();
    let Some(api) = KubeApi::start("testnode-prometheus") else {
        return;
    };
    let helm = outrigger_e2e::kube_api::helm()
        .expect("no helm: run bash tests/apiserver/install-kubectl.sh (tests/run.sh does)");
    binary("outrigger-proxy", "outrigger-proxy").expect("the proxy builds");
    binary("outrigger-operator", "outrigger-operator").expect("the operator builds");

    // What the chart tells Prometheus: its monitors, rules and dashboard.
    let rendered = render_chart(&helm, RELEASE_NS, MONITORING);
    let prom_dir = api.dir.join("prometheus");
    std::fs::create_dir_all(&prom_dir).unwrap();
    let mut jobs = pod_monitor_jobs(document(&rendered, "PodMonitor"), &prom_dir);
    jobs.extend(service_monitor_jobs(
        document(&rendered, "ServiceMonitor"),
        &prom_dir,
    ));
    let rules: Vec<Value> = document(&rendered, "PrometheusRule")["spec"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap().clone())
        .collect();
    let dashboard: Value = {
        let map = rendered
            .iter()
            .find(|d| d["kind"] == "ConfigMap" && d["data"]["outrigger.json"].is_string())
            .expect("the dashboard ConfigMap");
        serde_json::from_str(map["data"]["outrigger.json"].as_str().unwrap()).unwrap()
    };

    let state = api.dir.join("node");
    let node = NodeProcess::start(&api, &state);
    // The install itself leaves the monitors out: this API server has no
    // monitoring.coreos.com CRDs (no Prometheus Operator); the test's
    // Prometheus gets their translation instead.
    let took = helm_install(&api, &node, &helm);
    eprintln!("helm install to 2 ready operator pods: {took:?}");
    let discovery = Discovery::start(api.kubectl_bin(), &api.kubeconfig, &jobs);
    let scrape_configs: Vec<&Value> = jobs.iter().map(|j| &j.config).collect();
    let prometheus = Prometheus::start(
        &prom_dir,
        &json!({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": scrape_configs,
        }),
    );

    // Both operator replicas are found through the metrics Service, with the
    // job label the ServiceMonitor gives (the OperatorDown alert's).
    let selector = &document(&rendered, "ServiceMonitor")["spec"]["selector"]["matchLabels"];
    let metrics_job = rendered
        .iter()
        .find(|d| {
            d["kind"] == "Service"
                && selector
                    .as_object()
                    .unwrap()
                    .iter()
                    .all(|(k, v)| d["metadata"]["labels"][k] == *v)
        })
        .expect("the Service the ServiceMonitor selects")["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    let up_operators = format!("up{{job=\"{metrics_job}\", namespace=\"{RELEASE_NS}\"}}");
    prometheus.wait(Duration::from_secs(60), "2 operator targets up", || {
        let up = prometheus.query(&format!("{up_operators} == 1"));
        (up.len() == 2 && up.iter().all(|s| s["metric"]["pod"].is_string())).then_some(())
    });

    api.apply(&web_app(1));
    let web_ip = web_ready(&api, &node, 1, "the injected web pod Ready")[0].clone();
    let web_pod = web_pods(&api)[0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    // The proxy of the web pod (a native sidecar: an init container's port)
    // is a target with its pod and namespace.
    prometheus.wait(Duration::from_secs(60), "the web pod's proxy up", || {
        let up = prometheus.query(&format!(
            "up{{namespace=\"shop\", pod=\"{web_pod}\", container=\"outrigger-proxy\"}} == 1"
        ));
        (up.len() == 1).then_some(())
    });

    // Retries: two of every 503, a budget that never runs out.
    api.apply(&policy(
        "  retry: {attempts: 2, codes: [503], backoff: {base: 1ms, max: 5ms}, budget: {percent: 100, minRetryRate: {count: 1000, interval: 1s}}}\n",
    ));
    acknowledged(&api, &node, 1, "the retry policy reaches the web proxy");

    // 1. Request rate: 20 a second for 20 s through the client's proxy.
    let (ok, ended) = run_load(
        &api,
        &node,
        &state,
        "ok",
        "http://web.shop.svc.cluster.local/",
        20,
        20,
    );
    assert_eq!(ok.failed, 0);
    let out_ok = "namespace=\"shop\", pod=\"ok\", direction=\"outbound\"";
    let total = prometheus.wait(Duration::from_secs(30), "ok's total scraped", || {
        let v = prometheus.value(&format!(
            "sum(outrigger_requests_total{{{out_ok}, status_class=\"2xx\"}})"
        ))?;
        (v == ok.requests as f64).then_some(v)
    });
    // The rate over 10 s of the load's middle (the test saw the load end at
    // `ended`, at most a poll later than it did).
    let rate = prometheus
        .query_at(
            &format!("sum(rate(outrigger_requests_total{{{out_ok}}}[10s]))"),
            Some(ended - 5.0),
        )
        .first()
        .and_then(sample_value)
        .expect("a rate");
    eprintln!("requests: {total} 2xx counted; rate mid-load {rate:.2}/s (sent 20/s)");
    assert!(within(rate, 20.0, 0.25), "rate {rate}, sent 20/s");
    // The server's proxy counted them inbound, under its own pod.
    let inbound = prometheus
        .value(&format!(
            "sum(outrigger_requests_total{{namespace=\"shop\", pod=\"{web_pod}\", direction=\"inbound\", destination=~\"web.*\"}})"
        ))
        .unwrap_or(0.0);
    assert!(inbound >= ok.requests as f64, "inbound {inbound}");
    delete_pod(&api, "ok");

    // 2. Retries: 5 failing calls a second for 10 s, each retried twice.
    let before = app_failures(std::slice::from_ref(&web_ip));
    let (fail, ended) = run_load(
        &api,
        &node,
        &state,
        "fail",
        "http://web.shop.svc.cluster.local/fail",
        5,
        10,
    );
    let hits = app_failures(std::slice::from_ref(&web_ip)) - before;
    assert_eq!(fail.count("503"), fail.requests, "{}", fail.statuses);
    assert_eq!(hits, 3 * fail.requests, "each call: a try and two retries");
    let out_fail = "namespace=\"shop\", pod=\"fail\", direction=\"outbound\"";
    prometheus.wait(Duration::from_secs(30), "fail's retries scraped", || {
        let retries = prometheus.value(&format!(
            "sum(outrigger_retries_total{{{out_fail}, reason=\"status-503\"}})"
        ))?;
        let calls = prometheus.value(&format!("sum(outrigger_requests_total{{{out_fail}}})"))?;
        (retries == 2.0 * fail.requests as f64 && calls == fail.requests as f64).then_some(())
    });
    let ratio = prometheus
        .query_at(
            &format!(
                "sum(rate(outrigger_retries_total{{{out_fail}}}[6s])) / sum(rate(outrigger_requests_total{{{out_fail}}}[6s]))"
            ),
            Some(ended - 3.0),
        )
        .first()
        .and_then(sample_value)
        .expect("a retry ratio");
    eprintln!("retry ratio mid-load: {ratio:.3} (2 retries per call)");
    assert!(within(ratio, 2.0, 0.15), "retry ratio {ratio}");
    delete_pod(&api, "fail");

    // 3. A policy edit (a circuit breaker added) and the operator's
    // change-to-ack histogram: every observation it adds lies in a bucket no
    // larger than the time the test saw between the edit and the status
    // saying every proxy acknowledged.
    let histogram = |suffix: &str| {
        prometheus
            .value(&format!(
                "sum(outrigger_operator_change_to_ack_seconds_{suffix})"
            ))
            .unwrap_or(0.0)
    };
    let buckets_now = || -> std::collections::BTreeMap<String, f64> {
        prometheus
            .query("sum by (le) (outrigger_operator_change_to_ack_seconds_bucket)")
            .iter()
            .map(|s| {
                let le = s["metric"]["le"].as_str().unwrap().to_string();
                (le, sample_value(s).unwrap())
            })
            .collect()
    };
    let scraped_now = || {
        // The operators' own /metrics, summed, equals what Prometheus has.
        let pods = api
            .get_json(&[
                "-n",
                RELEASE_NS,
                "pods",
                "-l",
                "app.kubernetes.io/component=operator",
            ])
            .unwrap();
        let direct: f64 = pods["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|p| p["status"]["podIP"].as_str())
            .map(|ip| {
                sample(
                    &admin_metrics(ip, 9090),
                    "outrigger_operator_change_to_ack_seconds_count",
                    "",
                )
            })
            .sum();
        (histogram("count") == direct).then_some(direct)
    };
    // The fail pod's proxy gone from the status first, so that the time
    // measured below is the edit's alone.
    acknowledged(&api, &node, 1, "the fail pod's proxy gone");
    let count_before = prometheus.wait(Duration::from_secs(30), "acks scraped", scraped_now);
    let buckets_before = buckets_now();
    let edit = policy(
        "  retry: {attempts: 2, codes: [503], backoff: {base: 1ms, max: 5ms}, budget: {percent: 100, minRetryRate: {count: 1000, interval: 1s}}}\n  circuitBreaker: {failureRatePercent: 50, minimumRequests: 5, window: 10s, openFor: 2m, maxOpenFor: 5m}\n",
    );
    let edited = Instant::now();
    api.apply(&edit);
    acknowledged(&api, &node, 1, "the breaker reaches the web proxy");
    let ack_time = edited.elapsed().as_secs_f64();
    let buckets = [
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ];
    let bound = buckets
        .iter()
        .find(|b| **b >= ack_time)
        .map_or("+Inf".to_string(), |b| b.to_string());
    let le_before = buckets_before.get(&bound).copied().unwrap_or(0.0);
    let count_after = prometheus.wait(Duration::from_secs(30), "the edit's acks scraped", || {
        let c = scraped_now()?;
        (c > count_before).then_some(c)
    });
    let le_after = buckets_now().get(&bound).copied().unwrap_or(0.0);
    eprintln!(
        "change to ack: {} observation(s) for the edit, the status said acknowledged after {ack_time:.3}s; all within le={bound}: {}",
        count_after - count_before,
        le_after - le_before
    );
    assert_eq!(
        le_after - le_before,
        count_after - count_before,
        "an observation above {bound}s while the edit was acknowledged in {ack_time:.3}s"
    );

    // 4. The breaker opens: 10 failing calls a second for 10 s.
    let (trip, _) = run_load(
        &api,
        &node,
        &state,
        "trip",
        "http://web.shop.svc.cluster.local/fail",
        10,
        10,
    );
    let fallbacks = trip.count("503/circuit-open");
    assert!(fallbacks >= 1, "the breaker opened: {}", trip.statuses);
    let out_trip = "namespace=\"shop\", pod=\"trip\", direction=\"outbound\"";
    let breaker = prometheus.wait(
        Duration::from_secs(30),
        "the breaker's state scraped",
        || {
            let open = prometheus.query(&format!(
                "max by (namespace, pod, destination) (outrigger_circuit_state{{{out_trip}}}) == 1"
            ));
            let served = prometheus.value(&format!(
                "sum(outrigger_fallback_responses_total{{{out_trip}}})"
            ))?;
            (open.len() == 1 && served == fallbacks as f64).then(|| open[0]["metric"].clone())
        },
    );
    eprintln!("breaker open in prometheus: {breaker}; {fallbacks} fallbacks counted");
    let opened = prometheus
        .value(&format!(
            "sum(outrigger_circuit_transitions_total{{{out_trip}, to=\"open\"}})"
        ))
        .unwrap_or(0.0);
    assert_eq!(opened, 1.0, "one transition to open");

    // 5. The chart's alert expressions on these series: the breaker's holds
    // for the trip pod's destination, the rest are quiet.
    for rule in &rules {
        let alert = rule["alert"].as_str().unwrap();
        let expr = rule["expr"].as_str().unwrap();
        let result = prometheus.query(expr);
        eprintln!("alert {alert}: {} series", result.len());
        if alert == "OutriggerCircuitBreakerOpen" {
            assert_eq!(result.len(), 1, "{alert}: {result:?}");
            let labels = &result[0]["metric"];
            assert_eq!(labels["pod"], "trip", "{labels}");
            assert_eq!(labels["namespace"], "shop", "{labels}");
            assert_eq!(labels["direction"], "outbound", "{labels}");
            assert_eq!(labels["destination"], breaker["destination"], "{labels}");
        } else {
            assert!(result.is_empty(), "{alert} would fire: {expr}\n{result:?}");
        }
    }

    // 6. Rate limit and retry budget: the web pods' proxies limit inbound to
    // 5 a second (burst 5), the callers' budget allows no retry. Two seconds
    // of 20 failing calls a second (short enough that the readiness probes,
    // which pass through the same limit, keep the pod Ready).
    api.apply(&policy(
        "  retry: {attempts: 2, codes: [503], backoff: {base: 1ms, max: 5ms}, budget: {percent: 0, minRetryRate: {count: 0, interval: 1s}}}\n  rateLimit: {requestsPerSecond: 5, burst: 5}\n",
    ));
    acknowledged(&api, &node, 2, "the limits reach the web and trip proxies");
    let (limits, _) = run_load(
        &api,
        &node,
        &state,
        "limits",
        "http://web.shop.svc.cluster.local/fail",
        20,
        2,
    );
    let limited = limits.count("429/rate-limited");
    let refused = limits.count("503");
    assert!(limited >= 1 && refused >= 1, "{}", limits.statuses);
    let out_limits = "namespace=\"shop\", pod=\"limits\", direction=\"outbound\"";
    prometheus.wait(Duration::from_secs(30), "limits scraped", || {
        // Every call the app failed wanted a retry, refused by the budget.
        let exhausted = prometheus.value(&format!(
            "sum(outrigger_retry_budget_exhausted_total{{{out_limits}}})"
        ))?;
        // The web proxy's limit also answers the probes: at least the
        // client's 429s.
        let rate_limited = prometheus.value(&format!(
            "sum(outrigger_rate_limited_total{{namespace=\"shop\", pod=\"{web_pod}\", direction=\"inbound\"}})"
        ))?;
        eprintln!("budget exhausted {exhausted} (503s {refused}); rate limited {rate_limited} (429s {limited})");
        (exhausted == refused as f64 && rate_limited >= limited as f64).then_some(())
    });
    // The budget alert groups by the labels these series carry (whether
    // it fires is promtool's test: a 2 s burst is not 5 minutes, and a series
    // born with its first increments may show no rate at all).
    let series = prometheus.query(&format!(
        "outrigger_retry_budget_exhausted_total{{{out_limits}}}"
    ));
    assert_eq!(series.len(), 1, "{series:?}");
    let labels = &series[0]["metric"];
    assert_eq!(labels["destination"], breaker["destination"], "{labels}");
    let budget_alert = rules
        .iter()
        .find(|r| r["alert"] == "OutriggerRetryBudgetExhausted")
        .unwrap();
    for label in ["namespace", "pod", "direction", "destination"] {
        assert!(labels[label].is_string(), "{label} in {labels}");
        assert!(
            budget_alert["expr"].as_str().unwrap().contains(label),
            "{budget_alert}"
        );
    }

    // 7. A watch without a token: refused (401) and counted by the operator
    // replica that refused it.
    let operator_ips: Vec<String> = api
        .get_json(&[
            "-n",
            RELEASE_NS,
            "pods",
            "-l",
            "app.kubernetes.io/component=operator",
        ])
        .unwrap()["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["status"]["podIP"].as_str().map(str::to_string))
        .collect();
    let out = std::process::Command::new("curl")
        .args([
            "-sk",
            "--max-time",
            "5",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
        ])
        .arg(format!(
            "https://{}:8090/v1/watch?proxy=intruder&destination=web.shop.svc.cluster.local:80",
            operator_ips[0]
        ))
        .output()
        .expect("curl runs");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "401");
    prometheus.wait(Duration::from_secs(30), "the refusal scraped", || {
        let refused = prometheus
            .value("sum(outrigger_operator_auth_failures_total{reason=\"unauthenticated\"})")?;
        // Two samples at least, so that rate() over it has a value.
        let samples = prometheus.value(
            "sum(count_over_time(outrigger_operator_auth_failures_total{reason=\"unauthenticated\"}[30s]))",
        )?;
        (refused == 1.0 && samples >= 2.0).then_some(())
    });

    // 8. Timeouts and shedding: the callers give up after 300 ms, the web
    // pods' proxies take one request at a time with no queue; 5 calls in a
    // second to a path the app answers after a second. (Short, as above:
    // the probes pass through the same limit.)
    api.apply(&policy(
        "  timeouts: {request: 300ms}\n  limits: {maxConcurrentRequests: 1, maxPendingRequests: 0}\n",
    ));
    acknowledged(
        &api,
        &node,
        3,
        "the limits reach the web, trip and limits proxies",
    );
    let (slow, _) = run_load(
        &api,
        &node,
        &state,
        "slow",
        "http://web.shop.svc.cluster.local/slow",
        5,
        1,
    );
    let timed_out = slow.count("504/timeout");
    let shed = slow.count("503/overloaded");
    assert!(timed_out >= 1 && shed >= 1, "{}", slow.statuses);
    let out_slow = "namespace=\"shop\", pod=\"slow\", direction=\"outbound\"";
    prometheus.wait(Duration::from_secs(30), "slow scraped", || {
        let timeouts = prometheus.value(&format!(
            "sum(outrigger_timeouts_total{{{out_slow}, kind=\"request\"}})"
        ))?;
        // The web proxy's limit also sheds probes: at least the client's.
        let shed_here = prometheus.value(&format!(
            "sum(outrigger_shed_requests_total{{namespace=\"shop\", pod=\"{web_pod}\", direction=\"inbound\"}})"
        ))?;
        eprintln!("timeouts {timeouts} (504s {timed_out}); shed {shed_here} (503s {shed})");
        (timeouts == timed_out as f64 && shed_here >= shed as f64).then_some(())
    });

    // 9. DryRun: the same rate limit as in 6, counted, not enforced.
    api.apply(&policy(
        "  mode: DryRun\n  rateLimit: {requestsPerSecond: 5, burst: 5}\n",
    ));
    acknowledged(&api, &node, 4, "the DryRun policy reaches every proxy");
    let (dry, _) = run_load(
        &api,
        &node,
        &state,
        "dry",
        "http://web.shop.svc.cluster.local/",
        20,
        1,
    );
    assert_eq!(
        dry.failed, 0,
        "DryRun lets every call through: {}",
        dry.statuses
    );
    prometheus.wait(Duration::from_secs(30), "dry run scraped", || {
        let would = prometheus.value(&format!(
            "sum(outrigger_dry_run_would_reject_total{{namespace=\"shop\", pod=\"{web_pod}\", direction=\"inbound\", reason=\"rate-limited\"}})"
        ))?;
        // 20 calls at once against a burst of 5 (plus what refilled).
        (would >= 10.0).then_some(())
    });

    // 10. Outlier detection: a second web pod, and failing calls eject one
    // of the two endpoints (no more: maxEjectionPercent 50).
    api.kubectl_ok(&["-n", "shop", "scale", "deployment/web", "--replicas=2"]);
    web_ready(&api, &node, 2, "2 web pods");
    api.apply(&policy(
        "  outlierDetection: {consecutiveFailures: 1, maxEjectionPercent: 50, baseEjectionTime: 2m}\n",
    ));
    acknowledged(&api, &node, 6, "outlier detection reaches every proxy");
    run_load(
        &api,
        &node,
        &state,
        "eject",
        "http://web.shop.svc.cluster.local/fail",
        5,
        1,
    );
    let out_eject = "namespace=\"shop\", pod=\"eject\", direction=\"outbound\"";
    prometheus.wait(Duration::from_secs(30), "ejection scraped", || {
        let ejections =
            prometheus.value(&format!("sum(outrigger_ejections_total{{{out_eject}}})"))?;
        let ejected =
            prometheus.value(&format!("sum(outrigger_ejected_endpoints{{{out_eject}}})"))?;
        (ejections == 1.0 && ejected == 1.0).then_some(())
    });

    // 11. Every dashboard query returns data (Grafana's variables at "All",
    // the rate interval at 30s: at least four scrapes, as Grafana's
    // $__rate_interval would be with a 1s scrape).
    let mut exprs = Vec::new();
    fn collect(panels: &Value, out: &mut Vec<(String, String)>) {
        for panel in panels.as_array().into_iter().flatten() {
            for target in panel["targets"].as_array().into_iter().flatten() {
                if let Some(expr) = target["expr"].as_str() {
                    let title = panel["title"].as_str().unwrap_or_default();
                    out.push((title.to_string(), expr.to_string()));
                }
            }
            collect(&panel["panels"], out);
        }
    }
    collect(&dashboard["panels"], &mut exprs);
    assert!(exprs.len() >= 20, "the dashboard's queries: {exprs:?}");
    // Polled: a series born a moment ago needs two samples in the window
    // before rate() of it has a value.
    let without_data = || -> Vec<String> {
        let mut empty = Vec::new();
        for (title, expr) in &exprs {
            let query = expr
                .replace("$__rate_interval", "30s")
                .replace("$namespace", ".*")
                .replace("$direction", ".*")
                .replace("$destination", ".*");
            let allowed = NO_DATA_HERE.iter().any(|(name, _)| expr.contains(name));
            if !allowed && prometheus.query(&query).is_empty() {
                empty.push(format!("{title}: {query}"));
            }
        }
        empty
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let empty = without_data();
        if empty.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "dashboard queries without data:\n{}",
            empty.join("\n")
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    for (title, expr) in &exprs {
        if let Some((_, why)) = NO_DATA_HERE.iter().find(|(name, _)| expr.contains(name)) {
            eprintln!("panel {title:?}: not required to have data here ({why})");
        }
    }
    // The variables' queries find this traffic's values.
    for variable in dashboard["templating"]["list"].as_array().unwrap() {
        let Some(def) = variable["definition"].as_str() else {
            continue;
        };
        let inner = def
            .strip_prefix("label_values(")
            .and_then(|d| d.strip_suffix(')'))
            .unwrap_or_else(|| panic!("a variable query of another form: {def}"));
        let (selector, label) = inner.rsplit_once(',').unwrap();
        let selector = selector
            .replace("$namespace", ".*")
            .replace("$direction", ".*");
        let values = prometheus.api(
            &format!("/api/v1/label/{}/values", label.trim()),
            &[("match[]", selector.trim())],
        );
        assert!(
            values.as_array().is_some_and(|v| !v.is_empty()),
            "variable {def}: no values"
        );
    }

    // 12. promtool check metrics on the real expositions, after the traffic.
    let trip_ip = api.get_json(&["-n", "shop", "pod", "trip"]).unwrap()["status"]["podIP"]
        .as_str()
        .unwrap()
        .to_string();
    let mut expositions = vec![("trip's proxy".to_string(), metrics(&trip_ip))];
    expositions.push(("web's proxy".into(), metrics(&web_ip)));
    let pods = api
        .get_json(&[
            "-n",
            RELEASE_NS,
            "pods",
            "-l",
            "app.kubernetes.io/component=operator",
        ])
        .unwrap();
    for pod in pods["items"].as_array().unwrap() {
        let ip = pod["status"]["podIP"].as_str().unwrap();
        expositions.push((format!("operator {ip}"), admin_metrics(ip, 9090)));
    }
    for (who, text) in &expositions {
        assert!(text.contains("# TYPE"), "{who}: {text}");
        if let Err(said) = promtool_check_metrics(text) {
            panic!("promtool check metrics on {who}:\n{said}");
        }
    }
    delete_pod(&api, "trip");
    api.kubectl_ok(&["delete", "namespace", "shop", "--wait=false"]);
    eprintln!("took {:?}", began.elapsed());
    drop(prometheus);
    drop(discovery);
    drop(node);
}
