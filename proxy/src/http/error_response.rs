//! Responses the proxy produces itself. Each names its cause in
//! `x-outrigger-error`, so a caller can tell the proxy's 502 from the app's.

use http::{header, HeaderValue, Response, StatusCode};

use super::body::{full, ProxyBody};

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
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            ProxyError::ConnectFailure | ProxyError::UpstreamReset => StatusCode::BAD_GATEWAY,
            ProxyError::Timeout => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::NoDestination | ProxyError::BadRequest => StatusCode::BAD_REQUEST,
            ProxyError::Loop => StatusCode::LOOP_DETECTED,
        }
    }

    /// A small JSON body with the cause and a human-readable detail.
    pub fn response(self, detail: &str) -> Response<ProxyBody> {
        let body = serde_json::json!({ "error": self.cause(), "detail": detail }).to_string();
        let mut response = Response::new(full(body));
        *response.status_mut() = self.status();
        let headers = response.headers_mut();
        headers.insert(ERROR_HEADER, HeaderValue::from_static(self.cause()));
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_names_cause() {
        let r = ProxyError::Timeout.response("no response within 1s");
        assert_eq!(r.status(), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(r.headers()[ERROR_HEADER], "timeout");
    }
}
