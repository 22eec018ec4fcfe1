//! Keeps something alive (a concurrency slot) until a response body is done.

use http::Response;
use http_body_util::BodyExt;

use outrigger_http::body::ProxyBody;
use outrigger_http::body_end::{OnEnd, WithEnd};

/// Released when the body ends (not when hyper gets round to dropping it).
struct Release<G>(G);

impl<G: Send + 'static> OnEnd for Release<G> {
    fn ended(self) {}
}

/// The response with `guard` dropped when its body ends (or is dropped).
pub fn with_guard<G: Send + 'static>(
    response: Response<ProxyBody>,
    guard: G,
) -> Response<ProxyBody> {
    response.map(|inner| WithEnd::new(inner, Release(guard)).boxed_unsync())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    struct Flag(Arc<AtomicBool>);
    impl Drop for Flag {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn guard_lives_until_body_ends() {
        let dropped = Arc::new(AtomicBool::new(false));
        let response = with_guard(
            Response::new(outrigger_http::body::full("abc")),
            Flag(dropped.clone()),
        );
        assert!(!dropped.load(Ordering::SeqCst));
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"abc");
        assert!(dropped.load(Ordering::SeqCst));
    }
}
