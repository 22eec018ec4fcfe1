//! One policy, two modes, one meaning: the same documents compiled by the
//! proxy from its policy file, and by the operator (compile, resolve the
//! subscription, the snapshot through JSON as on the wire, compiled again by
//! the proxy), must give the same effective `DestinationConfig`, field by
//! field: for every example policy, for generated shapes with and without
//! each section, ports and routes, and for Gateway API routes composed with
//! them.

use std::time::Duration;

use std::net::SocketAddr;

use outrigger_api::manifest::{parse_documents, Document};
use outrigger_api::semantics::with_defaults;
use outrigger_api::stream::{DestinationSnapshot, Subscription};
use outrigger_api::validate::{validate_manifest, validate_spec};
use outrigger_engine::config::DestinationConfig;
use outrigger_proxy_core::metrics::Metrics;
use outrigger_proxy_policy::{
    activate, load_policy_file, ActivePolicy, DestinationMatcher, PolicyStore,
};
use serde_json::{json, Value};

/// The proxy's own settings, deliberately not the defaults a policy has, so
/// a mode that took one for the other shows.
const CONNECT: Duration = Duration::from_millis(250);
const POOL_IDLE: Duration = Duration::from_secs(90);
const NAMESPACE: &str = "shop";
const DOMAIN: &str = "cluster.local";
/// The ports every generated Service has.
const PORTS: [u16; 2] = [80, 8080];

/// What a proxy does for calls to one Service port: its config, and the
/// endpoints it balances over (sorted; `None`: the source lists none).
type Effect = (DestinationConfig, Option<Vec<SocketAddr>>);

/// The proxy's file mode, as `cache.rs` runs it: the file loaded and
/// activated, the Service named by `service`, its policy and endpoints.
fn file_mode(text: &str, service: &str, port: u16) -> Effect {
    let dir = tempdir();
    let path = dir.join("policy.yaml");
    std::fs::write(&path, text).unwrap();
    let loaded = load_policy_file(&path).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    let store = PolicyStore::new(ActivePolicy::defaults());
    activate(&store, &Metrics::new(10), &path, loaded);
    let active = store.current();
    let matcher = DestinationMatcher {
        namespace: NAMESPACE.into(),
        cluster_domain: DOMAIN.into(),
    };
    let service = matcher.service_of(service).unwrap();
    let config =
        DestinationConfig::from_policy_file(&active, Some(&service), port, CONNECT, POOL_IDLE);
    let endpoints = active
        .endpoints
        .lookup(&service.namespace, &service.name, port);
    (config, endpoints)
}

/// The operator's mode: the same documents read as local mode reads them,
/// compiled, the subscription for `service.shop.svc.cluster.local:port`
/// resolved, the snapshot sent through JSON and compiled by the proxy.
fn operator_mode(text: &str, service: &str, port: u16) -> Effect {
    let dir = tempdir();
    std::fs::write(dir.join("all.yaml"), text).unwrap();
    let manifests = outrigger_operator::local::read_dir(&dir).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(manifests.errors.is_empty(), "{:?}", manifests.errors);
    let compiled = outrigger_operator::compile::compile_gateway(
        &manifests.policies,
        &manifests.services,
        &manifests.slices,
        &manifests.routes,
        &manifests.traffic,
    );
    let subscription =
        Subscription::Destination(format!("{service}.{NAMESPACE}.svc.{DOMAIN}:{port}"));
    let snapshot = outrigger_operator::policy_server::resolve(&compiled, &subscription, DOMAIN)
        .expect("the Service exists");
    let wire = serde_json::to_string(&snapshot).unwrap();
    let snapshot: DestinationSnapshot = serde_json::from_str(&wire).unwrap();
    let config = DestinationConfig::from_snapshot(&snapshot, CONNECT, POOL_IDLE);
    let mut endpoints: Vec<SocketAddr> = snapshot
        .endpoints
        .iter()
        .map(|e| e.parse().unwrap())
        .collect();
    endpoints.sort();
    let slices = manifests.slices.iter().any(|s| {
        s.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("kubernetes.io/service-name"))
            .is_some_and(|name| name == service)
    });
    (config, slices.then_some(endpoints))
}

