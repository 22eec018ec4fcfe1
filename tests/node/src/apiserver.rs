//! Pods reaching the API server as in a cluster: the `kubernetes` Service in
//! `default` (created if the server has none), an EndpointSlice for it that
//! points at a relay the node runs on its bridge address (port 6443), and
//! the relay forwarding each connection to the API server's own (loopback)
//! address from the kubeconfig. Pods' traffic to the ClusterIP is DNATed to
//! the relay by the node's Service rules (kubeproxy.rs), so it stays on
//! addresses the node created. Also the service-account files: the API
//! server's CA (PEM) and tokens from the TokenRequest API.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};

use anyhow::{Context, Result};
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::core::v1::{Pod, Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, PostParams};
use kube::Client;
use tokio_util::sync::CancellationToken;

/// The relay's port on the bridge address.
pub const RELAY_PORT: u16 = 6443;
const SLICE: &str = "kubernetes-outrigger-testnode";
const MANAGER: &str = "outrigger-testnode-apiserver";

/// What pods need to reach the API server.
#[derive(Debug, Clone)]
pub struct Access {
    /// The `kubernetes` Service's ClusterIP.
    pub service_ip: Ipv4Addr,
    pub service_port: u16,
    /// The API server's CA, PEM.
    pub ca_pem: String,
}

