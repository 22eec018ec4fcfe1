//! A real Prometheus server for tests: its own directory, a free loopback
//! port, stopped and its data removed on drop; and the translation of the
//! chart's ServiceMonitor and PodMonitor into the scrape configuration the
//! Prometheus Operator would generate from them (Kubernetes service
//! discovery, the same ports, paths, intervals and target labels), so that a
//! change to the chart's monitors changes what the tests scrape.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub struct Prometheus {
    child: Child,
    pub dir: PathBuf,
    pub url: String,
}

impl Prometheus {
    /// Starts `prometheus` with `config` (written as JSON, which is YAML) and
    /// waits until it is ready.
    pub fn start(dir: &Path, config: &Value) -> Prometheus {
        outrigger_e2e::require_tool("prometheus");
        std::fs::create_dir_all(dir.join("data")).unwrap();
        let file = dir.join("prometheus.yml");
        std::fs::write(&file, serde_json::to_string_pretty(config).unwrap()).unwrap();
        let check = Command::new("promtool")
            .args(["check", "config"])
            .arg(&file)
            .output()
            .expect("promtool runs");
        assert!(
            check.status.success(),
            "promtool check config: {}{}",
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );
        let port = outrigger_e2e::free_port();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", file.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--storage.tsdb.retention.time=1h")
            .arg("--log.level=info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("prometheus.log")).unwrap())
            .spawn()
            .expect("prometheus starts");
        let prometheus = Prometheus {
            child,
            dir: dir.to_path_buf(),
            url: format!("http://127.0.0.1:{port}"),
        };
        prometheus.wait(Duration::from_secs(30), "prometheus ready", || {
            let out = Command::new("curl")
                .args(["-sf", "--max-time", "2"])
                .arg(format!("{}/-/ready", prometheus.url))
                .output()
                .ok()?;
            out.status.success().then_some(())
        });
        prometheus
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }

    /// Polls `f` every 250 ms until Some, for at most `limit`; the failure
    /// shows Prometheus's log.
    pub fn wait<T>(&self, limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(v) = f() {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not within {limit:?}; prometheus log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// GET `path` of the HTTP API with `params` (URL-encoded): the `data`.
    pub fn api(&self, path: &str, params: &[(&str, &str)]) -> Value {
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "--max-time", "10", "-G"]);
        for (k, v) in params {
            cmd.arg("--data-urlencode").arg(format!("{k}={v}"));
        }
        let out = cmd
            .arg(format!("{}{path}", self.url))
            .output()
            .expect("curl runs");
        let body: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "{path} {params:?}: {e}: {}",
                String::from_utf8_lossy(&out.stdout)
            )
        });
        assert_eq!(body["status"], "success", "{path} {params:?}: {body}");
        body["data"].clone()
    }

    /// An instant query (now, or at Unix time `at`): the result's samples.
    pub fn query_at(&self, expr: &str, at: Option<f64>) -> Vec<Value> {
        let at = at.map(|t| format!("{t:.3}"));
        let mut params = vec![("query", expr)];
        if let Some(t) = &at {
            params.push(("time", t));
        }
        let data = self.api("/api/v1/query", &params);
        assert_eq!(data["resultType"], "vector", "{expr}: {data}");
        data["result"].as_array().cloned().unwrap_or_default()
    }

    pub fn query(&self, expr: &str) -> Vec<Value> {
        self.query_at(expr, None)
    }

    /// The value of a query that yields one sample; None when it yields none.
    pub fn value(&self, expr: &str) -> Option<f64> {
        let result = self.query(expr);
        assert!(
            result.len() <= 1,
            "{expr}: more than one sample: {result:?}"
        );
        sample_value(result.first()?)
    }
}

pub fn sample_value(sample: &Value) -> Option<f64> {
    sample["value"][1].as_str()?.parse().ok()
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The TSDB goes; the config and log stay with the test's files.
        let _ = std::fs::remove_dir_all(self.dir.join("data"));
    }
}

