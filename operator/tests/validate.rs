//! The `validate` command on the project's own examples and on broken files.

use std::process::Command;

const BINARY: &str = env!("CARGO_BIN_EXE_outrigger-operator");

#[test]
fn examples_are_valid() {
    let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/policies");
    let files: Vec<_> = std::fs::read_dir(examples)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    assert!(!files.is_empty());
    let output = Command::new(BINARY)
        .arg("validate")
        .args(&files)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn invalid_policy_reports_each_field() {
    let dir = std::env::temp_dir().join(format!("outrigger-validate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bad.yaml");
    std::fs::write(
        &file,
        "apiVersion: outrigger.dev/v1alpha1\nkind: ResiliencePolicy\nmetadata: {name: pay}\nspec:\n  targetRef: {name: pay}\n  retry: {backoff: {base: 2s, max: 1s}}\n  circuitBreaker: {halfOpenRequests: 0}\n",
    )
    .unwrap();
    let output = Command::new(BINARY)
        .arg("validate")
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("pay: spec.retry.backoff.max: must be >= base (2s)"),
        "{stderr}"
    );
    assert!(
        stderr.contains("pay: spec.circuitBreaker.halfOpenRequests: must be at least 1"),
        "{stderr}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// crds/ is generated from the API types: regenerate it with
/// `cargo run -p outrigger-operator -- crds > crds/resiliencepolicies.outrigger.dev.yaml`.
#[test]
fn committed_crd_is_current() {
    let committed = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../crds/resiliencepolicies.outrigger.dev.yaml"
    ))
    .unwrap();
    let output = Command::new(BINARY).arg("crds").output().unwrap();
    assert!(output.status.success());
    let generated = String::from_utf8(output.stdout).unwrap();
    assert!(
        committed == generated,
        "crds/ is stale: run `cargo run -p outrigger-operator -- crds > crds/resiliencepolicies.outrigger.dev.yaml`"
    );
    let chart_copy = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../charts/outrigger/crds/resiliencepolicies.outrigger.dev.yaml"
    ))
    .unwrap();
    assert!(
        chart_copy == generated,
        "the chart's CRD is stale: copy crds/resiliencepolicies.outrigger.dev.yaml to charts/outrigger/crds/"
    );
}

/// docs/policy-reference.md is generated from the CRD schema.
#[test]
fn committed_policy_reference_is_current() {
    let committed = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/policy-reference.md"
    ))
    .unwrap();
    let output = Command::new(BINARY)
        .arg("policy-reference")
        .output()
        .unwrap();
    assert!(output.status.success());
    assert!(
        committed == String::from_utf8(output.stdout).unwrap(),
        "docs/policy-reference.md is stale: run `cargo run -p outrigger-operator -- policy-reference > docs/policy-reference.md`"
    );
}
