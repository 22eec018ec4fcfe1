//! Endpoints a policy file may carry: Kubernetes `Service` and `EndpointSlice`
//! documents (the same shapes `kubectl get -o yaml` prints). Without them a
//! destination is reached through DNS.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use outrigger_api::semantics::{self, ServicePort};
use serde::{Deserialize, Serialize};

/// Ready endpoints per Service, keyed by (namespace, service name).
#[derive(Debug, Default, Clone, PartialEq, Serialize)]
pub struct EndpointIndex {
    services: BTreeMap<String, ServiceEndpoints>,
}

#[derive(Debug, Default, Clone, PartialEq, Serialize)]
struct ServiceEndpoints {
    ports: Vec<ServicePort>,
    slices: Vec<Slice>,
    /// A Service document was given (its ports are known, possibly none);
    /// EndpointSlices alone do not say which ports the Service has.
    #[serde(skip)]
    declared: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
struct Slice {
    /// Endpoint ports: (name, port).
    ports: Vec<(String, u16)>,
    ready: Vec<IpAddr>,
}

#[derive(Deserialize)]
struct Meta {
    name: Option<String>,
    namespace: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct ServiceDoc {
    metadata: Meta,
    spec: ServiceSpec,
}

#[derive(Deserialize)]
struct ServiceSpec {
    #[serde(default)]
    ports: Vec<ServicePortDoc>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ServicePortDoc {
    #[serde(default)]
    name: String,
    port: u16,
    target_port: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct SliceDoc {
    metadata: Meta,
    #[serde(default)]
    endpoints: Vec<EndpointDoc>,
    #[serde(default)]
    ports: Vec<SlicePortDoc>,
}

#[derive(Deserialize)]
struct EndpointDoc {
    addresses: Vec<String>,
    #[serde(default)]
    conditions: Conditions,
}

#[derive(Deserialize, Default)]
struct Conditions {
    ready: Option<bool>,
}

#[derive(Deserialize)]
struct SlicePortDoc {
    #[serde(default)]
    name: Option<String>,
    port: u16,
}

const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

fn key(namespace: Option<&str>, name: &str) -> String {
    format!("{}/{name}", namespace.unwrap_or("default"))
}

impl EndpointIndex {
    /// Adds a `Service` or `EndpointSlice` document; other kinds are ignored.
    pub fn add(&mut self, kind: &str, raw: &serde_json::Value) -> Result<(), String> {
        match kind {
            "Service" => {
                let doc: ServiceDoc =
                    serde_json::from_value(raw.clone()).map_err(|e| format!("Service: {e}"))?;
                let name = doc.metadata.name.ok_or("Service without metadata.name")?;
                let entry = self
                    .services
                    .entry(key(doc.metadata.namespace.as_deref(), &name))
                    .or_default();
                entry.declared = true;
                entry.ports = doc
                    .spec
                    .ports
                    .into_iter()
                    .map(|p| ServicePort {
                        target_port: semantics::target_port(p.port, p.target_port.as_ref()),
                        name: p.name,
                        port: p.port,
                    })
                    .collect();
            }
            "EndpointSlice" => {
                let doc: SliceDoc = serde_json::from_value(raw.clone())
                    .map_err(|e| format!("EndpointSlice: {e}"))?;
                let service = doc.metadata.labels.get(SERVICE_NAME_LABEL).ok_or_else(|| {
                    format!("EndpointSlice without the {SERVICE_NAME_LABEL} label")
                })?;
                let mut ready = Vec::new();
                for endpoint in doc.endpoints {
                    // Kubernetes treats an unset ready condition as ready.
                    if endpoint.conditions.ready == Some(false) {
                        continue;
                    }
                    for address in endpoint.addresses {
                        let ip = address.parse().map_err(|_| {
                            format!("EndpointSlice: {address:?} is not an IP address")
                        })?;
                        ready.push(ip);
                    }
                }
                let ports = doc
                    .ports
                    .into_iter()
                    .map(|p| (p.name.unwrap_or_default(), p.port))
                    .collect();
                self.services
                    .entry(key(doc.metadata.namespace.as_deref(), service))
                    .or_default()
                    .slices
                    .push(Slice { ports, ready });
            }
            _ => {}
        }
        Ok(())
    }

    /// The ports of `service` when the file holds its Service document.
    pub fn service_ports(&self, namespace: &str, service: &str) -> Option<&[ServicePort]> {
        self.services
            .get(&key(Some(namespace), service))
            .filter(|entry| entry.declared)
            .map(|entry| entry.ports.as_slice())
    }

    /// Whether the file lists endpoints for `service` (whether `lookup`
    /// answers), without collecting them.
    pub fn lists(&self, namespace: &str, service: &str) -> bool {
        self.services
            .get(&key(Some(namespace), service))
            .is_some_and(|entry| !entry.slices.is_empty())
    }

    /// Ready endpoints of `service` for the Service port `port`, or `None`
    /// when the file says nothing about this Service. Each slice's port is
    /// [`semantics::endpoint_port`]'s, as the operator resolves it.
    pub fn lookup(&self, namespace: &str, service: &str, port: u16) -> Option<Vec<SocketAddr>> {
        let entry = self.services.get(&key(Some(namespace), service))?;
        if entry.slices.is_empty() {
            return None;
        }
        let service_port = entry.ports.iter().find(|sp| sp.port == port);
        let mut endpoints = Vec::new();
        for slice in &entry.slices {
            let ports = slice.ports.iter().map(|(n, p)| (n.as_str(), *p));
            if let Some(p) = semantics::endpoint_port(service_port, ports, port) {
                endpoints.extend(slice.ready.iter().map(|ip| SocketAddr::new(*ip, p)));
            }
        }
        endpoints.sort();
        endpoints.dedup();
        Some(endpoints)
    }

    /// The Service port of `service` whose traffic arrives at endpoint port
    /// `endpoint_port` ([`semantics::service_port_of`]), when the file holds
    /// the Service (and, for a named targetPort, its EndpointSlices).
    pub fn service_port_of(
        &self,
        namespace: &str,
        service: &str,
        endpoint_port: u16,
    ) -> Option<u16> {
        let entry = self.services.get(&key(Some(namespace), service))?;
        let by_target = || semantics::service_port_of(&entry.ports, [], endpoint_port);
        entry
            .slices
            .iter()
            .find_map(|slice| {
                let ports = slice.ports.iter().map(|(n, p)| (n.as_str(), *p));
                semantics::service_port_of(&entry.ports, ports, endpoint_port)
            })
            .or_else(by_target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn maps_service_port_to_ready_endpoints() {
        let mut index = EndpointIndex::default();
        index
            .add(
                "Service",
                &json!({"metadata": {"name": "web", "namespace": "shop"},
                        "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]}}),
            )
            .unwrap();
        index
            .add(
                "EndpointSlice",
                &json!({"metadata": {"name": "web-1", "namespace": "shop",
                                     "labels": {"kubernetes.io/service-name": "web"}},
                        "ports": [{"name": "http", "port": 8080}],
                        "endpoints": [
                            {"addresses": ["10.0.0.1"], "conditions": {"ready": true}},
                            {"addresses": ["10.0.0.2"], "conditions": {"ready": false}},
                            {"addresses": ["10.0.0.3"]}]}),
            )
            .unwrap();
        let found = index.lookup("shop", "web", 80).unwrap();
        assert_eq!(
            found,
            vec![
                "10.0.0.1:8080".parse().unwrap(),
                "10.0.0.3:8080".parse().unwrap()
            ]
        );
        assert_eq!(index.lookup("shop", "other", 80), None);
        assert!(index.lists("shop", "web") && !index.lists("shop", "other"));
    }

    #[test]
    fn slice_without_service_matches_by_port() {
        let mut index = EndpointIndex::default();
        index
            .add(
                "EndpointSlice",
                &json!({"metadata": {"labels": {"kubernetes.io/service-name": "api"}},
                        "ports": [{"port": 9000}],
                        "endpoints": [{"addresses": ["127.0.0.1"]}]}),
            )
            .unwrap();
        assert_eq!(
            index.lookup("default", "api", 9000).unwrap(),
            vec!["127.0.0.1:9000".parse().unwrap()]
        );
        let err = index
            .add("EndpointSlice", &json!({"metadata": {}, "endpoints": []}))
            .unwrap_err();
        assert!(err.contains("kubernetes.io/service-name"), "{err}");
    }

    #[test]
    fn inbound_traffic_finds_its_service_port() {
        let mut index = EndpointIndex::default();
        index
            .add(
                "Service",
                &json!({"metadata": {"name": "web", "namespace": "shop"},
                        "spec": {"ports": [{"name": "http", "port": 80, "targetPort": "web"},
                                           {"name": "admin", "port": 9000, "targetPort": 9090},
                                           {"name": "plain", "port": 7000}]}}),
            )
            .unwrap();
        // Without slices: numeric and unset targetPorts only.
        assert_eq!(index.service_port_of("shop", "web", 9090), Some(9000));
        assert_eq!(index.service_port_of("shop", "web", 7000), Some(7000));
        assert_eq!(index.service_port_of("shop", "web", 8080), None);
        index
            .add(
                "EndpointSlice",
                &json!({"metadata": {"name": "web-1", "namespace": "shop",
                                     "labels": {"kubernetes.io/service-name": "web"}},
                        "ports": [{"name": "http", "port": 8080}, {"name": "admin", "port": 9090}],
                        "endpoints": [{"addresses": ["10.0.0.1"]}]}),
            )
            .unwrap();
        assert_eq!(
            index.service_port_of("shop", "web", 8080),
            Some(80),
            "named targetPort"
        );
        assert_eq!(index.service_port_of("other", "web", 8080), None);
    }
}
