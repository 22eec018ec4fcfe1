#![forbid(unsafe_code)]
use clap::Parser;
use outrigger_proxy::cli::LogFormat;
use outrigger_proxy::telemetry;
use outrigger_tools::cli::{ToolCommand, ToolsCli};
use outrigger_tools::{demo, fault_upstream};

/// Two workers, as the proxy runs by default.
#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> std::process::ExitCode {
    let cli = ToolsCli::parse();
    let result = match cli.command {
        ToolCommand::Demo(args) => {
            // The report says what happened; logs would interleave with it.
            telemetry::init(LogFormat::Plain, "error", false);
            demo::run(args).await
        }
        ToolCommand::FaultUpstream(args) => {
            telemetry::init(LogFormat::Plain, "info", false);
            fault_upstream::run(args).await
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("outrigger-tools: {err:#}");
            std::process::ExitCode::from(2)
        }
    }
}
