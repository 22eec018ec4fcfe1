//! The proxy's integration tests: run the real `outrigger-proxy` binary on
//! loopback ports, give it policy files, and talk to it with real clients.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

pub use crate::{free_port, require_tool, temp_dir};

/// The `outrigger-proxy` binary of this build.
pub fn proxy_binary() -> &'static str {
    static PATH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PATH.get_or_init(|| {
        crate::binary("outrigger-proxy", "outrigger-proxy")
            .expect("outrigger-proxy builds")
            .display()
            .to_string()
    })
}

/// The `outrigger-tools` binary (the fault-injecting upstream, for tests
/// that run it inside a network namespace).
pub fn tools_binary() -> &'static str {
    static PATH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PATH.get_or_init(|| {
        crate::binary("outrigger-tools", "outrigger-tools")
            .expect("outrigger-tools builds")
            .display()
            .to_string()
    })
}

pub fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A running proxy process; killed when dropped.
pub struct ProxyProcess {
    pub inbound: SocketAddr,
    pub outbound: SocketAddr,
    pub admin: SocketAddr,
    pub child: Child,
}

impl ProxyProcess {
    /// Starts the binary on loopback port 0 plus `extra` flags, learns the
    /// chosen ports from its address file, and waits until `/ready` is 200.
    pub async fn start(extra: &[&str]) -> ProxyProcess {
        let dir = temp_dir("proxy");
        let address_file = dir.join("addresses.json");
        let mut command = Command::new(proxy_binary());
        command
            .arg("--inbound-addr=127.0.0.1:0")
            .arg("--outbound-addr=127.0.0.1:0")
            .arg("--admin-addr=127.0.0.1:0")
            .arg(format!("--address-file={}", address_file.display()))
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let mut child = command.spawn().expect("proxy binary starts");
        let addresses =
            crate::read_address_file(&address_file, &mut child, Duration::from_secs(15), "proxy")
                .await;
        let _ = std::fs::remove_dir_all(&dir);
        let addr = |name: &str| addresses[name].as_str().unwrap().parse().unwrap();
        let proxy = ProxyProcess {
            inbound: addr("inbound"),
            outbound: addr("outbound"),
            admin: addr("admin"),
            child,
        };
        proxy.wait_ready().await;
        proxy
    }

    pub async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok((200, _)) = raw_get(self.admin, "/ready").await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("proxy did not become ready within 15s");
    }

    pub async fn metrics(&self) -> String {
        raw_get(self.admin, "/metrics").await.unwrap().1
    }

    pub async fn config(&self) -> serde_json::Value {
        let body = raw_get(self.admin, "/config").await.unwrap().1;
        serde_json::from_str(&body).unwrap()
    }

    pub fn pid(&self) -> i32 {
        self.child.id().expect("running") as i32
    }
}

