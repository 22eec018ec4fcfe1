//! From what the cluster holds (policies, Services, EndpointSlices and Gateway
//! API routes) to what the proxies need (one effective policy per destination
//! Service port with its ready endpoints) and what each policy's and route's
//! status should say. Pure: no I/O, so every rule is unit-tested.
//!
//! Routes are translated and attached by `outrigger_api::gateway` (shared with
//! the proxy's file mode); here their rules are composed, per Service port,
//! with the policy `semantics::select` picks for that port, so a Service with
//! only an HTTPRoute gets a policy too.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use outrigger_api::gateway::{
    self, RouteObject, RouteVerdict, ServiceLookup, ServicePortInfo, TrafficPolicy,
};
use outrigger_api::policy::{ResiliencePolicy, ResiliencePolicySpec, RetryBudget};
use outrigger_api::semantics::{self, Claim, Standing};
use outrigger_api::validate::validate_spec;
use serde::Serialize;

/// A namespaced name; serialized as `namespace/name` (it keys JSON maps).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    pub namespace: String,
    pub name: String,
}

impl Serialize for ObjectKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// A Service port; its endpoint port is a number, or resolved through the
/// EndpointSlice port of the same name (the proxy's file mode reads Service
/// documents into the same type, by the same rules).
pub use outrigger_api::semantics::ServicePort;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Endpoint {
    pub ip: String,
    /// Port name → port number, from the EndpointSlice.
    pub ports: BTreeMap<String, u16>,
}

/// One Service as the proxies see it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Destination {
    pub cluster_ips: Vec<String>,
    pub ports: Vec<ServicePort>,
    /// Ready endpoints only.
    pub endpoints: Vec<Endpoint>,
    /// Every pod the EndpointSlices list for this Service (by `targetRef`),
    /// ready or not: pod name → its ports by name. A pod's proxy finds its
    /// inbound policy through this before and while the pod is ready.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub pods: BTreeMap<String, BTreeMap<String, u16>>,
    /// Accepted policies for this Service: at most one without a port, and at
    /// most one per port. A port with Gateway API routes has its own entry:
    /// the composed spec.
    pub policies: Vec<AppliedPolicy>,
    /// Gateway API routes attached to this Service ("HTTPRoute ns/name").
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<String>,
    /// The BackendTrafficPolicy whose retry budget the Service's policies
    /// carry where they set none ("XBackendTrafficPolicy ns/name").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_budget_from: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AppliedPolicy {
    /// The ResiliencePolicy; none when only Gateway API routes make the spec.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<ObjectKey>,
    pub generation: Option<i64>,
    pub port: Option<u16>,
    pub spec: ResiliencePolicySpec,
    /// The Gateway API routes composed into `spec` on this port.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<String>,
}

/// metadata.name of the spec a Service gets from its routes alone (no
/// ResiliencePolicy selected for the port): the name the proxy's file mode
/// gives it too (outrigger_proxy_policy::gateway_routes::ROUTES_ONLY_NAME).
pub const ROUTES_ONLY_NAME: &str = "gateway-api-routes";

impl AppliedPolicy {
    /// The name proxies get in their snapshot (and ack): the policy's
    /// `namespace/name`, else `namespace/gateway-api-routes`.
    pub fn snapshot_name(&self, namespace: &str) -> String {
        match &self.policy {
            Some(key) => key.to_string(),
            None => format!("{namespace}/{ROUTES_ONLY_NAME}"),
        }
    }
}

/// A status condition's content (Gateway API style).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConditionState {
    pub status: bool,
    pub reason: &'static str,
    pub message: String,
}

/// What a policy's status should say.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Verdict {
    pub generation: Option<i64>,
    pub accepted: ConditionState,
    pub resolved_refs: ConditionState,
    /// Gateway API routes attached to the target Service ("HTTPRoute
    /// ns/name"), for `status.routes`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<String>,
}

