//! The user's path on a real Kubernetes API server (tests/apiserver): the
//! Helm chart installed with the real `helm`, service-account tokens issued
//! and reviewed by the API server, and the real `outrigger-operator`
//! authenticating proxies through TokenReview.
//!
//! What differs from a cluster: nothing runs the chart's Deployment here (the
//! test node does that elsewhere), no controllers run (the tests write
//! EndpointSlices themselves), and RBAC objects are stored but not enforced
//! (every authenticated user, service accounts included, may do everything;
//! tests/apiserver/wrapper/main.go). Tokens are the API server's own:
//! signed JWTs checked for signature, expiry, audience and that their service
//! account (and bound pod) still exist with the same uid.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use outrigger_e2e::kube_api::KubeApi;
use outrigger_e2e::{binary, workspace_root, Process};
use serde_json::{json, Value};

const RELEASE_NS: &str = "outrigger-system";

/// Blocking kubectl calls without stalling the runtime's other tasks.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// helm against this API server; None (after printing why) without helm
/// outside CI.
fn helm(api: &KubeApi, args: &[&str]) -> Option<std::process::Output> {
    let Some(helm) = outrigger_e2e::kube_api::helm() else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "helm is required in CI (tests/apiserver/install-kubectl.sh installs it)"
        );
        eprintln!("SKIPPED: no helm (tests/apiserver/install-kubectl.sh)");
        return None;
    };
    let cache = api.dir.join("helm-cache");
    Some(
        Command::new(helm)
            .env("KUBECONFIG", &api.kubeconfig)
            .env("HELM_CACHE_HOME", &cache)
            .env("HELM_CONFIG_HOME", cache.join("config"))
            .env("HELM_DATA_HOME", cache.join("data"))
            .args(args)
            .output()
            .expect("helm runs"),
    )
}

/// The kinds the chart installs, as `kubectl get` names them.
const CHART_KINDS: &str =
    "deploy,svc,sa,role,rolebinding,clusterrole,clusterrolebinding,pdb,mutatingwebhookconfiguration,secret";

