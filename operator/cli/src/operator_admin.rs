//! Asking the operator what only it knows (its connected proxies, its
//! version, whether it is ready): its admin endpoint, replica by replica
//! (each replica knows only the proxies streaming from it). Reached
//! through the API server's pod proxy, as `kubectl get --raw
//! /api/v1/namespaces/NS/pods/POD:9090/proxy/...` does, or at URLs given
//! with `--admin-url` (after a `kubectl port-forward`, or in tests).

use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use outrigger_operator::admin::ProxiesView;

use crate::connect::{GlobalArgs, Kube};
use crate::install::Install;

/// One replica's admin endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replica {
    Url(String),
    Pod {
        namespace: String,
        pod: String,
        port: u16,
    },
}

impl Replica {
    /// How messages name it.
    pub fn name(&self) -> String {
        match self {
            Replica::Url(url) => url.clone(),
            Replica::Pod { pod, .. } => pod.clone(),
        }
    }
}

/// The replicas to ask: the `--admin-url`s, else the running pods of the
/// operator Deployment.
pub async fn replicas(
    kube: &Kube,
    args: &GlobalArgs,
    install: &Install,
) -> anyhow::Result<Vec<Replica>> {
    if !args.admin_urls.is_empty() {
        return Ok(args.admin_urls.iter().cloned().map(Replica::Url).collect());
    }
    let Some(labels) = install
        .deployment
        .as_ref()
        .and_then(|d| d.spec.as_ref()?.selector.match_labels.clone())
    else {
        return Ok(Vec::new());
    };
    let selector: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let pods: Api<Pod> = Api::namespaced(kube.client.clone(), &install.namespace);
    let pods = pods
        .list(&ListParams::default().labels(&selector.join(",")))
        .await?;
    Ok(pods
        .items
        .into_iter()
        .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
        .filter_map(|p| p.metadata.name)
        .map(|pod| Replica::Pod {
            namespace: install.namespace.clone(),
            pod,
            port: install.admin_port,
        })
        .collect())
}

/// GET `path` of a replica's admin endpoint: (status, body).
pub async fn get(kube: &Kube, replica: &Replica, path: &str) -> anyhow::Result<(u16, String)> {
    match replica {
        Replica::Url(base) => {
            get_url(
                &format!("{}{path}", base.trim_end_matches('/')),
                kube.timeout,
            )
            .await
        }
        Replica::Pod {
            namespace,
            pod,
            port,
        } => {
            let uri = format!("/api/v1/namespaces/{namespace}/pods/{pod}:{port}/proxy{path}");
            let request = http::Request::get(uri).body(Vec::new())?;
            match kube.client.request_text(request).await {
                Ok(body) => Ok((200, body)),
                Err(kube::Error::Api(status)) => Ok((status.code, status.message)),
                Err(err) => Err(err.into()),
            }
        }
    }
}

async fn get_url(url: &str, timeout: Duration) -> anyhow::Result<(u16, String)> {
    let uri: http::Uri = url.parse()?;
    anyhow::ensure!(
        uri.scheme_str() == Some("http"),
        "--admin-url {url}: only http:// (the admin endpoint is plaintext)"
    );
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Empty<bytes::Bytes>>();
    let response = tokio::time::timeout(timeout, client.get(uri))
        .await
        .map_err(|_| anyhow::anyhow!("{url}: no answer within {timeout:?}"))??;
    let status = response.status().as_u16();
    let body = tokio::time::timeout(timeout, response.into_body().collect())
        .await
        .map_err(|_| anyhow::anyhow!("{url}: body not read within {timeout:?}"))??
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// `/proxies` of a replica.
pub async fn proxies(kube: &Kube, replica: &Replica) -> anyhow::Result<ProxiesView> {
    let (status, body) = get(kube, replica, "/proxies").await?;
    anyhow::ensure!(status == 200, "/proxies answered {status}: {}", body.trim());
    serde_json::from_str(&body)
        .map_err(|e| anyhow::anyhow!("/proxies is not what this CLI reads: {e}"))
}
