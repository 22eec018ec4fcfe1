//! `outrigger proxies`: every proxy streaming policy from the operator,
//! replica by replica: its pod and the pod's age, when it connected, the
//! policies (and generations) it applied and whether each is the latest.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams};
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
    // A proxy's id is its pod's name: the pod gives its namespace and age.
    let pods: BTreeMap<String, PodInfo> = Api::<Pod>::all(kube.client.clone())
        .list(&ListParams::default())
        .await
        .map(|list| list.items)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|pod| {
            let name = pod.metadata.name?;
            let info = PodInfo {
                namespace: pod.metadata.namespace.unwrap_or_default(),
                created: pod.metadata.creation_timestamp.map(|t| t.0),
            };
            Some((name, info))
        })
        .collect();
    let mut out = render(&views, &pods, Timestamp::now());
    out.push_str(&errors);
    Ok(out)
}

/// What the pod of a proxy adds to its row.
#[derive(Debug, Clone)]
pub struct PodInfo {
    pub namespace: String,
    pub created: Option<Timestamp>,
}

/// The table: one row per proxy.
pub fn render(views: &[ProxiesView], pods: &BTreeMap<String, PodInfo>, now: Timestamp) -> String {
    let ago = |t: Timestamp| {
        age(Duration::from_secs(
            (now.as_second() - t.as_second()).max(0) as u64,
        ))
    };
    let mut rows = Vec::new();
    for view in views {
        for proxy in &view.proxies {
            let since: Option<Timestamp> = proxy.connected_since.parse().ok();
            let connected = since.map_or("?".to_string(), ago);
            let pod = pods.get(&proxy.proxy);
            let name = pod.map_or(proxy.proxy.clone(), |p| {
                format!("{}/{}", p.namespace, proxy.proxy)
            });
            let pod_age = pod.and_then(|p| p.created).map_or("-".to_string(), ago);
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
                name,
                pod_age,
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
    table(
        &["POD", "AGE", "REPLICA", "CONNECTED", "CURRENT", "POLICIES"],
        &rows,
    )
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
        let pods = BTreeMap::from([(
            "web-1".to_string(),
            PodInfo {
                namespace: "shop".into(),
                created: Some("2025-12-31T23:00:00Z".parse().unwrap()),
            },
        )]);
        let text = render(std::slice::from_ref(&view), &pods, now);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "POD         AGE  REPLICA     CONNECTED  CURRENT  POLICIES"
        );
        assert_eq!(
            lines[1],
            "shop/web-1  70m  operator-0  10m        1/2      shop/api@2"
        );
        // Without its pod (gone, or a proxy outside the cluster): the id.
        let text = render(&[view], &BTreeMap::new(), now);
        assert!(
            text.lines().nth(1).unwrap().starts_with("web-1  -  "),
            "{text}"
        );
        assert_eq!(render(&[], &pods, now), "No proxies connected\n");
    }
}
