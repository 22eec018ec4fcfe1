//! HTTPRoute/GRPCRoute documents in a policy file: attached to the Services
//! they name ([`gateway::attach`], the operator's rule) and composed with
//! the file's policies per Service port ([`gateway::compose`]), so a file
//! means what the same objects mean in a cluster. Services come from the
//! file's Service documents; a Service without one is assumed to exist
//! ([`ServiceLookup::Unknown`]).

use std::collections::{BTreeMap, BTreeSet};

use outrigger_api::gateway::{
    self, RouteObject, RouteVerdict, ServiceLookup, ServicePortInfo, Services,
};
use outrigger_api::manifest::PolicyManifest;
use outrigger_api::policy::Route;
use outrigger_api::semantics;
use serde::Serialize;
use serde_json::Value;

use super::{EndpointIndex, PolicyConflict, ServiceRef};

/// Annotation of a composed policy: the Gateway API routes in it.
pub const ROUTES_ANNOTATION: &str = "outrigger.dev/gateway-api-routes";

/// metadata.name of the policy a Service gets from its routes alone (no
/// ResiliencePolicy targets it).
pub const ROUTES_ONLY_NAME: &str = "gateway-api-routes";

/// The composed policies of the Services routes attach to: per Service,
/// the policy for each port named by a route or a policy, and the one for
/// its other ports. Services without routes are not here (their policies
/// are the file's, unchanged).
#[derive(Debug, Default, Clone, PartialEq, Serialize)]
pub struct ComposedPolicies {
    services: BTreeMap<String, ComposedService>,
}

#[derive(Debug, Default, Clone, PartialEq, Serialize)]
struct ComposedService {
    ports: BTreeMap<u16, Option<PolicyManifest>>,
    other_ports: Option<PolicyManifest>,
}

impl ComposedPolicies {
    /// `Some(policy or none)` when routes attach to the Service; `None`:
    /// not composed, the file's policies apply as they are.
    pub fn get(&self, service: &ServiceRef, port: u16) -> Option<Option<&PolicyManifest>> {
        let composed = self.services.get(&key(&service.namespace, &service.name))?;
        Some(match composed.ports.get(&port) {
            Some(policy) => policy.as_ref(),
            None => composed.other_ports.as_ref(),
        })
    }
}

/// One route's standing with one Service parent (status.parents[] in a
/// cluster).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteStanding {
    /// `HTTPRoute namespace/name` or `GRPCRoute namespace/name`.
    pub route: String,
    /// The parentRef as written.
    pub parent_ref: Value,
    pub accepted: Condition,
    pub resolved_refs: Condition,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Condition {
    pub status: bool,
    pub reason: String,
    pub message: String,
}

impl From<&gateway::Verdict> for Condition {
    fn from(v: &gateway::Verdict) -> Self {
        Condition {
            status: v.ok,
            reason: v.reason.clone(),
            message: v.message.clone(),
        }
    }
}

fn key(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

/// Services as the file declares them.
struct FileServices<'a>(&'a EndpointIndex);

impl Services for FileServices<'_> {
    fn lookup(&self, namespace: &str, name: &str) -> ServiceLookup {
        match self.0.service_ports(namespace, name) {
            Some(ports) => ServiceLookup::Ports(
                ports
                    .iter()
                    .map(|p| ServicePortInfo {
                        port: p.port,
                        name: Some(p.name.clone()).filter(|n| !n.is_empty()),
                    })
                    .collect(),
            ),
            None => ServiceLookup::Unknown,
        }
    }
}

/// The file's policy for a Service port, routes aside: of the policies that
/// won their conflicts, the one naming the port, else the portless one
/// ([`semantics::select`], as the operator chooses). `port` None: the
/// portless one only.
pub(crate) fn file_policy<'a>(
    policies: &'a [PolicyManifest],
    conflicts: &[PolicyConflict],
    service: &ServiceRef,
    port: Option<u16>,
) -> Option<&'a PolicyManifest> {
    let lost = |i: usize| conflicts.iter().any(|c| c.index == i);
    let candidates = policies
        .iter()
        .enumerate()
        .filter(|(i, p)| !lost(*i) && targets(p, service))
        .map(|(_, p)| (p.spec.target_ref.port, p));
    match port {
        Some(port) => semantics::select(candidates, port),
        None => candidates
            .filter(|(p, _)| p.is_none())
            .map(|(_, policy)| policy)
            .next(),
    }
}

