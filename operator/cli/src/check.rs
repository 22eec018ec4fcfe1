//! `outrigger check`: the installation, group by group, each line ✔, ‼
//! (works, but will not for long: a certificate near its end, an endpoint
//! this machine cannot reach) or ✘ (broken). A group that cannot be read
//! says so on a ✘ line of its own; the others still run.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams};
use outrigger_api::policy::ResiliencePolicy;
use outrigger_api::sidecar::PROXY_CONTAINER;
use outrigger_operator::admin::ProxiesView;

use crate::certs::{self, Expiry};
use crate::connect::{GlobalArgs, Kube};
use crate::install::{self, Install};
use crate::operator_admin::{self, Replica};
use crate::report::{age, Group};
use crate::tls_probe::{self, ProbeError};

pub const CRD_NAME: &str = "resiliencepolicies.outrigger.dev";
/// The version of the ResiliencePolicy API this CLI (and its operator) reads.
pub const CRD_VERSION: &str = "v1alpha1";

pub async fn run(kube: &Kube, args: &GlobalArgs) -> Vec<Group> {
    let mut groups = Vec::new();
    let mut api = Group::new("Kubernetes API");
    match kube.client.apiserver_version().await {
        Ok(v) => api.ok(format!(
            "{} answers (Kubernetes {}.{})",
            kube.server, v.major, v.minor
        )),
        Err(err) => {
            api.fail(format!("{} does not answer: {err}", kube.server));
            groups.push(api);
            return groups;
        }
    }
    groups.push(api);
    groups.push(crd(kube).await);
    groups.push(policies(kube).await);

    let namespace = &args.operator_namespace;
    let install = match install::discover(kube, namespace).await {
        Ok(install) => install,
        Err(err) => {
            let mut group = Group::new(format!("Operator ({namespace})"));
            group.fail(format!("cannot read the operator's objects: {err}"));
            groups.push(group);
            return groups;
        }
    };
    let (operator, views) = operator(kube, args, &install).await;
    groups.push(operator);
    let secrets = Secrets::read(kube, &install).await;
    groups.push(policy_server(kube, &install, &secrets).await);
    groups.push(webhook(kube, &install, &secrets).await);
    groups.push(certificates(&secrets));
    groups.push(proxies(kube, args, &install, views).await);
    groups
}

async fn crd(kube: &Kube) -> Group {
    let mut group = Group::new("ResiliencePolicy CRD");
    let api: Api<CustomResourceDefinition> = Api::all(kube.client.clone());
    let crd = match api.get_opt(CRD_NAME).await {
        Ok(Some(crd)) => crd,
        Ok(None) => {
            group.fail(format!("CRD {CRD_NAME} is not installed"));
            return group;
        }
        Err(err) => {
            group.fail(format!("cannot read CRD {CRD_NAME}: {err}"));
            return group;
        }
    };
    let established = crd
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "Established" && c.status == "True");
    if established {
        group.ok(format!("{CRD_NAME} is established"));
    } else {
        group.fail(format!("{CRD_NAME} is not established yet"));
    }
    let served: Vec<&str> = crd
        .spec
        .versions
        .iter()
        .filter(|v| v.served)
        .map(|v| v.name.as_str())
        .collect();
    let storage = crd
        .spec
        .versions
        .iter()
        .find(|v| v.storage)
        .map_or("none", |v| v.name.as_str());
    let text = format!("serves {}, stores {storage}", served.join(", "));
    if served.contains(&CRD_VERSION) {
        group.ok(text);
    } else {
        group.fail(format!("{text}: this CLI reads {CRD_VERSION}"));
    }
    group
}

async fn policies(kube: &Kube) -> Group {
    let api: Api<ResiliencePolicy> = Api::all(kube.client.clone());
    match api.list(&ListParams::default()).await {
        Ok(list) => policy_lines(&list.items),
        Err(err) => {
            let mut group = Group::new("Policies");
            group.fail(format!("cannot list ResiliencePolicies: {err}"));
            group
        }
    }
}

