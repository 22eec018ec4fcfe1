//! Files holding several documents, of several kinds.

use outrigger_api::manifest::{parse_documents, Document};
use serde_json::json;

const FILE: &str = r#"# A policy file as the proxy's --policy reads it.
---
apiVersion: v1
kind: Service
metadata:
  name: payments
  namespace: shop
spec:
  clusterIP: 10.96.0.10
  ports: [{name: http, port: 80, targetPort: 8080}]
---
---
apiVersion: outrigger.dev/v1alpha1
kind: ResiliencePolicy
metadata:
  name: payments
  namespace: shop
  uid: 0b6c6f1e-8c1f-4a3e-9d2e-1f7b2d0c9a11
  resourceVersion: "4711"
  labels: {team: checkout}
spec:
  targetRef: {name: payments}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: payments-x1, labels: {kubernetes.io/service-name: payments}}
addressType: IPv4
endpoints: [{addresses: [10.0.0.1], conditions: {ready: true}}]
"#;

#[test]
fn other_kinds_come_back_untouched() {
    let documents = parse_documents(FILE).unwrap();
    let kinds: Vec<_> = documents.iter().map(Document::kind).collect();
    assert_eq!(kinds, ["Service", "ResiliencePolicy", "EndpointSlice"]);
    let Document::Other {
        api_version,
        kind,
        name,
        raw,
    } = &documents[0]
    else {
        panic!("{:?}", documents[0])
    };
    assert_eq!(
        (api_version.as_str(), kind.as_str(), name.as_deref()),
        ("v1", "Service", Some("payments"))
    );
    assert_eq!(
        *raw,
        json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "payments", "namespace": "shop"},
            "spec": {
                "clusterIP": "10.96.0.10",
                "ports": [{"name": "http", "port": 80, "targetPort": 8080}]
            }
        })
    );
    assert_eq!(documents[2].name(), Some("payments-x1"));
}

#[test]
fn kubectl_metadata_is_accepted_and_kept() {
    let documents = parse_documents(FILE).unwrap();
    let Document::Policy(policy) = &documents[1] else {
        panic!("{:?}", documents[1])
    };
    let metadata = &policy.metadata;
    assert_eq!(metadata.labels["team"], "checkout");
    assert_eq!(metadata.extra["resourceVersion"], "4711");
    assert_eq!(
        metadata.extra.keys().collect::<Vec<_>>(),
        ["resourceVersion", "uid"]
    );
}

#[test]
fn errors_count_only_non_empty_documents() {
    let broken = FILE.replace(
        "targetRef: {name: payments}",
        "targetRef: {name: payments, port: http}",
    );
    assert_eq!(
        parse_documents(&broken).unwrap_err().to_string(),
        "document 2 (payments): spec.targetRef.port: invalid type: string \"http\", \
         expected u16 at line 22 column 37"
    );
}

#[test]
fn json_streams_hold_several_objects() {
    let text = r#"{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "a"}}
	{"apiVersion": "outrigger.dev/v1alpha1", "kind": "ResiliencePolicy",
	 "metadata": {"name": "a"}, "spec": {"targetRef": {"name": "a"}, "retry": {"attempts": -1}}}"#;
    assert_eq!(
        parse_documents(text).unwrap_err().to_string(),
        "document 2 (a): spec.retry.attempts: invalid value: integer `-1`, expected u32 \
         at line 3 column 90"
    );
    let fixed = text.replace("-1", "1");
    let kinds: Vec<_> = parse_documents(&fixed)
        .unwrap()
        .iter()
        .map(|d| d.kind().to_string())
        .collect();
    assert_eq!(kinds, ["Service", "ResiliencePolicy"]);
}
