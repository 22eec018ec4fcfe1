//! Where a route sends its requests when a Gateway API route says so
//! (`backendRefs`): one Service port picked per request by weight, and the
//! header changes of the route and of the backend picked. Compiled once per
//! policy generation. Pure configuration: the backend's stack is found at
//! request time ([`crate::cache::Engine::backend_stack`]).
//!
//! A request goes to the backend's own stack (its endpoints, breaker,
//! outlier detector, retry budget and connection pool: the state of the
//! Service that serves it), with the timeouts and retry of the route that
//! chose it. Retries stay on the backend picked first, as Envoy's weighted
//! clusters do: a retry that moved would hide a failing backend's share.

use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue};
use outrigger_api::policy as spec;
use outrigger_proxy_core::addr::HostPort;

/// A route's backends and their weights.
#[derive(Debug)]
pub struct Backends {
    choices: Vec<BackendChoice>,
    /// Sum of the weights.
    total: u64,
}

impl PartialEq for Backends {
    fn eq(&self, other: &Self) -> bool {
        self.choices.len() == other.choices.len()
            && self
                .choices
                .iter()
                .zip(&other.choices)
                .all(|(a, b)| a.spec == b.spec)
    }
}

/// One backend: a Service port.
#[derive(Debug)]
pub struct BackendChoice {
    spec: spec::Backend,
    pub request_headers: Option<HeaderEdits>,
    pub response_headers: Option<HeaderEdits>,
}

impl Backends {
    /// `None` for a route without backends (it serves its own destination).
    pub fn compile(backends: &[spec::Backend]) -> Option<Arc<Backends>> {
        if backends.is_empty() {
            return None;
        }
        let choices: Vec<BackendChoice> = backends
            .iter()
            .map(|b| BackendChoice {
                spec: b.clone(),
                request_headers: b.request_headers.as_ref().map(HeaderEdits::compile),
                response_headers: b.response_headers.as_ref().map(HeaderEdits::compile),
            })
            .collect();
        let total = choices.iter().map(|c| u64::from(c.spec.weight)).sum();
        Some(Arc::new(Backends { choices, total }))
    }

    /// The backend for a request, given `roll`, a uniform draw below the
    /// weights' sum it is handed. `None` when every weight is 0: Gateway
    /// API answers such requests 500.
    pub fn pick(&self, roll: impl FnOnce(u64) -> u64) -> Option<&BackendChoice> {
        if self.total == 0 {
            return None;
        }
        let mut left = roll(self.total);
        self.choices.iter().find(|c| {
            let weight = u64::from(c.spec.weight);
            if left < weight {
                return true;
            }
            left -= weight;
            false
        })
    }
}

impl BackendChoice {
    /// Why requests sent here are answered 500 (a reference that does not
    /// resolve), if they are.
    pub fn invalid(&self) -> Option<&str> {
        self.spec.invalid.as_deref()
    }

    /// `name.namespace.svc.<domain>:port`: the backend as a request naming
    /// its Service would (explicit, so every spelling of the Service finds
    /// one state identity).
    pub fn host_port(&self, cluster_domain: &str) -> HostPort {
        HostPort {
            host: format!(
                "{}.{}.svc.{cluster_domain}",
                self.spec.name, self.spec.namespace
            ),
            port: self.spec.port,
        }
    }
}

/// Header changes in Gateway API's order: set, add, remove.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct HeaderEdits {
    set: Vec<(HeaderName, HeaderValue)>,
    add: Vec<(HeaderName, HeaderValue)>,
    remove: Vec<HeaderName>,
}

impl HeaderEdits {
    /// The Gateway API CRDs keep names and values valid; one that is not
    /// is left out, logged.
    pub fn compile(modifier: &spec::HeaderModifier) -> HeaderEdits {
        let pair = |h: &spec::HeaderValue| {
            let parsed = HeaderName::from_bytes(h.name.as_bytes())
                .ok()
                .zip(HeaderValue::from_str(&h.value).ok());
            if parsed.is_none() {
                tracing::warn!(name = %h.name, "header change ignored: not a valid header");
            }
            parsed
        };
        HeaderEdits {
            set: modifier.set.iter().filter_map(pair).collect(),
            add: modifier.add.iter().filter_map(pair).collect(),
            remove: modifier
                .remove
                .iter()
                .filter_map(|n| HeaderName::from_bytes(n.as_bytes()).ok())
                .collect(),
        }
    }

    pub fn apply(&self, headers: &mut HeaderMap) {
        for (name, value) in &self.set {
            headers.insert(name.clone(), value.clone());
        }
        for (name, value) in &self.add {
            headers.append(name.clone(), value.clone());
        }
        for name in &self.remove {
            headers.remove(name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend(name: &str, weight: u32) -> spec::Backend {
        spec::Backend {
            name: name.into(),
            namespace: "shop".into(),
            port: 8080,
            weight,
            ..spec::Backend::default()
        }
    }

    #[test]
    fn weights_split_the_draws() {
        let b =
            Backends::compile(&[backend("v1", 70), backend("v2", 0), backend("v3", 30)]).unwrap();
        let mut counts = std::collections::HashMap::new();
        for roll in 0..100 {
            let c = b.pick(|total| {
                assert_eq!(total, 100);
                roll
            });
            *counts.entry(c.unwrap().spec.name.clone()).or_insert(0) += 1;
        }
        assert_eq!(counts["v1"], 70);
        assert_eq!(counts["v3"], 30);
        assert!(
            !counts.contains_key("v2"),
            "weight 0 never receives requests"
        );
        let none = Backends::compile(&[backend("v1", 0)]).unwrap();
        assert!(none.pick(|_| unreachable!()).is_none());
        assert!(Backends::compile(&[]).is_none());
    }

    #[test]
    fn a_backend_resolves_to_its_services_full_name() {
        let b = Backends::compile(&[backend("echo-v1", 1)]).unwrap();
        let choice = b.pick(|_| 0).unwrap();
        assert_eq!(
            choice.host_port("cluster.local").to_string(),
            "echo-v1.shop.svc.cluster.local:8080"
        );
    }

    #[test]
    fn edits_set_then_add_then_remove() {
        let edits = HeaderEdits::compile(&spec::HeaderModifier {
            set: vec![spec::HeaderValue {
                name: "X-Set".into(),
                value: "new".into(),
            }],
            add: vec![spec::HeaderValue {
                name: "x-add".into(),
                value: "more".into(),
            }],
            remove: vec!["X-Gone".into()],
        });
        let mut h = HeaderMap::new();
        h.append("x-set", "old".parse().unwrap());
        h.append("x-set", "older".parse().unwrap());
        h.insert("x-add", "first".parse().unwrap());
        h.insert("x-gone", "1".parse().unwrap());
        edits.apply(&mut h);
        let all =
            |n: &str| -> Vec<&str> { h.get_all(n).iter().map(|v| v.to_str().unwrap()).collect() };
        assert_eq!(all("x-set"), ["new"]);
        assert_eq!(all("x-add"), ["first", "more"]);
        assert!(h.get("x-gone").is_none());
    }
}
