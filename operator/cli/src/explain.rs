//! `outrigger explain svc/NAME`: what proxies enforce for a Service. The
//! objects are read from the API server and compiled by the operator's own
//! `compile` (policies, Services, EndpointSlices, Gateway API routes and
//! BackendTrafficPolicies), so the answer is the operator's, not a second
//! reading of the rules; the spec is shown through the API's
//! `with_defaults`, which is what every proxy applies. The proxies watching
//! the Service come from the operator; their breaker and ejections from
//! the proxies themselves (`live_state`).

use std::fmt::Write as _;

use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ListParams};
use outrigger_api::defaults::with_defaults;
use outrigger_api::gateway::{RouteObject, TrafficPolicy, TRAFFIC_GROUP, TRAFFIC_KIND};
use outrigger_api::policy::ResiliencePolicy;
use outrigger_operator::compile::{compile_gateway, Compiled, Destination, ObjectKey};

use crate::connect::{GlobalArgs, Kube};
use crate::report::{wrap, WIDTH};
use crate::{live_state, operator_admin};

/// `svc/NAME`, `service/NAME`, `services/NAME` or `NAME`.
pub fn parse_target(target: &str) -> anyhow::Result<String> {
    let name = match target.split_once('/') {
        Some(("svc" | "service" | "services", name)) => name,
        Some((kind, _)) => anyhow::bail!("{kind}: only Services are explained (svc/NAME)"),
        None => target,
    };
    anyhow::ensure!(!name.is_empty(), "no Service name in {target:?}");
    Ok(name.to_string())
}

pub async fn run(kube: &Kube, args: &GlobalArgs, target: &str) -> anyhow::Result<String> {
    let name = parse_target(target)?;
    let key = ObjectKey {
        namespace: kube.namespace.clone(),
        name,
    };
    let client = &kube.client;
    let policies: Vec<ResiliencePolicy> = Api::all(client.clone())
        .list(&ListParams::default())
        .await
        .map_err(|e| {
            anyhow::anyhow!("cannot list ResiliencePolicies (is the CRD installed?): {e}")
        })?
        .items;
    let services: Vec<Service> = Api::all(client.clone())
        .list(&ListParams::default())
        .await?
        .items;
    let slices: Vec<EndpointSlice> = Api::all(client.clone())
        .list(&ListParams::default())
        .await?
        .items;
    let mut routes = Vec::new();
    for (resource, kind) in [("httproutes", "HTTPRoute"), ("grpcroutes", "GRPCRoute")] {
        for item in list_raw(
            kube,
            &format!("/apis/gateway.networking.k8s.io/v1/{resource}"),
            kind,
        )
        .await?
        {
            if let Ok(route) = RouteObject::from_value(&item) {
                routes.push(route);
            }
        }
    }
    let mut traffic = Vec::new();
    let path = format!("/apis/{TRAFFIC_GROUP}/v1alpha1/xbackendtrafficpolicies");
    for item in list_raw(kube, &path, TRAFFIC_KIND).await? {
        if let Ok(policy) = TrafficPolicy::from_value(&item) {
            traffic.push(policy);
        }
    }
    let compiled = compile_gateway(&policies, &services, &slices, &routes, &traffic);
    let mut out = describe(&key, &compiled, &policies);
    out.push_str(&proxies_section(kube, args, &key, compiled.destinations.get(&key)).await);
    Ok(out)
}

/// The items of a list at `path` with their kind and apiVersion set (list
/// items carry neither); none when the API is not served.
async fn list_raw(kube: &Kube, path: &str, kind: &str) -> anyhow::Result<Vec<serde_json::Value>> {
    let request = http::Request::get(path).body(Vec::new())?;
    let list: serde_json::Value = match kube.client.request(request).await {
        Ok(list) => list,
        Err(kube::Error::Api(status)) if status.code == 404 => return Ok(Vec::new()),
        Err(err) => return Err(anyhow::anyhow!("{path}: {err}")),
    };
    let api_version = list["apiVersion"].clone();
    Ok(list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|item| {
            let mut item = item.clone();
            item["kind"] = kind.into();
            item["apiVersion"] = api_version.clone();
            item
        })
        .collect())
}

