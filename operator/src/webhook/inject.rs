//! What the injection webhook does to a pod: pure, so every case is a unit
//! test. The patch adds the redirect init container, the proxy (a native
//! sidecar: an init container with `restartPolicy: Always` and a startup probe,
//! so the app starts after the proxy is ready and Jobs still complete), a
//! projected service-account token for the control plane, and a marker
//! annotation so a pod is never injected twice.

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, PatchOperation};
use k8s_openapi::api::core::v1::Pod;
use serde_json::{json, Value};

use outrigger_api::sidecar::annotations::{
    INJECT as INJECT_ANNOTATION, INJECTED as INJECTED_ANNOTATION, OPAQUE_PORTS,
    PROXY_CPU_REQUEST as CPU_REQUEST, PROXY_LOG_LEVEL as LOG_LEVEL,
    PROXY_MEMORY_LIMIT as MEMORY_LIMIT, PROXY_MEMORY_REQUEST as MEMORY_REQUEST,
    SKIP_INBOUND_PORTS as SKIP_INBOUND, SKIP_OUTBOUND_CIDRS as SKIP_CIDRS,
    SKIP_OUTBOUND_PORTS as SKIP_OUTBOUND,
};
use outrigger_api::sidecar::{
    self, env, ADMIN_PORT, INBOUND_PORT, INIT_CONTAINER, OUTBOUND_PORT, PROXY_CONTAINER,
};

#[derive(Debug, Clone)]
pub struct InjectConfig {
    pub proxy_image: String,
    pub control_plane_url: Option<String>,
    /// The control plane's CA (PEM), handed to the proxy to pin.
    pub control_ca_pem: Option<String>,
    pub native_sidecar: bool,
    pub proxy_uid: i64,
    /// The operator's own namespace: its pods are never injected.
    pub operator_namespace: String,
    pub defaults: ProxyDefaults,
}

/// Resources and log level of injected proxies unless a pod's annotations say
/// otherwise.
#[derive(Debug, Clone)]
pub struct ProxyDefaults {
    pub cpu_request: String,
    pub memory_request: String,
    pub memory_limit: String,
    pub cpu_limit: Option<String>,
    pub log_level: String,
    /// OTLP endpoint and sampling ratio for request tracing (unset: off).
    pub trace_otlp_endpoint: Option<String>,
    pub trace_sampling: Option<String>,
}

impl Default for ProxyDefaults {
    fn default() -> Self {
        ProxyDefaults {
            cpu_request: "10m".into(),
            memory_request: "16Mi".into(),
            memory_limit: "64Mi".into(),
            cpu_limit: None,
            log_level: "info".into(),
            trace_otlp_endpoint: None,
            trace_sampling: None,
        }
    }
}

#[derive(Debug, PartialEq)]
pub enum Decision {
    Inject(Vec<PatchOperation>),
    Skip(String),
}

fn annotation<'a>(pod: &'a Pod, key: &str) -> Option<&'a str> {
    pod.metadata
        .annotations
        .as_ref()?
        .get(key)
        .map(String::as_str)
}

/// Validates a comma-separated port list from an annotation.
fn ports(pod: &Pod, key: &str) -> Result<Option<String>, String> {
    let Some(value) = annotation(pod, key) else {
        return Ok(None);
    };
    for part in value.split(',').map(str::trim) {
        if part.parse::<u16>().map_or(true, |p| p == 0) {
            return Err(format!("annotation {key}: {part:?} is not a port"));
        }
    }
    Ok(Some(value.replace(' ', "")))
}

