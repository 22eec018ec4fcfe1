//! `outrigger proxies`: every proxy streaming policy from the operator,
//! replica by replica: its pod, the policies it applied (and whether each
//! is the latest), when it connected.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use outrigger_operator::admin::ProxiesView;

use crate::connect::{GlobalArgs, Kube};
use crate::operator_admin;
use crate::report::{age, table};

pub async fn run(kube: &Kube, args: &GlobalArgs) -> anyhow::Result<String> {
    let install = crate::install::discover(kube, &args.operator_namespace).await?;
    let replicas = operator_admin::replicas(kube, args, &install).await?;
    anyhow::ensure!(
        !replicas.is_empty(),
        "no running operator pod in {} to ask (or give --admin-url)",
        install.namespace
    );
    let mut views = Vec::new();
    let mut errors = String::new();
    for replica in &replicas {
        match operator_admin::proxies(kube, replica).await {
            Ok(view) => views.push(view),
            Err(err) => errors.push_str(&format!("replica {}: {err:#}\n", replica.name())),
        }
    }
    let mut out = render(&views, Timestamp::now());
    out.push_str(&errors);
    Ok(out)
}

/// The table: one row per proxy.
pub fn render(views: &[ProxiesView], now: Timestamp) -> String {
    let mut rows = Vec::new();
    for view in views {
        for proxy in &view.proxies {
            let since: Option<Timestamp> = proxy.connected_since.parse().ok();
            let connected = since.map_or("?".to_string(), |t| {
                age(Duration::from_secs(
                    (now.as_second() - t.as_second()).max(0) as u64,
                ))
            });
            let mut policies: Vec<String> = proxy
                .subscriptions
                .iter()
                .filter_map(|s| {
                    let policy = s.policy.as_ref()?;
                    let generation = s.generation.map_or(String::new(), |g| format!("@{g}"));
                    let stale = if s.current { "" } else { " (stale)" };
                    Some(format!("{policy}{generation}{stale}"))
                })
                .collect();
            policies.sort();
            policies.dedup();
            let behind = proxy.subscriptions.iter().filter(|s| !s.current).count();
            rows.push(vec![
                proxy.proxy.clone(),
                view.replica.clone().unwrap_or_else(|| "-".into()),
                connected,
                format!(
                    "{}/{}",
                    proxy.subscriptions.len() - behind,
                    proxy.subscriptions.len()
                ),
                if policies.is_empty() {
                    "-".into()
                } else {
                    policies.join(",")
                },
            ]);
        }
    }
    if rows.is_empty() {
        return "No proxies connected\n".into();
    }
    rows.sort();
    table(&["POD", "REPLICA", "AGE", "CURRENT", "POLICIES"], &rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_row_per_proxy_with_its_policies() {
        let view: ProxiesView = serde_json::from_value(serde_json::json!({
            "version": "0.1.0",
            "replica": "operator-0",
            "proxies": [{
                "proxy": "web-1",
                "connectedSince": "2026-01-01T00:00:00Z",
                "streams": 2,
                "subscriptions": [
                    {"subscription": "dst:api.shop:80", "policy": "shop/api", "generation": 2,
                     "applied": 5, "latest": 5, "current": true},
                    {"subscription": "in:shop/web", "policy": null, "generation": null,
                     "applied": 3, "latest": 4, "current": false}
                ]
            }]
        }))
        .unwrap();
        let now: Timestamp = "2026-01-01T00:10:00Z".parse().unwrap();
        let text = render(&[view], now);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "POD    REPLICA     AGE  CURRENT  POLICIES");
        assert_eq!(lines[1], "web-1  operator-0  10m  1/2      shop/api@2");
        assert_eq!(render(&[], now), "No proxies connected\n");
    }
}
