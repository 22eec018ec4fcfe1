//! Probes as the kubelet runs them: httpGet and tcpSocket from the node to
//! the pod's address, exec inside the container's sandbox; periods, initial
//! delays, timeouts and thresholds from the spec.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// One probe, with the spec's numbers (Kubernetes' defaults filled in).
#[derive(Debug, Clone)]
pub struct Check {
    pub action: Action,
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub success_threshold: i32,
    pub failure_threshold: i32,
}

#[derive(Debug, Clone)]
pub enum Action {
    Http {
        addr: SocketAddr,
        path: String,
    },
    Tcp {
        addr: SocketAddr,
    },
    /// The command runs by the runtime's exec (see runtime.rs).
    Exec {
        command: Vec<String>,
    },
}

/// A named port of the container, or a number.
pub fn port(container: &Container, port: &IntOrString) -> Option<u16> {
    match port {
        IntOrString::Int(n) => u16::try_from(*n).ok(),
        IntOrString::String(name) => container
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name))
            .and_then(|p| u16::try_from(p.container_port).ok()),
    }
}

fn seconds(v: Option<i32>, default: i32) -> Duration {
    Duration::from_secs(v.unwrap_or(default).max(0) as u64)
}

/// The check for `probe`, or None when it has no action this node supports.
pub fn check(container: &Container, probe: &Probe, pod_ip: Ipv4Addr) -> Option<Check> {
    let action = if let Some(h) = &probe.http_get {
        let ip = h
            .host
            .as_deref()
            .and_then(|h| h.parse().ok())
            .unwrap_or(pod_ip);
        Action::Http {
            addr: SocketAddr::new(ip.into(), port(container, &h.port)?),
            path: h.path.clone().unwrap_or_else(|| "/".into()),
        }
    } else if let Some(t) = &probe.tcp_socket {
        let ip = t
            .host
            .as_deref()
            .and_then(|h| h.parse().ok())
            .unwrap_or(pod_ip);
        Action::Tcp {
            addr: SocketAddr::new(ip.into(), port(container, &t.port)?),
        }
    } else if let Some(e) = &probe.exec {
        Action::Exec {
            command: e.command.clone().unwrap_or_default(),
        }
    } else {
        return None;
    };
    Some(Check {
        action,
        initial_delay: seconds(probe.initial_delay_seconds, 0),
        period: seconds(probe.period_seconds, 10).max(Duration::from_millis(100)),
        timeout: seconds(probe.timeout_seconds, 1).max(Duration::from_millis(100)),
        success_threshold: probe.success_threshold.unwrap_or(1).max(1),
        failure_threshold: probe.failure_threshold.unwrap_or(3).max(1),
    })
}

/// One network attempt: an HTTP status in 200..400, or a connection.
pub async fn network(action: &Action, timeout: Duration) -> bool {
    match action {
        Action::Http { addr, path } => {
            let url = format!("http://{addr}{path}");
            let attempt = tokio::task::spawn_blocking(move || crate::apps::http_get(&url, timeout));
            matches!(attempt.await, Ok(Ok((status, _))) if (200..400).contains(&status))
        }
        Action::Tcp { addr } => matches!(
            tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await,
            Ok(Ok(_))
        ),
        Action::Exec { .. } => false,
    }
}

/// Counts consecutive results against the thresholds: Some(new verdict)
/// when it flips.
#[derive(Debug)]
pub struct Verdict {
    ok: bool,
    run: i32,
}

impl Verdict {
    pub fn new(ok: bool) -> Verdict {
        Verdict { ok, run: 0 }
    }

    pub fn record(&mut self, check: &Check, passed: bool) -> Option<bool> {
        if passed == self.ok {
            self.run = 0;
            return None;
        }
        self.run += 1;
        let needed = if passed {
            check.success_threshold
        } else {
            check.failure_threshold
        };
        if self.run >= needed {
            self.ok = passed;
            self.run = 0;
            Some(passed)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_flip_the_verdict_only_after_enough_results_in_a_row() {
        let probe: Probe = serde_json::from_value(serde_json::json!({
            "tcpSocket": {"port": "http"}, "failureThreshold": 2, "successThreshold": 1
        }))
        .unwrap();
        let container: Container = serde_json::from_value(serde_json::json!({
            "name": "c", "ports": [{"name": "http", "containerPort": 8080}]
        }))
        .unwrap();
        let check = check(&container, &probe, Ipv4Addr::new(10, 77, 1, 2)).unwrap();
        assert!(matches!(check.action, Action::Tcp { addr } if addr.port() == 8080));
        let mut v = Verdict::new(false);
        assert_eq!(v.record(&check, true), Some(true));
        assert_eq!(v.record(&check, false), None);
        assert_eq!(v.record(&check, true), None);
        assert_eq!(v.record(&check, false), None);
        assert_eq!(v.record(&check, false), Some(false));
    }
}
