//! Policy distribution at scale: a load client for the operator's policy
//! stream.
//!
//! Writes a manifests directory with S Services in namespace `scale` (each
//! with an EndpointSlice of three endpoints and a ResiliencePolicy with
//! `retry: {attempts: 2}`), starts the operator in local mode on it, and opens
//! N watch streams spread round-robin over the Services, multiplexed as HTTP/2
//! streams over C connections (one connection = one simulated proxy watching
//! N/C destinations). Then it measures:
//!
//! - how long until every stream has its first snapshot;
//! - the operator's idle cost (heartbeats, status reporting);
//! - propagation of one edit that changes every policy (`attempts: 3`), from
//!   the rename of the file into place to each stream receiving it;
//! - propagation of an edit to one Service's policy (`attempts: 5`, svc-00000:
//!   with `--shared-destination` every proxy watches it), and whether streams
//!   of other Services received anything (they should not);
//! - closing every stream (gauges back to zero, RSS afterwards), and further
//!   rounds with fresh proxy ids (memory growth across churn).
//!
//! Operator RSS comes from /proc/PID/status (sampled every 10 ms, peak), CPU
//! from /proc/PID/stat (utime + stime), bytes from
//! `outrigger_operator_push_bytes_total`.
//!
//! ```text
//! cargo build --release -p outrigger-operator --example stream_scale
//! target/release/examples/stream_scale --subscribers 10000
//! ```
//!
//! Like production (`--tls --token-review --restart`, as bench/policy-scale.sh
//! runs it): each simulated proxy holds ONE TLS connection (the operator's
//! generated CA pinned, ALPN h2) carrying its watch streams and acks, and
//! sends its own bearer token; the operator reviews tokens with the TokenReview
//! API (cached 30 s, as in a cluster) of a stand-in API server in this process
//! that answers every review positively (`system:serviceaccount:scale:<proxy>`)
//! and counts them. Simulated: the API server (a real one needs a cluster;
//! what is measured is the operator's side, and how many reviews it asks
//! for), the proxies (one process, one task per proxy, instead of 10k pods)
//! and the loopback network. `--restart` kills the operator after the edits
//! and starts a new one on the same address: every proxy reconnects (backoff
//! 100 ms doubling to 10 s, full jitter, as the proxy does) and resubscribes;
//! measured until every stream has a snapshot from the new operator.
//!
//! Everything runs on loopback; the whole run is bounded by --timeout.

use std::collections::HashMap;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};
use outrigger_api::stream::{Ack, StreamMessage, Subscription};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio_rustls::TlsConnector;

/// hyper's server default: a connection carries at most this many streams.
const SERVER_MAX_CONCURRENT_STREAMS: usize = 200;
const NAMESPACE: &str = "scale";
const PORT: u16 = 80;

#[derive(Debug, Parser)]
#[command(about = "Policy-stream scale benchmark against a local-mode operator")]
struct Args {
    /// The operator binary.
    #[arg(long, default_value = "target/release/outrigger-operator")]
    operator: PathBuf,
    /// Services (each with an EndpointSlice of 3 endpoints and a policy).
    #[arg(long, default_value_t = 1000)]
    services: usize,
    /// Watch streams (simulated subscriptions), round-robin over the Services.
    #[arg(long, default_value_t = 1000)]
    subscribers: usize,
    /// HTTP/2 connections (simulated proxies); default subscribers/100.
    #[arg(long)]
    connections: Option<usize>,
    /// The operator's --manifests-poll.
    #[arg(long, default_value = "50ms")]
    manifests_poll: String,
    /// The operator's --heartbeat.
    #[arg(long, default_value = "5s")]
    heartbeat: String,
    /// Acknowledge every snapshot (POST /v1/ack), as proxies do.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    ack: bool,
    /// Worker threads of the client's runtime (the operator uses one per core).
    #[arg(long, default_value_t = 1)]
    client_threads: usize,
    /// Seconds of idle streams over which the operator's idle CPU is measured.
    #[arg(long, default_value_t = 6)]
    idle_secs: u64,
    /// Rounds of opening and closing every stream (round 1 is the measured
    /// one; later rounds use fresh proxy ids, like restarted pods).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Give up after this many seconds (the operator is killed either way).
    #[arg(long, default_value_t = 120)]
    timeout: u64,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Keep the temporary directory (manifests, operator logs).
    #[arg(long)]
    keep: bool,
    /// TLS to the policy server (certificates from `outrigger-operator
    /// gen-certs`, the CA pinned by the clients).
    #[arg(long)]
    tls: bool,
    /// Every proxy sends its own token; the operator reviews them with the
    /// TokenReview API of a stand-in API server that counts reviews.
    #[arg(long)]
    token_review: bool,
    /// After the edits, kill the operator and start a new one on the same
    /// address: every proxy reconnects at once.
    #[arg(long)]
    restart: bool,
    /// Every proxy's first stream watches svc-00000, a destination every pod
    /// calls (an auth or config service): the one-policy edit (of svc-00000's
    /// policy) must then reach every proxy. The other streams stay
    /// round-robin over the Services.
    #[arg(long)]
    shared_destination: bool,
}

/// Which Service each watch stream subscribes to.
#[derive(Debug, Clone, Copy)]
struct Layout {
    services: usize,
    per_connection: usize,
    shared_destination: bool,
}

impl Layout {
    fn service(&self, stream: usize) -> usize {
        if self.shared_destination && stream.is_multiple_of(self.per_connection) {
            0
        } else {
            stream % self.services
        }
    }
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let dir = std::env::temp_dir().join(format!("outrigger-stream-scale-{}", std::process::id()));
    let cleanup = Cleanup {
        dir: dir.clone(),
        keep: args.keep,
        child: Mutex::new(None),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.client_threads.max(1))
        .enable_all()
        .build()
        .expect("tokio runtime starts");
    let timeout = Duration::from_secs(args.timeout);
    let outcome = runtime.block_on(async {
        match tokio::time::timeout(timeout, run(&args, &dir, &cleanup)).await {
            Ok(result) => result,
            Err(_) => Err(format!("gave up after {}s (--timeout)", args.timeout)),
        }
    });
    runtime.shutdown_timeout(Duration::from_secs(2));
    let code = match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("stream_scale: {err}");
            let log = dir.join("operator.stderr");
            if let Ok(text) = std::fs::read_to_string(&log) {
                let tail: Vec<&str> = text.lines().rev().take(20).collect();
                eprintln!("operator stderr (last lines):");
                for line in tail.iter().rev() {
                    eprintln!("  {line}");
                }
            }
            std::process::ExitCode::FAILURE
        }
    };
    drop(cleanup);
    code
}

