//! Shared by the node's integration tests: the node process, polling with a
//! deadline, metrics from a pod's admin port, the chart's namespace.
#![allow(dead_code)]

pub mod prometheus;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use outrigger_e2e::kube_api::KubeApi;
use serde_json::Value;

pub const RELEASE_NS: &str = "outrigger-system";
pub const CONTROL_PLANE: &str = "https://outrigger-policy.outrigger-system.svc.cluster.local:8090";

/// The app the node's tests deploy: namespace `shop` labelled for injection,
/// Service `web` (port 80 to the pods' `http` port) and Deployment `web`
/// with `replicas` pods of the test app, ready once `/` answers.
pub fn web_app(replicas: u32) -> String {
    format!(
        r#"
apiVersion: v1
kind: Namespace
metadata: {{name: shop, labels: {{outrigger.dev/inject: enabled}}}}
---
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: shop}}
spec:
  selector: {{app: web}}
  ports: [{{name: http, port: 80, targetPort: http}}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web, namespace: shop}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      terminationGracePeriodSeconds: 5
      containers:
      - name: app
        image: outrigger/test-app:latest
        ports: [{{name: http, containerPort: 8080}}]
        readinessProbe:
          httpGet: {{path: /, port: http}}
          periodSeconds: 1
"#
    )
}

pub struct NodeProcess {
    pub child: Child,
    pub log: PathBuf,
}

impl NodeProcess {
    /// Runs the node against `api`, its pods' files under `state`.
    pub fn start(api: &KubeApi, state: &Path) -> NodeProcess {
        let log = api.dir.join("logs/node.log");
        let child = Command::new(env!("CARGO_BIN_EXE_outrigger-testnode"))
            .args(["run", "--state-dir"])
            .arg(state)
            .env("KUBECONFIG", &api.kubeconfig)
            .env("OUTRIGGER_LOG", "info,kube=warn,outrigger_testnode=debug")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("the node starts");
        NodeProcess { child, log }
    }

    /// Stops the node the way an operator would (SIGTERM, so it removes its
    /// network); true if it exited within a minute, else it is killed.
    pub fn stop(&mut self) -> bool {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        false
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.stop();
        }
    }
}

pub fn node_log(node: &NodeProcess) -> String {
    std::fs::read_to_string(&node.log).unwrap_or_default()
}

