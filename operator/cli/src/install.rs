//! Finding the chart's objects in the operator's namespace: the operator
//! Deployment (by the chart's labels) and what its pod template says (the
//! TLS Secrets it mounts, its Lease name, the policy server's URL), the
//! Services by component, and a Service's ready endpoints.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ListParams};

use crate::connect::Kube;

/// Labels every object of the chart carries.
pub const PART_OF: &str = "app.kubernetes.io/part-of=outrigger";

/// The operator's defaults, where the Deployment does not say otherwise.
const DEFAULT_LEASE: &str = "outrigger-operator";
const DEFAULT_ADMIN_PORT: u16 = 9090;

pub struct Install {
    pub namespace: String,
    pub deployment: Option<Deployment>,
    pub lease_name: String,
    pub cluster_domain: String,
    /// Host of `--control-plane-url` (the name proxies check the policy
    /// server's certificate for).
    pub policy_host: Option<String>,
    pub policy_secret: String,
    pub webhook_secret: String,
    /// Whether the operator serves the injection webhook (the chart's
    /// `injector.enabled`: the Deployment passes its certificate).
    pub webhook_enabled: bool,
    pub admin_port: u16,
}

/// `component=` selector of the chart's labels.
pub fn selector(component: &str) -> String {
    format!("{PART_OF},app.kubernetes.io/component={component}")
}

pub async fn discover(kube: &Kube, namespace: &str) -> kube::Result<Install> {
    let deployments: Api<Deployment> = Api::namespaced(kube.client.clone(), namespace);
    let deployment = deployments
        .list(&ListParams::default().labels(&selector("operator")))
        .await?
        .items
        .into_iter()
        .next();
    let container = deployment
        .as_ref()
        .and_then(|d| d.spec.as_ref()?.template.spec.as_ref())
        .and_then(|pod| pod.containers.iter().find(|c| c.name == "operator"));
    let args: Vec<String> = container.and_then(|c| c.args.clone()).unwrap_or_default();
    let flag = |name: &str| {
        args.iter()
            .find_map(|a| a.strip_prefix(&format!("--{name}=")).map(str::to_string))
    };
    let secret_of = |volume: &str| {
        deployment
            .as_ref()
            .and_then(|d| d.spec.as_ref()?.template.spec.as_ref()?.volumes.as_ref())
            .and_then(|volumes| volumes.iter().find(|v| v.name == volume))
            .and_then(|v| v.secret.as_ref()?.secret_name.clone())
    };
    let admin_port = container
        .and_then(|c| c.ports.as_ref())
        .and_then(|ports| ports.iter().find(|p| p.name.as_deref() == Some("admin")))
        .and_then(|p| u16::try_from(p.container_port).ok())
        .unwrap_or(DEFAULT_ADMIN_PORT);
    let policy_host = flag("control-plane-url").map(|url| {
        let rest = url.split_once("://").map_or(url.as_str(), |(_, r)| r);
        let authority = rest.split('/').next().unwrap_or(rest);
        authority
            .rsplit_once(':')
            .map_or(authority, |(h, _)| h)
            .to_string()
    });
    Ok(Install {
        namespace: namespace.to_string(),
        lease_name: flag("lease-name").unwrap_or_else(|| DEFAULT_LEASE.into()),
        cluster_domain: flag("cluster-domain").unwrap_or_else(|| "cluster.local".into()),
        policy_host,
        policy_secret: secret_of("policy-tls").unwrap_or_else(|| "outrigger-policy-tls".into()),
        webhook_secret: secret_of("webhook-tls").unwrap_or_else(|| "outrigger-webhook-tls".into()),
        admin_port,
        // Without a Deployment to read, expect the chart's default (on).
        webhook_enabled: deployment.is_none() || flag("webhook-tls-cert").is_some(),
        deployment,
    })
}

/// The chart's Service of `component` (policy-server, webhook, metrics).
pub async fn service(
    kube: &Kube,
    namespace: &str,
    component: &str,
) -> kube::Result<Option<Service>> {
    let api: Api<Service> = Api::namespaced(kube.client.clone(), namespace);
    Ok(api
        .list(&ListParams::default().labels(&selector(component)))
        .await?
        .items
        .into_iter()
        .next())
}

/// `ip:port` of each ready endpoint of Service `name` for its port
/// `service_port` (by the port's name, as kube-proxy pairs them).
pub async fn ready_endpoints(
    kube: &Kube,
    service: &Service,
    service_port: i32,
) -> kube::Result<Vec<String>> {
    let namespace = service.metadata.namespace.clone().unwrap_or_default();
    let name = service.metadata.name.clone().unwrap_or_default();
    let port = service
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .and_then(|ports| ports.iter().find(|p| p.port == service_port));
    let port_name = port.and_then(|p| p.name.clone()).unwrap_or_default();
    let api: Api<EndpointSlice> = Api::namespaced(kube.client.clone(), &namespace);
    let slices = api
        .list(&ListParams::default().labels(&format!("kubernetes.io/service-name={name}")))
        .await?;
    let mut endpoints = Vec::new();
    for slice in slices.items {
        let Some(number) = slice
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.clone().unwrap_or_default() == port_name)
            .and_then(|p| p.port)
        else {
            continue;
        };
        for endpoint in slice.endpoints {
            let ready = endpoint
                .conditions
                .as_ref()
                .and_then(|c| c.ready)
                .unwrap_or(true);
            if !ready {
                continue;
            }
            for address in endpoint.addresses {
                let host = if address.contains(':') {
                    format!("[{address}]")
                } else {
                    address
                };
                endpoints.push(format!("{host}:{number}"));
            }
        }
    }
    endpoints.sort();
    Ok(endpoints)
}