impl Verdict {
    /// Whether proxies receive this policy.
    pub fn is_programmed(&self) -> bool {
        self.accepted.status && self.resolved_refs.status
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Compiled {
    pub destinations: BTreeMap<ObjectKey, Destination>,
    pub verdicts: BTreeMap<ObjectKey, Verdict>,
    /// One per route with a Service parentRef (status.parents of ours).
    #[serde(skip)]
    pub route_verdicts: Vec<RouteVerdict>,
    /// Each BackendTrafficPolicy's standing per targeted Service: (policy,
    /// Service, Accepted). Shown in /view; not written to its status yet.
    #[serde(skip)]
    pub budget_verdicts: Vec<(String, String, gateway::Verdict)>,
}

/// "HTTPRoute ns/name" of each route a rule came from ("... rule 0"), sorted,
/// once each.
fn sources_of(routes: &[outrigger_api::policy::Route]) -> Vec<String> {
    let mut sources: Vec<String> = routes
        .iter()
        .filter_map(|r| r.source.as_deref())
        .map(|s| {
            s.rsplit_once(" rule ")
                .map_or(s, |(route, _)| route)
                .to_string()
        })
        .collect();
    sources.sort();
    sources.dedup();
    sources
}

/// Service lookups for the route translation, from the compiled destinations.
struct DestinationPorts<'a>(&'a BTreeMap<ObjectKey, Destination>);

impl gateway::Services for DestinationPorts<'_> {
    fn lookup(&self, namespace: &str, name: &str) -> ServiceLookup {
        let key = ObjectKey {
            namespace: namespace.into(),
            name: name.into(),
        };
        match self.0.get(&key) {
            Some(d) => ServiceLookup::Ports(
                d.ports
                    .iter()
                    .map(|p| ServicePortInfo {
                        port: p.port,
                        name: (!p.name.is_empty()).then(|| p.name.clone()),
                    })
                    .collect(),
            ),
            None => ServiceLookup::NotFound,
        }
    }
}

fn key_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> ObjectKey {
    ObjectKey {
        namespace: meta.namespace.clone().unwrap_or_else(|| "default".into()),
        name: meta.name.clone().unwrap_or_default(),
    }
}

/// Without Gateway API routes.
pub fn compile(
    policies: &[ResiliencePolicy],
    services: &[Service],
    slices: &[EndpointSlice],
) -> Compiled {
    compile_with_routes(policies, services, slices, &[])
}

/// Without BackendTrafficPolicies.
pub fn compile_with_routes(
    policies: &[ResiliencePolicy],
    services: &[Service],
    slices: &[EndpointSlice],
    routes: &[RouteObject],
) -> Compiled {
    compile_gateway(policies, services, slices, routes, &[])
}

