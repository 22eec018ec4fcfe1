//! Responses the proxy produces itself. Each names its cause in
//! `x-outrigger-error`, so a caller can tell the proxy's 502 from the app's.

use http::{header, HeaderValue, Response};
pub use outrigger_proxy_core::error::{ProxyError, ERROR_HEADER};

use super::body::{full, ProxyBody};

/// The response for a proxy-made error.
pub trait ErrorResponse {
    /// A small JSON body with the cause and a human-readable detail.
    fn response(self, detail: &str) -> Response<ProxyBody>;
}

impl ErrorResponse for ProxyError {
    fn response(self, detail: &str) -> Response<ProxyBody> {
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

/// gRPC clients read errors from `grpc-status`, not the HTTP status: a
/// proxy-made error for a gRPC request becomes a trailers-only response.
pub fn is_grpc(headers: &http::HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

/// Rewrites a proxy-made error response (one with `x-outrigger-error`) into
/// gRPC form: HTTP 200, `grpc-status` and `grpc-message` in the only headers.
pub fn grpc_error(response: Response<ProxyBody>) -> Response<ProxyBody> {
    let Some(cause) = response.headers().get(ERROR_HEADER).cloned() else {
        return response;
    };
    // https://grpc.github.io/grpc/core/md_doc_statuscodes.html
    let code = match cause.to_str().unwrap_or("") {
        "timeout" => "4",                        // DEADLINE_EXCEEDED
        "rate-limited" | "overloaded" => "8",    // RESOURCE_EXHAUSTED
        "bad-request" | "no-destination" => "3", // INVALID_ARGUMENT
        // Gateway API: no route for the method (HTTP 404) and a backend
        // that does not resolve (500) are not transient: clients must not
        // retry them as they would UNAVAILABLE.
        "no-route" => "12",        // UNIMPLEMENTED
        "invalid-backend" => "13", // INTERNAL
        _ => "14",                 // UNAVAILABLE
    };
    let mut grpc = Response::new(super::body::empty());
    let headers = grpc.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    headers.insert("grpc-status", HeaderValue::from_static(code));
    let message = format!("outrigger: {}", cause.to_str().unwrap_or("error"));
    if let Ok(value) = HeaderValue::from_str(&message) {
        headers.insert("grpc-message", value);
    }
    for name in [ERROR_HEADER, "retry-after"] {
        if let Some(value) = response.headers().get(name) {
            headers.insert(name, value.clone());
        }
    }
    grpc
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;

    #[test]
    fn grpc_errors_use_grpc_status() {
        let r = grpc_error(ProxyError::Timeout.response("slow"));
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()["grpc-status"], "4");
        assert_eq!(r.headers()[ERROR_HEADER], "timeout");
        let r = grpc_error(ProxyError::ConnectFailure.response("down"));
        assert_eq!(r.headers()["grpc-status"], "14");
        // Not transient: clients must not retry them as UNAVAILABLE.
        let r = grpc_error(ProxyError::NoRoute.response("no rule"));
        assert_eq!(r.headers()["grpc-status"], "12");
        let r = grpc_error(ProxyError::InvalidBackend.response("missing"));
        assert_eq!(r.headers()["grpc-status"], "13");
    }

    #[test]
    fn response_names_cause() {
        let r = ProxyError::Timeout.response("no response within 1s");
        assert_eq!(r.status(), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(r.headers()[ERROR_HEADER], "timeout");
    }
}
