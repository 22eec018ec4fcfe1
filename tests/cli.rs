//! The `outrigger` CLI against a real Kubernetes API server (tests/apiserver):
//! the chart installed with the real helm, the real operator serving the
//! webhook and the policy server with the chart's certificates, the API
//! server calling that webhook (checking it against the chart's caBundle)
//! when pods are created, and a proxy's stream and acknowledgements made
//! with curl over TLS and HTTP/2 against the chart's CA. Then `outrigger
//! check` on the healthy install, and on installs broken one way at a time
//! (a certificate re-issued close to its end or expired, the injector
//! turned off with helm upgrade among them); and `explain`'s live state
//! read from a real `outrigger-proxy` through the API server's pod proxy.
//!
//! What is simulated: nothing runs the chart's Deployment (the operator
//! runs as a local process; the Deployment's status is written as the
//! Deployment controller would, and the Services' EndpointSlices point at
//! the process on 127.0.0.1); nothing runs pods (a pod's phase and IP are
//! written as the kubelet would). The API server's pod proxy is real
//! (`pods/proxy`, tests/apiserver/wrapper/podproxy.go) and, like
//! kube-apiserver, never proxies to loopback: a pod whose admin endpoint
//! must answer gets an IP in a network namespace the test creates, joined
//! to the host's by a veth pair (10.213.N.0/30), where the real proxy
//! listens (its policy from a file with the same ResiliencePolicy the API
//! server holds; the operator's stream for it is still curl's) and the
//! operator's admin endpoint listens on the host's end. Elsewhere the CLI
//! reaches the operator's admin endpoint with `--admin-url` (what a user
//! does after `kubectl port-forward`).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use outrigger_api::sidecar::ADMIN_PORT;
use outrigger_e2e::kube_api::KubeApi;
use outrigger_e2e::netns::Netns;
use outrigger_e2e::proxy::{metric_value, raw_get, request};
use outrigger_e2e::{binary, require_tool, workspace_root, Process};
use outrigger_tools::fault_upstream::{FaultConfig, FaultUpstream};
use serde_json::{json, Value};

const NS: &str = "outrigger-system";
const POLICY_HOST: &str = "outrigger-policy.outrigger-system.svc.cluster.local";
const TOKEN: &str = "e2e-shared-token";
/// The operator's admin port in the chart (deployment.yaml).
const OPERATOR_ADMIN_PORT: u16 = 9090;

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
    /// The operator's --admin-addr.
    admin_addr: String,
}

impl Installed {
    async fn start(name: &str) -> Installed {
        Installed::start_with_admin(name, "127.0.0.1:0").await
    }

    /// Installed, the operator's admin endpoint on `admin_addr`.
    async fn start_with_admin(name: &str, admin_addr: &str) -> Installed {
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
            admin_addr: admin_addr.to_string(),
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
            format!("--admin-addr={}", self.admin_addr),
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
        let admin_url = format!("--admin-url={}", self.admin_url_or_dead());
        self.cli_through_pods(&[args, &[admin_url.as_str()]].concat())
    }

