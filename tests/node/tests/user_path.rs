//! The user's path, end to end on one machine: `helm install` of the chart
//! (the operator as the chart's two-replica Deployment on the test node),
//! a meshed server Deployment and client pods in a namespace labelled for
//! injection, and the scenarios a user meets, in one environment shared by
//! all of them (one API server, one node, one install):
//!
//! 1. status: `kubectl apply` of a ResiliencePolicy counts every server
//!    proxy in `status.proxies`; a `kubectl patch` reaches them all
//!    (observedGeneration, current); the time is printed;
//! 2. the server pods' proxies enforce the policy's `rateLimit` inbound
//!    (429, `x-outrigger-error: rate-limited`), finding it by pod name;
//! 3. retries on one side only: one call to a failing app is 3 app hits;
//! 4. churn under load (scale down, a deleted pod, a rolling update): no
//!    failed request;
//! 5. a Job with the injected native sidecar completes, its pod Succeeded;
//! 6. outage: the operator scaled to 0 under load, traffic goes on with the
//!    last policy; a server pod's proxy killed meanwhile is restarted by the
//!    node and starts from its state dir; scaled back, the proxies resync
//!    and status is right.
//!
//! Not here: a token of another namespace refused (403) on a pod's inbound
//! policy, done from a pod (tests/workloads.rs checks it process-level).
//!
//! Simulated (see docs/architecture.md, "Testing on one machine"): the
//! kubelet, scheduler, kube-proxy, EndpointSlice/Deployment/Job controllers
//! are the test node's; the API server is the test one. The proxy, operator,
//! chart, kubectl and helm are the real ones. Load comes from client pods
//! running `outrigger-testnode test-load` (their requests go through their
//! own proxy by the iptables redirect, like any app's).
//! Needs root, `ip`, `iptables`, helm and curl.

mod common;

use std::time::{Duration, Instant};

use common::*;
use outrigger_e2e::binary;
use outrigger_e2e::kube_api::KubeApi;

/// The pid of pod `pod`'s proxy: a descendant of `root` named
/// outrigger-proxy with `POD_NAME=<pod>` in its environment.
fn proxy_pid(root: u32, pod: &str) -> Option<u32> {
    let want = format!("POD_NAME={pod}");
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_string_lossy().parse().ok()?;
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
        let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
        let ours = comm.trim() == "outrigger-proxy"
            && environ.split(|b| *b == 0).any(|kv| kv == want.as_bytes());
        (ours && descends(pid, root)).then_some(pid)
    })
}

fn descends(mut pid: u32, root: u32) -> bool {
    for _ in 0..64 {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            return false;
        };
        let Some(ppid) = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok())
        else {
            return false;
        };
        if ppid == root {
            return true;
        }
        if ppid <= 1 {
            return false;
        }
        pid = ppid;
    }
    false
}

