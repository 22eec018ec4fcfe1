//! Which policy applies to a destination. A policy targets a Service by name in
//! its namespace; a request names its destination the way Kubernetes DNS allows
//! (`payments`, `payments.shop`, `payments.shop.svc`,
//! `payments.shop.svc.cluster.local`), with a port.

use outrigger_api::manifest::PolicyManifest;

#[derive(Debug, Clone)]
pub struct DestinationMatcher {
    /// Namespace that short names (`payments`) resolve in: the pod's own.
    pub namespace: String,
    pub cluster_domain: String,
}

impl DestinationMatcher {
    /// The policy for `host:port`. A policy whose targetRef names the port wins
    /// over one that does not; among equals the first in the file wins.
    pub fn find<'a>(
        &self,
        policies: &'a [PolicyManifest],
        host: &str,
        port: u16,
    ) -> Option<&'a PolicyManifest> {
        let (service, namespace) = self.service_of(host)?;
        let mut portless = None;
        for policy in policies {
            let target = &policy.spec.target_ref;
            let policy_ns = policy.metadata.namespace.as_deref().unwrap_or("default");
            if target.name != service || policy_ns != namespace {
                continue;
            }
            match target.port {
                Some(p) if p == port => return Some(policy),
                Some(_) => {}
                None => {
                    portless.get_or_insert(policy);
                }
            }
        }
        portless
    }

    /// The policy of the Service this pod serves (applied to inbound traffic).
    pub fn find_service<'a>(
        &self,
        policies: &'a [PolicyManifest],
        service: &str,
        port: u16,
    ) -> Option<&'a PolicyManifest> {
        let host = format!("{service}.{}", self.namespace);
        self.find(policies, &host, port)
    }

    /// Splits a Kubernetes service host name into (service, namespace).
    fn service_of<'h>(&'h self, host: &'h str) -> Option<(&'h str, &'h str)> {
        let host = host.trim_end_matches('.');
        if host.parse::<std::net::IpAddr>().is_ok() {
            return None;
        }
        let mut labels = host.split('.');
        let service = labels.next().filter(|s| !s.is_empty())?;
        let rest: Vec<&str> = labels.collect();
        let namespace = match rest.as_slice() {
            [] => self.namespace.as_str(),
            [ns] => ns,
            [ns, "svc"] => ns,
            [ns, "svc", domain @ ..] if domain.join(".") == self.cluster_domain => ns,
            _ => return None,
        };
        Some((service, namespace))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use outrigger_api::manifest::{parse_documents, Document};

    fn policies(yaml: &str) -> Vec<PolicyManifest> {
        parse_documents(yaml)
            .unwrap()
            .into_iter()
            .filter_map(|d| match d {
                Document::Policy(p) => Some(*p),
                _ => None,
            })
            .collect()
    }

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

    #[test]
    fn matches_every_kubernetes_spelling() {
        let policies = policies(TWO);
        let m = DestinationMatcher {
            namespace: "shop".into(),
            cluster_domain: "cluster.local".into(),
        };
        for host in [
            "payments",
            "payments.shop",
            "payments.shop.svc",
            "payments.shop.svc.cluster.local",
            "payments.shop.svc.cluster.local.",
        ] {
            let found = m
                .find(&policies, host, 80)
                .map(|p| p.metadata.name.as_str());
            assert_eq!(found, Some("any-port"), "{host}");
        }
        assert_eq!(
            m.find(&policies, "payments.other", 80)
                .map(|p| &p.metadata.name),
            None
        );
        assert_eq!(m.find(&policies, "payments.shop.svc.example.org", 80), None);
        assert_eq!(m.find(&policies, "10.0.0.1", 80), None);
    }

    #[test]
    fn port_specific_policy_wins() {
        let policies = policies(TWO);
        let m = DestinationMatcher {
            namespace: "default".into(),
            cluster_domain: "cluster.local".into(),
        };
        let found = m.find(&policies, "payments.shop", 8080).unwrap();
        assert_eq!(found.metadata.name, "port-8080");
        let found = m.find_service(&policies, "payments", 9090);
        assert_eq!(found, None, "own namespace is default, not shop");
    }
}