fn tempdir() -> std::path::PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "outrigger-semantics-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Each field that differs, by name. Destructured whole, so a field added to
/// `DestinationConfig` must be added here too.
fn differences(
    (file, file_endpoints): &Effect,
    (operator, operator_endpoints): &Effect,
) -> Vec<String> {
    let DestinationConfig {
        policy,
        dry_run,
        connect_timeout,
        idle_timeout,
        default_route,
        routes,
        exclusive_routes,
        budget,
        breaker,
        outlier,
        limits,
        rate_limit,
    } = file;
    let mut out = Vec::new();
    macro_rules! field {
        ($name:ident) => {
            if $name != &operator.$name {
                out.push(format!(
                    "{}: file mode {:?}, operator {:?}",
                    stringify!($name),
                    $name,
                    operator.$name
                ));
            }
        };
    }
    field!(policy);
    field!(dry_run);
    field!(connect_timeout);
    field!(idle_timeout);
    field!(default_route);
    field!(routes);
    field!(exclusive_routes);
    field!(budget);
    field!(breaker);
    field!(outlier);
    field!(limits);
    field!(rate_limit);
    if file_endpoints != operator_endpoints {
        out.push(format!(
            "endpoints: file mode {file_endpoints:?}, operator {operator_endpoints:?}"
        ));
    }
    out
}

fn service_doc(name: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"clusterIP": "10.96.0.9", "ports": [
            {"name": "http", "port": 80, "targetPort": 8080},
            {"name": "alt", "port": 8080, "targetPort": 9090}
        ]}
    })
}

/// An EndpointSlice of `service` with these ports: two ready endpoints, one
/// not ready.
fn slice_doc(service: &str, ports: Value) -> Value {
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("{service}-1"), "namespace": NAMESPACE,
                     "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4", "ports": ports,
        "endpoints": [
            {"addresses": ["10.0.0.1"]},
            {"addresses": ["10.0.0.2"], "conditions": {"ready": false}},
            {"addresses": ["10.0.0.3"], "conditions": {"ready": true}}
        ]
    })
}

fn policy_doc(name: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "outrigger.dev/v1alpha1", "kind": "ResiliencePolicy",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": spec
    })
}

fn created(mut policy: Value, at: &str) -> Value {
    policy["metadata"]["creationTimestamp"] = at.into();
    policy
}

fn documents(docs: &[Value]) -> String {
    docs.iter()
        .map(|d| serde_json::to_string(d).unwrap())
        .collect::<Vec<_>>()
        .join("\n---\n")
}

/// Compares both modes on every port of `service`; the differences, each
/// prefixed with what was compared.
fn compare(what: &str, text: &str, service: &str) -> Vec<String> {
    let mut out = Vec::new();
    for port in PORTS {
        let file = file_mode(text, service, port);
        let operator = operator_mode(text, service, port);
        out.extend(
            differences(&file, &operator)
                .into_iter()
                .map(|d| format!("{what} port {port}: {d}")),
        );
    }
    out
}

fn assert_same(differences: Vec<String>) {
    assert!(
        differences.is_empty(),
        "{} differences between file mode and operator mode:\n{}",
        differences.len(),
        differences
            .iter()
            .take(
                std::env::var("SEMANTICS_SHOW")
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(40)
            )
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn every_example_means_the_same_in_both_modes() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/policies");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty());
    let mut out = Vec::new();
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap();
        for document in parse_documents(&text).unwrap() {
            let Document::Policy(policy) = document else {
                continue;
            };
            // The example as written, in the generated Services' namespace,
            // with a Service for the operator to find.
            let mut value = serde_json::to_value(&*policy).unwrap();
            value["metadata"]["namespace"] = NAMESPACE.into();
            let service = policy.spec.target_ref.name.clone();
            let slice = slice_doc(&service, json!([{"name": "http", "port": 8080}]));
            let text = documents(&[service_doc(&service), slice, value]);
            out.extend(compare(
                &format!("{}", path.file_name().unwrap().to_string_lossy()),
                &text,
                &service,
            ));
        }
    }
    assert_same(out);
}

