//! `kubectl-outrigger`: the same program as `outrigger`, under the name
//! kubectl runs for `kubectl outrigger ...` when it is on PATH.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    outrigger_cli::main()
}