/// Polls `f` every 100 ms until Some, for at most `limit`.
pub fn wait_for<T>(
    limit: Duration,
    what: &str,
    node: &NodeProcess,
    mut f: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within {limit:?}; node log:\n{}",
            node_log(node)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Text without terminal colour sequences.
pub fn plain(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

pub fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn ready(pod: &Value) -> bool {
    pod["status"]["conditions"].as_array().is_some_and(|c| {
        c.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

pub fn metrics(ip: &str) -> String {
    admin_metrics(ip, 4191)
}

pub fn admin_metrics(ip: &str, port: u16) -> String {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "5"])
        .arg(format!("http://{ip}:{port}/metrics"))
        .output()
        .expect("curl runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The value of the first sample of `name` whose labels contain `label`.
pub fn sample(metrics: &str, name: &str, label: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(name) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Fails the test without root, ip, iptables and curl: a test that cannot
/// run must not pass (`bash tests/setup.sh` installs the tools).
pub fn require_node_tools() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the test node needs root (network namespaces)"
    );
    for tool in ["ip", "iptables", "curl"] {
        outrigger_e2e::require_tool(tool);
    }
}

/// `helm install` of the chart into RELEASE_NS (helm's caches under the API
/// server's directory), then waits for the operator Deployment's rollout.
pub fn helm_install(api: &KubeApi, node: &NodeProcess, helm: &Path) -> Duration {
    let began = Instant::now();
    let cache = api.dir.join("helm-cache");
    let chart = outrigger_e2e::workspace_root().join("charts/outrigger");
    let out = Command::new(helm)
        .env("KUBECONFIG", &api.kubeconfig)
        .env("HELM_CACHE_HOME", &cache)
        .env("HELM_CONFIG_HOME", cache.join("config"))
        .env("HELM_DATA_HOME", cache.join("data"))
        .args(["install", "outrigger", chart.to_str().unwrap()])
        .args(["--namespace", RELEASE_NS, "--create-namespace"])
        .output()
        .expect("helm runs");
    assert!(out.status.success(), "helm install: {}", stderr(&out));
    let out = api.kubectl(&[
        "-n",
        RELEASE_NS,
        "rollout",
        "status",
        "deployment/outrigger-operator",
        "--timeout=120s",
    ]);
    assert!(
        out.status.success(),
        "operator rollout: {}\nnode log:\n{}",
        stderr(&out),
        node_log(node)
    );
    began.elapsed()
}

// The user's path (user_path.rs, soak.rs): a policy `web` on the Service
// web in namespace shop, web pods, load-generating client pods.

/// The policy `web` on the Service web with `spec` (YAML lines, indented 2).
pub fn policy(spec: &str) -> String {
    format!(
        "apiVersion: outrigger.dev/v1alpha1\nkind: ResiliencePolicy\nmetadata: {{name: web, namespace: shop}}\nspec:\n  targetRef: {{kind: Service, name: web}}\n{spec}"
    )
}

/// Generation and (observedGeneration, current, total) of the policy.
pub fn policy_status(api: &KubeApi) -> Option<(i64, i64, i64, i64)> {
    let rp = api.get_json(&["-n", "shop", "rp", "web"])?;
    Some((
        rp["metadata"]["generation"].as_i64()?,
        rp["status"]["observedGeneration"].as_i64().unwrap_or(0),
        rp["status"]["proxies"]["current"].as_i64().unwrap_or(-1),
        rp["status"]["proxies"]["total"].as_i64().unwrap_or(-1),
    ))
}

/// Waits until the policy's current generation is observed and every one of
/// `proxies` proxies has acknowledged it; returns the time it took.
pub fn acknowledged(api: &KubeApi, node: &NodeProcess, proxies: i64, what: &str) -> Duration {
    let began = Instant::now();
    let mut last = None;
    wait_for(Duration::from_secs(60), what, node, || {
        let s = policy_status(api);
        if s != last {
            eprintln!("{what}: {:?} (generation, observed, current, total)", s);
            last = s;
        }
        let (generation, observed, current, total) = s?;
        (observed == generation && current == proxies && total == proxies).then_some(())
    });
    began.elapsed()
}

pub fn web_pods(api: &KubeApi) -> Vec<Value> {
    api.get_json(&["-n", "shop", "pods", "-l", "app=web"])
        .and_then(|l| l["items"].as_array().cloned())
        .unwrap_or_default()
}

/// Waits for exactly `n` web pods, all Ready; returns their IPs.
pub fn web_ready(api: &KubeApi, node: &NodeProcess, n: usize, what: &str) -> Vec<String> {
    wait_for(Duration::from_secs(120), what, node, || {
        let pods = web_pods(api);
        (pods.len() == n && pods.iter().all(ready)).then(|| {
            pods.iter()
                .filter_map(|p| p["status"]["podIP"].as_str().map(str::to_string))
                .collect()
        })
    })
}

/// The sum of the web apps' `/failures` counters (read from the node through
/// each server pod's inbound proxy).
pub fn app_failures(ips: &[String]) -> u64 {
    ips.iter()
        .map(|ip| {
            let out = std::process::Command::new("curl")
                .args(["-sS", "--max-time", "5"])
                .arg(format!("http://{ip}:8080/failures"))
                .output()
                .expect("curl runs");
            let text = String::from_utf8_lossy(&out.stdout);
            text.trim()
                .parse::<u64>()
                .unwrap_or_else(|_| panic!("{ip}/failures: {text:?}"))
        })
        .sum()
}

/// A client pod `name` that runs `test-load` against `url` (`rate` a second
/// for `seconds`), then prints `done` and sleeps.
pub fn start_load(api: &KubeApi, name: &str, url: &str, rate: u32, seconds: u64) {
    let pod = format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: shop, labels: {{app: client}}}}
spec:
  terminationGracePeriodSeconds: 1
  restartPolicy: Never
  containers:
  - name: app
    image: outrigger/shell
    command:
    - sh
    - -c
    - |
      echo started
      outrigger-testnode test-load --rate {rate} --seconds {seconds} {url}
      echo done
      exec sleep 600
"#
    );
    api.apply(&pod);
}

pub fn pod_log(api: &KubeApi, state: &Path, name: &str) -> String {
    let Some(pod) = api.get_json(&["-n", "shop", "pod", name]) else {
        return String::new();
    };
    let uid = pod["metadata"]["uid"].as_str().unwrap_or_default();
    std::fs::read_to_string(state.join(format!("pods/shop_{name}_{uid}/logs/app.log")))
        .unwrap_or_default()
}

/// Waits for the client pod's load summary; returns (summary, full log).
pub fn load_result(
    api: &KubeApi,
    node: &NodeProcess,
    state: &Path,
    name: &str,
    limit: Duration,
) -> (LoadSummary, String) {
    let log = wait_for(limit, &format!("{name}'s load"), node, || {
        let log = pod_log(api, state, name);
        log.contains("\ndone").then_some(log)
    });
    let line = log
        .lines()
        .find(|l| l.starts_with("load: "))
        .unwrap_or_else(|| panic!("no summary in {log}"));
    eprintln!("{name}: {line}");
    let field = |k: &str| -> String {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{k}=")))
            .unwrap_or_default()
            .to_string()
    };
    let summary = LoadSummary {
        requests: field("requests").parse().unwrap(),
        failed: field("failed").parse().unwrap(),
        p99_ms: field("p99_ms").parse().unwrap(),
        statuses: field("statuses"),
    };
    (summary, log)
}

pub struct LoadSummary {
    pub requests: u64,
    pub failed: u64,
    pub p99_ms: f64,
    pub statuses: String,
}

impl LoadSummary {
    pub fn count(&self, key: &str) -> u64 {
        self.statuses
            .split(',')
            .filter_map(|kv| kv.split_once('='))
            .filter(|(k, _)| *k == key)
            .filter_map(|(_, v)| v.parse::<u64>().ok())
            .sum()
    }
}

pub fn delete_pod(api: &KubeApi, name: &str) {
    api.kubectl_ok(&["-n", "shop", "delete", "pod", name, "--wait=false"]);
}