/// Each section's variants: absent, empty (every default), and set.
fn sections() -> Vec<(&'static str, Vec<Option<Value>>)> {
    vec![
        (
            "mode",
            vec![None, Some(json!("Enforce")), Some(json!("DryRun"))],
        ),
        (
            "timeouts",
            vec![
                None,
                Some(json!({})),
                Some(json!({"request": "3s"})),
                Some(json!({"request": "0s", "backendRequest": "2s"})),
                Some(
                    json!({"request": "2s", "backendRequest": "500ms", "connect": "300ms", "idle": "1m"}),
                ),
            ],
        ),
        (
            "retry",
            vec![
                None,
                Some(json!({})),
                Some(json!({"attempts": 0})),
                Some(json!({"budget": {}})),
                Some(json!({"attempts": 3, "codes": [503], "on": ["reset"],
                            "backoff": {"base": "10ms", "max": "100ms"},
                            "budget": {"percent": 50, "interval": "5s",
                                       "minRetryRate": {"count": 3, "interval": "2s"}},
                            "nonIdempotent": "Always", "maxBufferedBodyBytes": 1024})),
            ],
        ),
        (
            "circuitBreaker",
            vec![
                None,
                Some(json!({})),
                Some(
                    json!({"failureRatePercent": 30, "minimumRequests": 5, "window": "20s",
                            "slowCall": {"duration": "1s", "ratePercent": 60},
                            "openFor": "5s", "maxOpenFor": "1m", "halfOpenRequests": 1,
                            "fallback": {"status": 429, "contentType": "text/plain", "body": "busy"},
                            "failureOn": ["gateway-error"]}),
                ),
                Some(json!({"fallback": {"body": "x"}})),
            ],
        ),
        (
            "outlierDetection",
            vec![
                None,
                Some(json!({})),
                Some(
                    json!({"consecutiveFailures": 2, "baseEjectionTime": "3s", "maxEjectionPercent": 10}),
                ),
            ],
        ),
        (
            "limits",
            vec![
                None,
                Some(json!({})),
                Some(json!({"maxPendingRequests": 3})),
                Some(json!({"maxConcurrentRequests": 4})),
                Some(
                    json!({"maxConcurrentRequests": 4, "maxPendingRequests": 2, "pendingTimeout": "250ms"}),
                ),
            ],
        ),
        (
            "rateLimit",
            vec![
                None,
                Some(json!({"requestsPerSecond": 5})),
                Some(json!({"requestsPerSecond": 5, "burst": 9})),
            ],
        ),
        (
            "routes",
            vec![
                None,
                Some(json!([{"match": {"pathPrefix": "/a"}}])),
                Some(json!([
                    {"name": "charge", "match": {"pathPrefix": "/charge", "method": "POST"},
                     "timeouts": {"request": "10s"}, "retry": {"attempts": 0}},
                    {"match": {"pathExact": "/slow", "headers": [{"name": "X-Slow", "value": "1"}]},
                     "retry": {"backoff": {"base": "200ms", "max": "2s"}}}
                ])),
                Some(json!([{"match": {}, "timeouts": {"backendRequest": "100ms"}}])),
                Some(
                    json!([{"name": "reads", "match": {"method": "GET"}, "retry": {"attempts": 1}}]),
                ),
                Some(json!([{"match": {"pathPrefix": "/z"}, "timeouts": {"request": "0s"}}])),
            ],
        ),
        ("port", vec![None, Some(json!(80)), Some(json!(8080))]),
    ]
}

fn spec_of(choice: &[(&str, Option<Value>)]) -> Value {
    let mut spec = json!({"targetRef": {"kind": "Service", "name": "payments"}});
    for (section, value) in choice {
        match (section, value) {
            (_, None) => {}
            (&"port", Some(port)) => spec["targetRef"]["port"] = port.clone(),
            (section, Some(value)) => spec[*section] = value.clone(),
        }
    }
    spec
}

/// Shapes: each variant of each section alone, each on top of every other
/// section set, and a deterministic sample of mixtures.
fn shapes() -> Vec<Value> {
    let sections = sections();
    let mut out = Vec::new();
    let full: Vec<(&str, Option<Value>)> = sections
        .iter()
        .map(|(name, variants)| (*name, variants.last().cloned().flatten()))
        .collect();
    for (i, (name, variants)) in sections.iter().enumerate() {
        for variant in variants {
            out.push(spec_of(&[(*name, variant.clone())]));
            let mut all = full.clone();
            all[i] = (*name, variant.clone());
            out.push(spec_of(&all));
        }
    }
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..400 {
        let choice: Vec<(&str, Option<Value>)> = sections
            .iter()
            .map(|(name, variants)| {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (
                    *name,
                    variants[(seed >> 33) as usize % variants.len()].clone(),
                )
            })
            .collect();
        out.push(spec_of(&choice));
    }
    out
}

