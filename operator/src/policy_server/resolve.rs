//! What a subscription resolves to in the compiled view.

use outrigger_api::semantics;
use outrigger_api::stream::{parse_pod_port, DestinationSnapshot, PolicySnapshot, Subscription};

use crate::compile::{Compiled, Destination, ObjectKey};

/// The Service and port an authority names: `name.ns[.svc[.<domain>]]:port`
/// or `ClusterIP:port`. Short names need the caller's namespace, so proxies
/// subscribe with at least `name.namespace`.
fn service_for<'a>(
    compiled: &'a Compiled,
    authority: &str,
    cluster_domain: &str,
) -> Option<(&'a ObjectKey, &'a Destination, u16)> {
    let (host, port) = authority.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .trim_end_matches('.');
    if host.parse::<std::net::IpAddr>().is_ok() {
        let (key, destination) = compiled
            .destinations
            .iter()
            .find(|(_, d)| d.cluster_ips.iter().any(|ip| ip == host))?;
        return Some((key, destination, port));
    }
    let labels: Vec<&str> = host.split('.').collect();
    let (name, namespace) = match labels.as_slice() {
        [name, ns] | [name, ns, "svc"] => (*name, *ns),
        [name, ns, "svc", domain @ ..] if domain.join(".") == cluster_domain => (*name, *ns),
        _ => return None,
    };
    let key = ObjectKey {
        namespace: namespace.to_string(),
        name: name.to_string(),
    };
    let (key, destination) = compiled.destinations.get_key_value(&key)?;
    Some((key, destination, port))
}

/// The Service that sends traffic to `port` of a pod: one whose EndpointSlices
/// list the pod with that port (ready or not), through the Service port
/// [`semantics::service_port_of`] finds. When several Services do, the first
/// by name with a policy for that port wins, else the first by name.
fn service_for_pod<'a>(
    compiled: &'a Compiled,
    pod_port: &str,
) -> Option<(&'a ObjectKey, &'a Destination, u16)> {
    let (namespace, pod, port) = parse_pod_port(pod_port)?;
    let first_of_namespace = ObjectKey {
        namespace: namespace.to_string(),
        name: String::new(),
    };
    let mut candidates = compiled
        .destinations
        .range(first_of_namespace..)
        .take_while(|(key, _)| key.namespace == namespace)
        .filter_map(|(key, destination)| {
            let pod_ports = destination.pods.get(pod)?;
            // The pod must listen there, and a Service port lead there.
            if !pod_ports.values().any(|p| *p == port) {
                return None;
            }
            let ports = pod_ports.iter().map(|(name, p)| (name.as_str(), *p));
            let service_port = semantics::service_port_of(&destination.ports, ports, port)?;
            Some((key, destination, service_port))
        });
    let first = candidates.next()?;
    let has_policy = |(_, d, port): &(&ObjectKey, &Destination, u16)| {
        semantics::select(d.policies.iter().map(|p| (p.port, p)), *port).is_some()
    };
    if has_policy(&first) {
        return Some(first);
    }
    Some(candidates.find(has_policy).unwrap_or(first))
}

