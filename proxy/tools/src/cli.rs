//! The `outrigger-tools` command line: the README's demo and the
//! fault-injecting upstream that tests and benchmarks run.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use outrigger_proxy::cli::parse_duration;

#[derive(Debug, Parser)]
#[command(
    name = "outrigger-tools",
    version,
    about = "Outrigger's demo and test upstream (not part of the sidecar)"
)]
pub struct ToolsCli {
    #[command(subcommand)]
    pub command: ToolCommand,
}

#[derive(Debug, Subcommand)]
pub enum ToolCommand {
    /// Run the local demo: a flaky upstream behind the proxy, without and with
    /// a policy, then an outage that opens the circuit breaker.
    Demo(DemoArgs),
    /// Serve an HTTP upstream that injects faults (for tests and benchmarks).
    FaultUpstream(FaultUpstreamArgs),
}

#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// How long phase 1 drives traffic to each Service.
    #[arg(long, value_parser = parse_duration, default_value = "2s")]
    pub duration: Duration,

    /// Concurrent client connections of the load driver.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,

    /// Share of upstream requests that fail with 503 (0.0–1.0).
    #[arg(long, default_value_t = 0.2)]
    pub failure_rate: f64,

    /// Policy file to use instead of the built-in examples/policies/demo.yaml.
    #[arg(long)]
    pub policy: Option<std::path::PathBuf>,

    /// Admin listener of the demo proxy (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub admin_addr: SocketAddr,

    /// Keep the proxy running this long after the report, to scrape /metrics.
    #[arg(long, value_parser = parse_duration, default_value = "0s")]
    pub linger: Duration,
}

#[derive(Debug, Clone, Args)]
pub struct FaultUpstreamArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Share of requests answered with 503 (0.0–1.0) when no fault header is set.
    #[arg(long, default_value_t = 0.0)]
    pub failure_rate: f64,

    /// Size of the response body in bytes.
    #[arg(long, default_value_t = 2)]
    pub body_bytes: usize,
}
