//! Gateway API routes (GAMMA: HTTPRoute/GRPCRoute whose parentRefs are
//! Services) against a real API server (tests/apiserver) with the upstream
//! standard-channel route CRDs, the real operator and a proxy subscribed to
//! it. The CRDs and the conformance manifests are read at run time from the
//! upstream Gateway API files (`../shared/gateway-api` beside the workspace,
//! or `OUTRIGGER_GATEWAY_API_DIR`); they are not part of this repository.
//! Here: status, the compiled view and the snapshot, and, as a user would
//! meet them, a kubectl-applied route splitting real traffic through a
//! subscribed proxy and a BackendTrafficPolicy capping its retries (the
//! route rules' finer behaviour is tested in proxy/tests/gateway_routes.rs).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use outrigger_e2e::kube_api::KubeApi;
use outrigger_e2e::{binary, http, temp_dir, workspace_root, Process};
use outrigger_tools::fault_upstream::{FaultConfig, FaultUpstream};
use serde_json::{json, Value};

const CONTROLLER: &str = "outrigger.dev/mesh";
const NS: &str = "gateway-conformance-mesh";

/// Blocking kubectl calls without stalling the runtime's other tasks.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// The upstream Gateway API files; a clear failure when they are absent.
fn gateway_api_dir() -> PathBuf {
    let dir = std::env::var_os("OUTRIGGER_GATEWAY_API_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("../shared/gateway-api"));
    assert!(
        dir.join("crds-standard").is_dir() && dir.join("mesh-conformance-manifests").is_dir(),
        "the upstream Gateway API files are missing: expected crds-standard/ and \
         mesh-conformance-manifests/ in {} (set OUTRIGGER_GATEWAY_API_DIR to a checkout of \
         kubernetes-sigs/gateway-api's config/crd/standard and conformance/tests/mesh)",
        dir.display()
    );
    dir
}

fn conformance_manifest(name: &str) -> String {
    let path = gateway_api_dir()
        .join("mesh-conformance-manifests")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// HTTPRoute, GRPCRoute and ReferenceGrant CRDs (standard channel), not the
/// ValidatingAdmissionPolicy file (the test API server runs no such plugin).
fn install_gateway_crds(api: &KubeApi) {
    let dir = gateway_api_dir().join("crds-standard");
    for resource in ["httproutes", "grpcroutes", "referencegrants"] {
        let file = dir.join(format!("gateway.networking.k8s.io_{resource}.yaml"));
        api.kubectl_ok(&["apply", "--server-side", "-f", file.to_str().unwrap()]);
        api.wait_established(&format!("{resource}.gateway.networking.k8s.io"));
    }
    // Discovery of the new group reaches kubectl's cache a moment later.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !api.kubectl(&["get", "httproutes", "-A"]).status.success() {
        assert!(Instant::now() < deadline, "httproutes not served");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The namespace and Services of the conformance base manifests (their
/// Deployments need a cluster with controllers; endpoints come from the test).
fn apply_base_services(api: &KubeApi) {
    let base = conformance_manifest("base-manifests.yaml");
    let wanted: Vec<&str> = base
        .split("\n---")
        .filter(|doc| {
            doc.lines()
                .any(|l| l == "kind: Service" || l == "kind: Namespace")
        })
        .collect();
    assert!(
        wanted.iter().any(|d| d.contains("name: echo\n")),
        "no Service echo in base-manifests.yaml"
    );
    api.apply(&wanted.join("\n---\n"));
}

fn route(api: &KubeApi, kind: &str, name: &str) -> Option<Value> {
    api.get_json(&["-n", NS, kind, name])
}

/// The status.parents entries of ours.
fn ours(route: &Value) -> Vec<Value> {
    route["status"]["parents"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["controllerName"] == CONTROLLER)
        .cloned()
        .collect()
}

/// A condition of a status.parents entry: (status, reason, observedGeneration).
fn condition(parent: &Value, kind: &str) -> Option<(String, String, i64)> {
    parent["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)
        .map(|c| {
            (
                c["status"].as_str().unwrap_or_default().to_string(),
                c["reason"].as_str().unwrap_or_default().to_string(),
                c["observedGeneration"].as_i64().unwrap_or(-1),
            )
        })
}

/// Polls the route until `check` holds; the last state on timeout.
async fn wait_for_route(
    api: &KubeApi,
    kind: &str,
    name: &str,
    what: &str,
    limit: Duration,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        let current = blocking(|| route(api, kind, name));
        if let Some(r) = &current {
            if check(r) {
                return r.clone();
            }
        }
        assert!(
            Instant::now() < deadline,
            "{kind} {name}: {what} not reached within {limit:?}; last: {current:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Our single entry has Accepted and ResolvedRefs as given, at the route's
/// generation.
fn our_conditions_are(
    route: &Value,
    accepted: (&str, &str),
    resolved: Option<(&str, &str)>,
) -> bool {
    let generation = route["metadata"]["generation"].as_i64().unwrap_or(0);
    let parents = ours(route);
    let [parent] = parents.as_slice() else {
        return false;
    };
    let matches = |kind: &str, (status, reason): (&str, &str)| {
        condition(parent, kind).is_some_and(|c| c.0 == status && c.1 == reason && c.2 == generation)
    };
    matches("Accepted", accepted) && resolved.is_none_or(|r| matches("ResolvedRefs", r))
}

async fn operator(api: &KubeApi, extra: &[&str]) -> Process {
    let bin = binary("outrigger-operator", "outrigger-operator").unwrap();
    let token = api.dir.join("shared-token");
    std::fs::write(&token, "e2e-shared-token\n").unwrap();
    let mut args: Vec<String> = vec![
        "run".into(),
        "--insecure-plaintext".into(),
        "--auth=shared-token".into(),
        format!("--shared-token-file={}", token.display()),
        "--admin-addr=127.0.0.1:0".into(),
        "--policy-addr=127.0.0.1:0".into(),
        "--heartbeat=1s".into(),
        "--identity=operator-a".into(),
        "--lease-duration=2s".into(),
        "--lease-renew=500ms".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    Process::start_with_env(
        &bin,
        &args,
        &[
            ("KUBECONFIG", api.kubeconfig.as_path()),
            ("OUTRIGGER_LOG", Path::new("warn")),
        ],
    )
    .await
    .wait_ready(Duration::from_secs(20))
    .await
}

async fn proxy(op: &Process, token: &Path) -> Process {
    let bin = binary("outrigger-proxy", "outrigger-proxy").unwrap();
    let args = vec![
        "--inbound-addr=127.0.0.1:0".to_string(),
        "--outbound-addr=127.0.0.1:0".into(),
        "--admin-addr=127.0.0.1:0".into(),
        format!("--control-plane=http://{}", op.addr("policy")),
        format!("--control-token-file={}", token.display()),
        format!("--state-dir={}", temp_dir("gateway-proxy-state").display()),
        "--proxy-id=gateway-client-0".into(),
        "--control-initial-wait=5s".into(),
        "--namespace=shop".into(),
        "--log-level=warn".into(),
    ];
    Process::start(&bin, &args)
        .await
        .wait_ready(Duration::from_secs(10))
        .await
}

/// A counter or gauge without labels from the operator's /metrics.
async fn metric(process: &Process, name: &str) -> f64 {
    let (_, body) = http(process.addr("admin"), "GET", "/metrics", "admin")
        .await
        .unwrap();
    body.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {body}"))
}

/// An HTTPRoute on Service echo port 80 of the conformance namespace.
fn http_route(name: &str, parents: &str, rule: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}, namespace: {NS}}}\nspec:\n  parentRefs: {parents}\n  rules: [{rule}]\n"
    )
}

const ECHO_80: &str = "[{group: \"\", kind: Service, name: echo, port: 80}]";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gamma_routes_get_status_and_reach_a_subscribed_proxy() {
    let Some(api) = KubeApi::start("gateway") else {
        return;
    };
    let app = FaultUpstream::start("127.0.0.1:0".parse().unwrap(), FaultConfig::default())
        .await
        .unwrap();
    let simple = conformance_manifest("httproute-simple-same-namespace.yaml");
    assert!(simple.contains("name: gateway-conformance-mesh-test"));
    blocking(|| {
        api.install_crds();
        install_gateway_crds(&api);
        apply_base_services(&api);
        // echo's endpoint: the upstream on loopback (no controller writes slices here).
        api.apply(&format!(
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: echo-1, namespace: {NS}, labels: {{kubernetes.io/service-name: echo}}}}\naddressType: IPv4\nports: [{{name: http, port: {}, protocol: TCP}}]\nendpoints: [{{addresses: [127.0.0.1], conditions: {{ready: true}}}}]\n",
            app.addr.port()
        ));
        api.apply(&simple);
        // Another mesh's controller already reports on the same route: its
        // entry must survive our writes (status.parents is an atomic list).
        let other = json!({"status": {"parents": [{
            "parentRef": {"group": "", "kind": "Service", "name": "echo", "port": 80},
            "controllerName": "example.com/other-mesh",
            "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted",
                            "message": "other", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}]}});
        api.kubectl_ok(&[
            "patch",
            "-n",
            NS,
            "httproute",
            "gateway-conformance-mesh-test",
            "--subresource=status",
            "--type=merge",
            "-p",
            &other.to_string(),
        ]);
        // Upstream shapes the translation refuses or cannot resolve.
        api.apply(&conformance_manifest("httproute-303-redirect.yaml"));
        api.apply(&http_route(
            "to-missing-backend",
            ECHO_80,
            "{matches: [{path: {type: PathPrefix, value: /missing}}], backendRefs: [{name: echo-missing, port: 80}]}",
        ));
        api.apply(&http_route(
            "to-missing-parent",
            "[{group: \"\", kind: Service, name: no-such-service, port: 80}]",
            "{backendRefs: [{name: echo-v1, port: 8080}]}",
        ));
        // A Gateway parent is not ours: no entry from us for it.
        api.apply(&http_route(
            "gateway-and-service",
            "[{name: some-gateway}, {group: \"\", kind: Service, name: echo-v1, port: 80}]",
            "{backendRefs: [{name: echo-v1, port: 8080}]}",
        ));
        api.apply(&http_route(
            "gateway-only",
            "[{name: some-gateway}]",
            "{backendRefs: [{name: echo-v1, port: 8080}]}",
        ));
        api.apply(&conformance_manifest(
            "grpcroute-request-header-modifier.yaml",
        ));
        // A ResiliencePolicy on the same Service: composed with the routes.
        api.apply(&format!(
            "apiVersion: outrigger.dev/v1alpha1\nkind: ResiliencePolicy\nmetadata: {{name: echo, namespace: {NS}}}\nspec:\n  targetRef: {{kind: Service, name: echo}}\n  retry: {{attempts: 2}}\n"
        ));
    });
    let op = operator(&api, &[]).await;
    let limit = Duration::from_secs(20);

    // Accepted and ResolvedRefs, ours, at the route's generation; the other
    // controller's entry kept as it was.
    let simple = wait_for_route(
        &api,
        "httproute",
        "gateway-conformance-mesh-test",
        "Accepted",
        limit,
        |r| our_conditions_are(r, ("True", "Accepted"), Some(("True", "ResolvedRefs"))),
    )
    .await;
    assert_eq!(simple["metadata"]["generation"], 1);
    let parents = simple["status"]["parents"].as_array().unwrap();
    assert_eq!(parents.len(), 2, "{parents:#?}");
    assert_eq!(parents[0]["controllerName"], "example.com/other-mesh");
    assert_eq!(parents[0]["conditions"][0]["message"], "other");
    assert_eq!(
        ours(&simple)[0]["parentRef"],
        json!({"group": "", "kind": "Service", "name": "echo", "port": 80})
    );
    let accepted_at = ours(&simple)[0]["conditions"][0]["lastTransitionTime"].clone();

    // An edit (what `kubectl edit` sends) is observed at its new generation;
    // Accepted did not flip, so its transition time stays.
    blocking(|| {
        api.kubectl_ok(&[
            "patch", "-n", NS, "httproute", "gateway-conformance-mesh-test", "--type=merge",
            "-p", r#"{"spec":{"rules":[{"backendRefs":[{"name":"echo-v1","port":8080}],"timeouts":{"request":"3s"}}]}}"#,
        ])
    });
    let edited = wait_for_route(
        &api,
        "httproute",
        "gateway-conformance-mesh-test",
        "observedGeneration 2",
        limit,
        |r| {
            r["metadata"]["generation"] == 2
                && our_conditions_are(r, ("True", "Accepted"), Some(("True", "ResolvedRefs")))
        },
    )
    .await;
    assert_eq!(
        ours(&edited)[0]["conditions"][0]["lastTransitionTime"],
        accepted_at
    );
    assert_eq!(
        edited["status"]["parents"][0]["controllerName"],
        "example.com/other-mesh"
    );

    wait_for_route(
        &api,
        "httproute",
        "to-missing-backend",
        "BackendNotFound",
        limit,
        |r| our_conditions_are(r, ("True", "Accepted"), Some(("False", "BackendNotFound"))),
    )
    .await;
    let missing_parent = wait_for_route(
        &api,
        "httproute",
        "to-missing-parent",
        "not Accepted",
        limit,
        |r| {
            ours(r).len() == 1 && condition(&ours(r)[0], "Accepted").is_some_and(|c| c.0 == "False")
        },
    )
    .await;
    eprintln!(
        "parentRef to a missing Service: {:?}",
        condition(&ours(&missing_parent)[0], "Accepted")
    );
    wait_for_route(
        &api,
        "httproute",
        "mesh-303-redirect",
        "UnsupportedValue",
        limit,
        |r| our_conditions_are(r, ("False", "UnsupportedValue"), None),
    )
    .await;
    let mixed = wait_for_route(
        &api,
        "httproute",
        "gateway-and-service",
        "Accepted",
        limit,
        |r| our_conditions_are(r, ("True", "Accepted"), Some(("True", "ResolvedRefs"))),
    )
    .await;
    assert_eq!(
        mixed["status"]["parents"].as_array().unwrap().len(),
        1,
        "no entry for the Gateway parent"
    );
    assert_eq!(ours(&mixed)[0]["parentRef"]["kind"], "Service");
    wait_for_route(
        &api,
        "grpcroute",
        "grpc-request-header-modifier",
        "Accepted",
        limit,
        |r| our_conditions_are(r, ("True", "Accepted"), Some(("True", "ResolvedRefs"))),
    )
    .await;
    // Every other route has its status by now (one recompute writes all):
    // the Gateway-only route got nothing from us.
    let gateway_only = blocking(|| route(&api, "httproute", "gateway-only")).unwrap();
    assert!(ours(&gateway_only).is_empty(), "{gateway_only:#}");
    // A route that stops naming our Service loses our entry.
    blocking(|| {
        api.kubectl_ok(&[
            "patch",
            "-n",
            NS,
            "httproute",
            "to-missing-parent",
            "--type=merge",
            "-p",
            r#"{"spec":{"parentRefs":[{"name":"some-gateway"}]}}"#,
        ])
    });
    wait_for_route(
        &api,
        "httproute",
        "to-missing-parent",
        "our entry removed",
        limit,
        |r| r["metadata"]["generation"] == 2 && ours(r).is_empty(),
    )
    .await;

    // The policy's status and `kubectl get rp` name the contributing routes.
    let expected_routes = json!([
        "GRPCRoute gateway-conformance-mesh/grpc-request-header-modifier",
        "HTTPRoute gateway-conformance-mesh/gateway-conformance-mesh-test",
        "HTTPRoute gateway-conformance-mesh/to-missing-backend",
    ]);
    let deadline = Instant::now() + limit;
    loop {
        let policy = blocking(|| api.get_json(&["-n", NS, "rp", "echo"])).unwrap();
        if policy["status"]["routes"] == expected_routes {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "status.routes: {:#}",
            policy["status"]
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let table = blocking(|| api.kubectl_ok(&["get", "rp", "-n", NS]));
    eprintln!("{table}");
    assert!(table.lines().next().unwrap().contains("ROUTES"), "{table}");
    assert!(
        table.contains("HTTPRoute gateway-conformance-mesh/gateway-conformance-mesh-test"),
        "{table}"
    );

    // Settled: a recompute rewrites nothing (our writes trigger recomputes
    // through the watch, so a status that never matched would loop).
    let writes = metric(&op, "outrigger_operator_status_writes_total").await;
    let reconciles = metric(&op, "outrigger_operator_reconciles_total").await;
    blocking(|| api.kubectl_ok(&["label", "-n", NS, "service", "echo-v2", "poked=yes"]));
    outrigger_e2e::wait_until(limit, "a recompute after the label", || async {
        metric(&op, "outrigger_operator_reconciles_total").await > reconciles
    })
    .await;
    assert_eq!(
        metric(&op, "outrigger_operator_status_writes_total").await,
        writes,
        "statuses were written again without a change"
    );

    // The operator's view lists them per Service.
    let (_, view) = http(op.addr("admin"), "GET", "/view", "admin")
        .await
        .unwrap();
    let view: Value = serde_json::from_str(&view).unwrap();
    let echo = &view["destinations"]["gateway-conformance-mesh/echo"];
    assert_eq!(echo["routes"], expected_routes, "{echo:#}");

    // A route deleted: the policy's status.routes follows.
    blocking(|| api.kubectl_ok(&["delete", "-n", NS, "httproute", "to-missing-backend"]));
    let deadline = Instant::now() + limit;
    loop {
        let policy = blocking(|| api.get_json(&["-n", NS, "rp", "echo"])).unwrap();
        if policy["status"]["routes"].as_array().map(Vec::len) == Some(2) {
            assert!(!policy["status"]["routes"]
                .to_string()
                .contains("to-missing-backend"));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "status.routes: {:#}",
            policy["status"]
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A proxy calling echo gets the composed spec for port 80: the routes of
    // the HTTPRoutes attached there (exclusive), the policy's retry.
    let proxy = proxy(&op, &api.dir.join("shared-token")).await;
    let _ = http(proxy.addr("outbound"), "GET", "/", &format!("echo.{NS}")).await;
    let deadline = Instant::now() + limit;
    let policy = loop {
        let (_, config) = http(proxy.addr("admin"), "GET", "/config", "admin")
            .await
            .unwrap();
        let config: Value = serde_json::from_str(&config).unwrap();
        let found = config["control"]["subscriptions"]
            .as_array()
            .into_iter()
            .flatten()
            .find_map(|s| {
                let d = &s["destination"];
                (d["service"] == format!("{NS}/echo") && d["port"] == 80)
                    .then(|| d["policy"].clone())
            });
        if let Some(policy) = found.filter(|p| !p.is_null()) {
            break policy;
        }
        assert!(
            Instant::now() < deadline,
            "no snapshot for echo:80: {config:#}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(policy["name"], format!("{NS}/echo"), "{policy:#}");
    assert_eq!(policy["spec"]["exclusiveRoutes"], true, "{policy:#}");
    assert_eq!(policy["spec"]["retry"]["attempts"], 2, "{policy:#}");
    let sources: Vec<&str> = policy["spec"]["routes"]
        .as_array()
        .expect("routes in the snapshot")
        .iter()
        .filter_map(|r| r["source"].as_str())
        .collect();
    assert!(
        sources
            .iter()
            .any(|s| s
                .starts_with("HTTPRoute gateway-conformance-mesh/gateway-conformance-mesh-test")),
        "{policy:#}"
    );
    assert!(
        !sources.iter().any(|s| s.starts_with("GRPCRoute")),
        "the GRPCRoute is on port 7070: {sources:?}"
    );
    let simple_route = policy["spec"]["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| {
            r["source"]
                .as_str()
                .is_some_and(|s| s.contains("gateway-conformance-mesh-test"))
        })
        .unwrap();
    assert_eq!(
        simple_route["timeouts"]["request"], "3s",
        "the edit reached the snapshot: {simple_route:#}"
    );
}

/// A cluster without the route CRDs: the operator is ready, serves
/// policies, and honours routes once the CRDs are installed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_route_crds_the_operator_works_and_picks_them_up_later() {
    let Some(api) = KubeApi::start("gateway-late") else {
        return;
    };
    blocking(|| {
        api.install_crds();
        apply_base_services(&api);
        api.apply(&format!(
            "apiVersion: outrigger.dev/v1alpha1\nkind: ResiliencePolicy\nmetadata: {{name: echo, namespace: {NS}}}\nspec:\n  targetRef: {{kind: Service, name: echo}}\n"
        ));
    });
    let op = operator(&api, &[]).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let policy = blocking(|| api.get_json(&["-n", NS, "rp", "echo"])).unwrap();
        if policy["status"]["observedGeneration"] == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "the policy got no status");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    blocking(|| {
        install_gateway_crds(&api);
        api.apply(&conformance_manifest(
            "httproute-simple-same-namespace.yaml",
        ));
    });
    // The watch retries with backoff (at most 30 s apart).
    wait_for_route(
        &api,
        "httproute",
        "gateway-conformance-mesh-test",
        "Accepted once the CRD exists",
        Duration::from_secs(60),
        |r| our_conditions_are(r, ("True", "Accepted"), Some(("True", "ResolvedRefs"))),
    )
    .await;
    let (_, metrics) = http(op.addr("admin"), "GET", "/metrics", "admin")
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("outrigger_operator_objects_indexed{kind=\"HTTPRoute\"} 1")),
        "{metrics}"
    );
}

/// `--gateway-api=false`: routes are neither watched nor written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_api_support_can_be_turned_off() {
    let Some(api) = KubeApi::start("gateway-off") else {
        return;
    };
    blocking(|| {
        api.install_crds();
        install_gateway_crds(&api);
        apply_base_services(&api);
        api.apply(&conformance_manifest(
            "httproute-simple-same-namespace.yaml",
        ));
        api.apply(&format!(
            "apiVersion: outrigger.dev/v1alpha1\nkind: ResiliencePolicy\nmetadata: {{name: echo, namespace: {NS}}}\nspec:\n  targetRef: {{kind: Service, name: echo}}\n"
        ));
    });
    let op = operator(&api, &["--gateway-api=false"]).await;
    // Once the policy has its status, a recompute has run with the route in
    // the cluster: it got nothing, and the view has no routes.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let policy = blocking(|| api.get_json(&["-n", NS, "rp", "echo"])).unwrap();
        if policy["status"]["observedGeneration"] == 1 {
            assert!(policy["status"]["routes"].is_null(), "{policy:#}");
            break;
        }
        assert!(Instant::now() < deadline, "the policy got no status");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let route = blocking(|| route(&api, "httproute", "gateway-conformance-mesh-test")).unwrap();
    assert!(ours(&route).is_empty(), "{route:#}");
    let (_, view) = http(op.addr("admin"), "GET", "/view", "admin")
        .await
        .unwrap();
    let view: Value = serde_json::from_str(&view).unwrap();
    assert!(
        view["destinations"][format!("{NS}/echo")]["routes"].is_null(),
        "{view:#}"
    );
}

/// A permissive stand-in for the XBackendTrafficPolicy CRD: the experimental
/// channel's CRDs are not among the upstream files this test reads, so the
/// API server stores the object as written (its own validation of the
/// object is not exercised here; the translation's is).
fn install_traffic_policy_crd(api: &KubeApi) {
    api.apply(
        "apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: xbackendtrafficpolicies.gateway.networking.x-k8s.io}
spec:
  group: gateway.networking.x-k8s.io
  names: {kind: XBackendTrafficPolicy, listKind: XBackendTrafficPolicyList, plural: xbackendtrafficpolicies, singular: xbackendtrafficpolicy}
  scope: Namespaced
  versions:
  - name: v1alpha1
    served: true
    storage: true
    schema:
      openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}
",
    );
    api.wait_established("xbackendtrafficpolicies.gateway.networking.x-k8s.io");
}

/// A Service in the conformance namespace whose port `port` targets the
/// named port `http`, and an EndpointSlice giving it one loopback endpoint.
fn service_with_endpoint(name: &str, port: u16, endpoint: u16) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {NS}}}\nspec:\n  ports: [{{name: http, port: {port}, targetPort: http}}]\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {name}-1, namespace: {NS}, labels: {{kubernetes.io/service-name: {name}}}}}\naddressType: IPv4\nports: [{{name: http, port: {endpoint}, protocol: TCP}}]\nendpoints: [{{addresses: [127.0.0.1], conditions: {{ready: true}}}}]\n"
    )
}

