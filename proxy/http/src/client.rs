//! Upstream clients: HTTP/1.1 connections kept alive per target, and one
//! HTTP/2 connection (prior knowledge) per target that requests multiplex on.
//! A request leaves in the protocol it arrived in, so gRPC stays HTTP/2.

use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response, Version};

use super::body::ProxyBody;
use super::h1_pool::Http1Pool;
use super::h2_pool::Http2Pool;
use super::send_error::SendError;
use outrigger_proxy_core::addr::HostPort;
use outrigger_transport::connect::Connector;

/// Idle HTTP/1.1 connections kept per target.
const MAX_IDLE_PER_TARGET: usize = 64;

#[derive(Clone)]
pub struct UpstreamClients {
    http1: Http1Pool,
    http2: Http2Pool,
}

impl UpstreamClients {
    pub fn new(connector: Connector, pool_idle_timeout: Duration) -> Self {
        let http1 = Http1Pool::new(connector.clone(), pool_idle_timeout, MAX_IDLE_PER_TARGET);
        let http2 = Http2Pool::new(connector, pool_idle_timeout);
        UpstreamClients { http1, http2 }
    }

    /// Sends `request` to `target`. HTTP/1.1 requests carry an origin-form
    /// URI; HTTP/2 ones an absolute URI whose authority is the one the
    /// upstream sees (the client's).
    pub async fn send(
        &self,
        target: &Arc<HostPort>,
        request: Request<ProxyBody>,
    ) -> Result<Response<ProxyBody>, SendError> {
        if request.version() == Version::HTTP_2 {
            self.http2.send(target, request).await
        } else {
            self.http1.send(target, request).await
        }
    }
}