/// `kind/name` of every object of CHART_KINDS in outrigger-system (and the
/// cluster-scoped ones), sorted, without the namespace's own default
/// objects (none are created here: no controllers run).
fn chart_objects(api: &KubeApi) -> Vec<String> {
    let out = api.kubectl_ok(&["get", CHART_KINDS, "-n", RELEASE_NS, "-o", "name"]);
    let mut names: Vec<String> = out.lines().map(str::to_string).collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_install_stores_every_object_of_the_chart_and_uninstall_removes_them() {
    let Some(api) = KubeApi::start("helm") else {
        return;
    };
    let chart = workspace_root().join("charts/outrigger");
    let started = Instant::now();
    let Some(out) = blocking(|| {
        helm(
            &api,
            &[
                "install",
                "outrigger",
                chart.to_str().unwrap(),
                "--namespace",
                RELEASE_NS,
                "--timeout=60s",
            ],
        )
    }) else {
        return;
    };
    assert!(out.status.success(), "helm install: {}", stderr(&out));
    // helm warns on stderr about anything odd in discovery or the objects.
    assert!(
        !stderr(&out).to_lowercase().contains("warn"),
        "helm install warned: {}",
        stderr(&out)
    );
    eprintln!("helm install took {:?}", started.elapsed());

    let objects = blocking(|| chart_objects(&api));
    for expected in [
        "deployment.apps/outrigger-operator",
        "service/outrigger-policy",
        "service/outrigger-webhook",
        "service/outrigger-metrics",
        "serviceaccount/outrigger-operator",
        "role.rbac.authorization.k8s.io/outrigger-operator-leader",
        "rolebinding.rbac.authorization.k8s.io/outrigger-operator-leader",
        "clusterrole.rbac.authorization.k8s.io/outrigger-operator",
        "clusterrolebinding.rbac.authorization.k8s.io/outrigger-operator",
        "poddisruptionbudget.policy/outrigger-operator",
        "mutatingwebhookconfiguration.admissionregistration.k8s.io/outrigger-sidecar-injector",
        "secret/outrigger-policy-tls",
        "secret/outrigger-webhook-tls",
    ] {
        assert!(
            objects.iter().any(|o| o == expected),
            "{expected} not stored; stored: {objects:#?}"
        );
    }
    // helm's own record of the release.
    assert!(
        objects
            .iter()
            .any(|o| o.starts_with("secret/sh.helm.release.v1.outrigger.")),
        "{objects:#?}"
    );

    // The Deployment as kube-apiserver would store it: the chart's fields,
    // the defaults it leaves out, generation 1, an empty status.
    let deploy = blocking(|| {
        api.get_json(&["deploy", "-n", RELEASE_NS, "outrigger-operator"])
            .expect("the Deployment is stored")
    });
    assert_eq!(deploy["metadata"]["generation"], 1);
    assert_eq!(deploy["spec"]["replicas"], 2, "the chart's replicas");
    assert_eq!(
        deploy["spec"]["strategy"],
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}})
    );
    assert_eq!(deploy["spec"]["progressDeadlineSeconds"], 600, "default");
    assert_eq!(
        deploy["spec"]["template"]["spec"]["dnsPolicy"],
        "ClusterFirst"
    );
    assert_eq!(
        deploy["spec"]["template"]["spec"]["serviceAccountName"],
        "outrigger-operator"
    );
    let pdb = blocking(|| api.get_json(&["pdb", "-n", RELEASE_NS, "outrigger-operator"]))
        .expect("the PodDisruptionBudget is stored");
    assert_eq!(
        pdb["spec"]["selector"]["matchLabels"], deploy["spec"]["selector"]["matchLabels"],
        "the budget covers the operator's pods"
    );

    // helm upgrade with the same values changes nothing the server would
    // count as a spec change.
    let Some(out) = blocking(|| {
        helm(
            &api,
            &[
                "upgrade",
                "outrigger",
                chart.to_str().unwrap(),
                "--namespace",
                RELEASE_NS,
                "--reuse-values",
            ],
        )
    }) else {
        return;
    };
    assert!(out.status.success(), "helm upgrade: {}", stderr(&out));

    let Some(out) = blocking(|| helm(&api, &["uninstall", "outrigger", "--namespace", RELEASE_NS]))
    else {
        return;
    };
    assert!(out.status.success(), "helm uninstall: {}", stderr(&out));
    let left = blocking(|| chart_objects(&api));
    assert!(left.is_empty(), "left after helm uninstall: {left:#?}");
}