/// Whether `policy` targets `service` (its targetRef names a Service in the
/// policy's own namespace, "default" when it has none).
fn targets(policy: &PolicyManifest, service: &ServiceRef) -> bool {
    policy.spec.target_ref.name == service.name
        && policy.metadata.namespace.as_deref().unwrap_or("default") == service.namespace
}

/// Attaches the file's routes and composes every Service they attach to.
pub(crate) fn compose_file(
    policies: &[PolicyManifest],
    conflicts: &[PolicyConflict],
    routes: &[RouteObject],
    endpoints: &EndpointIndex,
) -> (ComposedPolicies, Vec<RouteStanding>) {
    let attachment = gateway::attach(routes, &FileServices(endpoints));
    let standings = attachment.verdicts.iter().flat_map(standings).collect();
    let mut composed = ComposedPolicies::default();
    for ((namespace, name), rules) in &attachment.services {
        let service = ServiceRef {
            namespace: namespace.clone(),
            name: name.clone(),
        };
        // Ports whose routes or policy may differ from the other ports'.
        let mut named: BTreeSet<u16> = rules.iter().filter_map(|r| r.port).collect();
        named.extend(
            policies
                .iter()
                .filter(|p| targets(p, &service))
                .filter_map(|p| p.spec.target_ref.port),
        );
        let ports = named
            .into_iter()
            .map(|port| {
                let policy = file_policy(policies, conflicts, &service, Some(port));
                let routes = attachment.routes_for(namespace, name, port);
                (port, composed_policy(&service, policy, routes))
            })
            .collect();
        let other_routes = rules
            .iter()
            .filter(|r| r.port.is_none())
            .map(|r| r.route.clone())
            .collect();
        let policy = file_policy(policies, conflicts, &service, None);
        composed.services.insert(
            key(namespace, name),
            ComposedService {
                ports,
                other_ports: composed_policy(&service, policy, other_routes),
            },
        );
    }
    (composed, standings)
}

/// The policy with the routes in (named for the policy, or
/// [`ROUTES_ONLY_NAME`] without one), annotated with the routes' sources.
fn composed_policy(
    service: &ServiceRef,
    policy: Option<&PolicyManifest>,
    routes: Vec<Route>,
) -> Option<PolicyManifest> {
    // "HTTPRoute ns/name rule 0" -> "HTTPRoute ns/name", once each.
    let sources: BTreeSet<&str> = routes
        .iter()
        .filter_map(|r| r.source.as_deref())
        .map(|s| s.rsplit_once(" rule ").map_or(s, |(route, _)| route))
        .collect();
    let sources = sources.into_iter().collect::<Vec<_>>().join(", ");
    let spec = gateway::compose(policy.map(|p| &p.spec), &service.name, routes)?;
    let mut manifest = match policy {
        Some(p) => PolicyManifest { spec, ..p.clone() },
        None => {
            let mut m = PolicyManifest::new(ROUTES_ONLY_NAME, spec);
            m.metadata.namespace = Some(service.namespace.clone());
            m
        }
    };
    if !sources.is_empty() {
        manifest
            .metadata
            .annotations
            .insert(ROUTES_ANNOTATION.into(), sources);
    }
    Some(manifest)
}

fn standings(verdict: &RouteVerdict) -> Vec<RouteStanding> {
    verdict
        .parents
        .iter()
        .map(|p| RouteStanding {
            route: verdict.label(),
            parent_ref: p.parent_ref.clone(),
            accepted: (&p.accepted).into(),
            resolved_refs: (&p.resolved_refs).into(),
        })
        .collect()
}
