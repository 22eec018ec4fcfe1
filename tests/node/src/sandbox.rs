//! What a container process runs in: the pod's network namespace, a mount
//! namespace of its own with the pod's `/etc/hosts` and volumes bind-mounted,
//! and the security context's user and capabilities (applied by `setpriv`).
//!
//! The node spawns `outrigger-testnode run-container <spec JSON>`; that process
//! (single-threaded, as unshare(CLONE_NEWNS) requires) sets all of this up and
//! then execs the container's program, so the container's PID is the one the
//! node signals.

use std::ffi::CString;
use std::path::PathBuf;

use anyhow::{Context, Result};
use nix::mount::{mount, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Bind {
    pub source: PathBuf,
    pub target: PathBuf,
    pub read_only: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Sandbox {
    pub netns: String,
    pub binds: Vec<Bind>,
    pub run_as_user: Option<i64>,
    pub run_as_group: Option<i64>,
    /// Capability names without `CAP_`, lower case (setpriv's spelling).
    pub caps_add: Vec<String>,
    pub caps_drop: Vec<String>,
    pub working_dir: Option<PathBuf>,
    pub argv: Vec<String>,
}

/// The `setpriv` arguments for the security context, or none for root
/// without capability changes. A non-root user keeps added capabilities as
/// ambient ones (what a runtime does with `capabilities.add`).
fn setpriv_args(s: &Sandbox) -> Vec<String> {
    let mut args = Vec::new();
    let drop_all = s.caps_drop.iter().any(|c| c == "all");
    if drop_all || !s.caps_drop.is_empty() {
        let mut bounding: Vec<String> = if drop_all {
            vec!["-all".into()]
        } else {
            s.caps_drop.iter().map(|c| format!("-{c}")).collect()
        };
        bounding.extend(s.caps_add.iter().map(|c| format!("+{c}")));
        args.push(format!("--bounding-set={}", bounding.join(",")));
    }
    let uid = s.run_as_user.unwrap_or(0);
    if uid != 0 || s.run_as_group.is_some() {
        let gid = s.run_as_group.unwrap_or(uid);
        args.push(format!("--reuid={uid}"));
        args.push(format!("--regid={gid}"));
        args.push("--clear-groups".into());
        if !s.caps_add.is_empty() && uid != 0 {
            let caps: Vec<String> = s.caps_add.iter().map(|c| format!("+{c}")).collect();
            args.push(format!("--inh-caps={}", caps.join(",")));
            args.push(format!("--ambient-caps={}", caps.join(",")));
        }
    }
    args
}

/// Enters the sandbox and execs the program: returns only on failure.
pub fn enter(spec: &Sandbox) -> Result<std::convert::Infallible> {
    // Dies with the node, whatever happens to it (a new user clears this, so
    // the node also kills what is left in a stale namespace at its start).
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)?;
    let ns = std::fs::File::open(format!("/run/netns/{}", spec.netns))
        .with_context(|| format!("network namespace {}", spec.netns))?;
    setns(ns, CloneFlags::CLONE_NEWNET).context("setns")?;
    unshare(CloneFlags::CLONE_NEWNS).context("unshare(CLONE_NEWNS)")?;
    // Keep our bind mounts from propagating back to the host.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .context("making / private")?;
    for bind in &spec.binds {
        // The mount point must exist: create it (an empty file or directory
        // on the host's file system, the price of not having a root image).
        if !bind.target.exists() {
            if bind.source.is_dir() {
                std::fs::create_dir_all(&bind.target)?;
            } else {
                if let Some(parent) = bind.target.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                std::fs::write(&bind.target, b"")?;
            }
        }
        mount(
            Some(&bind.source),
            &bind.target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .with_context(|| format!("bind {:?} on {:?}", bind.source, bind.target))?;
        if bind.read_only {
            mount(
                None::<&str>,
                &bind.target,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
                None::<&str>,
            )
            .with_context(|| format!("read-only {:?}", bind.target))?;
        }
    }
    if let Some(dir) = &spec.working_dir {
        std::env::set_current_dir(dir).with_context(|| format!("workingDir {dir:?}"))?;
    }
    let privs = setpriv_args(spec);
    let argv: Vec<String> = if privs.is_empty() {
        spec.argv.clone()
    } else {
        ["setpriv".to_string()]
            .into_iter()
            .chain(privs)
            .chain(["--".to_string()])
            .chain(spec.argv.iter().cloned())
            .collect()
    };
    let argv: Vec<CString> = argv
        .into_iter()
        .map(CString::new)
        .collect::<Result<_, _>>()?;
    let program = argv.first().context("empty command")?;
    nix::unistd::execvp(program, &argv).with_context(|| format!("exec {program:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_without_changes_runs_directly() {
        assert!(setpriv_args(&Sandbox::default()).is_empty());
    }

    #[test]
    fn a_user_with_added_capabilities_keeps_them_as_ambient() {
        let s = Sandbox {
            run_as_user: Some(2102),
            caps_add: vec!["net_admin".into()],
            caps_drop: vec!["all".into()],
            ..Sandbox::default()
        };
        assert_eq!(
            setpriv_args(&s),
            [
                "--bounding-set=-all,+net_admin",
                "--reuid=2102",
                "--regid=2102",
                "--clear-groups",
                "--inh-caps=+net_admin",
                "--ambient-caps=+net_admin"
            ]
        );
    }
}
