//! Outrigger against a real Kubernetes API server (tests/apiserver: the
//! apiextensions-apiserver with etcd, one per test). CRDs, validation, CEL
//! rules, status, watches, server-side apply and Leases are the real ones;
//! Services, Pods and EndpointSlices are served by the harness's own minimal
//! registry (no controllers run: the tests write EndpointSlices themselves).
//! The mutating webhook is not called here (tests/admission.rs drives it).

use std::path::Path;
use std::time::{Duration, Instant};

use outrigger_e2e::kube_api::KubeApi;
use outrigger_e2e::{binary, http, temp_dir, workspace_root, Process};
use outrigger_tools::fault_upstream::{Fault, FaultConfig, FaultUpstream};
use serde_json::Value;

/// Blocking kubectl calls without stalling the runtime's other tasks.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

fn policy(name: &str, target: &str, attempts: u32) -> String {
    format!(
        "apiVersion: outrigger.dev/v1alpha1\nkind: ResiliencePolicy\nmetadata: {{name: {name}, namespace: shop}}\nspec:\n  targetRef: {{kind: Service, name: {target}}}\n  retry: {{attempts: {attempts}, backoff: {{base: 1ms, max: 5ms}}, budget: {{percent: 100, minRetryRate: {{count: 1000, interval: 1s}}}}}}\n"
    )
}

fn service(name: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: shop}}\nspec:\n  selector: {{app: {name}}}\n  ports: [{{name: http, port: 80, targetPort: http}}]\n"
    )
}

fn endpoint_slice(service: &str, port: u16) -> String {
    format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {service}-1, namespace: shop, labels: {{kubernetes.io/service-name: {service}}}}}\naddressType: IPv4\nports: [{{name: http, port: {port}, protocol: TCP}}]\nendpoints: [{{addresses: [127.0.0.1], conditions: {{ready: true}}}}]\n"
    )
}

/// `kubectl patch` (merge) of policy `name` in shop.
fn patch_policy(api: &KubeApi, name: &str, patch: &str) {
    blocking(|| {
        api.kubectl_ok(&[
            "patch",
            "-n",
            "shop",
            "rp",
            name,
            "--type=merge",
            "-p",
            patch,
        ])
    });
}

