//! Keeps something alive (a concurrency slot) until a response body is done.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::Response;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;

use crate::http::body::{BoxError, ProxyBody};

pin_project_lite::pin_project! {
    struct Guarded<G> {
        #[pin]
        inner: ProxyBody,
        guard: Option<G>,
    }
}

impl<G> Body for Guarded<G> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        if matches!(polled, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
            // Released at the end of the stream, not when hyper drops the body.
            this.guard.take();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The response with `guard` dropped when its body ends (or is dropped).
pub fn with_guard<G: Send + 'static>(
    response: Response<ProxyBody>,
    guard: G,
) -> Response<ProxyBody> {
    response.map(|inner| {
        Guarded {
            inner,
            guard: Some(guard),
        }
        .boxed_unsync()
    })
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
            Response::new(crate::http::body::full("abc")),
            Flag(dropped.clone()),
        );
        assert!(!dropped.load(Ordering::SeqCst));
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"abc");
        assert!(dropped.load(Ordering::SeqCst));
    }
}
