//! The `outrigger` CLI against a real Kubernetes API server (tests/apiserver):
//! the chart installed with the real helm, the real operator serving the
//! webhook and the policy server with the chart's certificates, the API
//! server calling that webhook (checking it against the chart's caBundle)
//! when pods are created, and a proxy's stream and acknowledgements made
//! with curl over TLS and HTTP/2 against the chart's CA. Then `outrigger
//! check` on the healthy install, and on installs broken one way at a time.
//!
//! What is simulated: nothing runs the chart's Deployment (the operator
//! runs as a local process; the Deployment's status is written as the
//! Deployment controller would, and the Services' EndpointSlices point at
//! the process on 127.0.0.1); nothing runs pods (a pod's phase is written
//! as the kubelet would); the test API server has no pod proxy, so the CLI
//! reaches the operator's admin endpoint with `--admin-url` (what a user
//! does after `kubectl port-forward`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use outrigger_e2e::kube_api::KubeApi;
use outrigger_e2e::{binary, require_tool, workspace_root, Process};
use serde_json::{json, Value};

const NS: &str = "outrigger-system";
const POLICY_HOST: &str = "outrigger-policy.outrigger-system.svc.cluster.local";
const TOKEN: &str = "e2e-shared-token";

fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Polls `f` every 100ms until it returns Some, for up to `limit`.
fn poll<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = f() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not reached within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// helm against this API server.
fn helm(api: &KubeApi, args: &[&str]) -> Output {
    let helm = outrigger_e2e::kube_api::helm()
        .expect("helm is required (tests/apiserver/install-kubectl.sh installs it)");
    let cache = api.dir.join("helm-cache");
    Command::new(helm)
        .env("KUBECONFIG", &api.kubeconfig)
        .env("HELM_CACHE_HOME", &cache)
        .env("HELM_CONFIG_HOME", cache.join("config"))
        .env("HELM_DATA_HOME", cache.join("data"))
        .args(args)
        .output()
        .expect("helm runs")
}

/// A key of a Secret of the release, decoded, written to `dir/<secret>/<key>`.
fn secret_file(api: &KubeApi, secret: &str, key: &str, dir: &Path) -> PathBuf {
    let template = format!("--template={{{{index .data \"{key}\" | base64decode}}}}");
    let data = api.kubectl_ok(&[
        "get",
        "secret",
        "-n",
        NS,
        secret,
        "-o",
        "go-template",
        &template,
    ]);
    assert!(data.contains("-----BEGIN"), "{secret}/{key}: {data}");
    let path = dir.join(secret).join(key);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, data).unwrap();
    path
}

/// An EndpointSlice for a Service of the release: one ready endpoint on
/// 127.0.0.1, with the Service port's name.
fn endpoints(service: &str, port_name: &str, port: u16) -> String {
    json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": format!("{service}-1"), "namespace": NS,
                     "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "ports": [{"name": port_name, "port": port, "protocol": "TCP"}],
        "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": true}}],
    })
    .to_string()
}

const SHOP: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: shop}\nspec:\n  selector: {app: web}\n  ports: [{name: http, port: 80, targetPort: 8080}]\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: web-1, namespace: shop, labels: {kubernetes.io/service-name: web}}\naddressType: IPv4\nports: [{name: http, port: 8080, protocol: TCP}]\nendpoints: [{addresses: [127.0.0.1], conditions: {ready: true}}]\n---\napiVersion: outrigger.dev/v1alpha1\nkind: ResiliencePolicy\nmetadata: {name: web, namespace: shop}\nspec:\n  targetRef: {kind: Service, name: web}\n  retry: {attempts: 3}\n";

/// The chart installed, its operator running, a Service with a policy.
struct Installed {
    // Field order is drop order: processes go before their API server.
    proxies: Vec<tokio::process::Child>,
    operator: Option<Process>,
    api: KubeApi,
    policy_ca: PathBuf,
    cli: PathBuf,
}

