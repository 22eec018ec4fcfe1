//! kube-proxy's job, per pod: nat OUTPUT rules in each pod's namespace that
//! DNAT a ClusterIP:port to one of the Service's ready endpoints (random,
//! evenly), from the EndpointSlices; anything else still addressed to a
//! ClusterIP is rejected (no endpoints), as kube-proxy does.
//!
//! The jump to our chain is kept last in nat OUTPUT, so that a sidecar's
//! redirect (outrigger-proxy init appends its own) sees the app's traffic
//! first and only the proxy's own connections (which it returns) reach us —
//! the order the host's kube-proxy has in a real cluster.

use std::fmt::Write;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::network::{run_in, CLUSTER_IP_RANGE};

const CHAIN: &str = "ORN-SERVICES";

/// (protocol, ClusterIP, port, ready endpoint addresses with target port).
fn targets(
    services: &[Service],
    slices: &[EndpointSlice],
) -> Vec<(String, String, i32, Vec<String>)> {
    let mut out = Vec::new();
    for svc in services {
        let (Some(name), Some(ns), Some(spec)) = (
            svc.metadata.name.as_deref(),
            svc.metadata.namespace.as_deref(),
            svc.spec.as_ref(),
        ) else {
            continue;
        };
        let Some(ip) = spec
            .cluster_ip
            .as_deref()
            .filter(|ip| !ip.is_empty() && *ip != "None")
        else {
            continue;
        };
        let mine = slices.iter().filter(|s| {
            s.metadata.namespace.as_deref() == Some(ns)
                && s.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get("kubernetes.io/service-name"))
                    .map(String::as_str)
                    == Some(name)
        });
        let mine: Vec<&EndpointSlice> = mine.collect();
        for port in spec.ports.iter().flatten() {
            let mut endpoints = Vec::new();
            for slice in &mine {
                let Some(target) = slice
                    .ports
                    .iter()
                    .flatten()
                    .find(|p| p.name == port.name)
                    .and_then(|p| p.port)
                else {
                    continue;
                };
                for ep in &slice.endpoints {
                    // An unset condition means ready, per the API.
                    let ready = ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
                    if ready {
                        endpoints.extend(ep.addresses.iter().map(|a| format!("{a}:{target}")));
                    }
                }
            }
            endpoints.sort();
            let protocol = port.protocol.as_deref().unwrap_or("TCP").to_lowercase();
            out.push((protocol, ip.to_string(), port.port, endpoints));
        }
    }
    out.sort();
    out
}

/// The `iptables-restore --noflush` input: our chains, rewritten whole.
pub fn rules(services: &[Service], slices: &[EndpointSlice]) -> String {
    let mut nat = format!("*nat\n:{CHAIN} - [0:0]\n");
    for (proto, ip, port, endpoints) in targets(services, slices) {
        let n = endpoints.len();
        for (i, ep) in endpoints.iter().enumerate() {
            // Rule i takes 1/(n-i) of what the earlier ones left: uniform.
            let pick = if i + 1 < n {
                format!(
                    " -m statistic --mode random --probability {:.5}",
                    1.0 / (n - i) as f64
                )
            } else {
                String::new()
            };
            let _ = writeln!(
                nat,
                "-A {CHAIN} -d {ip}/32 -p {proto} -m {proto} --dport {port}{pick} -j DNAT --to-destination {ep}"
            );
        }
    }
    nat.push_str("COMMIT\n");
    let _ = write!(
        nat,
        "*filter\n:{CHAIN} - [0:0]\n-A {CHAIN} -d {CLUSTER_IP_RANGE} -p tcp -j REJECT --reject-with tcp-reset\n-A {CHAIN} -d {CLUSTER_IP_RANGE} -j REJECT\nCOMMIT\n"
    );
    nat
}

/// Writes the rules into `netns` and makes sure both jumps exist, the nat
/// one last in OUTPUT.
pub fn apply(netns: &str, rules: &str) -> anyhow::Result<()> {
    // One file per call: two refreshes of one namespace may overlap.
    static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!(
        "outrigger-testnode-{netns}-{}-{call}.rules",
        std::process::id()
    ));
    std::fs::write(&dir, rules)?;
    let result = run_in(
        netns,
        &[
            "iptables-restore",
            "--noflush",
            dir.to_str().unwrap_or_default(),
        ],
    );
    let _ = std::fs::remove_file(&dir);
    result?;
    for table in ["nat", "filter"] {
        let listed = run_in(netns, &["iptables", "-w", "-t", table, "-S", "OUTPUT"])?;
        let jump = format!("-A OUTPUT -j {CHAIN}");
        if listed.lines().last() != Some(jump.as_str()) {
            if listed.lines().any(|l| l == jump) {
                run_in(
                    netns,
                    &["iptables", "-w", "-t", table, "-D", "OUTPUT", "-j", CHAIN],
                )?;
            }
            run_in(
                netns,
                &["iptables", "-w", "-t", table, "-A", "OUTPUT", "-j", CHAIN],
            )?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_endpoints_share_the_cluster_ip_evenly() {
        let svc: Service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"clusterIP": "10.96.0.10", "ports": [{"name": "http", "port": 80}]}
        }))
        .unwrap();
        let slice: EndpointSlice = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web-1", "namespace": "shop",
                         "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080}],
            "endpoints": [
                {"addresses": ["10.77.1.2"], "conditions": {"ready": true}},
                {"addresses": ["10.77.1.3"]},
                {"addresses": ["10.77.1.4"], "conditions": {"ready": false}}
            ]
        }))
        .unwrap();
        let rules = rules(&[svc], &[slice]);
        assert!(rules.contains(
            "-A ORN-SERVICES -d 10.96.0.10/32 -p tcp -m tcp --dport 80 -m statistic --mode random --probability 0.50000 -j DNAT --to-destination 10.77.1.2:8080\n"
        ), "{rules}");
        assert!(rules.contains(
            "-A ORN-SERVICES -d 10.96.0.10/32 -p tcp -m tcp --dport 80 -j DNAT --to-destination 10.77.1.3:8080\n"
        ), "{rules}");
        assert!(!rules.contains("10.77.1.4"));
    }
}