/// Kills the operator and removes the temporary directory, however the run ends.
struct Cleanup {
    dir: PathBuf,
    keep: bool,
    child: Mutex<Option<Child>>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.lock().map(|mut c| c.take()).ok().flatten() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if self.keep {
            eprintln!("kept {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

// ---------------------------------------------------------------- manifests

fn service_name(i: usize) -> String {
    format!("svc-{i:05}")
}

fn authority(i: usize) -> String {
    format!("{}.{NAMESPACE}.svc.cluster.local:{PORT}", service_name(i))
}

fn ipv4(base: u8, n: usize) -> String {
    format!(
        "10.{}.{}.{}",
        base as usize + n / 65536,
        (n / 256) % 256,
        n % 256
    )
}

/// Services and their EndpointSlices (never edited during the run).
fn services_yaml(services: usize) -> String {
    let mut out = String::with_capacity(services * 700);
    for i in 0..services {
        let name = service_name(i);
        out.push_str(&format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {NAMESPACE}}}\n\
             spec:\n  clusterIP: {ip}\n  ports: [{{name: http, port: {PORT}, targetPort: http}}]\n---\n\
             apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
             metadata:\n  name: {name}-abcde\n  namespace: {NAMESPACE}\n  labels: {{kubernetes.io/service-name: {name}}}\n\
             addressType: IPv4\nports: [{{name: http, port: 8080, protocol: TCP}}]\nendpoints:\n",
            ip = ipv4(96, i + 1),
        ));
        for k in 0..3 {
            out.push_str(&format!(
                "- addresses: [{}]\n  conditions: {{ready: true}}\n",
                ipv4(128, i * 3 + k + 1)
            ));
        }
        out.push_str("---\n");
    }
    out
}

/// One ResiliencePolicy per Service; `attempts(i)` gives its retry attempts.
fn policies_yaml(services: usize, attempts: impl Fn(usize) -> u32) -> String {
    let mut out = String::with_capacity(services * 200);
    for i in 0..services {
        let name = service_name(i);
        out.push_str(&format!(
            "apiVersion: outrigger.dev/v1alpha1\nkind: ResiliencePolicy\n\
             metadata: {{name: {name}, namespace: {NAMESPACE}}}\n\
             spec:\n  targetRef: {{kind: Service, name: {name}}}\n  retry: {{attempts: {}}}\n---\n",
            attempts(i)
        ));
    }
    out
}

/// Writes `text` next to the manifests directory, then renames it into place
/// (the operator never sees a half-written file). Returns the instant just
/// before the rename.
fn replace_file(dir: &Path, name: &str, text: &str) -> Result<Instant, String> {
    let temp = dir
        .parent()
        .expect("manifests dir has a parent")
        .join(format!("{name}.tmp"));
    let mut file = std::fs::File::create(&temp).map_err(|e| format!("{}: {e}", temp.display()))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| format!("{}: {e}", temp.display()))?;
    drop(file);
    let at = Instant::now();
    std::fs::rename(&temp, dir.join(name)).map_err(|e| format!("rename {name}: {e}"))?;
    Ok(at)
}

// ------------------------------------------------------------------- process

fn read_proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Seconds the process's threads spent waiting on a run queue (runnable,
/// no CPU free), summed over its threads (from /proc/PID/task/*/schedstat:
/// time on CPU, time waiting, in ns). Threads that exited are not counted.
fn runqueue_wait_seconds(pid: &str) -> f64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0.0;
    };
    let mut ns = 0u64;
    for task in tasks.flatten() {
        if let Ok(text) = std::fs::read_to_string(task.path().join("schedstat")) {
            ns += text
                .split_whitespace()
                .nth(1)
                .and_then(|f| f.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    ns as f64 / 1e9
}

/// utime + stime in seconds. /proc reports clock ticks of USER_HZ, which Linux
/// fixes at 100 for this interface.
fn cpu_seconds(pid: &str) -> f64 {
    let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the parenthesised command: state is field 3; utime 14, stime 15.
    let Some((_, rest)) = text.rsplit_once(')') else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (ticks(11) + ticks(12)) as f64 / 100.0
}

/// Samples the operator's VmRSS every 10 ms on its own thread.
struct RssSampler {
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl RssSampler {
    fn start(pid: u32) -> Self {
        let peak = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s) = (peak.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                if let Some(kib) = read_proc_status_kib(pid, "VmRSS:") {
                    p.fetch_max(kib, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        RssSampler { peak, stop }
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

// ------------------------------------------------------------------- metrics

/// GET http://ADDR/PATH over a fresh HTTP/1.1 connection: (status, body).
async fn http1_get(addr: SocketAddr, path: &str) -> Result<(StatusCode, String), String> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| format!("handshake {addr}: {e}"))?;
    tokio::spawn(connection);
    let request = Request::get(path)
        .header(http::header::HOST, addr.to_string())
        .body(Full::new(Bytes::new()))
        .expect("valid request");
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("GET {path}: {e}"))?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("GET {path} body: {e}"))?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

async fn metrics(admin: SocketAddr) -> Result<HashMap<String, f64>, String> {
    let (status, text) = http1_get(admin, "/metrics").await?;
    if status != StatusCode::OK {
        return Err(format!("/metrics: {status}"));
    }
    Ok(text
        .lines()
        .filter(|l| l.starts_with("outrigger_operator_"))
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_string(), value.parse().ok()?))
        })
        .collect())
}

fn metric(m: &HashMap<String, f64>, name: &str) -> f64 {
    m.get(name).copied().unwrap_or(0.0)
}

// ------------------------------------------------------------------- streams

