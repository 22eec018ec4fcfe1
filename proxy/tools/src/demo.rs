//! `outrigger-proxy demo`: a flaky upstream, the proxy in front of it, and a
//! load driver; then a report. No cluster, no setup.
//!
//! The upstream is reachable through the proxy's outbound listener as two
//! Services with the same endpoint: `flaky-raw` (no policy: plain forwarding)
//! and `flaky` (examples/policies/demo.yaml). Phase 1 compares them under
//! random failures; phase 2 takes the upstream down for a while and shows the
//! circuit breaker opening, probing and closing.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use clap::Parser;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::cli::DemoArgs;
use crate::fault_upstream::{FaultConfig, FaultUpstream};
use outrigger_proxy::app::{self, RunningProxy};
use outrigger_proxy::cli::Cli;

/// Service `flaky`'s port as its metrics name it (whatever spelling a
/// client used): the canonical name.
const FLAKY: &str = "flaky.demo.svc.cluster.local:80";

/// The demo's policy, built in so the demo runs from any directory.
const DEMO_POLICY: &str = include_str!("../../../examples/policies/demo.yaml");

/// Upper bound on requests per measurement, whatever the duration.
const MAX_REQUESTS: usize = 200_000;

/// How long the upstream is down in phase 2, and how long traffic goes on after.
const OUTAGE: Duration = Duration::from_secs(2);
const RECOVERY: Duration = Duration::from_secs(4);
const SAMPLE_EVERY: Duration = Duration::from_millis(500);

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

    let policy_text = match &args.policy {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?,
        None => DEMO_POLICY.to_string(),
    };
    let dir = TempDir::new()?;
    let policy_path = dir.0.join("demo.yaml");
    std::fs::write(
        &policy_path,
        format!("{policy_text}\n{}", endpoint_slices(upstream.addr.port())),
    )?;
    let proxy = app::start(proxy_args(&args, &policy_path)?.run).await?;

    println!("Outrigger demo (local, no cluster)");
    println!(
        "  upstream  http://{}  answers 503 to {:.0}% of requests",
        upstream.addr,
        args.failure_rate * 100.0
    );
    println!(
        "  proxy     outbound http://{}; Service flaky-raw has no policy, Service flaky has {}",
        proxy.outbound_addr,
        args.policy
            .as_deref()
            .map_or("examples/policies/demo.yaml".into(), |p| p
                .display()
                .to_string())
    );
    println!("  admin     http://{}\n", proxy.admin_addr);

    println!(
        "Phase 1: {} concurrent clients for {} per Service, 503s at random",
        args.concurrency,
        outrigger_api::duration::Duration::from_std(args.duration)
    );
    let raw = drive(&proxy, "flaky-raw.demo", args.concurrency, args.duration).await;
    let with_policy = drive(&proxy, "flaky.demo", args.concurrency, args.duration).await;
    println!("{}", Report::header());
    println!("{}", raw.line("without policy"));
    println!("{}", with_policy.line("with policy"));
    let metrics = &proxy.metrics.resilience;
    println!(
        "retries sent: {}, retries refused by the budget: {}\n",
        counter_sum(&metrics.retries, FLAKY),
        metrics
            .retry_budget_exhausted
            .with_label_values(&["outbound", FLAKY])
            .get()
    );

    println!(
        "Phase 2: the upstream fails every request for {}, then recovers",
        outrigger_api::duration::Duration::from_std(OUTAGE)
    );
    outage(&proxy, &upstream, args.concurrency).await;

    println!("\nadmin: http://{}", proxy.admin_addr);
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

