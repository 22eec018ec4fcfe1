//! HTTPS front of the injector: `POST /inject` with an AdmissionReview. Every
//! request gets an AdmissionReview back — with a patch, or allowed unchanged
//! with a warning that says why — so a pod is never blocked by the proxy's
//! opinion of it (the webhook's failurePolicy governs outages, not bad input).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use k8s_openapi::api::core::v1::Pod;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview};
use kube::core::DynamicObject;
use outrigger_transport::accept::{accept_loop, AcceptConfig};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::inject::{decide, Decision, InjectConfig};

/// AdmissionReviews of pods are far below this (the API server caps at 3 MiB).
const MAX_REVIEW_BYTES: usize = 4 * 1024 * 1024;

/// Answers one AdmissionReview (JSON in, JSON out).
pub fn review(body: &[u8], config: &InjectConfig) -> Result<Vec<u8>, String> {
    let review: AdmissionReview<DynamicObject> =
        serde_json::from_slice(body).map_err(|e| format!("not an AdmissionReview: {e}"))?;
    // Found by fuzzing: the answer echoed whatever kind the request named.
    let types = &review.types;
    if types.kind != "AdmissionReview" || types.api_version != "admission.k8s.io/v1" {
        return Err(format!(
            "not an AdmissionReview: expected kind AdmissionReview, apiVersion \
             admission.k8s.io/v1; got kind {:?}, apiVersion {:?}",
            types.kind, types.api_version
        ));
    }
    let request: AdmissionRequest<DynamicObject> = review
        .try_into()
        .map_err(|e| format!("AdmissionReview without a request: {e}"))?;
    let response = respond(&request, config);
    serde_json::to_vec(&response.into_review()).map_err(|e| e.to_string())
}

fn respond(request: &AdmissionRequest<DynamicObject>, config: &InjectConfig) -> AdmissionResponse {
    let allowed = AdmissionResponse::from(request);
    if request.kind.kind != "Pod" {
        return warn(
            allowed,
            format!("outrigger injects pods, not {}", request.kind.kind),
        );
    }
    let Some(object) = &request.object else {
        return warn(allowed, "no pod in the request".into());
    };
    let pod: Pod = match serde_json::to_value(object).and_then(serde_json::from_value) {
        Ok(pod) => pod,
        Err(err) => return warn(allowed, format!("cannot read the pod: {err}")),
    };
    let namespace = request
        .namespace
        .clone()
        .or_else(|| pod.metadata.namespace.clone())
        .unwrap_or_default();
    let name = pod
        .metadata
        .name
        .clone()
        .or_else(|| pod.metadata.generate_name.clone())
        .unwrap_or_default();
    match decide(&pod, &namespace, config) {
        Decision::Skip(reason) => {
            tracing::debug!(pod = %name, namespace, reason, "not injected");
            allowed
        }
        Decision::Inject(ops) => match allowed.clone().with_patch(json_patch::Patch(ops)) {
            Ok(patched) => {
                tracing::info!(pod = %name, namespace, "sidecar injected");
                patched
            }
            Err(err) => warn(allowed, format!("cannot serialize the patch: {err}")),
        },
    }
}

fn warn(mut response: AdmissionResponse, message: String) -> AdmissionResponse {
    tracing::warn!(message, "admitted without injection");
    response.warnings = Some(vec![format!("outrigger: not injected: {message}")]);
    response
}

pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    config: Arc<InjectConfig>,
    stop: CancellationToken,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let accept = AcceptConfig {
        name: "webhook",
        max_connections: WEBHOOK_MAX_CONNECTIONS,
    };
    let on_stop = stop.clone();
    accept_loop(
        listener,
        accept,
        stop,
        TaskTracker::new(),
        || tracing::warn!("webhook connection refused: too many open"),
        |stream, _| {
            let (acceptor, config, stop) = (acceptor.clone(), config.clone(), on_stop.clone());
            async move {
                let Ok(Ok(stream)) =
                    tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await
                else {
                    return;
                };
                let service = service_fn(move |request| {
                    let config = config.clone();
                    async move { Ok::<_, Infallible>(handle(request, &config).await) }
                });
                let builder = auto::Builder::new(TokioExecutor::new());
                tokio::select! {
                    _ = builder.serve_connection(TokioIo::new(stream), service) => {}
                    _ = stop.cancelled() => {}
                }
            }
        },
    )
    .await;
}

