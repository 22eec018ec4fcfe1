//! Sidecar injection on the user's path: the Helm chart's objects applied with
//! kubectl to a real Kubernetes API server (tests/apiserver), the real
//! `outrigger-operator` serving the webhook with the chart's certificate, and
//! pods created with kubectl. The API server's own admission plugins
//! (k8s.io/apiserver's MutatingAdmissionWebhook and
//! ValidatingAdmissionWebhook) call the webhook over HTTPS, check its
//! certificate against the chart's caBundle, and store what the patch made of
//! the pod. Nothing here calls the webhook by hand.
//!
//! What differs from a cluster: nothing schedules or runs the pods, and the
//! tests write the webhook Service's EndpointSlice themselves (no controllers
//! run), pointing at the operator on 127.0.0.1; the API server reaches a
//! Service through its EndpointSlices rather than its ClusterIP
//! (tests/apiserver/wrapper/admission.go says why).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use outrigger_e2e::kube_api::KubeApi;
use outrigger_e2e::{binary, workspace_root, Process};
use serde_json::{json, Value};

const RELEASE_NS: &str = "outrigger-system";
const WEBHOOK: &str = "namespaces.sidecar-injector.outrigger.dev";
const CONTROL_PLANE: &str = "https://outrigger-policy.outrigger-system.svc.cluster.local:8090";

/// Blocking kubectl calls without stalling the runtime's other tasks.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
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

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The chart rendered by the real helm for release `outrigger` in
/// outrigger-system: its documents (comments and empty documents dropped).
/// None (after printing why) without helm outside CI.
fn render_chart(sets: &[&str]) -> Option<Vec<String>> {
    let Some(helm) = outrigger_e2e::kube_api::helm() else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "helm is required in CI (tests/apiserver/install-kubectl.sh installs it)"
        );
        eprintln!("SKIPPED: no helm (tests/apiserver/install-kubectl.sh)");
        return None;
    };
    let chart = workspace_root().join("charts/outrigger");
    let mut cmd = std::process::Command::new(&helm);
    cmd.args(["template", "outrigger", chart.to_str().unwrap()])
        .args(["--namespace", RELEASE_NS]);
    for set in sets {
        cmd.args(["--set", set]);
    }
    let out = cmd.output().expect("helm runs");
    assert!(out.status.success(), "helm template: {}", stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    Some(
        text.split("\n---")
            .map(|doc| doc.trim_start_matches("---").trim().to_string())
            .filter(|doc| doc.lines().any(|l| l.starts_with("kind: ")))
            .collect(),
    )
}

fn kind_of(doc: &str) -> &str {
    doc.lines()
        .find_map(|l| l.strip_prefix("kind: "))
        .unwrap_or_default()
        .trim()
}

fn name_of(doc: &str) -> &str {
    doc.lines()
        .skip_while(|l| *l != "metadata:")
        .find_map(|l| l.strip_prefix("  name: "))
        .unwrap_or_default()
        .trim()
}

/// The rendered objects this API server serves, i.e. what `helm install`
/// would create here: the TLS Secrets, the ServiceAccount, the Services and
/// the MutatingWebhookConfiguration (not the Deployment, RBAC or PDB: the
/// operator runs as a local process instead).
fn served_objects(docs: &[String]) -> String {
    let served = [
        "Secret",
        "ServiceAccount",
        "Service",
        "MutatingWebhookConfiguration",
    ];
    let picked: Vec<&str> = docs
        .iter()
        .filter(|d| served.contains(&kind_of(d)))
        .map(String::as_str)
        .collect();
    for (kind, name) in [
        ("Secret", "outrigger-webhook-tls"),
        ("Service", "outrigger-webhook"),
        ("MutatingWebhookConfiguration", "outrigger-sidecar-injector"),
    ] {
        assert!(
            picked
                .iter()
                .any(|d| kind_of(d) == kind && name_of(d) == name),
            "the chart renders no {kind} {name}"
        );
    }
    picked.join("\n---\n")
}

