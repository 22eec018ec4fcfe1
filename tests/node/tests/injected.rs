//! An injected pod on the test node: the chart's objects (rendered by helm)
//! on the test API server, the real operator on the host serving the
//! injection webhook and the policy server, and a Deployment in a labelled
//! namespace whose pods the API server sends through the webhook. The node
//! runs what the webhook made of them: `outrigger-proxy init` installs the
//! redirect in the pod's network namespace, the proxy (a native sidecar) is
//! ready before the app starts, and a client pod calls the server by its
//! Service's DNS name through both proxies.
//!
//! Simulated: the operator runs on the host, not as the chart's Deployment;
//! its webhook is reached by the API server through an EndpointSlice the test
//! writes (127.0.0.1), its policy server by pods through one pointing at the
//! node's bridge address, where the operator listens.
//! Needs root, `ip`, `iptables`, helm and curl.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

mod common;

use common::*;
use outrigger_e2e::kube_api::KubeApi;
use outrigger_e2e::{binary, workspace_root, Process};
use serde_json::{json, Value};

/// The chart's documents that this API server serves and `helm install`
/// would create: TLS Secrets, ServiceAccount, Services, the webhook.
fn chart_objects() -> Option<String> {
    let helm = outrigger_e2e::kube_api::helm()
        .expect("no helm: run bash tests/apiserver/install-kubectl.sh (tests/run.sh does)");
    let chart = workspace_root().join("charts/outrigger");
    let out = Command::new(helm)
        .args(["template", "outrigger", chart.to_str().unwrap()])
        .args(["--namespace", RELEASE_NS])
        .output()
        .expect("helm runs");
    assert!(out.status.success(), "helm template: {}", stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    let kinds = [
        "kind: Secret",
        "kind: ServiceAccount",
        "kind: Service",
        "kind: MutatingWebhookConfiguration",
    ];
    let docs: Vec<&str> = text
        .split("\n---")
        .map(|d| d.trim_start_matches("---").trim())
        .filter(|d| d.lines().any(|l| kinds.contains(&l)))
        .collect();
    Some(docs.join("\n---\n"))
}

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
    let path = dir.join(secret).join(key);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, data).unwrap();
    path
}

/// The EndpointSlice an EndpointSlice controller would write for the
/// operator's Service `service` (port `port_name`).
fn slice(service: &str, port_name: &str, ip: &str, port: u16) -> String {
    json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": format!("{service}-operator"),
            "namespace": RELEASE_NS,
            "labels": {"kubernetes.io/service-name": service},
        },
        "addressType": "IPv4",
        "ports": [{"name": port_name, "port": port, "protocol": "TCP"}],
        "endpoints": [{"addresses": [ip], "conditions": {"ready": true}}],
    })
    .to_string()
}