/// The user's path in a cluster: `kubectl apply` of the upstream weights
/// manifest (echo → echo-v1 70 / echo-v2 30) and of a BackendTrafficPolicy;
/// a proxy subscribed to the operator splits 2,000 requests within 5 points,
/// and the budget caps a ResiliencePolicy's retries that sets none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applied_routes_split_traffic_and_budgets_cap_retries_through_the_proxy() {
    let Some(api) = KubeApi::start("gateway-traffic") else {
        return;
    };
    let upstream = || FaultUpstream::start("127.0.0.1:0".parse().unwrap(), FaultConfig::default());
    let (parent, v1, v2) = (
        upstream().await.unwrap(),
        upstream().await.unwrap(),
        upstream().await.unwrap(),
    );
    let failing = FaultUpstream::start(
        "127.0.0.1:0".parse().unwrap(),
        FaultConfig {
            failure_rate: 1.0,
            ..FaultConfig::default()
        },
    )
    .await
    .unwrap();
    blocking(|| {
        api.install_crds();
        install_gateway_crds(&api);
        install_traffic_policy_crd(&api);
        api.apply(&format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {NS}}}\n"
        ));
        api.apply(&service_with_endpoint("echo", 80, parent.addr.port()));
        api.apply(&service_with_endpoint("echo-v1", 8080, v1.addr.port()));
        api.apply(&service_with_endpoint("echo-v2", 8080, v2.addr.port()));
        api.apply(&service_with_endpoint("pay", 80, failing.addr.port()));
        api.apply(&conformance_manifest("httproute-weight.yaml"));
        api.apply(&format!(
            "apiVersion: outrigger.dev/v1alpha1\nkind: ResiliencePolicy\nmetadata: {{name: pay, namespace: {NS}}}\nspec:\n  targetRef: {{kind: Service, name: pay}}\n  retry: {{attempts: 3, codes: [503], backoff: {{base: 1ms, max: 2ms}}}}\n"
        ));
        api.apply(&format!(
            "apiVersion: gateway.networking.x-k8s.io/v1alpha1\nkind: XBackendTrafficPolicy\nmetadata: {{name: pay-budget, namespace: {NS}}}\nspec:\n  targetRefs: [{{group: \"\", kind: Service, name: pay}}]\n  retryConstraint:\n    budget: {{percent: 0, interval: 10s}}\n    minRetryRate: {{count: 1, interval: 60s}}\n"
        ));
    });
    let op = operator(&api, &[]).await;
    // The route accepted and the budget in the view before traffic.
    wait_for_route(
        &api,
        "httproute",
        "mesh-weighted-backends",
        "accepted",
        Duration::from_secs(30),
        |r| our_conditions_are(r, ("True", "Accepted"), Some(("True", "ResolvedRefs"))),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, view) = http(op.addr("admin"), "GET", "/view", "admin")
            .await
            .unwrap();
        if view.contains(&format!("XBackendTrafficPolicy {NS}/pay-budget")) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no retry budget in the view: {view}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let token = api.dir.join("shared-token");
    let proxy = proxy(&op, &token).await;
    let outbound = proxy.addr("outbound");
    let send = |host: String| async move {
        let stream = tokio::net::TcpStream::connect(outbound).await.unwrap();
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(connection);
        let request = ::http::Request::get("/")
            .header("host", host)
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        sender
            .send_request(request)
            .await
            .unwrap()
            .status()
            .as_u16()
    };

    let echo = format!("echo.{NS}");
    for _ in 0..2000 {
        assert_eq!(send(echo.clone()).await, 200);
    }
    let share = v1.hits() as f64 / 2000.0;
    assert!(
        (0.65..=0.75).contains(&share),
        "echo-v1 took {share} (v1 {}, v2 {})",
        v1.hits(),
        v2.hits()
    );
    assert_eq!(v1.hits() + v2.hits(), 2000);
    assert_eq!(parent.hits(), 0, "echo itself serves no rule");

    let pay = format!("pay.{NS}");
    for _ in 0..3 {
        assert_eq!(send(pay.clone()).await, 503);
    }
    // Three requests and the one retry the budget allows (the default
    // budget would have allowed all nine).
    assert_eq!(failing.hits(), 4);
}

