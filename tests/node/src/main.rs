//! `outrigger-testnode`: the node (`run`), the container wrapper it spawns
//! (`run-container`), and the programs of the test images.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use outrigger_testnode::{apps, node, sandbox};

#[derive(Parser)]
#[command(version, about = "Runs a test API server's Pods as local processes")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The node: watches Pods (KUBECONFIG) and runs them. Needs root.
    Run {
        /// The node's name (spec.nodeName of its pods).
        #[arg(long, default_value = "testnode")]
        node_name: String,
        /// Pod network 10.77.<id>.0/24; by default the first free id.
        #[arg(long)]
        network_id: Option<u8>,
        /// Pod directories (volumes, /etc/hosts, container logs).
        #[arg(long)]
        state_dir: PathBuf,
        /// Where image programs are (default: this binary's directory).
        #[arg(long)]
        bin_dir: Option<PathBuf>,
    },
    /// Internal: enter a container's sandbox (JSON) and exec its program.
    #[command(hide = true)]
    RunContainer { spec: String },
    /// The `outrigger/test-app` image: HTTP 200 with the pod's name.
    TestApp {
        #[arg(long, default_value_t = 8080)]
        port: u16,
    },
    /// The `outrigger/test-client` image: GET each URL, exit 0 if all 2xx.
    TestClient {
        /// How long each URL may take to answer 2xx (retrying).
        #[arg(long, default_value_t = 20)]
        patience_seconds: u64,
        urls: Vec<String>,
    },
    /// Steady load: `--rate` GETs a second for `--seconds`; prints failures
    /// and a summary line (requests, failed, p50, p99, statuses).
    TestLoad {
        #[arg(long, default_value_t = 40)]
        rate: u32,
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        /// Concurrent senders (open loop: each request has its due time).
        #[arg(long, default_value_t = 8)]
        workers: u32,
        url: String,
    },
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::RunContainer { spec } => {
            let spec: sandbox::Sandbox = serde_json::from_str(&spec)?;
            match sandbox::enter(&spec) {
                Ok(never) => match never {},
                Err(e) => {
                    // Exit code 128 like a runtime's "cannot start": see the log.
                    eprintln!("outrigger-testnode: cannot start container: {e:#}");
                    std::process::exit(128);
                }
            }
        }
        Command::TestApp { port } => apps::serve(port),
        Command::TestClient {
            patience_seconds,
            urls,
        } => apps::client(&urls, Duration::from_secs(patience_seconds)),
        Command::TestLoad {
            rate,
            seconds,
            workers,
            url,
        } => apps::load(&url, rate, seconds, workers),
        Command::Run {
            node_name,
            network_id,
            state_dir,
            bin_dir,
        } => {
            tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_env("OUTRIGGER_LOG")
                        .unwrap_or_else(|_| "info".into()),
                )
                // Its logs go to files: colour only at a terminal.
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .with_writer(std::io::stderr)
                .init();
            let bin_dir = match bin_dir {
                Some(d) => d,
                None => std::env::current_exe()?
                    .parent()
                    .context("binary directory")?
                    .to_path_buf(),
            };
            let config = node::Config {
                name: node_name,
                network_id,
                state_dir,
                bin_dir,
            };
            tokio::runtime::Runtime::new()?.block_on(async {
                let shutdown = tokio_util::sync::CancellationToken::new();
                let signals = shutdown.clone();
                tokio::spawn(async move {
                    use tokio::signal::unix::{signal, SignalKind};
                    let (Ok(mut term), Ok(mut int)) = (
                        signal(SignalKind::terminate()),
                        signal(SignalKind::interrupt()),
                    ) else {
                        return;
                    };
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = int.recv() => {}
                    }
                    signals.cancel();
                });
                node::run(config, shutdown).await
            })
        }
    }
}
