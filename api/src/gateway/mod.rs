//! Gateway API routes (HTTPRoute, GRPCRoute) as input, in the GAMMA mesh
//! profile: routes whose parentRefs name a Service. They are translated into
//! the policy model's routes ([`Route`]: matches, timeouts, retry, weighted
//! backends, header modifiers) and composed with the Service's
//! ResiliencePolicy, the same way in both modes: the operator and the
//! proxy's file mode call [`attach`] and [`compose`] here, then
//! `defaults::with_defaults` / `semantics::effective` as for any policy.
//!
//! The types are the `gateway-api` crate's experimental channel (a superset
//! of the standard one, with `retry`). Pure: no I/O, no clock; Services are
//! looked up through [`Services`]. What each field does here is in
//! docs/gateway-api.md.

mod attach;
mod precedence;
mod translate;

use std::collections::BTreeMap;

use gateway_api::experimental::grpcroutes::{GrpcRoute, GrpcRouteSpec};
use gateway_api::experimental::httproutes::{HttpRoute, HttpRouteSpec};
use serde_json::Value;

use crate::policy::{ResiliencePolicySpec, Route, TargetRef};

pub use attach::attach;

/// The controller name in `status.parents[].controllerName`.
pub const CONTROLLER_NAME: &str = "outrigger.dev/mesh";

/// The API group of both route kinds.
pub const GROUP: &str = "gateway.networking.k8s.io";

/// Versions of the group whose HTTPRoute/GRPCRoute shape is the one read
/// here (v1beta1 and v1alpha2 are older servings of the same schema).
const VERSIONS: [&str; 3] = ["v1", "v1beta1", "v1alpha2"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RouteKind {
    Http,
    Grpc,
}

impl RouteKind {
    /// The Kubernetes kind: HTTPRoute or GRPCRoute.
    pub fn kind_name(self) -> &'static str {
        match self {
            RouteKind::Http => "HTTPRoute",
            RouteKind::Grpc => "GRPCRoute",
        }
    }

    /// The kind of a document, if it is a route kind.
    pub fn from_kind(kind: &str) -> Option<RouteKind> {
        match kind {
            "HTTPRoute" => Some(RouteKind::Http),
            "GRPCRoute" => Some(RouteKind::Grpc),
            _ => None,
        }
    }
}

/// A route's spec, as the `gateway-api` crate types it.
#[derive(Debug, Clone, PartialEq)]
pub enum RouteSpec {
    Http(Box<HttpRouteSpec>),
    Grpc(Box<GrpcRouteSpec>),
}

/// One HTTPRoute or GRPCRoute.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteObject {
    pub kind: RouteKind,
    pub namespace: String,
    pub name: String,
    pub generation: Option<i64>,
    /// metadata.creationTimestamp (RFC 3339), for precedence; none (as in a
    /// file) counts as oldest, as for policies.
    pub created: Option<String>,
    pub spec: RouteSpec,
}

impl RouteObject {
    /// A whole HTTPRoute/GRPCRoute object as JSON (what kubectl, the API
    /// server or a file gives). A missing namespace is "default", as kubectl
    /// would apply it.
    pub fn from_value(value: &Value) -> Result<RouteObject, String> {
        let field = |key: &str| value.get(key).and_then(Value::as_str);
        let kind_name = field("kind").ok_or("kind is required")?;
        let kind = RouteKind::from_kind(kind_name).ok_or_else(|| {
            format!("kind: {kind_name:?} is not a Gateway API route (HTTPRoute or GRPCRoute)")
        })?;
        let api_version = field("apiVersion").ok_or("apiVersion is required")?;
        let served = api_version
            .strip_prefix(GROUP)
            .and_then(|rest| rest.strip_prefix('/'))
            .is_some_and(|version| VERSIONS.contains(&version));
        if !served {
            return Err(format!(
                "apiVersion: {api_version:?} is not served for {kind_name} (use {GROUP}/v1)"
            ));
        }
        // Typed through the crate's root types, so metadata is read as the
        // API server would.
        let object = |e: serde_json::Error| format!("{kind_name}: {e}");
        let (metadata, spec) = match kind {
            RouteKind::Http => {
                let route: HttpRoute = serde_json::from_value(value.clone()).map_err(object)?;
                (route.metadata, RouteSpec::Http(Box::new(route.spec)))
            }
            RouteKind::Grpc => {
                let route: GrpcRoute = serde_json::from_value(value.clone()).map_err(object)?;
                (route.metadata, RouteSpec::Grpc(Box::new(route.spec)))
            }
        };
        let name = metadata
            .name
            .filter(|n| !n.is_empty())
            .ok_or_else(|| format!("{kind_name}: metadata.name is required"))?;
        Ok(RouteObject {
            kind,
            namespace: metadata.namespace.unwrap_or_else(|| "default".into()),
            name,
            generation: metadata.generation,
            created: metadata.creation_timestamp.map(|t| t.0.to_string()),
            spec,
        })
    }

    /// "HTTPRoute namespace/name".
    pub fn label(&self) -> String {
        format!("{} {}/{}", self.kind.kind_name(), self.namespace, self.name)
    }

    /// Paths under `spec` of `value` (the object this was read from) that
    /// the types do not have, such as a misspelt `timeout`: they are
    /// ignored, which a file's author should hear about (the API server
    /// refuses or prunes them, so from a cluster there are none; a field
    /// newer than the types would be listed too).
    pub fn unknown_fields(&self, value: &Value) -> Vec<String> {
        let known = match &self.spec {
            RouteSpec::Http(spec) => serde_json::to_value(spec),
            RouteSpec::Grpc(spec) => serde_json::to_value(spec),
        }
        .unwrap_or(Value::Null);
        let mut unknown = Vec::new();
        if let Some(written) = value.get("spec") {
            diff(written, &known, "spec", &mut unknown);
        }
        unknown
    }
}

