//! Properties of Gateway API route attachment over generated routes: the
//! order in which routes arrive (file order, or whatever order the API
//! server lists them in) never changes which rule serves a request, and no
//! input makes the translation panic.

use outrigger_api::gateway::{attach, RouteObject, ServiceLookup, Services};
use proptest::prelude::*;
use serde_json::{json, Value};

struct AnyService;

impl Services for AnyService {
    fn lookup(&self, _: &str, _: &str) -> ServiceLookup {
        ServiceLookup::Unknown
    }
}

fn path_match() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        (
            "(/[a-c]{1,3}){1,3}",
            prop_oneof![Just("Exact"), Just("PathPrefix")]
        )
            .prop_map(|(value, kind)| json!({"type": kind, "value": value})),
        "/[a-c]{1,3}"
            .prop_map(|value| json!({"type": "RegularExpression", "value": format!("{value}.*")})),
    ]
}

fn http_match() -> impl Strategy<Value = Value> {
    (
        path_match(),
        proptest::option::of(prop_oneof![Just("GET"), Just("POST")]),
        proptest::collection::vec("[a-c]", 0..3),
        proptest::collection::vec("[a-c]", 0..3),
    )
        .prop_map(|(path, method, headers, query)| {
            let mut m = json!({});
            if !path.is_null() {
                m["path"] = path;
            }
            if let Some(method) = method {
                m["method"] = json!(method);
            }
            m["headers"] = headers
                .iter()
                .map(|h| json!({"name": format!("x-{h}"), "value": "1"}))
                .collect();
            m["queryParams"] = query
                .iter()
                .map(|q| json!({"name": q, "value": "1"}))
                .collect();
            m
        })
}

fn grpc_match() -> impl Strategy<Value = Value> {
    (
        proptest::option::of("[a-c]{1,3}\\.[A-C][a-c]{0,3}"),
        proptest::option::of("[A-C][a-c]{0,3}"),
    )
        .prop_map(|(service, method)| {
            let mut m = json!({});
            if let Some(s) = service {
                m["service"] = json!(s);
            }
            if let Some(me) = method {
                m["method"] = json!(me);
            }
            if m.as_object().unwrap().is_empty() {
                json!({})
            } else {
                json!({"method": m})
            }
        })
}

/// A route of either kind, with 1-3 rules of 0-3 matches, maybe a
/// creationTimestamp, maybe a port on its parentRef.
fn route() -> impl Strategy<Value = Value> {
    (
        any::<bool>(),
        proptest::option::of(0u8..3),
        proptest::option::of(prop_oneof![Just(80u16), Just(81u16)]),
        proptest::collection::vec(
            proptest::collection::vec((http_match(), grpc_match()), 0..3),
            1..3,
        ),
    )
        .prop_map(|(grpc, created, port, rules)| {
            let mut parent = json!({"group": "", "kind": "Service", "name": "svc"});
            if let Some(p) = port {
                parent["port"] = json!(p);
            }
            let rules: Vec<Value> = rules
                .into_iter()
                .map(|matches| {
                    let matches: Vec<Value> = matches
                        .into_iter()
                        .map(|(h, g)| if grpc { g } else { h })
                        .collect();
                    json!({"matches": matches})
                })
                .collect();
            let mut metadata = json!({"namespace": "ns"});
            if let Some(day) = created {
                metadata["creationTimestamp"] = json!(format!("2026-01-0{}T00:00:00Z", day + 1));
            }
            json!({
                "apiVersion": "gateway.networking.k8s.io/v1",
                "kind": if grpc { "GRPCRoute" } else { "HTTPRoute" },
                "metadata": metadata,
                "spec": {"parentRefs": [parent], "rules": rules}
            })
        })
}

fn names(routes: &[RouteObject], port: u16) -> Vec<(Option<String>, String)> {
    attach(routes, &AnyService)
        .routes_for("ns", "svc", port)
        .into_iter()
        .map(|r| (r.name, serde_json::to_string(&r.r#match).unwrap()))
        .collect()
}

proptest! {
    /// Reversing or rotating the routes changes nothing a request sees.
    #[test]
    fn precedence_does_not_depend_on_arrival_order(
        values in proptest::collection::vec(route(), 1..6),
        rotate in 0usize..6,
    ) {
        let routes: Vec<RouteObject> = values
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let mut v = v.clone();
                v["metadata"]["name"] = json!(format!("r{i}"));
                RouteObject::from_value(&v).unwrap()
            })
            .collect();
        // Every generated route is one Outrigger can serve.
        for verdict in attach(&routes, &AnyService).verdicts {
            for parent in verdict.parents {
                prop_assert!(parent.accepted.ok, "{:?}", parent.accepted);
            }
        }
        let mut reversed = routes.clone();
        reversed.reverse();
        let mut rotated = routes.clone();
        rotated.rotate_left(rotate % routes.len());
        for port in [80, 81] {
            let expected = names(&routes, port);
            prop_assert_eq!(&names(&reversed, port), &expected);
            prop_assert_eq!(&names(&rotated, port), &expected);
        }
    }

    /// Arbitrary JSON under spec: an error or a route; attaching it never
    /// panics.
    #[test]
    fn arbitrary_specs_never_panic(
        rules in proptest::collection::vec(
            proptest::collection::btree_map(
                prop_oneof![Just("matches"), Just("backendRefs"), Just("filters"), Just("timeouts"), Just("retry"), Just("name")],
                prop_oneof![
                    Just(json!(null)), Just(json!([])), Just(json!({})), Just(json!("1s")),
                    Just(json!(-1)), Just(json!(99999)),
                    Just(json!([{"name": "b", "port": 70000, "weight": -3}])),
                    Just(json!([{"type": "URLRewrite"}])),
                    Just(json!({"attempts": -5, "codes": [0, 70000], "backoff": "0s"})),
                    Just(json!([{"path": {"type": "RegularExpression", "value": "("}}])),
                ],
                0..4,
            ),
            0..3,
        ),
        kind in prop_oneof![Just("HTTPRoute"), Just("GRPCRoute")],
    ) {
        let value = json!({
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": kind,
            "metadata": {"name": "r", "namespace": "ns"},
            "spec": {"parentRefs": [{"group": "", "kind": "Service", "name": "svc", "port": 80}],
                     "rules": rules}
        });
        if let Ok(route) = RouteObject::from_value(&value) {
            let _ = route.unknown_fields(&value);
            let a = attach(&[route], &AnyService);
            prop_assert_eq!(a.verdicts.len(), 1);
        }
    }
}
