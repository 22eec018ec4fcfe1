//! The test node against a real API server (tests/apiserver): pods applied
//! with kubectl run as processes in their own network namespaces, reach a
//! Service by its DNS names through the node's Service rules, and follow the
//! kubelet's order (init containers, native sidecars, apps).
//! Needs root, `ip`, `iptables` and `curl`; fails without them.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

mod common;

use common::{require_node_tools, wait_for, NodeProcess};
use outrigger_e2e::kube_api::KubeApi;
use serde_json::Value;

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
    require_node_tools();
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
    require_node_tools();
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

/// Fails unless the test API server serves `resource` (kubectl api-resources).
fn require_served(api: &KubeApi, resource: &str) {
    let out = api.kubectl(&["api-resources", "-o", "name"]);
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .any(|l| l == resource),
        "the test API server does not serve {resource}"
    );
}

/// The pod's log file for `container`.
fn log_of(state: &Path, ns: &str, pod: &Value, container: &str) -> String {
    let name = pod["metadata"]["name"].as_str().unwrap_or_default();
    let uid = pod["metadata"]["uid"].as_str().unwrap_or_default();
    std::fs::read_to_string(state.join(format!("pods/{ns}_{name}_{uid}/logs/{container}.log")))
        .unwrap_or_default()
}

/// Waits for the pod to end; its log must show it Succeeded.
fn wait_succeeded(api: &KubeApi, node: &NodeProcess, state: &Path, ns: &str, name: &str) -> Value {
    wait_for(
        Duration::from_secs(90),
        &format!("{name} Succeeded"),
        node,
        || {
            let pod = api.get_json(&["-n", ns, "pod", name])?;
            let phase = pod["status"]["phase"].as_str().unwrap_or_default();
            assert_ne!(
                phase,
                "Failed",
                "{name} failed: {pod:#}\nlog: {}",
                log_of(state, ns, &pod, "app")
            );
            (phase == "Succeeded").then_some(pod)
        },
    )
}

const DEPLOYMENT: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      terminationGracePeriodSeconds: 5
      containers:
      - name: app
        image: outrigger/test-app:latest
        ports: [{name: http, containerPort: 8080}]
        readinessProbe:
          httpGet: {path: /, port: http}
          periodSeconds: 1
"#;

/// A client calling the Service in a bounded loop until the test drops a
/// `stop` file into its emptyDir, then printing how many calls failed.
const LOOP_CLIENT: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: caller, namespace: shop}
spec:
  restartPolicy: Never
  volumes: [{name: shared, emptyDir: {}}]
  containers:
  - name: app
    image: outrigger/shell
    volumeMounts: [{name: shared, mountPath: /run/outrigger-testnode/mnt/caller}]
    command:
    - sh
    - -c
    - |
      i=0; fails=0
      while [ $i -lt 4000 ] && [ ! -f /run/outrigger-testnode/mnt/caller/stop ]; do
        outrigger-testnode test-client --patience-seconds 0 http://web/ > /dev/null || { fails=$((fails+1)); date +%T.%N; }
        i=$((i+1))
      done
      echo "calls=$i failed=$fails"
"#;

/// The Deployment's pods (name, template hash, ready) from the API.
fn deployment_pods(api: &KubeApi) -> Vec<(String, String, bool)> {
    let list = api
        .get_json(&["-n", "shop", "pods", "-l", "app=web"])
        .unwrap_or_default();
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            (
                p["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                p["metadata"]["labels"]["pod-template-hash"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                condition(p, "Ready"),
            )
        })
        .collect()
}

fn ready_endpoints(api: &KubeApi) -> usize {
    api.get_json(&["-n", "shop", "endpointslices", "web-outrigger-testnode"])
        .and_then(|s| {
            s["endpoints"].as_array().map(|e| {
                e.iter()
                    .filter(|e| e["conditions"]["ready"] == true)
                    .count()
            })
        })
        .unwrap_or(0)
}