/// Policies, Services and EndpointSlices, with Gateway API routes composed
/// in and BackendTrafficPolicies' retry budgets (`gateway::budgets`).
pub fn compile_gateway(
    policies: &[ResiliencePolicy],
    services: &[Service],
    slices: &[EndpointSlice],
    routes: &[RouteObject],
    traffic: &[TrafficPolicy],
) -> Compiled {
    let mut destinations: BTreeMap<ObjectKey, Destination> = services
        .iter()
        .map(|service| (key_of(&service.metadata), destination(service)))
        .collect();
    attach_endpoints(&mut destinations, slices);

    // In the conflict rule's order (oldest, then by namespace/name), so the
    // view is the same whatever order the cache lists policies in.
    let mut ordered: Vec<&ResiliencePolicy> = policies.iter().collect();
    ordered.sort_by(|a, b| {
        let age = |p: &ResiliencePolicy| p.metadata.creation_timestamp.clone().map(|t| t.0);
        age(a)
            .cmp(&age(b))
            .then_with(|| key_of(&a.metadata).cmp(&key_of(&b.metadata)))
    });
    let keys: Vec<ObjectKey> = ordered.iter().map(|p| key_of(&p.metadata)).collect();
    let validity: Vec<Result<(), String>> = ordered
        .iter()
        .map(|p| validate_spec(&p.spec).map_err(|e| e.to_string().replace('\n', "; ")))
        .collect();
    // The conflict rule, shared with the proxy's file mode; only valid
    // policies claim their target.
    let valid: Vec<usize> = (0..ordered.len())
        .filter(|&i| validity[i].is_ok())
        .collect();
    let claims: Vec<Claim<'_, _>> = valid
        .iter()
        .map(|&i| Claim {
            namespace: &keys[i].namespace,
            name: &keys[i].name,
            created: ordered[i].metadata.creation_timestamp.as_ref().map(|t| t.0),
            target: &ordered[i].spec.target_ref,
        })
        .collect();
    let standings: BTreeMap<usize, Standing> = valid
        .iter()
        .copied()
        .zip(semantics::arbitrate(&claims))
        .collect();

    let mut verdicts = BTreeMap::new();
    // Programmed policies' specs before defaults: what `gateway::compose`
    // takes (defaults run once, on the composed spec).
    let mut raw_specs: BTreeMap<ObjectKey, &ResiliencePolicySpec> = BTreeMap::new();
    let policies_by_key: BTreeMap<ObjectKey, String> = ordered
        .iter()
        .map(|p| (key_of(&p.metadata), p.spec.target_ref.name.clone()))
        .collect();
    for (i, policy) in ordered.into_iter().enumerate() {
        let key = keys[i].clone();
        let target = ObjectKey {
            namespace: key.namespace.clone(),
            name: policy.spec.target_ref.name.clone(),
        };
        let port = policy.spec.target_ref.port;
        let accepted = match (&validity[i], standings.get(&i)) {
            (Err(errors), _) => ConditionState {
                status: false,
                reason: "Invalid",
                message: errors.clone(),
            },
            (Ok(()), Some(Standing::Conflicted { winner })) => ConditionState {
                status: false,
                reason: "Conflicted",
                message: format!(
                    "policy {} already targets Service {target}{}; the oldest policy wins (then the first by namespace/name)",
                    keys[valid[*winner]],
                    port.map(|p| format!(" port {p}")).unwrap_or_default()
                ),
            },
            (Ok(()), _) => ConditionState {
                status: true,
                reason: "Accepted",
                message: "policy is valid and the only one on its target".into(),
            },
        };
        let resolved_refs = resolve(&destinations, &target, port);
        let verdict = Verdict {
            generation: policy.metadata.generation,
            accepted,
            resolved_refs,
            routes: Vec::new(),
        };
        if verdict.is_programmed() {
            if let Some(destination) = destinations.get_mut(&target) {
                destination.policies.push(AppliedPolicy {
                    policy: Some(key.clone()),
                    generation: policy.metadata.generation,
                    port,
                    spec: semantics::with_defaults(&policy.spec),
                    routes: Vec::new(),
                });
                raw_specs.insert(key.clone(), &policy.spec);
            }
        }
        verdicts.insert(key, verdict);
    }

    let attachment = gateway::attach(routes, &DestinationPorts(&destinations));
    let budgets = gateway::budgets(traffic, &DestinationPorts(&destinations));
    for (key, destination) in destinations.iter_mut() {
        let budget = budgets.for_service(&key.namespace, &key.name);
        if let Some(budget) = budget {
            // Every policy of the Service carries it (it applies where the
            // policy sets no retry budget); ports with routes are composed
            // again below, with it.
            for applied in destination.policies.iter_mut() {
                let raw = applied
                    .policy
                    .as_ref()
                    .and_then(|k| raw_specs.get(k).copied());
                if let Some(spec) = gateway::compose(raw, &key.name, Vec::new(), Some(budget)) {
                    applied.spec = semantics::with_defaults(&spec);
                }
            }
            destination.retry_budget_from = budgets
                .holder(&key.namespace, &key.name)
                .map(str::to_string);
        }
        let sources = attachment.sources_for(&key.namespace, &key.name);
        if sources.is_empty() {
            continue;
        }
        compose_routes(key, destination, &attachment, &raw_specs, budget);
        destination.routes = sources;
    }
    for (key, verdict) in verdicts.iter_mut() {
        if verdict.resolved_refs.status {
            let target = &policies_by_key[key];
            verdict.routes = attachment.sources_for(&key.namespace, target);
        }
    }
    Compiled {
        destinations,
        verdicts,
        route_verdicts: attachment.verdicts,
        budget_verdicts: budgets.verdicts,
    }
}