/// The chart rendered by `helm template` with `values` (`--set` pairs),
/// each document as JSON.
pub fn render_chart(helm: &Path, namespace: &str, values: &[&str]) -> Vec<Value> {
    let chart = outrigger_e2e::workspace_root().join("charts/outrigger");
    let mut cmd = Command::new(helm);
    cmd.args(["template", "outrigger", chart.to_str().unwrap()])
        .args(["--namespace", namespace]);
    for v in values {
        cmd.args(["--set", v]);
    }
    let out = cmd.output().expect("helm runs");
    assert!(
        out.status.success(),
        "helm template: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    text.split("\n---")
        .filter_map(|doc| serde_yaml::from_str::<Value>(doc).ok())
        .filter(|doc| doc.is_object())
        .collect()
}

/// The one document of `kind` (and, when given, named `name`).
pub fn document<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let found: Vec<&Value> = docs.iter().filter(|d| d["kind"] == kind).collect();
    assert_eq!(found.len(), 1, "one {kind} in the rendered chart");
    found[0]
}

/// A Kubernetes label name as a Prometheus meta label suffix.
fn sanitize(label: &str) -> String {
    label
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// The monitor fields this translation understands; any other field fails
/// the test, so a chart change the translation would ignore is noticed.
fn only_fields(what: &str, object: &Value, known: &[&str]) {
    for key in object.as_object().unwrap().keys() {
        assert!(
            known.contains(&key.as_str()),
            "{what}.{key}: not translated by tests/node/tests/common/prometheus.rs; teach it"
        );
    }
}

/// `namespaceSelector`: the namespaces to discover in (None: all).
fn namespaces(selector: &Value) -> Option<Vec<String>> {
    only_fields("namespaceSelector", selector, &["any", "matchNames"]);
    match selector["matchNames"].as_array() {
        Some(names) => Some(
            names
                .iter()
                .map(|n| n.as_str().unwrap().to_string())
                .collect(),
        ),
        None => {
            assert_eq!(selector["any"], true, "namespaceSelector: {selector}");
            None
        }
    }
}

/// `selector.matchLabels` as keep rules on the object's labels (`role`:
/// pod or service).
fn selector_rules(role: &str, selector: &Value) -> Vec<Value> {
    only_fields("selector", selector, &["matchLabels"]);
    let mut rules = Vec::new();
    for (k, v) in selector["matchLabels"].as_object().into_iter().flatten() {
        let k = sanitize(k);
        rules.push(json!({
            "action": "keep",
            "source_labels": [
                format!("__meta_kubernetes_{role}_label_{k}"),
                format!("__meta_kubernetes_{role}_labelpresent_{k}"),
            ],
            "regex": format!("({});true", v.as_str().unwrap()),
        }));
    }
    rules
}

fn replace(source: &str, target: &str) -> Value {
    json!({"source_labels": [source], "target_label": target})
}

/// Which Kubernetes objects a job's targets come from.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Role {
    Pod,
    EndpointSlice,
}

/// A scrape job and what its discovery looks at.
pub struct Job {
    pub config: Value,
    pub role: Role,
    pub namespaces: Option<Vec<String>>,
    /// The file_sd file the discovery writes for it.
    pub file: PathBuf,
}

/// A job for one endpoint of a monitor: interval, timeout, path, scheme, the
/// relabelling, and its targets from `dir/<n>.json`.
fn job(
    name: String,
    endpoint: &Value,
    rules: Vec<Value>,
    role: Role,
    namespaces: Option<Vec<String>>,
    dir: &Path,
) -> Job {
    let file = dir.join(format!("{}.json", sanitize(&name)));
    Job {
        config: json!({
            "job_name": name,
            "scrape_interval": endpoint["interval"],
            "scrape_timeout": endpoint["scrapeTimeout"],
            "metrics_path": endpoint["path"],
            "scheme": endpoint["scheme"],
            "file_sd_configs": [{"files": [file], "refresh_interval": "1s"}],
            "relabel_configs": rules,
        }),
        role,
        namespaces,
        file,
    }
}