impl Installed {
    async fn start(name: &str) -> Installed {
        require_tool("curl");
        let api = KubeApi::start(name).expect("an API server");
        let chart = workspace_root().join("charts/outrigger");
        let out = blocking(|| {
            api.install_crds();
            helm(
                &api,
                &[
                    "install",
                    "outrigger",
                    chart.to_str().unwrap(),
                    "--namespace",
                    NS,
                ],
            )
        });
        assert!(out.status.success(), "helm install: {}", text(&out.stderr));
        let policy_ca = blocking(|| {
            api.apply(SHOP);
            // Pods in shop get the proxy.
            api.kubectl_ok(&["label", "namespace", "shop", "outrigger.dev/inject=enabled"]);
            secret_file(&api, "outrigger-policy-tls", "ca.crt", &api.dir.join("tls"))
        });
        let cli = binary("outrigger-cli", "outrigger").unwrap();
        let mut installed = Installed {
            proxies: Vec::new(),
            operator: None,
            api,
            policy_ca,
            cli,
        };
        installed.start_operator().await;
        installed
    }

    /// The chart's operator (deployment.yaml's arguments) as a local
    /// process with the chart's certificates; the Services' endpoints and
    /// the Deployment's status say so; waits until the API server injects.
    async fn start_operator(&mut self) {
        let api = &self.api;
        let dir = api.dir.join("tls");
        let files = blocking(|| {
            [
                ("outrigger-policy-tls", "tls.crt"),
                ("outrigger-policy-tls", "tls.key"),
                ("outrigger-webhook-tls", "tls.crt"),
                ("outrigger-webhook-tls", "tls.key"),
            ]
            .map(|(secret, key)| secret_file(api, secret, key, &dir))
        });
        let token = api.dir.join("shared-token");
        std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
        let bin = binary("outrigger-operator", "outrigger-operator").unwrap();
        let args: Vec<String> = vec![
            "run".into(),
            "--admin-addr=127.0.0.1:0".into(),
            "--policy-addr=127.0.0.1:0".into(),
            format!("--tls-cert={}", files[0].display()),
            format!("--tls-key={}", files[1].display()),
            "--auth=shared-token".into(),
            format!("--shared-token-file={}", token.display()),
            format!("--lease-namespace={NS}"),
            "--lease-duration=2s".into(),
            "--lease-renew=500ms".into(),
            "--heartbeat=1s".into(),
            "--webhook-addr=127.0.0.1:0".into(),
            format!("--webhook-tls-cert={}", files[2].display()),
            format!("--webhook-tls-key={}", files[3].display()),
            format!("--control-plane-url=https://{POLICY_HOST}:8090"),
            format!("--control-ca-file={}", self.policy_ca.display()),
            "--identity=outrigger-operator-7d9c-x2k4p".into(),
        ];
        let operator = Process::start_with_env(
            &bin,
            &args,
            &[
                ("KUBECONFIG", api.kubeconfig.as_path()),
                ("POD_NAMESPACE", Path::new(NS)),
                ("OUTRIGGER_LOG", Path::new("warn")),
            ],
        )
        .await
        .wait_ready(Duration::from_secs(30))
        .await;
        let (policy, webhook) = (
            operator.addr("policy").port(),
            operator.addr("webhook").port(),
        );
        self.operator = Some(operator);
        blocking(|| {
            api.apply(&endpoints("outrigger-policy", "policy", policy));
            api.apply(&endpoints("outrigger-webhook", "https", webhook));
            self.deployment_ready(2);
            poll(Duration::from_secs(20), "the webhook injects", || {
                let out = api.kubectl_stdin(
                    &["create", "--dry-run=server", "-o", "json", "-f", "-"],
                    &pod("probe").to_string(),
                );
                let pod: Value = serde_json::from_slice(&out.stdout).ok()?;
                is_injected(&pod).then_some(())
            });
        });
    }

    /// What the Deployment controller would write with `ready` pods ready.
    fn deployment_ready(&self, ready: u32) {
        let status = json!({"status": {"observedGeneration": 1, "replicas": 2,
                                       "readyReplicas": ready, "availableReplicas": ready}});
        self.api.kubectl_ok(&[
            "patch",
            "deploy",
            "outrigger-operator",
            "-n",
            NS,
            "--subresource=status",
            "--type=merge",
            "-p",
            &status.to_string(),
        ]);
    }

    fn admin_url(&self) -> String {
        format!(
            "http://{}",
            self.operator.as_ref().expect("running").addr("admin")
        )
    }

    fn policy_port(&self) -> u16 {
        self.operator
            .as_ref()
            .expect("running")
            .addr("policy")
            .port()
    }