/// A key of a Secret, decoded, written to `dir/<secret>/<key>`.
fn secret_file(api: &KubeApi, secret: &str, key: &str, dir: &Path) -> PathBuf {
    let template = format!("--template={{{{index .data \"{key}\" | base64decode}}}}");
    let data = api.kubectl_ok(&[
        "get",
        "secret",
        "-n",
        RELEASE_NS,
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

/// The chart's operator (deployment.yaml's arguments), as a local process
/// with the chart's certificates read back from the cluster's Secrets; its
/// listeners on loopback port 0.
async fn operator(api: &KubeApi) -> Process {
    let bin = binary("outrigger-operator", "outrigger-operator").unwrap();
    let dir = api.dir.join("operator-tls");
    let (policy_crt, policy_key, policy_ca, webhook_crt, webhook_key) = blocking(|| {
        (
            secret_file(api, "outrigger-policy-tls", "tls.crt", &dir),
            secret_file(api, "outrigger-policy-tls", "tls.key", &dir),
            secret_file(api, "outrigger-policy-tls", "ca.crt", &dir),
            secret_file(api, "outrigger-webhook-tls", "tls.crt", &dir),
            secret_file(api, "outrigger-webhook-tls", "tls.key", &dir),
        )
    });
    let args: Vec<String> = vec![
        "run".into(),
        "--admin-addr=127.0.0.1:0".into(),
        "--policy-addr=127.0.0.1:0".into(),
        format!("--tls-cert={}", policy_crt.display()),
        format!("--tls-key={}", policy_key.display()),
        format!("--lease-namespace={RELEASE_NS}"),
        "--cluster-domain=cluster.local".into(),
        "--webhook-addr=127.0.0.1:0".into(),
        format!("--webhook-tls-cert={}", webhook_crt.display()),
        format!("--webhook-tls-key={}", webhook_key.display()),
        "--proxy-image=outrigger/proxy:0.1.0".into(),
        format!("--control-plane-url={CONTROL_PLANE}"),
        format!("--control-ca-file={}", policy_ca.display()),
        "--identity=outrigger-operator-0".into(),
    ];
    Process::start_with_env(
        &bin,
        &args,
        &[
            ("KUBECONFIG", api.kubeconfig.as_path()),
            ("POD_NAMESPACE", Path::new(RELEASE_NS)),
            ("OUTRIGGER_LOG", Path::new("warn")),
        ],
    )
    .await
    .wait_ready(Duration::from_secs(30))
    .await
}

/// What the EndpointSlice controller would write for the webhook Service once
/// the operator is ready: one ready endpoint, the Service port's name, the
/// port the operator listens on.
fn webhook_endpoints(port: u16) -> String {
    json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": "outrigger-webhook-1",
            "namespace": RELEASE_NS,
            "labels": {"kubernetes.io/service-name": "outrigger-webhook"},
        },
        "addressType": "IPv4",
        "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
        "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": true}}],
    })
    .to_string()
}

fn namespace(name: &str, labels: Value) -> String {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}})
        .to_string()
}

fn pod(namespace: &str, name: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": name}},
        "spec": {"containers": [{"name": "app", "image": "shop/app:1.0", "ports": [{"containerPort": 8080}]}]},
    })
}

/// A cluster with the chart installed (failurePolicy per `sets`) and its
/// operator serving the webhook; namespace `apps` labelled for injection.
struct Installed {
    // Field order is drop order: the operator goes before its API server.
    operator: Option<Process>,
    api: KubeApi,
    chart: String,
}

impl Installed {
    async fn start(name: &str, sets: &[&str]) -> Option<Installed> {
        let api = KubeApi::start(name)?;
        let chart = served_objects(&render_chart(sets)?);
        blocking(|| {
            // The operator's caches include ResiliencePolicies.
            api.install_crds();
            let out = api.kubectl_stdin(&["apply", "-f", "-"], &chart);
            assert!(out.status.success(), "apply the chart: {}", stderr(&out));
            assert!(!stderr(&out).contains("Warning"), "{}", stderr(&out));
            api.apply(&namespace(
                "apps",
                json!({"outrigger.dev/inject": "enabled"}),
            ));
        });
        let mut installed = Installed {
            api,
            operator: None,
            chart,
        };
        installed.start_operator().await;
        Some(installed)
    }

