use serde_json::json;

use super::*;

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
}