fn is_valid(spec: &Value) -> bool {
    let text = serde_json::to_string(&policy_doc("p", spec.clone())).unwrap();
    match parse_documents(&text).unwrap().remove(0) {
        Document::Policy(p) => validate_manifest(&p).is_ok(),
        _ => false,
    }
}

#[test]
fn generated_policies_mean_the_same_in_both_modes() {
    let mut out = Vec::new();
    let mut compared = 0;
    for spec in shapes() {
        if !is_valid(&spec) {
            continue;
        }
        compared += 1;
        // What the operator streams means what the spec means, and is valid.
        let parsed: outrigger_api::policy::ResiliencePolicySpec =
            serde_json::from_value(spec.clone()).unwrap();
        let once = with_defaults(&parsed);
        assert_eq!(with_defaults(&once), once, "{spec}");
        assert!(validate_spec(&once).is_ok(), "{spec}: {once:?}");
        let text = documents(&[
            service_doc("payments"),
            slice_doc(
                "payments",
                json!([{"name": "http", "port": 8080}, {"name": "alt", "port": 9090}]),
            ),
            policy_doc("payments", spec.clone()),
        ]);
        out.extend(compare(&spec.to_string(), &text, "payments"));
    }
    assert!(compared > 300, "only {compared} valid shapes");
    assert_same(out);
}

/// A Service with no policy: both modes forward with the proxy's own settings.
#[test]
fn no_policy_means_the_same_in_both_modes() {
    let text = documents(&[service_doc("payments")]);
    assert_same(compare("no policy", &text, "payments"));
}

/// Two policies for one Service (and one port) in one file: both modes apply
/// the same one.
#[test]
fn conflicting_policies_resolve_the_same_in_both_modes() {
    let spec = |request: &str, port: Option<u16>| {
        let mut spec = json!({"targetRef": {"name": "payments"}, "timeouts": {"request": request}});
        if let Some(port) = port {
            spec["targetRef"]["port"] = port.into();
        }
        spec
    };
    let cases = [
        // Portless, listed out of name order.
        vec![
            policy_doc("zeta", spec("1s", None)),
            policy_doc("alpha", spec("2s", None)),
        ],
        // The same port.
        vec![
            policy_doc("b-port", spec("3s", Some(80))),
            policy_doc("a-port", spec("4s", Some(80))),
            policy_doc("any", spec("5s", None)),
        ],
        // The oldest wins over the first by name; one without a
        // creationTimestamp counts as oldest.
        vec![
            created(
                policy_doc("alpha", spec("1s", None)),
                "2026-01-02T00:00:00Z",
            ),
            created(policy_doc("zeta", spec("2s", None)), "2026-01-01T00:00:00Z"),
            created(
                policy_doc("port-new", spec("3s", Some(8080))),
                "2026-01-01T00:00:00Z",
            ),
            policy_doc("port-undated", spec("4s", Some(8080))),
        ],
    ];
    // Who wins, per case and port (80, 8080): the operator's rule.
    let winners = [
        ["shop/alpha", "shop/alpha"],
        ["shop/a-port", "shop/any"],
        ["shop/zeta", "shop/port-undated"],
    ];
    let mut out = Vec::new();
    for (i, policies) in cases.into_iter().enumerate() {
        let mut docs = vec![service_doc("payments")];
        docs.extend(policies);
        let text = documents(&docs);
        out.extend(compare(&format!("case {i}"), &text, "payments"));
        for (port, winner) in PORTS.into_iter().zip(winners[i]) {
            let (config, _) = file_mode(&text, "payments", port);
            assert_eq!(
                config.policy.as_deref(),
                Some(winner),
                "case {i} port {port}"
            );
        }
    }
    assert_same(out);
}

