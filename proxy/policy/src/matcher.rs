//! Which Service a destination names: a request names it the way Kubernetes
//! DNS allows (`payments`, `payments.shop`, `payments.shop.svc`,
//! `payments.shop.svc.cluster.local`), with a port. Which policy applies to a
//! Service port is [`crate::ActivePolicy::policy_for`].

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
}

#[cfg(test)]
mod tests {
    use super::*;
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
}
