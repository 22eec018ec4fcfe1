//! The EndpointSlice controller's job: one slice per Service with a
//! selector, listing the matching pods that have an address and are not
//! finished, `ready` from their Ready condition, ports from the Service's
//! targetPort (a number, or a container port's name). One slice per Service
//! (a named targetPort that resolves differently per pod takes the first
//! pod's number — real controllers split such pods into several slices).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, DeleteParams, ListParams, PostParams};

pub const MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by";
pub const MANAGER: &str = "outrigger-testnode";
const SERVICE_NAME: &str = "kubernetes.io/service-name";

fn ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn serving(pod: &Pod) -> bool {
    let status = pod.status.as_ref();
    pod.metadata.deletion_timestamp.is_none()
        && status.and_then(|s| s.pod_ip.as_ref()).is_some()
        && !matches!(
            status.and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        )
}

fn selects(selector: &BTreeMap<String, String>, pod: &Pod) -> bool {
    let labels = pod.metadata.labels.clone().unwrap_or_default();
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

fn container_port(pod: &Pod, name: &str) -> Option<i32> {
    pod.spec
        .iter()
        .flat_map(|s| {
            s.containers
                .iter()
                .chain(s.init_containers.iter().flatten())
        })
        .flat_map(|c| c.ports.iter().flatten())
        .find(|p| p.name.as_deref() == Some(name))
        .map(|p| p.container_port)
}

pub fn slice_name(service: &str) -> String {
    format!("{service}-{MANAGER}")
}

/// The slice `svc` should have, or None when it has no selector.
pub fn desired(svc: &Service, pods: &[Pod]) -> Option<EndpointSlice> {
    let name = svc.metadata.name.clone()?;
    let ns = svc.metadata.namespace.clone()?;
    let spec = svc.spec.as_ref()?;
    let selector = spec.selector.as_ref().filter(|s| !s.is_empty())?;
    let mut chosen: Vec<&Pod> = pods
        .iter()
        .filter(|p| p.metadata.namespace.as_deref() == Some(&ns))
        .filter(|p| serving(p) && selects(selector, p))
        .collect();
    chosen.sort_by_key(|p| p.metadata.name.clone());
    let ports = spec
        .ports
        .iter()
        .flatten()
        .filter_map(|port| {
            let target = match &port.target_port {
                None => Some(port.port),
                Some(IntOrString::Int(n)) => Some(*n),
                Some(IntOrString::String(n)) => chosen.iter().find_map(|p| container_port(p, n)),
            }?;
            Some(EndpointPort {
                name: port.name.clone(),
                port: Some(target),
                protocol: port.protocol.clone().or(Some("TCP".into())),
                app_protocol: port.app_protocol.clone(),
            })
        })
        .collect();
    let endpoints = chosen
        .iter()
        .map(|p| {
            let ok = ready(p);
            Endpoint {
                addresses: vec![p
                    .status
                    .as_ref()
                    .and_then(|s| s.pod_ip.clone())
                    .unwrap_or_default()],
                conditions: Some(EndpointConditions {
                    ready: Some(ok),
                    serving: Some(ok),
                    terminating: Some(false),
                }),
                node_name: p.spec.as_ref().and_then(|s| s.node_name.clone()),
                target_ref: Some(ObjectReference {
                    kind: Some("Pod".into()),
                    name: p.metadata.name.clone(),
                    namespace: p.metadata.namespace.clone(),
                    uid: p.metadata.uid.clone(),
                    ..Default::default()
                }),
                ..Default::default()
            }
        })
        .collect();
    Some(EndpointSlice {
        metadata: ObjectMeta {
            name: Some(slice_name(&name)),
            namespace: Some(ns),
            labels: Some(BTreeMap::from([
                (SERVICE_NAME.to_string(), name.clone()),
                (MANAGED_BY.to_string(), MANAGER.to_string()),
            ])),
            owner_references: svc.metadata.uid.clone().map(|uid| {
                vec![OwnerReference {
                    api_version: "v1".into(),
                    kind: "Service".into(),
                    name,
                    uid,
                    controller: Some(true),
                    block_owner_deletion: Some(true),
                }]
            }),
            ..Default::default()
        },
        address_type: "IPv4".into(),
        endpoints,
        ports: Some(ports),
    })
}

/// Brings the cluster's slices in line with its Services and Pods; deletes
/// ours whose Service is gone (no garbage collector runs here).
pub async fn reconcile(
    client: &kube::Client,
    services: &[Service],
    pods: &[Pod],
) -> anyhow::Result<()> {
    let all: Api<EndpointSlice> = Api::all(client.clone());
    let existing = all
        .list(&ListParams::default().labels(&format!("{MANAGED_BY}={MANAGER}")))
        .await?;
    let mut wanted: BTreeMap<(String, String), EndpointSlice> = BTreeMap::new();
    for svc in services {
        if let Some(slice) = desired(svc, pods) {
            let key = (
                slice.metadata.namespace.clone().unwrap_or_default(),
                slice.metadata.name.clone().unwrap_or_default(),
            );
            wanted.insert(key, slice);
        }
    }
    for old in existing.items {
        let ns = old.metadata.namespace.clone().unwrap_or_default();
        let name = old.metadata.name.clone().unwrap_or_default();
        let api: Api<EndpointSlice> = Api::namespaced(client.clone(), &ns);
        match wanted.remove(&(ns, name.clone())) {
            None => {
                api.delete(&name, &DeleteParams::default()).await?;
            }
            Some(mut new) => {
                if new.endpoints != old.endpoints || new.ports != old.ports {
                    new.metadata.resource_version = old.metadata.resource_version.clone();
                    api.replace(&name, &PostParams::default(), &new).await?;
                }
            }
        }
    }
    for ((ns, _), slice) in wanted {
        let api: Api<EndpointSlice> = Api::namespaced(client.clone(), &ns);
        api.create(&PostParams::default(), &slice).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, ip: &str, ready: bool) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "shop", "labels": {"app": "web"}, "uid": name},
            "spec": {"containers": [{"name": "app", "ports": [{"name": "http", "containerPort": 8080}]}]},
            "status": {"phase": "Running", "podIP": ip,
                       "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]}
        }))
        .unwrap()
    }

    #[test]
    fn matching_pods_with_named_target_ports_and_readiness() {
        let svc: Service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "shop", "uid": "s1"},
            "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}
        }))
        .unwrap();
        let mut other = pod("other", "10.77.1.9", true);
        other.metadata.labels = None;
        let slice = desired(
            &svc,
            &[
                pod("b", "10.77.1.3", false),
                pod("a", "10.77.1.2", true),
                other,
            ],
        )
        .unwrap();
        assert_eq!(
            slice.metadata.name.as_deref(),
            Some("web-outrigger-testnode")
        );
        assert_eq!(slice.ports.as_ref().unwrap()[0].port, Some(8080));
        let eps: Vec<(String, Option<bool>)> = slice
            .endpoints
            .iter()
            .map(|e| (e.addresses[0].clone(), e.conditions.as_ref().unwrap().ready))
            .collect();
        assert_eq!(
            eps,
            [
                ("10.77.1.2".to_string(), Some(true)),
                ("10.77.1.3".to_string(), Some(false))
            ]
        );
        assert_eq!(
            slice.endpoints[0]
                .target_ref
                .as_ref()
                .unwrap()
                .name
                .as_deref(),
            Some("a")
        );
    }
}
