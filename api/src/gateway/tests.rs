//! The translation, checked field by field: on the GAMMA conformance
//! manifests (read at run time from ../shared/gateway-api beside the
//! workspace, never copied into it) and on small manifests of our own for
//! what conformance does not cover (timeouts, retry, refused values).

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::*;
use crate::duration::Duration;
use crate::manifest::{parse_documents, Document};
use crate::policy::{
    Backend, Backoff, GrpcMatch, HeaderMatch, HeaderModifier, HeaderValue, Retry, RouteMatch,
    Timeouts, ValueMatch,
};

const NS: &str = "gateway-conformance-mesh";

fn upstream_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/gateway-api");
    assert!(
        dir.join("mesh-conformance-manifests").is_dir(),
        "the upstream Gateway API material is missing: expected {} (the GAMMA conformance \
         manifests, kept beside the workspace as ../shared/gateway-api)",
        dir.display()
    );
    dir
}

/// Every document of an upstream conformance manifest file.
fn upstream(file: &str) -> Vec<Value> {
    let path = upstream_dir().join("mesh-conformance-manifests").join(file);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    parse_documents(&text)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .into_iter()
        .map(|d| match d {
            Document::Other { raw, .. } => raw,
            Document::Policy(p) => panic!("unexpected policy {}", p.metadata.name),
        })
        .collect()
}

fn routes_in(values: &[Value]) -> Vec<RouteObject> {
    values
        .iter()
        .filter(|v| RouteKind::from_kind(v["kind"].as_str().unwrap_or("")).is_some())
        .map(|v| RouteObject::from_value(v).unwrap())
        .collect()
}

/// Services from Service documents; anything else is NotFound.
struct Docs(Vec<Value>);

impl Services for Docs {
    fn lookup(&self, namespace: &str, name: &str) -> ServiceLookup {
        self.0
            .iter()
            .find(|v| {
                v["kind"] == "Service"
                    && v["metadata"]["name"] == name
                    && v["metadata"]["namespace"].as_str().unwrap_or("default") == namespace
            })
            .map_or(ServiceLookup::NotFound, |v| {
                ServiceLookup::Ports(
                    v["spec"]["ports"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|p| ServicePortInfo {
                            port: p["port"].as_u64().unwrap() as u16,
                            name: p["name"].as_str().map(str::to_string),
                        })
                        .collect(),
                )
            })
    }
}

/// Every Service is assumed to exist (file mode without Service documents).
struct AnyService;

impl Services for AnyService {
    fn lookup(&self, _: &str, _: &str) -> ServiceLookup {
        ServiceLookup::Unknown
    }
}

fn base() -> Docs {
    Docs(upstream("base-manifests.yaml"))
}

/// Attaches the routes of an upstream file to the upstream Services.
fn attach_upstream(file: &str) -> Attachment {
    attach(&routes_in(&upstream(file)), &base())
}

fn backend(name: &str, port: u16, weight: u32) -> Backend {
    Backend {
        name: name.into(),
        namespace: NS.into(),
        port,
        weight,
        ..Backend::default()
    }
}

fn prefix(p: &str) -> RouteMatch {
    RouteMatch {
        path_prefix: Some(p.into()),
        ..RouteMatch::default()
    }
}

fn header(name: &str, value: &str) -> HeaderMatch {
    HeaderMatch {
        name: name.into(),
        value: value.into(),
    }
}

fn query(name: &str, value: &str) -> ValueMatch {
    ValueMatch {
        name: name.into(),
        value: value.into(),
        regex: false,
    }
}

fn hv(name: &str, value: &str) -> HeaderValue {
    HeaderValue {
        name: name.into(),
        value: value.into(),
    }
}

/// The only verdict's only parent.
fn only_parent(a: &Attachment) -> &ParentVerdict {
    assert_eq!(a.verdicts.len(), 1, "{:?}", a.verdicts);
    assert_eq!(a.verdicts[0].parents.len(), 1, "{:?}", a.verdicts);
    &a.verdicts[0].parents[0]
}

fn assert_accepted(a: &Attachment) {
    for v in &a.verdicts {
        for p in &v.parents {
            assert!(p.accepted.ok, "{}: {:?}", v.label(), p.accepted);
            assert_eq!(p.accepted.reason, "Accepted");
            assert!(p.resolved_refs.ok, "{}: {:?}", v.label(), p.resolved_refs);
            assert_eq!(p.resolved_refs.reason, "ResolvedRefs");
        }
    }
}

