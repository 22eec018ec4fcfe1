//! The `outrigger` command line (also run as `kubectl outrigger`): what a
//! user runs when something is wrong. One module per concern: `connect`
//! (kubeconfig, as kubectl reads it), `install` (finding the chart's
//! objects), `operator_admin` (asking the operator's replicas),
//! `live_state` (a proxy's breaker and ejections), `tls_probe`, `certs`,
//! `report` (✔/‼/✘ lines in 80 columns), and one module per command.
#![forbid(unsafe_code)]

pub mod certs;
pub mod check;
pub mod connect;
pub mod explain;
pub mod install;
pub mod live_state;
pub mod operator_admin;
pub mod proxies;
pub mod report;
pub mod tls_probe;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "outrigger",
    version,
    about = "Check an Outrigger installation, explain a Service's policy, list proxies"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: connect::GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check the installation: CRD, operator and leader, webhook and its
    /// certificates, policy server, proxies. Exit status 1 on any ✘.
    Check,
    /// The effective policy of a Service: the ResiliencePolicy and routes
    /// that make it, with defaults filled in, its endpoints and proxies.
    Explain {
        /// The Service: `svc/NAME`, `service/NAME` or `NAME`.
        target: String,
    },
    /// Every proxy connected to the operator: pod, policy, age.
    Proxies,
}

/// Parses the arguments and runs the command; the exit status.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let kube = connect::connect(&cli.global).await?;
    match cli.command {
        Command::Check => {
            let groups = check::run(&kube, &cli.global).await;
            print!("{}", report::render(&groups));
            Ok(match report::worst(&groups) {
                report::Status::Fail => ExitCode::FAILURE,
                _ => ExitCode::SUCCESS,
            })
        }
        Command::Explain { target } => {
            print!("{}", explain::run(&kube, &cli.global, &target).await?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Proxies => {
            print!("{}", proxies::run(&kube, &cli.global).await?);
            Ok(ExitCode::SUCCESS)
        }
    }
}