pub fn decide(pod: &Pod, namespace: &str, config: &InjectConfig) -> Decision {
    if namespace == config.operator_namespace {
        return Decision::Skip(format!(
            "pods in {namespace} (the operator's namespace) are not injected"
        ));
    }
    if annotation(pod, INJECT_ANNOTATION) == Some("disabled") {
        return Decision::Skip(format!("annotation {INJECT_ANNOTATION}: disabled"));
    }
    let spec = pod.spec.clone().unwrap_or_default();
    let names = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .map(|c| c.name.as_str());
    if annotation(pod, INJECTED_ANNOTATION).is_some() || names.clone().any(|n| n == PROXY_CONTAINER)
    {
        return Decision::Skip("already injected".into());
    }
    // Found by fuzzing: without containers (or a spec) the patch paths do not
    // exist and the API server would fail the whole request on our patch. Such
    // a pod is invalid anyway; let the API server say why.
    if pod.spec.is_none() || spec.containers.is_empty() {
        return Decision::Skip("the pod has no containers; nothing to inject".into());
    }
    // Likewise without metadata (a pod always has a name or generateName).
    if pod.metadata.name.is_none() && pod.metadata.generate_name.is_none() {
        return Decision::Skip("the pod has no name or generateName; not injected".into());
    }
    if spec.host_network == Some(true) {
        return Decision::Skip("hostNetwork pods share the node's network; not injected".into());
    }
    match patch(pod, namespace, config) {
        Ok(ops) => Decision::Inject(ops),
        Err(reason) => Decision::Skip(reason),
    }
}

fn add(path: &str, value: Value) -> PatchOperation {
    PatchOperation::Add(AddOperation {
        path: PointerBuf::parse(path).expect("static JSON pointers are valid"),
        value,
    })
}

fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