/// Per Service port with attached routes: the spec composed from the policy
/// selected for that port (if any) and the routes, replacing that port's own
/// entry. Ports without routes keep the policies as they are. Rules whose
/// parentRef names no port also replace the portless entry (composed with
/// the portless policy), for ports the Service does not declare, as the
/// proxy's file mode composes its "other ports".
fn compose_routes(
    key: &ObjectKey,
    destination: &mut Destination,
    attachment: &gateway::Attachment,
    raw_specs: &BTreeMap<ObjectKey, &ResiliencePolicySpec>,
    budget: Option<&RetryBudget>,
) {
    let raw_of = |applied: Option<&AppliedPolicy>| {
        applied
            .and_then(|p| p.policy.as_ref())
            .and_then(|k| raw_specs.get(k).copied())
    };
    let compose = |selected: Option<&AppliedPolicy>, port: Option<u16>, routes: Vec<_>| {
        let sources = sources_of(&routes);
        let spec = gateway::compose(raw_of(selected), &key.name, routes, budget)?;
        Some(AppliedPolicy {
            policy: selected.and_then(|p| p.policy.clone()),
            generation: selected.and_then(|p| p.generation),
            port,
            spec: semantics::with_defaults(&spec),
            routes: sources,
        })
    };
    let mut composed = Vec::new();
    let portless_rules: Vec<_> = attachment
        .services
        .get(&(key.namespace.clone(), key.name.clone()))
        .into_iter()
        .flatten()
        .filter(|rule| rule.port.is_none())
        .map(|rule| rule.route.clone())
        .collect();
    if !portless_rules.is_empty() {
        let portless = destination.policies.iter().find(|p| p.port.is_none());
        composed.extend(compose(portless, None, portless_rules));
    }
    for port in destination.ports.iter().map(|p| p.port) {
        let routes = attachment.routes_for(&key.namespace, &key.name, port);
        if routes.is_empty() {
            continue;
        }
        let selected = semantics::select(destination.policies.iter().map(|p| (p.port, p)), port);
        composed.extend(compose(selected, Some(port), routes));
    }
    for applied in composed {
        destination.policies.retain(|p| p.port != applied.port);
        destination.policies.push(applied);
    }
}

fn resolve(
    destinations: &BTreeMap<ObjectKey, Destination>,
    target: &ObjectKey,
    port: Option<u16>,
) -> ConditionState {
    match destinations.get(target) {
        None => ConditionState {
            status: false,
            reason: "ServiceNotFound",
            message: format!("Service {target} does not exist"),
        },
        Some(d) if port.is_some_and(|p| !d.ports.iter().any(|sp| sp.port == p)) => ConditionState {
            status: false,
            reason: "PortNotFound",
            message: format!(
                "Service {target} has no port {}",
                port.expect("checked above")
            ),
        },
        Some(_) => ConditionState {
            status: true,
            reason: "ResolvedRefs",
            message: format!("Service {target} exists"),
        },
    }
}

fn destination(service: &Service) -> Destination {
    let spec = service.spec.clone().unwrap_or_default();
    let cluster_ips = spec
        .cluster_ips
        .clone()
        .or_else(|| spec.cluster_ip.clone().map(|ip| vec![ip]))
        .unwrap_or_default()
        .into_iter()
        .filter(|ip| ip != "None" && !ip.is_empty())
        .collect();
    let ports = spec
        .ports
        .unwrap_or_default()
        .into_iter()
        .filter_map(|p| {
            let port = u16::try_from(p.port).ok()?;
            // A named target port is resolved per endpoint from the slice.
            let target = p
                .target_port
                .as_ref()
                .and_then(|t| serde_json::to_value(t).ok());
            Some(ServicePort {
                name: p.name.unwrap_or_default(),
                port,
                target_port: semantics::target_port(port, target.as_ref()),
            })
        })
        .collect();
    Destination {
        cluster_ips,
        ports,
        endpoints: Vec::new(),
        pods: BTreeMap::new(),
        policies: Vec::new(),
        routes: Vec::new(),
        retry_budget_from: None,
    }
}

const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