/// The value of a metric line (`name{labels} value`), summed over lines whose
/// series text contains every fragment.
pub fn metric_value(metrics: &str, name: &str, fragments: &[&str]) -> f64 {
    metrics
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter(|line| line.starts_with(name) && line[name.len()..].starts_with(['{', ' ']))
        .filter(|line| fragments.iter().all(|f| line.contains(f)))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A minimal HTTP/1.1 GET over a fresh connection: (status, body).
pub async fn raw_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
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

/// Runs a command to completion and returns its stdout; panics with its
/// stderr when it fails.
pub async fn run(program: &str, args: &[&str]) -> String {
    let output = Command::new(program)
        .args(args)
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        output.status.success(),
        "{program} {args:?} failed: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("utf-8 output")
}

/// A file of `size` pseudo-random bytes, and its SHA-256 as hex.
pub fn random_file(dir: &Path, name: &str, size: usize) -> (std::path::PathBuf, String) {
    use sha2::{Digest, Sha256};
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut data = Vec::with_capacity(size);
    while data.len() < size {
        // xorshift: fast, deterministic, incompressible enough for a transfer test.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        data.extend_from_slice(&state.to_le_bytes());
    }
    data.truncate(size);
    let digest: String = Sha256::digest(&data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let path = dir.join(name);
    std::fs::write(&path, &data).unwrap();
    (path, digest)
}

/// A policy file in a fresh temporary directory; removed when dropped.
pub struct PolicyFile {
    pub path: std::path::PathBuf,
    dir: std::path::PathBuf,
}

impl PolicyFile {
    pub fn new(name: &str, yaml: &str) -> PolicyFile {
        let dir = temp_dir(&format!("policy-{name}"));
        let path = dir.join("policy.yaml");
        std::fs::write(&path, yaml).unwrap();
        PolicyFile { path, dir }
    }

    pub fn write(&self, yaml: &str) {
        std::fs::write(&self.path, yaml).unwrap();
    }

    pub fn flag(&self) -> String {
        format!("--policy={}", self.path.display())
    }
}

impl Drop for PolicyFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A ResiliencePolicy for Service `name` in namespace `default`, with `spec`
/// (indented YAML lines under `spec:`) besides the targetRef.
pub fn policy(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: outrigger.dev/v1alpha1\nkind: ResiliencePolicy\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  targetRef: {{kind: Service, name: {name}}}\n{spec}"
    )
}

/// An EndpointSlice giving Service `name` the loopback endpoints `ports`.
pub fn endpoint_slice(name: &str, ports: &[u16]) -> String {
    // Every endpoint is 127.0.0.1 on its own port, and a slice's port list
    // applies to all its addresses: one slice per port.
    ports
        .iter()
        .enumerate()
        .map(|(i, port)| {
            format!(
                "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}-{i}\n  namespace: default\n  labels: {{kubernetes.io/service-name: {name}}}\nports: [{{port: {port}}}]\nendpoints:\n  - addresses: [\"127.0.0.1\"]\n    conditions: {{ready: true}}\n"
            )
        })
        .collect()
}

/// One HTTP/1.1 request over a fresh connection: (status, headers, body).
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, http::HeaderMap, Vec<u8>) {
    use http_body_util::{BodyExt, Full};
    use hyper_util::rt::TokioIo;
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let mut builder = http::Request::builder().method(method).uri(path);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let request = builder
        .body(Full::new(bytes::Bytes::copy_from_slice(body)))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    (status, headers, body)
}

/// A gRPC response as it came: headers, body and trailers.
pub struct GrpcReply {
    pub headers: http::HeaderMap,
    pub body: Vec<u8>,
    pub trailers: Option<http::HeaderMap>,
}

impl GrpcReply {
    /// `grpc-status` from the trailers, or from the headers of a
    /// trailers-only response.
    pub fn status(&self) -> Option<&str> {
        self.trailers
            .as_ref()
            .and_then(|t| t.get("grpc-status"))
            .or_else(|| self.headers.get("grpc-status"))
            .and_then(|v| v.to_str().ok())
    }
}

/// An HTTP/2 connection (prior knowledge) to `addr`, driven by its own
/// task: requests go through the handle returned.
pub async fn h2_connect<B>(addr: SocketAddr) -> hyper::client::conn::http2::SendRequest<B>
where
    B: hyper::body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    sender
}

/// One unary gRPC call over HTTP/2 (prior knowledge) on a fresh connection:
/// `message` framed as one uncompressed gRPC message, sent with a
/// content-length (which grpcio's clients do not send), plus `headers`.
pub async fn grpc_unary(
    addr: SocketAddr,
    authority: &str,
    path: &str,
    message: &[u8],
    headers: &[(&str, &str)],
) -> GrpcReply {
    use http_body_util::{BodyExt, Full};
    let mut sender = h2_connect(addr).await;
    let mut framed = vec![0u8];
    framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
    framed.extend_from_slice(message);
    let mut builder = http::Request::post(format!("http://{authority}{path}"))
        .version(http::Version::HTTP_2)
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("content-length", framed.len());
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let request = builder.body(Full::new(bytes::Bytes::from(framed))).unwrap();
    let response = sender.send_request(request).await.unwrap();
    let headers = response.headers().clone();
    let collected = response.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned();
    GrpcReply {
        headers,
        body: collected.to_bytes().to_vec(),
        trailers,
    }
}