/// A route written with kubectl as a user would (the standard channel:
/// timeouts and matches; retries from the Service's ResiliencePolicy, which
/// the rules inherit), enforced by a proxy subscribed to the operator:
/// header matching picks the backend, a rule's request timeout cuts a slow
/// call, and only the policy's retry codes are retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applied_route_timeouts_matches_and_inherited_retries_are_enforced() {
    let Some(api) = KubeApi::start("gateway-rules") else {
        return;
    };
    let upstream = || FaultUpstream::start("127.0.0.1:0".parse().unwrap(), FaultConfig::default());
    let (parent, v1, v2) = (
        upstream().await.unwrap(),
        upstream().await.unwrap(),
        upstream().await.unwrap(),
    );
    blocking(|| {
        api.install_crds();
        install_gateway_crds(&api);
        api.apply(&format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {NS}}}\n"
        ));
        api.apply(&service_with_endpoint("web", 80, parent.addr.port()));
        api.apply(&service_with_endpoint("web-v1", 8080, v1.addr.port()));
        api.apply(&service_with_endpoint("web-v2", 8080, v2.addr.port()));
        api.apply(&format!(
            "apiVersion: outrigger.dev/v1alpha1\nkind: ResiliencePolicy\nmetadata: {{name: web, namespace: {NS}}}\nspec:\n  targetRef: {{kind: Service, name: web}}\n  retry: {{attempts: 2, codes: [500], backoff: {{base: 1ms, max: 2ms}}}}\n"
        ));
        api.apply(&format!(
            "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: web, namespace: {NS}}}
spec:
  parentRefs: [{{group: \"\", kind: Service, name: web, port: 80}}]
  rules:
  - matches: [{{headers: [{{name: version, value: two}}]}}]
    backendRefs: [{{name: web-v2, port: 8080}}]
  - matches: [{{path: {{type: PathPrefix, value: /slow}}}}]
    timeouts: {{request: 300ms}}
    backendRefs: [{{name: web-v1, port: 8080}}]
  - backendRefs: [{{name: web-v1, port: 8080}}]
"
        ));
    });
    let op = operator(&api, &[]).await;
    wait_for_route(
        &api,
        "httproute",
        "web",
        "accepted",
        Duration::from_secs(30),
        |r| our_conditions_are(r, ("True", "Accepted"), Some(("True", "ResolvedRefs"))),
    )
    .await;
    let token = api.dir.join("shared-token");
    let proxy = proxy(&op, &token).await;
    let outbound = proxy.addr("outbound");
    let host = format!("web.{NS}");
    let send = |path: &'static str, headers: Vec<(&'static str, &'static str)>| {
        let host = host.clone();
        async move {
            let stream = tokio::net::TcpStream::connect(outbound).await.unwrap();
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                    .await
                    .unwrap();
            tokio::spawn(connection);
            let mut request = ::http::Request::get(path).header("host", host);
            for (name, value) in headers {
                request = request.header(name, value);
            }
            let request = request
                .body(http_body_util::Empty::<bytes::Bytes>::new())
                .unwrap();
            let response = sender.send_request(request).await.unwrap();
            let error = response
                .headers()
                .get("x-outrigger-error")
                .map(|v| v.to_str().unwrap().to_string());
            (response.status().as_u16(), error)
        }
    };

    // Header matching picks the backend.
    assert_eq!(send("/", vec![("version", "two")]).await.0, 200);
    assert_eq!((v1.hits(), v2.hits()), (0, 1));
    assert_eq!(send("/", vec![]).await.0, 200);
    assert_eq!((v1.hits(), v2.hits()), (1, 1));

    // The rule's request timeout: 300ms against a 2s upstream.
    let started = Instant::now();
    let (status, error) = send("/slow", vec![("x-fault", "delay=2s")]).await;
    assert_eq!((status, error.as_deref()), (504, Some("timeout")));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );

    // The policy's retry, inherited by the rules: 500 is retried, 503 not.
    let before = v1.hits();
    v1.set_script(vec![outrigger_tools::fault_upstream::Fault::status(500)]);
    assert_eq!(send("/", vec![]).await.0, 200);
    assert_eq!(v1.hits() - before, 2, "one retry of 500");
    let before = v1.hits();
    v1.set_script(vec![outrigger_tools::fault_upstream::Fault::status(503)]);
    assert_eq!(send("/", vec![]).await.0, 503);
    assert_eq!(v1.hits() - before, 1, "503 is not in the policy's codes");
    assert_eq!(parent.hits(), 0, "web itself serves no rule");
}