/// One snapshot as a subscriber received it.
#[derive(Clone, Copy)]
struct Received {
    version: u64,
    at: Instant,
    attempts: Option<u32>,
}

#[derive(Default)]
struct SubscriberLog {
    snapshots: Vec<Received>,
    /// (version, when its ack was answered 204).
    acks: Vec<(u64, Instant)>,
    heartbeats: u64,
}

struct Shared {
    logs: Vec<Mutex<SubscriberLog>>,
    /// Subscribers that have received at least one snapshot (this round).
    with_first: AtomicUsize,
    errors: Mutex<Vec<String>>,
    acks_sent: AtomicU64,
    ack_failures: AtomicU64,
    bytes_received: AtomicU64,
    /// Set while the operator is restarted on purpose: broken streams and
    /// refused connections are expected, and proxies reconnect.
    outage: AtomicBool,
    /// Connections (proxies) opened, including reconnections.
    connects: AtomicU64,
}

impl Shared {
    fn new(n: usize) -> Self {
        Shared {
            logs: (0..n).map(|_| Mutex::default()).collect(),
            with_first: AtomicUsize::new(0),
            errors: Mutex::default(),
            acks_sent: AtomicU64::new(0),
            ack_failures: AtomicU64::new(0),
            bytes_received: AtomicU64::new(0),
            outage: AtomicBool::new(false),
            connects: AtomicU64::new(0),
        }
    }

    /// A broken stream or connection: an error unless an outage is on.
    fn broken(&self, message: String) {
        if !self.outage.load(Ordering::Relaxed) {
            self.error(message);
        }
    }

    fn error(&self, message: String) {
        let mut errors = self.errors.lock().expect("not poisoned");
        if errors.len() < 20 {
            errors.push(message);
        }
    }

    fn failed(&self) -> bool {
        !self.errors.lock().expect("not poisoned").is_empty()
    }

    /// The first stream error, if any, as the run's error.
    fn check(&self, when: &str) -> Result<(), String> {
        match self.errors.lock().expect("not poisoned").first() {
            Some(err) => Err(format!("{when}: {err}")),
            None => Ok(()),
        }
    }

    fn latest_attempts(&self, i: usize) -> Option<u32> {
        self.logs[i]
            .lock()
            .expect("not poisoned")
            .snapshots
            .last()
            .and_then(|r| r.attempts)
    }
}

/// The streams of one round: connections and their stream tasks.
struct Round {
    tasks: JoinSet<()>,
}

impl Round {
    async fn close(mut self) {
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
    }
}

/// How the simulated proxies reach the policy server.
struct Target {
    policy: SocketAddr,
    tls: Option<TlsConnector>,
    token_review: bool,
}

type Sender = http2::SendRequest<Full<Bytes>>;

/// One connection: TCP, TLS if configured, HTTP/2 handshake. The connection
/// future is returned to be driven by the proxy's task.
async fn connect(
    target: &Target,
) -> Result<
    (
        Sender,
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send>>,
    ),
    String,