/// The snapshot content for a subscription (`None`: unknown destination).
pub fn resolve(
    compiled: &Compiled,
    subscription: &Subscription,
    cluster_domain: &str,
) -> Option<DestinationSnapshot> {
    let (key, destination, port) = match subscription {
        Subscription::Destination(authority) => service_for(compiled, authority, cluster_domain)?,
        Subscription::Inbound(service) => {
            let (namespace, name) = service.split_once('/')?;
            let key = ObjectKey {
                namespace: namespace.into(),
                name: name.into(),
            };
            let (key, destination) = compiled.destinations.get_key_value(&key)?;
            // Inbound traffic is the Service's whole: its first port names it.
            (
                key,
                destination,
                destination.ports.first().map_or(0, |p| p.port),
            )
        }
        Subscription::Pod(pod_port) => service_for_pod(compiled, pod_port)?,
    };
    let service_port = destination.ports.iter().find(|p| p.port == port);
    let mut endpoints: Vec<String> = destination
        .endpoints
        .iter()
        .filter_map(|endpoint| {
            let ports = endpoint.ports.iter().map(|(name, p)| (name.as_str(), *p));
            let target = semantics::endpoint_port(service_port, ports, port)?;
            Some(if endpoint.ip.contains(':') {
                format!("[{}]:{target}", endpoint.ip)
            } else {
                format!("{}:{target}", endpoint.ip)
            })
        })
        .collect();
    endpoints.sort();
    endpoints.dedup();
    let policy =
        semantics::select(destination.policies.iter().map(|p| (p.port, p)), port).map(|p| {
            PolicySnapshot {
                name: p.snapshot_name(&key.namespace),
                generation: p.generation,
                spec: p.spec.clone(),
            }
        });
    Some(DestinationSnapshot {
        service: key.to_string(),
        port,
        endpoints,
        policy,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::compile;
    use serde_json::json;

    fn service(name: &str, ports: serde_json::Value) -> k8s_openapi::api::core::v1::Service {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "shop"},
            "spec": {"clusterIP": "10.96.0.7", "ports": ports}
        }))
        .unwrap()
    }

    fn slice(
        service: &str,
        ports: serde_json::Value,
        pods: &[(&str, &str, bool)],
    ) -> k8s_openapi::api::discovery::v1::EndpointSlice {
        let endpoints: Vec<_> = pods
            .iter()
            .map(|(pod, ip, ready)| {
                json!({"addresses": [ip], "conditions": {"ready": ready},
                       "targetRef": {"kind": "Pod", "namespace": "shop", "name": pod}})
            })
            .collect();
        serde_json::from_value(json!({
            "metadata": {"name": format!("{service}-x"), "namespace": "shop",
                         "labels": {"kubernetes.io/service-name": service}},
            "addressType": "IPv4", "ports": ports, "endpoints": endpoints
        }))
        .unwrap()
    }

    fn policy(
        name: &str,
        target: &str,
        port: Option<u16>,
    ) -> outrigger_api::policy::ResiliencePolicy {
        serde_json::from_value(json!({
            "apiVersion": "outrigger.dev/v1alpha1", "kind": "ResiliencePolicy",
            "metadata": {"name": name, "namespace": "shop", "generation": 1},
            "spec": {"targetRef": {"kind": "Service", "name": target, "port": port},
                     "rateLimit": {"requestsPerSecond": 5}}
        }))
        .unwrap()
    }

    fn resolved(compiled: &Compiled, pod_port: &str) -> Option<(String, u16, Option<String>)> {
        resolve(
            compiled,
            &Subscription::Pod(pod_port.into()),
            "cluster.local",
        )
        .map(|d| (d.service, d.port, d.policy.map(|p| p.name)))
    }

    #[test]
    fn a_pod_finds_the_service_and_port_that_send_it_traffic() {
        let compiled = compile(
            &[policy("web-limits", "web", Some(80))],
            &[
                service(
                    "web",
                    json!([{"name": "http", "port": 80, "targetPort": "http"},
                           {"name": "admin", "port": 9000, "targetPort": 9090}]),
                ),
                service("other", json!([{"name": "http", "port": 80}])),
            ],
            &[
                slice(
                    "web",
                    json!([{"name": "http", "port": 8080}, {"name": "admin", "port": 9090}]),
                    &[("web-1", "10.0.0.1", true), ("web-2", "10.0.0.2", false)],
                ),
                slice(
                    "other",
                    json!([{"name": "http", "port": 80}]),
                    &[("other-1", "10.0.0.3", true)],
                ),
            ],
        );
        let web_http = Some(("shop/web".into(), 80, Some("shop/web-limits".into())));
        // A named target port, resolved through the slice.
        assert_eq!(resolved(&compiled, "shop/web-1:8080"), web_http);
        // A pod not ready yet already has its policy.
        assert_eq!(resolved(&compiled, "shop/web-2:8080"), web_http);
        // Another port of the same pod: that Service port, whose policy is none.
        assert_eq!(
            resolved(&compiled, "shop/web-1:9090"),
            Some(("shop/web".into(), 9000, None))
        );
        // Unknown pod, port or namespace: nothing (the proxy keeps its defaults).
        assert_eq!(resolved(&compiled, "shop/web-9:8080"), None);
        assert_eq!(resolved(&compiled, "shop/web-1:1234"), None);
        assert_eq!(resolved(&compiled, "other/web-1:8080"), None);
        assert_eq!(resolved(&compiled, "shop/web-1"), None);
    }

    #[test]
    fn of_two_services_selecting_a_pod_the_one_with_a_policy_wins() {
        let ports = json!([{"name": "http", "port": 8080}]);
        let services = [
            service(
                "a-plain",
                json!([{"name": "http", "port": 80, "targetPort": 8080}]),
            ),
            service(
                "b-limited",
                json!([{"name": "http", "port": 80, "targetPort": 8080}]),
            ),
        ];
        let slices = [
            slice("a-plain", ports.clone(), &[("web-1", "10.0.0.1", true)]),
            slice("b-limited", ports, &[("web-1", "10.0.0.1", true)]),
        ];
        let compiled = compile(&[policy("limits", "b-limited", None)], &services, &slices);
        assert_eq!(
            resolved(&compiled, "shop/web-1:8080"),
            Some(("shop/b-limited".into(), 80, Some("shop/limits".into())))
        );
        let compiled = compile(&[], &services, &slices);
        assert_eq!(
            resolved(&compiled, "shop/web-1:8080"),
            Some(("shop/a-plain".into(), 80, None))
        );
    }
}
