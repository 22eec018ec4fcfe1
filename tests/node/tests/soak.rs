//! The soak benchmark (`bash bench/soak.sh [minutes]`; ignored by `cargo
//! test`): the user-path environment (test API server, test node, `helm
//! install` of the chart) under steady load between two meshed Deployments
//! (`load` calling `web`, ~500 req/s, bounded) while the policy is edited
//! every 10 s, a web pod is deleted every 30 s and the operator's leader pod
//! every 2 minutes. Prints requests, failed requests, p99, and the RSS of
//! the proxies and operators at start and end (`SOAK ...` lines).
//! Simulated: as in user_path.rs (the test node is kubelet, kube-proxy and
//! the controllers; the API server is the test one).

mod common;

use std::time::{Duration, Instant};

use common::*;
use outrigger_e2e::binary;

fn load_deployment(rate: u32, seconds: u64) -> String {
    format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: load, namespace: shop}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: load}}}}
  template:
    metadata: {{labels: {{app: load}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: app
        image: outrigger/shell
        command:
        - sh
        - -c
        - |
          echo started
          outrigger-testnode test-load --rate {rate} --seconds {seconds} --workers 48 http://web.shop.svc.cluster.local/
          echo done
          exec sleep 3600
"#
    )
}

/// (count, total RSS KiB, max RSS KiB) of the node's descendants whose
/// program is `comm` (as /proc/PID/comm shows it, at most 15 bytes).
fn rss(root: u32, comm: &str) -> (usize, u64, u64) {
    let mut parent = std::collections::HashMap::new();
    let mut name = std::collections::HashMap::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // pid (comm) state ppid ...
        let Some(after) = stat.rsplit_once(')').map(|(_, a)| a) else {
            continue;
        };
        let ppid: u32 = after
            .split_whitespace()
            .nth(1)
            .unwrap_or("0")
            .parse()
            .unwrap_or(0);
        parent.insert(pid, ppid);
        name.insert(
            pid,
            std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default(),
        );
    }
    let under = |mut pid: u32| {
        for _ in 0..64 {
            match parent.get(&pid) {
                Some(&p) if p == root => return true,
                Some(&p) if p > 1 => pid = p,
                _ => return false,
            }
        }
        false
    };
    let mut sizes = Vec::new();
    for (&pid, n) in &name {
        if n.trim() == comm && under(pid) {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            let kib = status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
                .unwrap_or(0);
            sizes.push(kib);
        }
    }
    (
        sizes.len(),
        sizes.iter().sum(),
        sizes.iter().copied().max().unwrap_or(0),
    )
}

fn report_rss(when: &str, root: u32) {
    let (n, total, max) = rss(root, "outrigger-proxy");
    eprintln!(
        "SOAK rss {when}: proxies n={n} total={} MiB max={} MiB",
        total / 1024,
        max / 1024
    );
    let (n, total, max) = rss(root, "outrigger-opera");
    eprintln!(
        "SOAK rss {when}: operators n={n} total={} MiB max={} MiB",
        total / 1024,
        max / 1024
    );
}

#[test]
#[ignore = "a benchmark of minutes: bash bench/soak.sh [minutes]"]
fn soak() {
    let minutes: u64 = std::env::var("OUTRIGGER_SOAK_MINUTES")
        .ok()
        .and_then(|m| m.parse().ok())
        .unwrap_or(3);
    let rate: u32 = std::env::var("OUTRIGGER_SOAK_RATE")
        .ok()
        .and_then(|m| m.parse().ok())
        .unwrap_or(500);
    require_node_tools();
    let api = outrigger_e2e::kube_api::KubeApi::start("testnode-soak").expect("the API server");
    let helm = outrigger_e2e::kube_api::helm().expect("helm");
    binary("outrigger-proxy", "outrigger-proxy").expect("the proxy builds");
    binary("outrigger-operator", "outrigger-operator").expect("the operator builds");
    let state = api.dir.join("node");
    let node = NodeProcess::start(&api, &state);
    let root = node.child.id();
    helm_install(&api, &node, &helm);
    api.apply(&web_app(3));
    web_ready(&api, &node, 3, "3 web pods");
    api.apply(&policy("  timeouts: {request: 5s}\n"));
    let seconds = minutes * 60;
    api.apply(&load_deployment(rate, seconds));
    let load_pod = wait_for(Duration::from_secs(120), "load started", &node, || {
        let pods = api.get_json(&["-n", "shop", "pods", "-l", "app=load"])?;
        let name = pods["items"][0]["metadata"]["name"].as_str()?.to_string();
        pod_log(&api, &state, &name)
            .contains("started")
            .then_some(name)
    });
    let began = Instant::now();
    eprintln!("SOAK {minutes} min at {rate} req/s");
    // Give every proxy its first connections before the first RSS figure.
    wait_for(Duration::from_secs(15), "10 s of load", &node, || {
        (began.elapsed() >= Duration::from_secs(10)).then_some(())
    });
    report_rss("start", root);
    let (mut edits, mut deleted, mut leaders) = (0u32, 0u32, 0u32);
    let end = began + Duration::from_secs(seconds);
    let mut next_edit = began + Duration::from_secs(10);
    let mut next_delete = began + Duration::from_secs(30);
    let mut next_leader = began + Duration::from_secs(120);
    loop {
        let next = next_edit.min(next_delete).min(next_leader);
        if next >= end {
            break;
        }
        // The schedule itself: wait for the next event's time.
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
        let now = Instant::now();
        if now >= next_edit {
            edits += 1;
            let request = 5 + edits % 3;
            api.kubectl_ok(&[
                "-n",
                "shop",
                "patch",
                "rp",
                "web",
                "--type=merge",
                "-p",
                &format!(r#"{{"spec":{{"timeouts":{{"request":"{request}s"}}}}}}"#),
            ]);
            next_edit += Duration::from_secs(10);
        }
        if now >= next_delete {
            if let Some(victim) = web_pods(&api)
                .iter()
                .find_map(|p| p["metadata"]["name"].as_str().map(str::to_string))
            {
                delete_pod(&api, &victim);
                deleted += 1;
            }
            next_delete += Duration::from_secs(30);
        }
        if now >= next_leader {
            // The leader election Lease's holder (the replicas'
            // proxy-report Leases carry holders too).
            let holder = api
                .get_json(&["-n", RELEASE_NS, "lease", "outrigger-operator"])
                .and_then(|l| l["spec"]["holderIdentity"].as_str().map(str::to_string));
            if let Some(holder) = holder {
                let out =
                    api.kubectl(&["-n", RELEASE_NS, "delete", "pod", &holder, "--wait=false"]);
                if out.status.success() {
                    leaders += 1;
                }
            }
            next_leader += Duration::from_secs(120);
        }
    }
    report_rss("end", root);
    let (summary, log) = load_result(
        &api,
        &node,
        &state,
        &load_pod,
        Duration::from_secs(seconds + 120),
    );
    let failures: Vec<&str> = log
        .lines()
        .filter(|l| l.starts_with("failure"))
        .take(20)
        .collect();
    eprintln!(
        "SOAK result: requests={} failed={} p99_ms={} policy_edits={edits} web_pods_deleted={deleted} leader_pods_deleted={leaders}",
        summary.requests, summary.failed, summary.p99_ms
    );
    if let Some(line) = log.lines().find(|l| l.starts_with("load: ")) {
        eprintln!("SOAK {line}");
    }
    for f in failures {
        eprintln!("SOAK {f}");
    }
    let status = policy_status(&api);
    eprintln!("SOAK policy (generation, observed, current, total): {status:?}");
    drop(node);
}
