//! Pooled upstream clients: one for HTTP/1.1, one for HTTP/2 (prior knowledge).
//! A request leaves in the protocol it arrived in, so gRPC stays HTTP/2.

use std::time::Duration;

use http::{Request, Response, Version};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::body::ProxyBody;
use crate::connect::Connector;

#[derive(Clone)]
pub struct UpstreamClients {
    http1: Client<Connector, ProxyBody>,
    http2: Client<Connector, ProxyBody>,
}

impl UpstreamClients {
    pub fn new(connector: Connector, pool_idle_timeout: Duration) -> Self {
        let mut builder = Client::builder(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(pool_idle_timeout)
            .pool_max_idle_per_host(64);
        let http1 = builder.build(connector.clone());
        builder
            .http2_only(true)
            .http2_keep_alive_interval(Duration::from_secs(20))
            .http2_keep_alive_timeout(Duration::from_secs(10));
        let http2 = builder.build(connector);
        UpstreamClients { http1, http2 }
    }

    pub async fn send(
        &self,
        request: Request<ProxyBody>,
    ) -> Result<Response<Incoming>, hyper_util::client::legacy::Error> {
        if request.version() == Version::HTTP_2 {
            self.http2.request(request).await
        } else {
            self.http1.request(request).await
        }
    }
}