    /// `outrigger ARGS --kubeconfig K --admin-url U`: (exit code, stdout).
    fn cli(&self, args: &[&str]) -> (i32, String) {
        let out = Command::new(&self.cli)
            .args(args)
            .arg(format!("--kubeconfig={}", self.api.kubeconfig.display()))
            .arg(format!("--admin-url={}", self.admin_url_or_dead()))
            .stdin(Stdio::null())
            .output()
            .expect("outrigger runs");
        let stdout = text(&out.stdout);
        eprintln!(
            "$ outrigger {}\n{stdout}{}",
            args.join(" "),
            text(&out.stderr)
        );
        (out.status.code().unwrap_or(-1), stdout)
    }

    /// The admin URL; once the operator is stopped, its old port (nobody
    /// listens there).
    fn admin_url_or_dead(&self) -> String {
        match &self.operator {
            Some(_) => self.admin_url(),
            None => format!("http://127.0.0.1:{}", outrigger_e2e::free_port()),
        }
    }

    /// curl arguments reaching the policy server by the name its
    /// certificate is for, trusting the chart's CA.
    fn curl_args(&self) -> Vec<String> {
        let port = self.policy_port();
        vec![
            "-sS".into(),
            "--http2".into(),
            "--cacert".into(),
            self.policy_ca.display().to_string(),
            "--resolve".into(),
            format!("{POLICY_HOST}:{port}:127.0.0.1"),
            "-H".into(),
            format!("authorization: Bearer {TOKEN}"),
        ]
    }

    /// A proxy `id` watching web.shop:80: curl holding the stream open,
    /// its snapshots appended to a file. The file's path.
    fn watch(&mut self, id: &str) -> PathBuf {
        let file = self.api.dir.join(format!("stream-{id}"));
        let url = format!(
            "https://{POLICY_HOST}:{}/v1/watch?proxy={id}&destination=web.shop%3A80",
            self.policy_port()
        );
        let child = tokio::process::Command::new("curl")
            .args(self.curl_args())
            .args(["-N", "-o", file.to_str().unwrap(), &url])
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("curl starts");
        self.proxies.push(child);
        file
    }

    /// Waits for the stream in `file` to carry a snapshot newer than
    /// `after`; its version.
    fn snapshot_after(file: &Path, after: u64) -> u64 {
        poll(Duration::from_secs(20), "a snapshot on the stream", || {
            let stream = std::fs::read_to_string(file).ok()?;
            stream
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .filter(|m| m["type"] == "snapshot")
                .filter_map(|m| m["version"].as_u64())
                .filter(|v| *v > after)
                .max()
        })
    }

    /// Acknowledges `version` as proxy `id` (what a proxy does once applied).
    fn ack(&self, id: &str, version: u64) {
        let body = json!({"proxy": id, "subscription": {"kind": "destination", "name": "web.shop:80"},
                          "version": version});
        let url = format!("https://{POLICY_HOST}:{}/v1/ack", self.policy_port());
        let out = Command::new("curl")
            .args(self.curl_args())
            .args([
                "-f",
                "-H",
                "content-type: application/json",
                "-d",
                &body.to_string(),
                &url,
            ])
            .output()
            .expect("curl runs");
        assert!(out.status.success(), "ack: {}", text(&out.stderr));
    }

    /// A pod created in shop (injected by the webhook) that the kubelet
    /// would report Running.
    fn running_pod(&self, name: &str) {
        self.api.apply(&pod(name).to_string());
        let stored = self.api.get_json(&["pod", "-n", "shop", name]).unwrap();
        assert!(is_injected(&stored), "{stored:#}");
        self.api.kubectl_ok(&[
            "patch",
            "pod",
            name,
            "-n",
            "shop",
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":{"phase":"Running"}}"#,
        ]);
    }
}

fn pod(name: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "shop", "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "app", "image": "shop/web:1", "ports": [{"containerPort": 8080}]}]},
    })
}

fn is_injected(pod: &Value) -> bool {
    pod["spec"]["initContainers"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["name"] == "outrigger-proxy")
}

/// Every line of `output` fits in 80 columns.
fn assert_fits(output: &str) {
    for line in output.lines() {
        assert!(line.chars().count() <= 80, "over 80 columns: {line:?}");
    }
}

/// The check's lines marked ✘.
fn failures(output: &str) -> Vec<&str> {
    output.lines().filter(|l| l.starts_with("  ✘")).collect()
}

