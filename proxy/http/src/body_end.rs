//! A body that acts once when it ends: releasing a concurrency slot, noting
//! that a request went out in full, handing a connection back to its pool.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use super::body::BoxError;

/// What to do at the end of a body. Dropping the action without a call (the
/// body failed, or was dropped unfinished) is the "did not end" case.
pub trait OnEnd: Send + 'static {
    fn ended(self);
}

pin_project_lite::pin_project! {
    /// `inner`, calling `action.ended()` once the end is seen: the last frame
    /// polled, or an end reported by `is_end_stream` (hyper does not poll a
    /// body past that, nor at all when it is empty), at the latest on drop.
    pub struct WithEnd<B: Body, A: OnEnd> {
        #[pin]
        inner: B,
        action: Option<A>,
    }

    impl<B: Body, A: OnEnd> PinnedDrop for WithEnd<B, A> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if this.inner.is_end_stream() {
                if let Some(action) = this.action.take() {
                    action.ended();
                }
            }
        }
    }
}

impl<B: Body, A: OnEnd> WithEnd<B, A> {
    pub fn new(inner: B, action: A) -> Self {
        WithEnd {
            inner,
            action: Some(action),
        }
    }
}

impl<B, A> Body for WithEnd<B, A>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
    A: OnEnd,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        let polled = this.inner.as_mut().poll_frame(cx);
        let ended = match &polled {
            Poll::Ready(None) => true,
            Poll::Ready(Some(Ok(_))) => this.inner.is_end_stream(),
            // A failed body did not end: the action is dropped uncalled.
            Poll::Ready(Some(Err(_))) => {
                this.action.take();
                false
            }
            Poll::Pending => false,
        };
        if ended {
            if let Some(action) = this.action.take() {
                action.ended();
            }
        }
        polled.map(|frame| frame.map(|r| r.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use http_body_util::{BodyExt, Full, StreamBody};

    use super::*;

    struct Count(Arc<AtomicUsize>);
    impl OnEnd for Count {
        fn ended(self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn counter() -> (Count, Arc<AtomicUsize>) {
        let n = Arc::new(AtomicUsize::new(0));
        (Count(n.clone()), n)
    }

    #[tokio::test]
    async fn ends_once_when_read_to_the_end() {
        let (action, n) = counter();
        let body = WithEnd::new(Full::new(Bytes::from_static(b"abc")), action);
        assert_eq!(&body.collect().await.unwrap().to_bytes()[..], b"abc");
        assert_eq!(n.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn an_empty_body_ends_when_dropped_unpolled() {
        let (action, n) = counter();
        drop(WithEnd::new(Full::new(Bytes::new()), action));
        assert_eq!(n.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_body_dropped_or_failed_before_its_end_does_not_end() {
        let (action, n) = counter();
        let frames = futures_util::stream::iter([
            Ok::<_, BoxError>(Frame::data(Bytes::from_static(b"a"))),
            Err("broken".into()),
        ]);
        let mut body = Box::pin(WithEnd::new(StreamBody::new(frames), action));
        assert!(body.frame().await.unwrap().is_ok());
        assert!(body.frame().await.unwrap().is_err());
        drop(body);
        let (action, unfinished) = counter();
        let pending = futures_util::stream::pending::<Result<Frame<Bytes>, BoxError>>();
        drop(WithEnd::new(StreamBody::new(pending), action));
        assert_eq!(
            n.load(Ordering::SeqCst) + unfinished.load(Ordering::SeqCst),
            0
        );
    }
}