> {
    let policy = target.policy;
    let tcp = TcpStream::connect(policy)
        .await
        .map_err(|e| format!("connect {policy}: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let builder = http2::Builder::new(TokioExecutor::new());
    match &target.tls {
        None => {
            let (sender, connection) = builder
                .handshake::<_, Full<Bytes>>(TokioIo::new(tcp))
                .await
                .map_err(|e| format!("h2 handshake: {e}"))?;
            Ok((
                sender,
                Box::pin(async move { connection.await.map_err(|e| e.to_string()) }),
            ))
        }
        Some(tls) => {
            let name = rustls::pki_types::ServerName::try_from("localhost").expect("valid name");
            let stream = tls
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS handshake: {e}"))?;
            let (sender, connection) = builder
                .handshake::<_, Full<Bytes>>(TokioIo::new(stream))
                .await
                .map_err(|e| format!("h2 handshake: {e}"))?;
            Ok((
                sender,
                Box::pin(async move { connection.await.map_err(|e| e.to_string()) }),
            ))
        }
    }
}

async fn open_round(
    target: &Arc<Target>,
    args: &Args,
    connections: usize,
    round: usize,
    shared: &Arc<Shared>,
) -> Result<Round, String> {
    let n = args.subscribers;
    let per_connection = n.div_ceil(connections);
    let mut tasks = JoinSet::new();
    for c in 0..connections {
        let first = c * per_connection;
        let last = (first + per_connection).min(n);
        if first >= last {
            break;
        }
        let proxy = format!("scale-r{round}-proxy-{c:05}");
        tasks.spawn(proxy_task(
            target.clone(),
            proxy,
            c,
            first..last,
            Layout {
                services: args.services,
                per_connection,
                shared_destination: args.shared_destination,
            },
            args.ack,
            shared.clone(),
        ));
    }
    Ok(Round { tasks })
}

/// One simulated proxy: one connection carrying its streams; when the
/// connection breaks during an outage, reconnect with backoff (100 ms doubling
/// to 10 s, full jitter) and resubscribe everything.
async fn proxy_task(
    target: Arc<Target>,
    proxy: String,
    c: usize,
    indices: std::ops::Range<usize>,
    layout: Layout,
    ack: bool,
    shared: Arc<Shared>,
) {
    let token = target.token_review.then(|| format!("Bearer tok-{proxy}"));
    let mut failures = 0u32;
    // xorshift, seeded per proxy: jitter without a shared RNG.
    let mut seed = (c as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    loop {
        match connect(&target).await {
            Ok((sender, connection)) => {
                failures = 0;
                shared.connects.fetch_add(1, Ordering::Relaxed);
                let mut streams = JoinSet::new();
                for i in indices.clone() {
                    streams.spawn(subscriber(
                        sender.clone(),
                        proxy.clone(),
                        token.clone(),
                        i,
                        layout.service(i),
                        ack,
                        shared.clone(),
                    ));
                }
                drop(sender);
                let outcome = connection.await;
                streams.abort_all();
                shared.broken(format!("connection of {proxy} ended: {outcome:?}"));
            }
            Err(err) => shared.broken(format!("{proxy}: {err}")),
        }
        if !shared.outage.load(Ordering::Relaxed) && shared.failed() {
            return;
        }
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let cap = Duration::from_millis(100)
            .saturating_mul(1u32 << failures.min(7))
            .min(Duration::from_secs(10));
        let delay = cap.mul_f64((seed % 10_000) as f64 / 10_000.0);
        failures += 1;
        tokio::time::sleep(delay).await;
    }
}

async fn subscriber(
    mut sender: Sender,
    proxy: String,
    token: Option<String>,
    index: usize,
    service: usize,
    ack: bool,
    shared: Arc<Shared>,
) {
    let destination = authority(service);
    let uri = format!("http://outrigger-operator/v1/watch?destination={destination}&proxy={proxy}");
    let mut request = Request::get(uri);
    if let Some(token) = &token {
        request = request.header(http::header::AUTHORIZATION, token);
    }
    let request = request
        .body(Full::new(Bytes::new()))
        .expect("valid request");
    let response = match sender.send_request(request).await {
        Ok(r) => r,
        Err(err) => return shared.broken(format!("subscriber {index}: {err}")),
    };
    if response.status() != StatusCode::OK {
        return shared.error(format!("subscriber {index}: HTTP {}", response.status()));
    }
    let subscription = Subscription::Destination(destination);
    let mut body = response.into_body();
    let mut pending: Vec<u8> = Vec::new();
    let mut first = true;
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(f) => f,
            Err(err) => return shared.broken(format!("subscriber {index}: {err}")),
        };
        let at = Instant::now();
        let Ok(data) = frame.into_data() else {
            continue;
        };
        shared
            .bytes_received
            .fetch_add(data.len() as u64, Ordering::Relaxed);
        pending.extend_from_slice(&data);
        while let Some(end) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            let message: StreamMessage = match serde_json::from_slice(&line) {
                Ok(m) => m,
                Err(err) => return shared.error(format!("subscriber {index}: bad line: {err}")),
            };
            match message {
                StreamMessage::Heartbeat { .. } => {
                    shared.logs[index].lock().expect("not poisoned").heartbeats += 1;
                }
                StreamMessage::Snapshot(snapshot) => {
                    let attempts = snapshot
                        .destination
                        .as_ref()
                        .and_then(|d| d.policy.as_ref())
                        .and_then(|p| p.spec.retry.as_ref())
                        .and_then(|r| r.attempts);
                    shared.logs[index]
                        .lock()
                        .expect("not poisoned")
                        .snapshots
                        .push(Received {
                            version: snapshot.version,
                            at,
                            attempts,
                        });
                    if first {
                        first = false;
                        shared.with_first.fetch_add(1, Ordering::Relaxed);
                    }
                    if ack {
                        let body = serde_json::to_vec(&Ack {
                            proxy: proxy.clone(),
                            subscription: subscription.clone(),
                            version: snapshot.version,
                        })
                        .expect("acks serialize");
                        let mut request = Request::builder()
                            .method(Method::POST)
                            .uri("http://outrigger-operator/v1/ack")
                            .header(http::header::CONTENT_TYPE, "application/json");
                        if let Some(token) = &token {
                            request = request.header(http::header::AUTHORIZATION, token);
                        }
                        let request = request
                            .body(Full::new(Bytes::from(body)))
                            .expect("valid request");
                        let response = sender.send_request(request);
                        let shared = shared.clone();
                        let version = snapshot.version;
                        // Acks do not hold up reading the stream.
                        tokio::spawn(async move {
                            shared.acks_sent.fetch_add(1, Ordering::Relaxed);
                            match response.await {
                                Ok(r) if r.status() == StatusCode::NO_CONTENT => {
                                    shared.logs[index]
                                        .lock()
                                        .expect("not poisoned")
                                        .acks
                                        .push((version, Instant::now()));
                                }
                                _ => {
                                    shared.ack_failures.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                        });
                    }
                }
            }
        }
    }
    shared.broken(format!("subscriber {index}: stream ended"));
}

// ---------------------------------------------------------------- statistics

#[derive(Debug, Default, Clone, serde::Serialize)]
struct Propagation {
    /// Subscribers the change concerned.
    expected: usize,
    /// Of those, how many received it.
    received: usize,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    /// Snapshots after the first carrying the change, over all subscribers
    /// (should be 0: one edit, one snapshot).
    extra_snapshots: usize,
    /// Subscribers the change did not concern that received a snapshot anyway.
    spurious: usize,
    /// Streams on which a snapshot's version did not exceed the one before.
    version_regressions: usize,
    /// Of the concerned subscribers, how many had their ack of the change
    /// answered (204), and from the edit to that answer: p50 / p99 / max.
    acked: usize,
    ack_p50_ms: f64,
    ack_p99_ms: f64,
    ack_max_ms: f64,
    /// From a subscriber receiving the change to its ack being answered
    /// (the load generator's own queueing included): p50 / p99.
    ack_after_receipt_p50_ms: f64,
    ack_after_receipt_p99_ms: f64,
    operator_cpu_s: f64,
    /// The load generator's CPU from the edit to 500 ms after every stream
    /// received it (the acks answered meanwhile).
    client_cpu_s: f64,
    /// Over the same span: time the operator's and the load generator's
    /// threads were runnable but waited for a CPU.
    operator_runqueue_wait_s: f64,
    client_runqueue_wait_s: f64,
    push_bytes: f64,
    pushes: f64,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Latencies from `written` to each concerned subscriber's first snapshot with
/// `attempts`, plus extra and spurious snapshots since `written`.
fn propagation(
    shared: &Shared,
    written: Instant,
    concerned: impl Fn(usize) -> bool,
    attempts: u32,
) -> Propagation {
    let mut latencies = Vec::new();
    let mut ack_latencies = Vec::new();
    let mut ack_after_receipt = Vec::new();
    let mut result = Propagation::default();
    for (i, log) in shared.logs.iter().enumerate() {
        let log = log.lock().expect("not poisoned");
        if log
            .snapshots
            .windows(2)
            .any(|w| w[1].version <= w[0].version)
        {
            result.version_regressions += 1;
        }
        let since: Vec<&Received> = log.snapshots.iter().filter(|r| r.at >= written).collect();
        if concerned(i) {
            result.expected += 1;
            if let Some(first) = since.iter().position(|r| r.attempts == Some(attempts)) {
                latencies.push(since[first].at.duration_since(written).as_secs_f64() * 1000.0);
                result.extra_snapshots += since.len() - 1;
                let version = since[first].version;
                if let Some((_, at)) = log.acks.iter().find(|(v, _)| *v == version) {
                    ack_latencies.push(at.duration_since(written).as_secs_f64() * 1000.0);
                    ack_after_receipt
                        .push(at.duration_since(since[first].at).as_secs_f64() * 1000.0);
                }
            }
        } else if !since.is_empty() {
            result.spurious += 1;
        }
    }
    latencies.sort_by(|a, b| a.total_cmp(b));
    result.received = latencies.len();
    result.p50_ms = round3(percentile(&latencies, 0.50));
    result.p99_ms = round3(percentile(&latencies, 0.99));
    result.max_ms = round3(latencies.last().copied().unwrap_or(f64::NAN));
    ack_latencies.sort_by(|a, b| a.total_cmp(b));
    result.acked = ack_latencies.len();
    result.ack_p50_ms = round3(percentile(&ack_latencies, 0.50));
    result.ack_p99_ms = round3(percentile(&ack_latencies, 0.99));
    result.ack_max_ms = round3(ack_latencies.last().copied().unwrap_or(f64::NAN));
    ack_after_receipt.sort_by(|a, b| a.total_cmp(b));
    result.ack_after_receipt_p50_ms = round3(percentile(&ack_after_receipt, 0.50));
    result.ack_after_receipt_p99_ms = round3(percentile(&ack_after_receipt, 0.99));
    result
}

#[derive(Debug, Default, serde::Serialize)]
struct Report {
    services: usize,
    subscribers: usize,
    connections: usize,
    streams_per_connection: usize,
    ack: bool,
    client_threads: usize,
    shared_destination: bool,
    nproc: usize,
    operator_ready_ms: f64,
    rss_ready_kib: u64,
    first_snapshots_ms: f64,
    rss_streams_open_kib: u64,
    startup_cpu_s: f64,
    startup_push_bytes: f64,
    idle_secs: u64,
    idle_cpu_percent: f64,
    all_services: Propagation,
    one_service: Propagation,
    rss_peak_kib: u64,
    /// Round 1 is the measured one; later rounds reopen every stream.
    rounds: Vec<ChurnRound>,
    operator_cpu_s: f64,
    operator_push_bytes: f64,
    operator_pushes: f64,
    operator_stdout_lines: usize,
    client_cpu_s: f64,
    client_bytes_received: u64,
    acks_sent: u64,
    ack_failures: u64,
    heartbeats_received: u64,
    tls: bool,
    token_review: bool,
    /// Reviews the stand-in API server answered (whole run / the restart).
    token_reviews: u64,
    restart: Option<Restart>,
}

#[derive(Debug, Default, serde::Serialize)]
struct Restart {
    /// From killing the operator to every stream holding a snapshot sent by
    /// the new one.
    resynced_after_kill_ms: f64,
    /// The same from the new operator's spawn (its own startup included).
    resynced_after_spawn_ms: f64,
    /// From the new operator's /ready to every stream resynced.
    resynced_after_ready_ms: f64,
    new_operator_ready_ms: f64,
    /// The new operator's peak RSS up to full resync and 2 s after.
    rss_peak_kib: u64,
    rss_after_kib: u64,
    token_reviews: u64,
    /// Connections opened by the proxies (includes refused attempts' retries
    /// that got through).
    reconnects: u64,
    operator_cpu_s: f64,
}

#[derive(Debug, Default, serde::Serialize)]
struct ChurnRound {
    round: usize,
    first_snapshots_ms: f64,
    /// From closing every connection until both gauges read 0.
    close_ms: f64,
    /// (subscriptions, connected proxies): both should be 0.
    gauges_after_close: (f64, f64),
    rss_after_close_kib: u64,
}

// ---------------------------------------------------------------------- run

/// Starts the operator (generation `generation`: its own address file and
/// logs), records it in `cleanup`, waits for /ready: (pid, admin, policy).
async fn start_operator(
    args: &Args,
    dir: &Path,
    manifests: &Path,
    policy_addr: &str,
    extra: &[String],
    generation: usize,
    cleanup: &Cleanup,
) -> Result<(u32, SocketAddr, SocketAddr), String> {
    let address_file = dir.join(format!("addresses-{generation}.json"));
    let log =
        |name: &str| std::fs::File::create(dir.join(name)).map_err(|e| format!("{name}: {e}"));
    let (stdout, stderr) = if generation == 1 {
        (log("operator.stdout")?, log("operator.stderr")?)
    } else {
        (
            log(&format!("operator-{generation}.stdout"))?,
            log(&format!("operator-{generation}.stderr"))?,
        )
    };
    let started = Instant::now();
    let child = Command::new(&args.operator)
        .args(["run", "--manifests"])
        .arg(manifests)
        .arg(format!("--manifests-poll={}", args.manifests_poll))
        .arg("--admin-addr=127.0.0.1:0")
        .arg(format!("--policy-addr={policy_addr}"))
        .arg(format!("--heartbeat={}", args.heartbeat))
        .arg("--address-file")
        .arg(&address_file)
        .args(extra)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", args.operator.display()))?;
    let pid = child.id();
    *cleanup.child.lock().expect("not poisoned") = Some(child);
    let check_alive = || -> Result<(), String> {
        let mut guard = cleanup.child.lock().expect("not poisoned");
        match guard.as_mut().map(|c| c.try_wait()) {
            Some(Ok(Some(status))) => Err(format!("operator exited: {status}")),
            _ => Ok(()),
        }
    };
    let (admin, policy) = loop {
        check_alive()?;
        if let Ok(text) = std::fs::read_to_string(&address_file) {
            let v: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| format!("address file: {e}"))?;
            let parse = |k: &str| -> Result<SocketAddr, String> {
                v[k].as_str()
                    .and_then(|a| a.parse().ok())
                    .ok_or_else(|| format!("address file has no {k}: {text}"))
            };
            break (parse("admin")?, parse("policy")?);
        }
        if started.elapsed() > Duration::from_secs(30) {
            return Err("no address file after 30s".into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    loop {
        check_alive()?;
        if matches!(http1_get(admin, "/ready").await, Ok((StatusCode::OK, _))) {
            break;
        }
        if started.elapsed() > Duration::from_secs(30) {
            return Err("operator not ready after 30s".into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok((pid, admin, policy))
}

/// A stand-in for the API server's TokenReview endpoint: every token
/// `tok-<proxy>` is the service account `scale/<proxy>` with the audience
/// `outrigger`; anything else is not authenticated. Counts reviews.
async fn token_review_stand_in(reviews: Arc<AtomicU64>) -> Result<SocketAddr, String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("stand-in API server: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let reviews = reviews.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    move |request: Request<hyper::body::Incoming>| {
                        let reviews = reviews.clone();
                        async move {
                            let body = request
                                .into_body()
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            reviews.fetch_add(1, Ordering::Relaxed);
                            let review: serde_json::Value =
                                serde_json::from_slice(&body).unwrap_or_default();
                            let token = review["spec"]["token"].as_str().unwrap_or("");
                            let status = match token.strip_prefix("tok-") {
                                Some(proxy) => serde_json::json!({
                                    "authenticated": true,
                                    "audiences": ["outrigger"],
                                    "user": {"username": format!("system:serviceaccount:{NAMESPACE}:{proxy}")}
                                }),
                                None => {
                                    serde_json::json!({"authenticated": false, "error": "unknown token"})
                                }
                            };
                            let answer = serde_json::json!({
                                "apiVersion": "authentication.k8s.io/v1",
                                "kind": "TokenReview",
                                "metadata": {},
                                "spec": review["spec"],
                                "status": status,
                            });
                            let response = http::Response::builder()
                                .status(StatusCode::CREATED)
                                .header(http::header::CONTENT_TYPE, "application/json")
                                .body(Full::new(Bytes::from(answer.to_string())))
                                .expect("valid response");
                            Ok::<_, std::convert::Infallible>(response)
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    Ok(addr)
}

async fn wait_for(
    what: &str,
    limit: Duration,
    mut done: impl FnMut() -> bool,
) -> Result<Duration, String> {
    let start = Instant::now();
    loop {
        if done() {
            return Ok(start.elapsed());
        }
        if start.elapsed() > limit {
            return Err(format!("{what}: not done after {limit:?}"));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn ms(d: Duration) -> f64 {
    round3(d.as_secs_f64() * 1000.0)
}

async fn run(args: &Args, dir: &Path, cleanup: &Cleanup) -> Result<(), String> {
    let n = args.subscribers;
    let s = args.services;
    if n == 0 || s == 0 || s > 60_000 {
        return Err("need 1 <= services <= 60000 and subscribers >= 1".into());
    }
    let wanted = args.connections.unwrap_or_else(|| n.div_ceil(100)).max(1);
    // Never more streams on a connection than the server allows.
    let connections = wanted.max(n.div_ceil(SERVER_MAX_CONCURRENT_STREAMS)).min(n);
    let per_connection = n.div_ceil(connections);

    let manifests = dir.join("manifests");
    std::fs::create_dir_all(&manifests).map_err(|e| format!("{}: {e}", manifests.display()))?;
    std::fs::write(manifests.join("services.yaml"), services_yaml(s))
        .map_err(|e| format!("services.yaml: {e}"))?;
    std::fs::write(manifests.join("policies.yaml"), policies_yaml(s, |_| 2))
        .map_err(|e| format!("policies.yaml: {e}"))?;

    // ---- TLS, token reviews
    let mut extra: Vec<String> = Vec::new();
    let tls = if args.tls {
        let certs = dir.join("certs");
        let status = Command::new(&args.operator)
            .arg("gen-certs")
            .arg(&certs)
            .stdout(Stdio::null())
            .status()
            .map_err(|e| format!("gen-certs: {e}"))?;
        if !status.success() {
            return Err(format!("gen-certs: {status}"));
        }
        extra.push(format!("--tls-cert={}", certs.join("tls.crt").display()));
        extra.push(format!("--tls-key={}", certs.join("tls.key").display()));
        let pem = std::fs::read(certs.join("ca.crt")).map_err(|e| format!("ca.crt: {e}"))?;
        let mut roots = rustls::RootCertStore::empty();
        use rustls::pki_types::pem::PemObject;
        for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
            roots
                .add(cert.map_err(|e| format!("ca.crt: {e}"))?)
                .map_err(|e| format!("ca.crt: {e}"))?;
        }
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
        config.alpn_protocols = vec![b"h2".to_vec()];
        Some(TlsConnector::from(Arc::new(config)))
    } else {
        None
    };
    let reviews = Arc::new(AtomicU64::new(0));
    if args.token_review {
        let api = token_review_stand_in(reviews.clone()).await?;
        let kubeconfig = dir.join("kubeconfig");
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\nclusters: [{{name: stand-in, cluster: {{server: \"http://{api}\"}}}}]\n\
                 users: [{{name: stand-in, user: {{}}}}]\n\
                 contexts: [{{name: stand-in, context: {{cluster: stand-in, user: stand-in}}}}]\n\
                 current-context: stand-in\n"
            ),
        )
        .map_err(|e| format!("kubeconfig: {e}"))?;
        extra.push("--auth=token-review".into());
        extra.push(format!(
            "--token-review-kubeconfig={}",
            kubeconfig.display()
        ));
    }

    // ---- operator
    let started = Instant::now();
    let (mut pid, mut admin, policy) =
        start_operator(args, dir, &manifests, "127.0.0.1:0", &extra, 1, cleanup).await?;
    let mut pid_s = pid.to_string();
    let rss = RssSampler::start(pid);
    let check_alive = || -> Result<(), String> {
        let mut guard = cleanup.child.lock().expect("not poisoned");
        match guard.as_mut().map(|c| c.try_wait()) {
            Some(Ok(Some(status))) => Err(format!("operator exited: {status}")),
            _ => Ok(()),
        }
    };
    let target = Arc::new(Target {
        policy,
        tls,
        token_review: args.token_review,
    });
    let mut report = Report {
        services: s,
        subscribers: n,
        connections,
        streams_per_connection: per_connection,
        ack: args.ack,
        client_threads: args.client_threads,
        shared_destination: args.shared_destination,
        nproc: std::thread::available_parallelism().map_or(0, |n| n.get()),
        operator_ready_ms: ms(started.elapsed()),
        rss_ready_kib: read_proc_status_kib(pid, "VmRSS:").unwrap_or(0),
        idle_secs: args.idle_secs,
        ..Report::default()
    };
    eprintln!(
        "operator pid {pid} ready in {:.0} ms ({s} Services); opening {n} streams over {connections} connections",
        report.operator_ready_ms
    );

    // ---- round 1: every stream gets its first snapshot
    let shared = Arc::new(Shared::new(n));
    let cpu0 = cpu_seconds(&pid_s);
    let m0 = metrics(admin).await?;
    let opening = Instant::now();
    let round = open_round(&target, args, connections, 1, &shared).await?;
    let phase_limit = Duration::from_secs(args.timeout);
    wait_for("first snapshots", phase_limit, || {
        shared.with_first.load(Ordering::Relaxed) >= n
            || !shared.errors.lock().expect("not poisoned").is_empty()
    })
    .await?;
    let first = opening.elapsed();
    if let Some(err) = shared.errors.lock().expect("not poisoned").first() {
        return Err(format!("while opening streams: {err}"));
    }
    let wrong = (0..n)
        .filter(|i| shared.latest_attempts(*i) != Some(2))
        .count();
    if wrong > 0 {
        return Err(format!(
            "{wrong} first snapshots lack the policy (attempts 2)"
        ));
    }
    report.first_snapshots_ms = ms(first);
    // Let the acks land, then measure steady state.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let m1 = metrics(admin).await?;
    report.startup_cpu_s = round3(cpu_seconds(&pid_s) - cpu0);
    report.startup_push_bytes = metric(&m1, "outrigger_operator_push_bytes_total")
        - metric(&m0, "outrigger_operator_push_bytes_total");
    report.rss_streams_open_kib = read_proc_status_kib(pid, "VmRSS:").unwrap_or(0);
    eprintln!(
        "all {n} streams have their first snapshot after {:.0} ms; subscriptions gauge {}, connected proxies {}",
        report.first_snapshots_ms,
        metric(&m1, "outrigger_operator_subscriptions"),
        metric(&m1, "outrigger_operator_connected_proxies"),
    );

    // ---- idle
    let idle0 = cpu_seconds(&pid_s);
    tokio::time::sleep(Duration::from_secs(args.idle_secs)).await;
    report.idle_cpu_percent =
        round3((cpu_seconds(&pid_s) - idle0) / args.idle_secs.max(1) as f64 * 100.0);

    // ---- one edit changing every policy: attempts 2 -> 3
    let change = |name: &str,
                  report_cpu0: f64,
                  client_cpu0: f64,
                  waits0: (f64, f64),
                  m_before: &HashMap<String, f64>,
                  m_after: &HashMap<String, f64>,
                  mut p: Propagation| {
        p.operator_cpu_s = round3(cpu_seconds(&pid_s) - report_cpu0);
        p.client_cpu_s = round3(cpu_seconds("self") - client_cpu0);
        p.operator_runqueue_wait_s = round3(runqueue_wait_seconds(&pid_s) - waits0.0);
        p.client_runqueue_wait_s = round3(runqueue_wait_seconds("self") - waits0.1);
        p.push_bytes = metric(m_after, "outrigger_operator_push_bytes_total")
            - metric(m_before, "outrigger_operator_push_bytes_total");
        p.pushes = metric(m_after, "outrigger_operator_pushes_total")
            - metric(m_before, "outrigger_operator_pushes_total");
        eprintln!(
            "{name}: {}/{} received; p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; acked p50 {:.1} ms, p99 {:.1} ms (after receipt p50 {:.1} ms, p99 {:.1} ms); extra {}, spurious {}; operator CPU {:.2}s, load generator CPU {:.2}s, waited for a CPU: operator {:.2}s, load generator {:.2}s; {} bytes",
            p.received, p.expected, p.p50_ms, p.p99_ms, p.max_ms, p.ack_p50_ms, p.ack_p99_ms,
            p.ack_after_receipt_p50_ms, p.ack_after_receipt_p99_ms, p.extra_snapshots, p.spurious,
            p.operator_cpu_s, p.client_cpu_s, p.operator_runqueue_wait_s,
            p.client_runqueue_wait_s, p.push_bytes
        );
        p
    };
    let m_before = metrics(admin).await?;
    let cpu_before = cpu_seconds(&pid_s);
    let client_cpu_before = cpu_seconds("self");
    let waits_before = (runqueue_wait_seconds(&pid_s), runqueue_wait_seconds("self"));
    let written = replace_file(&manifests, "policies.yaml", &policies_yaml(s, |_| 3))?;
    let _ = wait_for("all-Services change", Duration::from_secs(60), || {
        shared.failed() || (0..n).all(|i| shared.latest_attempts(i) == Some(3))
    })
    .await;
    shared.check("after the all-Services edit")?;
    // Anything else this edit causes arrives now.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let m_after = metrics(admin).await?;
    report.all_services = change(
        "all Services",
        cpu_before,
        client_cpu_before,
        waits_before,
        &m_before,
        &m_after,
        propagation(&shared, written, |_| true, 3),
    );

    // ---- one edit changing one Service's policy: attempts 3 -> 5 on svc-00000
    tokio::time::sleep(Duration::from_millis(200)).await;
    let layout = Layout {
        services: s,
        per_connection,
        shared_destination: args.shared_destination,
    };
    let concerned = |i: usize| layout.service(i) == 0;
    let m_before = metrics(admin).await?;
    let cpu_before = cpu_seconds(&pid_s);
    let client_cpu_before = cpu_seconds("self");
    let waits_before = (runqueue_wait_seconds(&pid_s), runqueue_wait_seconds("self"));
    let written = replace_file(
        &manifests,
        "policies.yaml",
        &policies_yaml(s, |i| if i == 0 { 5 } else { 3 }),
    )?;
    let _ = wait_for("one-Service change", Duration::from_secs(30), || {
        (0..n)
            .filter(|i| concerned(*i))
            .all(|i| shared.latest_attempts(i) == Some(5))
            || shared.failed()
    })
    .await;
    shared.check("after the one-Service edit")?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let m_after = metrics(admin).await?;
    report.one_service = change(
        "one Service",
        cpu_before,
        client_cpu_before,
        waits_before,
        &m_before,
        &m_after,
        propagation(&shared, written, concerned, 5),
    );

    // ---- reconnect storm: kill the operator, start a new one on the same
    // address; every proxy reconnects and resubscribes at once
    if args.restart {
        let mut restart = Restart::default();
        let reviews_before = reviews.load(Ordering::Relaxed);
        let connects_before = shared.connects.load(Ordering::Relaxed);
        shared.outage.store(true, Ordering::Relaxed);
        let killed = Instant::now();
        if let Some(mut child) = cleanup.child.lock().expect("not poisoned").take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let spawned = Instant::now();
        let (new_pid, admin2, _) = start_operator(
            args,
            dir,
            &manifests,
            &policy.to_string(),
            &extra,
            2,
            cleanup,
        )
        .await?;
        let ready = Instant::now();
        restart.new_operator_ready_ms = ms(ready - spawned);
        let rss2 = RssSampler::start(new_pid);
        wait_for("resync after the restart", phase_limit, || {
            (0..n).all(|i| {
                shared.logs[i]
                    .lock()
                    .expect("not poisoned")
                    .snapshots
                    .last()
                    .is_some_and(|r| r.at > spawned)
            })
        })
        .await?;
        let done = Instant::now();
        restart.resynced_after_kill_ms = ms(done - killed);
        restart.resynced_after_spawn_ms = ms(done - spawned);
        restart.resynced_after_ready_ms = ms(done - ready);
        shared.outage.store(false, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_secs(2)).await;
        restart.rss_peak_kib = rss2.peak.load(Ordering::Relaxed);
        restart.rss_after_kib = read_proc_status_kib(new_pid, "VmRSS:").unwrap_or(0);
        restart.token_reviews = reviews.load(Ordering::Relaxed) - reviews_before;
        restart.reconnects = shared.connects.load(Ordering::Relaxed) - connects_before;
        restart.operator_cpu_s = round3(cpu_seconds(&new_pid.to_string()));
        eprintln!("restart: {restart:?}");
        report.token_reviews = reviews.load(Ordering::Relaxed);
        report.restart = Some(restart);
        shared.check("after the restart")?;
        // Later phases read the new operator.
        (pid, admin, pid_s) = (new_pid, admin2, new_pid.to_string());
    }

    // ---- close every stream: the books must empty; then churn rounds that
    // reopen every stream under fresh proxy ids (restarted pods) and close them
    let mut all_shared = vec![shared.clone()];
    let mut round = Some(round);
    for r in 1..=args.rounds.max(1) {
        let mut churn = ChurnRound {
            round: r,
            ..ChurnRound::default()
        };
        let round = match round.take() {
            Some(round) => {
                churn.first_snapshots_ms = report.first_snapshots_ms;
                round
            }
            None => {
                let shared = Arc::new(Shared::new(n));
                all_shared.push(shared.clone());
                let reopening = Instant::now();
                let round = open_round(&target, args, connections, r, &shared).await?;
                wait_for("reopened streams' first snapshots", phase_limit, || {
                    shared.with_first.load(Ordering::Relaxed) >= n
                })
                .await?;
                churn.first_snapshots_ms = ms(reopening.elapsed());
                tokio::time::sleep(Duration::from_millis(300)).await;
                round
            }
        };
        let closing = Instant::now();
        round.close().await;
        let mut gauges = (f64::NAN, f64::NAN);
        for _ in 0..400 {
            let m = metrics(admin).await?;
            gauges = (
                metric(&m, "outrigger_operator_subscriptions"),
                metric(&m, "outrigger_operator_connected_proxies"),
            );
            if gauges == (0.0, 0.0) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        churn.close_ms = ms(closing.elapsed());
        churn.gauges_after_close = gauges;
        tokio::time::sleep(Duration::from_millis(500)).await;
        churn.rss_after_close_kib = read_proc_status_kib(pid, "VmRSS:").unwrap_or(0);
        eprintln!(
            "round {r}: first snapshots in {:.0} ms; all closed in {:.0} ms, gauges (subscriptions, proxies) {gauges:?}, RSS {} KiB",
            churn.first_snapshots_ms, churn.close_ms, churn.rss_after_close_kib
        );
        report.rounds.push(churn);
    }

    // ---- totals
    check_alive()?;
    let m_end = metrics(admin).await?;
    report.rss_peak_kib = rss.peak.load(Ordering::Relaxed);
    report.operator_cpu_s = round3(cpu_seconds(&pid_s));
    report.operator_push_bytes = metric(&m_end, "outrigger_operator_push_bytes_total");
    report.operator_pushes = metric(&m_end, "outrigger_operator_pushes_total");
    report.client_cpu_s = round3(cpu_seconds("self"));
    report.operator_stdout_lines =
        std::fs::read_to_string(dir.join("operator.stdout")).map_or(0, |t| t.lines().count());
    for sh in &all_shared {
        report.client_bytes_received += sh.bytes_received.load(Ordering::Relaxed);
        report.acks_sent += sh.acks_sent.load(Ordering::Relaxed);
        report.ack_failures += sh.ack_failures.load(Ordering::Relaxed);
        report.heartbeats_received += sh
            .logs
            .iter()
            .map(|l| l.lock().expect("not poisoned").heartbeats)
            .sum::<u64>();
    }
    report.tls = args.tls;
    report.token_review = args.token_review;
    report.token_reviews = reviews.load(Ordering::Relaxed);
    let json = serde_json::to_string_pretty(&report).expect("report serializes");
    println!("{json}");
    if let Some(path) = &args.json {
        std::fs::write(path, &json).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    let missing = (report.all_services.expected - report.all_services.received)
        + (report.one_service.expected - report.one_service.received);
    if missing > 0 {
        return Err(format!("{missing} subscribers never received a change"));
    }
    Ok(())
}