    /// Starts the operator, points the webhook Service at it and waits until
    /// the API server injects through it.
    async fn start_operator(&mut self) {
        let op = operator(&self.api).await;
        let port = op.addr("webhook").port();
        self.operator = Some(op);
        blocking(|| {
            self.api.apply(&webhook_endpoints(port));
            // The API server sees configuration and endpoints through its
            // informers: wait until a dry run comes back injected.
            poll(Duration::from_secs(20), "the webhook injects", || {
                let (out, pod) = self.dry_run(&pod("apps", "probe"));
                (out.status.success() && injected(pod.as_ref()?)).then_some(())
            });
        });
    }

    async fn stop_operator(&mut self) {
        if let Some(mut op) = self.operator.take() {
            op.kill().await;
        }
    }

    /// `kubectl create --dry-run=server`: the webhooks run, nothing is stored.
    fn dry_run(&self, pod: &Value) -> (std::process::Output, Option<Value>) {
        let out = self.api.kubectl_stdin(
            &["create", "--dry-run=server", "-o", "json", "-f", "-"],
            &pod.to_string(),
        );
        let stored = serde_json::from_slice(&out.stdout).ok();
        (out, stored)
    }

    /// `kubectl apply` of a pod that must succeed; the stored pod.
    fn apply_pod(&self, pod: &Value) -> Value {
        let out = self
            .api
            .kubectl_stdin(&["apply", "-f", "-"], &pod.to_string());
        assert!(out.status.success(), "apply {pod}: {}", stderr(&out));
        self.stored(pod)
    }

    /// The pod as stored (`kubectl get pod -o json`).
    fn stored(&self, pod: &Value) -> Value {
        let ns = pod["metadata"]["namespace"].as_str().unwrap();
        let name = pod["metadata"]["name"].as_str().unwrap();
        self.api
            .get_json(&["pod", "-n", ns, name])
            .unwrap_or_else(|| panic!("pod {ns}/{name} is not stored"))
    }
}

fn names(list: &Value) -> Vec<&str> {
    list.as_array()
        .map(|l| l.iter().filter_map(|c| c["name"].as_str()).collect())
        .unwrap_or_default()
}

fn injected(pod: &Value) -> bool {
    names(&pod["spec"]["initContainers"]).contains(&"outrigger-init")
}

/// The pod carries what the chart's webhook adds: the redirect init container
/// first, then the proxy as a native sidecar; the app's containers unchanged.
fn assert_injected(pod: &Value, app_containers: &[&str]) {
    let init = &pod["spec"]["initContainers"];
    assert_eq!(
        names(init)[..2],
        ["outrigger-init", "outrigger-proxy"],
        "{pod:#}"
    );
    let proxy = &init[1];
    assert_eq!(
        proxy["restartPolicy"], "Always",
        "native sidecar: {proxy:#}"
    );
    assert_eq!(proxy["image"], "outrigger/proxy:0.1.0");
    assert_eq!(proxy["startupProbe"]["httpGet"]["path"], "/ready");
    let env = proxy["env"].as_array().unwrap();
    let control = env
        .iter()
        .find(|e| e["name"] == "OUTRIGGER_CONTROL_PLANE")
        .expect("the control-plane URL");
    assert_eq!(control["value"], CONTROL_PLANE);
    assert_eq!(names(&pod["spec"]["containers"]), app_containers);
    assert!(
        pod["metadata"]["annotations"]["outrigger.dev/injected"].is_string(),
        "{:#}",
        pod["metadata"]
    );
}

fn assert_untouched(pod: &Value) {
    assert!(pod["spec"]["initContainers"].is_null(), "{:#}", pod["spec"]);
    assert!(
        pod["metadata"]["annotations"]["outrigger.dev/injected"].is_null(),
        "{:#}",
        pod["metadata"]
    );
}