/// What the policies' status (written by the operator's leader) says. A
/// policy not programmed is the user's to fix, not a broken install: a
/// warning; one whose status lags its generation has not been seen yet.
fn policy_lines(policies: &[ResiliencePolicy]) -> Group {
    let mut group = Group::new("Policies");
    let key = |p: &ResiliencePolicy| {
        format!(
            "{}/{}",
            p.metadata.namespace.as_deref().unwrap_or_default(),
            p.metadata.name.as_deref().unwrap_or_default()
        )
    };
    let (mut not_programmed, mut unseen) = (Vec::new(), Vec::new());
    for policy in policies {
        let status = policy.status.as_ref();
        let seen = status.and_then(|s| s.observed_generation);
        if seen.is_none() || seen < policy.metadata.generation {
            unseen.push(key(policy));
            continue;
        }
        let condition = |kind: &str| {
            status
                .into_iter()
                .flat_map(|s| &s.conditions)
                .find(|c| c.type_ == kind)
        };
        if condition("Programmed").is_some_and(|c| c.status == "True") {
            continue;
        }
        let reason = ["Accepted", "ResolvedRefs"]
            .into_iter()
            .filter_map(condition)
            .find(|c| c.status != "True")
            .map_or("NotProgrammed".to_string(), |c| c.reason.clone());
        not_programmed.push(format!("{} ({reason})", key(policy)));
    }
    let good = policies.len() - not_programmed.len() - unseen.len();
    group.ok(format!(
        "{good} of {} ResiliencePolicies programmed",
        policies.len()
    ));
    if !not_programmed.is_empty() {
        group.warn(format!(
            "not programmed: {}",
            list_some(not_programmed.iter().map(String::as_str))
        ));
    }
    if !unseen.is_empty() {
        group.warn(format!(
            "status behind the spec (not reconciled yet): {}",
            list_some(unseen.iter().map(String::as_str))
        ));
    }
    group
}

/// The Deployment, the leader, and each replica's admin endpoint; the
/// replicas' `/proxies` for the proxies group.
async fn operator(
    kube: &Kube,
    args: &GlobalArgs,
    install: &Install,
) -> (Group, Result<Vec<(Replica, ProxiesView)>, String>) {
    let mut group = Group::new(format!("Operator ({})", install.namespace));
    match &install.deployment {
        None => group.fail(format!(
            "no operator Deployment (labels {})",
            install::selector("operator")
        )),
        Some(d) => {
            let name = d.metadata.name.clone().unwrap_or_default();
            let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
            let ready = d
                .status
                .as_ref()
                .and_then(|s| s.ready_replicas)
                .unwrap_or(0);
            let text = format!("Deployment {name}: {ready}/{want} replicas ready");
            if ready >= want && ready > 0 {
                group.ok(text);
            } else {
                group.fail(text);
            }
        }
    }

    let leases: Api<Lease> = Api::namespaced(kube.client.clone(), &install.namespace);
    match leases.get_opt(&install.lease_name).await {
        Ok(Some(lease)) => {
            let spec = lease.spec.unwrap_or_default();
            let holder = spec.holder_identity.unwrap_or_default();
            let renewed = spec.renew_time.map(|t| t.0);
            let duration =
                Duration::from_secs(spec.lease_duration_seconds.unwrap_or(0).max(0) as u64);
            let since = renewed.map(since);
            match (holder.is_empty(), renewed, since) {
                (false, Some(renewed), Some(ago)) if renewed + duration > Timestamp::now() => {
                    group.ok(format!("leader: {holder} (lease renewed {} ago)", age(ago)))
                }
                (false, _, Some(ago)) => group.fail(format!(
                    "no leader: {holder} stopped renewing lease {} {} ago",
                    install.lease_name,
                    age(ago)
                )),
                _ => group.fail(format!(
                    "no leader: lease {} is not held",
                    install.lease_name
                )),
            }
        }
        Ok(None) => group.fail(format!("no leader: no lease {}", install.lease_name)),
        Err(err) => group.fail(format!("cannot read lease {}: {err}", install.lease_name)),
    }

    let replicas = match operator_admin::replicas(kube, args, install).await {
        Ok(r) => r,
        Err(err) => {
            group.fail(format!("cannot list the operator's pods: {err}"));
            return (group, Err("the operator's pods could not be listed".into()));
        }
    };
    if replicas.is_empty() {
        group.fail("no running operator pod to ask");
        return (group, Err("no running operator pod".into()));
    }
    let mut views = Vec::new();
    for replica in replicas {
        let ready = operator_admin::get(kube, &replica, "/ready").await;
        let view = operator_admin::proxies(kube, &replica).await;
        match (ready, view) {
            (Ok((200, _)), Ok(view)) => {
                group.ok(format!(
                    "replica {} ready (operator {})",
                    view.replica.clone().unwrap_or_else(|| replica.name()),
                    view.version
                ));
                views.push((replica, view));
            }
            (Err(err), _) => group.fail(format!(
                "replica {} does not answer: {err:#}",
                replica.name()
            )),
            // Ready, but its proxies unreadable (e.g. an operator older
            // than /proxies).
            (Ok((200, _)), Err(err)) => {
                group.fail(format!("replica {}: /proxies: {err:#}", replica.name()))
            }
            (Ok((status, body)), _) => group.fail(format!(
                "replica {} not ready: {status} {}",
                replica.name(),
                body.trim()
            )),
        }
    }
    if views.is_empty() {
        // Without an answer, "no proxy connected" would be a guess.
        return (group, Err("no operator replica answered".into()));
    }
    (group, Ok(views))
}