#[test]
fn deployments_scale_and_roll_out_without_a_failed_request() {
    require_node_tools();
    let Some(api) = KubeApi::start("testnode-deploy") else {
        return;
    };
    require_served(&api, "deployments.apps");
    let state = api.dir.join("node");
    let node = NodeProcess::start(&api, &state);
    let began = Instant::now();
    api.apply(DEPLOYMENT);
    let wait_ready = |n: usize, what: &str| {
        let began = Instant::now();
        let pods = wait_for(Duration::from_secs(60), what, &node, || {
            let pods = deployment_pods(&api);
            (pods.len() == n && pods.iter().all(|p| p.2) && ready_endpoints(&api) == n)
                .then_some(pods)
        });
        eprintln!("{what}: {:?}", began.elapsed());
        pods
    };
    let pods = wait_ready(2, "2 ready pods in the slice");
    eprintln!("Deployment of 2 ready after {:?}", began.elapsed());
    let deploy = api.get_json(&["-n", "shop", "deployment", "web"]).unwrap();
    let hash = &pods[0].1;
    for (name, h, _) in &pods {
        assert!(name.starts_with(&format!("web-{hash}-")), "{name}");
        assert_eq!(h, hash);
    }
    let pod = api.get_json(&["-n", "shop", "pod", &pods[0].0]).unwrap();
    assert_eq!(pod["metadata"]["ownerReferences"][0]["kind"], "Deployment");
    assert_eq!(
        pod["metadata"]["ownerReferences"][0]["uid"],
        deploy["metadata"]["uid"]
    );
    api.kubectl_ok(&[
        "-n",
        "shop",
        "rollout",
        "status",
        "deployment/web",
        "--timeout=60s",
    ]);
    let deploy = api.get_json(&["-n", "shop", "deployment", "web"]).unwrap();
    assert_eq!(deploy["status"]["readyReplicas"], 2, "{deploy:#}");
    assert_eq!(deploy["status"]["updatedReplicas"], 2, "{deploy:#}");

    api.kubectl_ok(&["-n", "shop", "scale", "deployment/web", "--replicas=3"]);
    wait_ready(3, "scaled to 3");
    api.kubectl_ok(&["-n", "shop", "scale", "deployment/web", "--replicas=2"]);
    wait_ready(2, "scaled back to 2");
    // A deleted pod is replaced.
    let pods = deployment_pods(&api);
    api.kubectl_ok(&["-n", "shop", "delete", "pod", &pods[0].0, "--wait=false"]);
    let replaced = wait_for(Duration::from_secs(60), "pod replaced", &node, || {
        let now = deployment_pods(&api);
        (now.len() == 2
            && now.iter().all(|p| p.2 && p.0 != pods[0].0)
            && ready_endpoints(&api) == 2)
            .then_some(now)
    });
    assert!(replaced.iter().any(|p| p.0 == pods[1].0));

    // A rollout while a client calls the Service.
    api.apply(LOOP_CLIENT);
    let caller = wait_for(Duration::from_secs(30), "caller running", &node, || {
        let pod = api.get_json(&["-n", "shop", "pod", "caller"])?;
        (pod["status"]["phase"] == "Running").then_some(pod)
    });
    let began = Instant::now();
    api.kubectl_ok(&["-n", "shop", "set", "env", "deployment/web", "VERSION=2"]);
    api.kubectl_ok(&[
        "-n",
        "shop",
        "rollout",
        "status",
        "deployment/web",
        "--timeout=90s",
    ]);
    let rolled = wait_ready(2, "rolled out");
    eprintln!("rollout of 2 pods took {:?}", began.elapsed());
    assert!(
        rolled.iter().all(|p| &p.1 != hash),
        "every pod replaced: {rolled:?}"
    );
    let uid = caller["metadata"]["uid"].as_str().unwrap();
    std::fs::write(
        state.join(format!("pods/shop_caller_{uid}/volumes/shared/stop")),
        "",
    )
    .unwrap();
    let began = Instant::now();
    let caller = wait_succeeded(&api, &node, &state, "shop", "caller");
    eprintln!("caller ended {:?} after the stop file", began.elapsed());
    let log = log_of(&state, "shop", &caller, "app");
    eprintln!("caller: {}", log.trim());
    assert!(log.contains("failed=0"), "{log}");
    let calls: u32 = log
        .split("calls=")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    assert!(calls >= 10, "the caller called during the rollout: {log}");

    // Deleting the Deployment removes its pods (garbage collection).
    let began = Instant::now();
    api.kubectl_ok(&["-n", "shop", "delete", "deployment", "web"]);
    wait_for(Duration::from_secs(30), "pods removed", &node, || {
        deployment_pods(&api).is_empty().then_some(())
    });
    eprintln!("pods removed after {:?}", began.elapsed());
    let began = Instant::now();
    let mut node = node;
    assert!(node.stop(), "the node stops in time");
    eprintln!("node stopped in {:?}", began.elapsed());
}

const JOB: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: batch}
---
apiVersion: batch/v1
kind: Job
metadata: {name: once, namespace: batch}
spec:
  completions: 2
  parallelism: 1
  backoffLimit: 2
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: app
        image: outrigger/shell
        command: [sh, -c, "echo done by $HOSTNAME"]
"#;

