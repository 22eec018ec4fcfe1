//! Network namespaces the tests create (and delete), so traffic crosses real
//! interfaces and iptables without touching the host's network.

use std::process::Stdio;

use tokio::process::{Child, Command};

/// A network namespace that is deleted when dropped.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn create(name: &str) -> Netns {
        let ok = std::process::Command::new("ip")
            .args(["netns", "add", name])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        // A test that cannot run fails: it never passes without having run.
        assert!(
            ok,
            "cannot create network namespace {name}: run the tests as root with iproute2 \
             installed (bash tests/setup.sh)"
        );
        let netns = Netns {
            name: name.to_string(),
        };
        netns.exec_ok(&["ip", "link", "set", "lo", "up"]);
        netns
    }

    pub fn command(&self, argv: &[&str]) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name]).args(argv);
        command
    }

    pub fn exec_ok(&self, argv: &[&str]) -> String {
        let output = std::process::Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(argv)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{argv:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    pub fn spawn(&self, argv: &[&str]) -> Child {
        self.command(argv)
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

impl Netns {
    /// Retries `argv` inside the namespace until it succeeds (15s at most).
    pub async fn wait_ok(&self, argv: &[&str]) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
        loop {
            let ok = self
                .command(argv)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .await
                .map(|s| s.success())
                .unwrap_or(false);
            if ok {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{argv:?} never succeeded in namespace {}",
                self.name
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// Connects two namespaces with a veth pair: `self` gets `addr_here`,
    /// `peer` gets `addr_there` (CIDR notation, e.g. 192.0.2.1/24).
    pub fn link(&self, peer: &Netns, addr_here: &str, addr_there: &str) {
        let here = format!("v{}", &self.name[self.name.len().saturating_sub(10)..]);
        let there = format!("v{}", &peer.name[peer.name.len().saturating_sub(10)..]);
        let status = std::process::Command::new("ip")
            .args([
                "link", "add", &here, "netns", &self.name, "type", "veth", "peer", "name", &there,
                "netns", &peer.name,
            ])
            .status()
            .unwrap();
        assert!(status.success(), "veth pair");
        self.exec_ok(&["ip", "addr", "add", addr_here, "dev", &here]);
        self.exec_ok(&["ip", "link", "set", &here, "up"]);
        peer.exec_ok(&["ip", "addr", "add", addr_there, "dev", &there]);
        peer.exec_ok(&["ip", "link", "set", &there, "up"]);
    }
}

impl Netns {
    /// Connects the namespace to the host's with a veth pair: the host end
    /// `host_if` gets `addr_host`, the namespace's end `addr_here` (CIDR
    /// notation, e.g. 10.213.7.1/30). Deleting the namespace deletes the
    /// pair.
    pub fn link_host(&self, host_if: &str, addr_host: &str, addr_here: &str) {
        let here = format!("{host_if}n");
        let run = |argv: &[&str]| {
            let status = std::process::Command::new("ip")
                .args(argv)
                .status()
                .unwrap();
            assert!(status.success(), "ip {argv:?}");
        };
        run(&[
            "link", "add", host_if, "type", "veth", "peer", "name", &here, "netns", &self.name,
        ]);
        run(&["addr", "add", addr_host, "dev", host_if]);
        run(&["link", "set", host_if, "up"]);
        self.exec_ok(&["ip", "addr", "add", addr_here, "dev", &here]);
        self.exec_ok(&["ip", "link", "set", &here, "up"]);
    }
}