fn since(t: Timestamp) -> Duration {
    let secs = Timestamp::now().as_second() - t.as_second();
    Duration::from_secs(secs.max(0) as u64)
}

/// The chart's two TLS Secrets, as read (or why not).
struct Secrets {
    policy: Result<Tls, String>,
    webhook: Result<Tls, String>,
    policy_name: String,
    webhook_name: String,
    webhook_enabled: bool,
}

struct Tls {
    ca: Option<Vec<u8>>,
    cert: Vec<u8>,
}

impl Secrets {
    async fn read(kube: &Kube, install: &Install) -> Secrets {
        let api: Api<Secret> = Api::namespaced(kube.client.clone(), &install.namespace);
        let read = |name: String| {
            let api = api.clone();
            async move {
                let secret = api
                    .get_opt(&name)
                    .await
                    .map_err(|e| format!("cannot read secret {name}: {e}"))?
                    .ok_or_else(|| format!("no secret {name}"))?;
                let data = secret.data.unwrap_or_default();
                let cert = data
                    .get("tls.crt")
                    .ok_or_else(|| format!("secret {name} has no tls.crt"))?
                    .0
                    .clone();
                Ok(Tls {
                    ca: data.get("ca.crt").map(|b| b.0.clone()),
                    cert,
                })
            }
        };
        Secrets {
            policy: read(install.policy_secret.clone()).await,
            webhook: read(install.webhook_secret.clone()).await,
            policy_name: format!("{}/{}", install.namespace, install.policy_secret),
            webhook_name: format!("{}/{}", install.namespace, install.webhook_secret),
            webhook_enabled: install.webhook_enabled,
        }
    }
}

async fn policy_server(kube: &Kube, install: &Install, secrets: &Secrets) -> Group {
    let mut group = Group::new("Policy server");
    let service = match install::service(kube, &install.namespace, "policy-server").await {
        Ok(Some(s)) => s,
        Ok(None) => {
            group.fail("no policy server Service");
            return group;
        }
        Err(err) => {
            group.fail(format!("cannot read the policy server Service: {err}"));
            return group;
        }
    };
    let name = service.metadata.name.clone().unwrap_or_default();
    let port = first_port(&service);
    let endpoints = match install::ready_endpoints(kube, &service, port).await {
        Ok(e) => e,
        Err(err) => {
            group.fail(format!("cannot read Service {name}'s endpoints: {err}"));
            return group;
        }
    };
    if endpoints.is_empty() {
        group.fail(format!("Service {name} has no ready endpoint"));
        return group;
    }
    group.ok(format!(
        "Service {name}: {} ready endpoint(s)",
        endpoints.len()
    ));
    let host = install.policy_host.clone().unwrap_or_else(|| {
        format!(
            "{name}.{}.svc.{}",
            install.namespace, install.cluster_domain
        )
    });
    match &secrets.policy {
        Ok(Tls { ca: Some(ca), .. }) => {
            for endpoint in &endpoints {
                probe_line(&mut group, endpoint, &host, ca, kube.timeout, "its CA").await;
            }
        }
        Ok(Tls { ca: None, .. }) => group.warn(format!(
            "secret {} has no ca.crt: proxies' trust not checked",
            secrets.policy_name
        )),
        Err(err) => group.fail(err.clone()),
    }
    group
}