#[test]
fn a_job_runs_its_pods_to_completion() {
    require_node_tools();
    let Some(api) = KubeApi::start("testnode-job") else {
        return;
    };
    require_served(&api, "jobs.batch");
    let state = api.dir.join("node");
    let node = NodeProcess::start(&api, &state);
    api.apply(JOB);
    api.kubectl_ok(&[
        "-n",
        "batch",
        "wait",
        "--for=condition=complete",
        "job/once",
        "--timeout=90s",
    ]);
    let job = api.get_json(&["-n", "batch", "job", "once"]).unwrap();
    assert_eq!(job["status"]["succeeded"], 2, "{job:#}");
    assert!(job["status"]["completionTime"].is_string(), "{job:#}");
    let pods = api
        .get_json(&["-n", "batch", "pods", "-l", "job-name=once"])
        .unwrap();
    let pods = pods["items"].as_array().unwrap();
    assert_eq!(pods.len(), 2);
    for pod in pods {
        assert_eq!(pod["status"]["phase"], "Succeeded", "{pod:#}");
        assert!(log_of(&state, "batch", pod, "app").contains("done by once-"));
    }
    drop(node);
}

const API_CALLER: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: inside}
---
apiVersion: v1
kind: Pod
metadata: {name: asker, namespace: inside}
spec:
  restartPolicy: Never
  volumes: [{name: scratch, emptyDir: {}}]
  containers:
  - name: app
    image: outrigger/shell
    volumeMounts: [{name: scratch, mountPath: /run/outrigger-testnode/mnt/asker}]
    command:
    - sh
    - -c
    - |
      out=/run/outrigger-testnode/mnt/asker/answer
      sa=/var/run/secrets/kubernetes.io/serviceaccount
      echo "host=$KUBERNETES_SERVICE_HOST port=$KUBERNETES_SERVICE_PORT ns=$(cat $sa/namespace)"
      if [ -f $sa/token ]; then auth="Authorization: Bearer $(cat $sa/token)"; else echo "no token"; exit 2; fi
      for server in "$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT" kubernetes.default.svc; do
        code=$(curl -sS -o $out -w '%{http_code}' --max-time 10 --cacert $sa/ca.crt -H "$auth" \
          "https://$server/api/v1/namespaces/inside/pods/asker")
        echo "server=$server http=$code $(grep -o '"name": *"asker"' $out | head -1)"
      done
"#;

#[test]
fn pods_reach_the_api_server_through_the_kubernetes_service() {
    require_node_tools();
    let Some(api) = KubeApi::start("testnode-inside") else {
        return;
    };
    let state = api.dir.join("node");
    let node = NodeProcess::start(&api, &state);
    api.apply(API_CALLER);
    let pod = wait_succeeded(&api, &node, &state, "inside", "asker");
    let log = log_of(&state, "inside", &pod, "app");
    eprintln!("{log}");
    let svc = wait_for(Duration::from_secs(10), "kubernetes Service", &node, || {
        api.get_json(&["-n", "default", "service", "kubernetes"])
    });
    let ip = svc["spec"]["clusterIP"].as_str().unwrap();
    assert!(
        log.contains(&format!("host={ip} port=443 ns=inside")),
        "{log}"
    );
    // By the ClusterIP and by name, TLS checked against the pod's ca.crt,
    // authenticated by its token: the pod reads itself.
    for server in [format!("{ip}:443"), "kubernetes.default.svc".to_string()] {
        assert!(
            log.contains(&format!("server={server} http=200 \"name\": \"asker\"")),
            "{log}"
        );
    }
}

const NO_ACCOUNT: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: lonely}
---
apiVersion: v1
kind: Pod
metadata: {name: tokenless, namespace: lonely}
spec:
  serviceAccountName: ghost
  volumes:
  - name: token
    projected:
      sources: [{serviceAccountToken: {audience: outrigger, expirationSeconds: 3600, path: token}}]
  containers:
  - name: app
    image: outrigger/shell
    command: [sh, -c, "echo should not run"]
    volumeMounts: [{name: token, mountPath: /run/outrigger-testnode/mnt/token}]
"#;

#[test]
fn a_token_that_cannot_be_issued_keeps_the_pod_pending_with_an_event() {
    require_node_tools();
    let Some(api) = KubeApi::start("testnode-tokenless") else {
        return;
    };
    let state = api.dir.join("node");
    let node = NodeProcess::start(&api, &state);
    api.apply(NO_ACCOUNT);
    let event = wait_for(Duration::from_secs(30), "FailedMount event", &node, || {
        let events = api.get_json(&["-n", "lonely", "events"])?;
        events["items"]
            .as_array()?
            .iter()
            .find(|e| e["reason"] == "FailedMount" && e["involvedObject"]["name"] == "tokenless")
            .cloned()
    });
    let message = event["message"].as_str().unwrap_or_default();
    assert!(message.contains("TokenRequest"), "{event:#}");
    assert!(message.contains("lonely/ghost"), "{event:#}");
    let pod = api.get_json(&["-n", "lonely", "pod", "tokenless"]).unwrap();
    assert_eq!(pod["status"]["phase"], "Pending", "{pod:#}");
    assert!(
        pod["status"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("TokenRequest"),
        "{pod:#}"
    );
    assert!(
        container(&pod, "containerStatuses", "app")["state"]["running"].is_null(),
        "{pod:#}"
    );
}
