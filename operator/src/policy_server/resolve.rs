//! What a subscription resolves to in the compiled view.

use outrigger_api::stream::{DestinationSnapshot, PolicySnapshot, Subscription};

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
    };
    let service_port = destination.ports.iter().find(|p| p.port == port);
    let mut endpoints: Vec<String> = destination
        .endpoints
        .iter()
        .filter_map(|endpoint| {
            let target = match service_port {
                Some(sp) => endpoint
                    .ports
                    .get(&sp.name)
                    .copied()
                    .or(sp.target_port)
                    .or_else(|| {
                        // A single unnamed endpoint port serves any Service port.
                        let mut ports = endpoint.ports.values();
                        match (ports.next(), ports.next()) {
                            (Some(only), None) => Some(*only),
                            _ => None,
                        }
                    })?,
                // A port the Service does not declare: the endpoints' own.
                None => endpoint.ports.values().copied().find(|p| *p == port)?,
            };
            Some(if endpoint.ip.contains(':') {
                format!("[{}]:{target}", endpoint.ip)
            } else {
                format!("{}:{target}", endpoint.ip)
            })
        })
        .collect();
    endpoints.sort();
    endpoints.dedup();
    let policy = destination
        .policies
        .iter()
        .find(|p| p.port == Some(port))
        .or_else(|| destination.policies.iter().find(|p| p.port.is_none()))
        .map(|p| PolicySnapshot {
            name: p.policy.to_string(),
            generation: p.generation,
            spec: p.spec.clone(),
        });
    Some(DestinationSnapshot {
        service: key.to_string(),
        port,
        endpoints,
        policy,
    })
}