/// A ✔/✘/‼ line from a TLS handshake with `endpoint` trusting `ca`.
async fn probe_line(
    group: &mut Group,
    endpoint: &str,
    host: &str,
    ca: &[u8],
    timeout: Duration,
    trusted: &str,
) {
    match tls_probe::probe(endpoint, host, ca, timeout).await {
        Ok(()) => group.ok(format!(
            "{endpoint} serves a certificate {trusted} verifies for {host}"
        )),
        Err(ProbeError::Unreachable(why)) => group.warn(format!(
            "{endpoint} not reachable from here ({why}): served certificate not checked"
        )),
        Err(ProbeError::Handshake(why)) => group.fail(format!(
            "{endpoint}: TLS handshake for {host} failed: {why}"
        )),
    }
}

fn first_port(service: &k8s_openapi::api::core::v1::Service) -> i32 {
    service
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .and_then(|p| p.first())
        .map_or(0, |p| p.port)
}

async fn webhook(kube: &Kube, install: &Install, secrets: &Secrets) -> Group {
    let mut group = Group::new("Injection webhook");
    let api: Api<MutatingWebhookConfiguration> = Api::all(kube.client.clone());
    let configs = match api
        .list(&ListParams::default().labels(&install::selector("webhook")))
        .await
    {
        Ok(list) => list.items,
        Err(err) => {
            group.fail(format!("cannot list MutatingWebhookConfigurations: {err}"));
            return group;
        }
    };
    let Some(config) = configs.into_iter().next() else {
        if install.webhook_enabled {
            group.fail("no MutatingWebhookConfiguration of Outrigger");
        } else {
            group.ok("injection is off in this install (injector.enabled=false)");
        }
        return group;
    };
    let config_name = config.metadata.name.clone().unwrap_or_default();
    let webhooks = config.webhooks.unwrap_or_default();
    group.ok(format!("{config_name}: {} webhook(s)", webhooks.len()));
    // Each distinct (Service, caBundle) once: the chart's webhooks share both.
    let mut seen = BTreeSet::new();
    for hook in &webhooks {
        let Some(service) = hook.client_config.service.as_ref() else {
            group.warn(format!(
                "{}: calls a URL, not a Service: not checked",
                hook.name
            ));
            continue;
        };
        let bundle = hook.client_config.ca_bundle.as_ref().map(|b| b.0.clone());
        if !seen.insert((
            service.namespace.clone(),
            service.name.clone(),
            bundle.clone(),
        )) {
            continue;
        }
        let host = format!("{}.{}.svc", service.name, service.namespace);
        let Some(bundle) = bundle.filter(|b| !b.is_empty()) else {
            group.fail(format!(
                "{}: no caBundle: the API server cannot trust it",
                hook.name
            ));
            continue;
        };
        match &secrets.webhook {
            Ok(tls) => match certs::verify(&bundle, &tls.cert, &host, SystemTime::now()) {
                Ok(()) => group.ok(format!(
                    "caBundle verifies the certificate in secret {} for {host}",
                    secrets.webhook_name
                )),
                Err(err) => group.fail(format!(
                    "caBundle does not verify the certificate in secret {} for {host}: {err}",
                    secrets.webhook_name
                )),
            },
            Err(err) => group.fail(err.clone()),
        }
        let services: Api<k8s_openapi::api::core::v1::Service> =
            Api::namespaced(kube.client.clone(), &service.namespace);
        match services.get_opt(&service.name).await {
            Ok(Some(svc)) => {
                let port = service.port.unwrap_or(443);
                match install::ready_endpoints(kube, &svc, port).await {
                    Ok(endpoints) if endpoints.is_empty() => {
                        group.fail(format!("Service {host} has no ready endpoint"))
                    }
                    Ok(endpoints) => {
                        for endpoint in &endpoints {
                            probe_line(
                                &mut group,
                                endpoint,
                                &host,
                                &bundle,
                                kube.timeout,
                                "the caBundle",
                            )
                            .await;
                        }
                    }
                    Err(err) => group.fail(format!("cannot read {host}'s endpoints: {err}")),
                }
            }
            Ok(None) => group.fail(format!("the webhook's Service {host} does not exist")),
            Err(err) => group.fail(format!("cannot read Service {host}: {err}")),
        }
    }
    group
}

