//! What the API server (or anyone who reaches the webhook port) sends the
//! injection webhook: any bytes get an answer or a clear error, never a
//! panic; every answer is an allowed AdmissionReview for the same uid, and a
//! patch it returns applies to the pod it was asked about.
#![no_main]

use libfuzzer_sys::fuzz_target;
use outrigger_operator::webhook::inject::{InjectConfig, ProxyDefaults};
use outrigger_operator::webhook::review;
use serde_json::Value;

fn config(native_sidecar: bool) -> InjectConfig {
    InjectConfig {
        proxy_image: "outrigger/proxy:test".into(),
        control_plane_url: Some("https://outrigger.outrigger-system.svc:8090".into()),
        control_ca_pem: None,
        native_sidecar,
        proxy_uid: 2102,
        operator_namespace: "outrigger-system".into(),
        defaults: ProxyDefaults {
            cpu_request: "10m".into(),
            memory_request: "16Mi".into(),
            memory_limit: "64Mi".into(),
            cpu_limit: None,
            log_level: "info".into(),
            trace_otlp_endpoint: Some("http://collector:4317".into()),
            trace_sampling: Some("0.5".into()),
        },
    }
}

fuzz_target!(|input: &[u8]| {
    let Some((&mode, body)) = input.split_first() else {
        return;
    };
    let Ok(answer) = review(body, &config(mode & 1 == 1)) else {
        return;
    };
    let answer: Value = serde_json::from_slice(&answer).expect("the answer is JSON");
    assert_eq!(answer["kind"], "AdmissionReview");
    assert_eq!(answer["response"]["allowed"], true);
    // The handler skips fields it does not read without checking their
    // strings, so a request may be answered and still not be valid JSON for
    // a `Value` (e.g. a lone surrogate escape in an ignored field).
    let Ok(request) = serde_json::from_slice::<Value>(body) else {
        return;
    };
    assert_eq!(answer["response"]["uid"], request["request"]["uid"]);
    // kube writes the patch bytes as a JSON array of numbers, which the API
    // server's decoder takes for []byte as it takes base64.
    if let Some(bytes) = answer["response"]["patch"].as_array() {
        let bytes: Vec<u8> = bytes
            .iter()
            .map(|b| u8::try_from(b.as_u64().expect("a byte")).expect("a byte"))
            .collect();
        let patch: json_patch::Patch = serde_json::from_slice(&bytes).expect("a JSON patch");
        let mut pod = request["request"]["object"].clone();
        json_patch::patch(&mut pod, &patch).expect("the patch applies to the pod");
    }
});
