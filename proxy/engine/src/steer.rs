//! Gateway API routing, before the resilience stack: the route a request
//! matches decides which Service serves it (a backend picked by weight) and
//! how its headers change; the backend's stack then runs the call with that
//! route's timeouts and retry ([`call_route`]). A destination whose routes do
//! neither (`DestinationConfig::steers` false) never comes here.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use http::Request;
use hyper::body::Incoming;

use crate::cache::Engine;
use crate::call::{call_route, refuse, request_target, Served};
use crate::stack::DestinationStack;
use outrigger_api::semantics::DEFAULT_ROUTE;
use outrigger_proxy_core::error::ProxyError;
use outrigger_trace::RequestTrace;

/// Serves `request`, which named `stack`'s destination, through the route
/// it matches.
pub async fn steer(
    engine: &Engine,
    stack: &Arc<DestinationStack>,
    mut request: Request<Incoming>,
    started: Instant,
    trace: Option<&RequestTrace>,
    stop: impl Future<Output = ()>,
) -> Served {
    let config = &stack.config;
    let Some(route) = config.matched_route(
        request.method(),
        request_target(&request),
        request.headers(),
    ) else {
        return refuse(
            ProxyError::NoRoute,
            "no route of the destination matches the request",
            DEFAULT_ROUTE.into(),
        );
    };
    if let Some(edits) = &route.request_headers {
        edits.apply(request.headers_mut());
    }
    let (serving, backend) = match &route.backends {
        None => (stack.clone(), None),
        Some(backends) => {
            let Some(backend) = backends.pick(|total| rand::random_range(0..total)) else {
                return refuse(
                    ProxyError::InvalidBackend,
                    "every backend of the route weighs 0",
                    route.name.clone(),
                );
            };
            if let Some(why) = backend.invalid() {
                return refuse(ProxyError::InvalidBackend, why, route.name.clone());
            }
            if let Some(edits) = &backend.request_headers {
                edits.apply(request.headers_mut());
            }
            let serving = engine
                .backend_stack(backend.host_port(&engine.matcher.cluster_domain))
                .await;
            // Both labels are stack labels (capped like every destination's),
            // the route's name comes from the policy: no client chooses a series.
            engine
                .metrics
                .route_backend_requests
                .with_label_values(&["outbound", &stack.label, &route.name, &serving.label])
                .inc();
            (serving, Some(backend))
        }
    };
    let mut served = call_route(serving, route, request, started, trace, stop).await;
    let headers = served.response.headers_mut();
    if let Some(edits) = &route.response_headers {
        edits.apply(headers);
    }
    if let Some(edits) = backend.and_then(|b| b.response_headers.as_ref()) {
        edits.apply(headers);
    }
    served
}