const DEPLOYMENT: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, namespace: shop}\nspec:\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec: {containers: [{name: web, image: web:1, ports: [{containerPort: 8080}]}]}\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workloads_get_kube_apiserver_defaults_generation_and_scale() {
    let Some(api) = KubeApi::start("workloads") else {
        return;
    };
    blocking(|| {
        api.apply(DEPLOYMENT);
        // Applying the same manifest again changes nothing (kubectl merges
        // the containers by name, from the OpenAPI's patch keys).
        let out = api.kubectl_stdin(&["apply", "-f", "-"], DEPLOYMENT);
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("unchanged") && stderr(&out).is_empty(),
            "re-apply: {} {}",
            String::from_utf8_lossy(&out.stdout),
            stderr(&out)
        );
        let d = api.get_json(&["deploy", "-n", "shop", "web"]).unwrap();
        assert_eq!(d["metadata"]["generation"], 1);
        assert_eq!(d["spec"]["replicas"], 1);
        assert_eq!(d["spec"]["revisionHistoryLimit"], 10);
        assert_eq!(d["spec"]["progressDeadlineSeconds"], 600);
        assert_eq!(
            d["spec"]["strategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}})
        );
        // Status writes do not bump the generation; spec changes (a scale
        // included) do.
        api.kubectl_ok(&[
            "patch",
            "deploy",
            "web",
            "-n",
            "shop",
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":{"replicas":1,"observedGeneration":1}}"#,
        ]);
        let d = api.get_json(&["deploy", "-n", "shop", "web"]).unwrap();
        assert_eq!(d["metadata"]["generation"], 1);
        assert_eq!(d["status"]["replicas"], 1);
        api.kubectl_ok(&["scale", "deploy", "web", "-n", "shop", "--replicas=3"]);
        let d = api.get_json(&["deploy", "-n", "shop", "web"]).unwrap();
        assert_eq!(d["spec"]["replicas"], 3);
        assert_eq!(d["metadata"]["generation"], 2);
        assert_eq!(d["status"]["replicas"], 1, "status kept");
        let scale = api.kubectl_ok(&[
            "get",
            "--raw",
            "/apis/apps/v1/namespaces/shop/deployments/web/scale",
        ]);
        let scale: Value = serde_json::from_str(&scale).unwrap();
        assert_eq!(scale["kind"], "Scale");
        assert_eq!(scale["spec"]["replicas"], 3);
        assert_eq!(scale["status"]["selector"], "app=web");
        // A selector that does not select the template is refused, and a
        // selector may not change.
        let out = api.kubectl_stdin(
            &["apply", "-f", "-"],
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: bad, namespace: shop}\nspec:\n  selector: {matchLabels: {app: one}}\n  template:\n    metadata: {labels: {app: two}}\n    spec: {containers: [{name: c, image: c}]}\n",
        );
        assert!(!out.status.success());
        assert!(
            stderr(&out).contains("does not match template"),
            "{}",
            stderr(&out)
        );
        let out = api.kubectl(&[
            "patch", "deploy", "web", "-n", "shop", "--type=merge",
            "-p", r#"{"spec":{"selector":{"matchLabels":{"app":"other"}},"template":{"metadata":{"labels":{"app":"other"}}}}}"#,
        ]);
        assert!(
            stderr(&out).contains("field is immutable"),
            "{}",
            stderr(&out)
        );

        // A Job: batch/v1 defaults, and the selector kube-apiserver generates.
        api.apply(
            "apiVersion: batch/v1\nkind: Job\nmetadata: {name: migrate, namespace: shop}\nspec:\n  template:\n    spec: {restartPolicy: Never, containers: [{name: m, image: m:1}]}\n",
        );
        let j = api.get_json(&["job", "-n", "shop", "migrate"]).unwrap();
        let uid = j["metadata"]["uid"].as_str().unwrap();
        assert_eq!(j["spec"]["completions"], 1);
        assert_eq!(j["spec"]["parallelism"], 1);
        assert_eq!(j["spec"]["backoffLimit"], 6);
        assert_eq!(
            j["spec"]["selector"],
            json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}})
        );
        let labels = &j["spec"]["template"]["metadata"]["labels"];
        assert_eq!(labels["batch.kubernetes.io/controller-uid"], uid);
        assert_eq!(labels["batch.kubernetes.io/job-name"], "migrate");
        // A Job's pods may not restart Always.
        let out = api.kubectl_stdin(
            &["apply", "-f", "-"],
            "apiVersion: batch/v1\nkind: Job\nmetadata: {name: bad, namespace: shop}\nspec:\n  template:\n    spec: {containers: [{name: m, image: m:1}]}\n",
        );
        assert!(stderr(&out).contains("restartPolicy"), "{}", stderr(&out));
        // Nothing kubectl would warn about when discovering or applying.
        let out = api.kubectl(&["api-resources"]);
        assert!(
            out.status.success() && stderr(&out).is_empty(),
            "{}",
            stderr(&out)
        );
    });
}

/// `kubectl create token` with extra arguments: the token.
fn create_token(api: &KubeApi, ns: &str, sa: &str, extra: &[&str]) -> String {
    let mut args = vec!["create", "token", sa, "-n", ns];
    args.extend_from_slice(extra);
    api.kubectl_ok(&args).trim().to_string()
}

