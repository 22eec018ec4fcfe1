//! Why the proxy answered a request itself instead of the upstream: one
//! typed cause, named on the wire in `x-outrigger-error` and in metrics.

use http::StatusCode;

pub const ERROR_HEADER: &str = "x-outrigger-error";

/// Why the proxy answered instead of the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyError {
    /// The upstream could not be connected to.
    ConnectFailure,
    /// The upstream closed or reset the connection mid-exchange.
    UpstreamReset,
    /// The request timed out.
    Timeout,
    /// The request names no destination the proxy can reach.
    NoDestination,
    /// The request would loop back into the proxy.
    Loop,
    /// The request is malformed.
    BadRequest,
    /// The destination's concurrency limit shed the request.
    Overloaded,
    /// The inbound rate limit refused the request.
    RateLimited,
    /// The destination is known but has no ready endpoints.
    NoEndpoints,
    /// The proxy is shutting down and its drain timeout ran out before the
    /// upstream answered.
    Shutdown,
    /// Gateway API routes decide the destination's routing and none matches
    /// the request.
    NoRoute,
    /// The route's backend is a reference that does not resolve, or every
    /// backend weighs 0 (Gateway API asks for a 500).
    InvalidBackend,
}

impl ProxyError {
    pub fn cause(self) -> &'static str {
        match self {
            ProxyError::ConnectFailure => "connect-failure",
            ProxyError::UpstreamReset => "upstream-reset",
            ProxyError::Timeout => "timeout",
            ProxyError::NoDestination => "no-destination",
            ProxyError::Loop => "loop-detected",
            ProxyError::BadRequest => "bad-request",
            ProxyError::Overloaded => "overloaded",
            ProxyError::RateLimited => "rate-limited",
            ProxyError::NoEndpoints => "no-endpoints",
            ProxyError::Shutdown => "shutdown",
            ProxyError::NoRoute => "no-route",
            ProxyError::InvalidBackend => "invalid-backend",
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            ProxyError::ConnectFailure | ProxyError::UpstreamReset => StatusCode::BAD_GATEWAY,
            ProxyError::Timeout => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::NoDestination | ProxyError::BadRequest => StatusCode::BAD_REQUEST,
            ProxyError::Loop => StatusCode::LOOP_DETECTED,
            ProxyError::Overloaded | ProxyError::NoEndpoints | ProxyError::Shutdown => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ProxyError::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ProxyError::NoRoute => StatusCode::NOT_FOUND,
            ProxyError::InvalidBackend => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// An error and its sources on one line: hyper's top-level messages alone
/// ("client error (Connect)") do not say what went wrong.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