    /// `outrigger ARGS --kubeconfig K`: the CLI finds the operator's pods
    /// and asks them through the API server's pod proxy.
    fn cli_through_pods(&self, args: &[&str]) -> (i32, String) {
        let out = Command::new(&self.cli)
            .args(args)
            .arg(format!("--kubeconfig={}", self.api.kubeconfig.display()))
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
        // A file per stream: a reconnection's is read from its start.
        let file = self
            .api
            .dir
            .join(format!("stream-{id}-{}", self.proxies.len()));
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

    /// The operator restarted (it reads its certificates again); proxy
    /// `id` reconnects and acknowledges what it then receives.
    async fn restart_operator(&mut self, id: &str) {
        self.operator.take().unwrap().kill().await;
        self.start_operator().await;
        let stream = self.watch(id);
        let version = Installed::snapshot_after(&stream, 0);
        self.ack(id, version);
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

impl Installed {
    /// What the kubelet would report for pod `namespace/name`: its IP.
    fn pod_ip(&self, namespace: &str, name: &str, ip: &str) {
        let status = json!({"status": {"podIP": ip, "podIPs": [{"ip": ip}]}});
        self.api.kubectl_ok(&[
            "patch",
            "pod",
            name,
            "-n",
            namespace,
            "--subresource=status",
            "--type=merge",
            "-p",
            &status.to_string(),
        ]);
    }
}

/// The injection webhook's caBundle set to `bundle` (base64).
fn set_ca_bundle(api: &KubeApi, bundle: &str) {
    let patch = json!([
        {"op": "replace", "path": "/webhooks/0/clientConfig/caBundle", "value": bundle},
    ]);
    api.kubectl_ok(&[
        "patch",
        "mutatingwebhookconfiguration",
        "outrigger-sidecar-injector",
        "--type=json",
        "-p",
        &patch.to_string(),
    ]);
}

/// `bytes` in base64, as a Secret's data and a caBundle hold them.
fn base64(bytes: &[u8]) -> String {
    use std::io::Write;
    let mut encoder = Command::new("base64")
        .arg("-w0")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    encoder.stdin.take().unwrap().write_all(bytes).unwrap();
    text(&encoder.wait_with_output().unwrap().stdout)
}

/// A CA of the test's, for the webhook's certificate.
struct TestCa {
    params: rcgen::CertificateParams,
    key: rcgen::KeyPair,
    pem: String,
}

impl TestCa {
    fn new() -> TestCa {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "outrigger-webhook-ca.test");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let pem = params.self_signed(&key).unwrap().pem();
        TestCa { params, key, pem }
    }

    /// A certificate for the webhook's Service names (those the chart's
    /// has), valid from `from` to `until` seconds relative to now: (PEM
    /// certificate, PEM key).
    fn issue(&self, from: i64, until: i64) -> (String, String) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let at = |offset: i64| {
            rcgen::date_time_ymd(1970, 1, 1) + Duration::from_secs((now + offset) as u64)
        };
        let service = format!("outrigger-webhook.{NS}");
        let names = vec![
            "outrigger-webhook".to_string(),
            service.clone(),
            format!("{service}.svc"),
            format!("{service}.svc.cluster.local"),
        ];
        let mut leaf = rcgen::CertificateParams::new(names).unwrap();
        leaf.not_before = at(from);
        leaf.not_after = at(until);
        let key = rcgen::KeyPair::generate().unwrap();
        let issuer = rcgen::Issuer::from_params(&self.params, &self.key);
        let cert = leaf.signed_by(&key, &issuer).unwrap().pem();
        (cert, key.serialize_pem())
    }
}

/// The webhook's Secret rewritten: `ca`'s certificate and one it issued.
fn set_webhook_secret(api: &KubeApi, ca: &TestCa, (cert, key): &(String, String)) {
    let patch = json!({"stringData": {"ca.crt": ca.pem, "tls.crt": cert, "tls.key": key}});
    api.kubectl_ok(&[
        "patch",
        "secret",
        "outrigger-webhook-tls",
        "-n",
        NS,
        "--type=merge",
        "-p",
        &patch.to_string(),
    ]);
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
        // proxy does not run): the line says so rather than guessing. The
        // live-state test below gives a pod a real proxy.
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
    let bundle = base64(&std::fs::read(other.join("ca.crt")).unwrap());
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
    blocking(|| set_ca_bundle(&cluster.api, &bundle));
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
    blocking(|| set_ca_bundle(&cluster.api, &original));

    // The webhook's certificate re-issued (a new CA, the caBundle updated,
    // the operator restarted on it) with 10 days left: a warning, and the
    // exit status stays 0 (warnings do not fail the check).
    let secret_data =
        |name: &str| cluster.api.get_json(&["secret", "-n", NS, name]).unwrap()["data"].clone();
    let original_secret = blocking(|| secret_data("outrigger-webhook-tls"));
    let day = 86_400;
    // Dates an hour off whole days: the day count the check prints does not
    // hang on the test's and the CLI's clocks agreeing to the second (this
    // machine's clock has been seen to step back).
    let hour = 3600;
    let ca = TestCa::new();
    blocking(|| {
        set_webhook_secret(&cluster.api, &ca, &ca.issue(-day, 10 * day - hour));
        set_ca_bundle(&cluster.api, &base64(ca.pem.as_bytes()));
    });
    cluster.restart_operator("web-1").await;
    let out = blocking(|| {
        poll(
            Duration::from_secs(20),
            "a check with warnings only",
            || {
                let (code, out) = cluster.cli(&["check"]);
                (code == 0 && failures(&out).is_empty()).then_some(out)
            },
        )
    });
    assert_fits(&out);
    let warned: Vec<&str> = out.lines().filter(|l| l.starts_with("  ‼")).collect();
    assert_eq!(warned.len(), 1, "{out}");
    // 10 days less an hour and the seconds since it was issued.
    assert!(
        warned[0].starts_with("  ‼ webhook certificate expires in 9d ("),
        "{out}"
    );
    assert!(out.contains("renew it"), "{out}");
    assert!(
        out.ends_with("‼ all checks passed, 1 warning(s)\n"),
        "{out}"
    );

    // Re-issued by the same CA, expired three days ago: a failure, exit
    // status 1 (the operator still serves the one above, which verifies).
    blocking(|| set_webhook_secret(&cluster.api, &ca, &ca.issue(-30 * day, -3 * day - hour)));
    let (code, out) = blocking(|| cluster.cli(&["check"]));
    assert_eq!(code, 1, "{out}");
    assert_fits(&out);
    assert!(
        fails_with(&out, "webhook certificate expired 3d ago ("),
        "{out}"
    );
    assert!(
        fails_with(&out, "the certificate has expired"),
        "the caBundle check says why too: {out}"
    );
    assert_eq!(failures(&out).len(), 2, "only those lines: {out}");
    // The install as it was.
    blocking(|| {
        let patch = json!({"data": original_secret});
        cluster.api.kubectl_ok(&[
            "patch",
            "secret",
            "outrigger-webhook-tls",
            "-n",
            NS,
            "--type=merge",
            "-p",
            &patch.to_string(),
        ]);
        set_ca_bundle(&cluster.api, &original);
    });
    cluster.restart_operator("web-1").await;
    blocking(|| {
        poll(Duration::from_secs(20), "a clean check again", || {
            let (code, out) = cluster.cli(&["check"]);
            (code == 0 && out.ends_with("✔ all checks passed\n")).then_some(())
        })
    });

    // The injector turned off (helm upgrade): no webhook configuration, no
    // webhook certificate, and that is what the install asked for.
    let chart = workspace_root().join("charts/outrigger");
    let out = blocking(|| {
        helm(
            &cluster.api,
            &[
                "upgrade",
                "outrigger",
                chart.to_str().unwrap(),
                "--namespace",
                NS,
                "--reuse-values",
                "--set",
                "injector.enabled=false",
            ],
        )
    });
    assert!(out.status.success(), "helm upgrade: {}", text(&out.stderr));
    let (code, out) = blocking(|| cluster.cli(&["check"]));
    assert_eq!(code, 0, "{out}");
    assert_fits(&out);
    assert!(
        out.contains("  ✔ injection is off in this install (injector.enabled=false)\n"),
        "{out}"
    );
    assert!(!out.contains("webhook certificate"), "{out}");
    assert!(out.ends_with("✔ all checks passed\n"), "{out}");

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

/// A pod's network: a network namespace joined to the host's by a veth
/// pair, the host's end 10.213.N.(4k+1)/30, the namespace's 10.213.N.(4k+2)
/// (N from the process id, k per test, so concurrent runs do not collide).
/// The API server proxies only to such addresses, never to loopback.
/// Deleted when dropped (the pair with it), on a panic too.
struct PodNet {
    host: Ipv4Addr,
    pod: Ipv4Addr,
    netns: Netns,
}

impl PodNet {
    fn create(k: u8) -> PodNet {
        let id = std::process::id();
        let n = (id % 250) as u8;
        let netns = Netns::create(&format!("orcli{id}-{k}"));
        let (host, pod) = (
            Ipv4Addr::new(10, 213, n, 4 * k + 1),
            Ipv4Addr::new(10, 213, n, 4 * k + 2),
        );
        netns.link_host(
            &format!("orcli{id}{k}"),
            &format!("{host}/30"),
            &format!("{pod}/30"),
        );
        PodNet { host, pod, netns }
    }
}

/// The real `outrigger-proxy` inside a pod's network namespace: its admin
/// listener on the pod's IP and the sidecar's admin port (where the API
/// server's pod proxy reaches it), its outbound listener on the pod's IP
/// too (where the test sends the application's calls), its policy from a
/// file. Killed when dropped.
struct SidecarProxy {
    outbound: SocketAddr,
    admin: SocketAddr,
    _child: tokio::process::Child,
}

impl SidecarProxy {
    async fn start(net: &PodNet, policy: &Path) -> SidecarProxy {
        let address_file = policy.with_file_name("addresses.json");
        let _ = std::fs::remove_file(&address_file);
        let admin = SocketAddr::from((net.pod, ADMIN_PORT));
        let mut child = net
            .netns
            .command(&[
                outrigger_e2e::proxy::proxy_binary(),
                &format!("--admin-addr={admin}"),
                &format!("--outbound-addr={}:0", net.pod),
                "--inbound-addr=127.0.0.1:0",
                "--namespace=shop",
                &format!("--policy={}", policy.display()),
                &format!("--address-file={}", address_file.display()),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("the proxy starts in the namespace");
        let addresses = outrigger_e2e::read_address_file(
            &address_file,
            &mut child,
            Duration::from_secs(30),
            "the proxy in the pod's namespace",
        )
        .await;
        let outbound = addresses["outbound"].as_str().unwrap().parse().unwrap();
        let proxy = SidecarProxy {
            outbound,
            admin,
            _child: child,
        };
        outrigger_e2e::wait_until(Duration::from_secs(15), "the proxy is ready", || async {
            matches!(raw_get(admin, "/ready").await, Ok((200, _)))
        })
        .await;
        proxy
    }

    /// A gauge of Service web's destination in the proxy's own /metrics.
    async fn gauge(&self, name: &str) -> f64 {
        let metrics = raw_get(self.admin, "/metrics").await.unwrap().1;
        metric_value(
            &metrics,
            name,
            &["destination=\"web.shop.svc.cluster.local:80\""],
        )
    }

    /// The application's call to Service web through the proxy.
    async fn call(&self) -> u16 {
        request(self.outbound, "GET", "/", &[("host", "web")], b"")
            .await
            .0
    }
}

/// Service web's policy with a breaker and outlier detection, and its two
/// endpoints on the host's end of the pod's veth pair: what the API server
/// holds and what the proxy reads from its file.
fn breaker_policy(host: Ipv4Addr, ports: [u16; 2]) -> (String, String) {
    let policy = "apiVersion: outrigger.dev/v1alpha1\nkind: ResiliencePolicy\nmetadata: {name: web, namespace: shop}\nspec:\n  targetRef: {kind: Service, name: web}\n  retry: {attempts: 3}\n  outlierDetection: {consecutiveFailures: 3, baseEjectionTime: 300s, maxEjectionPercent: 50}\n  circuitBreaker: {failureRatePercent: 50, minimumRequests: 10, window: 30s, openFor: 300s, maxOpenFor: 600s}\n".to_string();
    let slices: String = ports
        .iter()
        .enumerate()
        .map(|(i, port)| {
            format!(
                "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: web-{i}, namespace: shop, labels: {{kubernetes.io/service-name: web}}}}\naddressType: IPv4\nports: [{{port: {port}}}]\nendpoints: [{{addresses: [\"{host}\"], conditions: {{ready: true}}}}]\n"
            )
        })
        .collect();
    (policy.clone(), format!("{policy}{slices}"))
}

/// `explain`'s live section, its wrapped lines joined: one line a proxy
/// (and destination).
fn live_section(out: &str) -> String {
    let section = out
        .split("Live state (from the proxies)\n")
        .nth(1)
        .unwrap_or_else(|| panic!("no live section:\n{out}"));
    let mut joined = String::new();
    for line in section.lines().take_while(|l| l.starts_with("  ")) {
        // A line that goes on wraps with the same indentation: a new entry
        // starts with a proxy id, which these tests name web-N.
        let line = line.trim();
        if !joined.is_empty() {
            joined.push(if line.starts_with("web-") { '\n' } else { ' ' });
        }
        joined.push_str(line);
    }
    joined
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_reads_a_real_proxys_breaker_and_ejections_through_the_pod_proxy() {
    let started = Instant::now();
    let net = PodNet::create(0);
    // The operator's admin endpoint on the host's end of the pair: a pod IP
    // the API server proxies to, on the chart's admin port.
    let mut cluster =
        Installed::start_with_admin("cli-live", &format!("{}:{OPERATOR_ADMIN_PORT}", net.host))
            .await;
    let good = FaultUpstream::start(SocketAddr::from((net.host, 0)), FaultConfig::default())
        .await
        .unwrap();
    let bad = FaultUpstream::start(
        SocketAddr::from((net.host, 0)),
        FaultConfig {
            failure_rate: 1.0,
            ..FaultConfig::default()
        },
    )
    .await
    .unwrap();
    let (policy, file) = breaker_policy(net.host, [good.addr.port(), bad.addr.port()]);
    let policy_file = cluster.api.dir.join("web-1-proxy").join("policy.yaml");
    std::fs::create_dir_all(policy_file.parent().unwrap()).unwrap();
    std::fs::write(&policy_file, file).unwrap();
    blocking(|| cluster.api.apply(&policy));
    // Proxy web-1's stream and acknowledgement (curl, as in the other
    // tests), and its pod, running, not yet with an IP.
    let stream = cluster.watch("web-1");
    let version = Installed::snapshot_after(&stream, 0);
    cluster.ack("web-1", version);
    blocking(|| cluster.running_pod("web-1"));

    // A pod without an IP is not proxied to: the API server says so.
    let (code, out) = blocking(|| cluster.cli(&["explain", "svc/web", "-n", "shop"]));
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        live_section(&out),
        "web-1: unavailable: 400 address not allowed",
        "{out}"
    );
    // Its IP, with no proxy listening there yet.
    blocking(|| cluster.pod_ip("shop", "web-1", &net.pod.to_string()));
    let asked = Instant::now();
    let (code, out) = blocking(|| cluster.cli(&["explain", "svc/web", "-n", "shop"]));
    assert_eq!(code, 0, "{out}");
    // The pod proxy's 503 is the answer, not a reason to retry: kube's
    // client, left to its default, retried it for five minutes.
    assert!(
        asked.elapsed() < Duration::from_secs(30),
        "explain took {:?} to report an unreachable proxy",
        asked.elapsed()
    );
    assert_eq!(
        live_section(&out),
        format!(
            "web-1: unavailable: 503 error trying to reach service: \
             dial tcp {}:{ADMIN_PORT}: connect: connection refused",
            net.pod
        ),
        "{out}"
    );

    // The proxy starts in the pod's namespace; the application calls web
    // through it until the failing endpoint is ejected...
    let proxy = SidecarProxy::start(&net, &policy_file).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while proxy.gauge("outrigger_ejected_endpoints").await < 1.0 {
        assert!(
            Instant::now() < deadline,
            "the failing endpoint never ejected"
        );
        proxy.call().await;
    }
    assert!(
        bad.hits() >= 3,
        "{} calls reached the failing endpoint",
        bad.hits()
    );
    // ...then the other endpoint fails too (it cannot be ejected: at most
    // half the endpoints are) until the breaker opens.
    good.set_failure_rate(1.0);
    let deadline = Instant::now() + Duration::from_secs(20);
    while proxy.gauge("outrigger_circuit_state").await != 1.0 {
        assert!(Instant::now() < deadline, "the breaker never opened");
        proxy.call().await;
    }
    assert_eq!(proxy.call().await, 503, "the open breaker answers");

    // explain reads it from the proxy, through the API server's pod proxy.
    let (code, out) = blocking(|| cluster.cli(&["explain", "svc/web", "-n", "shop"]));
    assert_eq!(code, 0, "{out}");
    assert_fits(&out);
    assert_eq!(
        live_section(&out),
        "web-1 port 80: breaker OPEN, 1 endpoint(s) ejected",
        "{out}"
    );
    assert!(
        out.contains("1 watching this Service, 1 on its latest snapshot"),
        "{out}"
    );

    // Without --admin-url the CLI finds the operator's pod and asks its
    // admin endpoint through the pod proxy too.
    let selector = blocking(|| {
        cluster
            .api
            .get_json(&["deploy", "-n", NS, "outrigger-operator"])
            .unwrap()["spec"]["selector"]["matchLabels"]
            .clone()
    });
    let operator_pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "outrigger-operator-7d9c-x2k4p", "namespace": NS, "labels": selector},
        "spec": {"containers": [{"name": "operator", "image": "outrigger/operator:test"}]},
    });
    blocking(|| {
        cluster.api.apply(&operator_pod.to_string());
        cluster.api.kubectl_ok(&[
            "patch",
            "pod",
            "outrigger-operator-7d9c-x2k4p",
            "-n",
            NS,
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":{"phase":"Running"}}"#,
        ]);
        cluster.pod_ip(NS, "outrigger-operator-7d9c-x2k4p", &net.host.to_string());
    });
    let (code, out) = blocking(|| cluster.cli_through_pods(&["proxies"]));
    assert_eq!(code, 0, "{out}");
    let row = out
        .lines()
        .find(|l| l.starts_with("shop/web-1 "))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(row.contains("outrigger-operator-7d9c-x2k4p"), "{row}");
    let (code, out) = blocking(|| cluster.cli_through_pods(&["check"]));
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("1 proxies connected, 1 injected pod(s) running"),
        "{out}"
    );
    eprintln!("live state test took {:?}", started.elapsed());
}