fn certificates(secrets: &Secrets) -> Group {
    let mut group = Group::new("Certificates");
    let mut servers = vec![("policy server", &secrets.policy, &secrets.policy_name)];
    if secrets.webhook_enabled {
        servers.push(("webhook", &secrets.webhook, &secrets.webhook_name));
    }
    for (what, tls, name) in servers {
        let Ok(tls) = tls else {
            group.fail(format!("{what}: secret {name} not read"));
            continue;
        };
        let mut pems = vec![("certificate", tls.cert.as_slice())];
        if let Some(ca) = &tls.ca {
            pems.push(("CA", ca.as_slice()));
        }
        for (kind, pem) in pems {
            match certs::validity(pem) {
                Ok(all) => {
                    if let Some(first) = all.first() {
                        expiry_line(&mut group, &format!("{what} {kind}"), first);
                    }
                }
                Err(err) => group.fail(format!("{what} {kind} in {name}: {err}")),
            }
        }
    }
    group
}

fn expiry_line(group: &mut Group, what: &str, validity: &certs::Validity) {
    let until = certs::date(validity.not_after);
    match certs::expiry(validity, SystemTime::now()) {
        Expiry::Valid(left) => group.ok(format!("{what} valid until {until} ({})", age(left))),
        Expiry::ExpiresSoon(left) => group.warn(format!(
            "{what} expires in {} ({until}): renew it",
            age(left)
        )),
        Expiry::Expired(ago) => group.fail(format!("{what} expired {} ago ({until})", age(ago))),
        Expiry::NotYetValid => group.fail(format!(
            "{what} not valid before {}",
            certs::date(validity.not_before)
        )),
    }
}

/// A proxy's subscriptions that are not on the latest snapshot:
/// (proxy, subscription, what the latest carries, latest version).
type Stale = Vec<(String, String, String, u64)>;

fn stale(views: &[(Replica, ProxiesView)]) -> Stale {
    views
        .iter()
        .flat_map(|(_, v)| &v.proxies)
        .flat_map(|p| {
            p.subscriptions.iter().filter(|s| !s.current).map(|s| {
                // Versions are the operator's counters: the policy and its
                // generation say more to a reader.
                let carries = match (&s.policy, s.generation) {
                    (Some(policy), Some(g)) => format!("{policy}@{g}"),
                    (Some(policy), None) => policy.clone(),
                    (None, _) => "latest snapshot".into(),
                };
                (p.proxy.clone(), s.subscription.clone(), carries, s.latest)
            })
        })
        .collect()
}

async fn proxies(
    kube: &Kube,
    args: &GlobalArgs,
    install: &Install,
    views: Result<Vec<(Replica, ProxiesView)>, String>,
) -> Group {
    let mut group = Group::new("Proxies");
    let views = match views {
        Ok(v) => v,
        Err(why) => {
            group.fail(format!("connected proxies unknown: {why}"));
            return group;
        }
    };
    let connected: BTreeSet<String> = views
        .iter()
        .flat_map(|(_, v)| v.proxies.iter().map(|p| p.proxy.clone()))
        .collect();
    let pods: Api<Pod> = Api::all(kube.client.clone());
    match pods.list(&ListParams::default()).await {
        Ok(list) => {
            let injected: Vec<String> = list
                .items
                .iter()
                .filter(|p| is_injected(p) && phase(p) == "Running")
                .map(|p| {
                    format!(
                        "{}/{}",
                        p.metadata.namespace.clone().unwrap_or_default(),
                        p.metadata.name.clone().unwrap_or_default()
                    )
                })
                .collect();
            // A proxy's id is its pod's name (the webhook sets POD_NAME).
            let missing: Vec<&String> = injected
                .iter()
                .filter(|p| !connected.contains(p.rsplit('/').next().unwrap_or(p)))
                .collect();
            if missing.is_empty() {
                group.ok(format!(
                    "{} proxies connected, {} injected pod(s) running",
                    connected.len(),
                    injected.len()
                ));
            } else {
                group.fail(format!(
                    "{} injected pod(s) running without a connected proxy: {}",
                    missing.len(),
                    list_some(missing.iter().map(|s| s.as_str()))
                ));
            }
        }
        Err(err) => group.fail(format!("cannot list pods: {err}")),
    }

    let first = stale(&views);
    if first.is_empty() {
        group.ok("every connected proxy applied the latest policy");
        return group;
    }
    // A proxy acknowledges a change within moments: ask again before
    // calling it stale, and count only what is still behind the same way.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut again = Vec::new();
    if let Ok(replicas) = operator_admin::replicas(kube, args, install).await {
        for replica in replicas {
            if let Ok(view) = operator_admin::proxies(kube, &replica).await {
                again.push((replica, view));
            }
        }
    }
    let still: BTreeMap<(String, String), String> = stale(&again)
        .into_iter()
        .filter(|s| first.contains(s))
        .map(|(p, s, carries, _)| ((p, s), carries))
        .collect();
    if still.is_empty() {
        group.ok("every connected proxy applied the latest policy");
    } else {
        let proxies: BTreeSet<&str> = still.keys().map(|(p, _)| p.as_str()).collect();
        let detail = still
            .iter()
            .map(|((p, s), carries)| format!("{p} {s} ({carries} not applied)"));
        group.fail(format!(
            "{} proxy(ies) on stale policy: {}",
            proxies.len(),
            list_some(detail.collect::<Vec<_>>().iter().map(String::as_str))
        ));
    }
    group
}