fn attach_endpoints(destinations: &mut BTreeMap<ObjectKey, Destination>, slices: &[EndpointSlice]) {
    for slice in slices {
        let Some(service) = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL))
        else {
            continue;
        };
        let key = ObjectKey {
            namespace: slice
                .metadata
                .namespace
                .clone()
                .unwrap_or_else(|| "default".into()),
            name: service.clone(),
        };
        let Some(destination) = destinations.get_mut(&key) else {
            continue;
        };
        let ports: BTreeMap<String, u16> = slice
            .ports
            .iter()
            .flatten()
            .filter_map(|p| {
                Some((
                    p.name.clone().unwrap_or_default(),
                    u16::try_from(p.port?).ok()?,
                ))
            })
            .collect();
        for endpoint in &slice.endpoints {
            let pod = endpoint
                .target_ref
                .as_ref()
                .filter(|r| r.kind.as_deref() == Some("Pod"))
                .and_then(|r| r.name.clone());
            if let Some(pod) = pod {
                destination
                    .pods
                    .entry(pod)
                    .or_default()
                    .extend(ports.iter().map(|(name, port)| (name.clone(), *port)));
            }
            // Kubernetes treats an unset ready condition as ready.
            let ready = endpoint
                .conditions
                .as_ref()
                .and_then(|c| c.ready)
                .unwrap_or(true);
            if !ready {
                continue;
            }
            for ip in &endpoint.addresses {
                destination.endpoints.push(Endpoint {
                    ip: ip.clone(),
                    ports: ports.clone(),
                });
            }
        }
    }
    for destination in destinations.values_mut() {
        destination
            .endpoints
            .sort_by(|a, b| (&a.ip, &a.ports).cmp(&(&b.ip, &b.ports)));
        destination.endpoints.dedup();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn policy(
        name: &str,
        target: &str,
        created: &str,
        extra: serde_json::Value,
    ) -> ResiliencePolicy {
        let mut spec = json!({"targetRef": {"kind": "Service", "name": target}});
        if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
            spec.extend(extra.clone());
        }
        serde_json::from_value(json!({
            "apiVersion": "outrigger.dev/v1alpha1", "kind": "ResiliencePolicy",
            "metadata": {"name": name, "namespace": "shop", "generation": 3,
                         "creationTimestamp": created},
            "spec": spec
        }))
        .unwrap()
    }

    fn service(name: &str) -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "shop"},
            "spec": {"clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
                     "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}
        }))
        .unwrap()
    }

    fn slice(service: &str, endpoints: serde_json::Value) -> EndpointSlice {
        serde_json::from_value(json!({
            "metadata": {"name": format!("{service}-abc"), "namespace": "shop",
                         "labels": {"kubernetes.io/service-name": service}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080}],
            "endpoints": endpoints
        }))
        .unwrap()
    }

    const T1: &str = "2026-01-01T00:00:00Z";
    const T2: &str = "2026-01-02T00:00:00Z";

    #[test]
    fn compiles_policy_with_defaults_and_ready_endpoints() {
        let compiled = compile(
            &[policy(
                "payments",
                "payments",
                T1,
                json!({"retry": {"attempts": 3}}),
            )],
            &[service("payments")],
            &[slice(
                "payments",
                json!([{"addresses": ["10.0.0.1"], "conditions": {"ready": true}},
                       {"addresses": ["10.0.0.2"], "conditions": {"ready": false}},
                       {"addresses": ["10.0.0.3"]}]),
            )],
        );
        let key = ObjectKey {
            namespace: "shop".into(),
            name: "payments".into(),
        };
        let d = &compiled.destinations[&key];
        assert_eq!(d.cluster_ips, vec!["10.96.0.10"]);
        assert_eq!(d.ports[0].target_port, Some(8080));
        let ips: Vec<_> = d.endpoints.iter().map(|e| e.ip.as_str()).collect();
        assert_eq!(ips, vec!["10.0.0.1", "10.0.0.3"]);
        let retry = d.policies[0].spec.retry.as_ref().unwrap();
        assert_eq!(retry.attempts, Some(3));
        assert_eq!(retry.codes, Some(vec![502, 503, 504]), "defaults filled in");
        let v = &compiled.verdicts[&key];
        assert!(v.is_programmed());
        assert_eq!(v.generation, Some(3));
    }

    #[test]
    fn oldest_policy_wins_a_conflict() {
        let compiled = compile(
            &[
                policy("newer", "payments", T2, json!({})),
                policy("older", "payments", T1, json!({})),
            ],
            &[service("payments")],
            &[],
        );
        let verdict = |name: &str| {
            compiled.verdicts[&ObjectKey {
                namespace: "shop".into(),
                name: name.into(),
            }]
                .clone()
        };
        assert_eq!(verdict("older").accepted.reason, "Accepted");
        let newer = verdict("newer");
        assert_eq!(
            (newer.accepted.status, newer.accepted.reason),
            (false, "Conflicted")
        );
        assert!(newer
            .accepted
            .message
            .contains("policy shop/older already targets Service shop/payments"));
        let d = compiled.destinations.values().next().unwrap();
        assert_eq!(d.policies.len(), 1);
        assert_eq!(d.policies[0].policy.as_ref().unwrap().name, "older");
    }

    #[test]
    fn port_specific_policy_does_not_conflict_with_portless() {
        let compiled = compile(
            &[
                policy("all", "payments", T1, json!({})),
                policy(
                    "http",
                    "payments",
                    T2,
                    json!({"targetRef": {"kind": "Service", "name": "payments", "port": 80}}),
                ),
                policy(
                    "bad-port",
                    "payments",
                    T2,
                    json!({"targetRef": {"kind": "Service", "name": "payments", "port": 81}}),
                ),
            ],
            &[service("payments")],
            &[],
        );
        let programmed: Vec<_> = compiled
            .verdicts
            .iter()
            .filter(|(_, v)| v.is_programmed())
            .map(|(k, _)| k.name.as_str())
            .collect();
        assert_eq!(programmed, vec!["all", "http"]);
        let bad = &compiled.verdicts[&ObjectKey {
            namespace: "shop".into(),
            name: "bad-port".into(),
        }];
        assert_eq!(bad.resolved_refs.reason, "PortNotFound");
    }

    #[test]
    fn missing_service_is_unresolved_and_recovers() {
        let policies = [policy("payments", "payments", T1, json!({}))];
        let key = ObjectKey {
            namespace: "shop".into(),
            name: "payments".into(),
        };
        let without = compile(&policies, &[], &[]);
        let v = &without.verdicts[&key];
        assert!(v.accepted.status);
        assert_eq!(
            (v.resolved_refs.status, v.resolved_refs.reason),
            (false, "ServiceNotFound")
        );
        assert!(without.destinations.is_empty());
        let with = compile(&policies, &[service("payments")], &[]);
        assert!(with.verdicts[&key].is_programmed());
    }

    /// A route field the CRD now refuses, in a policy stored before it did:
    /// Invalid, with the message the API server and the proxy's file mode give.
    #[test]
    fn a_route_with_a_per_service_field_is_invalid() {
        let compiled = compile(
            &[policy(
                "payments",
                "payments",
                T1,
                json!({"routes": [{"match": {}, "timeouts": {"connect": "1s"}}]}),
            )],
            &[service("payments")],
            &[],
        );
        let v = compiled.verdicts.values().next().unwrap();
        assert_eq!((v.accepted.status, v.accepted.reason), (false, "Invalid"));
        assert_eq!(
            v.accepted.message,
            "spec.routes[0].timeouts.connect: not allowed on a route: a connection serves every route, so set spec.timeouts.connect"
        );
    }

    #[test]
    fn invalid_policy_is_not_applied() {
        let compiled = compile(
            &[policy(
                "payments",
                "payments",
                T1,
                json!({"retry": {"backoff": {"base": "2s", "max": "1s"}}}),
            )],
            &[service("payments")],
            &[],
        );
        let v = compiled.verdicts.values().next().unwrap();
        assert_eq!((v.accepted.status, v.accepted.reason), (false, "Invalid"));
        assert_eq!(
            v.accepted.message,
            "spec.retry.backoff.max: must be >= base (2s)"
        );
        assert!(compiled
            .destinations
            .values()
            .next()
            .unwrap()
            .policies
            .is_empty());
    }

    fn http_route(name: &str, parent: &str, backend: &str) -> RouteObject {
        RouteObject::from_value(&json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": name, "namespace": "shop", "generation": 2,
                         "creationTimestamp": T1},
            "spec": {
                "parentRefs": [{"group": "", "kind": "Service", "name": parent, "port": 80}],
                "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": "/cart"}}],
                           "timeouts": {"request": "2s"},
                           "backendRefs": [{"name": backend, "port": 80}]}]
            }
        }))
        .unwrap()
    }

    /// A Service with only an HTTPRoute gets a spec (routes exclusive,
    /// defaults filled), named after the route; the route's verdict is ours.
    #[test]
    fn a_service_with_only_an_http_route_gets_a_policy() {
        let compiled = compile_with_routes(
            &[],
            &[service("payments")],
            &[],
            &[http_route("checkout", "payments", "payments")],
        );
        let d = compiled.destinations.values().next().unwrap();
        assert_eq!(d.routes, vec!["HTTPRoute shop/checkout"]);
        assert_eq!(d.policies.len(), 1);
        let applied = &d.policies[0];
        assert_eq!((applied.policy.as_ref(), applied.port), (None, Some(80)));
        assert_eq!(applied.snapshot_name("shop"), "shop/gateway-api-routes");
        assert!(applied.spec.exclusive_routes);
        assert_eq!(applied.spec.routes.len(), 1);
        assert!(applied.spec.timeouts.is_some(), "defaults filled in");
        assert_eq!(compiled.route_verdicts.len(), 1);
        let parent = &compiled.route_verdicts[0].parents[0];
        assert!(parent.accepted.ok && parent.resolved_refs.ok, "{parent:?}");
    }

    /// With a policy: the route replaces its routes on port 80, the policy's
    /// retry stays, and the policy's status lists the route.
    #[test]
    fn a_route_composes_with_the_services_policy() {
        let compiled = compile_with_routes(
            &[policy(
                "payments",
                "payments",
                T1,
                json!({"retry": {"attempts": 3}, "routes": [{"name": "own", "match": {}}]}),
            )],
            &[service("payments")],
            &[],
            &[http_route("checkout", "payments", "missing")],
        );
        let d = compiled.destinations.values().next().unwrap();
        // The portless entry stays (for ports without routes); port 80 has
        // its own, which `select` prefers.
        assert_eq!(d.policies.len(), 2);
        let applied = semantics::select(d.policies.iter().map(|p| (p.port, p)), 80).unwrap();
        assert_eq!(applied.policy.as_ref().unwrap().name, "payments");
        assert_eq!(applied.port, Some(80));
        assert_eq!(applied.spec.retry.as_ref().unwrap().attempts, Some(3));
        assert!(applied
            .spec
            .routes
            .iter()
            .all(|r| r.name.as_deref() != Some("own")));
        let verdict = compiled.verdicts.values().next().unwrap();
        assert_eq!(verdict.routes, vec!["HTTPRoute shop/checkout"]);
        // The backend Service does not exist: ResolvedRefs False, still attached.
        let parent = &compiled.route_verdicts[0].parents[0];
        assert!(parent.accepted.ok);
        assert_eq!(
            (
                parent.resolved_refs.ok,
                parent.resolved_refs.reason.as_str()
            ),
            (false, "BackendNotFound")
        );
    }

    #[test]
    fn a_route_to_a_missing_service_is_not_accepted() {
        let compiled = compile_with_routes(
            &[],
            &[],
            &[],
            &[http_route("checkout", "payments", "payments")],
        );
        assert!(compiled.destinations.is_empty());
        let parent = &compiled.route_verdicts[0].parents[0];
        assert!(!parent.accepted.ok, "{parent:?}");
    }

    /// A parentRef without a port: every port of the Service, and the
    /// portless entry (ports the Service does not declare), composed with
    /// the portless policy.
    #[test]
    fn a_route_on_the_whole_service_composes_every_port_and_the_portless_entry() {
        let route = json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": "all", "namespace": "shop"},
            "spec": {"parentRefs": [{"group": "", "kind": "Service", "name": "payments"}],
                     "rules": [{"timeouts": {"request": "4s"}}]}
        });
        let compiled = compile_with_routes(
            &[policy(
                "payments",
                "payments",
                T1,
                json!({"retry": {"attempts": 3}}),
            )],
            &[service("payments")],
            &[],
            &[RouteObject::from_value(&route).unwrap()],
        );
        let d = compiled.destinations.values().next().unwrap();
        let ports: Vec<Option<u16>> = d.policies.iter().map(|p| p.port).collect();
        assert_eq!(ports, vec![None, Some(80)]);
        for applied in &d.policies {
            assert!(applied.spec.exclusive_routes, "{applied:?}");
            assert_eq!(applied.routes, vec!["HTTPRoute shop/all"]);
            assert_eq!(applied.spec.retry.as_ref().unwrap().attempts, Some(3));
            assert_eq!(applied.snapshot_name("shop"), "shop/payments");
        }
    }
}