/// A TokenReview of `token` for `audiences` (none: the server's own), as
/// the API server answers it.
fn review(api: &KubeApi, token: &str, audiences: &[&str]) -> Value {
    let mut spec = json!({"token": token});
    if !audiences.is_empty() {
        spec["audiences"] = json!(audiences);
    }
    let body =
        json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": spec});
    let out = api.kubectl_stdin(&["create", "-f", "-", "-o", "json"], &body.to_string());
    assert!(out.status.success(), "TokenReview: {}", stderr(&out));
    serde_json::from_slice::<Value>(&out.stdout).unwrap()["status"].clone()
}

/// Whether a review's status authenticates (`authenticated: false` is
/// omitted from the answer, as kube-apiserver omits it).
fn authenticated(status: &Value) -> bool {
    status["authenticated"] == true
}

/// The claims of a JWT (its middle part, base64url without padding).
fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("a JWT");
    let mut bits = 0u32;
    let mut nbits = 0;
    let mut bytes = Vec::new();
    for c in payload.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => panic!("not base64url: {payload}"),
        };
        bits = (bits << 6) | u32::from(v);
        nbits += 6;
        if nbits >= 8 {
            nbits -= 8;
            bytes.push((bits >> nbits) as u8);
        }
    }
    serde_json::from_slice(&bytes).expect("JSON claims")
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn pod(name: &str, ns: &str, sa: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {ns}, labels: {{app: {sa}}}}}\nspec:\n  serviceAccountName: {sa}\n  containers: [{{name: app, image: app:1}}]\n"
    )
}

/// The API server's URL, from the admin kubeconfig.
fn server_url(api: &KubeApi) -> String {
    api.kubectl_ok(&[
        "config",
        "view",
        "-o",
        "jsonpath={.clusters[0].cluster.server}",
    ])
}

/// The API server's CA certificate (what a pod finds as ca.crt).
fn ca_file(api: &KubeApi) -> PathBuf {
    api.dir.join("apiserver/ca.crt")
}