/// The Service, its endpoints, and each policy applied to it (defaults
/// filled in), as text within 80 columns.
pub fn describe(key: &ObjectKey, compiled: &Compiled, policies: &[ResiliencePolicy]) -> String {
    let mut out = String::new();
    let Some(destination) = compiled.destinations.get(key) else {
        let _ = writeln!(out, "Service {key} not found");
        return out;
    };
    let _ = writeln!(out, "Service {key}");
    let ports: Vec<String> = destination
        .ports
        .iter()
        .map(|p| {
            let name = if p.name.is_empty() {
                "-"
            } else {
                p.name.as_str()
            };
            match p.target_port {
                Some(t) => format!("{name} {}→{t}", p.port),
                None => format!("{name} {}", p.port),
            }
        })
        .collect();
    line(&mut out, 2, &format!("ports: {}", ports.join(", ")));
    if !destination.cluster_ips.is_empty() {
        line(
            &mut out,
            2,
            &format!("cluster IPs: {}", destination.cluster_ips.join(", ")),
        );
    }
    line(
        &mut out,
        2,
        &format!("endpoints: {} ready", destination.endpoints.len()),
    );
    for endpoint in &destination.endpoints {
        let ports: Vec<String> = endpoint
            .ports
            .iter()
            .map(|(name, port)| {
                if name.is_empty() {
                    port.to_string()
                } else {
                    format!("{name}={port}")
                }
            })
            .collect();
        line(&mut out, 4, &format!("{} {}", endpoint.ip, ports.join(" ")));
    }
    if !destination.routes.is_empty() {
        line(
            &mut out,
            2,
            &format!("Gateway API routes: {}", destination.routes.join(", ")),
        );
    }
    if let Some(from) = &destination.retry_budget_from {
        line(&mut out, 2, &format!("retry budget from {from}"));
    }
    out.push('\n');

    if destination.policies.is_empty() {
        let _ = writeln!(
            out,
            "No policy applies: proxies forward without resilience rules"
        );
    }
    for applied in &destination.policies {
        let source = match &applied.policy {
            Some(policy) => format!("ResiliencePolicy {policy}"),
            None => "Gateway API routes only".to_string(),
        };
        let port = applied
            .port
            .map_or("every port".to_string(), |p| format!("port {p}"));
        let generation = applied
            .generation
            .map_or(String::new(), |g| format!(", generation {g}"));
        line(&mut out, 0, &format!("{source} ({port}{generation})"));
        if !applied.routes.is_empty() {
            line(
                &mut out,
                2,
                &format!("routes composed in: {}", applied.routes.join(", ")),
            );
        }
        line(&mut out, 2, "effective spec (defaults filled in):");
        let spec = serde_yaml::to_string(&with_defaults(&applied.spec))
            .unwrap_or_else(|e| format!("(does not serialize: {e})"));
        for text in spec.lines() {
            // YAML keeps its indentation; a long value wraps under itself.
            let indent = 4 + text.len() - text.trim_start().len();
            line(&mut out, indent, text.trim_start());
        }
        out.push('\n');
    }

    // Policies naming this Service that proxies do not get, and why.
    for policy in policies {
        let policy_key = ObjectKey {
            namespace: policy.metadata.namespace.clone().unwrap_or_default(),
            name: policy.metadata.name.clone().unwrap_or_default(),
        };
        if policy_key.namespace != key.namespace || policy.spec.target_ref.name != key.name {
            continue;
        }
        let Some(verdict) = compiled.verdicts.get(&policy_key) else {
            continue;
        };
        if verdict.is_programmed() {
            continue;
        }
        let why = if verdict.accepted.status {
            &verdict.resolved_refs
        } else {
            &verdict.accepted
        };
        line(
            &mut out,
            0,
            &format!(
                "Not applied: ResiliencePolicy {policy_key}: {} {}",
                why.reason, why.message
            ),
        );
    }
    out
}

