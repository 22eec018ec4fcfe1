//! `outrigger-proxy init`: installs the pod's traffic redirect with iptables,
//! in one `iptables-restore` transaction, idempotently (a re-run replaces the
//! chains' contents and adds each jump only once).
//!
//! Inbound TCP goes to the proxy's inbound port, except the admin port, the
//! proxy's own ports and `--skip-inbound-ports`. Outbound TCP goes to the
//! outbound port, except traffic of the proxy's own UID (no loops), loopback
//! destinations, `--skip-outbound-ports` and `--skip-outbound-cidrs`.

use std::process::{Command, Stdio};

use anyhow::Context;
use clap::{Args, ValueEnum};
use outrigger_api::sidecar;

#[derive(Debug, Clone, Args)]
pub struct InitArgs {
    #[arg(long, default_value_t = sidecar::INBOUND_PORT)]
    pub inbound_port: u16,
    #[arg(long, default_value_t = sidecar::OUTBOUND_PORT)]
    pub outbound_port: u16,
    #[arg(long, default_value_t = sidecar::ADMIN_PORT)]
    pub admin_port: u16,
    /// UID the proxy runs as: its own connections are never redirected.
    #[arg(long, default_value_t = sidecar::PROXY_UID)]
    pub proxy_uid: u32,
    /// Inbound ports left alone (comma separated).
    #[arg(long, value_delimiter = ',')]
    pub skip_inbound_ports: Vec<u16>,
    /// Outbound destination ports left alone (comma separated).
    #[arg(long, value_delimiter = ',')]
    pub skip_outbound_ports: Vec<u16>,
    /// Outbound destination CIDRs left alone (comma separated).
    #[arg(long, value_delimiter = ',')]
    pub skip_outbound_cidrs: Vec<String>,
    /// Print the rules without applying them.
    #[arg(long)]
    pub dry_run: bool,
    /// Which iptables to use; `auto` picks the backend the host already uses.
    #[arg(long, value_enum, default_value = "auto")]
    pub backend: Backend,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Backend {
    Auto,
    Legacy,
    Nft,
}

const INBOUND: &str = "OUTRIGGER_INBOUND";
const INBOUND_REDIRECT: &str = "OUTRIGGER_INBOUND_REDIRECT";
const OUTBOUND: &str = "OUTRIGGER_OUTBOUND";
const OUTBOUND_REDIRECT: &str = "OUTRIGGER_OUTBOUND_REDIRECT";

/// The jumps from the built-in chains into ours.
fn jumps() -> [(&'static str, String); 2] {
    [
        ("PREROUTING", format!("-A PREROUTING -p tcp -j {INBOUND}")),
        ("OUTPUT", format!("-A OUTPUT -p tcp -j {OUTBOUND}")),
    ]
}

/// The `iptables-restore` input. `existing` is the current `iptables-save -t
/// nat` output: jumps already there are not added again.
pub fn rules(args: &InitArgs, existing: &str) -> anyhow::Result<String> {
    for cidr in &args.skip_outbound_cidrs {
        validate_cidr(cidr)?;
    }
    let mut r = vec![
        "*nat".to_string(),
        // Declaring a chain in a restore flushes it: re-runs start clean.
        format!(":{INBOUND} - [0:0]"),
        format!(":{INBOUND_REDIRECT} - [0:0]"),
        format!(":{OUTBOUND} - [0:0]"),
        format!(":{OUTBOUND_REDIRECT} - [0:0]"),
        format!(
            "-A {INBOUND_REDIRECT} -p tcp -j REDIRECT --to-ports {}",
            args.inbound_port
        ),
    ];
    let mut inbound_skips = vec![args.admin_port, args.inbound_port, args.outbound_port];
    inbound_skips.extend(&args.skip_inbound_ports);
    inbound_skips.sort_unstable();
    inbound_skips.dedup();
    for port in inbound_skips {
        r.push(format!("-A {INBOUND} -p tcp --dport {port} -j RETURN"));
    }
    r.push(format!("-A {INBOUND} -p tcp -j {INBOUND_REDIRECT}"));
    r.push(format!(
        "-A {OUTBOUND_REDIRECT} -p tcp -j REDIRECT --to-ports {}",
        args.outbound_port
    ));
    r.push(format!(
        "-A {OUTBOUND} -m owner --uid-owner {} -j RETURN",
        args.proxy_uid
    ));
    r.push(format!("-A {OUTBOUND} -d 127.0.0.0/8 -j RETURN"));
    for port in &args.skip_outbound_ports {
        r.push(format!("-A {OUTBOUND} -p tcp --dport {port} -j RETURN"));
    }
    for cidr in &args.skip_outbound_cidrs {
        r.push(format!("-A {OUTBOUND} -d {cidr} -j RETURN"));
    }
    r.push(format!("-A {OUTBOUND} -p tcp -j {OUTBOUND_REDIRECT}"));
    for (_, jump) in jumps() {
        if !existing.lines().any(|line| line.trim() == jump) {
            r.push(jump);
        }
    }
    r.push("COMMIT".into());
    Ok(r.join("\n") + "\n")
}

fn validate_cidr(cidr: &str) -> anyhow::Result<()> {
    let (ip, bits) = cidr.split_once('/').unwrap_or((cidr, "32"));
    let ip: std::net::Ipv4Addr = ip
        .parse()
        .with_context(|| format!("--skip-outbound-cidrs: {cidr:?} is not an IPv4 CIDR"))?;
    let bits: u8 = bits
        .parse()
        .ok()
        .filter(|b| *b <= 32)
        .with_context(|| format!("--skip-outbound-cidrs: {cidr:?} has a bad prefix length"))?;
    let _ = (ip, bits);
    Ok(())
}

/// The (save, restore) commands of a backend.
fn commands(backend: Backend) -> (&'static str, &'static str) {
    match backend {
        Backend::Legacy => ("iptables-legacy-save", "iptables-legacy-restore"),
        Backend::Nft => ("iptables-nft-save", "iptables-nft-restore"),
        Backend::Auto => ("iptables-save", "iptables-restore"),
    }
}

/// With `auto`, the backend whose tables already hold rules (the host's
/// kube-proxy or CNI decides), else whatever `iptables` points to.
fn detect(requested: Backend) -> Backend {
    if requested != Backend::Auto {
        return requested;
    }
    let count = |save: &str| {
        Command::new(save)
            .stderr(Stdio::null())
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .filter(|l| l.starts_with("-A "))
                    .count()
            })
            .unwrap_or(0)
    };
    let (legacy, nft) = (count("iptables-legacy-save"), count("iptables-nft-save"));
    match (legacy, nft) {
        (0, 0) => Backend::Auto,
        (l, n) if l > n => Backend::Legacy,
        _ => Backend::Nft,
    }
}

