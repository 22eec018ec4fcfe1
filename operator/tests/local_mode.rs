//! Local mode (`run --manifests DIR`) with the real binary: no API server; the
//! same compile step reads files, and editing a file changes the view.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BINARY: &str = env!("CARGO_BIN_EXE_outrigger-operator");

struct Operator {
    child: Child,
    admin: SocketAddr,
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    let status = text.split(' ').nth(1)?.parse().ok()?;
    Some((status, text.split_once("\r\n\r\n")?.1.to_string()))
}

fn view(op: &Operator) -> serde_json::Value {
    serde_json::from_str(&get(op.admin, "/view").unwrap().1).unwrap()
}

fn wait_until(mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "condition not reached in 10s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

const SERVICE: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: payments, namespace: shop}\nspec:\n  clusterIP: 10.96.0.20\n  ports: [{name: http, port: 8080, targetPort: 9000}]\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: payments-1, namespace: shop, labels: {kubernetes.io/service-name: payments}}\naddressType: IPv4\nports: [{name: http, port: 9000}]\nendpoints:\n- addresses: [10.0.0.5]\n  conditions: {ready: true}\n";

const POLICY: &str = "apiVersion: outrigger.dev/v1alpha1\nkind: ResiliencePolicy\nmetadata: {name: payments, namespace: shop}\nspec:\n  targetRef: {kind: Service, name: payments}\n  retry: {attempts: 2}\n";

#[test]
fn editing_files_changes_the_compiled_view() {
    let dir = std::env::temp_dir().join(format!("outrigger-manifests-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("policy.yaml"), POLICY).unwrap();

    let admin = free_addr();
    let mut child = Command::new(BINARY)
        .args(["run", "--manifests"])
        .arg(&dir)
        .arg(format!("--admin-addr={admin}"))
        // Its own port: the tests run side by side, and the default (8090)
        // would be taken by whichever started first.
        .arg(format!("--policy-addr={}", free_addr()))
        .arg("--manifests-poll=50ms")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let op = Operator { child, admin };
    wait_until(|| matches!(get(admin, "/ready"), Some((200, _))));

    // The Service does not exist yet: accepted but unresolved, nothing compiled.
    let first: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(first["policy"], "shop/payments");
    assert_eq!(first["status"]["resolvedRefs"]["reason"], "ServiceNotFound");
    assert_eq!(view(&op)["destinations"], serde_json::json!({}));

    // The Service and its endpoints appear: the policy is programmed.
    std::fs::write(dir.join("service.yaml"), SERVICE).unwrap();
    let line: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(line["status"]["resolvedRefs"]["reason"], "ResolvedRefs");
    let v = view(&op);
    let destination = &v["destinations"]["shop/payments"];
    assert_eq!(destination["clusterIps"][0], "10.96.0.20");
    assert_eq!(destination["endpoints"][0]["ip"], "10.0.0.5");
    assert_eq!(destination["policies"][0]["spec"]["retry"]["attempts"], 2);
    assert_eq!(
        destination["policies"][0]["spec"]["retry"]["codes"],
        serde_json::json!([502, 503, 504])
    );

    // An edit is picked up.
    std::fs::write(
        dir.join("policy.yaml"),
        POLICY.replace("attempts: 2", "attempts: 4"),
    )
    .unwrap();
    wait_until(|| {
        view(&op)["destinations"]["shop/payments"]["policies"][0]["spec"]["retry"]["attempts"] == 4
    });

    // A broken file is skipped with an error; the rest still applies.
    std::fs::write(dir.join("broken.yaml"), "kind: [").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let metrics = get(admin, "/metrics").unwrap().1;
    assert!(
        metrics.contains("outrigger_operator_reconcile_errors_total{kind=\"manifest\"} 1"),
        "{metrics}"
    );
    assert_eq!(
        view(&op)["destinations"]["shop/payments"]["policies"][0]["spec"]["retry"]["attempts"],
        4
    );
    drop(op);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `kubectl logs` and log files show what the operator writes to a pipe:
/// plain text, no terminal colour codes.
#[test]
fn logs_to_a_pipe_have_no_colour_codes() {
    let dir = std::env::temp_dir().join(format!("outrigger-nocolour-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let admin = free_addr();
    let mut child = Command::new(BINARY)
        .args(["run", "--manifests"])
        .arg(&dir)
        .arg(format!("--admin-addr={admin}"))
        // Its own port: the tests run side by side, and the default (8090)
        // would be taken by whichever started first.
        .arg(format!("--policy-addr={}", free_addr()))
        .env_remove("NO_COLOR")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let _op = Operator { child, admin };
    let first = lines.next().expect("a log line").unwrap();
    assert!(!first.contains('\x1b'), "colour codes in a pipe: {first:?}");
    assert!(first.contains("INFO"), "{first}");
    std::fs::remove_dir_all(&dir).unwrap();
}

const ROUTE: &str = "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: checkout, namespace: shop}\nspec:\n  parentRefs: [{group: \"\", kind: Service, name: payments, port: 8080}]\n  rules:\n  - matches: [{path: {type: PathPrefix, value: /cart}}]\n    timeouts: {request: 2s}\n    backendRefs: [{name: payments, port: 8080}]\n";

/// HTTPRoute documents: their verdict is printed (per Service parent,
/// Accepted and ResolvedRefs), and the Service gets a spec made of the route.
#[test]
fn route_documents_print_their_verdicts_and_reach_the_view() {
    let dir = std::env::temp_dir().join(format!("outrigger-routes-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("service.yaml"), SERVICE).unwrap();
    std::fs::write(dir.join("route.yaml"), ROUTE).unwrap();
    let admin = free_addr();
    let mut child = Command::new(BINARY)
        .args(["run", "--manifests"])
        .arg(&dir)
        .arg(format!("--admin-addr={admin}"))
        .arg(format!("--policy-addr={}", free_addr()))
        .arg("--manifests-poll=50ms")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let op = Operator { child, admin };
    wait_until(|| matches!(get(admin, "/ready"), Some((200, _))));

    let line: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(line["route"], "HTTPRoute shop/checkout");
    let parent = &line["status"]["parents"][0];
    assert_eq!(parent["controllerName"], "outrigger.dev/mesh");
    assert_eq!(parent["accepted"]["status"], "True");
    assert_eq!(parent["resolvedRefs"]["status"], "True");
    let v = view(&op);
    let destination = &v["destinations"]["shop/payments"];
    assert_eq!(
        destination["routes"],
        serde_json::json!(["HTTPRoute shop/checkout"])
    );
    let applied = &destination["policies"][0];
    assert_eq!(applied["port"], 8080);
    assert_eq!(applied["spec"]["exclusiveRoutes"], true);
    assert_eq!(applied["spec"]["routes"][0]["timeouts"]["request"], "2s");

    // The backend goes missing in an edit: the new verdict is printed.
    std::fs::write(
        dir.join("route.yaml"),
        ROUTE.replace("backendRefs: [{name: payments", "backendRefs: [{name: gone"),
    )
    .unwrap();
    let line: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(
        line["status"]["parents"][0]["resolvedRefs"]["reason"],
        "BackendNotFound"
    );
    drop(op);
    std::fs::remove_dir_all(&dir).unwrap();
}