// ---- upstream conformance manifests ----

#[test]
fn weights_split_between_backends() {
    let a = attach_upstream("httproute-weight.yaml");
    assert_accepted(&a);
    let parent = only_parent(&a);
    assert_eq!(
        parent.parent_ref,
        json!({"group": "", "kind": "Service", "name": "echo", "port": 80})
    );
    let routes = a.routes_for(NS, "echo", 80);
    assert_eq!(routes.len(), 1);
    let route = &routes[0];
    assert_eq!(route.name.as_deref(), Some("mesh-weighted-backends/0"));
    assert_eq!(
        route.source.as_deref(),
        Some("HTTPRoute gateway-conformance-mesh/mesh-weighted-backends rule 0")
    );
    assert_eq!(route.r#match, RouteMatch::default());
    assert_eq!(
        route.backends,
        [backend("echo-v1", 8080, 70), backend("echo-v2", 8080, 30)]
    );
    assert_eq!(
        (&route.timeouts, &route.retry, &route.request_headers),
        (&None, &None, &None)
    );
    assert!(a.routes_for(NS, "echo", 8080).is_empty(), "port 80 only");
    assert_eq!(
        a.sources_for(NS, "echo"),
        ["HTTPRoute gateway-conformance-mesh/mesh-weighted-backends"]
    );
}

#[test]
fn grpc_weights_and_a_zero_weight() {
    // echo-v3 is not among the upstream base Services.
    let mut services = base().0;
    services.push(json!({"kind": "Service",
        "metadata": {"name": "echo-v3", "namespace": NS}, "spec": {"ports": [{"port": 7070}]}}));
    let a = attach(
        &routes_in(&upstream("grpcroute-weight.yaml")),
        &Docs(services),
    );
    assert_accepted(&a);
    let routes = a.routes_for(NS, "echo", 7070);
    assert_eq!(routes.len(), 1);
    assert_eq!(
        routes[0].r#match,
        RouteMatch {
            grpc: Some(GrpcMatch::default()),
            ..RouteMatch::default()
        },
        "a rule without matches takes every gRPC call"
    );
    assert_eq!(
        routes[0].backends,
        [
            backend("echo-v1", 7070, 70),
            backend("echo-v2", 7070, 30),
            backend("echo-v3", 7070, 0),
        ]
    );
}

#[test]
fn a_missing_backend_service_is_invalid_not_dropped() {
    // The upstream base has no echo-v3: its share gets 500s, the rest flows.
    let a = attach_upstream("grpcroute-weight.yaml");
    let parent = only_parent(&a);
    assert!(parent.accepted.ok);
    assert!(!parent.resolved_refs.ok);
    assert_eq!(parent.resolved_refs.reason, "BackendNotFound");
    assert!(parent.resolved_refs.message.contains("echo-v3"));
    let backends = &a.routes_for(NS, "echo", 7070)[0].backends;
    assert!(backends[2]
        .invalid
        .as_deref()
        .unwrap()
        .contains("no such Service"));
    assert_eq!(backends[0].invalid, None);
}

#[test]
fn matching_follows_precedence() {
    let a = attach_upstream("httproute-matching.yaml");
    assert_accepted(&a);
    let routes = a.routes_for(NS, "echo", 80);
    let got: Vec<(&str, &RouteMatch, &str)> = routes
        .iter()
        .map(|r| {
            (
                r.name.as_deref().unwrap(),
                &r.r#match,
                r.backends[0].name.as_str(),
            )
        })
        .collect();
    let headers = |value: &str| RouteMatch {
        headers: vec![header("version", value)],
        ..RouteMatch::default()
    };
    assert_eq!(
        got,
        [
            // The longest prefix first; then, among the "/" prefixes, the
            // matches with a header before the one without.
            ("mesh-matching/1", &prefix("/v2"), "echo-v2"),
            ("mesh-matching/0", &headers("one"), "echo-v1"),
            ("mesh-matching/1", &headers("two"), "echo-v2"),
            ("mesh-matching/0", &RouteMatch::default(), "echo-v1"),
        ]
    );
}

#[test]
fn query_parameters_rank_after_paths() {
    let a = attach_upstream("httproute-query-param-matching.yaml");
    assert_accepted(&a);
    let routes = a.routes_for(NS, "echo", 80);
    let got: Vec<(String, RouteMatch)> = routes
        .iter()
        .map(|r| (r.name.clone().unwrap(), r.r#match.clone()))
        .collect();
    let with = |mut m: RouteMatch, q: &[(&str, &str)], h: &[(&str, &str)]| {
        m.query_params = q.iter().map(|(n, v)| query(n, v)).collect();
        m.headers = h.iter().map(|(n, v)| header(n, v)).collect();
        m
    };
    let any = RouteMatch::default();
    assert_eq!(
        got,
        [
            // Longest prefix first (/path5 before any query-only match);
            // of equal length, the one with a header first.
            (
                "mesh-query-param-matching/4".into(),
                with(
                    prefix("/path4"),
                    &[("animal", "kraken")],
                    &[("version", "three")]
                )
            ),
            (
                "mesh-query-param-matching/2".into(),
                with(prefix("/path1"), &[("animal", "whale")], &[])
            ),
            (
                "mesh-query-param-matching/4".into(),
                with(prefix("/path3"), &[("animal", "shark")], &[])
            ),
            ("mesh-query-param-matching/5".into(), prefix("/path5")),
            // Then "/" by header count, then query count, then rule order.
            (
                "mesh-query-param-matching/3".into(),
                with(any.clone(), &[("animal", "whale")], &[("version", "one")])
            ),
            (
                "mesh-query-param-matching/0".into(),
                with(any.clone(), &[("animal", "whale")], &[])
            ),
            (
                "mesh-query-param-matching/1".into(),
                with(any.clone(), &[("animal", "dolphin")], &[])
            ),
            (
                "mesh-query-param-matching/6".into(),
                with(any, &[("animal", "hydra")], &[])
            ),
        ]
    );
}

#[test]
fn request_header_modifiers_on_rules_and_backends() {
    let multiple = HeaderModifier {
        set: vec![
            hv("X-Header-Set-1", "header-set-1"),
            hv("X-Header-Set-2", "header-set-2"),
        ],
        add: vec![
            hv("X-Header-Add-1", "header-add-1"),
            hv("X-Header-Add-2", "header-add-2"),
            hv("X-Header-Add-3", "header-add-3"),
        ],
        remove: vec!["X-Header-Remove-1".into(), "X-Header-Remove-2".into()],
    };
    let find = |routes: &[Route], path: &str| {
        routes
            .iter()
            .find(|r| r.r#match.path_prefix.as_deref() == Some(path))
            .cloned()
            .unwrap()
    };

    let a = attach_upstream("httproute-request-header-modifier.yaml");
    assert_accepted(&a);
    let routes = a.routes_for(NS, "echo", 80);
    assert_eq!(routes.len(), 5);
    let set = find(&routes, "/set");
    assert_eq!(
        set.request_headers,
        Some(HeaderModifier {
            set: vec![hv("X-Header-Set", "set-overwrites-values")],
            ..HeaderModifier::default()
        })
    );
    assert_eq!(set.backends, [backend("echo-v1", 8080, 1)]);
    assert_eq!(
        find(&routes, "/multiple").request_headers,
        Some(multiple.clone())
    );
    assert_eq!(
        find(&routes, "/remove").request_headers.unwrap().remove,
        ["X-Header-Remove"]
    );

    let a = attach_upstream("httproute-request-header-modifier-backend.yaml");
    assert_accepted(&a);
    let routes = a.routes_for(NS, "echo", 80);
    let multi = find(&routes, "/multiple");
    assert_eq!(
        multi.request_headers, None,
        "set on the backend, not the rule"
    );
    assert_eq!(multi.backends[0].request_headers, Some(multiple));
    assert_eq!(
        find(&routes, "/add").backends[0].request_headers,
        Some(HeaderModifier {
            add: vec![hv("X-Header-Add", "add-appends-values")],
            ..HeaderModifier::default()
        })
    );

    let a = attach_upstream("grpcroute-request-header-modifier.yaml");
    assert_accepted(&a);
    let routes = a.routes_for(NS, "echo", 7070);
    assert_eq!(routes.len(), 4);
    let multi = routes
        .iter()
        .find(|r| r.r#match.headers == [header("x-test-case", "multi")])
        .unwrap();
    assert_eq!(
        multi.r#match.grpc,
        Some(GrpcMatch::default()),
        "gRPC calls only"
    );
    assert_eq!(multi.backends, [backend("echo-v2", 7070, 1)]);
    assert_eq!(multi.request_headers.as_ref().unwrap().set.len(), 2);
    assert_eq!(multi.request_headers.as_ref().unwrap().remove.len(), 2);
}

#[test]
fn rule_names_name_routes() {
    let a = attach_upstream("httproute-named-rule.yaml");
    let names: Vec<String> = a
        .routes_for(NS, "echo", 80)
        .into_iter()
        .map(|r| r.name.unwrap())
        .collect();
    assert_eq!(
        names,
        // /unnamed is the longer prefix.
        [
            "mesh-http-named-rules/1",
            "mesh-http-named-rules/named-rule"
        ]
    );
}

#[test]
fn redirects_and_rewrites_are_not_accepted() {
    for (file, filter) in [
        ("httproute-303-redirect.yaml", "RequestRedirect"),
        ("httproute-307-redirect.yaml", "RequestRedirect"),
        ("httproute-308-redirect.yaml", "RequestRedirect"),
        ("httproute-redirect-host-and-status.yaml", "RequestRedirect"),
        ("httproute-redirect-path.yaml", "RequestRedirect"),
        ("httproute-redirect-port.yaml", "RequestRedirect"),
        ("httproute-redirect-scheme.yaml", "RequestRedirect"),
        ("httproute-rewrite-path.yaml", "URLRewrite"),
    ] {
        let a = attach_upstream(file);
        assert!(a.services.is_empty(), "{file}: nothing attaches");
        assert!(!a.verdicts.is_empty(), "{file}");
        for v in &a.verdicts {
            for p in &v.parents {
                assert!(!p.accepted.ok, "{file}");
                assert_eq!(p.accepted.reason, "UnsupportedValue", "{file}");
                assert!(
                    p.accepted
                        .message
                        .contains(&format!("filter {filter} is not supported")),
                    "{file}: {}",
                    p.accepted.message
                );
            }
        }
    }
}

#[test]
fn consumer_routes_are_not_supported_yet() {
    let a = attach_upstream("mesh-consumer-route.yaml");
    assert!(a.services.is_empty());
    let parent = only_parent(&a);
    assert!(!parent.accepted.ok);
    assert_eq!(parent.accepted.reason, "UnsupportedValue");
    assert!(
        parent.accepted.message.contains("consumer routes"),
        "{}",
        parent.accepted.message
    );
    // Its backend is in another namespace, without a ReferenceGrant.
    assert_eq!(parent.resolved_refs.reason, "RefNotPermitted");
}

#[test]
fn a_parent_without_a_port_takes_every_port() {
    let a = attach_upstream("mesh-split.yaml");
    assert_accepted(&a);
    let rules = &a.services[&(NS.to_string(), "echo".to_string())];
    assert!(rules.iter().all(|r| r.port.is_none()));
    for port in [80, 7070] {
        let routes = a.routes_for(NS, "echo", port);
        let exact: Vec<_> = routes
            .iter()
            .map(|r| r.r#match.path_exact.as_deref().unwrap())
            .collect();
        assert_eq!(exact, ["/v1", "/v2"]);
    }
    let frontend = attach_upstream("mesh-frontend.yaml");
    let routes = frontend.routes_for(NS, "echo-v2", 80);
    assert_eq!(
        routes[0].response_headers,
        Some(HeaderModifier {
            set: vec![hv("X-Header-Set", "set")],
            ..HeaderModifier::default()
        })
    );
}

#[test]
fn every_upstream_route_parses_with_every_field_known() {
    let dir = upstream_dir().join("mesh-conformance-manifests");
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let file = path.file_name().unwrap().to_str().unwrap().to_string();
        for value in upstream(&file) {
            if RouteKind::from_kind(value["kind"].as_str().unwrap_or("")).is_none() {
                continue;
            }
            let route = RouteObject::from_value(&value).unwrap();
            assert_eq!(route.unknown_fields(&value), Vec::<String>::new(), "{file}");
            count += 1;
        }
    }
    assert!(count >= 20, "{count} routes");
}

#[test]
fn unknown_fields_are_named() {
    let value = json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": "r", "namespace": "shop", "uid": "x"},
        "spec": {"parentRefs": [{"name": "checkout", "kind": "Service", "group": ""}],
                 "hostnames": null,
                 "rules": [{"timeout": {"request": "1s"},
                            "matches": [{"path": {"value": "/a", "kind": "Exact"}}]}]}
    });
    let route = RouteObject::from_value(&value).unwrap();
    assert_eq!(
        route.unknown_fields(&value),
        [
            "spec.rules[0].matches[0].path.kind",
            "spec.rules[0].timeout"
        ]
    );
}

// ---- our own manifests ----

fn http_route(name: &str, spec: Value) -> RouteObject {
    RouteObject::from_value(&json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": name, "namespace": "shop"},
        "spec": spec
    }))
    .unwrap()
}

fn to_shop(port: Option<u16>) -> Value {
    match port {
        Some(p) => json!([{"group": "", "kind": "Service", "name": "checkout", "port": p}]),
        None => json!([{"group": "", "kind": "Service", "name": "checkout"}]),
    }
}

fn one(spec: Value) -> (Attachment, Vec<Route>) {
    let a = attach(&[http_route("r", spec)], &AnyService);
    let routes = a.routes_for("shop", "checkout", 80);
    (a, routes)
}

fn refused(spec: Value) -> String {
    let (a, routes) = one(spec);
    assert!(routes.is_empty());
    let parent = only_parent(&a);
    assert!(!parent.accepted.ok);
    assert_eq!(parent.accepted.reason, "UnsupportedValue");
    parent.accepted.message.clone()
}

#[test]
fn from_value_reads_metadata() {
    let route = RouteObject::from_value(&json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "checkout", "generation": 3,
                     "creationTimestamp": "2026-01-02T03:04:05Z"},
        "spec": {"parentRefs": [{"group": "", "kind": "Service", "name": "shop"}]}
    }))
    .unwrap();
    assert_eq!(route.kind, RouteKind::Http);
    assert_eq!(
        (route.namespace.as_str(), route.name.as_str()),
        ("default", "checkout")
    );
    assert_eq!(route.generation, Some(3));
    assert_eq!(route.created.as_deref(), Some("2026-01-02T03:04:05Z"));
    assert_eq!(route.label(), "HTTPRoute default/checkout");
}