pub fn run(args: InitArgs) -> anyhow::Result<()> {
    let backend = detect(args.backend);
    let (save, restore) = commands(backend);
    let existing = if args.dry_run {
        String::new()
    } else {
        let output = Command::new(save)
            .args(["-t", "nat"])
            .output()
            .with_context(|| format!("cannot run {save} (is iptables installed?)"))?;
        anyhow::ensure!(
            output.status.success(),
            "{save} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let rules = rules(&args, &existing)?;
    println!("# {restore} --noflush");
    print!("{rules}");
    if args.dry_run {
        return Ok(());
    }
    let mut child = Command::new(restore)
        .arg("--noflush")
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {restore}"))?;
    use std::io::Write;
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(rules.as_bytes())?;
    let output = child.wait_with_output()?;
    anyhow::ensure!(
        output.status.success(),
        "{restore} rejected the rules (needs CAP_NET_ADMIN): {}",
        String::from_utf8_lossy(&output.stderr)
    );
    println!("# applied");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrapper {
        #[command(flatten)]
        args: InitArgs,
    }

    fn args(extra: &[&str]) -> InitArgs {
        let mut argv = vec!["init"];
        argv.extend_from_slice(extra);
        Wrapper::parse_from(argv).args
    }

    #[test]
    fn rules_exempt_the_proxy_and_skips() {
        let text = rules(
            &args(&[
                "--skip-inbound-ports=22",
                "--skip-outbound-ports=443,5432",
                "--skip-outbound-cidrs=10.0.0.0/8",
            ]),
            "",
        )
        .unwrap();
        for expected in [
            "-A OUTRIGGER_INBOUND -p tcp --dport 4191 -j RETURN",
            "-A OUTRIGGER_INBOUND -p tcp --dport 22 -j RETURN",
            "-A OUTRIGGER_INBOUND_REDIRECT -p tcp -j REDIRECT --to-ports 4143",
            "-A OUTRIGGER_OUTBOUND -m owner --uid-owner 2102 -j RETURN",
            "-A OUTRIGGER_OUTBOUND -d 127.0.0.0/8 -j RETURN",
            "-A OUTRIGGER_OUTBOUND -p tcp --dport 5432 -j RETURN",
            "-A OUTRIGGER_OUTBOUND -d 10.0.0.0/8 -j RETURN",
            "-A OUTRIGGER_OUTBOUND_REDIRECT -p tcp -j REDIRECT --to-ports 4140",
            "-A PREROUTING -p tcp -j OUTRIGGER_INBOUND",
            "-A OUTPUT -p tcp -j OUTRIGGER_OUTBOUND",
        ] {
            assert!(
                text.lines().any(|l| l == expected),
                "missing {expected:?} in\n{text}"
            );
        }
        // The owner exemption comes before the redirect.
        let exempt = text.find("--uid-owner").unwrap();
        let redirect = text
            .find("-A OUTRIGGER_OUTBOUND -p tcp -j OUTRIGGER_OUTBOUND_REDIRECT")
            .unwrap();
        assert!(exempt < redirect);
    }

    #[test]
    fn rerun_adds_no_second_jump() {
        let existing = "*nat\n-A PREROUTING -p tcp -j OUTRIGGER_INBOUND\n-A OUTPUT -p tcp -j OUTRIGGER_OUTBOUND\nCOMMIT\n";
        let text = rules(&args(&[]), existing).unwrap();
        assert!(!text.contains("-A PREROUTING"));
        assert!(!text.contains("-A OUTPUT"));
    }

    #[test]
    fn bad_cidr_is_refused() {
        let err = rules(&args(&["--skip-outbound-cidrs=10.0.0.0/40"]), "").unwrap_err();
        assert!(err.to_string().contains("bad prefix length"), "{err}");
    }
}
