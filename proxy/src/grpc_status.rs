//! `outrigger_grpc_responses_total`: the gRPC status of each call the proxy
//! answered, which an HTTP status cannot tell (a failed call is an HTTP 200
//! whose status comes in the trailers). The status is read where the client
//! gets it: in the response headers of a trailers-only response, else in the
//! trailers at the end of the body. Label values are the 17 codes gRPC
//! defines, "other" for any other number and "none" for a body that ended
//! or broke without a status: bounded whatever the server sends.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, Response};
use http_body::{Body, Frame, SizeHint};
use outrigger_http::body::{BoxError, ProxyBody};
use outrigger_proxy_core::metrics::Metrics;
use outrigger_resilience::grpc::{parse_status, CODE_NAMES};
use prometheus::IntCounterVec;

const STATUS: &str = "grpc-status";

/// The label value of a `grpc-status` header value (`None`: absent).
pub fn status_label(value: Option<&[u8]>) -> &'static str {
    match value.map(parse_status) {
        None => "none",
        Some(Some(code)) => CODE_NAMES.get(code as usize).copied().unwrap_or("other"),
        Some(None) => "other",
    }
}

/// Where one call's status is counted: its series' labels but the status.
pub struct StatusSeries {
    counter: IntCounterVec,
    direction: &'static str,
    destination: Arc<str>,
    route: Arc<str>,
}

impl StatusSeries {
    pub fn new(
        metrics: &Metrics,
        direction: &'static str,
        destination: Arc<str>,
        route: Arc<str>,
    ) -> Self {
        StatusSeries {
            counter: metrics.grpc_responses.clone(),
            direction,
            destination,
            route,
        }
    }

    fn count(self, status: &'static str) {
        self.counter
            .with_label_values(&[self.direction, &self.destination, &self.route, status])
            .inc();
    }
}

/// `response` with its gRPC status counted in `series`: at once when the
/// headers carry it (trailers-only, the proxy's own errors included), else
/// when the body's trailers arrive. A body the client drops before its end
/// (it cancelled the call) is not counted: no status reached anyone.
pub fn count_status(response: Response<ProxyBody>, series: StatusSeries) -> Response<ProxyBody> {
    if let Some(value) = response.headers().get(STATUS) {
        series.count(status_label(Some(value.as_bytes())));
        return response;
    }
    if response.body().is_end_stream() {
        series.count("none");
        return response;
    }
    response.map(|inner| {
        ProxyBody::new(Watch {
            inner,
            series: Some(series),
        })
    })
}

pin_project_lite::pin_project! {
    struct Watch {
        #[pin]
        inner: ProxyBody,
        series: Option<StatusSeries>,
    }
}

impl Watch {
    fn trailers(series: &mut Option<StatusSeries>, trailers: &HeaderMap) {
        if let Some(series) = series.take() {
            series.count(status_label(trailers.get(STATUS).map(|v| v.as_bytes())));
        }
    }
}

impl Body for Watch {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    Watch::trailers(this.series, trailers);
                }
            }
            // Ended or broke without trailers: the client reads no status.
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => {
                if let Some(series) = this.series.take() {
                    series.count("none");
                }
            }
            Poll::Pending => {}
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

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, StreamBody};

    fn series(metrics: &Metrics) -> StatusSeries {
        StatusSeries::new(metrics, "outbound", "echo:50051".into(), "default".into())
    }

    fn counted(metrics: &Metrics, status: &str) -> u64 {
        metrics
            .grpc_responses
            .with_label_values(&["outbound", "echo:50051", "default", status])
            .get()
    }

    fn body(frames: Vec<Result<Frame<Bytes>, BoxError>>) -> ProxyBody {
        ProxyBody::new(StreamBody::new(futures_util::stream::iter(frames)))
    }

    #[tokio::test]
    async fn the_status_in_the_trailers_is_counted_at_the_end() {
        let metrics = Metrics::new(10);
        let mut trailers = HeaderMap::new();
        trailers.insert(STATUS, "14".parse().unwrap());
        let response = Response::new(body(vec![
            Ok(Frame::data(Bytes::from_static(b"message"))),
            Ok(Frame::trailers(trailers)),
        ]));
        let response = count_status(response, series(&metrics));
        assert_eq!(counted(&metrics, "unavailable"), 0);
        response.into_body().collect().await.unwrap();
        assert_eq!(counted(&metrics, "unavailable"), 1);
    }

    #[tokio::test]
    async fn trailers_only_is_counted_at_once_and_a_missing_status_is_none() {
        let metrics = Metrics::new(10);
        let mut response = Response::new(body(vec![]));
        response.headers_mut().insert(STATUS, "0".parse().unwrap());
        drop(count_status(response, series(&metrics)));
        assert_eq!(counted(&metrics, "ok"), 1);

        let response = Response::new(body(vec![Ok(Frame::data(Bytes::from_static(b"m")))]));
        let response = count_status(response, series(&metrics));
        response.into_body().collect().await.unwrap();
        assert_eq!(counted(&metrics, "none"), 1);
    }

    #[test]
    fn labels_stay_among_the_defined_codes() {
        assert_eq!(status_label(Some(b"16")), "unauthenticated");
        assert_eq!(status_label(Some(b"17")), "other");
        assert_eq!(status_label(Some(b"999")), "other");
        assert_eq!(status_label(Some(b"x")), "other");
        assert_eq!(status_label(Some(b"")), "other");
        assert_eq!(status_label(None), "none");
    }
}
