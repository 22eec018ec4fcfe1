//! Gateway API routes (HTTPRoute) in the proxy's policy file, enforced by the
//! real binary over real sockets: traffic split by weight, matching by path,
//! header and query parameter with the spec's precedence, per-route
//! timeouts and retries, header changes, 404 for a request no route matches
//! and 500 for a backend that does not resolve. The upstream Gateway API
//! mesh conformance manifests are read from ../shared/gateway-api at run
//! time (reference material, not ours to copy); each Service's endpoints
//! are loopback fault-injecting upstreams listed by EndpointSlices in the
//! same file, so nothing but Kubernetes' own objects is simulated.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use outrigger_e2e::proxy::*;
use outrigger_e2e::workspace_root;
use outrigger_tools::fault_upstream::{Fault, FaultConfig, FaultUpstream};

/// A request (path, headers) and the upstream that must serve it.
type Case = (
    &'static str,
    &'static [(&'static str, &'static str)],
    &'static str,
);

/// Namespace of the upstream mesh conformance manifests.
const MESH: &str = "gateway-conformance-mesh";

/// An upstream Gateway API mesh conformance manifest.
fn upstream_manifest(name: &str) -> String {
    let path = workspace_root()
        .join("../shared/gateway-api/mesh-conformance-manifests")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; these tests read the Gateway API's mesh conformance manifests from ../shared/gateway-api beside the workspace",
            path.display()
        )
    })
}

/// An EndpointSlice giving Service `namespace/name` one loopback endpoint.
fn slice(namespace: &str, name: &str, port: u16) -> String {
    format!(
        "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}-0\n  namespace: {namespace}\n  labels: {{kubernetes.io/service-name: {name}}}\nports: [{{port: {port}}}]\nendpoints:\n  - addresses: [\"127.0.0.1\"]\n    conditions: {{ready: true}}\n"
    )
}

async fn upstream() -> FaultUpstream {
    FaultUpstream::start(loopback(0), FaultConfig::default())
        .await
        .unwrap()
}

/// The upstream that served each of `count` requests, by name.
async fn spread(
    proxy: SocketAddr,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
    upstreams: &[(&str, &FaultUpstream)],
    count: usize,
) -> BTreeMap<String, u64> {
    let before: Vec<u64> = upstreams.iter().map(|(_, u)| u.hits()).collect();
    let mut all = vec![("host", host)];
    all.extend_from_slice(headers);
    for _ in 0..count {
        let (status, _, _) = request(proxy, "GET", path, &all, b"").await;
        assert_eq!(status, 200, "{host}{path}");
    }
    upstreams
        .iter()
        .zip(before)
        .map(|((name, u), before)| (name.to_string(), u.hits() - before))
        .collect()
}

/// The upstream conformance manifest for weights (echo-v1 70, echo-v2 30):
/// 2,000 requests split within ±5 points (the binomial spread at 2,000 is
/// about 1 point).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_split_requests_between_services() {
    let (v1, v2) = (upstream().await, upstream().await);
    let file = PolicyFile::new(
        "weights",
        &format!(
            "{}\n{}{}",
            upstream_manifest("httproute-weight.yaml"),
            slice(MESH, "echo-v1", v1.addr.port()),
            slice(MESH, "echo-v2", v2.addr.port())
        ),
    );
    let proxy = ProxyProcess::start(&[&file.flag()]).await;
    let host = format!("echo.{MESH}");
    let hits = spread(
        proxy.outbound,
        &host,
        "/",
        &[],
        &[("v1", &v1), ("v2", &v2)],
        2000,
    )
    .await;
    let share = hits["v1"] as f64 / 2000.0;
    assert!(
        (0.65..=0.75).contains(&share),
        "echo-v1 took {share}: {hits:?}"
    );
    assert_eq!(hits["v1"] + hits["v2"], 2000);
    // What each backend received, by route, on the Service the client named.
    let metrics = proxy.metrics().await;
    for (backend, count) in [("echo-v1", hits["v1"]), ("echo-v2", hits["v2"])] {
        let value = metric_value(
            &metrics,
            "outrigger_route_backend_requests_total",
            &[
                &format!("destination=\"echo.{MESH}.svc.cluster.local:80\""),
                "route=\"mesh-weighted-backends/0\"",
                &format!("backend=\"{backend}.{MESH}.svc.cluster.local:8080\""),
            ],
        );
        assert_eq!(value, count as f64, "{backend} in\n{metrics}");
    }
}

