//! The node's network: one bridge, one network namespace per pod joined to it
//! by a veth pair, addresses from 10.77.<id>.0/24.
//!
//! Everything is named with the prefix `orn<id>` so that a node can remove what
//! a crashed run with the same id left behind. The id is taken with an
//! exclusive lock file, so several nodes (parallel tests) never share one and
//! never clean up each other's namespaces. Nothing routes outside: pods get a
//! route for the bridge's /24 and for the ClusterIP range only (no default
//! route, no NAT to the outside, host forwarding untouched).

use std::collections::{BTreeSet, VecDeque};
use std::fs::File;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use nix::fcntl::{Flock, FlockArg};

/// Where the id locks live (root-only tmpfs on most systems).
const LOCK_DIR: &str = "/run/outrigger-testnode";
/// The Service ClusterIP range of the test API server (wrapper/native.go).
pub const CLUSTER_IP_RANGE: &str = "10.96.0.0/12";

/// Runs a command; its standard output, or an error with its standard error.
pub fn run(argv: &[&str]) -> Result<String> {
    let out = Command::new(argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {}", argv[0]))?;
    if !out.status.success() {
        bail!(
            "{}: {}",
            argv.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `argv` inside a pod's network namespace.
pub fn run_in(netns: &str, argv: &[&str]) -> Result<String> {
    let mut all = vec!["ip", "netns", "exec", netns];
    all.extend_from_slice(argv);
    run(&all)
}

fn prefix(id: u8) -> String {
    format!("orn{id}")
}

/// The node's bridge and address pool. Removes everything it made on drop.
pub struct Network {
    pub id: u8,
    pub bridge: String,
    pub host_ip: Ipv4Addr,
    /// Free host numbers, the longest free first: an address is reused as
    /// late as possible, since neighbours (the host, other pods) may still
    /// hold the removed pod's MAC for it and would send the new pod's
    /// traffic nowhere until their ARP entry expires.
    free: std::sync::Mutex<VecDeque<u8>>,
    _lock: Flock<File>,
}

/// A pod's namespace and address.
#[derive(Debug, Clone)]
pub struct PodNet {
    pub netns: String,
    pub ip: Ipv4Addr,
    host_veth: String,
}

fn try_lock(id: u8) -> Option<Flock<File>> {
    let path = PathBuf::from(LOCK_DIR).join(format!("net-{id}.lock"));
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .ok()?;
    Flock::lock(file, FlockArg::LockExclusiveNonblock).ok()
}

/// Namespaces and links named by `prefix`, as (netns names, link names).
fn leftovers(prefix: &str) -> (Vec<String>, Vec<String>) {
    let netns = run(&["ip", "netns", "list"]).unwrap_or_default();
    let netns = netns
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(prefix))
        .map(str::to_string)
        .collect();
    let links = run(&["ip", "-o", "link", "show"]).unwrap_or_default();
    let links = links
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n))
        .filter(|n| n.starts_with(prefix))
        .map(str::to_string)
        .collect();
    (netns, links)
}

/// Ends what still runs inside `netns`, then deletes it.
fn remove_netns(netns: &str) {
    if let Ok(pids) = run(&["ip", "netns", "pids", netns]) {
        for pid in pids.split_whitespace().filter_map(|p| p.parse().ok()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
    let _ = run(&["ip", "netns", "del", netns]);
}

/// Removes what the node with `id` left (it must hold the id's lock).
fn clean(id: u8) {
    let (netns, links) = leftovers(&format!("{}-", prefix(id)));
    for n in &netns {
        tracing::info!(netns = %n, "removing a stale pod namespace");
        remove_netns(n);
    }
    for l in links {
        let _ = run(&["ip", "link", "del", &l]);
    }
    let _ = run(&["ip", "link", "del", &prefix(id)]);
}

impl Network {
    /// Takes the first free id (or `wanted`), removes what a crashed node with
    /// any unlocked id left behind, and creates the bridge.
    pub fn create(wanted: Option<u8>) -> Result<Network> {
        std::fs::create_dir_all(LOCK_DIR).context("creating the lock directory")?;
        // Stale resources of ids nobody holds: a crashed node's.
        let (netns, links) = leftovers("orn");
        let mut stale: BTreeSet<u8> = BTreeSet::new();
        for name in netns.iter().chain(&links) {
            let digits: String = name[3..].chars().take_while(char::is_ascii_digit).collect();
            if let Ok(id) = digits.parse() {
                stale.insert(id);
            }
        }
        for id in stale {
            if let Some(_lock) = try_lock(id) {
                clean(id);
            }
        }
        let candidates: Vec<u8> = match wanted {
            Some(id) => vec![id],
            None => (1..=250).collect(),
        };
        let (id, lock) = candidates
            .into_iter()
            .find_map(|id| try_lock(id).map(|l| (id, l)))
            .context("no free network id (another node holds it)")?;
        clean(id);
        let bridge = prefix(id);
        let host_ip = Ipv4Addr::new(10, 77, id, 1);
        run(&["ip", "link", "add", &bridge, "type", "bridge"])?;
        run(&[
            "ip",
            "addr",
            "add",
            &format!("{host_ip}/24"),
            "dev",
            &bridge,
        ])?;
        run(&["ip", "link", "set", &bridge, "up"])?;
        Ok(Network {
            id,
            bridge,
            host_ip,
            free: std::sync::Mutex::new((2..=254).collect()),
            _lock: lock,
        })
    }

    /// A namespace with `lo` up and `eth0` on the bridge, with a fresh address.
    pub fn add_pod(&self) -> Result<PodNet> {
        let last = self
            .free
            .lock()
            .unwrap()
            .pop_front()
            .context("the pod address range is exhausted")?;
        let ip = Ipv4Addr::new(10, 77, self.id, last);
        // The host's neighbour entry of an earlier pod with this address.
        let _ = run(&[
            "ip",
            "neigh",
            "flush",
            "to",
            &ip.to_string(),
            "dev",
            &self.bridge,
        ]);
        let netns = format!("{}-pod{last}", prefix(self.id));
        let host_veth = format!("{}-v{last}", prefix(self.id));
        let pod = PodNet {
            netns: netns.clone(),
            ip,
            host_veth: host_veth.clone(),
        };
        let setup = || -> Result<()> {
            run(&["ip", "netns", "add", &netns])?;
            run(&[
                "ip", "link", "add", &host_veth, "type", "veth", "peer", "name", "eth0", "netns",
                &netns,
            ])?;
            run(&["ip", "link", "set", &host_veth, "master", &self.bridge])?;
            run(&["ip", "link", "set", &host_veth, "up"])?;
            run_in(&netns, &["ip", "link", "set", "lo", "up"])?;
            run_in(
                &netns,
                &["ip", "addr", "add", &format!("{ip}/24"), "dev", "eth0"],
            )?;
            run_in(&netns, &["ip", "link", "set", "eth0", "up"])?;
            // ClusterIPs must be routable for connect() to reach the DNAT in
            // nat OUTPUT (kube-proxy's rules); without one they go unanswered.
            run_in(
                &netns,
                &["ip", "route", "add", CLUSTER_IP_RANGE, "dev", "eth0"],
            )?;
            Ok(())
        };
        if let Err(e) = setup() {
            self.remove_pod(&pod);
            return Err(e);
        }
        Ok(pod)
    }

    /// Deletes the namespace (ending anything left in it) and frees the address.
    pub fn remove_pod(&self, pod: &PodNet) {
        remove_netns(&pod.netns);
        let _ = run(&["ip", "link", "del", &pod.host_veth]);
        self.free.lock().unwrap().push_back(pod.ip.octets()[3]);
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        clean(self.id);
    }
}
