//! The one error that travels up the request path, and the edge function that
//! turns it into the response the client sees.

use std::sync::Arc;
use std::time::Duration;

use http::{header, HeaderValue, Response};

use crate::stack::Breaker;
use outrigger_http::body::{full, ProxyBody};
use outrigger_http::error_response::{ErrorResponse, ProxyError, ERROR_HEADER};

/// Why the proxy answered a request itself: named in `x-outrigger-error` and
/// counted in `outrigger_proxy_errors_total{cause}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    Proxy(ProxyError),
    /// The circuit breaker is open and its fallback answered.
    CircuitOpen,
}

impl Cause {
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::Proxy(error) => error.cause(),
            Cause::CircuitOpen => "circuit-open",
        }
    }
}

/// A request the proxy answers itself, with what the answer needs.
pub enum CallError {
    Proxy {
        error: ProxyError,
        detail: String,
        /// Sent as `Retry-After` (rate limiting).
        retry_after: Option<Duration>,
    },
    /// The breaker's fallback response.
    CircuitOpen {
        breaker: Arc<Breaker>,
        retry_after: Duration,
    },
}

impl CallError {
    pub fn new(error: ProxyError, detail: impl Into<String>) -> Self {
        CallError::Proxy {
            error,
            detail: detail.into(),
            retry_after: None,
        }
    }

    pub fn cause(&self) -> Cause {
        match self {
            CallError::Proxy { error, .. } => Cause::Proxy(*error),
            CallError::CircuitOpen { .. } => Cause::CircuitOpen,
        }
    }

    /// The edge: the HTTP response for this error.
    pub fn into_response(self) -> Response<ProxyBody> {
        match self {
            CallError::Proxy {
                error,
                detail,
                retry_after,
            } => {
                let mut response = error.response(&detail);
                if let Some(wait) = retry_after {
                    response
                        .headers_mut()
                        .insert(header::RETRY_AFTER, retry_after_value(wait));
                }
                response
            }
            CallError::CircuitOpen {
                breaker,
                retry_after,
            } => {
                let settings = &breaker.settings;
                let mut response = Response::new(full(settings.fallback_body.clone()));
                *response.status_mut() = settings.fallback_status;
                let headers = response.headers_mut();
                headers.insert(ERROR_HEADER, HeaderValue::from_static("circuit-open"));
                if let Ok(content_type) = HeaderValue::from_str(&settings.fallback_content_type) {
                    headers.insert(header::CONTENT_TYPE, content_type);
                }
                headers.insert(header::RETRY_AFTER, retry_after_value(retry_after));
                response
            }
        }
    }
}

impl std::fmt::Debug for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Proxy { error, detail, .. } => write!(f, "{}: {detail}", error.cause()),
            CallError::CircuitOpen { retry_after, .. } => {
                write!(f, "circuit-open (retry after {retry_after:?})")
            }
        }
    }
}

/// Retry-After carries whole seconds; round up so clients never come back early.
fn retry_after_value(wait: Duration) -> HeaderValue {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    HeaderValue::from(secs.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_error_names_its_cause_and_rounds_retry_after_up() {
        let error = CallError::Proxy {
            error: ProxyError::RateLimited,
            detail: "too fast".into(),
            retry_after: Some(Duration::from_millis(1200)),
        };
        assert_eq!(error.cause().as_str(), "rate-limited");
        let response = error.into_response();
        assert_eq!(response.status(), 429);
        assert_eq!(response.headers()[ERROR_HEADER], "rate-limited");
        assert_eq!(response.headers()[header::RETRY_AFTER], "2");
        let response = CallError::new(ProxyError::Timeout, "slow").into_response();
        assert_eq!(response.status(), 504);
        assert!(!response.headers().contains_key(header::RETRY_AFTER));
    }

    #[test]
    fn short_waits_still_say_one_second() {
        assert_eq!(retry_after_value(Duration::from_millis(1)), "1");
        assert_eq!(retry_after_value(Duration::ZERO), "1");
        assert_eq!(retry_after_value(Duration::from_secs(3)), "3");
    }
}