/// kubectl with nothing but `token` as its credentials.
fn kubectl_with_token(api: &KubeApi, token: &str, args: &[&str]) -> std::process::Output {
    let server = format!("--server={}", server_url(api));
    let ca = format!("--certificate-authority={}", ca_file(api).display());
    let token = format!("--token={token}");
    let mut all = vec!["--kubeconfig=/dev/null", &server, &ca, &token];
    all.extend_from_slice(args);
    api.kubectl(&all)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_account_tokens_are_issued_reviewed_and_authenticate_requests() {
    let Some(api) = KubeApi::start("tokens") else {
        return;
    };
    blocking(|| {
        api.kubectl_ok(&["create", "serviceaccount", "web", "-n", "shop"]);
        let sa = api.get_json(&["sa", "-n", "shop", "web"]).unwrap();
        let sa_uid = sa["metadata"]["uid"].as_str().unwrap().to_string();
        assert!(!sa_uid.is_empty(), "a ServiceAccount has a uid");

        // Audience outrigger: reviewed for outrigger, authenticated.
        let token = create_token(&api, "shop", "web", &["--audience", "outrigger"]);
        let status = review(&api, &token, &["outrigger"]);
        assert_eq!(status["authenticated"], true, "{status:#}");
        assert_eq!(status["audiences"], json!(["outrigger"]));
        assert_eq!(status["user"]["username"], "system:serviceaccount:shop:web");
        assert_eq!(status["user"]["uid"], sa_uid.as_str());
        assert_eq!(
            status["user"]["groups"],
            json!([
                "system:serviceaccounts",
                "system:serviceaccounts:shop",
                "system:authenticated"
            ])
        );
        // ... and not for another audience, nor for the API server's own.
        let status = review(&api, &token, &["kubernetes"]);
        assert!(!authenticated(&status), "{status:#}");
        assert!(
            status["error"].as_str().unwrap().contains("audiences"),
            "{status:#}"
        );
        let status = review(&api, &token, &[]);
        assert!(!authenticated(&status), "{status:#}");

        // The claims: one hour by default, --duration 10m is 600 seconds;
        // less than 10 minutes is refused.
        let c = claims(&token);
        assert_eq!(c["sub"], "system:serviceaccount:shop:web");
        assert_eq!(c["aud"], json!(["outrigger"]));
        assert_eq!(c["kubernetes.io"]["namespace"], "shop");
        assert_eq!(
            c["kubernetes.io"]["serviceaccount"],
            json!({"name": "web", "uid": sa_uid})
        );
        let exp = c["exp"].as_i64().unwrap();
        assert!((exp - now() - 3600).abs() < 60, "default expiry: {c:#}");
        let short = create_token(&api, "shop", "web", &["--duration", "10m"]);
        let c = claims(&short);
        let (exp, iat) = (c["exp"].as_i64().unwrap(), c["iat"].as_i64().unwrap());
        assert_eq!(exp - iat, 600, "{c:#}");
        assert!((exp - now() - 600).abs() < 60, "{c:#}");
        let out = api.kubectl(&["create", "token", "web", "-n", "shop", "--duration", "5m"]);
        assert!(!out.status.success());
        assert!(stderr(&out).contains("10 minutes"), "{}", stderr(&out));

        // A request to the API with a token of the server's audience is
        // authenticated as the service account; any other token is refused.
        let out = kubectl_with_token(&api, &short, &["auth", "whoami", "-o", "json"]);
        assert!(out.status.success(), "{}", stderr(&out));
        let who: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(
            who["status"]["userInfo"]["username"],
            "system:serviceaccount:shop:web"
        );
        let out = kubectl_with_token(&api, &short, &["get", "pods", "-n", "shop"]);
        assert!(out.status.success(), "{}", stderr(&out));
        // The serving certificate names the API server as pods know it
        // (the `kubernetes` Service, whose address is reserved), so an
        // in-cluster client's TLS check passes.
        let out = kubectl_with_token(
            &api,
            &short,
            &[
                "--tls-server-name=kubernetes.default.svc",
                "get",
                "sa",
                "-n",
                "shop",
            ],
        );
        assert!(out.status.success(), "{}", stderr(&out));
        api.apply(
            "apiVersion: v1\nkind: Service\nmetadata: {name: kubernetes, namespace: default}\nspec:\n  ports: [{name: https, port: 443, targetPort: 6443}]\n",
        );
        let ip = api.kubectl_ok(&[
            "get",
            "svc",
            "kubernetes",
            "-n",
            "default",
            "-o",
            "jsonpath={.spec.clusterIP}",
        ]);
        assert_eq!(ip, "10.96.0.1");
        let out = kubectl_with_token(
            &api,
            &short,
            &["--tls-server-name=10.96.0.1", "get", "sa", "-n", "shop"],
        );
        assert!(out.status.success(), "{}", stderr(&out));
        for bad in [token.as_str(), "not-a-token"] {
            let out = kubectl_with_token(&api, bad, &["get", "pods", "-n", "shop"]);
            assert!(
                stderr(&out).contains("Unauthorized"),
                "{bad}: {}",
                stderr(&out)
            );
        }

        // A token bound to a pod carries the pod and ends with it.
        api.apply(&pod("web-0", "shop", "web"));
        let pod_uid = api.get_json(&["pod", "-n", "shop", "web-0"]).unwrap()["metadata"]["uid"]
            .as_str()
            .unwrap()
            .to_string();
        let bound = create_token(
            &api,
            "shop",
            "web",
            &[
                "--audience",
                "outrigger",
                "--bound-object-kind",
                "Pod",
                "--bound-object-name",
                "web-0",
            ],
        );
        assert_eq!(
            claims(&bound)["kubernetes.io"]["pod"],
            json!({"name": "web-0", "uid": pod_uid})
        );
        let status = review(&api, &bound, &["outrigger"]);
        assert_eq!(status["authenticated"], true, "{status:#}");
        assert_eq!(
            status["user"]["extra"]["authentication.kubernetes.io/pod-name"],
            json!(["web-0"])
        );
        assert_eq!(
            status["user"]["extra"]["authentication.kubernetes.io/pod-uid"],
            json!([pod_uid])
        );
        api.kubectl_ok(&["delete", "pod", "web-0", "-n", "shop"]);
        let status = review(&api, &bound, &["outrigger"]);
        assert!(!authenticated(&status), "{status:#}");
        // Nor does it come back with a new pod of the same name.
        api.apply(&pod("web-0", "shop", "web"));
        let status = review(&api, &bound, &["outrigger"]);
        assert!(!authenticated(&status), "{status:#}");
        assert!(
            status["error"].as_str().unwrap().contains("UID"),
            "{status:#}"
        );
        // A pod may only be bound to a token of its own service account.
        api.kubectl_ok(&["create", "serviceaccount", "other", "-n", "shop"]);
        let out = api.kubectl(&[
            "create",
            "token",
            "other",
            "-n",
            "shop",
            "--bound-object-kind",
            "Pod",
            "--bound-object-name",
            "web-0",
        ]);
        assert!(!out.status.success(), "bound to another account's pod");

        // A service account deleted and created again: its old tokens are
        // not its new one's.
        let before = create_token(&api, "shop", "web", &["--audience", "outrigger"]);
        assert_eq!(review(&api, &before, &["outrigger"])["authenticated"], true);
        api.kubectl_ok(&["delete", "serviceaccount", "web", "-n", "shop"]);
        let status = review(&api, &before, &["outrigger"]);
        assert!(!authenticated(&status), "{status:#}");
        api.kubectl_ok(&["create", "serviceaccount", "web", "-n", "shop"]);
        let status = review(&api, &before, &["outrigger"]);
        assert!(!authenticated(&status), "{status:#}");
        let after = create_token(&api, "shop", "web", &["--audience", "outrigger"]);
        assert_eq!(review(&api, &after, &["outrigger"])["authenticated"], true);
    });
}

/// A kubeconfig that authenticates with a service-account token only (as
/// kube-rs's in-cluster configuration does: token + the API server's CA).
fn token_kubeconfig(api: &KubeApi, token: &str, path: &Path) {
    let config = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {{server: \"{}\", certificate-authority: \"{}\"}}\nusers:\n- name: u\n  user: {{token: \"{token}\"}}\ncontexts:\n- name: c\n  context: {{cluster: c, user: u, namespace: {RELEASE_NS}}}\ncurrent-context: c\n",
        server_url(api),
        ca_file(api).display()
    );
    std::fs::write(path, config).unwrap();
}

/// `GET /v1/watch?...` on the operator's policy server with an optional
/// bearer token: the response's status code (the stream itself is left
/// open and dropped).
async fn watch_status(op: &Process, query: &str, token: Option<&str>) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(op.addr("policy"))
        .await
        .expect("the policy server accepts");
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let request = format!(
        "GET /v1/watch?{query} HTTP/1.1\r\nHost: policy\r\n{auth}Connection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !head.windows(2).any(|w| w == b"\r\n") {
        let n = tokio::time::timeout_at(deadline, stream.read(&mut buf))
            .await
            .expect("a status line within 10s")
            .unwrap();
        assert!(n > 0, "connection closed before a status line");
        head.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&head);
    text.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Proxies authenticate to the real operator with their pod's token, which
/// the operator checks with the API server's TokenReview (audience
/// `outrigger`).
///
/// Namespace scoping, as the operator enforces it
/// (operator/src/policy_server/auth.rs): a proxy is whoever its token says,
/// system:serviceaccount:NS:SA. It may watch the inbound policy of a pod
/// (`pod=NS/POD:PORT`) only when the pod is in the token's own namespace NS
/// *and* runs as the token's service account SA; a token of another
/// namespace gets 403, so does one of another service account of the same
/// namespace; no token, or a token the API server does not authenticate for
/// `outrigger`, gets 401.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_authenticates_proxies_with_token_review() {
    let Some(api) = KubeApi::start("token-review") else {
        return;
    };
    blocking(|| {
        api.install_crds();
        api.kubectl_ok(&["create", "namespace", "other"]);
        for (ns, sa) in [
            ("shop", "web"),
            ("shop", "orders"),
            ("other", "web"),
            (RELEASE_NS, "outrigger-operator"),
        ] {
            api.kubectl_ok(&["create", "serviceaccount", sa, "-n", ns]);
        }
        api.apply(&pod("web-0", "shop", "web"));
        api.apply(
            "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: shop}\nspec:\n  selector: {app: web}\n  ports: [{name: http, port: 80, targetPort: 8080}]\n",
        );
        api.apply(
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: web-1, namespace: shop, labels: {kubernetes.io/service-name: web}}\naddressType: IPv4\nports: [{name: http, port: 8080, protocol: TCP}]\nendpoints: [{addresses: [127.0.0.1], conditions: {ready: true}, targetRef: {kind: Pod, name: web-0, namespace: shop}}]\n",
        );
    });

    // The operator itself reaches the API as its service account, with a
    // token of the API server's audience (not the admin certificate).
    let operator_token = blocking(|| create_token(&api, RELEASE_NS, "outrigger-operator", &[]));
    let kubeconfig = api.dir.join("operator-kubeconfig");
    blocking(|| token_kubeconfig(&api, &operator_token, &kubeconfig));
    let bin = binary("outrigger-operator", "outrigger-operator").unwrap();
    let args: Vec<String> = [
        "run",
        "--insecure-plaintext",
        "--auth=token-review",
        "--admin-addr=127.0.0.1:0",
        "--policy-addr=127.0.0.1:0",
        "--heartbeat=1s",
        "--identity=operator-a",
        "--lease-duration=2s",
        "--lease-renew=500ms",
    ]
    .map(String::from)
    .to_vec();
    let op = Process::start_with_env(
        &bin,
        &args,
        &[
            ("KUBECONFIG", kubeconfig.as_path()),
            ("OUTRIGGER_LOG", Path::new("warn")),
        ],
    )
    .await
    .wait_ready(Duration::from_secs(30))
    .await;

    let pod_token = |ns: &str, sa: &str, bound: Option<&str>| {
        let mut extra = vec!["--audience", "outrigger"];
        if let Some(pod) = bound {
            extra.extend(["--bound-object-kind", "Pod", "--bound-object-name", pod]);
        }
        blocking(|| create_token(&api, ns, sa, &extra))
    };
    let web = pod_token("shop", "web", Some("web-0"));
    let query = "pod=shop/web-0:8080&proxy=web-0";

    // The pod's own token: accepted (once the operator's Pod cache has it).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = watch_status(&op, query, Some(&web)).await;
        if status == 200 {
            break;
        }
        assert!(
            status == 403 && Instant::now() < deadline,
            "the pod's own token: {status}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Another namespace's token, even of a service account named alike.
    let other_ns = pod_token("other", "web", None);
    assert_eq!(watch_status(&op, query, Some(&other_ns)).await, 403);
    // Another service account of the same namespace.
    let orders = pod_token("shop", "orders", None);
    assert_eq!(watch_status(&op, query, Some(&orders)).await, 403);
    // No token; a token for the API server's audience, not outrigger's; not
    // a token at all.
    assert_eq!(watch_status(&op, query, None).await, 401);
    let wrong_audience = blocking(|| create_token(&api, "shop", "web", &[]));
    assert_eq!(watch_status(&op, query, Some(&wrong_audience)).await, 401);
    assert_eq!(watch_status(&op, query, Some("not-a-token")).await, 401);
    // Any authenticated proxy may watch outbound destinations.
    assert_eq!(
        watch_status(
            &op,
            "destination=web.shop.svc.cluster.local:80&proxy=o",
            Some(&orders)
        )
        .await,
        200
    );
}