#[test]
fn from_value_refuses_what_is_not_a_route() {
    let err = |v: Value| RouteObject::from_value(&v).unwrap_err();
    assert!(err(json!({"apiVersion": "v1", "kind": "Service"})).contains("not a Gateway API route"));
    assert!(
        err(json!({"apiVersion": "example.com/v1", "kind": "HTTPRoute",
        "metadata": {"name": "a"}, "spec": {}}))
        .contains("is not served")
    );
    assert!(err(
        json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "GRPCRoute",
        "metadata": {}, "spec": {}})
    )
    .contains("metadata.name is required"));
    let e = err(
        json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": "a"}, "spec": {"rules": [{"matches": [{"method": "FETCH"}]}]}}),
    );
    assert!(e.starts_with("HTTPRoute: "), "{e}");
}

#[test]
fn timeouts_and_retry_become_the_routes() {
    let (a, routes) = one(json!({
        "parentRefs": to_shop(Some(80)),
        "rules": [{
            "matches": [{"path": {"type": "PathPrefix", "value": "/pay"}, "method": "POST"}],
            "timeouts": {"request": "10s", "backendRequest": "2s"},
            "retry": {"attempts": 3, "codes": [500, 503], "backoff": "100ms"}
        }, {
            "timeouts": {"request": "0s"},
            "retry": {"backoff": "3s"}
        }]
    }));
    assert_accepted(&a);
    assert_eq!(routes.len(), 2);
    assert_eq!(routes[0].r#match.method.as_deref(), Some("POST"));
    assert_eq!(
        routes[0].timeouts,
        Some(Timeouts {
            request: Some(Duration::from_secs(10)),
            backend_request: Some(Duration::from_secs(2)),
            ..Timeouts::default()
        })
    );
    assert_eq!(
        routes[0].retry,
        Some(Retry {
            attempts: Some(3),
            codes: Some(vec![500, 503]),
            backoff: Some(Backoff {
                base: Some(Duration::from_millis(100)),
                max: Some(Duration::from_secs(1)),
            }),
            ..Retry::default()
        })
    );
    assert_eq!(routes[0].backends, [], "no backendRefs: the Service itself");
    assert_eq!(
        routes[1].timeouts.as_ref().unwrap().request,
        Some(Duration::ZERO)
    );
    assert_eq!(
        routes[1].retry.as_ref().unwrap().backoff,
        Some(Backoff {
            base: Some(Duration::from_secs(3)),
            max: Some(Duration::from_secs(3)),
        }),
        "max is never below base"
    );
}

#[test]
fn unset_route_fields_inherit_the_policy() {
    let (_, routes) = one(json!({
        "parentRefs": to_shop(None),
        "rules": [{"timeouts": {"backendRequest": "1s"}, "retry": {"codes": [503]}}]
    }));
    let policy: ResiliencePolicySpec = serde_json::from_value(json!({
        "targetRef": {"name": "checkout"},
        "timeouts": {"request": "4s"},
        "retry": {"attempts": 4},
        "routes": [{"name": "own", "match": {"pathPrefix": "/x"}}]
    }))
    .unwrap();
    let spec = compose(Some(&policy), "checkout", routes).unwrap();
    assert!(spec.exclusive_routes);
    let effective = crate::defaults::with_defaults(&spec);
    assert_eq!(
        effective.routes.len(),
        1,
        "the policy's own routes are replaced"
    );
    let route = &effective.routes[0];
    let t = route.timeouts.as_ref().unwrap();
    assert_eq!(
        (t.request, t.backend_request),
        (Some(Duration::from_secs(4)), Some(Duration::from_secs(1)))
    );
    let r = route.retry.as_ref().unwrap();
    assert_eq!((r.attempts, r.codes.clone()), (Some(4), Some(vec![503])));
}

#[test]
fn compose_without_routes_or_policy() {
    let policy: ResiliencePolicySpec =
        serde_json::from_value(json!({"targetRef": {"name": "checkout"}, "retry": {}})).unwrap();
    assert_eq!(compose(None, "checkout", vec![]), None);
    assert_eq!(
        compose(Some(&policy), "checkout", vec![]),
        Some(policy.clone())
    );
    let route = Route {
        name: Some("r/0".into()),
        ..Route::default()
    };
    let spec = compose(None, "checkout", vec![route.clone()]).unwrap();
    assert_eq!(
        spec,
        ResiliencePolicySpec {
            target_ref: TargetRef::service("checkout"),
            routes: vec![route],
            exclusive_routes: true,
            ..ResiliencePolicySpec::default()
        }
    );
}

#[test]
fn values_outrigger_cannot_honour_refuse_the_route() {
    let spec = |rule: Value| json!({"parentRefs": to_shop(Some(80)), "rules": [rule]});
    for (rule, expect) in [
        (
            json!({"retry": {"attempts": 11}}),
            "rules[0]: retry.attempts: 11 is not supported",
        ),
        (
            json!({"retry": {"backoff": "0s"}}),
            "retry.backoff: 0s is not supported",
        ),
        (
            json!({"timeouts": {"request": "1 second"}}),
            "timeouts.request: invalid duration",
        ),
        (
            json!({"timeouts": {"request": "1s", "backendRequest": "2s"}}),
            "backendRequest must be <= request",
        ),
        (
            json!({"matches": [{"path": {"type": "RegularExpression", "value": "/(a"}}]}),
            "matches[0]: path: invalid regular expression",
        ),
        (
            json!({"sessionPersistence": {"sessionName": "s"}}),
            "sessionPersistence is not supported",
        ),
        (
            json!({"filters": [{"type": "RequestMirror",
                "requestMirror": {"backendRef": {"name": "m", "port": 80}}}]}),
            "filter RequestMirror is not supported",
        ),
        (
            json!({"backendRefs": [{"name": "b", "port": 80, "filters": [
                {"type": "ExtensionRef", "extensionRef": {"group": "x", "kind": "Y", "name": "z"}}]}]}),
            "backendRefs[0]: filter ExtensionRef is not supported",
        ),
    ] {
        let message = refused(spec(rule));
        assert!(message.contains(expect), "{message} lacks {expect}");
    }
}

#[test]
fn regex_header_and_query_matches() {
    let (a, routes) = one(json!({
        "parentRefs": to_shop(Some(80)),
        "rules": [{"matches": [
            {"path": {"type": "RegularExpression", "value": "/items/[0-9]+"},
             "headers": [{"name": "x-v", "type": "RegularExpression", "value": "v[12]"},
                         {"name": "x-e", "value": "1"}],
             "queryParams": [{"name": "q", "type": "RegularExpression", "value": "a.*"}]},
            {"path": {"type": "PathPrefix", "value": "/"}}
        ]}]
    }));
    assert_accepted(&a);
    assert_eq!(routes.len(), 2);
    // A regular expression ranks after every prefix, "/" included.
    assert_eq!(routes[0].r#match, RouteMatch::default());
    let m = &routes[1].r#match;
    assert_eq!(m.path_regex.as_deref(), Some("/items/[0-9]+"));
    assert_eq!(m.headers, [header("x-e", "1")]);
    assert_eq!(
        m.header_regexes,
        [ValueMatch {
            name: "x-v".into(),
            value: "v[12]".into(),
            regex: true
        }]
    );
    assert_eq!(
        m.query_params,
        [ValueMatch {
            name: "q".into(),
            value: "a.*".into(),
            regex: true
        }]
    );
}

#[test]
fn backend_references_are_checked() {
    let services = Docs(vec![json!({"kind": "Service",
        "metadata": {"name": "checkout", "namespace": "shop"},
        "spec": {"ports": [{"name": "http", "port": 80}]}})]);
    let route = |backends: Value| {
        http_route(
            "r",
            json!({"parentRefs": to_shop(Some(80)), "rules": [{"backendRefs": backends}]}),
        )
    };
    for (backends, reason, message) in [
        (
            json!([{"name": "checkout", "namespace": "other", "port": 80}]),
            "RefNotPermitted",
            "ReferenceGrant",
        ),
        (
            json!([{"name": "nope", "port": 80}]),
            "BackendNotFound",
            "no such Service",
        ),
        (
            json!([{"name": "checkout", "port": 81}]),
            "BackendNotFound",
            "has no port 81",
        ),
        (
            json!([{"name": "checkout"}]),
            "BackendNotFound",
            "port is required",
        ),
        (
            json!([{"group": "example.com", "kind": "Bucket", "name": "b"}]),
            "InvalidKind",
            "kind Bucket",
        ),
    ] {
        let a = attach(&[route(backends.clone())], &services);
        let parent = only_parent(&a);
        assert!(parent.accepted.ok, "{backends}: still attached");
        assert!(!parent.resolved_refs.ok, "{backends}");
        assert_eq!(parent.resolved_refs.reason, reason, "{backends}");
        assert!(
            parent.resolved_refs.message.contains(message),
            "{backends}: {}",
            parent.resolved_refs.message
        );
        let routes = a.routes_for("shop", "checkout", 80);
        assert!(routes[0].backends[0].invalid.is_some(), "{backends}");
    }
}

#[test]
fn parents_must_exist_with_their_port() {
    let services = Docs(vec![json!({"kind": "Service",
        "metadata": {"name": "checkout", "namespace": "shop"},
        "spec": {"ports": [{"name": "http", "port": 80}, {"name": "grpc", "port": 7070}]}})]);
    let verdict = |parent: Value, services: &dyn Services| {
        let a = attach(
            &[http_route("r", json!({"parentRefs": [parent]}))],
            services,
        );
        only_parent(&a).accepted.clone()
    };
    let parent = |extra: Value| {
        let mut p = json!({"group": "", "kind": "Service", "name": "checkout"});
        p.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        p
    };
    assert!(verdict(parent(json!({"port": 80})), &services).ok);
    let v = verdict(parent(json!({"port": 81})), &services);
    assert_eq!(
        (v.ok, v.reason.as_str()),
        (false, "NoMatchingParent"),
        "{v:?}"
    );
    let v = verdict(
        json!({"kind": "Service", "group": "", "name": "gone"}),
        &services,
    );
    assert_eq!(
        (v.reason.as_str(), v.message.as_str()),
        ("NoMatchingParent", "Service shop/gone not found")
    );
    // sectionName is a Service port's name.
    let a = attach(
        &[http_route(
            "r",
            json!({"parentRefs": [parent(json!({"sectionName": "grpc"}))]}),
        )],
        &services,
    );
    assert!(only_parent(&a).accepted.ok);
    assert_eq!(
        a.services[&("shop".into(), "checkout".into())][0].port,
        Some(7070)
    );
    assert!(!verdict(parent(json!({"sectionName": "nope"})), &services).ok);
    assert!(
        !verdict(
            parent(json!({"sectionName": "grpc", "port": 80})),
            &services
        )
        .ok
    );
    let v = verdict(parent(json!({"sectionName": "grpc"})), &AnyService);
    assert!(!v.ok && v.message.contains("not known"), "{v:?}");
    // Unknown Services are assumed to exist, with any port.
    assert!(verdict(parent(json!({"port": 81})), &AnyService).ok);
}

#[test]
fn only_service_parents_are_ours() {
    let route = http_route(
        "r",
        json!({"parentRefs": [{"name": "gw"}, {"group": "example.com", "kind": "Service", "name": "x"}]}),
    );
    let a = attach(&[route], &AnyService);
    assert!(a.verdicts.is_empty() && a.services.is_empty());
    // A route with a Gateway and a Service parent reports the Service only.
    let route = http_route(
        "r",
        json!({"parentRefs": [{"name": "gw"}, {"group": "", "kind": "Service", "name": "checkout"}]}),
    );
    let a = attach(&[route], &AnyService);
    assert_eq!(only_parent(&a).parent_ref["name"], "checkout");
}

#[test]
fn ties_go_to_the_oldest_route_then_by_name_and_grpc_comes_first() {
    let at = |name: &str, created: Option<&str>| {
        let mut r = http_route(
            name,
            json!({"parentRefs": to_shop(None), "rules": [{"matches": [{"path": {"value": "/a"}}]}]}),
        );
        r.created = created.map(str::to_string);
        r
    };
    let grpc = RouteObject::from_value(&json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "GRPCRoute",
        "metadata": {"name": "z", "namespace": "shop"},
        "spec": {"parentRefs": to_shop(None), "rules": [
            {"matches": [{"method": {"service": "a.B"}}]},
            {"matches": [{"method": {"service": "a.B", "method": "Get"}}]}
        ]}
    }))
    .unwrap();
    let routes = [
        at("new", Some("2026-02-01T00:00:00Z")),
        at("old", Some("2026-01-01T00:00:00Z")),
        at("b-file", None),
        at("a-file", None),
        grpc,
    ];
    let a = attach(&routes, &AnyService);
    let names: Vec<String> = a
        .routes_for("shop", "checkout", 80)
        .into_iter()
        .map(|r| r.name.unwrap())
        .collect();
    assert_eq!(
        names,
        ["z/1", "z/0", "a-file/0", "b-file/0", "old/0", "new/0"]
    );
    assert_eq!(
        a.sources_for("shop", "checkout"),
        [
            "GRPCRoute shop/z",
            "HTTPRoute shop/a-file",
            "HTTPRoute shop/b-file",
            "HTTPRoute shop/new",
            "HTTPRoute shop/old"
        ]
    );
}