/// The upstream conformance manifest for matching: PathPrefix / or header
/// version=one → echo-v1; PathPrefix /v2 or version=two → echo-v2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_and_header_matches_follow_the_precedence_rules() {
    let (v1, v2) = (upstream().await, upstream().await);
    let file = PolicyFile::new(
        "matching",
        &format!(
            "{}\n{}{}",
            upstream_manifest("httproute-matching.yaml"),
            slice(MESH, "echo-v1", v1.addr.port()),
            slice(MESH, "echo-v2", v2.addr.port())
        ),
    );
    let proxy = ProxyProcess::start(&[&file.flag()]).await;
    let host = format!("echo.{MESH}");
    let upstreams = [("v1", &v1), ("v2", &v2)];
    let cases: &[Case] = &[
        ("/", &[], "v1"),
        ("/example", &[], "v1"),
        ("/", &[("version", "one")], "v1"),
        ("/v2", &[], "v2"),
        ("/v2/example", &[], "v2"),
        // A header match outranks the implied prefix "/".
        ("/", &[("version", "two")], "v2"),
        // Whole segments: /v2example is not under /v2.
        ("/v2example", &[], "v1"),
    ];
    for (path, headers, expected) in cases {
        let hits = spread(proxy.outbound, &host, path, headers, &upstreams, 1).await;
        assert_eq!(hits[*expected], 1, "{path} {headers:?}: {hits:?}");
    }
}

/// Query parameters and the spec's tie-breaks, from the upstream manifest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_parameters_route_requests() {
    let (v1, v2, v3) = (upstream().await, upstream().await, upstream().await);
    let file = PolicyFile::new(
        "query",
        &format!(
            "{}\n{}{}{}",
            upstream_manifest("httproute-query-param-matching.yaml"),
            slice(MESH, "echo-v1", v1.addr.port()),
            slice(MESH, "echo-v2", v2.addr.port()),
            slice(MESH, "echo", v3.addr.port())
        ),
    );
    let proxy = ProxyProcess::start(&[&file.flag()]).await;
    let host = format!("echo.{MESH}");
    let upstreams = [("v1", &v1), ("v2", &v2)];
    let cases: &[Case] = &[
        ("/?animal=whale", &[], "v1"),
        ("/?animal=dolphin", &[], "v2"),
        ("/path1?animal=whale", &[], "v1"),
        // Header and query outrank the query alone.
        ("/?animal=whale", &[("version", "one")], "v2"),
        ("/path3?animal=shark", &[], "v1"),
        ("/path4?animal=kraken", &[("version", "three")], "v1"),
        // The longer path prefix outranks a query match.
        ("/path5?animal=hydra", &[], "v1"),
        ("/?animal=hydra", &[], "v2"),
    ];
    for (path, headers, expected) in cases {
        let hits = spread(proxy.outbound, &host, path, headers, &upstreams, 1).await;
        assert_eq!(hits[*expected], 1, "{path} {headers:?}: {hits:?}");
    }
    // No rule matches: 404 from the proxy, nothing reaches a backend.
    let (status, headers, _) = request(
        proxy.outbound,
        "GET",
        "/?animal=cat",
        &[("host", host.as_str())],
        b"",
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(headers["x-outrigger-error"], "no-route");
    assert_eq!(v3.hits(), 0, "the parent Service is not a fallback");
}

