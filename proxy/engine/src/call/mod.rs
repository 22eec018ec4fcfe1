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
mod body_time;
mod breaker;
mod deadline;
mod error;
mod grpc;
#[cfg(test)]
mod grpc_tests;
mod outcome;
mod retry;
#[cfg(test)]
mod testing;
#[cfg(test)]
mod tests;
mod upstream;

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use http::{Request, Response};
use hyper::body::Incoming;

use super::config::RouteConfig;
use super::guarded_body::with_guard;
use super::stack::DestinationStack;
use body_time::{Activity, Limits, RequestFacts, Shape, Touching};
use outrigger_http::body::ProxyBody;
use outrigger_http::error_response::ProxyError;
use outrigger_trace::RequestTrace;

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
/// connections. `started` is when the proxy received it; `trace`, its trace
/// when tracing is on (handed down to the attempts as an argument: in the
/// request's extensions it cost allocations on every request, BENCHMARKS.md
/// "Tracing's cost"); `stop` resolves when the proxy's drain timeout has run
/// out, which answers a request still waiting for its response with 503
/// `shutdown`.
pub async fn call(
    stack: Arc<DestinationStack>,
    request: Request<Incoming>,
    started: Instant,
    trace: Option<&RequestTrace>,
    stop: impl Future<Output = ()>,
) -> Served {
    let route = stack.config.route(
        request.method(),
        request_target(&request),
        request.headers(),
    );
    serve_route(&stack, &stack.clients, route, request, started, trace, stop).await
}

/// [`call`] over any upstream, untraced (the engine's tests script it).
pub async fn serve<U: Upstream, B: RequestBody>(
    stack: &DestinationStack,
    upstream: &U,
    request: Request<B>,
    started: Instant,
    stop: impl Future<Output = ()>,
) -> Served {
    // Matched first, so every answer (a refusal at admission, a shutdown)
    // is labelled by its route.
    let route = stack.config.route(
        request.method(),
        request_target(&request),
        request.headers(),
    );
    serve_route(stack, upstream, route, request, started, None, stop).await
}

/// Runs one request through `stack` under a route chosen beforehand: a
/// Gateway API route's backend is another Service's stack, serving the
/// timeouts and retry of the route (of the Service the client named) that
/// picked it.
pub async fn call_route(
    stack: Arc<DestinationStack>,
    route: &RouteConfig,
    request: Request<Incoming>,
    started: Instant,
    trace: Option<&RequestTrace>,
    stop: impl Future<Output = ()>,
) -> Served {
    serve_route(&stack, &stack.clients, route, request, started, trace, stop).await
}

/// The path and query routes match on (`/` when the request has none).
pub fn request_target<B>(request: &Request<B>) -> &str {
    request
        .uri()
        .path_and_query()
        .map_or("/", |target| target.as_str())
}

/// [`call_route`] over any upstream.
pub async fn serve_route<U: Upstream, B: RequestBody>(
    stack: &DestinationStack,
    upstream: &U,
    route: &RouteConfig,
    request: Request<B>,
    started: Instant,
    trace: Option<&RequestTrace>,
    stop: impl Future<Output = ()>,
) -> Served {
    // Pinned where it is made: `select!` then holds a pointer to the
    // exchange, not the exchange moved into its own state.
    let exchange = std::pin::pin!(exchange(stack, upstream, route, request, started, trace));
    tokio::select! {
        served = exchange => served,
        () = stop => edge(Err(CallError::new(
            ProxyError::Shutdown,
            "the proxy is shutting down and its drain timeout ran out before a response",
        )), route),
    }
}

async fn exchange<U: Upstream, B: RequestBody>(
    stack: &DestinationStack,
    upstream: &U,
    route: &RouteConfig,
    request: Request<B>,
    started: Instant,
    trace: Option<&RequestTrace>,
) -> Served {
    let slot = match admission::admit(stack).await {
        Ok(slot) => slot,
        Err(error) => return edge(Err(error), route),
    };
    // The route's request timeout, shortened by a gRPC client's grpc-timeout.
    let deadline = grpc::deadline(route.request_timeout, request.headers(), started);
    let facts = RequestFacts::of(request.method(), request.headers());
    // `timeouts.idle` bounds silence on the bodies of a policy's destinations.
    let idle = stack
        .config
        .policy
        .is_some()
        .then_some(stack.config.idle_timeout);
    // Shared with the response's limits only while a request body uploads.
    let activity = idle
        .filter(|_| !request.body().is_end_stream())
        .map(|_| Activity::new());
    let request = request.map(|body| match &activity {
        Some(activity) => activity.watch_request(body),
        None => Touching::unwatched(body),
    });
    // The deadline ends the attempts (see `deadline`).
    let result = retry::with_retries(stack, upstream, route, request, deadline, trace).await;
    let result = result.map(|response| {
        // The deadline covers a bounded body to its end; a stream's stopped
        // at its headers.
        let bounded = body_time::shape(facts, &response) == Shape::Bounded;
        let limits = Limits {
            deadline: deadline.filter(|_| bounded),
            idle,
            grpc: facts.grpc,
            route: route.name.clone(),
        };
        body_time::limit(stack, response, limits, activity)
    });
    let served = edge(result, route);
    // The concurrency slot is held until the response body has been sent.
    match slot {
        Some(slot) => Served {
            response: with_guard(served.response, slot),
            ..served
        },
        None => served,
    }
}

/// Admission alone (the rate limit, then the concurrency limit), for traffic
/// that does not go through [`serve`]: WebSocket and other upgrades, and
/// CONNECT tunnels. They meet the same limits as plain requests and hold
/// their slot while open; `Err` is the proxy's answer (429, 503 `overloaded`).
pub async fn admit(
    stack: &DestinationStack,
) -> Result<Option<tokio::sync::OwnedSemaphorePermit>, Served> {
    admission::admit(stack).await.map_err(|error| Served {
        error: Some(error.cause()),
        response: error.into_response(),
        // Not a route's: upgrades and tunnels are matched by none.
        route: "".into(),
    })
}

/// The edge: a typed error becomes its response here, and only here.
/// The proxy's own answer to a request no stack serves (no route matches, a
/// route's backend does not resolve), labelled with `route`.
pub fn refuse(error: ProxyError, detail: impl Into<String>, route: Arc<str>) -> Served {
    let error = CallError::new(error, detail);
    Served {
        error: Some(error.cause()),
        response: error.into_response(),
        route,
    }
}

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
