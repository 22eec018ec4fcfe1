//! The policy the proxy enforces: loaded from a file (or, later, the control
//! plane), swapped atomically, and matched to destinations.
#![forbid(unsafe_code)]

mod conflicts;
mod endpoints;
mod file_source;
mod gateway_routes;
mod matcher;

pub use conflicts::{conflicts, PolicyConflict};
pub use endpoints::EndpointIndex;
pub use file_source::{activate, load_policy_file, watch_policy_file, LoadedFile, PolicyLoadError};
pub use gateway_routes::{
    ComposedPolicies, Condition, RouteStanding, ROUTES_ANNOTATION, ROUTES_ONLY_NAME,
};
pub use matcher::{DestinationMatcher, ServiceRef};

use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use outrigger_api::manifest::PolicyManifest;
use serde::Serialize;

/// One loaded generation of policy. Immutable: requests hold an `Arc` to the
/// generation they started with, so a reload never changes a request mid-flight.
#[derive(Debug, Serialize)]
pub struct ActivePolicy {
    /// Increases by one on every successful load; 0 means built-in defaults.
    pub version: u64,
    /// Where this generation came from (`defaults`, `file:/path`).
    pub source: String,
    /// SHA-256 of the loaded document text, to tell identical reloads apart.
    pub checksum: String,
    #[serde(serialize_with = "serialize_unix_time")]
    pub loaded_at: SystemTime,
    /// Every policy of the file, in file order.
    pub policies: Vec<PolicyManifest>,
    /// Policies that lost a conflict to another on the same Service and
    /// port, and apply nowhere (the operator marks such a policy
    /// Conflicted).
    pub conflicts: Vec<PolicyConflict>,
    /// Endpoints from Service/EndpointSlice documents in the same source.
    pub endpoints: EndpointIndex,
    /// Every HTTPRoute/GRPCRoute of the file with a Service parent: per
    /// parent, whether it is accepted and its references resolved (what its
    /// status would say in a cluster). The ones not accepted apply nowhere.
    pub routes: Vec<RouteStanding>,
    /// The policies of the Services routes attach to, composed with them
    /// per port (`outrigger_api::gateway::compose`).
    pub composed: ComposedPolicies,
}

impl ActivePolicy {
    pub fn defaults() -> Self {
        ActivePolicy {
            version: 0,
            source: "defaults".into(),
            checksum: String::new(),
            loaded_at: SystemTime::now(),
            policies: Vec::new(),
            conflicts: Vec::new(),
            endpoints: EndpointIndex::default(),
            routes: Vec::new(),
            composed: ComposedPolicies::default(),
        }
    }

    /// The policy governing calls to `service` on Service port `port`: of
    /// the policies that won their conflicts, the one naming that port, else
    /// the one naming none (`semantics::select`, as the operator chooses);
    /// when HTTPRoutes/GRPCRoutes attach to the port, that policy composed
    /// with them (their routes replace its own), or the routes alone.
    pub fn policy_for(&self, service: &ServiceRef, port: u16) -> Option<&PolicyManifest> {
        match self.composed.get(service, port) {
            Some(composed) => composed,
            None => {
                gateway_routes::file_policy(&self.policies, &self.conflicts, service, Some(port))
            }
        }
    }
}

fn serialize_unix_time<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    s.serialize_f64(secs)
}

/// Holds the active policy behind an atomic swap: readers never block.
pub struct PolicyStore {
    current: ArcSwap<ActivePolicy>,
}

impl PolicyStore {
    pub fn new(initial: ActivePolicy) -> Arc<Self> {
        Arc::new(PolicyStore {
            current: ArcSwap::from_pointee(initial),
        })
    }

    pub fn current(&self) -> Arc<ActivePolicy> {
        self.current.load_full()
    }

    pub fn replace(&self, policy: ActivePolicy) {
        self.current.store(Arc::new(policy));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use outrigger_api::manifest::{parse_documents, Document};

    const TWO: &str = r#"
apiVersion: outrigger.dev/v1alpha1
kind: ResiliencePolicy
metadata: {name: any-port, namespace: shop}
spec:
  targetRef: {kind: Service, name: payments}
---
apiVersion: outrigger.dev/v1alpha1
kind: ResiliencePolicy
metadata: {name: port-8080, namespace: shop}
spec:
  targetRef: {kind: Service, name: payments, port: 8080}
"#;

    fn active(yaml: &str) -> ActivePolicy {
        let policies: Vec<PolicyManifest> = parse_documents(yaml)
            .unwrap()
            .into_iter()
            .filter_map(|d| match d {
                Document::Policy(p) => Some(*p),
                _ => None,
            })
            .collect();
        ActivePolicy {
            conflicts: conflicts(&policies),
            policies,
            ..ActivePolicy::defaults()
        }
    }

    fn service(namespace: &str) -> ServiceRef {
        ServiceRef {
            namespace: namespace.into(),
            name: "payments".into(),
        }
    }

    #[test]
    fn port_specific_policy_wins_its_port() {
        let active = active(TWO);
        let name = |port| {
            active
                .policy_for(&service("shop"), port)
                .map(|p| p.metadata.name.clone())
        };
        assert_eq!(name(8080).as_deref(), Some("port-8080"));
        assert_eq!(name(80).as_deref(), Some("any-port"));
        assert_eq!(active.policy_for(&service("other"), 80), None);
        assert_eq!(
            active.policy_for(&service("default"), 80),
            None,
            "a policy's namespace is its own"
        );
    }
}