fn patch(pod: &Pod, namespace: &str, config: &InjectConfig) -> Result<Vec<PatchOperation>, String> {
    let skip_inbound = ports(pod, SKIP_INBOUND)?;
    let skip_outbound = ports(pod, SKIP_OUTBOUND)?;
    let opaque = ports(pod, OPAQUE_PORTS)?;
    let mut init_args = vec![
        "init".to_string(),
        format!("--proxy-uid={}", config.proxy_uid),
    ];
    if let Some(p) = &skip_inbound {
        init_args.push(format!("--skip-inbound-ports={p}"));
    }
    if let Some(p) = &skip_outbound {
        init_args.push(format!("--skip-outbound-ports={p}"));
    }
    if let Some(cidrs) = annotation(pod, SKIP_CIDRS) {
        init_args.push(format!("--skip-outbound-cidrs={}", cidrs.replace(' ', "")));
    }
    let init = json!({
        "name": INIT_CONTAINER,
        "image": config.proxy_image,
        "args": init_args,
        "securityContext": {
            // Only this short-lived container may change the pod's network.
            "runAsUser": 0, "runAsNonRoot": false, "allowPrivilegeEscalation": false,
            "readOnlyRootFilesystem": true,
            "capabilities": {"add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"]}
        },
        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"memory": "32Mi"}}
    });

    let mut env = vec![
        json!({"name": env::POD_NAME, "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}),
        json!({"name": env::NAMESPACE, "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}),
        json!({"name": env::POD_IP, "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}),
        json!({"name": env::OUTBOUND_MODE, "value": "transparent"}),
        json!({"name": env::INBOUND_ADDR, "value": format!("0.0.0.0:{INBOUND_PORT}")}),
        json!({"name": env::OUTBOUND_ADDR, "value": format!("127.0.0.1:{OUTBOUND_PORT}")}),
        json!({"name": env::ADMIN_ADDR, "value": format!("0.0.0.0:{ADMIN_PORT}")}),
        json!({"name": env::LOG_FORMAT, "value": "json"}),
        json!({"name": env::LOG, "value": annotation(pod, LOG_LEVEL).unwrap_or(&config.defaults.log_level)}),
        json!({"name": env::STATE_DIR, "value": sidecar::STATE_DIR}),
        json!({"name": env::CONTROL_TOKEN_FILE, "value": sidecar::TOKEN_FILE}),
    ];
    if let Some(url) = &config.control_plane_url {
        env.push(json!({"name": env::CONTROL_PLANE, "value": url}));
    }
    if let Some(ca) = &config.control_ca_pem {
        env.push(json!({"name": env::CONTROL_CA_PEM, "value": ca}));
    }
    if let Some(p) = &opaque {
        env.push(json!({"name": env::OPAQUE_PORTS, "value": p}));
    }
    if let Some(endpoint) = &config.defaults.trace_otlp_endpoint {
        env.push(json!({"name": env::TRACE_OTLP_ENDPOINT, "value": endpoint}));
        if let Some(sampling) = &config.defaults.trace_sampling {
            env.push(json!({"name": env::TRACE_SAMPLING, "value": sampling}));
        }
    }
    let mut proxy = json!({
        "name": PROXY_CONTAINER,
        "image": config.proxy_image,
        "env": env,
        "ports": [
            {"name": "outrigger-in", "containerPort": INBOUND_PORT},
            {"name": "outrigger-admin", "containerPort": ADMIN_PORT}
        ],
        "securityContext": {
            "runAsUser": config.proxy_uid, "runAsGroup": config.proxy_uid, "runAsNonRoot": true,
            "allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
            "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}
        },
        "resources": {
            "requests": {
                "cpu": annotation(pod, CPU_REQUEST).unwrap_or(&config.defaults.cpu_request),
                "memory": annotation(pod, MEMORY_REQUEST).unwrap_or(&config.defaults.memory_request)
            },
            "limits": {"memory": annotation(pod, MEMORY_LIMIT).unwrap_or(&config.defaults.memory_limit)}
        },
        "livenessProbe": {"httpGet": {"path": "/live", "port": ADMIN_PORT}, "periodSeconds": 10},
        "readinessProbe": {"httpGet": {"path": "/ready", "port": ADMIN_PORT}, "periodSeconds": 5},
        "volumeMounts": [
            {"name": "outrigger-token", "mountPath": sidecar::TOKEN_DIR, "readOnly": true},
            {"name": "outrigger-state", "mountPath": sidecar::STATE_DIR}
        ]
    });
    if let Some(cpu) = &config.defaults.cpu_limit {
        proxy["resources"]["limits"]["cpu"] = json!(cpu);
    }
    let spec = pod.spec.clone().unwrap_or_default();
    let mut ops = Vec::new();
    if spec.init_containers.as_ref().is_none_or(|c| c.is_empty()) {
        ops.push(add("/spec/initContainers", json!([])));
    }
    // The redirect goes first, before any other init container talks.
    ops.push(add("/spec/initContainers/0", init));
    if config.native_sidecar {
        proxy["restartPolicy"] = json!("Always");
        proxy["startupProbe"] = json!({
            "httpGet": {"path": "/ready", "port": ADMIN_PORT},
            "periodSeconds": 1, "failureThreshold": 60
        });
        // Right after the redirect: later init containers already go through it.
        ops.push(add("/spec/initContainers/1", proxy));
    } else {
        // Without native sidecars: first container, and the app's start waits
        // on this hook. Jobs must POST /shutdown (loopback) when done.
        proxy["lifecycle"] = json!({
            "postStart": {"exec": {"command": ["outrigger-proxy", "wait-ready", "--timeout=60s"]}}
        });
        ops.push(add("/spec/containers/0", proxy));
    }
    if spec.volumes.as_ref().is_none_or(|v| v.is_empty()) {
        ops.push(add("/spec/volumes", json!([])));
    }
    ops.push(add(
        "/spec/volumes/-",
        json!({"name": "outrigger-token", "projected": {"sources": [{"serviceAccountToken": {
            "audience": sidecar::TOKEN_AUDIENCE, "expirationSeconds": 3600, "path": "token"}}]}}),
    ));
    ops.push(add(
        "/spec/volumes/-",
        json!({"name": "outrigger-state", "emptyDir": {"medium": "Memory", "sizeLimit": "8Mi"}}),
    ));
    if pod.metadata.annotations.is_none() {
        ops.push(add("/metadata/annotations", json!({})));
    }
    ops.push(add(
        &format!("/metadata/annotations/{}", escape(INJECTED_ANNOTATION)),
        json!(format!("{namespace}/{}", config.proxy_image)),
    ));
    Ok(ops)
}