#[test]
fn the_users_path_on_one_machine() {
    require_node_tools();
    let Some(api) = KubeApi::start("testnode-user-path") else {
        return;
    };
    let helm = outrigger_e2e::kube_api::helm()
        .expect("no helm: run bash tests/apiserver/install-kubectl.sh (tests/run.sh does)");
    binary("outrigger-proxy", "outrigger-proxy").expect("the proxy builds");
    binary("outrigger-operator", "outrigger-operator").expect("the operator builds");
    let state = api.dir.join("node");
    let node = NodeProcess::start(&api, &state);
    let took = helm_install(&api, &node, &helm);
    eprintln!("helm install to 2 ready operator pods: {took:?}");
    api.apply(&web_app(2));
    let ips = web_ready(&api, &node, 2, "2 injected web pods Ready");

    // 1. Status. Each server pod's proxy has subscribed to its inbound policy
    // (`pod=shop/<pod>:8080`) on its first inbound request: the readiness
    // probes, which the redirect sends through it. No client has called
    // yet, so the proxies carrying the policy are the 2 server proxies.
    let began = Instant::now();
    api.apply(&policy("  timeouts: {request: 5s}\n"));
    acknowledged(&api, &node, 2, "apply: every server proxy current");
    eprintln!(
        "SCENARIO status: kubectl apply -> 2/2 proxies acknowledged in {:?}",
        began.elapsed()
    );
    let table = api.kubectl_ok(&["-n", "shop", "get", "rp"]);
    eprintln!("{table}");
    let row: Vec<&str> = table
        .lines()
        .find(|l| l.starts_with("web "))
        .unwrap()
        .split_whitespace()
        .collect();
    // NAME TARGET [MODE] ACCEPTED CURRENT TOTAL AGE (MODE may be empty).
    assert_eq!(
        row[row.len() - 3..row.len() - 1],
        ["2", "2"],
        "Current Total in:\n{table}"
    );
    let began = Instant::now();
    api.kubectl_ok(&[
        "-n",
        "shop",
        "patch",
        "rp",
        "web",
        "--type=merge",
        "-p",
        r#"{"spec":{"timeouts":{"request":"7s"}}}"#,
    ]);
    acknowledged(&api, &node, 2, "patch: every server proxy current");
    let (generation, ..) = policy_status(&api).unwrap();
    assert_eq!(generation, 2);
    eprintln!(
        "SCENARIO status: kubectl patch -> observedGeneration 2, 2/2 current in {:?}",
        began.elapsed()
    );

    // 2. Inbound rate limit in injected pods: the server proxies find their
    // policy by pod name (injected pods have no --service-name).
    api.apply(&policy(
        "  timeouts: {request: 7s}\n  rateLimit: {requestsPerSecond: 5, burst: 5}\n",
    ));
    acknowledged(&api, &node, 2, "rateLimit reaches the server proxies");
    let before: f64 = ips
        .iter()
        .map(|ip| {
            sample(
                &metrics(ip),
                "outrigger_requests_total",
                "direction=\"inbound\",route=\"default\",status_class=\"4xx\"",
            )
        })
        .sum();
    start_load(&api, "burst", "http://web.shop.svc.cluster.local/", 60, 1);
    let (burst, log) = load_result(&api, &node, &state, "burst", Duration::from_secs(60));
    let limited = burst.count("429/rate-limited");
    assert!(limited >= 1, "no 429 rate-limited:\n{log}");
    assert!(burst.count("200") >= 1, "nothing passed:\n{log}");
    let after: f64 = ips
        .iter()
        .map(|ip| {
            sample(
                &metrics(ip),
                "outrigger_requests_total",
                "direction=\"inbound\",route=\"default\",status_class=\"4xx\"",
            )
        })
        .sum();
    eprintln!(
        "SCENARIO rate limit: {} of {} answered 429 rate-limited; server proxies' inbound 4xx {} -> {}",
        limited, burst.requests, before, after
    );
    assert!(
        after - before >= 1.0,
        "the 429s came from the server pods' proxies"
    );
    delete_pod(&api, "burst");

    // 3. Retries on the client side only: 2 retries of a 503 = 3 app hits.
    api.apply(&policy(
        "  retry: {attempts: 2, codes: [503], backoff: {base: 1ms, max: 5ms}, budget: {percent: 100, minRetryRate: {count: 1000, interval: 1s}}}\n",
    ));
    // The burst client's proxy also carried the policy; it is gone now.
    acknowledged(&api, &node, 2, "retry policy reaches the proxies");
    let before = app_failures(&ips);
    start_load(&api, "once", "http://web.shop.svc.cluster.local/fail", 1, 1);
    let (once, log) = load_result(&api, &node, &state, "once", Duration::from_secs(60));
    assert_eq!((once.requests, once.count("503")), (1, 1), "{log}");
    let hits = app_failures(&ips) - before;
    eprintln!("SCENARIO retries: one call -> {hits} server app hits");
    assert_eq!(hits, 3, "one client call, 2 client-side retries");
    delete_pod(&api, "once");

    // 4. Churn under steady load: 30 req/s for 40 s while the Deployment is
    // scaled 3 -> 2, a pod deleted, and the template changed (rolling update).
    // With retries (absent, a policy retries nothing): connect failures
    // and 502/503/504 retried by the client's proxy, as a user would set —
    // and `reset`: the outage below SIGKILLs a server pod's proxy, which
    // resets a request it already received (about one run in twenty has one
    // in flight); only a policy that retries resets replays it (GETs are
    // idempotent; the default `on` retries only what surely was not sent).
    // `on` is quoted: kubectl reads YAML 1.1, where a bare `on` is `true`.
    api.apply(&policy(
        "  timeouts: {request: 7s}\n  retry: {attempts: 2, \"on\": [connect-failure, refused-stream, reset-before-request, reset], backoff: {base: 5ms, max: 50ms}}\n",
    ));
    api.kubectl_ok(&["-n", "shop", "scale", "deployment/web", "--replicas=3"]);
    web_ready(&api, &node, 3, "3 web pods");
    start_load(&api, "steady", "http://web.shop.svc.cluster.local/", 30, 40);
    wait_for(Duration::from_secs(60), "load started", &node, || {
        pod_log(&api, &state, "steady")
            .contains("started")
            .then_some(())
    });
    let load_began = Instant::now();
    // A second of load before the first change.
    wait_for(Duration::from_secs(5), "a second of load", &node, || {
        (load_began.elapsed() >= Duration::from_secs(1)).then_some(())
    });
    api.kubectl_ok(&["-n", "shop", "scale", "deployment/web", "--replicas=2"]);
    web_ready(&api, &node, 2, "scaled down to 2");
    eprintln!("churn: scaled to 2 at {:?}", load_began.elapsed());
    let victim = web_pods(&api)[0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    delete_pod(&api, &victim);
    wait_for(Duration::from_secs(60), "replacement", &node, || {
        let pods = web_pods(&api);
        (pods.len() == 2
            && pods.iter().all(ready)
            && pods
                .iter()
                .all(|p| p["metadata"]["name"] != victim.as_str()))
        .then_some(())
    });
    eprintln!("churn: {victim} replaced at {:?}", load_began.elapsed());
    api.kubectl_ok(&["-n", "shop", "set", "env", "deployment/web", "ROLL=1"]);
    let out = api.kubectl(&[
        "-n",
        "shop",
        "rollout",
        "status",
        "deployment/web",
        "--timeout=120s",
    ]);
    assert!(out.status.success(), "rollout: {}", stderr(&out));
    let churn_done = load_began.elapsed();
    eprintln!("churn: rolled at {churn_done:?}");
    let (steady, log) = load_result(&api, &node, &state, "steady", Duration::from_secs(120));
    eprintln!(
        "SCENARIO churn: {} requests, {} failed (changes done {churn_done:?} into 40 s of load)",
        steady.requests, steady.failed
    );
    assert!(
        churn_done < Duration::from_secs(38),
        "the changes outlasted the load"
    );
    assert_eq!(steady.failed, 0, "failed requests under churn:\n{log}");
    delete_pod(&api, "steady");
    let ips = web_ready(&api, &node, 2, "2 web pods after the rollout");

    // 5. A Job with the injected native sidecar completes; its pod Succeeded.
    api.apply(
        r#"
apiVersion: batch/v1
kind: Job
metadata: {name: once, namespace: shop}
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: app
        image: outrigger/test-client:latest
        args: [test-client, http://web.shop.svc.cluster.local/]
"#,
    );
    let out = api.kubectl(&[
        "-n",
        "shop",
        "wait",
        "--for=condition=complete",
        "job/once",
        "--timeout=90s",
    ]);
    assert!(
        out.status.success(),
        "job: {}\nnode log:\n{}",
        stderr(&out),
        node_log(&node)
    );
    let pods = api
        .get_json(&["-n", "shop", "pods", "-l", "job-name=once"])
        .unwrap();
    let pod = &pods["items"][0];
    assert_eq!(pod["status"]["phase"], "Succeeded", "{pod:#}");
    let init: Vec<&str> = pod["spec"]["initContainers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert!(init.contains(&"outrigger-proxy"), "injected: {pod:#}");
    eprintln!("SCENARIO job: complete, pod Succeeded with the native sidecar");

    // 6. Outage: every operator pod gone under load; traffic continues on
    // the last policy; back, the proxies resync and status is right again.
    start_load(&api, "outage", "http://web.shop.svc.cluster.local/", 30, 30);
    wait_for(Duration::from_secs(60), "load started", &node, || {
        pod_log(&api, &state, "outage")
            .contains("started")
            .then_some(())
    });
    api.kubectl_ok(&[
        "-n",
        RELEASE_NS,
        "scale",
        "deployment/outrigger-operator",
        "--replicas=0",
    ]);
    wait_for(Duration::from_secs(60), "operator pods gone", &node, || {
        let pods = api.get_json(&[
            "-n",
            RELEASE_NS,
            "pods",
            "-l",
            "app.kubernetes.io/component=operator",
        ])?;
        pods["items"].as_array()?.is_empty().then_some(())
    });
    let down = Instant::now();
    eprintln!("outage: operator down");
    // A server pod's proxy dies meanwhile (SIGKILL to that process, found
    // among the node's descendants by its POD_NAME): the node restarts the
    // native sidecar (restartPolicy Always) and it starts from its state dir,
    // the operator being down.
    let victim = web_pods(&api)[0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    let pid = proxy_pid(node.child.id(), &victim).expect("the web pod's proxy process");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let config = wait_for(Duration::from_secs(60), "proxy restarted", &node, || {
        let pod = api.get_json(&["-n", "shop", "pod", &victim])?;
        let proxy = pod["status"]["initContainerStatuses"]
            .as_array()?
            .iter()
            .find(|c| c["name"] == "outrigger-proxy")?
            .clone();
        if proxy["restartCount"].as_i64()? < 1 || proxy["started"] != true {
            return None;
        }
        let ip = pod["status"]["podIP"].as_str()?;
        let out = std::process::Command::new("curl")
            .args(["-sS", "--max-time", "5"])
            .arg(format!("http://{ip}:4191/config"))
            .output()
            .expect("curl runs");
        let config = String::from_utf8_lossy(&out.stdout).into_owned();
        config.contains("\"control\"").then_some(config)
    });
    eprintln!(
        "outage: {victim}'s proxy killed (pid {pid}), restarted after {:?}; /config: {config}",
        down.elapsed()
    );
    assert!(
        config.contains("\"state-dir\""),
        "the restarted proxy loaded its state dir: {config}"
    );
    // Policy edits while the operator is down reach nobody.
    api.kubectl_ok(&[
        "-n",
        "shop",
        "patch",
        "rp",
        "web",
        "--type=merge",
        "-p",
        r#"{"spec":{"timeouts":{"request":"6s"}}}"#,
    ]);
    wait_for(Duration::from_secs(30), "10 s of outage", &node, || {
        (down.elapsed() >= Duration::from_secs(10)).then_some(())
    });
    api.kubectl_ok(&[
        "-n",
        RELEASE_NS,
        "scale",
        "deployment/outrigger-operator",
        "--replicas=2",
    ]);
    let out = api.kubectl(&[
        "-n",
        RELEASE_NS,
        "rollout",
        "status",
        "deployment/outrigger-operator",
        "--timeout=120s",
    ]);
    assert!(out.status.success(), "operator back: {}", stderr(&out));
    let (outage, log) = load_result(&api, &node, &state, "outage", Duration::from_secs(120));
    eprintln!(
        "SCENARIO outage: {} requests, {} failed with the operator at 0 replicas for {:?}",
        outage.requests,
        outage.failed,
        down.elapsed()
    );
    assert_eq!(outage.failed, 0, "failed requests in the outage:\n{log}");
    // The outage client is alive and has called web: 2 servers + 1 client.
    let took = acknowledged(&api, &node, 3, "proxies resync after the outage");
    eprintln!("SCENARIO outage: resynced, status right, {took:?} after the rollout");
    let _ = ips;
    delete_pod(&api, "outage");
    api.kubectl_ok(&["delete", "namespace", "shop", "--wait=false"]);
    drop(node);
}