/// The client pod that calls `web` through both proxies.
const CLIENT: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: shop, labels: {app: client}}
spec:
  terminationGracePeriodSeconds: 2
  containers:
  - name: app
    image: outrigger/shell
    command:
    - sh
    - -c
    - |
      outrigger-testnode test-client --patience-seconds 60 http://web.shop.svc.cluster.local/ || exit 1
      echo called
      exec sleep 600
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_injected_deployment_runs_and_is_called_through_both_proxies() {
    require_node_tools();
    let Some(api) = KubeApi::start("testnode-injected") else {
        return;
    };
    let Some(chart) = chart_objects() else {
        return;
    };
    // The programs the node runs for the images: the proxy beside this one.
    binary("outrigger-proxy", "outrigger-proxy").expect("the proxy builds");
    let op_bin = binary("outrigger-operator", "outrigger-operator").expect("the operator builds");
    tokio::task::block_in_place(|| {
        api.install_crds();
        let out = api.kubectl_stdin(&["apply", "-f", "-"], &chart);
        assert!(out.status.success(), "apply the chart: {}", stderr(&out));
    });

    let state = api.dir.join("node");
    let node = NodeProcess::start(&api, &state);
    // The node's bridge address, where the operator's policy server listens.
    let host_ip = wait_for(Duration::from_secs(30), "node network", &node, || {
        let log = plain(&node_log(&node));
        let line = log.lines().find(|l| l.contains("network ready"))?;
        let at = line.find("host_ip")?;
        let ip: String = line[at..]
            .chars()
            .skip_while(|c| !c.is_ascii_digit())
            .take_while(|c| c.is_ascii_digit() || *c == '.')
            .collect();
        Some(ip)
    });

    let dir = api.dir.join("operator-tls");
    let files = tokio::task::block_in_place(|| {
        [
            ("outrigger-policy-tls", "tls.crt"),
            ("outrigger-policy-tls", "tls.key"),
            ("outrigger-policy-tls", "ca.crt"),
            ("outrigger-webhook-tls", "tls.crt"),
            ("outrigger-webhook-tls", "tls.key"),
        ]
        .map(|(s, k)| secret_file(&api, s, k, &dir))
    });
    let args: Vec<String> = vec![
        "run".into(),
        "--admin-addr=127.0.0.1:0".into(),
        format!("--policy-addr={host_ip}:0"),
        format!("--tls-cert={}", files[0].display()),
        format!("--tls-key={}", files[1].display()),
        format!("--lease-namespace={RELEASE_NS}"),
        "--cluster-domain=cluster.local".into(),
        "--webhook-addr=127.0.0.1:0".into(),
        format!("--webhook-tls-cert={}", files[3].display()),
        format!("--webhook-tls-key={}", files[4].display()),
        "--proxy-image=outrigger/proxy:0.1.0".into(),
        format!("--control-plane-url={CONTROL_PLANE}"),
        format!("--control-ca-file={}", files[2].display()),
        "--identity=outrigger-operator-0".into(),
    ];
    let operator = Process::start_with_env(
        &op_bin,
        &args,
        &[
            ("KUBECONFIG", api.kubeconfig.as_path()),
            ("POD_NAMESPACE", Path::new(RELEASE_NS)),
            ("OUTRIGGER_LOG", Path::new("warn")),
        ],
    )
    .await
    .wait_ready(Duration::from_secs(30))
    .await;
    let webhook_port = operator.addr("webhook").port();
    let policy_port = operator.addr("policy").port();
    tokio::task::block_in_place(|| {
        api.apply(&slice(
            "outrigger-webhook",
            "https",
            "127.0.0.1",
            webhook_port,
        ));
        api.apply(&slice("outrigger-policy", "policy", &host_ip, policy_port));
        // The webhook answers once the API server's informers see it.
        let probe = json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": "shop", "labels": {"outrigger.dev/inject": "enabled"}}});
        api.apply(&probe.to_string());
        let pod = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "probe", "namespace": "shop"},
            "spec": {"containers": [{"name": "app", "image": "outrigger/shell"}]}});
        wait_for(
            Duration::from_secs(20),
            "the webhook injects",
            &node,
            || {
                let out = api.kubectl_stdin(
                    &["create", "--dry-run=server", "-o", "json", "-f", "-"],
                    &pod.to_string(),
                );
                let pod: Value = serde_json::from_slice(&out.stdout).ok()?;
                pod["spec"]["initContainers"]
                    .as_array()?
                    .iter()
                    .any(|c| c["name"] == "outrigger-init")
                    .then_some(())
            },
        );

        apps_run_injected(&api, &node, &state);
        api.kubectl_ok(&["delete", "namespace", "shop", "--wait=false"]);
    });
    drop(operator);
    drop(node);
}

