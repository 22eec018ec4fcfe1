//! Logging: human-readable or JSON diagnostics, plus an optional JSON access log
//! (one line per request, target `outrigger::access`).

use tracing_subscriber::filter::{filter_fn, EnvFilter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

use crate::cli::LogFormat;

const ACCESS_TARGET: &str = "outrigger::access";

/// Colour codes only for a person at a terminal: in files, pipes and
/// `kubectl logs` they are noise (`NO_COLOR` turns them off everywhere).
fn colour_on_stderr() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

pub fn init(format: LogFormat, filter: &str, access_log: bool) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|err| {
        eprintln!("invalid log filter {filter:?} ({err}); using info");
        EnvFilter::new("info")
    });
    let not_access = filter_fn(|meta| meta.target() != ACCESS_TARGET);
    let diagnostics = match format {
        LogFormat::Plain => tracing_subscriber::fmt::layer()
            .with_ansi(colour_on_stderr())
            .with_writer(std::io::stderr)
            .with_filter(not_access)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .with_filter(not_access)
            .boxed(),
    };
    let access = access_log.then(|| {
        tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .with_writer(std::io::stdout)
            .with_filter(filter_fn(|meta| meta.target() == ACCESS_TARGET))
    });
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(diagnostics)
        .with(access)
        .try_init();
}
