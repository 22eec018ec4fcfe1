//! The injection webhook over real HTTPS: certificates from `gen-certs`, the
//! operator binary serving, curl (a real client) verifying against the CA.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BINARY: &str = env!("CARGO_BIN_EXE_outrigger-operator");

#[test]
fn https_admission_review_returns_a_patch() {
    let curl = Command::new("sh")
        .args(["-c", "command -v curl"])
        .output()
        .unwrap();
    if !curl.status.success() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "curl is required in CI"
        );
        eprintln!("SKIPPED: curl is not installed");
        return;
    }
    let dir = std::env::temp_dir().join(format!("outrigger-webhook-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("manifests")).unwrap();
    let status = Command::new(BINARY)
        .arg("gen-certs")
        .arg(dir.join("certs"))
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let certs = dir.join("certs");
    let address_file = dir.join("addresses.json");
    let mut child = Command::new(BINARY)
        .args([
            "run",
            "--admin-addr=127.0.0.1:0",
            "--policy-addr=127.0.0.1:0",
            "--webhook-addr=127.0.0.1:0",
        ])
        .arg(format!("--manifests={}", dir.join("manifests").display()))
        .arg(format!(
            "--webhook-tls-cert={}",
            certs.join("tls.crt").display()
        ))
        .arg(format!(
            "--webhook-tls-key={}",
            certs.join("tls.key").display()
        ))
        .arg(format!("--address-file={}", address_file.display()))
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    let addresses: serde_json::Value = loop {
        if let Ok(text) = std::fs::read_to_string(&address_file) {
            break serde_json::from_str(&text).unwrap();
        }
        assert!(Instant::now() < deadline, "operator did not start");
        std::thread::sleep(Duration::from_millis(20));
    };
    let webhook = addresses["webhook"].as_str().unwrap().to_string();
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/admission-deployment-pod.json"
    );
    let output = Command::new("curl")
        .args(["-sS", "--fail", "--cacert"])
        .arg(certs.join("ca.crt"))
        .args(["-H", "Content-Type: application/json", "--data-binary"])
        .arg(format!("@{fixture}"))
        .arg(format!("https://{webhook}/inject"))
        .output()
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let review: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(review["kind"], "AdmissionReview");
    assert_eq!(
        review["response"]["uid"],
        "705ab4f5-6393-11e8-b7cc-42010a800002"
    );
    assert_eq!(review["response"]["allowed"], true);
    assert_eq!(review["response"]["patchType"], "JSONPatch");
    std::fs::remove_dir_all(&dir).unwrap();
}