/// `helm install` of the chart: the operator runs as the chart's Deployment
/// (two replicas, leader election) on the node, reaches the API server
/// through the `kubernetes` Service with its service-account token, serves
/// the webhook to the API server and the policy server to proxies through
/// the EndpointSlices the node writes for its pods; then injected apps run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_install_runs_the_operator_on_the_node_and_injected_apps_work() {
    require_node_tools();
    let Some(api) = KubeApi::start("testnode-helm") else {
        return;
    };
    let helm = outrigger_e2e::kube_api::helm()
        .expect("no helm: run bash tests/apiserver/install-kubectl.sh (tests/run.sh does)");
    binary("outrigger-proxy", "outrigger-proxy").expect("the proxy builds");
    binary("outrigger-operator", "outrigger-operator").expect("the operator builds");
    let state = api.dir.join("node");
    let node = NodeProcess::start(&api, &state);
    tokio::task::block_in_place(|| {
        let took = helm_install(&api, &node, &helm);
        eprintln!("helm install to 2 ready operator pods: {took:?}");
        let pods = api
            .get_json(&[
                "-n",
                RELEASE_NS,
                "pods",
                "-l",
                "app.kubernetes.io/component=operator",
            ])
            .unwrap();
        let names: Vec<String> = pods["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_string))
            .collect();
        assert_eq!(names.len(), 2, "{pods:#}");
        // One replica leads (its pod name in the Lease).
        // The leader election Lease (the replicas' proxy-report Leases carry
        // holders too).
        let holder = wait_for(Duration::from_secs(60), "a leader", &node, || {
            let lease = api.get_json(&["-n", RELEASE_NS, "lease", "outrigger-operator"])?;
            lease["spec"]["holderIdentity"]
                .as_str()
                .map(str::to_string)
                .filter(|h| names.contains(h))
        });
        eprintln!("leader: {holder}");
        api.apply(
            &json!({"apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": "shop", "labels": {"outrigger.dev/inject": "enabled"}}})
            .to_string(),
        );
        apps_run_injected(&api, &node, &state);
        // Both proxies hold a policy stream to the operator pods,
        // authenticated with their projected tokens (TokenReview).
        let pods = api
            .get_json(&[
                "-n",
                RELEASE_NS,
                "pods",
                "-l",
                "app.kubernetes.io/component=operator",
            ])
            .unwrap();
        let ips: Vec<String> = pods["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|p| p["status"]["podIP"].as_str().map(str::to_string))
            .collect();
        let connected = wait_for(Duration::from_secs(30), "proxies connected", &node, || {
            let text: String = ips.iter().map(|ip| admin_metrics(ip, 9090)).collect();
            let n = sample(&text, "outrigger_operator_connected_proxies", "");
            (n >= 2.0).then_some(text)
        });
        assert_eq!(
            sample(&connected, "outrigger_operator_auth_failures_total", ""),
            0.0,
            "{connected}"
        );
        // The leader's pod is deleted: the other replica takes the Lease and
        // the Deployment brings a new pod.
        let began = Instant::now();
        api.kubectl_ok(&["-n", RELEASE_NS, "delete", "pod", &holder, "--wait=false"]);
        let next = wait_for(Duration::from_secs(60), "a new leader", &node, || {
            let lease = api.get_json(&["-n", RELEASE_NS, "lease", "outrigger-operator"])?;
            lease["spec"]["holderIdentity"]
                .as_str()
                .map(str::to_string)
                // A leader that stops releases the Lease (empty holder)
                // before the other replica takes it.
                .filter(|h| !h.is_empty() && *h != holder)
        });
        eprintln!("leadership moved to {next} after {:?}", began.elapsed());
        assert!(names.contains(&next), "{next} is the other replica");
        let out = api.kubectl(&[
            "-n",
            RELEASE_NS,
            "rollout",
            "status",
            "deployment/outrigger-operator",
            "--timeout=90s",
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
    });
    drop(node);
}

/// The apps of `web_app` and CLIENT (namespace labelled for injection) run injected and the
/// client reaches the server through both proxies.
fn apps_run_injected(api: &KubeApi, node: &NodeProcess, state: &Path) {
    let began = Instant::now();
    api.apply(&format!("{}---\n{CLIENT}", web_app(1)));
    let web = wait_for(Duration::from_secs(90), "web pod Ready", node, || {
        let list = api.get_json(&["-n", "shop", "pods", "-l", "app=web"])?;
        let pod = list["items"].get(0)?.clone();
        ready(&pod).then_some(pod)
    });
    eprintln!(
        "injected web pod Ready {:?} after the apply",
        began.elapsed()
    );
    let init: Vec<&str> = web["spec"]["initContainers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(init[..2], ["outrigger-init", "outrigger-proxy"], "{web:#}");
    // The proxy was started (startup probe passed) before the app ran.
    let statuses = &web["status"]["initContainerStatuses"];
    let proxy = statuses
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "outrigger-proxy")
        .unwrap();
    assert_eq!(proxy["started"], true, "{web:#}");
    let app = &web["status"]["containerStatuses"][0];
    let proxy_since = proxy["state"]["running"]["startedAt"].as_str().unwrap();
    let app_since = app["state"]["running"]["startedAt"].as_str().unwrap();
    assert!(proxy_since <= app_since, "{web:#}");
    let init_done = &statuses[0]["state"]["terminated"];
    assert_eq!(init_done["exitCode"], 0, "outrigger-init: {web:#}");

    let client = wait_for(Duration::from_secs(90), "client called", node, || {
        let pod = api.get_json(&["-n", "shop", "pod", "client"])?;
        let name = "client";
        let uid = pod["metadata"]["uid"].as_str()?;
        let log =
            std::fs::read_to_string(state.join(format!("pods/shop_{name}_{uid}/logs/app.log")))
                .unwrap_or_default();
        assert_ne!(pod["status"]["phase"], "Failed", "{pod:#}\n{log}");
        log.contains("called").then_some((pod, log))
    });
    eprintln!("client: {}", client.1.trim());
    assert!(client.1.contains("200 hello from"), "{}", client.1);
    let client_ip = client.0["status"]["podIP"].as_str().unwrap().to_string();
    let web_ip = web["status"]["podIP"].as_str().unwrap().to_string();
    let out = metrics(&client_ip);
    let inb = metrics(&web_ip);
    for (who, m, dir) in [("client", &out, "outbound"), ("server", &inb, "inbound")] {
        let lines: Vec<&str> = m
            .lines()
            .filter(|l| l.starts_with("outrigger_requests_total") && l.contains(dir))
            .collect();
        eprintln!("{who} proxy: {lines:?}");
    }
    assert!(
        sample(
            &out,
            "outrigger_requests_total",
            "direction=\"outbound\",route=\"default\",status_class=\"2xx\""
        ) >= 1.0,
        "client proxy metrics:\n{out}"
    );
    assert!(
        // The client's call (the readiness probe's are to the pod IP).
        sample(
            &inb,
            "outrigger_requests_total",
            "web.shop.svc.cluster.local:80\",direction=\"inbound\",route=\"default\",status_class=\"2xx\""
        ) >= 1.0,
        "server proxy metrics:\n{inb}"
    );
}