const ROUTES: &str = "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: shop, namespace: default}
spec:
  parentRefs: [{group: \"\", kind: Service, name: shop, port: 80}]
  rules:
  - name: slow
    matches: [{path: {type: PathPrefix, value: /slow}}]
    timeouts: {request: 300ms}
  - name: retried
    matches: [{path: {type: PathPrefix, value: /retried}}]
    retry: {attempts: 2, codes: [500], backoff: 1ms}
  - name: headers
    matches: [{path: {type: PathPrefix, value: /headers}}]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        set: [{name: x-set, value: by-route}]
        add: [{name: x-add, value: added}]
        remove: [x-remove]
    - type: ResponseHeaderModifier
      responseHeaderModifier:
        set: [{name: x-served-by, value: shop-route}]
  - name: elsewhere
    matches: [{path: {type: Exact, value: /elsewhere}}]
    backendRefs: [{name: missing, namespace: other, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: moved, namespace: default}
spec:
  parentRefs: [{group: \"\", kind: Service, name: shop, port: 80}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /old}}]
    filters:
    - type: RequestRedirect
      requestRedirect: {path: {type: ReplaceFullPath, replaceFullPath: /new}}
";

/// A rule's timeouts and retry, set on the route, with a ResiliencePolicy
/// on the same Service giving what the route leaves unset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_timeouts_retries_and_header_changes_are_enforced() {
    let app = upstream().await;
    let file = PolicyFile::new(
        "shop",
        &format!(
            "{ROUTES}---\n{}{}",
            policy(
                "shop",
                "  retry: {attempts: 1, codes: [503], backoff: {base: 1ms, max: 2ms}}\n"
            ),
            endpoint_slice("shop", &[app.addr.port()])
        ),
    );
    let proxy = ProxyProcess::start(&[&file.flag()]).await;
    let send = |path: &'static str, headers: Vec<(&'static str, &'static str)>| {
        let outbound = proxy.outbound;
        async move {
            let mut all = vec![("host", "shop")];
            all.extend(headers);
            request(outbound, "GET", path, &all, b"").await
        }
    };

    // timeouts.request of the rule: 300ms against a 2s upstream.
    let (status, headers, _) = send("/slow", vec![("x-fault", "delay=2s")]).await;
    assert_eq!(status, 504);
    assert_eq!(headers["x-outrigger-error"], "timeout");

    // retry.codes of the rule: 500 is retried (twice), 503 is not (the
    // policy's codes are replaced, not merged).
    app.set_script(vec![Fault::status(500), Fault::status(500)]);
    let before = app.hits();
    assert_eq!(send("/retried", vec![]).await.0, 200);
    assert_eq!(app.hits() - before, 3, "two retries of 500");
    app.set_script(vec![Fault::status(503)]);
    let before = app.hits();
    assert_eq!(send("/retried", vec![]).await.0, 503);
    assert_eq!(app.hits() - before, 1, "503 is not in the rule's codes");

    // A request outside every rule is refused: the routes are exclusive.
    let (status, headers, _) = send("/other", vec![]).await;
    assert_eq!(
        (status, &headers["x-outrigger-error"]),
        (404, &"no-route".parse().unwrap())
    );

    // Header changes, seen by the upstream and by the client.
    let (status, headers, body) = send(
        "/headers",
        vec![
            ("x-set", "by-client"),
            ("x-add", "first"),
            ("x-remove", "1"),
        ],
    )
    .await;
    assert_eq!(status, 200);
    let seen = String::from_utf8(body).unwrap();
    assert!(seen.contains("x-set: by-route\n"), "{seen}");
    assert!(!seen.contains("by-client"), "{seen}");
    assert!(
        seen.contains("x-add: first\n") && seen.contains("x-add: added\n"),
        "{seen}"
    );
    assert!(!seen.contains("x-remove"), "{seen}");
    assert_eq!(headers["x-served-by"], "shop-route");

    // A backend in another namespace without a grant does not resolve: 500,
    // never someone else's share.
    let (status, headers, _) = send("/elsewhere", vec![]).await;
    assert_eq!(status, 500);
    assert_eq!(headers["x-outrigger-error"], "invalid-backend");

    // A route the proxy cannot honour (a redirect) is not attached, and
    // /config says why, as its status would in a cluster.
    assert_eq!(send("/old", vec![]).await.0, 404);
    let config = proxy.config().await;
    let moved = config["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["route"] == "HTTPRoute default/moved")
        .unwrap_or_else(|| panic!("{config}"));
    assert_eq!(moved["accepted"]["status"], false, "{moved}");
    assert_eq!(moved["accepted"]["reason"], "UnsupportedValue", "{moved}");

    // The rules label the metrics by name.
    let metrics = proxy.metrics().await;
    for route in ["shop/slow", "shop/retried", "shop/headers"] {
        assert!(
            metrics.contains(&format!("route=\"{route}\"")),
            "{route} in\n{metrics}"
        );
    }
}

/// A BackendTrafficPolicy's retry budget (GEP-3388) caps the retries a
/// ResiliencePolicy asks for when that policy sets no budget of its own:
/// here no share of traffic and one retry a minute, against three retries
/// per request of an upstream that always fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_traffic_policy_budget_caps_retries() {
    let app = FaultUpstream::start(
        loopback(0),
        FaultConfig {
            failure_rate: 1.0,
            ..FaultConfig::default()
        },
    )
    .await
    .unwrap();
    let budget = "apiVersion: gateway.networking.x-k8s.io/v1alpha1
kind: XBackendTrafficPolicy
metadata: {name: pay-budget, namespace: default}
spec:
  targetRefs: [{group: \"\", kind: Service, name: pay}]
  retryConstraint:
    budget: {percent: 0, interval: 10s}
    minRetryRate: {count: 1, interval: 60s}
";
    let file = PolicyFile::new(
        "traffic",
        &format!(
            "{budget}---\n{}{}",
            policy(
                "pay",
                "  retry: {attempts: 3, codes: [503], backoff: {base: 1ms, max: 2ms}}\n"
            ),
            endpoint_slice("pay", &[app.addr.port()])
        ),
    );
    let proxy = ProxyProcess::start(&[&file.flag()]).await;
    for _ in 0..3 {
        let (status, _, _) = request(proxy.outbound, "GET", "/", &[("host", "pay")], b"").await;
        assert_eq!(status, 503);
    }
    // Three requests and the one retry the budget allows (the default
    // budget, 10 retries a second, would have allowed all nine).
    assert_eq!(app.hits(), 4);
    let metrics = proxy.metrics().await;
    assert!(
        metric_value(
            &metrics,
            "outrigger_retry_budget_exhausted_total",
            &["pay.default"]
        ) >= 2.0,
        "{metrics}"
    );
    let config = proxy.config().await;
    let standing = config["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["route"] == "XBackendTrafficPolicy default/pay-budget")
        .unwrap_or_else(|| panic!("{config}"));
    assert_eq!(standing["accepted"]["status"], true, "{standing}");
}
