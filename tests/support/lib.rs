//! Helpers shared by the end-to-end tests: finding the workspace's binaries.

use std::path::PathBuf;
use std::process::Command;

/// Path of a workspace binary in the profile the tests were built with,
/// building it first when missing (e.g. `cargo test -p outrigger-e2e` alone).
pub fn binary(package: &str, name: &str) -> anyhow::Result<PathBuf> {
    let test_exe = std::env::current_exe()?;
    // target/<profile>/deps/<test> -> target/<profile>
    let profile_dir = test_exe
        .parent()
        .and_then(|deps| deps.parent())
        .ok_or_else(|| anyhow::anyhow!("unexpected test binary location {test_exe:?}"))?;
    let path = profile_dir.join(name);
    if !path.exists() {
        let status = Command::new(env!("CARGO"))
            .args(["build", "-p", package, "--bin", name])
            .status()?;
        anyhow::ensure!(status.success(), "cargo build -p {package} failed");
    }
    Ok(path)
}

/// Whether `tool` is on PATH. In CI a missing tool fails the test (.ci/run
/// installs everything); elsewhere the test is skipped with a reason.
pub fn require_tool(tool: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{tool} is required in CI; .ci/run should install it"
        );
        eprintln!("SKIPPED: {tool} is not installed");
    }
    found
}
