//! `outrigger`: see the library (lib.rs) for the commands.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    outrigger_cli::main()
}
