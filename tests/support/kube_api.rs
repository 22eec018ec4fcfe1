//! A real Kubernetes API server for tests: etcd plus `outrigger-apiserver`
//! (tests/apiserver: apiextensions-apiserver with a few built-in resources),
//! each test with its own, on loopback, removed on drop.
//!
//! The binaries come from `tests/apiserver/build.sh` (cached under
//! ~/.cache/outrigger); kubectl from `tests/apiserver/install-kubectl.sh`.
//! `tests/run.sh` runs both and exports their paths.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::free_port;

/// Where the harness binaries are: the environment, else the build cache.
struct Tools {
    apiserver: PathBuf,
    etcd: PathBuf,
    kubectl: PathBuf,
}

fn cache_dir() -> PathBuf {
    std::env::var_os("OUTRIGGER_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/outrigger")
        })
}

/// `$var` if set, else the cached path; only if it exists.
fn locate(var: &str, cached: PathBuf) -> Option<PathBuf> {
    let path = std::env::var_os(var).map_or(cached, PathBuf::from);
    path.exists().then_some(path)
}

fn tools() -> Option<Tools> {
    let cache = cache_dir();
    Some(Tools {
        apiserver: locate(
            "OUTRIGGER_APISERVER_BIN",
            cache.join("apiserver/bin/outrigger-apiserver"),
        )?,
        etcd: locate("OUTRIGGER_ETCD_BIN", cache.join("apiserver/bin/etcd"))?,
        kubectl: locate("OUTRIGGER_KUBECTL", cache.join("bin/kubectl"))?,
    })
}

/// helm, installed beside kubectl by tests/apiserver/install-kubectl.sh.
pub fn helm() -> Option<PathBuf> {
    locate("OUTRIGGER_HELM", cache_dir().join("bin/helm"))
}

/// Kills and reaps the child on drop.
struct Guarded(Child);

