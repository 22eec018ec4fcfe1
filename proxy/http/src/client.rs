//! Upstream clients: HTTP/1.1 connections kept alive per target, and hyper's
//! pooled client for HTTP/2 (prior knowledge), whose connections multiplex.
//! A request leaves in the protocol it arrived in, so gRPC stays HTTP/2.

use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response, Version};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::body::{incoming, ProxyBody};
use super::h1_pool::{Http1Pool, SendError};
use outrigger_proxy_core::addr::HostPort;
use outrigger_transport::connect::Connector;

/// Idle HTTP/1.1 connections kept per target.
const MAX_IDLE_PER_TARGET: usize = 64;

#[derive(Clone)]
pub struct UpstreamClients {
    http1: Http1Pool,
    http2: Client<Connector, ProxyBody>,
}

/// Why an upstream exchange produced no response.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error(transparent)]
    Http1(#[from] SendError),
    #[error(transparent)]
    Http2(#[from] hyper_util::client::legacy::Error),
}

impl UpstreamClients {
    pub fn new(connector: Connector, pool_idle_timeout: Duration) -> Self {
        let http1 = Http1Pool::new(connector.clone(), pool_idle_timeout, MAX_IDLE_PER_TARGET);
        let http2 = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(pool_idle_timeout)
            .http2_only(true)
            .http2_keep_alive_interval(Duration::from_secs(20))
            .http2_keep_alive_timeout(Duration::from_secs(10))
            .build(connector);
        UpstreamClients { http1, http2 }
    }

    /// Sends `request` to `target`. HTTP/1.1 requests carry an origin-form
    /// URI; HTTP/2 ones an absolute URI naming `target` (the pool's key).
    pub async fn send(
        &self,
        target: &Arc<HostPort>,
        request: Request<ProxyBody>,
    ) -> Result<Response<ProxyBody>, UpstreamError> {
        if request.version() == Version::HTTP_2 {
            let response = self.http2.request(request).await?;
            Ok(response.map(incoming))
        } else {
            Ok(self.http1.send(target, request).await?)
        }
    }
}
