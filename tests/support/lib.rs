//! The one test harness of the workspace: finding the workspace's binaries
//! and running them on loopback port 0 (here), the proxy's integration tests
//! (`proxy`), network namespaces (`netns`), a real Kubernetes API server
//! (`kube_api`).
#![forbid(unsafe_code)]

pub mod kube_api;
pub mod netns;
pub mod proxy;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Path of a workspace binary in the profile the tests were built with,
/// brought up to date first, once per test process (`cargo test -p
/// outrigger-e2e` alone does not rebuild the proxy or the operator, and a
/// stale binary would test old code) — unless OUTRIGGER_BINARIES_PREBUILT
/// says a workspace build just made it (tests/run.sh).
pub fn binary(package: &str, name: &str) -> anyhow::Result<PathBuf> {
    static BUILT: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let test_exe = std::env::current_exe()?;
    // target/<profile>/deps/<test> -> target/<profile>
    let profile_dir = test_exe
        .parent()
        .and_then(|deps| deps.parent())
        .ok_or_else(|| anyhow::anyhow!("unexpected test binary location {test_exe:?}"))?;
    let path = profile_dir.join(name);
    // tests/run.sh builds every binary first with `cargo build --workspace
    // --all-targets`, which resolves features as `cargo test --workspace`
    // does (dev-dependencies turn on tokio's test-util and more). Building
    // here with `-p` would resolve other features and compile most of the
    // dependency tree a second time (~6 minutes on a fresh 2-core machine),
    // so under that script the prebuilt binary is used as it is.
    if std::env::var_os("OUTRIGGER_BINARIES_PREBUILT").is_some() {
        anyhow::ensure!(
            path.is_file(),
            "{path:?} is missing: OUTRIGGER_BINARIES_PREBUILT is set, so run \
             `cargo build --workspace --all-targets` first (tests/run.sh does)"
        );
        return Ok(path);
    }
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if !built.iter().any(|b| b == name) {
        let mut build = Command::new(env!("CARGO"));
        build.args(["build", "-q", "-p", package, "--bin", name]);
        if profile_dir.file_name().is_some_and(|p| p == "release") {
            build.arg("--release");
        }
        let status = build.status()?;
        anyhow::ensure!(status.success(), "cargo build -p {package} failed");
        built.push(name.to_string());
    }
    Ok(path)
}

/// The workspace's root directory (where Cargo.lock is).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lives in the workspace")
        .to_path_buf()
}

/// Fails the test when `tool` is not on PATH: a test that cannot run must
/// not pass (`bash tests/setup.sh` installs every tool the tests use).
/// Returns true, so call sites read `if !require_tool(..) { return; }`.
pub fn require_tool(tool: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        found,
        "{tool} is not installed: run `bash tests/setup.sh` (as root) first"
    );
    found
}

/// A loopback port nobody listens on right now (bound, then released): for
/// peers that cannot report a port of their own choosing.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// A fresh directory, unique within this process and across processes.
pub fn temp_dir(name: &str) -> PathBuf {
    static CREATED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = CREATED.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!("outrigger-e2e-{name}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// The addresses a binary started with `--address-file=FILE` writes there
/// once it listens, waited for up to `limit`; panics if `child` (`what`, for
/// messages) exits first or the limit passes.
pub async fn read_address_file(
    file: &Path,
    child: &mut tokio::process::Child,
    limit: Duration,
    what: &str,
) -> serde_json::Value {
    let deadline = Instant::now() + limit;
    loop {
        // A file caught half-written is read again on the next round.
        if let Ok(text) = std::fs::read_to_string(file) {
            if let Ok(addresses) = serde_json::from_str(&text) {
                return addresses;
            }
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited before listening: {status}");
        }
        assert!(
            Instant::now() < deadline,
            "{what} did not listen within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A running binary, killed when dropped, with the addresses it reported.
pub struct Process {
    pub child: tokio::process::Child,
    /// The binary's file name, for messages.
    name: String,
    pub addresses: serde_json::Value,
    dir: PathBuf,
}

impl Process {
    /// Spawns `binary args… --address-file=F` and waits for F to appear.
    pub async fn start(binary: &Path, args: &[String]) -> Process {
        Self::start_with_env(binary, args, &[]).await
    }

    /// [`Process::start`] with extra environment variables (e.g. KUBECONFIG).
    pub async fn start_with_env(binary: &Path, args: &[String], env: &[(&str, &Path)]) -> Process {
        let dir = temp_dir("process");
        let file = dir.join("addresses.json");
        let mut child = tokio::process::Command::new(binary)
            .envs(env.iter().copied())
            .args(args)
            .arg(format!("--address-file={}", file.display()))
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("binary starts");
        let what = binary.display().to_string();
        let addresses = read_address_file(&file, &mut child, Duration::from_secs(20), &what).await;
        Process {
            child,
            name: binary
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
            addresses,
            dir,
        }
    }

    /// Waits until the process's admin listener answers `/ready` with 200.
    pub async fn wait_ready(self, limit: Duration) -> Process {
        let admin = self.addr("admin");
        let what = format!("{} ready", self.name);
        wait_until(limit, &what, || async move {
            matches!(http(admin, "GET", "/ready", "a").await, Ok((200, _)))
        })
        .await;
        self
    }

    pub fn addr(&self, name: &str) -> std::net::SocketAddr {
        self.addresses[name]
            .as_str()
            .unwrap_or_else(|| panic!("no {name} address"))
            .parse()
            .unwrap()
    }

    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A minimal HTTP/1.1 request over a fresh connection: (status, body).
pub async fn http(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    host: &str,
) -> std::io::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response))
        .await
        .map_err(|_| std::io::Error::other("response timed out"))??;
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP response: {text:?}")))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// Polls `condition` every 25ms for up to `limit`.
pub async fn wait_until<F, Fut>(limit: Duration, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if condition().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{what}: not reached within {limit:?}");
}
