//! `outrigger-proxy demo`: a flaky upstream, the proxy in front of it with the
//! example policy, and a load driver; then a report. No cluster, no setup.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use clap::Parser;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::app;
use crate::cli::{Cli, DemoArgs};
use crate::fault_upstream::{FaultConfig, FaultUpstream};

/// The demo's policy, built in so the demo runs from any directory.
const DEMO_POLICY: &str = include_str!("../../examples/policies/demo.yaml");

/// Upper bound on requests per path, whatever the duration.
const MAX_REQUESTS: usize = 200_000;

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let upstream = FaultUpstream::start(
        "127.0.0.1:0".parse()?,
        FaultConfig {
            failure_rate: args.failure_rate,
            ..FaultConfig::default()
        },
    )
    .await
    .context("cannot start the demo upstream")?;

    let (policy_path, _temp) = match &args.policy {
        Some(path) => (path.clone(), None),
        None => {
            let dir = std::env::temp_dir().join(format!("outrigger-demo-{}", std::process::id()));
            std::fs::create_dir_all(&dir)?;
            let path = dir.join("demo.yaml");
            std::fs::write(&path, DEMO_POLICY)?;
            (path, Some(TempDir(dir)))
        }
    };
    let proxy = app::start(proxy_args(&args, upstream.addr, &policy_path)?.run).await?;
    let version = proxy.policy.current().version;

    println!("Outrigger demo (local, no cluster)");
    println!(
        "  upstream  http://{}  answers 503 to {:.0}% of requests",
        upstream.addr,
        args.failure_rate * 100.0
    );
    println!(
        "  proxy     http://{} -> upstream, policy {} (version {version})",
        proxy.inbound_addr,
        policy_path.display()
    );
    println!(
        "  driving {} concurrent clients for {} per path...\n",
        args.concurrency,
        outrigger_api::duration::Duration::from_std(args.duration)
    );

    let direct = drive(upstream.addr, args.concurrency, args.duration).await;
    let proxied = drive(proxy.inbound_addr, args.concurrency, args.duration).await;
    println!("{}", Report::header());
    println!("{}", direct.line("direct"));
    println!("{}", proxied.line("through outrigger"));
    println!("\nupstream saw {} requests in all", upstream.hits());
    println!("admin: http://{}", proxy.admin_addr);
    println!("  metrics: curl http://{}/metrics", proxy.admin_addr);
    println!("  policy:  curl http://{}/config", proxy.admin_addr);

    if !args.linger.is_zero() {
        println!(
            "proxy stays up for {} (Ctrl-C to stop)",
            outrigger_api::duration::Duration::from_std(args.linger)
        );
        tokio::select! {
            _ = tokio::time::sleep(args.linger) => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    proxy.shutdown.cancel();
    proxy.wait().await;
    Ok(())
}

fn proxy_args(
    args: &DemoArgs,
    upstream: SocketAddr,
    policy: &std::path::Path,
) -> anyhow::Result<Cli> {
    let argv: Vec<String> = vec![
        "outrigger-proxy".into(),
        "--inbound-addr=127.0.0.1:0".into(),
        "--outbound-addr=127.0.0.1:0".into(),
        format!("--admin-addr={}", args.admin_addr),
        format!("--app-addr={upstream}"),
        format!("--policy={}", policy.display()),
        "--service-name=flaky".into(),
        "--namespace=demo".into(),
    ];
    Cli::try_parse_from(argv).context("demo proxy arguments")
}

/// Removes the demo's temporary policy directory when the demo ends.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[derive(Default)]
struct Report {
    latencies: Vec<Duration>,
    ok: usize,
    server_errors: usize,
    other: usize,
    transport_errors: usize,
}

impl Report {
    fn header() -> String {
        format!(
            "{:<18} {:>9} {:>7} {:>7} {:>7} {:>9} {:>9} {:>9} {:>9}",
            "path", "requests", "2xx", "5xx", "failed", "success", "p50", "p90", "p99"
        )
    }

    fn line(&self, name: &str) -> String {
        let total = self.latencies.len() + self.transport_errors;
        let success = if total == 0 {
            0.0
        } else {
            self.ok as f64 * 100.0 / total as f64
        };
        format!(
            "{:<18} {:>9} {:>7} {:>7} {:>7} {:>8.1}% {:>9} {:>9} {:>9}",
            name,
            total,
            self.ok,
            self.server_errors,
            self.transport_errors + self.other,
            success,
            self.percentile(0.50),
            self.percentile(0.90),
            self.percentile(0.99),
        )
    }

    fn percentile(&self, q: f64) -> String {
        if self.latencies.is_empty() {
            return "-".into();
        }
        let index = ((self.latencies.len() - 1) as f64 * q).round() as usize;
        format!("{:.2}ms", self.latencies[index].as_secs_f64() * 1e3)
    }

    fn merge(&mut self, other: Report) {
        self.latencies.extend(other.latencies);
        self.ok += other.ok;
        self.server_errors += other.server_errors;
        self.other += other.other;
        self.transport_errors += other.transport_errors;
    }
}

/// Sends GETs to `target` from `concurrency` keep-alive clients for `duration`.
async fn drive(target: SocketAddr, concurrency: usize, duration: Duration) -> Report {
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let client = Arc::new(client);
    let deadline = Instant::now() + duration;
    let per_worker = MAX_REQUESTS / concurrency.max(1);
    let workers: Vec<_> = (0..concurrency.max(1))
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move {
                let mut report = Report::default();
                let uri: http::Uri = format!("http://{target}/demo").parse().expect("valid URI");
                for _ in 0..per_worker {
                    if Instant::now() >= deadline {
                        break;
                    }
                    let request = Request::get(uri.clone())
                        .header("host", "flaky.demo")
                        .body(Empty::new())
                        .expect("valid request");
                    let started = Instant::now();
                    match client.request(request).await {
                        Ok(response) => {
                            let status = response.status();
                            let _ = response.into_body().collect().await;
                            report.latencies.push(started.elapsed());
                            if status.is_success() {
                                report.ok += 1;
                            } else if status.is_server_error()
                                || status == StatusCode::TOO_MANY_REQUESTS
                            {
                                report.server_errors += 1;
                            } else {
                                report.other += 1;
                            }
                        }
                        Err(_) => report.transport_errors += 1,
                    }
                }
                report
            })
        })
        .collect();
    let mut total = Report::default();
    for worker in workers {
        if let Ok(report) = worker.await {
            total.merge(report);
        }
    }
    total.latencies.sort();
    total
}