/// The scrape jobs of a PodMonitor, as the Prometheus Operator generates
/// them: pods of the selected namespaces with the selected labels, the named
/// container port, pods that ended dropped; target labels namespace, pod,
/// container, endpoint, and job `<namespace>/<monitor name>`.
pub fn pod_monitor_jobs(monitor: &Value, dir: &Path) -> Vec<Job> {
    let spec = &monitor["spec"];
    only_fields(
        "PodMonitor.spec",
        spec,
        &["namespaceSelector", "selector", "podMetricsEndpoints"],
    );
    let (ns, name) = (
        monitor["metadata"]["namespace"].as_str().unwrap(),
        monitor["metadata"]["name"].as_str().unwrap(),
    );
    let endpoints = spec["podMetricsEndpoints"].as_array().unwrap();
    endpoints
        .iter()
        .enumerate()
        .map(|(i, endpoint)| {
            only_fields(
                "podMetricsEndpoints[]",
                endpoint,
                &["port", "path", "scheme", "interval", "scrapeTimeout"],
            );
            let port = endpoint["port"].as_str().unwrap();
            let mut rules = vec![json!({
                "action": "drop",
                "source_labels": ["__meta_kubernetes_pod_phase"],
                "regex": "(Failed|Succeeded)",
            })];
            rules.extend(selector_rules("pod", &spec["selector"]));
            rules.push(json!({
                "action": "keep",
                "source_labels": ["__meta_kubernetes_pod_container_port_name"],
                "regex": port,
            }));
            rules.push(replace("__meta_kubernetes_namespace", "namespace"));
            rules.push(replace("__meta_kubernetes_pod_container_name", "container"));
            rules.push(replace("__meta_kubernetes_pod_name", "pod"));
            rules.push(json!({"target_label": "job", "replacement": format!("{ns}/{name}")}));
            rules.push(json!({"target_label": "endpoint", "replacement": port}));
            job(
                format!("podMonitor/{ns}/{name}/{i}"),
                endpoint,
                rules,
                Role::Pod,
                namespaces(&spec["namespaceSelector"]),
                dir,
            )
        })
        .collect()
}

/// The scrape jobs of a ServiceMonitor, as the Prometheus Operator generates
/// them (EndpointSlice discovery): endpoints of the selected Services, the
/// named Service port; target labels namespace, service, pod, container,
/// endpoint, and job the Service's name.
pub fn service_monitor_jobs(monitor: &Value, dir: &Path) -> Vec<Job> {
    let spec = &monitor["spec"];
    only_fields(
        "ServiceMonitor.spec",
        spec,
        &["namespaceSelector", "selector", "endpoints"],
    );
    let (ns, name) = (
        monitor["metadata"]["namespace"].as_str().unwrap(),
        monitor["metadata"]["name"].as_str().unwrap(),
    );
    spec["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(i, endpoint)| {
            only_fields(
                "endpoints[]",
                endpoint,
                &["port", "path", "scheme", "interval", "scrapeTimeout"],
            );
            let port = endpoint["port"].as_str().unwrap();
            let mut rules = selector_rules("service", &spec["selector"]);
            rules.push(json!({
                "action": "keep",
                "source_labels": ["__meta_kubernetes_endpointslice_port_name"],
                "regex": port,
            }));
            rules.push(replace("__meta_kubernetes_namespace", "namespace"));
            rules.push(replace("__meta_kubernetes_service_name", "service"));
            rules.push(replace("__meta_kubernetes_pod_name", "pod"));
            rules.push(replace("__meta_kubernetes_pod_container_name", "container"));
            rules.push(replace("__meta_kubernetes_service_name", "job"));
            rules.push(json!({"target_label": "endpoint", "replacement": port}));
            job(
                format!("serviceMonitor/{ns}/{name}/{i}"),
                endpoint,
                rules,
                Role::EndpointSlice,
                namespaces(&spec["namespaceSelector"]),
                dir,
            )
        })
        .collect()
}