/// Adds to `unknown` every non-null field of `written` that `known` (the
/// same object read into the types and written back) lacks.
fn diff(written: &Value, known: &Value, path: &str, unknown: &mut Vec<String>) {
    match (written, known) {
        (Value::Object(w), Value::Object(k)) => {
            for (key, value) in w {
                let path = format!("{path}.{key}");
                match k.get(key) {
                    Some(known) => diff(value, known, &path, unknown),
                    None if !value.is_null() => unknown.push(path),
                    None => {}
                }
            }
        }
        (Value::Array(w), Value::Array(k)) => {
            for (i, (value, known)) in w.iter().zip(k).enumerate() {
                diff(value, known, &format!("{path}[{i}]"), unknown);
            }
        }
        _ => {}
    }
}

/// What a Service lookup found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceLookup {
    Ports(Vec<ServicePortInfo>),
    NotFound,
    /// Not known either way (file mode without a Service document): assumed
    /// to exist with whatever port is named.
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePortInfo {
    pub port: u16,
    pub name: Option<String>,
}

/// Where [`attach`] looks Services up (parents and backends).
pub trait Services {
    fn lookup(&self, namespace: &str, name: &str) -> ServiceLookup;
}

/// The routes attached to Services, and a verdict for every route with a
/// Service parent.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Attachment {
    /// Per parent Service (namespace, name): the accepted rules attached to
    /// it, each with the parentRef's port (None: every port), in Gateway API
    /// precedence order.
    pub services: BTreeMap<(String, String), Vec<AttachedRule>>,
    pub verdicts: Vec<RouteVerdict>,
}

/// One (rule, match) pair of an accepted route, attached to a Service.
#[derive(Debug, Clone, PartialEq)]
pub struct AttachedRule {
    /// The parentRef's port; None: every port of the Service.
    pub port: Option<u16>,
    pub route: Route,
}

impl Attachment {
    /// The routes for one Service port (rules naming that port or none), in
    /// precedence order.
    pub fn routes_for(&self, namespace: &str, name: &str, port: u16) -> Vec<Route> {
        self.rules(namespace, name)
            .filter(|rule| rule.port.is_none_or(|p| p == port))
            .map(|rule| rule.route.clone())
            .collect()
    }

    /// "HTTPRoute ns/name" of every route attached to the Service (any
    /// port), sorted and without repeats, for /view and status.
    pub fn sources_for(&self, namespace: &str, name: &str) -> Vec<String> {
        let mut sources: Vec<String> = self
            .rules(namespace, name)
            .filter_map(|rule| rule.route.source.as_deref())
            .map(|source| match source.rfind(" rule ") {
                Some(at) => source[..at].to_string(),
                None => source.to_string(),
            })
            .collect();
        sources.sort();
        sources.dedup();
        sources
    }

    fn rules(&self, namespace: &str, name: &str) -> impl Iterator<Item = &AttachedRule> {
        self.services
            .get(&(namespace.to_string(), name.to_string()))
            .into_iter()
            .flatten()
    }
}

/// A route's status, per Service parentRef.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteVerdict {
    pub kind: RouteKind,
    pub namespace: String,
    pub name: String,
    pub generation: Option<i64>,
    pub parents: Vec<ParentVerdict>,
}

impl RouteVerdict {
    /// "HTTPRoute namespace/name".
    pub fn label(&self) -> String {
        format!("{} {}/{}", self.kind.kind_name(), self.namespace, self.name)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ParentVerdict {
    /// The parentRef as written (status.parents[].parentRef).
    pub parent_ref: Value,
    /// Accepted: True/Accepted, or False/NoMatchingParent, UnsupportedValue.
    pub accepted: Verdict,
    /// ResolvedRefs: True/ResolvedRefs, or False/BackendNotFound,
    /// InvalidKind, RefNotPermitted.
    pub resolved_refs: Verdict,
}

/// One condition: its status, reason and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub ok: bool,
    pub reason: String,
    pub message: String,
}

impl Verdict {
    pub(crate) fn ok(reason: &str, message: impl Into<String>) -> Verdict {
        Verdict {
            ok: true,
            reason: reason.into(),
            message: message.into(),
        }
    }

    pub(crate) fn fail(reason: &str, message: impl Into<String>) -> Verdict {
        Verdict {
            ok: false,
            reason: reason.into(),
            message: message.into(),
        }
    }
}

/// The spec for one Service port: the ResiliencePolicy's (if any) with
/// `routes` (from [`Attachment::routes_for`]) replacing its own routes and
/// `exclusive_routes` set when `routes` is non-empty; without a policy but
/// with routes, a spec targeting the Service with nothing else set (defaults
/// apply); None when neither. Not yet defaulted: callers run
/// `defaults::with_defaults` / `semantics::effective` on it as for any
/// policy.
pub fn compose(
    policy: Option<&ResiliencePolicySpec>,
    service: &str,
    routes: Vec<Route>,
) -> Option<ResiliencePolicySpec> {
    if routes.is_empty() {
        return policy.cloned();
    }
    let mut spec = policy.cloned().unwrap_or_else(|| ResiliencePolicySpec {
        target_ref: TargetRef::service(service),
        ..ResiliencePolicySpec::default()
    });
    spec.routes = routes;
    spec.exclusive_routes = true;
    Some(spec)
}

#[cfg(test)]
mod tests;