/// Whether a ✘ line mentions `needle` (lines wrap: the next lines count).
fn fails_with(output: &str, needle: &str) -> bool {
    let lines: Vec<&str> = output.lines().collect();
    lines.iter().enumerate().any(|(i, l)| {
        l.starts_with("  ✘") && {
            let mut joined = l.trim().to_string();
            for next in &lines[i + 1..] {
                if !next.starts_with("    ") {
                    break;
                }
                joined.push(' ');
                joined.push_str(next.trim());
            }
            joined.contains(needle)
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_install_checks_clean_and_explains_its_services() {
    let started = Instant::now();
    let mut cluster = Installed::start("cli-healthy").await;
    // A proxy in pod web-1: streaming, and acknowledging what it applied.
    let stream = cluster.watch("web-1");
    let version = Installed::snapshot_after(&stream, 0);
    cluster.ack("web-1", version);
    blocking(|| cluster.running_pod("web-1"));

    let (code, out) = blocking(|| cluster.cli(&["check"]));
    assert_eq!(code, 0, "{out}");
    assert_fits(&out);
    let marked: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("  ") && !l.starts_with("    "))
        .collect();
    assert!(marked.len() >= 15, "{out}");
    assert!(marked.iter().all(|l| l.starts_with("  ✔ ")), "{out}");
    for expected in [
        "resiliencepolicies.outrigger.dev is established",
        "serves v1alpha1, stores v1alpha1",
        "1 of 1 ResiliencePolicies programmed",
        "Deployment outrigger-operator: 2/2 replicas ready",
        "leader: outrigger-operator-7d9c-x2k4p",
        "caBundle verifies the certificate in secret",
        "1 proxies connected, 1 injected pod(s) running",
        "every connected proxy applied the latest policy",
    ] {
        assert!(out.contains(expected), "{expected:?} missing:\n{out}");
    }
    assert!(out.ends_with("✔ all checks passed\n"), "{out}");

    // The same program as a kubectl plugin, found on PATH.
    let bin_dir = cluster.cli.parent().unwrap().to_path_buf();
    binary("outrigger-cli", "kubectl-outrigger").unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = blocking(|| {
        Command::new(cluster.api.kubectl_bin())
            .env("KUBECONFIG", &cluster.api.kubeconfig)
            .env("PATH", path)
            .args([
                "outrigger",
                "check",
                &format!("--admin-url={}", cluster.admin_url()),
            ])
            .output()
            .expect("kubectl runs")
    });
    assert!(
        out.status.success(),
        "kubectl outrigger check: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(text(&out.stdout).ends_with("✔ all checks passed\n"));

    let (code, out) = blocking(|| cluster.cli(&["proxies"]));
    assert_eq!(code, 0, "{out}");
    assert_fits(&out);
    let row = out
        .lines()
        .find(|l| l.starts_with("shop/web-1 "))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(row.contains("outrigger-operator-7d9c-x2k4p"), "{row}");
    assert!(row.contains("1/1") && row.contains("shop/web@1"), "{row}");

    let (code, out) = blocking(|| cluster.cli(&["explain", "svc/web", "-n", "shop"]));
    assert_eq!(code, 0, "{out}");
    assert_fits(&out);
    for expected in [
        "Service shop/web",
        "http 80→8080",
        "endpoints: 1 ready",
        "127.0.0.1 http=8080",
        "ResiliencePolicy shop/web (every port, generation 1)",
        "attempts: 3",
        // Filled in: the default timeouts and the retry budget.
        "request: 15s",
        "connect: 1s",
        "budget:",
        "1 watching this Service, 1 on its latest snapshot",
        // The live state is asked of the proxy's pod through the API
        // server's pod proxy, which refuses a pod with no IP (this one's
        // proxy does not run): the line says so rather than guessing.
        "Live state (from the proxies)",
        "web-1: unavailable: 400 address not allowed",
    ] {
        assert!(out.contains(expected), "{expected:?} missing:\n{out}");
    }
    eprintln!("healthy install test took {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_breakage_fails_its_line_and_the_exit_status() {
    let started = Instant::now();
    let mut cluster = Installed::start("cli-broken").await;
    let stream = cluster.watch("web-1");
    let first = Installed::snapshot_after(&stream, 0);
    cluster.ack("web-1", first);
    blocking(|| cluster.running_pod("web-1"));
    let (code, out) = blocking(|| cluster.cli(&["check"]));
    assert_eq!((code, failures(&out)), (0, vec![]), "{out}");

    // A proxy on stale policy: the policy changes, the proxy receives the
    // new snapshot and never acknowledges it.
    blocking(|| {
        cluster.api.kubectl_ok(&[
            "patch",
            "rp",
            "web",
            "-n",
            "shop",
            "--type=merge",
            "-p",
            r#"{"spec":{"retry":{"attempts":4}}}"#,
        ])
    });
    let second = Installed::snapshot_after(&stream, first);
    let (code, out) = blocking(|| cluster.cli(&["check"]));
    assert_eq!(code, 1, "{out}");
    assert_fits(&out);
    assert!(
        fails_with(
            &out,
            "1 proxy(ies) on stale policy: web-1 dst:web.shop:80 (shop/web@2 not applied)"
        ),
        "{out}"
    );
    assert_eq!(failures(&out).len(), 1, "only that line: {out}");
    cluster.ack("web-1", second);

    // An injected pod whose proxy never connected.
    blocking(|| cluster.running_pod("web-2"));
    let (code, out) = blocking(|| cluster.cli(&["check"]));
    assert_eq!(code, 1, "{out}");
    assert!(
        fails_with(
            &out,
            "1 injected pod(s) running without a connected proxy: shop/web-2"
        ),
        "{out}"
    );
    assert_eq!(failures(&out).len(), 1, "only that line: {out}");
    blocking(|| {
        cluster
            .api
            .kubectl_ok(&["delete", "pod", "web-2", "-n", "shop"])
    });

    // The webhook's caBundle from another CA (as after a Secret was
    // regenerated and the configuration not updated).
    let other = cluster.api.dir.join("other-ca");
    let operator_bin = binary("outrigger-operator", "outrigger-operator").unwrap();
    let out = Command::new(&operator_bin)
        .args(["gen-certs", other.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let bundle = {
        use std::io::Write;
        let pem = std::fs::read(other.join("ca.crt")).unwrap();
        let mut encoder = Command::new("base64")
            .arg("-w0")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        encoder.stdin.take().unwrap().write_all(&pem).unwrap();
        text(&encoder.wait_with_output().unwrap().stdout)
    };
    let original = blocking(|| {
        let mwc = cluster
            .api
            .get_json(&["mutatingwebhookconfiguration", "outrigger-sidecar-injector"])
            .unwrap();
        mwc["webhooks"][0]["clientConfig"]["caBundle"]
            .as_str()
            .unwrap()
            .to_string()
    });
    let set_bundle = |bundle: &str| {
        let patch = json!([
            {"op": "replace", "path": "/webhooks/0/clientConfig/caBundle", "value": bundle},
        ]);
        cluster.api.kubectl_ok(&[
            "patch",
            "mutatingwebhookconfiguration",
            "outrigger-sidecar-injector",
            "--type=json",
            "-p",
            &patch.to_string(),
        ]);
    };
    blocking(|| set_bundle(&bundle));
    let (code, out) = blocking(|| cluster.cli(&["check"]));
    assert_eq!(code, 1, "{out}");
    assert_fits(&out);
    assert!(fails_with(&out, "caBundle does not verify the certificate in secret outrigger-system/outrigger-webhook-tls"), "{out}");
    assert!(
        fails_with(
            &out,
            "TLS handshake for outrigger-webhook.outrigger-system.svc failed"
        ),
        "{out}"
    );
    blocking(|| set_bundle(&original));

    // The operator stops: no leader once its lease runs out (2s), no
    // replica answering, the Deployment's pods not ready.
    cluster.operator.take().unwrap().kill().await;
    blocking(|| cluster.deployment_ready(0));
    let out = blocking(|| {
        poll(Duration::from_secs(20), "the lease expires", || {
            let (code, out) = cluster.cli(&["check"]);
            (code == 1
                && fails_with(
                    &out,
                    "no leader: outrigger-operator-7d9c-x2k4p stopped renewing",
                ))
            .then_some(out)
        })
    });
    assert_fits(&out);
    assert!(
        fails_with(&out, "Deployment outrigger-operator: 0/2 replicas ready"),
        "{out}"
    );
    assert!(fails_with(&out, "does not answer"), "{out}");
    assert!(
        fails_with(
            &out,
            "connected proxies unknown: no operator replica answered"
        ),
        "{out}"
    );

    // The CRD removed.
    blocking(|| {
        cluster
            .api
            .kubectl_ok(&["delete", "crd", "resiliencepolicies.outrigger.dev"])
    });
    let (code, out) = blocking(|| cluster.cli(&["check"]));
    assert_eq!(code, 1, "{out}");
    assert_fits(&out);
    assert!(
        fails_with(
            &out,
            "CRD resiliencepolicies.outrigger.dev is not installed"
        ),
        "{out}"
    );
    eprintln!("broken installs test took {:?}", started.elapsed());
}