/// Kubernetes service discovery done by the test, because Debian's
/// Prometheus is built without it (its kubernetes_sd_configs are compiled
/// out): a thread lists pods, Services and EndpointSlices from the API
/// server every half second and writes each job's targets to its file_sd
/// file with the `__meta_kubernetes_*` labels Prometheus's own `pod` and
/// `endpointslice` roles give, so the monitors' relabelling runs unchanged
/// in the real Prometheus. Stops when dropped.
pub struct Discovery {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// What the discovery needs of a job.
struct Watched {
    role: Role,
    namespaces: Option<Vec<String>>,
    file: PathBuf,
}

impl Discovery {
    pub fn start(kubectl: &Path, kubeconfig: &Path, jobs: &[Job]) -> Discovery {
        let watched: Vec<Watched> = jobs
            .iter()
            .map(|j| Watched {
                role: j.role,
                namespaces: j.namespaces.clone(),
                file: j.file.clone(),
            })
            .collect();
        let list = {
            let (kubectl, kubeconfig) = (kubectl.to_path_buf(), kubeconfig.to_path_buf());
            move |what: &str| -> Option<Vec<Value>> {
                let out = Command::new(&kubectl)
                    .env("KUBECONFIG", &kubeconfig)
                    .args(["--request-timeout=5s", "get", "-A", "-o", "json", what])
                    .stdin(Stdio::null())
                    .output()
                    .ok()?;
                let list: Value = serde_json::from_slice(&out.stdout).ok()?;
                list["items"].as_array().cloned()
            }
        };
        let refresh = move |written: &mut Vec<String>| {
            let (Some(pods), Some(services), Some(slices)) =
                (list("pods"), list("services"), list("endpointslices"))
            else {
                return;
            };
            for (i, job) in watched.iter().enumerate() {
                let wanted = |ns: &Value| {
                    job.namespaces
                        .as_ref()
                        .is_none_or(|names| names.iter().any(|n| ns == n.as_str()))
                };
                let groups: Vec<Value> = match job.role {
                    Role::Pod => pods
                        .iter()
                        .filter(|p| wanted(&p["metadata"]["namespace"]))
                        .flat_map(pod_targets)
                        .collect(),
                    Role::EndpointSlice => slices
                        .iter()
                        .filter(|s| wanted(&s["metadata"]["namespace"]))
                        .flat_map(|s| slice_targets(s, &services, &pods))
                        .collect(),
                };
                let text = serde_json::to_string_pretty(&groups).unwrap();
                if written[i] != text {
                    // Renamed into place: Prometheus never reads half a file.
                    let tmp = job.file.with_extension("tmp");
                    std::fs::write(&tmp, &text).unwrap();
                    std::fs::rename(&tmp, &job.file).unwrap();
                    written[i] = text;
                }
            }
        };
        let mut written = vec![String::new(); jobs.len()];
        refresh(&mut written);
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(500));
                    refresh(&mut written);
                }
            })
        };
        Discovery {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Discovery {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn labels_of(prefix: &str, object: &Value, out: &mut serde_json::Map<String, Value>) {
    for (k, v) in object["metadata"]["labels"]
        .as_object()
        .into_iter()
        .flatten()
    {
        let k = sanitize(k);
        out.insert(format!("{prefix}_label_{k}"), v.clone());
        out.insert(format!("{prefix}_labelpresent_{k}"), json!("true"));
    }
}

/// The pod's own meta labels (Prometheus's `pod` role, without the
/// container ones).
fn pod_labels(pod: &Value) -> serde_json::Map<String, Value> {
    let mut l = serde_json::Map::new();
    let m = &pod["metadata"];
    l.insert("__meta_kubernetes_namespace".into(), m["namespace"].clone());
    l.insert("__meta_kubernetes_pod_name".into(), m["name"].clone());
    l.insert("__meta_kubernetes_pod_uid".into(), m["uid"].clone());
    l.insert(
        "__meta_kubernetes_pod_ip".into(),
        pod["status"]["podIP"].clone(),
    );
    l.insert(
        "__meta_kubernetes_pod_phase".into(),
        pod["status"]["phase"].clone(),
    );
    let ready = pod["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True");
    l.insert(
        "__meta_kubernetes_pod_ready".into(),
        json!(ready.to_string()),
    );
    if let Some(node) = pod["spec"]["nodeName"].as_str() {
        l.insert("__meta_kubernetes_pod_node_name".into(), json!(node));
    }
    labels_of("__meta_kubernetes_pod", pod, &mut l);
    l.retain(|_, v| v.is_string());
    l
}

/// A target per declared container port, init containers included (with
/// `__meta_kubernetes_pod_container_init`), as Prometheus's `pod` role.
fn pod_targets(pod: &Value) -> Vec<Value> {
    let Some(ip) = pod["status"]["podIP"].as_str() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (key, init) in [("containers", false), ("initContainers", true)] {
        for c in pod["spec"][key].as_array().into_iter().flatten() {
            for port in c["ports"].as_array().into_iter().flatten() {
                let number = port["containerPort"].as_u64().unwrap();
                let mut l = pod_labels(pod);
                l.insert(
                    "__meta_kubernetes_pod_container_name".into(),
                    c["name"].clone(),
                );
                l.insert(
                    "__meta_kubernetes_pod_container_init".into(),
                    json!(init.to_string()),
                );
                l.insert(
                    "__meta_kubernetes_pod_container_port_name".into(),
                    json!(port["name"].as_str().unwrap_or_default()),
                );
                l.insert(
                    "__meta_kubernetes_pod_container_port_number".into(),
                    json!(number.to_string()),
                );
                l.insert(
                    "__meta_kubernetes_pod_container_port_protocol".into(),
                    json!(port["protocol"].as_str().unwrap_or("TCP")),
                );
                out.push(json!({"targets": [format!("{ip}:{number}")], "labels": l}));
            }
        }
    }
    out
}

/// A target per endpoint address and slice port, as Prometheus's
/// `endpointslice` role: the slice's, its Service's, and (through the
/// endpoint's targetRef) its pod's and container's labels.
fn slice_targets(slice: &Value, services: &[Value], pods: &[Value]) -> Vec<Value> {
    let ns = &slice["metadata"]["namespace"];
    let service_name = &slice["metadata"]["labels"]["kubernetes.io/service-name"];
    let service = services
        .iter()
        .find(|s| s["metadata"]["namespace"] == *ns && s["metadata"]["name"] == *service_name);
    let mut out = Vec::new();
    for endpoint in slice["endpoints"].as_array().into_iter().flatten() {
        let target = &endpoint["targetRef"];
        let pod = pods.iter().find(|p| {
            target["kind"] == "Pod"
                && p["metadata"]["namespace"] == *ns
                && p["metadata"]["name"] == target["name"]
        });
        for address in endpoint["addresses"].as_array().into_iter().flatten() {
            for port in slice["ports"].as_array().into_iter().flatten() {
                let number = port["port"].as_u64().unwrap();
                let mut l = pod.map(pod_labels).unwrap_or_default();
                l.insert("__meta_kubernetes_namespace".into(), ns.clone());
                l.insert(
                    "__meta_kubernetes_endpointslice_name".into(),
                    slice["metadata"]["name"].clone(),
                );
                l.insert(
                    "__meta_kubernetes_endpointslice_port_name".into(),
                    json!(port["name"].as_str().unwrap_or_default()),
                );
                l.insert(
                    "__meta_kubernetes_endpointslice_port".into(),
                    json!(number.to_string()),
                );
                let ready = endpoint["conditions"]["ready"].as_bool().unwrap_or(true);
                l.insert(
                    "__meta_kubernetes_endpointslice_endpoint_conditions_ready".into(),
                    json!(ready.to_string()),
                );
                if let Some(kind) = target["kind"].as_str() {
                    l.insert(
                        "__meta_kubernetes_endpointslice_address_target_kind".into(),
                        json!(kind),
                    );
                    l.insert(
                        "__meta_kubernetes_endpointslice_address_target_name".into(),
                        target["name"].clone(),
                    );
                }
                if let Some(service) = service {
                    l.insert(
                        "__meta_kubernetes_service_name".into(),
                        service["metadata"]["name"].clone(),
                    );
                    labels_of("__meta_kubernetes_service", service, &mut l);
                }
                // The pod's container whose port the endpoint's is.
                let container = pod.and_then(|p| {
                    p["spec"]["containers"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .chain(p["spec"]["initContainers"].as_array().into_iter().flatten())
                        .find(|c| {
                            c["ports"]
                                .as_array()
                                .into_iter()
                                .flatten()
                                .any(|cp| cp["containerPort"].as_u64() == Some(number))
                        })
                });
                if let Some(c) = container {
                    l.insert(
                        "__meta_kubernetes_pod_container_name".into(),
                        c["name"].clone(),
                    );
                }
                l.retain(|_, v| v.is_string());
                out.push(json!({"targets": [format!("{}:{number}", address.as_str().unwrap())], "labels": l}));
            }
        }
    }
    out
}

/// `promtool check metrics` on an exposition: its complaints, if any.
pub fn promtool_check_metrics(text: &str) -> Result<(), String> {
    use std::io::Write;
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() && said.trim().is_empty() {
        Ok(())
    } else {
        Err(said)
    }
}
