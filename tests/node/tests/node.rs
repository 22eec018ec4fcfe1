//! The test node against a real API server (tests/apiserver): pods applied
//! with kubectl run as processes in their own network namespaces, reach a
//! Service by its DNS names through the node's Service rules, and follow the
//! kubelet's order (init containers, native sidecars, apps).
//! Needs root, `ip` and `iptables`; skipped without them outside CI.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use outrigger_e2e::kube_api::KubeApi;
use serde_json::Value;

/// The node process: SIGTERM on drop, so it removes its network.
struct NodeProcess {
    child: Child,
    log: PathBuf,
}

impl NodeProcess {
    fn start(api: &KubeApi, state: &Path) -> NodeProcess {
        let log = api.dir.join("logs/node.log");
        let child = Command::new(env!("CARGO_BIN_EXE_outrigger-testnode"))
            .args(["run", "--state-dir"])
            .arg(state)
            .env("KUBECONFIG", &api.kubeconfig)
            .env("OUTRIGGER_LOG", "info,kube=warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("the node starts");
        NodeProcess { child, log }
    }

    /// Stops the node the way an operator would; true if it exited in time.
    fn stop(&mut self) -> bool {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        false
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.stop();
        }
    }
}

/// Root and iproute2/iptables, or a skip (a failure in CI).
fn can_make_namespaces() -> bool {
    let ok = nix::unistd::geteuid().is_root()
        && outrigger_e2e::require_tool("ip")
        && outrigger_e2e::require_tool("iptables");
    if !ok {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "the test node needs root, ip and iptables in CI"
        );
        eprintln!("SKIPPED: the test node needs root, ip and iptables");
    }
    ok
}

/// Polls `f` until it returns Some, for at most `limit`.
fn wait_for<T>(
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
            std::fs::read_to_string(&node.log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn condition(pod: &Value, kind: &str) -> bool {
    pod["status"]["conditions"]
        .as_array()
        .is_some_and(|c| c.iter().any(|c| c["type"] == kind && c["status"] == "True"))
}

fn container<'a>(pod: &'a Value, list: &str, name: &str) -> &'a Value {
    pod["status"][list]
        .as_array()
        .and_then(|l| l.iter().find(|c| c["name"] == name))
        .unwrap_or(&Value::Null)
}