/// Where calls to a Service port land: the same endpoints in both modes,
/// whatever the Service and its slices name and number.
#[test]
fn endpoints_resolve_the_same_in_both_modes() {
    let cases = [
        (
            json!([{"name": "http", "port": 80, "targetPort": 8080},
                   {"name": "alt", "port": 8080, "targetPort": "admin"}]),
            json!([{"name": "http", "port": 8080}, {"name": "alt", "port": 9090}]),
        ),
        // Unnamed, targetPort unset (the Service port itself).
        (json!([{"port": 80}]), json!([{"port": 80}])),
        // targetPort unset, the slice names its port otherwise.
        (
            json!([{"name": "http", "port": 80}]),
            json!([{"name": "other", "port": 8080}]),
        ),
        // A named targetPort, the slice's only port unnamed.
        (
            json!([{"name": "http", "port": 80, "targetPort": "web"}]),
            json!([{"port": 8080}]),
        ),
        // Two slice ports, neither named like the Service's.
        (
            json!([{"name": "http", "port": 80, "targetPort": "web"}]),
            json!([{"name": "a", "port": 1}, {"name": "b", "port": 8080}]),
        ),
    ];
    let mut out = Vec::new();
    for (i, (service_ports, slice_ports)) in cases.into_iter().enumerate() {
        let mut service = service_doc("web");
        service["spec"]["ports"] = service_ports;
        let text = documents(&[service, slice_doc("web", slice_ports)]);
        out.extend(compare(&format!("case {i}"), &text, "web"));
    }
    assert_same(out);
}

fn http_route_doc(name: &str, parent_port: Option<u16>, rules: Value) -> Value {
    let mut parent = json!({"group": "", "kind": "Service", "name": "web"});
    if let Some(port) = parent_port {
        parent["port"] = port.into();
    }
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"parentRefs": [parent], "rules": rules}
    })
}