/// Milliseconds of the POST that created the pod, as kubectl -v=6 logs it.
fn create_latency_ms(api: &KubeApi, pod: &Value) -> f64 {
    let out = api.kubectl_stdin(&["create", "-v=6", "-f", "-"], &pod.to_string());
    assert!(out.status.success(), "{}", stderr(&out));
    let log = stderr(&out);
    log.lines()
        .filter(|l| l.contains("POST") && l.contains("/pods"))
        .find_map(|l| {
            // `... milliseconds=12` (structured) or `... in 12 milliseconds`.
            l.split_once("milliseconds=")
                .and_then(|(_, v)| v.split_whitespace().next())
                .or_else(|| {
                    l.split_once(" in ")
                        .and_then(|(_, v)| v.strip_suffix(" milliseconds"))
                })
                .and_then(|v| v.trim_matches('"').parse().ok())
        })
        .unwrap_or_else(|| panic!("no POST latency in kubectl's log:\n{log}"))
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_created_with_kubectl_get_the_sidecar_from_the_charts_webhook() {
    let Some(cluster) = Installed::start("admission-inject", &[]).await else {
        return;
    };
    blocking(|| {
        // A bare pod, applied by hand.
        let stored = cluster.apply_pod(&pod("apps", "web"));
        assert_injected(&stored, &["app"]);

        // Server-side apply goes through the same admission.
        let out = cluster.api.kubectl_stdin(
            &["apply", "--server-side", "-f", "-"],
            &pod("apps", "applied").to_string(),
        );
        assert!(out.status.success(), "{}", stderr(&out));
        assert_injected(&cluster.stored(&pod("apps", "applied")), &["app"]);

        // A pod as a Deployment's ReplicaSet creates it: generateName, owner,
        // template labels, per-pod annotations.
        let fixture =
            workspace_root().join("operator/tests/fixtures/admission-deployment-pod.json");
        let review: Value =
            serde_json::from_str(&std::fs::read_to_string(fixture).unwrap()).unwrap();
        let mut replica = review["request"]["object"].clone();
        replica["metadata"]["namespace"] = json!("apps");
        let out = cluster.api.kubectl_stdin(
            &["create", "-o", "jsonpath={.metadata.name}", "-f", "-"],
            &replica.to_string(),
        );
        assert!(out.status.success(), "{}", stderr(&out));
        let name = String::from_utf8(out.stdout).unwrap();
        assert!(name.starts_with("payments-7c9d8f6b5-"), "{name}");
        let stored = cluster.api.get_json(&["pod", "-n", "apps", &name]).unwrap();
        assert_injected(&stored, &["payments"]);
        let init = &stored["spec"]["initContainers"];
        assert!(
            init[0]["args"]
                .as_array()
                .unwrap()
                .contains(&json!("--skip-outbound-ports=5432")),
            "{:#}",
            init[0]
        );
        assert_eq!(init[1]["resources"]["limits"]["memory"], "96Mi");

        // A Job's pod: restartPolicy Never; the native sidecar lets it
        // complete.
        let mut job = pod("apps", "migrate-x7k2p");
        job["metadata"]["labels"] =
            json!({"batch.kubernetes.io/job-name": "migrate", "job-name": "migrate"});
        job["metadata"]["ownerReferences"] = json!([{
            "apiVersion": "batch/v1", "kind": "Job", "name": "migrate",
            "uid": "0d5c6f1e-1111-4a4a-8c8c-000000000001", "controller": true, "blockOwnerDeletion": true,
        }]);
        job["spec"]["restartPolicy"] = json!("Never");
        let stored = cluster.apply_pod(&job);
        assert_injected(&stored, &["app"]);
        assert_eq!(stored["spec"]["restartPolicy"], "Never");

        // Opted out by annotation (the operator skips it) or by label (the
        // objectSelector keeps it from the webhook): stored as written.
        let mut opted_out = pod("apps", "legacy");
        opted_out["metadata"]["annotations"] = json!({"outrigger.dev/inject": "disabled"});
        assert_untouched(&cluster.apply_pod(&opted_out));
        let mut labelled_out = pod("apps", "batch");
        labelled_out["metadata"]["labels"]["outrigger.dev/inject"] = json!("disabled");
        assert_untouched(&cluster.apply_pod(&labelled_out));

        // A namespace without the label is not sent to the webhook.
        assert_untouched(&cluster.apply_pod(&pod("shop", "web")));

        // The certificate check is real: the same Service trusted through
        // another CA (the policy server's) is refused by the API server.
        let other_ca = cluster.api.kubectl_ok(&[
            "get",
            "secret",
            "-n",
            RELEASE_NS,
            "outrigger-policy-tls",
            "-o",
            "jsonpath={.data.ca\\.crt}",
        ]);
        let mistrusting = json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": "mistrusting"},
            "webhooks": [{
                "name": "mistrusting.example.test",
                "clientConfig": {
                    "service": {"namespace": RELEASE_NS, "name": "outrigger-webhook", "path": "/inject"},
                    "caBundle": other_ca,
                },
                "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}],
                "namespaceSelector": {"matchLabels": {"trust": "wrong-ca"}},
                "failurePolicy": "Fail",
                "sideEffects": "None",
                "admissionReviewVersions": ["v1"],
            }],
        });
        cluster.api.apply(&mistrusting.to_string());
        cluster
            .api
            .apply(&namespace("mistrusted", json!({"trust": "wrong-ca"})));
        let refused = poll(
            Duration::from_secs(20),
            "the second webhook in effect",
            || {
                let (out, _) = cluster.dry_run(&pod("mistrusted", "probe"));
                (!out.status.success()).then(|| stderr(&out))
            },
        );
        assert!(
            refused.contains("mistrusting.example.test")
                && refused.contains("x509: certificate signed by unknown authority"),
            "{refused}"
        );

        // What the webhook adds to pod creation (kubectl's own measure of
        // the POST, median of 5).
        let with: Vec<f64> = (0..5)
            .map(|i| create_latency_ms(&cluster.api, &pod("apps", &format!("timed-{i}"))))
            .collect();
        let without: Vec<f64> = (0..5)
            .map(|i| create_latency_ms(&cluster.api, &pod("shop", &format!("timed-{i}"))))
            .collect();
        eprintln!(
            "pod creation: {:.0} ms through the webhook, {:.0} ms without (median of 5)",
            median(with),
            median(without)
        );
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outages_follow_the_failure_policy_and_uninstalling_restores_plain_pods() {
    let Some(mut cluster) = Installed::start("admission-outage", &[]).await else {
        return;
    };
    // The chart's default, Ignore: with no operator answering, pods are
    // created without the proxy, and the API server logs which webhook failed.
    cluster.stop_operator().await;
    blocking(|| {
        let stored = cluster.apply_pod(&pod("apps", "while-down"));
        assert_untouched(&stored);
        let log = cluster.api.dir.join("logs/apiserver.log");
        let log = std::fs::read_to_string(log).unwrap();
        assert!(
            log.contains(&format!("failing open {WEBHOOK}")),
            "the API server logs the failed call: {log}"
        );
    });

    // failurePolicy=Fail (a `helm upgrade --set`, here re-rendered: new
    // certificates too). Pods in labelled namespaces are refused, naming the
    // webhook; other namespaces and the release namespace are never sent to it.
    let upgraded = served_objects(&render_chart(&["injector.failurePolicy=Fail"]).unwrap());
    blocking(|| {
        let out = cluster.api.kubectl_stdin(&["apply", "-f", "-"], &upgraded);
        assert!(out.status.success(), "{}", stderr(&out));
        let refused = poll(
            Duration::from_secs(20),
            "failurePolicy Fail in effect",
            || {
                let (out, _) = cluster.dry_run(&pod("apps", "probe"));
                (!out.status.success()).then(|| stderr(&out))
            },
        );
        assert!(refused.contains(WEBHOOK), "{refused}");
        let out = cluster
            .api
            .kubectl_stdin(&["apply", "-f", "-"], &pod("apps", "refused").to_string());
        assert!(!out.status.success(), "created while the webhook is down");
        let message = stderr(&out);
        assert!(
            message.contains(&format!("failed calling webhook \"{WEBHOOK}\"")),
            "{message}"
        );
        assert!(cluster
            .api
            .get_json(&["pod", "-n", "apps", "refused"])
            .is_none());
        assert_untouched(&cluster.apply_pod(&pod("shop", "elsewhere")));
        cluster.api.apply(&namespace(
            RELEASE_NS,
            json!({"outrigger.dev/inject": "enabled"}),
        ));
        assert_untouched(&cluster.apply_pod(&pod(RELEASE_NS, "operator-like")));
    });

    // The operator is back (with the upgraded certificate): injection again.
    cluster.chart = upgraded;
    cluster.start_operator().await;
    blocking(|| assert_injected(&cluster.apply_pod(&pod("apps", "after")), &["app"]));

    // `helm uninstall` (the operator goes with its Deployment): once the
    // chart's objects are gone, pods are created again, untouched, even
    // though the configuration said Fail.
    cluster.stop_operator().await;
    blocking(|| {
        let out = cluster
            .api
            .kubectl_stdin(&["delete", "-f", "-"], &cluster.chart);
        assert!(out.status.success(), "uninstall: {}", stderr(&out));
        cluster.api.kubectl_ok(&[
            "delete",
            "endpointslice",
            "-n",
            RELEASE_NS,
            "outrigger-webhook-1",
        ]);
        poll(Duration::from_secs(20), "the webhook gone", || {
            cluster
                .dry_run(&pod("apps", "probe"))
                .0
                .status
                .success()
                .then_some(())
        });
        assert_untouched(&cluster.apply_pod(&pod("apps", "after-uninstall")));
    });
}

/// A ValidatingWebhookConfiguration by URL: the validating plugin runs too,
/// `timeoutSeconds` bounds a webhook that never answers, and failurePolicy
/// decides.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validating_webhooks_by_url_time_out_per_their_configuration() {
    let Some(api) = KubeApi::start("admission-validating") else {
        return;
    };
    // Accepts connections (the kernel completes the handshake) and never
    // answers: a hung webhook.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let config = |policy: &str| {
        json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": "guard"},
            "webhooks": [{
                "name": "guard.example.test",
                "clientConfig": {"url": format!("https://127.0.0.1:{port}/validate")},
                "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}],
                "namespaceSelector": {"matchLabels": {"guard": "on"}},
                "failurePolicy": policy,
                "sideEffects": "None",
                "admissionReviewVersions": ["v1"],
                "timeoutSeconds": 1,
            }],
        })
        .to_string()
    };
    blocking(|| {
        api.apply(&namespace("guarded", json!({"guard": "on"})));
        let out = api.kubectl_stdin(&["apply", "-f", "-"], &config("Fail"));
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(!stderr(&out).contains("Warning"), "{}", stderr(&out));
        let stored = api
            .get_json(&["validatingwebhookconfiguration", "guard"])
            .unwrap();
        // Defaults as kube-apiserver applies them.
        let hook = &stored["webhooks"][0];
        assert_eq!(hook["matchPolicy"], "Equivalent");
        assert_eq!(hook["rules"][0]["scope"], "*");
        assert_eq!(hook["objectSelector"], json!({}));

        let create = |name: &str| {
            let started = Instant::now();
            let out = api.kubectl_stdin(&["apply", "-f", "-"], &pod("guarded", name).to_string());
            (out, started.elapsed())
        };
        poll(Duration::from_secs(20), "the guard in effect", || {
            let out = api.kubectl_stdin(
                &["create", "--dry-run=server", "-f", "-"],
                &pod("guarded", "probe").to_string(),
            );
            (!out.status.success()).then_some(())
        });
        let (out, took) = create("refused");
        assert!(!out.status.success(), "created past a hung webhook");
        let message = stderr(&out);
        assert!(
            message.contains("failed calling webhook \"guard.example.test\""),
            "{message}"
        );
        assert!(
            took < Duration::from_secs(5),
            "timeoutSeconds 1, took {took:?}"
        );
        assert!(api.get_json(&["pod", "-n", "guarded", "refused"]).is_none());
        // Other namespaces are not sent to it.
        let out = api.kubectl_stdin(&["apply", "-f", "-"], &pod("shop", "free").to_string());
        assert!(out.status.success(), "{}", stderr(&out));

        // Ignore: the same hung webhook no longer blocks creation.
        api.apply(&config("Ignore"));
        poll(
            Duration::from_secs(20),
            "failurePolicy Ignore in effect",
            || create("admitted").0.status.success().then_some(()),
        );
        assert!(api
            .get_json(&["pod", "-n", "guarded", "admitted"])
            .is_some());
    });
    drop(silent);
}