impl Access {
    /// The env every container gets (before its own).
    pub fn env(&self) -> Vec<(String, String)> {
        let (ip, port) = (self.service_ip, self.service_port);
        [
            ("KUBERNETES_SERVICE_HOST", ip.to_string()),
            ("KUBERNETES_SERVICE_PORT", port.to_string()),
            ("KUBERNETES_SERVICE_PORT_HTTPS", port.to_string()),
            ("KUBERNETES_PORT", format!("tcp://{ip}:{port}")),
            (
                &format!("KUBERNETES_PORT_{port}_TCP") as &str,
                format!("tcp://{ip}:{port}"),
            ),
            (
                &format!("KUBERNETES_PORT_{port}_TCP_PROTO"),
                "tcp".to_string(),
            ),
            (
                &format!("KUBERNETES_PORT_{port}_TCP_PORT"),
                port.to_string(),
            ),
            (&format!("KUBERNETES_PORT_{port}_TCP_ADDR"), ip.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }
}

/// Standard base64 (with padding), for PEM.
fn base64(bytes: &[u8]) -> String {
    const TABLE: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(TABLE[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// DER certificates as PEM.
pub fn pem(certs: &[Vec<u8>]) -> String {
    let mut out = String::new();
    for der in certs {
        out.push_str("-----BEGIN CERTIFICATE-----\n");
        let b64 = base64(der);
        for line in b64.as_bytes().chunks(64) {
            out.push_str(std::str::from_utf8(line).unwrap_or_default());
            out.push('\n');
        }
        out.push_str("-----END CERTIFICATE-----\n");
    }
    out
}

/// The `kubernetes` Service, created when missing (the ClusterIP comes from
/// the server's range).
async fn service(client: &Client) -> Result<Service> {
    let api: Api<Service> = Api::namespaced(client.clone(), "default");
    if let Some(svc) = api.get_opt("kubernetes").await? {
        return Ok(svc);
    }
    let svc = Service {
        metadata: ObjectMeta {
            name: Some("kubernetes".into()),
            namespace: Some("default".into()),
            labels: Some(BTreeMap::from([
                ("component".to_string(), "apiserver".to_string()),
                ("provider".to_string(), "kubernetes".to_string()),
            ])),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            ports: Some(vec![ServicePort {
                name: Some("https".into()),
                port: 443,
                protocol: Some("TCP".into()),
                target_port: Some(IntOrString::Int(i32::from(RELAY_PORT))),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        status: None,
    };
    match api.create(&PostParams::default(), &svc).await {
        Ok(s) => Ok(s),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(api.get("kubernetes").await?),
        Err(e) => Err(e.into()),
    }
}

/// The slice sending the Service to the relay.
pub fn slice(host_ip: Ipv4Addr) -> EndpointSlice {
    EndpointSlice {
        metadata: ObjectMeta {
            name: Some(SLICE.into()),
            namespace: Some("default".into()),
            labels: Some(BTreeMap::from([
                (
                    "kubernetes.io/service-name".to_string(),
                    "kubernetes".to_string(),
                ),
                (
                    crate::endpointslices::MANAGED_BY.to_string(),
                    MANAGER.to_string(),
                ),
            ])),
            ..Default::default()
        },
        address_type: "IPv4".into(),
        endpoints: vec![Endpoint {
            addresses: vec![host_ip.to_string()],
            conditions: Some(EndpointConditions {
                ready: Some(true),
                serving: Some(true),
                terminating: Some(false),
            }),
            ..Default::default()
        }],
        ports: Some(vec![EndpointPort {
            name: Some("https".into()),
            port: Some(i32::from(RELAY_PORT)),
            protocol: Some("TCP".into()),
            app_protocol: None,
        }]),
    }
}

async fn relay(listener: tokio::net::TcpListener, upstream: String, stop: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.cancelled() => return,
        };
        let Ok((mut inbound, _)) = accepted else {
            continue;
        };
        let (upstream, stop) = (upstream.clone(), stop.clone());
        tokio::spawn(async move {
            let Ok(mut outbound) = tokio::net::TcpStream::connect(&upstream).await else {
                return;
            };
            tokio::select! {
                _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                _ = stop.cancelled() => {}
            }
        });
    }
}

/// Sets up the Service, its slice and the relay (until `stop`).
pub async fn setup(client: &Client, host_ip: Ipv4Addr, stop: CancellationToken) -> Result<Access> {
    let config = kube::Config::infer().await.context("kubeconfig")?;
    let host = config.cluster_url.host().context("API server host")?;
    let port = config.cluster_url.port_u16().unwrap_or(443);
    let upstream = format!(
        "{}:{port}",
        host.trim_start_matches('[').trim_end_matches(']')
    );
    let ca_pem = match (&config.root_cert_file, &config.root_cert) {
        (Some(file), _) => std::fs::read_to_string(file).context("CA file")?,
        (None, Some(der)) => pem(der),
        (None, None) => String::new(),
    };
    let listener = tokio::net::TcpListener::bind(SocketAddr::from((host_ip, RELAY_PORT)))
        .await
        .context("relay to the API server")?;
    tokio::spawn(relay(listener, upstream, stop));
    let svc = service(client).await.context("the kubernetes Service")?;
    let spec = svc.spec.unwrap_or_default();
    let service_ip: Ipv4Addr = spec
        .cluster_ip
        .as_deref()
        .unwrap_or_default()
        .parse()
        .context("the kubernetes Service's ClusterIP")?;
    let service_port = spec
        .ports
        .iter()
        .flatten()
        .map(|p| p.port as u16)
        .next()
        .unwrap_or(443);
    let api: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    let mut wanted = slice(host_ip);
    match api.get_opt(SLICE).await? {
        Some(old) => {
            wanted.metadata.resource_version = old.metadata.resource_version;
            api.replace(SLICE, &PostParams::default(), &wanted).await?;
        }
        None => {
            api.create(&PostParams::default(), &wanted).await?;
        }
    }
    Ok(Access {
        service_ip,
        service_port,
        ca_pem,
    })
}

/// A token for the pod's service account from the TokenRequest API, bound
/// to the pod; with its expiry in seconds from now.
pub async fn token(
    client: &Client,
    pod: &Pod,
    audience: Option<&str>,
    expiration_seconds: Option<i64>,
) -> Result<(String, i64)> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let sa = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.as_deref())
        .filter(|s| !s.is_empty())
        .unwrap_or("default");
    let request = TokenRequest {
        metadata: ObjectMeta::default(),
        spec: TokenRequestSpec {
            audiences: audience.map(|a| vec![a.to_string()]).unwrap_or_default(),
            expiration_seconds: Some(expiration_seconds.unwrap_or(3600)),
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: pod.metadata.name.clone(),
                uid: pod.metadata.uid.clone(),
            }),
        },
        status: None,
    };
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    let mut issued = api
        .create_token_request(sa, &PostParams::default(), &request)
        .await;
    if matches!(&issued, Err(kube::Error::Api(e)) if e.code == 404) && sa == "default" {
        // The service-account controller's part: every namespace has a
        // `default` account.
        let account = ServiceAccount {
            metadata: ObjectMeta {
                name: Some("default".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        if let Err(e) = api.create(&PostParams::default(), &account).await {
            tracing::debug!(%ns, error = %e, "default service account not created");
        }
        issued = api
            .create_token_request(sa, &PostParams::default(), &request)
            .await;
    }
    let issued = issued
        .with_context(|| {
            format!("TokenRequest for service account {ns}/{sa} failed (does the API server issue service-account tokens?)")
        })?;
    let status = issued
        .status
        .context("TokenRequest answered without a token")?;
    let left = (status.expiration_timestamp.0 - k8s_openapi::jiff::Timestamp::now()).get_seconds();
    Ok((status.token, left))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_pads_like_the_standard() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
        let p = pem(&[vec![0u8; 50]]);
        assert!(p.starts_with("-----BEGIN CERTIFICATE-----\n"));
        assert!(p.lines().all(|l| l.len() <= 64));
    }

    #[test]
    fn env_names_follow_the_service_links() {
        let a = Access {
            service_ip: Ipv4Addr::new(10, 96, 0, 1),
            service_port: 443,
            ca_pem: String::new(),
        };
        let env: BTreeMap<String, String> = a.env().into_iter().collect();
        assert_eq!(env["KUBERNETES_SERVICE_HOST"], "10.96.0.1");
        assert_eq!(env["KUBERNETES_SERVICE_PORT"], "443");
        assert_eq!(env["KUBERNETES_PORT_443_TCP_ADDR"], "10.96.0.1");
    }
}