/// Gateway API routes composed with the Service's policy (or alone) mean the
/// same through the operator's snapshot as in the proxy's file: on the port
/// the parentRef names, on a port it does not, with a parentRef naming no
/// port, with several routes in precedence order, and with refused or
/// unresolved routes beside them.
#[test]
fn gateway_routes_mean_the_same_in_both_modes() {
    let slice = slice_doc(
        "web",
        json!([{"name": "http", "port": 8080}, {"name": "alt", "port": 9090}]),
    );
    let backend = service_doc("backend");
    let timed = json!([{"matches": [{"path": {"type": "PathPrefix", "value": "/cart"}}],
                        "timeouts": {"request": "2s", "backendRequest": "1s"},
                        "backendRefs": [{"name": "backend", "port": 80, "weight": 3},
                                        {"name": "web", "port": 80}]},
                       {"matches": [{"path": {"type": "Exact", "value": "/health"}, "method": "GET"}],
                        "filters": [{"type": "RequestHeaderModifier",
                                     "requestHeaderModifier": {"set": [{"name": "x-a", "value": "1"}]}}]}]);
    // A backend port its Service lacks: BackendNotFound in both modes (the
    // Service is declared). A Service no document declares differs by
    // design: checked on its own below.
    let missing = json!([{"matches": [{"headers": [{"name": "x-v", "value": "2"}]}],
                          "backendRefs": [{"name": "backend", "port": 81}]}]);
    let redirect = json!([{"filters": [{"type": "RequestRedirect",
                                        "requestRedirect": {"statusCode": 302}}]}]);
    let policy = policy_doc(
        "web",
        json!({"targetRef": {"kind": "Service", "name": "web"},
                                          "retry": {"attempts": 2}, "timeouts": {"request": "5s"},
                                          "routes": [{"name": "own", "match": {"pathPrefix": "/own"}}]}),
    );
    let port_policy = policy_doc(
        "web-alt",
        json!({"targetRef": {"kind": "Service", "name": "web", "port": 8080},
                                                   "circuitBreaker": {}}),
    );
    let traffic_doc = json!({
        "apiVersion": "gateway.networking.x-k8s.io/v1alpha1", "kind": "XBackendTrafficPolicy",
        "metadata": {"name": "budget", "namespace": NAMESPACE},
        "spec": {"targetRefs": [{"group": "", "kind": "Service", "name": "web"}],
                 "retryConstraint": {"budget": {"percent": 35, "interval": "20s"}}}
    });
    let cases: Vec<(&str, Vec<Value>)> = vec![
        (
            "route alone on port 80",
            vec![http_route_doc("a", Some(80), timed.clone())],
        ),
        (
            "route alone on every port",
            vec![http_route_doc("a", None, timed.clone())],
        ),
        (
            "route and policy",
            vec![policy.clone(), http_route_doc("a", Some(80), timed.clone())],
        ),
        (
            "route on every port, portless and port policies",
            vec![
                policy.clone(),
                port_policy.clone(),
                http_route_doc("a", None, timed.clone()),
            ],
        ),
        (
            "a BackendTrafficPolicy's budget under a policy without one",
            vec![policy.clone(), port_policy.clone(), traffic_doc.clone()],
        ),
        (
            "a BackendTrafficPolicy's budget with routes, and a policy setting its own",
            vec![
                policy_doc(
                    "web",
                    json!({"targetRef": {"kind": "Service", "name": "web"},
                           "retry": {"budget": {"percent": 7}}}),
                ),
                http_route_doc("a", None, timed.clone()),
                traffic_doc.clone(),
            ],
        ),
        (
            "two routes, one with a missing backend, one refused",
            vec![
                policy.clone(),
                http_route_doc("a", Some(80), timed.clone()),
                http_route_doc("b", Some(80), missing.clone()),
                http_route_doc("c", Some(8080), redirect),
            ],
        ),
    ];
    // Not vacuous: the routes reach the config, under the composed name.
    let alone = documents(&[
        service_doc("web"),
        slice.clone(),
        backend.clone(),
        http_route_doc("a", Some(80), timed.clone()),
    ]);
    let (config, _) = operator_mode(&alone, "web", 80);
    assert_eq!(config.policy.as_deref(), Some("shop/gateway-api-routes"));
    assert_eq!(config.routes.len(), 2, "{:?}", config.routes);
    // Exact /health before the /cart prefix (Gateway API precedence).
    assert_eq!(&*config.routes[0].1.name, "a/1");
    assert_eq!(&*config.routes[1].1.name, "a/0");
    assert_eq!(
        config.routes[1].1.request_timeout,
        Some(Duration::from_secs(2))
    );
    let (other_port, _) = operator_mode(&alone, "web", 8080);
    assert!(other_port.routes.is_empty(), "port 8080 has no route");
    // The unresolved backend reached both configs as one answering 500.
    let with_missing = documents(&[
        service_doc("web"),
        slice.clone(),
        backend.clone(),
        http_route_doc("b", Some(80), missing.clone()),
    ]);
    for (mode, (config, _)) in [
        ("file", file_mode(&with_missing, "web", 80)),
        ("operator", operator_mode(&with_missing, "web", 80)),
    ] {
        let backends = format!("{:?}", config.routes[0].1.backends);
        assert!(backends.contains("invalid: Some("), "{mode}: {backends}");
    }
    // By design (docs/gateway-api.md): a file without a Service's document
    // assumes it exists (DNS decides at request time), where a cluster knows
    // it does not.
    let undeclared = documents(&[
        service_doc("web"),
        slice.clone(),
        http_route_doc(
            "b",
            Some(80),
            json!([{"backendRefs": [{"name": "gone", "port": 80}]}]),
        ),
    ]);
    let (file, _) = file_mode(&undeclared, "web", 80);
    let (operator, _) = operator_mode(&undeclared, "web", 80);
    let invalid =
        |c: &DestinationConfig| format!("{:?}", c.routes[0].1.backends).contains("invalid: Some(");
    assert!(
        !invalid(&file) && invalid(&operator),
        "{file:?}\n{operator:?}"
    );

    // Not vacuous: the BackendTrafficPolicy's budget reaches the config.
    let budgeted = documents(&[
        service_doc("web"),
        slice.clone(),
        policy.clone(),
        traffic_doc.clone(),
    ]);
    let (config, _) = operator_mode(&budgeted, "web", 80);
    assert_eq!(config.budget.as_ref().map(|b| b.percent), Some(35));

    let mut out = Vec::new();
    for (what, extra) in cases {
        let mut docs = vec![service_doc("web"), slice.clone(), backend.clone()];
        docs.extend(extra);
        out.extend(compare(what, &documents(&docs), "web"));
    }
    assert_same(out);
}