/// `text` at `indent`, wrapped so no line passes [`WIDTH`].
fn line(out: &mut String, indent: usize, text: &str) {
    let indent = indent.min(WIDTH / 2);
    for part in wrap(text, WIDTH - indent) {
        let _ = writeln!(out, "{:indent$}{part}", "");
    }
}

/// Whether a subscription key is to this Service: by any DNS spelling or
/// cluster IP of an outbound destination, or its inbound policy.
pub fn watches(subscription: &str, key: &ObjectKey, destination: Option<&Destination>) -> bool {
    if subscription == format!("in:{}/{}", key.namespace, key.name) {
        return true;
    }
    let Some(authority) = subscription.strip_prefix("dst:") else {
        return false;
    };
    let host = authority.rsplit_once(':').map_or(authority, |(h, _)| h);
    let qualified = format!("{}.{}", key.name, key.namespace);
    host == qualified
        || host
            .strip_prefix(&qualified)
            .is_some_and(|rest| rest == ".svc" || rest.starts_with(".svc."))
        || destination.is_some_and(|d| d.cluster_ips.iter().any(|ip| ip == host))
}

async fn proxies_section(
    kube: &Kube,
    args: &GlobalArgs,
    key: &ObjectKey,
    destination: Option<&Destination>,
) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "Proxies (from the operator)");
    let install = match crate::install::discover(kube, &args.operator_namespace).await {
        Ok(install) => install,
        Err(err) => {
            line(&mut out, 2, &format!("unknown: {err}"));
            return out;
        }
    };
    let replicas = operator_admin::replicas(kube, args, &install)
        .await
        .unwrap_or_default();
    if replicas.is_empty() {
        line(&mut out, 2, "unknown: no running operator pod to ask");
        return out;
    }
    let (mut watching, mut current) = (Vec::new(), 0);
    for replica in &replicas {
        match operator_admin::proxies(kube, replica).await {
            Ok(view) => {
                for proxy in view.proxies {
                    let mine: Vec<_> = proxy
                        .subscriptions
                        .iter()
                        .filter(|s| watches(&s.subscription, key, destination))
                        .collect();
                    if mine.is_empty() {
                        continue;
                    }
                    if mine.iter().all(|s| s.current) {
                        current += 1;
                    }
                    watching.push(proxy.proxy.clone());
                }
            }
            Err(err) => line(&mut out, 2, &format!("replica {}: {err:#}", replica.name())),
        }
    }
    line(
        &mut out,
        2,
        &format!(
            "{} watching this Service, {current} on its latest snapshot",
            watching.len()
        ),
    );
    if !watching.is_empty() {
        line(&mut out, 4, &watching.join(", "));
    }
    out.push_str(&live_section(kube, key, &watching).await);
    out
}

/// Each watching proxy's breaker and ejections for this Service, from the
/// proxy itself (at most [`LIVE_PROXIES`] of them, to keep the calls few).
async fn live_section(kube: &Kube, key: &ObjectKey, watching: &[String]) -> String {
    let mut out = String::new();
    if watching.is_empty() {
        return out;
    }
    let _ = writeln!(out, "\nLive state (from the proxies)");
    // A proxy's id is its pod's name; the namespace comes from the pod.
    let pods: Vec<Pod> = match Api::<Pod>::all(kube.client.clone())
        .list(&ListParams::default())
        .await
    {
        Ok(list) => list.items,
        Err(err) => {
            line(&mut out, 2, &format!("unknown: cannot list pods: {err}"));
            return out;
        }
    };
    for proxy in watching.iter().take(LIVE_PROXIES) {
        let Some(namespace) = pods
            .iter()
            .find(|p| p.metadata.name.as_deref() == Some(proxy.as_str()))
            .and_then(|p| p.metadata.namespace.clone())
        else {
            line(&mut out, 2, &format!("{proxy}: no pod of that name"));
            continue;
        };
        match live_state::fetch(kube, &namespace, proxy).await {
            Ok(metrics) => {
                let states = live_state::parse(&metrics, &key.namespace, &key.name);
                if states.is_empty() {
                    line(
                        &mut out,
                        2,
                        &format!("{proxy}: no calls to this Service yet"),
                    );
                }
                for (destination, state) in states {
                    let port = destination.rsplit(':').next().unwrap_or_default();
                    let state = live_state::describe(&state);
                    line(&mut out, 2, &format!("{proxy} port {port}: {state}"));
                }
            }
            Err(err) => line(&mut out, 2, &format!("{proxy}: unavailable: {err}")),
        }
    }
    if watching.len() > LIVE_PROXIES {
        let more = watching.len() - LIVE_PROXIES;
        line(&mut out, 2, &format!("({more} more proxies not asked)"));
    }
    out
}

