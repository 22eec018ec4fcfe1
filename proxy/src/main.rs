#![forbid(unsafe_code)]
use clap::Parser;
use outrigger_proxy::cli::{Cli, Command};
use outrigger_proxy::{app, telemetry};

fn main() -> std::process::ExitCode {
    outrigger_proxy::malloc_tuning::tune();
    let cli = Cli::parse();
    // `init` runs before any network exists for the app: no runtime needed.
    if let Some(Command::Init(args)) = cli.command {
        return exit(outrigger_proxy::init::run(args));
    }
    let runtime = runtime(cli.run.workers.max(1));
    let result = runtime.block_on(async move {
        match cli.command {
            None => {
                telemetry::init(cli.run.log_format, &cli.run.log_level, cli.run.access_log);
                app::run(cli.run).await
            }
            Some(Command::WaitReady { url, timeout }) => {
                outrigger_proxy::readiness_wait::wait(&url, timeout).await
            }
            Some(Command::Init(_)) => unreachable!("handled before the runtime starts"),
        }
    });
    exit(result)
}

/// One worker runs tokio's current-thread scheduler. It has no LIFO slot: a
/// task woken by another runs after those already queued, so an HTTP/2
/// connection task writes the frames of many streams in one go instead of
/// one stream's after each (h2load -c10 -m10: 50k vs 42k req/s; HTTP/1.1
/// unchanged). More workers run the work-stealing scheduler.
fn runtime(workers: usize) -> tokio::runtime::Runtime {
    let mut builder = if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(workers);
        builder
    };
    builder.enable_all().build().expect("tokio runtime starts")
}

fn exit(result: anyhow::Result<()>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("outrigger-proxy: {err:#}");
            std::process::ExitCode::from(2)
        }
    }
}
