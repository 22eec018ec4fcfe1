//! Which Service a destination names, and which policy applies to it. A policy
//! targets a Service by name in its namespace; a request names its destination
//! the way Kubernetes DNS allows (`payments`, `payments.shop`,
//! `payments.shop.svc`, `payments.shop.svc.cluster.local`), with a port.

use outrigger_api::manifest::PolicyManifest;

#[derive(Debug, Clone)]
pub struct DestinationMatcher {
    /// Namespace that short names (`payments`) resolve in: the pod's own.
    pub namespace: String,
    pub cluster_domain: String,
}

/// A Service, by namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServiceRef {
    pub namespace: String,
    pub name: String,
}

impl DestinationMatcher {
    /// The Service a host name designates, if it is a Kubernetes service name.
    pub fn service_of(&self, host: &str) -> Option<ServiceRef> {
        let host = host.trim_end_matches('.');
        if host.parse::<std::net::IpAddr>().is_ok() {
            return None;
        }
        let mut labels = host.split('.');
        let name = labels.next().filter(|s| !s.is_empty())?;
        let rest: Vec<&str> = labels.collect();
        let namespace = match rest.as_slice() {
            [] => self.namespace.as_str(),
            [ns] => ns,
            [ns, "svc"] => ns,
            [ns, "svc", domain @ ..] if domain.join(".") == self.cluster_domain => ns,
            _ => return None,
        };
        Some(ServiceRef {
            namespace: namespace.to_string(),
            name: name.to_string(),
        })
    }

    /// The pod's own Service (its inbound policy).
    pub fn own_service(&self, name: &str) -> ServiceRef {
        ServiceRef {
            namespace: self.namespace.clone(),
            name: name.to_string(),
        }
    }

    /// The policy for `service` on `port`. A policy whose targetRef names the
    /// port wins over one that does not; among equals the first wins.
    pub fn find<'a>(
        &self,
        policies: &'a [PolicyManifest],
        service: &ServiceRef,
        port: u16,
    ) -> Option<&'a PolicyManifest> {
        let mut portless = None;
        for policy in policies {
            let target = &policy.spec.target_ref;
            let policy_ns = policy.metadata.namespace.as_deref().unwrap_or("default");
            if target.name != service.name || policy_ns != service.namespace {
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

    fn matcher(namespace: &str) -> DestinationMatcher {
        DestinationMatcher {
            namespace: namespace.into(),
            cluster_domain: "cluster.local".into(),
        }
    }

    #[test]
    fn names_every_kubernetes_spelling() {
        let m = matcher("shop");
        for host in [
            "payments",
            "payments.shop",
            "payments.shop.svc",
            "payments.shop.svc.cluster.local",
            "payments.shop.svc.cluster.local.",
        ] {
            assert_eq!(
                m.service_of(host),
                Some(m.own_service("payments")),
                "{host}"
            );
        }
        assert_eq!(m.service_of("payments.shop.svc.example.org"), None);
        assert_eq!(m.service_of("10.0.0.1"), None);
    }

    #[test]
    fn port_specific_policy_wins() {
        let policies = policies(TWO);
        let m = matcher("default");
        let service = m.service_of("payments.shop").unwrap();
        assert_eq!(
            m.find(&policies, &service, 8080).unwrap().metadata.name,
            "port-8080"
        );
        assert_eq!(
            m.find(&policies, &service, 80).unwrap().metadata.name,
            "any-port"
        );
        let other = m.service_of("payments.other").unwrap();
        assert_eq!(m.find(&policies, &other, 80), None);
        assert_eq!(
            m.find(&policies, &m.own_service("payments"), 80),
            None,
            "own namespace is default"
        );
    }
}