#[test]
fn grpc_regular_expression_methods_are_refused() {
    let route = RouteObject::from_value(&json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "GRPCRoute",
        "metadata": {"name": "g", "namespace": "shop"},
        "spec": {"parentRefs": to_shop(None), "rules": [
            {"matches": [{"method": {"type": "RegularExpression", "service": "a\\..*"}}]}]}
    }))
    .unwrap();
    let a = attach(&[route], &AnyService);
    let v = &only_parent(&a).accepted;
    assert_eq!(v.reason, "UnsupportedValue");
    assert!(v.message.contains("RegularExpression"), "{}", v.message);
}

#[test]
fn a_portless_parent_covers_the_port_specific_one() {
    let route = http_route(
        "r",
        json!({"parentRefs": [
            {"group": "", "kind": "Service", "name": "checkout", "port": 80},
            {"group": "", "kind": "Service", "name": "checkout"}
        ]}),
    );
    let a = attach(&[route], &AnyService);
    assert_eq!(a.verdicts[0].parents.len(), 2);
    assert_eq!(a.routes_for("shop", "checkout", 80).len(), 1, "not twice");
    assert_eq!(a.routes_for("shop", "checkout", 81).len(), 1);
}

#[test]
fn a_zero_timeout_is_no_limit() {
    for timeouts in [
        json!({"request": "5s", "backendRequest": "0s"}),
        json!({"request": "0s", "backendRequest": "20s"}),
    ] {
        let (a, routes) = one(json!({"parentRefs": to_shop(Some(80)),
            "rules": [{"timeouts": timeouts.clone()}]}));
        assert_accepted(&a);
        assert!(routes[0].timeouts.is_some(), "{timeouts}");
    }
}
