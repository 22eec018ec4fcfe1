//! One request through a destination's resilience stack, top to bottom:
//!
//! ```text
//! admission (rate limit → concurrency limit; the slot lives until the body ends)
//!   → route → request deadline (whole call)
//!     → retry loop (reason, attempts, replay rules, budget, Retry-After/backoff)
//!       → attempt: breaker → endpoint (P2C, outlier-aware) → per-try timeout
//!                  → upstream exchange → record (latency, outlier, breaker)
//! ```
//!
//! Each layer is a module; errors travel up as one typed [`CallError`] and
//! become a response (with `x-outrigger-error`) at the edge, here.

mod admission;
mod attempt;
mod breaker;
mod deadline;
mod error;
mod outcome;
mod retry;
#[cfg(test)]
mod testing;
#[cfg(test)]
mod tests;
mod upstream;

use std::sync::Arc;
use std::time::Instant;

use http::{Request, Response};
use hyper::body::Incoming;

use super::config::RouteConfig;
use super::guarded_body::with_guard;
use super::stack::DestinationStack;
use outrigger_http::body::ProxyBody;

pub use error::{CallError, Cause};
pub use retry::RequestBody;
pub use upstream::Upstream;

/// The response to a request, and why the proxy made it, if it did.
pub struct Served {
    pub response: Response<ProxyBody>,
    /// Set when the proxy answered itself (the typed `x-outrigger-error`).
    pub error: Option<Cause>,
    /// The `route` label of the route that served it.
    pub route: Arc<str>,
}

/// Runs one request through `stack`, sending through its kept-alive
/// connections. `started` is when the proxy received it.
pub async fn call(
    stack: Arc<DestinationStack>,
    request: Request<Incoming>,
    started: Instant,
) -> Served {
    serve(&stack, &stack.clients, request, started).await
}

/// [`call`] over any upstream.
pub async fn serve<U: Upstream, B: RequestBody>(
    stack: &DestinationStack,
    upstream: &U,
    request: Request<B>,
    started: Instant,
) -> Served {
    let route = stack
        .config
        .route(request.method(), request.uri().path(), request.headers());
    let slot = match admission::admit(stack).await {
        Ok(slot) => slot,
        Err(error) => return edge(Err(error), route),
    };
    let deadline = route.request_timeout.map(|t| started + t);
    let attempts = retry::with_retries(stack, upstream, route, request, deadline);
    let served = edge(
        deadline::within(stack, route, deadline, attempts).await,
        route,
    );
    // The concurrency slot is held until the response body has been sent.
    match slot {
        Some(slot) => Served {
            response: with_guard(served.response, slot),
            ..served
        },
        None => served,
    }
}

/// The edge: a typed error becomes its response here, and only here.
fn edge(result: Result<Response<ProxyBody>, CallError>, route: &RouteConfig) -> Served {
    let route = route.name.clone();
    match result {
        Ok(response) => Served {
            response,
            error: None,
            route,
        },
        Err(error) => Served {
            error: Some(error.cause()),
            response: error.into_response(),
            route,
        },
    }
}

/// The time now, on tokio's clock: the real one in the proxy, the paused one
/// in tests (without `test-util`, tokio reads `std::time::Instant::now()`).
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}