const LIVE_PROXIES: usize = 10;

#[cfg(test)]
mod tests {
    use super::*;
    use outrigger_operator::compile::compile;

    #[test]
    fn targets_name_services() {
        assert_eq!(parse_target("svc/web").unwrap(), "web");
        assert_eq!(parse_target("service/web").unwrap(), "web");
        assert_eq!(parse_target("web").unwrap(), "web");
        assert!(parse_target("deploy/web").is_err());
        assert!(parse_target("svc/").is_err());
    }

    fn key() -> ObjectKey {
        ObjectKey {
            namespace: "shop".into(),
            name: "web".into(),
        }
    }

    #[test]
    fn subscriptions_to_the_service_by_any_spelling() {
        let d = Destination {
            cluster_ips: vec!["10.96.0.7".into()],
            ports: Vec::new(),
            endpoints: Vec::new(),
            pods: Default::default(),
            policies: Vec::new(),
            routes: Vec::new(),
            retry_budget_from: None,
        };
        for yes in [
            "dst:web.shop:80",
            "dst:web.shop.svc:80",
            "dst:web.shop.svc.cluster.local:80",
            "dst:10.96.0.7:80",
            "in:shop/web",
        ] {
            assert!(watches(yes, &key(), Some(&d)), "{yes}");
        }
        for no in [
            "dst:web.shopping:80",
            "dst:webx.shop:80",
            "in:shop/webx",
            "pod:shop/web-1:80",
        ] {
            assert!(!watches(no, &key(), Some(&d)), "{no}");
        }
    }

    #[test]
    fn a_policy_shows_with_defaults_filled_in_within_80_columns() {
        let policy: ResiliencePolicy = serde_json::from_value(serde_json::json!({
            "apiVersion": "outrigger.dev/v1alpha1", "kind": "ResiliencePolicy",
            "metadata": {"name": "web-policy", "namespace": "shop", "generation": 3},
            "spec": {"targetRef": {"kind": "Service", "name": "web"}, "retry": {"attempts": 3}}
        }))
        .unwrap();
        let service: Service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"clusterIP": "10.96.0.7", "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}
        }))
        .unwrap();
        let slice: EndpointSlice = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web-1", "namespace": "shop",
                         "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080}],
            "endpoints": [{"addresses": ["10.0.0.5"], "conditions": {"ready": true}}]
        }))
        .unwrap();
        let compiled = compile(std::slice::from_ref(&policy), &[service], &[slice]);
        let text = describe(&key(), &compiled, &[policy]);
        assert!(
            text.contains("ResiliencePolicy shop/web-policy (every port, generation 3)"),
            "{text}"
        );
        assert!(text.contains("http 80→8080"), "{text}");
        assert!(text.contains("10.0.0.5 http=8080"), "{text}");
        assert!(text.contains("attempts: 3"), "{text}");
        // Filled in: the default request timeout and the retry budget.
        assert!(text.contains("request: 15s"), "{text}");
        assert!(text.contains("budget:"), "{text}");
        for l in text.lines() {
            assert!(l.chars().count() <= WIDTH, "{l:?}");
        }
        let missing = describe(
            &ObjectKey {
                namespace: "shop".into(),
                name: "nope".into(),
            },
            &compiled,
            &[],
        );
        assert_eq!(missing, "Service shop/nope not found\n");
    }
}