fn netns_list() -> String {
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The namespace the node gave a pod: `orn<id>-pod<n>` for 10.77.<id>.<n>.
fn netns_of(pod: &Value) -> String {
    let ip = pod["status"]["podIP"].as_str().expect("a pod IP");
    let octets: Vec<&str> = ip.split('.').collect();
    assert_eq!(
        &octets[..2],
        ["10", "77"],
        "pod IP {ip} in the node's range"
    );
    format!("orn{}-pod{}", octets[2], octets[3])
}

const WEB: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http}]
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: shop, labels: {app: web}}
spec:
  terminationGracePeriodSeconds: 5
  containers:
  - name: app
    image: outrigger/test-app:latest
    ports: [{name: http, containerPort: 8080}]
    env:
    - {name: POD_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
    readinessProbe:
      httpGet: {path: /, port: http}
      initialDelaySeconds: 2
      periodSeconds: 1
"#;

/// An init container, a native sidecar and a Job-like app that calls the
/// sidecar and then the Service by both DNS names, printing its env.
const CLIENT: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: shop}
spec:
  restartPolicy: Never
  volumes: [{name: shared, emptyDir: {}}]
  initContainers:
  - name: prepare
    image: outrigger/shell
    command: [sh, -c, "echo ran > /run/outrigger-testnode/mnt/shared/init-done"]
    volumeMounts: [{name: shared, mountPath: /run/outrigger-testnode/mnt/shared}]
  - name: sidecar
    image: outrigger/test-app:0.1.0
    args: [test-app, --port, "9090"]
    restartPolicy: Always
    startupProbe: {tcpSocket: {port: 9090}, periodSeconds: 1, failureThreshold: 30}
  containers:
  - name: app
    image: outrigger/shell
    command:
    - sh
    - -c
    - |
      set -e
      test -f /run/outrigger-testnode/mnt/shared/init-done || { echo "init did not run first"; exit 3; }
      outrigger-testnode test-client --patience-seconds 2 http://127.0.0.1:9090/ || { echo "sidecar not up"; exit 4; }
      outrigger-testnode test-client http://web.shop.svc.cluster.local/ http://web/
      echo "env name=$POD_NAME ns=$POD_NS ip=$POD_IP sa=$SA node=$NODE greeting=$GREETING"
    env:
    - {name: POD_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
    - {name: POD_NS, valueFrom: {fieldRef: {fieldPath: metadata.namespace}}}
    - {name: POD_IP, valueFrom: {fieldRef: {fieldPath: status.podIP}}}
    - {name: SA, valueFrom: {fieldRef: {fieldPath: spec.serviceAccountName}}}
    - {name: NODE, valueFrom: {fieldRef: {fieldPath: spec.nodeName}}}
    - {name: GREETING, value: "hi-$(POD_NAME)"}
    volumeMounts: [{name: shared, mountPath: /run/outrigger-testnode/mnt/shared}]
"#;

#[test]
fn pods_run_reach_a_service_by_dns_name_and_are_removed_on_deletion() {
    if !can_make_namespaces() {
        return;
    }
    let Some(api) = KubeApi::start("testnode") else {
        return;
    };
    let state = api.dir.join("node");
    let mut node = NodeProcess::start(&api, &state);
    let began = Instant::now();
    api.apply(WEB);

    // The server pod is listed at once with its address, but ready only
    // once its readiness probe passed (initialDelaySeconds: 2).
    let mut saw_not_ready = false;
    let web = wait_for(Duration::from_secs(30), "web Ready", &node, || {
        let slice = api.get_json(&["-n", "shop", "endpointslices", "web-outrigger-testnode"]);
        let pod = api.get_json(&["-n", "shop", "pod", "web"])?;
        let endpoint = slice.as_ref().and_then(|s| s["endpoints"].get(0).cloned());
        if let Some(ep) = &endpoint {
            if ep["conditions"]["ready"] == false {
                saw_not_ready = true;
            }
        }
        let ready_in_slice = endpoint.is_some_and(|ep| ep["conditions"]["ready"] == true);
        (condition(&pod, "Ready") && ready_in_slice).then_some(pod)
    });
    eprintln!(
        "web Ready and in its EndpointSlice after {:?}",
        began.elapsed()
    );
    assert!(saw_not_ready, "the slice listed the pod as not ready first");
    let slice = api
        .get_json(&["-n", "shop", "endpointslices", "web-outrigger-testnode"])
        .unwrap();
    assert_eq!(
        slice["metadata"]["labels"]["kubernetes.io/service-name"],
        "web"
    );
    assert_eq!(slice["ports"][0]["port"], 8080, "targetPort: http resolved");
    assert_eq!(
        slice["endpoints"][0]["addresses"][0],
        web["status"]["podIP"]
    );
    assert_eq!(slice["endpoints"][0]["targetRef"]["name"], "web");
    assert_eq!(web["spec"]["nodeName"], "testnode");
    assert_eq!(web["status"]["phase"], "Running");

    let began = Instant::now();
    api.apply(CLIENT);
    let client = wait_for(Duration::from_secs(60), "client Succeeded", &node, || {
        let pod = api.get_json(&["-n", "shop", "pod", "client"])?;
        let phase = pod["status"]["phase"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let uid = pod["metadata"]["uid"].as_str().unwrap_or_default();
        let log = state.join(format!("pods/shop_client_{uid}/logs/app.log"));
        assert_ne!(
            phase,
            "Failed",
            "client failed: {pod:#}\napp log: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        (phase == "Succeeded").then_some(pod)
    });
    eprintln!("client pod Succeeded after {:?}", began.elapsed());
    let uid = client["metadata"]["uid"].as_str().unwrap();
    let log = std::fs::read_to_string(state.join(format!("pods/shop_client_{uid}/logs/app.log")))
        .unwrap();
    assert!(
        log.contains("http://web.shop.svc.cluster.local/ 200 hello from web"),
        "{log}"
    );
    assert!(log.contains("http://web/ 200 hello from web"), "{log}");
    let ip = client["status"]["podIP"].as_str().unwrap();
    assert!(
        log.contains(&format!(
            "env name=client ns=shop ip={ip} sa=default node=testnode greeting=hi-client"
        )),
        "{log}"
    );
    // The sidecar outlived the app: stopped only after it ended.
    let app = &container(&client, "containerStatuses", "app")["state"]["terminated"];
    let sidecar = &container(&client, "initContainerStatuses", "sidecar")["state"]["terminated"];
    let prepare = &container(&client, "initContainerStatuses", "prepare")["state"]["terminated"];
    assert_eq!(app["exitCode"], 0, "{client:#}");
    assert_eq!(prepare["exitCode"], 0, "{client:#}");
    assert!(sidecar.is_object(), "sidecar stopped: {client:#}");
    assert!(
        sidecar["finishedAt"].as_str() >= app["finishedAt"].as_str(),
        "{client:#}"
    );
    assert!(condition(&client, "Initialized"));

    // An image outside the table: a clear reason, nothing runs.
    api.apply(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: stranger, namespace: shop}\nspec:\n  containers: [{name: app, image: nginx:1.27}]\n",
    );
    wait_for(Duration::from_secs(20), "ErrImagePull", &node, || {
        let pod = api.get_json(&["-n", "shop", "pod", "stranger"])?;
        let waiting = &container(&pod, "containerStatuses", "app")["state"]["waiting"];
        (waiting["reason"] == "ErrImagePull").then_some(())
    });

    // Deleting the server pod ends its processes and its namespace, and
    // takes it out of the Service's slice.
    let netns = netns_of(&web);
    assert!(netns_list().contains(&netns));
    let pids = Command::new("ip")
        .args(["netns", "pids", &netns])
        .output()
        .unwrap();
    let pids: Vec<String> = String::from_utf8_lossy(&pids.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect();
    assert!(!pids.is_empty(), "the web pod runs processes");
    let began = Instant::now();
    api.kubectl_ok(&["-n", "shop", "delete", "pod", "web", "--wait=false"]);
    wait_for(
        Duration::from_secs(20),
        "web's namespace removed",
        &node,
        || {
            let gone = !netns_list().contains(&netns)
                && pids
                    .iter()
                    .all(|p| !Path::new(&format!("/proc/{p}")).exists());
            gone.then_some(())
        },
    );
    eprintln!(
        "web pod's processes and namespace gone after {:?}",
        began.elapsed()
    );
    wait_for(
        Duration::from_secs(20),
        "web out of its slice",
        &node,
        || {
            let slice =
                api.get_json(&["-n", "shop", "endpointslices", "web-outrigger-testnode"])?;
            slice["endpoints"]
                .as_array()
                .is_none_or(|e| e.is_empty())
                .then_some(())
        },
    );

    // Stopping the node removes every namespace and link it made.
    let bridge = format!(
        "orn{}",
        netns.trim_start_matches("orn").split('-').next().unwrap()
    );
    assert!(node.stop(), "the node stops on SIGTERM");
    assert!(
        !netns_list().contains(&format!("{bridge}-")),
        "{}",
        netns_list()
    );
    let links = Command::new("ip")
        .args(["-o", "link", "show"])
        .output()
        .unwrap();
    let links = String::from_utf8_lossy(&links.stdout);
    assert!(!links.contains(&format!(": {bridge}")), "{links}");
}

const FLAKY: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: flaky, namespace: shop}
spec:
  restartPolicy: OnFailure
  volumes: [{name: state, emptyDir: {}}]
  containers:
  - name: app
    image: outrigger/shell
    securityContext: {runAsUser: 1000, runAsGroup: 1000}
    command:
    - sh
    - -c
    - |
      f=/run/outrigger-testnode/mnt/state/runs
      n=$(cat $f 2>/dev/null || echo 0)
      echo $((n + 1)) > $f
      echo "run $n as uid=$(id -u)"
      test "$n" -ge 2
    volumeMounts: [{name: state, mountPath: /run/outrigger-testnode/mnt/state}]
---
apiVersion: v1
kind: Pod
metadata: {name: unhealthy, namespace: shop}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: outrigger/test-app
    livenessProbe: {tcpSocket: {port: 9999}, periodSeconds: 1, failureThreshold: 1}
"#;

#[test]
fn failing_containers_restart_per_policy_and_liveness() {
    if !can_make_namespaces() {
        return;
    }
    let Some(api) = KubeApi::start("testnode-restarts") else {
        return;
    };
    let state = api.dir.join("node");
    let node = NodeProcess::start(&api, &state);
    api.apply(FLAKY);
    // OnFailure: two failed runs, restarted with backoff, then success.
    let flaky = wait_for(Duration::from_secs(60), "flaky Succeeded", &node, || {
        let pod = api.get_json(&["-n", "shop", "pod", "flaky"])?;
        assert_ne!(pod["status"]["phase"], "Failed", "{pod:#}");
        (pod["status"]["phase"] == "Succeeded").then_some(pod)
    });
    let app = container(&flaky, "containerStatuses", "app");
    assert_eq!(app["restartCount"], 2, "{flaky:#}");
    assert_eq!(app["lastState"]["terminated"]["exitCode"], 1, "{flaky:#}");
    let uid = flaky["metadata"]["uid"].as_str().unwrap();
    let log =
        std::fs::read_to_string(state.join(format!("pods/shop_flaky_{uid}/logs/app.log"))).unwrap();
    assert!(log.contains("run 2 as uid=1000"), "{log}");
    // A liveness probe that never passes restarts the container.
    wait_for(
        Duration::from_secs(30),
        "unhealthy restarted",
        &node,
        || {
            let pod = api.get_json(&["-n", "shop", "pod", "unhealthy"])?;
            let app = container(&pod, "containerStatuses", "app");
            (app["restartCount"].as_i64() >= Some(1) && app["lastState"]["terminated"].is_object())
                .then_some(())
        },
    );
}