fn is_injected(pod: &Pod) -> bool {
    pod.spec.as_ref().is_some_and(|spec| {
        spec.containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
            .any(|c| c.name == PROXY_CONTAINER)
    })
}

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

/// The first few items, comma-separated, and how many more.
fn list_some<'a>(items: impl Iterator<Item = &'a str>) -> String {
    let items: Vec<&str> = items.collect();
    let shown = items.iter().take(5).copied().collect::<Vec<_>>().join(", ");
    match items.len() {
        n if n > 5 => format!("{shown} and {} more", n - 5),
        _ => shown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lists_are_cut() {
        let items = ["a", "b", "c", "d", "e", "f", "g"];
        assert_eq!(list_some(items.iter().copied()), "a, b, c, d, e and 2 more");
        assert_eq!(list_some(items[..2].iter().copied()), "a, b");
    }

    fn policy(name: &str, generation: i64, status: serde_json::Value) -> ResiliencePolicy {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "outrigger.dev/v1alpha1", "kind": "ResiliencePolicy",
            "metadata": {"name": name, "namespace": "shop", "generation": generation},
            "spec": {"targetRef": {"kind": "Service", "name": name}},
            "status": status,
        }))
        .unwrap()
    }

    #[test]
    fn policies_not_programmed_or_not_reconciled_warn() {
        let condition = |kind: &str, ok: bool, reason: &str| {
            serde_json::json!({"type": kind, "status": if ok { "True" } else { "False" },
                               "reason": reason, "message": ""})
        };
        let programmed = policy(
            "web",
            2,
            serde_json::json!({"observedGeneration": 2, "conditions": [
                condition("Accepted", true, "Accepted"),
                condition("ResolvedRefs", true, "ResolvedRefs"),
                condition("Programmed", true, "Programmed")]}),
        );
        let orphan = policy(
            "gone",
            1,
            serde_json::json!({"observedGeneration": 1, "conditions": [
                condition("Accepted", true, "Accepted"),
                condition("ResolvedRefs", false, "ServiceNotFound"),
                condition("Programmed", false, "NotProgrammed")]}),
        );
        let edited = policy("new", 3, serde_json::json!({"observedGeneration": 2}));
        let group = policy_lines(std::slice::from_ref(&programmed));
        assert_eq!(group.lines.len(), 1);
        assert_eq!(group.lines[0].text, "1 of 1 ResiliencePolicies programmed");
        assert_eq!(crate::report::worst(&[group]), crate::report::Status::Ok);
        let group = policy_lines(&[programmed, orphan, edited]);
        let texts: Vec<&str> = group.lines.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(
            texts,
            [
                "1 of 3 ResiliencePolicies programmed",
                "not programmed: shop/gone (ServiceNotFound)",
                "status behind the spec (not reconciled yet): shop/new",
            ]
        );
        assert_eq!(crate::report::worst(&[group]), crate::report::Status::Warn);
    }

    #[test]
    fn pods_with_the_proxy_container_are_injected() {
        let pod = |init: &str, main: &str| -> Pod {
            serde_json::from_value(serde_json::json!({
                "spec": {
                    "initContainers": [{"name": init}],
                    "containers": [{"name": main}]
                }
            }))
            .unwrap()
        };
        assert!(is_injected(&pod(PROXY_CONTAINER, "app")), "native sidecar");
        assert!(is_injected(&pod("x", PROXY_CONTAINER)), "first container");
        assert!(!is_injected(&pod("x", "app")));
    }
}
