//! `outrigger-operator`: the control plane. This first version checks policy
//! files the way the API server will (`validate`); the controllers, the policy
//! stream and the webhook come in later milestones (see docs/architecture.md).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod crd;
use outrigger_api::manifest::{parse_documents, Document};
use outrigger_api::validate::validate_manifest;

#[derive(Debug, Parser)]
#[command(
    name = "outrigger-operator",
    version,
    about = "Outrigger control plane"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check ResiliencePolicy files (YAML or JSON, multi-document) and report
    /// every invalid field with its path. Exit status 1 when any is invalid.
    Validate {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Print the ResiliencePolicy CustomResourceDefinition (YAML).
    Crds,
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Crds => {
            print!("{}", crd::crd_yaml());
            ExitCode::SUCCESS
        }
        Command::Validate { files } => {
            let mut all_valid = true;
            for file in &files {
                let report = validate_file(file);
                all_valid &= report.is_ok();
                match report {
                    Ok(count) => println!("{}: {count} valid ResiliencePolicy", file.display()),
                    Err(errors) => {
                        for error in errors {
                            eprintln!("{}: {error}", file.display());
                        }
                    }
                }
            }
            if all_valid {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// The number of policies in the file, or every error found in it.
fn validate_file(path: &PathBuf) -> Result<usize, Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(|e| vec![format!("cannot read: {e}")])?;
    let documents = parse_documents(&text).map_err(|e| vec![e.to_string()])?;
    let mut errors = Vec::new();
    let mut count = 0;
    for document in documents {
        if let Document::Policy(policy) = document {
            count += 1;
            if let Err(invalid) = validate_manifest(&policy) {
                errors.extend(
                    invalid
                        .0
                        .into_iter()
                        .map(|e| format!("{}: {}: {}", policy.metadata.name, e.path, e.message)),
                );
            }
        }
    }
    if errors.is_empty() {
        Ok(count)
    } else {
        Err(errors)
    }
}