impl Drop for Guarded {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// etcd and the API server, and a kubeconfig for them.
pub struct KubeApi {
    // Field order is drop order: the API server goes before its etcd.
    _apiserver: Guarded,
    _etcd: Guarded,
    kubectl: PathBuf,
    pub kubeconfig: PathBuf,
    pub dir: PathBuf,
}

/// Stops both processes, then removes the directory: etcd preallocates over
/// 100 MiB, and a test run starts dozens of API servers. A failed test keeps
/// its logs (set OUTRIGGER_KEEP_KUBE=1 to keep every directory).
impl Drop for KubeApi {
    fn drop(&mut self) {
        for process in [&mut self._apiserver.0, &mut self._etcd.0] {
            let _ = process.kill();
            let _ = process.wait();
        }
        if std::thread::panicking() || std::env::var_os("OUTRIGGER_KEEP_KUBE").is_some() {
            eprintln!("API server files kept in {}", self.dir.display());
            let _ = std::fs::remove_dir_all(self.dir.join("etcd"));
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

impl KubeApi {
    /// Starts a fresh API server. A missing harness fails the test (a test
    /// that cannot run must not pass); `tests/run.sh` builds it. Always
    /// `Some` (the `Option` remains for the callers' `let ... else`).
    pub fn start(name: &str) -> Option<KubeApi> {
        let tools = tools().expect(
            "no API server harness: run bash tests/apiserver/build.sh and \
             bash tests/apiserver/install-kubectl.sh (tests/run.sh does both)",
        );
        let dir = crate::temp_dir(&format!("kube-{name}"));
        // A port taken between free_port() and etcd's bind is retried.
        for _ in 0..5 {
            if let Some(api) = Self::try_start(&tools, &dir) {
                return Some(api);
            }
        }
        panic!(
            "the API server did not start; logs in {}",
            dir.join("logs").display()
        );
    }

    fn try_start(tools: &Tools, dir: &Path) -> Option<KubeApi> {
        let logs = dir.join("logs");
        std::fs::create_dir_all(&logs).unwrap();
        let (client, peer) = (free_port(), free_port());
        let client_url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let etcd_dir = dir.join("etcd");
        let _ = std::fs::remove_dir_all(&etcd_dir);
        let etcd = Guarded(
            Command::new(&tools.etcd)
                .arg(format!("--data-dir={}", etcd_dir.display()))
                .arg(format!("--listen-client-urls={client_url}"))
                .arg(format!("--advertise-client-urls={client_url}"))
                .arg(format!("--listen-peer-urls={peer_url}"))
                .arg(format!("--initial-advertise-peer-urls={peer_url}"))
                .arg(format!("--initial-cluster=default={peer_url}"))
                .arg("--unsafe-no-fsync")
                .arg("--log-level=warn")
                .stdout(Stdio::null())
                .stderr(log_file(&logs.join("etcd.log")))
                .spawn()
                .expect("etcd starts"),
        );
        let kubeconfig = dir.join("kubeconfig");
        let _ = std::fs::remove_file(&kubeconfig);
        // etcd needs a moment; the API server retries its connection anyway.
        let apiserver = Guarded(
            Command::new(&tools.apiserver)
                .arg(format!("--etcd-servers={client_url}"))
                .arg(format!("--data-dir={}", dir.join("apiserver").display()))
                .arg(format!("--kubeconfig-out={}", kubeconfig.display()))
                .arg("--v=1")
                .stdout(Stdio::null())
                .stderr(log_file(&logs.join("apiserver.log")))
                .spawn()
                .expect("outrigger-apiserver starts"),
        );
        let mut api = KubeApi {
            _apiserver: apiserver,
            _etcd: etcd,
            kubectl: tools.kubectl.clone(),
            kubeconfig,
            dir: dir.to_path_buf(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(_)) = api._etcd.0.try_wait() {
                return None; // most likely a port clash: try again
            }
            if let Ok(Some(status)) = api._apiserver.0.try_wait() {
                panic!(
                    "outrigger-apiserver exited ({status}); see {}",
                    logs.join("apiserver.log").display()
                );
            }
            if api.kubeconfig.exists() {
                let out = api.kubectl(&["get", "--raw", "/readyz"]);
                if out.status.success() {
                    break;
                }
            }
            if Instant::now() > deadline {
                panic!(
                    "the API server was not ready within 60s; see {}",
                    logs.display()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        // Namespaces every test uses.
        for ns in ["shop", "outrigger-system"] {
            let out = api.kubectl(&["create", "namespace", ns]);
            assert!(
                out.status.success() || String::from_utf8_lossy(&out.stderr).contains("exists"),
                "create namespace {ns}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Some(api)
    }

    /// The kubectl binary the tests use (for runs that need an environment
    /// or a thread of their own, e.g. a PATH with a kubectl plugin).
    pub fn kubectl_bin(&self) -> &Path {
        &self.kubectl
    }

    /// Runs kubectl against this server: its output, whatever the status.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        Command::new(&self.kubectl)
            .env("KUBECONFIG", &self.kubeconfig)
            .args(["--request-timeout=20s"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("kubectl runs")
    }

    /// kubectl with `input` on standard input (e.g. `apply -f -`).
    pub fn kubectl_stdin(&self, args: &[&str], input: &str) -> Output {
        use std::io::Write;
        let mut child = Command::new(&self.kubectl)
            .env("KUBECONFIG", &self.kubeconfig)
            .args(["--request-timeout=20s"])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl runs");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        child.wait_with_output().expect("kubectl finishes")
    }

    /// kubectl that must succeed: its standard output.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `kubectl apply -f -` that must succeed.
    pub fn apply(&self, yaml: &str) {
        let out = self.kubectl_stdin(&["apply", "-f", "-"], yaml);
        assert!(
            out.status.success(),
            "kubectl apply: {}\n{yaml}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The object as JSON (`kubectl get -o json`), or None when absent.
    pub fn get_json(&self, args: &[&str]) -> Option<serde_json::Value> {
        let mut all = vec!["get", "-o", "json"];
        all.extend_from_slice(args);
        let out = self.kubectl(&all);
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).expect("kubectl prints JSON"))
    }

    /// Waits (at most 30 s) until CRD `name` is Established. Polled here:
    /// `kubectl wait` fails at once, instead of waiting, when it reads the
    /// CRD before the API server has given it any condition.
    pub fn wait_established(&self, name: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let crd = self.get_json(&["crd", name]);
            let established = crd.as_ref().is_some_and(|crd| {
                crd["status"]["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|c| c["type"] == "Established" && c["status"] == "True")
            });
            if established {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "CRD {name} not Established within 30s: {crd:#?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Applies the repository's CRDs and waits until they are Established.
    pub fn install_crds(&self) {
        let crds = crate::workspace_root().join("crds");
        self.kubectl_ok(&["apply", "--server-side", "-f", crds.to_str().unwrap()]);
        self.wait_established("resiliencepolicies.outrigger.dev");
        // Discovery of the new group reaches kubectl's cache a moment later.
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.kubectl(&["get", "rp", "-A"]).status.success() {
            assert!(Instant::now() < deadline, "resiliencepolicies not served");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn log_file(path: &Path) -> Stdio {
    std::fs::File::create(path)
        .map(Stdio::from)
        .unwrap_or_else(|_| Stdio::null())
}
