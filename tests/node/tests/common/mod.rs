//! Shared by the node's integration tests: the node process, polling with a
//! deadline, metrics from a pod's admin port, the chart's namespace.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use outrigger_e2e::kube_api::KubeApi;
use serde_json::Value;

pub const RELEASE_NS: &str = "outrigger-system";
pub const CONTROL_PLANE: &str = "https://outrigger-policy.outrigger-system.svc.cluster.local:8090";

pub struct NodeProcess {
    pub child: Child,
    pub log: PathBuf,
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
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

pub fn start_node(api: &KubeApi, state: &Path) -> NodeProcess {
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

pub fn can_run() -> bool {
    let ok = nix::unistd::geteuid().is_root()
        && outrigger_e2e::require_tool("ip")
        && outrigger_e2e::require_tool("iptables")
        && outrigger_e2e::require_tool("curl");
    if !ok {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "needs root, ip, iptables and curl in CI"
        );
        eprintln!("SKIPPED: needs root, ip, iptables and curl");
    }
    ok
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