/// Connections from API servers the webhook serves at once.
const WEBHOOK_MAX_CONNECTIONS: usize = 1024;

async fn handle(request: Request<Incoming>, config: &InjectConfig) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, content_type: &'static str, body: Vec<u8>| {
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static(content_type),
        );
        response
    };
    if request.method() != Method::POST || request.uri().path() != "/inject" {
        return reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            b"POST /inject\n".to_vec(),
        );
    }
    let body = match Limited::new(request.into_body(), MAX_REVIEW_BYTES)
        .collect()
        .await
    {
        Ok(body) => body.to_bytes(),
        Err(_) => {
            return reply(
                StatusCode::PAYLOAD_TOO_LARGE,
                "text/plain",
                b"AdmissionReview too large\n".to_vec(),
            )
        }
    };
    match review(&body, config) {
        Ok(json) => reply(StatusCode::OK, "application/json", json),
        Err(message) => reply(
            StatusCode::BAD_REQUEST,
            "application/json",
            serde_json::json!({"error": message})
                .to_string()
                .into_bytes(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    const DEPLOYMENT_POD: &str = include_str!("../../tests/fixtures/admission-deployment-pod.json");

    fn config(native: bool) -> InjectConfig {
        InjectConfig {
            proxy_image: "outrigger/proxy:0.1.0".into(),
            control_plane_url: Some("https://outrigger-policy.outrigger-system.svc:8090".into()),
            control_ca_pem: Some(
                "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n".into(),
            ),
            native_sidecar: native,
            proxy_uid: outrigger_api::sidecar::PROXY_UID.into(),
            operator_namespace: "outrigger-system".into(),
            defaults: crate::webhook::inject::ProxyDefaults::default(),
        }
    }

    /// Runs the review and applies the returned patch to the pod, as the API
    /// server would. Returns (response, patched pod).
    fn admit(review_json: &Value, config: &InjectConfig) -> (Value, Value) {
        let out = review(&serde_json::to_vec(review_json).unwrap(), config).unwrap();
        let out: Value = serde_json::from_slice(&out).unwrap();
        let response = out["response"].clone();
        assert_eq!(response["uid"], review_json["request"]["uid"]);
        assert_eq!(response["allowed"], true);
        let mut pod = review_json["request"]["object"].clone();
        // kube serializes the patch bytes as a JSON array of numbers, which
        // the API server (Go's []byte) accepts as well as base64.
        if let Some(bytes) = response["patch"].as_array() {
            let bytes: Vec<u8> = bytes.iter().map(|b| b.as_u64().unwrap() as u8).collect();
            let ops: json_patch::Patch = serde_json::from_slice(&bytes).unwrap();
            json_patch::patch(&mut pod, &ops).unwrap();
        }
        (response, pod)
    }

    fn with_pod(pod: Value) -> Value {
        let mut review: Value = serde_json::from_str(DEPLOYMENT_POD).unwrap();
        review["request"]["object"] = pod;
        review
    }

    #[test]
    fn deployment_pod_gets_native_sidecar_and_redirect() {
        let review: Value = serde_json::from_str(DEPLOYMENT_POD).unwrap();
        let (response, pod) = admit(&review, &config(true));
        assert_eq!(response["patchType"], "JSONPatch");
        let init = pod["spec"]["initContainers"].as_array().unwrap();
        assert_eq!(init[0]["name"], "outrigger-init");
        assert!(init[0]["args"]
            .as_array()
            .unwrap()
            .contains(&json!("--skip-outbound-ports=5432")));
        assert_eq!(
            init[0]["securityContext"]["capabilities"]["add"],
            json!(["NET_ADMIN", "NET_RAW"])
        );
        let proxy = &init[1];
        assert_eq!(proxy["name"], "outrigger-proxy");
        assert_eq!(proxy["restartPolicy"], "Always");
        assert_eq!(proxy["startupProbe"]["httpGet"]["path"], "/ready");
        assert_eq!(proxy["securityContext"]["runAsUser"], 2102);
        assert_eq!(proxy["securityContext"]["readOnlyRootFilesystem"], true);
        assert_eq!(
            proxy["securityContext"]["capabilities"]["drop"],
            json!(["ALL"])
        );
        assert_eq!(proxy["resources"]["limits"]["memory"], "96Mi");
        let env = proxy["env"].as_array().unwrap();
        let var = |name: &str| env.iter().find(|e| e["name"] == name).cloned();
        assert_eq!(
            var("OUTRIGGER_CONTROL_PLANE").unwrap()["value"],
            "https://outrigger-policy.outrigger-system.svc:8090"
        );
        assert_eq!(
            var("POD_NAME").unwrap()["valueFrom"]["fieldRef"]["fieldPath"],
            "metadata.name"
        );
        assert!(var("OUTRIGGER_CONTROL_CA_PEM").is_some());
        // The app container is untouched; token and state volumes added.
        assert_eq!(pod["spec"]["containers"].as_array().unwrap().len(), 1);
        let volumes = pod["spec"]["volumes"].as_array().unwrap();
        assert_eq!(
            volumes[0]["projected"]["sources"][0]["serviceAccountToken"]["audience"],
            "outrigger"
        );
        assert!(pod["metadata"]["annotations"]["outrigger.dev/injected"].is_string());
        assert_eq!(
            pod["metadata"]["annotations"]["outrigger.dev/skip-outbound-ports"],
            "5432"
        );

        // Admitting the result again changes nothing: never injected twice.
        let (again, _) = admit(&with_pod(pod), &config(true));
        assert!(again.get("patch").is_none_or(Value::is_null), "{again}");
    }

    #[test]
    fn tracing_settings_reach_the_proxy_only_when_an_endpoint_is_set() {
        let review: Value = serde_json::from_str(DEPLOYMENT_POD).unwrap();
        let env_of = |config: &InjectConfig| {
            let (_, pod) = admit(&review, config);
            pod["spec"]["initContainers"][1]["env"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|e| e["name"].as_str().unwrap().starts_with("OUTRIGGER_TRACE_"))
                .map(|e| (e["name"].as_str().unwrap().to_string(), e["value"].clone()))
                .collect::<Vec<_>>()
        };
        assert!(env_of(&config(true)).is_empty());
        let mut traced = config(true);
        traced.defaults.trace_otlp_endpoint = Some("http://collector.obs:4317".into());
        traced.defaults.trace_sampling = Some("0.25".into());
        assert_eq!(
            env_of(&traced),
            [
                (
                    "OUTRIGGER_TRACE_OTLP_ENDPOINT".to_string(),
                    json!("http://collector.obs:4317")
                ),
                ("OUTRIGGER_TRACE_SAMPLING".to_string(), json!("0.25")),
            ]
        );
    }

    #[test]
    fn job_pod_without_native_sidecars_gets_a_first_container_with_a_wait_hook() {
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"generateName": "migrate-", "namespace": "shop",
                         "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": "migrate", "uid": "j1"}]},
            "spec": {"restartPolicy": "Never",
                     "initContainers": [{"name": "wait-db", "image": "busybox"}],
                     "volumes": [{"name": "data", "emptyDir": {}}],
                     "containers": [{"name": "migrate", "image": "shop/migrate:2"}]}
        });
        let (_, patched) = admit(&with_pod(pod), &config(false));
        let containers = patched["spec"]["containers"].as_array().unwrap();
        assert_eq!(containers[0]["name"], "outrigger-proxy");
        assert_eq!(
            containers[0]["lifecycle"]["postStart"]["exec"]["command"][1],
            "wait-ready"
        );
        assert_eq!(containers[1]["name"], "migrate");
        let init = patched["spec"]["initContainers"].as_array().unwrap();
        assert_eq!(init[0]["name"], "outrigger-init");
        assert_eq!(
            init[1]["name"], "wait-db",
            "existing init containers keep their order"
        );
        assert_eq!(patched["spec"]["volumes"].as_array().unwrap().len(), 3);
    }

    #[test]
    fn opted_out_host_network_and_operator_pods_are_left_alone() {
        let base = |metadata: Value, spec_extra: Value| {
            let mut spec = json!({"containers": [{"name": "app", "image": "app"}]});
            spec.as_object_mut()
                .unwrap()
                .extend(spec_extra.as_object().unwrap().clone());
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec})
        };
        for pod in [
            base(
                json!({"name": "a", "annotations": {"outrigger.dev/inject": "disabled"}}),
                json!({}),
            ),
            base(json!({"name": "b"}), json!({"hostNetwork": true})),
            base(
                json!({"name": "c", "annotations": {"outrigger.dev/injected": "x"}}),
                json!({}),
            ),
            // Found by fuzzing: no containers (here a misspelt key) made a
            // patch that cannot apply.
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "d"},
                   "spec": {"containerz": [{"name": "app", "image": "app"}]}}),
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "e"}}),
            json!({"apiVersion": "v1", "kind": "Pod",
                   "spec": {"containers": [{"name": "app", "image": "app"}]}}),
        ] {
            for native in [true, false] {
                let (response, patched) = admit(&with_pod(pod.clone()), &config(native));
                assert!(
                    response.get("patch").is_none_or(Value::is_null),
                    "{response}"
                );
                assert_eq!(patched, pod);
            }
        }
        let mut review = with_pod(base(json!({"name": "op"}), json!({})));
        review["request"]["namespace"] = json!("outrigger-system");
        let (response, _) = admit(&review, &config(true));
        assert!(response.get("patch").is_none_or(Value::is_null));
    }

    proptest::proptest! {
        /// Fuzzing the handler: arbitrary annotations, names and shapes of
        /// pods, and arbitrary bytes, never panic; every parseable review gets
        /// an allowed answer with its own uid.
        #[test]
        fn arbitrary_reviews_never_panic(
            key in "[a-z./-]{0,40}",
            value in "[ -~]{0,40}",
            host_network in proptest::option::of(proptest::bool::ANY),
            containers in 0usize..3,
            native in proptest::bool::ANY,
            garbage in proptest::collection::vec(proptest::num::u8::ANY, 0..256),
        ) {
            let pod = json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"generateName": "x-", "annotations": {key: value}},
                "spec": {"hostNetwork": host_network,
                         "containers": (0..containers).map(|i| json!({"name": format!("c{i}"), "image": "i"})).collect::<Vec<_>>()}
            });
            let review_json = with_pod(pod);
            let out = review(&serde_json::to_vec(&review_json).unwrap(), &config(native)).unwrap();
            let out: Value = serde_json::from_slice(&out).unwrap();
            proptest::prop_assert_eq!(&out["response"]["allowed"], &json!(true));
            proptest::prop_assert_eq!(&out["response"]["uid"], &review_json["request"]["uid"]);
            let _ = review(&garbage, &config(native));
        }
    }

    #[test]
    fn bad_annotations_and_bad_reviews_get_clear_answers() {
        let pod = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "x", "annotations": {"outrigger.dev/skip-inbound-ports": "22,ssh"}},
            "spec": {"containers": [{"name": "app", "image": "app"}]}});
        // Decided per pod: allowed, not injected, and told why.
        let config = config(true);
        let out: Value = serde_json::from_slice(
            &review(&serde_json::to_vec(&with_pod(pod)).unwrap(), &config).unwrap(),
        )
        .unwrap();
        assert_eq!(out["response"]["allowed"], true);
        // A warning only when something is wrong with the request itself.
        let err = review(b"{\"kind\": \"AdmissionReview\"}", &config).unwrap_err();
        assert!(err.contains("AdmissionReview"), "{err}");
        let mut other: Value = serde_json::from_str(DEPLOYMENT_POD).unwrap();
        other["kind"] = json!("AdmissionRevie#");
        let err = review(&serde_json::to_vec(&other).unwrap(), &config).unwrap_err();
        assert!(err.contains("expected kind AdmissionReview"), "{err}");
        other["kind"] = json!("AdmissionReview");
        other["apiVersion"] = json!("admission.k8s.io/v1beta1");
        let err = review(&serde_json::to_vec(&other).unwrap(), &config).unwrap_err();
        assert!(err.contains("admission.k8s.io/v1"), "{err}");
        let err = review(b"not json", &config).unwrap_err();
        assert!(err.contains("not an AdmissionReview"), "{err}");
    }
}