/// Drives traffic through an outage and prints a timeline of what the caller,
/// the breaker and the upstream saw.
async fn outage(proxy: &RunningProxy, upstream: &FaultUpstream, concurrency: usize) {
    let metrics = &proxy.metrics.resilience;
    let state = || {
        metrics
            .circuit_state
            .with_label_values(&["outbound", FLAKY])
            .get()
    };
    upstream.set_failure_rate(1.0);
    let started = Instant::now();
    let load = {
        let outbound = proxy.outbound_addr;
        tokio::spawn(async move {
            drive_addr(outbound, "flaky.demo", concurrency, OUTAGE + RECOVERY).await
        })
    };
    println!(
        "{:>6}  {:<10} {:>10} {:>10} {:>14}",
        "time", "circuit", "caller 2xx", "fallbacks", "upstream hits"
    );
    let ok_total = || {
        proxy
            .metrics
            .requests
            .with_label_values(&["outbound", FLAKY, "default", "2xx"])
            .get()
    };
    let fallback_total = || {
        metrics
            .fallbacks
            .with_label_values(&["outbound", FLAKY])
            .get()
    };
    let mut last = (ok_total(), fallback_total(), upstream.hits());
    let mut recovered = false;
    while started.elapsed() < OUTAGE + RECOVERY {
        tokio::time::sleep(SAMPLE_EVERY).await;
        if !recovered && started.elapsed() >= OUTAGE {
            upstream.set_failure_rate(0.0);
            recovered = true;
            println!("        -- upstream recovers (no more errors) --");
        }
        let (ok, fallbacks) = (ok_total(), fallback_total());
        let hits = upstream.hits();
        println!(
            "{:>5.1}s  {:<10} {:>10} {:>10} {:>14}",
            started.elapsed().as_secs_f64(),
            match state() {
                0 => "closed",
                1 => "open",
                _ => "half-open",
            },
            ok - last.0,
            fallbacks - last.1,
            hits - last.2
        );
        last = (ok, fallbacks, hits);
    }
    let _ = load.await;
    let transitions = |from: &str, to: &str| {
        metrics
            .circuit_transitions
            .with_label_values(&["outbound", FLAKY, from, to])
            .get()
    };
    println!(
        "circuit transitions: closed->open {}, half-open->open {}, half-open->closed {}",
        transitions("closed", "open"),
        transitions("half-open", "open"),
        transitions("half-open", "closed"),
    );
}

fn counter_sum(family: &prometheus::IntCounterVec, destination: &str) -> u64 {
    use prometheus::core::Collector;
    family
        .collect()
        .iter()
        .flat_map(|mf| mf.get_metric())
        .filter(|m| {
            m.get_label()
                .iter()
                .any(|l| l.name() == "destination" && l.value() == destination)
        })
        .map(|m| m.get_counter().get_value() as u64)
        .sum()
}

/// The upstream as the one endpoint of both demo Services.
fn endpoint_slices(port: u16) -> String {
    ["flaky", "flaky-raw"]
        .iter()
        .map(|service| {
            format!(
                "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {service}-1\n  namespace: demo\n  labels: {{kubernetes.io/service-name: {service}}}\nports: [{{port: {port}}}]\nendpoints:\n  - addresses: [\"127.0.0.1\"]\n"
            )
        })
        .collect()
}

fn proxy_args(args: &DemoArgs, policy: &Path) -> anyhow::Result<Cli> {
    let argv: Vec<String> = vec![
        "outrigger-proxy".into(),
        "--inbound-addr=127.0.0.1:0".into(),
        "--outbound-addr=127.0.0.1:0".into(),
        format!("--admin-addr={}", args.admin_addr),
        format!("--policy={}", policy.display()),
        "--namespace=demo".into(),
    ];
    Cli::try_parse_from(argv).context("demo proxy arguments")
}

/// The demo's temporary policy directory, removed when the demo ends.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> std::io::Result<Self> {
        let dir = std::env::temp_dir().join(format!("outrigger-demo-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        Ok(TempDir(dir))
    }
}

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
            "{:<16} {:>9} {:>7} {:>7} {:>7} {:>9} {:>9} {:>9} {:>9}",
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
            "{:<16} {:>9} {:>7} {:>7} {:>7} {:>8.1}% {:>9} {:>9} {:>9}",
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

async fn drive(proxy: &RunningProxy, host: &str, concurrency: usize, duration: Duration) -> Report {
    drive_addr(proxy.outbound_addr, host, concurrency, duration).await
}

/// GETs for `host` through the outbound listener from `concurrency`
/// keep-alive clients for `duration`.
async fn drive_addr(
    outbound: SocketAddr,
    host: &str,
    concurrency: usize,
    duration: Duration,
) -> Report {
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let client = Arc::new(client);
    let deadline = Instant::now() + duration;
    let per_worker = MAX_REQUESTS / concurrency.max(1);
    let uri: http::Uri = format!("http://{outbound}/demo")
        .parse()
        .expect("valid URI");
    let workers: Vec<_> = (0..concurrency.max(1))
        .map(|_| {
            let (client, uri, host) = (client.clone(), uri.clone(), host.to_string());
            tokio::spawn(async move {
                let mut report = Report::default();
                for _ in 0..per_worker {
                    if Instant::now() >= deadline {
                        break;
                    }
                    let request = Request::get(uri.clone())
                        .header("host", &host)
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