/// A condition of a policy's status: (status, reason, message).
fn condition(policy: &Value, kind: &str) -> Option<(String, String, String)> {
    policy["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)
        .map(|c| {
            (
                c["status"].as_str().unwrap_or_default().to_string(),
                c["reason"].as_str().unwrap_or_default().to_string(),
                c["message"].as_str().unwrap_or_default().to_string(),
            )
        })
}

/// Polls the policy until `check` holds; the last state on timeout.
async fn wait_for_policy(
    api: &KubeApi,
    name: &str,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let current = blocking(|| api.get_json(&["-n", "shop", "rp", name]));
        if let Some(p) = &current {
            if check(p) {
                return p.clone();
            }
        }
        assert!(
            Instant::now() < deadline,
            "{name}: {what} not reached within 20s; last: {current:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn operator(api: &KubeApi, identity: &str, extra: &[&str]) -> Process {
    operator_with_lease(api, identity, "2s", extra).await
}

async fn operator_with_lease(
    api: &KubeApi,
    identity: &str,
    lease_duration: &str,
    extra: &[&str],
) -> Process {
    let bin = binary("outrigger-operator", "outrigger-operator").unwrap();
    let token = api.dir.join("shared-token");
    std::fs::write(&token, "e2e-shared-token\n").unwrap();
    let mut args: Vec<String> = vec![
        "run".into(),
        "--insecure-plaintext".into(),
        "--auth=shared-token".into(),
        format!("--shared-token-file={}", token.display()),
        "--admin-addr=127.0.0.1:0".into(),
        "--policy-addr=127.0.0.1:0".into(),
        "--heartbeat=1s".into(),
        format!("--identity={identity}"),
        format!("--lease-duration={lease_duration}"),
        "--lease-renew=500ms".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    Process::start_with_env(
        &bin,
        &args,
        &[
            ("KUBECONFIG", api.kubeconfig.as_path()),
            ("OUTRIGGER_LOG", Path::new("warn")),
        ],
    )
    .await
    .wait_ready(Duration::from_secs(20))
    .await
}

async fn metric(process: &Process, name: &str) -> Option<f64> {
    let (_, body) = http(process.addr("admin"), "GET", "/metrics", "a")
        .await
        .ok()?;
    body.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crd_is_served_and_every_example_applies() {
    let Some(api) = KubeApi::start("crd") else {
        return;
    };
    blocking(|| {
        api.install_crds();
        let explain = api.kubectl_ok(&["explain", "rp.spec.retry.on"]);
        assert!(explain.contains("connect-failure"), "{explain}");
        let explain = api.kubectl_ok(&["explain", "resiliencepolicy.spec.circuitBreaker"]);
        assert!(explain.contains("halfOpenRequests"), "{explain}");

        let examples = workspace_root().join("examples/policies");
        for entry in std::fs::read_dir(&examples).unwrap() {
            let path = entry.unwrap().path();
            let out = api.kubectl(&["apply", "-f", path.to_str().unwrap()]);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "{}: {stderr}", path.display());
            // The API server warns about schema formats it does not know.
            assert!(!stderr.contains("Warning"), "{}: {stderr}", path.display());
        }
        // What kubectl stored is what the proxy's parser reads from the file:
        // `retry.on` survived YAML 1.1 (a bare `on` would be `true`).
        let payments = api.get_json(&["-n", "shop", "rp", "payments"]).unwrap();
        assert_eq!(
            payments["spec"]["retry"]["on"],
            serde_json::json!(["connect-failure", "refused-stream", "reset"])
        );
        let table = api.kubectl_ok(&["get", "rp", "-n", "shop"]);
        let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
        assert_eq!(
            header,
            ["NAME", "TARGET", "MODE", "ACCEPTED", "CURRENT", "TOTAL", "ROUTES", "AGE"]
        );
    });
}

/// The CRDs as the Helm chart renders them (what `helm install` applies).
fn rendered_chart_crds() -> Option<String> {
    let helm = outrigger_e2e::kube_api::helm()?;
    let chart = workspace_root().join("charts/outrigger");
    let out = std::process::Command::new(&helm)
        .args(["template", "outrigger", chart.to_str().unwrap()])
        .args(["--namespace", "outrigger-system", "--include-crds"])
        .output()
        .ok()?;
    assert!(
        out.status.success(),
        "helm template: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rendered = String::from_utf8(out.stdout).unwrap();
    let crds: Vec<&str> = rendered
        .split("\n---")
        .filter(|doc| doc.contains("\nkind: CustomResourceDefinition"))
        .collect();
    assert!(!crds.is_empty(), "the chart renders no CRD");
    Some(crds.join("\n---"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_charts_rendered_crds_serve_the_examples() {
    let Some(api) = KubeApi::start("chart") else {
        return;
    };
    let Some(crds) = rendered_chart_crds() else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "helm is required in CI (tests/apiserver/install-kubectl.sh installs it)"
        );
        eprintln!("SKIPPED: no helm (set OUTRIGGER_KUBECTL or OUTRIGGER_HELM)");
        return;
    };
    blocking(|| {
        let out = api.kubectl_stdin(&["apply", "--server-side", "-f", "-"], &crds);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        api.wait_established("resiliencepolicies.outrigger.dev");
        let examples = workspace_root().join("examples/policies");
        let deadline = Instant::now() + Duration::from_secs(20);
        let out = loop {
            // Discovery of the new group may lag the Established condition.
            let out = api.kubectl(&["apply", "-f", examples.to_str().unwrap()]);
            if out.status.success() || Instant::now() > deadline {
                break out;
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_policies_are_refused_with_the_field_and_the_reason() {
    let Some(api) = KubeApi::start("cel") else {
        return;
    };
    let cases = [
        (
            "timeouts: {request: 1s, backendRequest: 2s}",
            "spec.timeouts.backendRequest: Invalid value",
            "backendRequest must be <= request",
        ),
        (
            "retry: {backoff: {base: 2s, max: 1s}}",
            "spec.retry.backoff.max: Invalid value",
            "max must be >= base",
        ),
        (
            "circuitBreaker: {failureRatePercent: 150}",
            "spec.circuitBreaker.failureRatePercent",
            "less than or equal to 100",
        ),
        (
            "circuitBreaker: {halfOpenRequests: 0}",
            "spec.circuitBreaker.halfOpenRequests",
            "greater than or equal to 1",
        ),
        (
            "timeouts: {request: 5 seconds}",
            "spec.timeouts.request",
            "should match",
        ),
        (
            "retry: {codes: [200, 700]}",
            "spec.retry.codes",
            "Invalid value",
        ),
        (
            "retry: {\"on\": [reset, reset]}",
            "spec.retry.on",
            "Invalid value",
        ),
        ("mode: Sometimes", "spec.mode", "Unsupported value"),
        // Fields a route cannot have, refused with where they belong.
        (
            "routes: [{match: {}, timeouts: {connect: 1s}}]",
            "spec.routes[0].timeouts.connect: Invalid value",
            "not allowed on a route: a connection serves every route, so set spec.timeouts.connect",
        ),
        (
            "routes: [{match: {}, timeouts: {idle: 1m}}]",
            "spec.routes[0].timeouts.idle: Invalid value",
            "so set spec.timeouts.idle",
        ),
        (
            "routes: [{match: {}, retry: {budget: {percent: 5}}}]",
            "spec.routes[0].retry.budget: Invalid value",
            "so set spec.retry.budget",
        ),
        (
            "routes: [{name: Charge, match: {}}]",
            "spec.routes[0].name",
            "should match",
        ),
        (
            "routes: [{name: default, match: {}}]",
            "spec.routes[0].name: Invalid value",
            "reserved",
        ),
        (
            "routes: [{name: a, match: {}}, {name: a, match: {}}]",
            "spec.routes: Invalid value",
            "route names must be unique",
        ),
        (
            "circuitBreaker: {fallback: {contentType: \"text/plain\\u00e9\"}}",
            "spec.circuitBreaker.fallback.contentType",
            "should match",
        ),
        (
            "limits: {maxPendingRequests: 3}",
            "spec.limits.maxPendingRequests: Invalid value",
            "needs maxConcurrentRequests",
        ),
        (
            "retry: {attemps: 3}",
            "unknown field \"spec.retry.attemps\"",
            "strict decoding error",
        ),
    ];
    blocking(|| {
        api.install_crds();
        for (spec, field, reason) in cases {
            let yaml = format!(
                "apiVersion: outrigger.dev/v1alpha1\nkind: ResiliencePolicy\nmetadata: {{name: bad, namespace: shop}}\nspec:\n  targetRef: {{name: payments}}\n  {spec}\n"
            );
            let out = api.kubectl_stdin(&["apply", "-f", "-"], &yaml);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "{spec} was accepted");
            assert!(
                stderr.contains(field) && stderr.contains(reason),
                "{spec}: expected {field:?} and {reason:?} in {stderr}"
            );
        }
        // Nothing was stored.
        let list = api.get_json(&["-n", "shop", "rp"]).unwrap();
        assert_eq!(list["items"], serde_json::json!([]));
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_status_follows_the_cluster() {
    let Some(api) = KubeApi::start("status") else {
        return;
    };
    blocking(|| {
        api.install_crds();
        api.apply(&policy("payments", "payments", 2));
    });
    let op = operator(&api, "operator-a", &[]).await;

    let p = wait_for_policy(&api, "payments", "ServiceNotFound", |p| {
        condition(p, "ResolvedRefs").is_some_and(|c| c.1 == "ServiceNotFound")
    })
    .await;
    assert_eq!(condition(&p, "Accepted").unwrap().0, "True");
    assert_eq!(condition(&p, "Programmed").unwrap().0, "False");
    assert_eq!(p["status"]["observedGeneration"], 1);

    // The Service appears: the reference resolves and the policy is programmed.
    blocking(|| api.apply(&service("payments")));
    wait_for_policy(&api, "payments", "ResolvedRefs True", |p| {
        condition(p, "ResolvedRefs").is_some_and(|c| c.0 == "True")
            && condition(p, "Programmed").is_some_and(|c| c.0 == "True")
    })
    .await;

    // An edit is observed at its generation.
    blocking(|| api.apply(&policy("payments", "payments", 1)));
    wait_for_policy(&api, "payments", "observedGeneration 2", |p| {
        p["status"]["observedGeneration"] == 2
            && condition(p, "Accepted").is_some_and(|c| c.0 == "True")
    })
    .await;

    // A second policy on the same target loses to the older one and says so.
    tokio::time::sleep(Duration::from_millis(1100)).await; // creation times have 1s resolution
    blocking(|| api.apply(&policy("payments-late", "payments", 3)));
    let late = wait_for_policy(&api, "payments-late", "Conflicted", |p| {
        condition(p, "Accepted").is_some_and(|c| c.1 == "Conflicted")
    })
    .await;
    let (_, _, message) = condition(&late, "Accepted").unwrap();
    assert!(message.contains("payments"), "{message}");
    let winner = blocking(|| api.get_json(&["-n", "shop", "rp", "payments"])).unwrap();
    assert_eq!(condition(&winner, "Accepted").unwrap().0, "True");

    // Acceptance changes are published as Events on the policy.
    let events = blocking(|| api.get_json(&["-n", "shop", "events.events.k8s.io"])).unwrap();
    let reasons: Vec<&str> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["regarding"]["name"] == "payments-late")
        .filter_map(|e| e["reason"].as_str())
        .collect();
    assert!(reasons.contains(&"Conflicted"), "events: {events:#}");

    // The Service goes away: ResolvedRefs turns False again.
    blocking(|| api.kubectl_ok(&["delete", "-n", "shop", "service", "payments"]));
    wait_for_policy(&api, "payments", "ServiceNotFound again", |p| {
        condition(p, "ResolvedRefs").is_some_and(|c| c.1 == "ServiceNotFound")
    })
    .await;

    // The winner is deleted: the other policy takes the target.
    blocking(|| api.kubectl_ok(&["delete", "-n", "shop", "rp", "payments"]));
    wait_for_policy(
        &api,
        "payments-late",
        "Accepted after the winner left",
        |p| condition(p, "Accepted").is_some_and(|c| c.0 == "True"),
    )
    .await;
    assert_eq!(metric(&op, "outrigger_operator_leader").await, Some(1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_writing_moves_when_the_leader_dies() {
    let Some(api) = KubeApi::start("leader") else {
        return;
    };
    blocking(|| {
        api.install_crds();
        api.apply(&service("payments"));
        api.apply(&policy("payments", "payments", 2));
    });
    let mut a = operator(&api, "operator-a", &[]).await;
    let mut b = operator(&api, "operator-b", &[]).await;
    wait_for_policy(&api, "payments", "status from the leader", |p| {
        p["status"]["observedGeneration"] == 1
    })
    .await;
    let holder = |api: &KubeApi| {
        api.get_json(&["-n", "outrigger-system", "lease", "outrigger-operator"])
            .and_then(|l| l["spec"]["holderIdentity"].as_str().map(str::to_string))
    };
    let first = blocking(|| holder(&api)).expect("a lease holder");
    let (leader, follower, follower_name) = if first == "operator-a" {
        (&mut a, &b, "operator-b")
    } else {
        (&mut b, &a, "operator-a")
    };
    assert_eq!(metric(leader, "outrigger_operator_leader").await, Some(1.0));
    assert_eq!(
        metric(follower, "outrigger_operator_leader").await,
        Some(0.0)
    );
    // Both keep their caches warm, only the leader writes.
    blocking(|| api.apply(&policy("payments", "payments", 1)));
    wait_for_policy(&api, "payments", "generation 2 observed", |p| {
        p["status"]["observedGeneration"] == 2
    })
    .await;
    let writes = "outrigger_operator_status_writes_total";
    assert!(metric(leader, writes).await.unwrap() >= 2.0);
    assert_eq!(metric(follower, writes).await, Some(0.0));
    assert!(
        metric(follower, "outrigger_operator_reconciles_total")
            .await
            .unwrap()
            >= 2.0
    );

    // SIGKILL: no chance to release the lease, so the follower waits for it
    // to expire (2s) before it writes.
    leader.kill().await;
    let killed = Instant::now();
    blocking(|| api.apply(&policy("payments", "payments", 0)));
    wait_for_policy(&api, "payments", "status from the new leader", |p| {
        p["status"]["observedGeneration"] == 3
    })
    .await;
    assert!(
        killed.elapsed() < Duration::from_secs(10),
        "took {:?}",
        killed.elapsed()
    );
    assert_eq!(blocking(|| holder(&api)).as_deref(), Some(follower_name));
    assert_eq!(
        metric(follower, "outrigger_operator_leader").await,
        Some(1.0)
    );
    assert!(metric(follower, writes).await.unwrap() >= 1.0);
}

/// A GET through the proxy's outbound listener to web.shop.
async fn get(proxy: &Process) -> u16 {
    http(proxy.addr("outbound"), "GET", "/", "web.shop")
        .await
        .map(|(status, _)| status)
        .unwrap_or(0)
}

async fn proxy(op: &Process, token: &Path, state: &Path) -> Process {
    let bin = binary("outrigger-proxy", "outrigger-proxy").unwrap();
    let args = vec![
        "--inbound-addr=127.0.0.1:0".to_string(),
        "--outbound-addr=127.0.0.1:0".into(),
        "--admin-addr=127.0.0.1:0".into(),
        format!("--control-plane=http://{}", op.addr("policy")),
        format!("--control-token-file={}", token.display()),
        format!("--state-dir={}", state.display()),
        "--proxy-id=web-client-0".into(),
        // Generous on a loaded 2-core machine: the first request waits for
        // its snapshot rather than falling back to DNS.
        "--control-initial-wait=5s".into(),
        "--namespace=shop".into(),
        "--log-level=warn".into(),
    ];
    Process::start(&bin, &args)
        .await
        .wait_ready(Duration::from_secs(10))
        .await
}

/// Service `web` with one endpoint (a fault-injecting upstream on loopback)
/// and a policy retrying twice.
async fn web_with_policy(api: &KubeApi) -> FaultUpstream {
    let app = FaultUpstream::start("127.0.0.1:0".parse().unwrap(), FaultConfig::default())
        .await
        .unwrap();
    blocking(|| {
        api.install_crds();
        api.apply(&service("web"));
        api.apply(&endpoint_slice("web", app.addr.port()));
        api.apply(&policy("web", "web", 2));
    });
    app
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kubectl_edit_reaches_the_proxy_and_status_counts_it() {
    let Some(api) = KubeApi::start("distribution") else {
        return;
    };
    let app = web_with_policy(&api).await;
    let op = operator(&api, "operator-a", &[]).await;
    let proxy = proxy(&op, &api.dir.join("shared-token"), &temp_dir("proxy-state")).await;

    // Retries per the policy, over the endpoints from the EndpointSlice.
    let before = app.hits();
    app.set_script(vec![
        Fault::status(503),
        Fault::status(503),
        Fault::default(),
    ]);
    assert_eq!(get(&proxy).await, 200, "retried twice");
    assert_eq!(app.hits() - before, 3);
    wait_for_policy(&api, "web", "proxies 1/1", |p| {
        p["status"]["proxies"] == serde_json::json!({"total": 1, "current": 1})
    })
    .await;

    // kubectl edits the policy: no more retries, and the proxy acknowledges.
    let edited = Instant::now();
    patch_policy(&api, "web", r#"{"spec":{"retry":{"attempts":0}}}"#);
    let mut applied = None;
    while edited.elapsed() < Duration::from_secs(10) {
        let before = app.hits();
        app.set_script(vec![Fault::status(503), Fault::default()]);
        let status = get(&proxy).await;
        app.set_script(vec![]);
        if status == 503 && app.hits() - before == 1 {
            applied = Some(edited.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let applied = applied.expect("the edit reached the proxy within 10s");
    eprintln!("kubectl patch → proxy behaviour: {applied:?}");
    let p = wait_for_policy(&api, "web", "generation 2 acknowledged", |p| {
        p["status"]["observedGeneration"] == 2
            && p["status"]["proxies"] == serde_json::json!({"total": 1, "current": 1})
    })
    .await;
    assert_eq!(condition(&p, "Programmed").unwrap().0, "True");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_counts_the_proxies_of_every_replica() {
    let Some(api) = KubeApi::start("replicas") else {
        return;
    };
    let _app = web_with_policy(&api).await;
    let mut a = operator(&api, "operator-a", &[]).await;
    let mut b = operator(&api, "operator-b", &[]).await;
    wait_for_policy(&api, "web", "status from the leader", |p| {
        p["status"]["observedGeneration"] == 1
    })
    .await;
    let holder =
        blocking(|| api.get_json(&["-n", "outrigger-system", "lease", "outrigger-operator"]))
            .and_then(|l| l["spec"]["holderIdentity"].as_str().map(str::to_string))
            .expect("a lease holder");
    // The proxy streams from the replica that does not write status.
    let (follower, leader) = if holder == "operator-a" {
        (&mut b, &a)
    } else {
        (&mut a, &b)
    };
    let proxy = proxy(
        follower,
        &api.dir.join("shared-token"),
        &temp_dir("replica-state"),
    )
    .await;
    assert_eq!(get(&proxy).await, 200);
    wait_for_policy(&api, "web", "the follower's proxy counted", |p| {
        p["status"]["proxies"] == serde_json::json!({"total": 1, "current": 1})
    })
    .await;
    assert_eq!(
        metric(leader, "outrigger_operator_connected_proxies").await,
        Some(0.0)
    );

    // The follower dies without a word: its report expires and the count drops.
    follower.kill().await;
    wait_for_policy(&api, "web", "the dead replica's proxies dropped", |p| {
        p["status"]["proxies"] == serde_json::json!({"total": 0, "current": 0})
    })
    .await;
}

/// The server side of the mesh as an injected pod runs it: a proxy that knows
/// only its pod name (`POD_NAME`, from the downward API in an injected pod)
/// and namespace, no `--service-name`. The operator finds the pod's Service
/// from the EndpointSlice that lists the pod, and the Service's rate limit
/// acts on the pod's inbound traffic. Retries in the same policy are the
/// caller's to make: the server's proxy forwards each call once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_injected_pods_proxy_finds_its_inbound_policy_by_pod_name() {
    let Some(api) = KubeApi::start("pod-inbound") else {
        return;
    };
    let app = FaultUpstream::start("127.0.0.1:0".parse().unwrap(), FaultConfig::default())
        .await
        .unwrap();
    let port = app.addr.port();
    blocking(|| {
        api.install_crds();
        api.apply(&service("web"));
        api.apply(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: web-1, namespace: shop, labels: {app: web}}\nspec:\n  containers: [{name: app, image: outrigger/test-app}]\n",
        );
        // What the EndpointSlice controller writes for that pod (no
        // controller runs here): its address, the named port, a targetRef.
        api.apply(&format!(
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: web-abc, namespace: shop, labels: {{kubernetes.io/service-name: web}}}}\naddressType: IPv4\nports: [{{name: http, port: {port}, protocol: TCP}}]\nendpoints: [{{addresses: [127.0.0.1], conditions: {{ready: true}}, targetRef: {{kind: Pod, namespace: shop, name: web-1}}}}]\n"
        ));
        api.apply(
            "apiVersion: outrigger.dev/v1alpha1\nkind: ResiliencePolicy\nmetadata: {name: web, namespace: shop}\nspec:\n  targetRef: {kind: Service, name: web}\n  rateLimit: {requestsPerSecond: 1, burst: 2}\n  retry: {attempts: 2, backoff: {base: 1ms, max: 5ms}}\n",
        );
    });
    let op = operator(&api, "operator-a", &[]).await;
    let bin = binary("outrigger-proxy", "outrigger-proxy").unwrap();
    let state = temp_dir("pod-inbound-state");
    let args = vec![
        "--inbound-addr=127.0.0.1:0".to_string(),
        "--outbound-addr=127.0.0.1:0".into(),
        "--admin-addr=127.0.0.1:0".into(),
        // In a pod: loopback on the port iptables redirected from.
        format!("--app-addr={}", app.addr),
        format!("--control-plane=http://{}", op.addr("policy")),
        format!(
            "--control-token-file={}",
            api.dir.join("shared-token").display()
        ),
        format!("--state-dir={}", state.display()),
        "--control-initial-wait=5s".into(),
        "--log-level=warn".into(),
    ];
    let proxy = Process::start_with_env(
        &bin,
        &args,
        &[
            ("POD_NAME", Path::new("web-1")),
            ("OUTRIGGER_NAMESPACE", Path::new("shop")),
        ],
    )
    .await
    .wait_ready(Duration::from_secs(10))
    .await;
    let inbound = proxy.addr("inbound");
    let call = || async move {
        http(inbound, "GET", "/", "web.shop.svc.cluster.local")
            .await
            .map(|(status, _)| status)
            .unwrap_or(0)
    };

    // Burst 2, then 429s: the Service's rate limit, found by pod name.
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(call().await);
    }
    assert_eq!(statuses, [200, 200, 429, 429, 429]);
    assert_eq!(app.hits(), 2);
    wait_for_policy(&api, "web", "the server pod's proxy counted", |p| {
        p["status"]["proxies"] == serde_json::json!({"total": 1, "current": 1})
    })
    .await;

    // A failing call is not retried on the server side (polled until the
    // bucket has a token again).
    app.set_script(vec![Fault::status(503)]);
    let before = app.hits();
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        let status = call().await;
        if status != 429 || Instant::now() > deadline {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status, 503);
    assert_eq!(app.hits() - before, 1);

    // kubectl raises the limit: the proxy follows the edit.
    patch_policy(
        &api,
        "web",
        r#"{"spec":{"rateLimit":{"requestsPerSecond":1000,"burst":1000}}}"#,
    );
    outrigger_e2e::wait_until(
        Duration::from_secs(10),
        "the raised limit applied",
        || async {
            let mut all_ok = true;
            for _ in 0..5 {
                all_ok &= call().await == 200;
            }
            all_ok
        },
    )
    .await;
    wait_for_policy(&api, "web", "generation 2 acknowledged", |p| {
        p["status"]["observedGeneration"] == 2
            && p["status"]["proxies"] == serde_json::json!({"total": 1, "current": 1})
    })
    .await;
}

/// A leader stopped the way Kubernetes stops a pod (SIGTERM) releases its
/// Lease on the way out, so the other replica takes over at its next try
/// instead of waiting out the lease (20 s here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_stopped_with_sigterm_hands_over_at_once() {
    let Some(api) = KubeApi::start("leader-term") else {
        return;
    };
    blocking(|| api.install_crds());
    let a = operator_with_lease(&api, "operator-a", "20s", &[]).await;
    let b = operator_with_lease(&api, "operator-b", "20s", &[]).await;
    let holder = || {
        api.get_json(&["-n", "outrigger-system", "lease", "outrigger-operator"])
            .and_then(|l| l["spec"]["holderIdentity"].as_str().map(str::to_string))
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let first = loop {
        if let Some(holder) = blocking(holder).filter(|h| !h.is_empty()) {
            break holder;
        }
        assert!(Instant::now() < deadline, "no lease holder");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let (leader, follower_name) = if first == "operator-a" {
        (&a, "operator-b")
    } else {
        (&b, "operator-a")
    };
    let pid = leader.child.id().expect("running") as i32;
    let stopped = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while blocking(holder).as_deref() != Some(follower_name) {
        assert!(
            Instant::now() < deadline,
            "the follower never took the lease"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took = stopped.elapsed();
    eprintln!("SIGTERM to the leader → the other replica holds the lease: {took:?}");
    // The follower retries every --lease-renew (500 ms here); without the
    // release it would wait for the 20 s lease to expire.
    assert!(took < Duration::from_secs(8), "took {took:?}");
}
