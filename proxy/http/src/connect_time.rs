//! How long a request waited for its upstream connection to open, carried
//! on the response: the balancer prices an endpoint by how fast it answers,
//! and a connection is opened once and then reused, so a first request's
//! connection set-up (a TCP handshake, an accept queue, an HTTP/2
//! handshake) is not the endpoint's answer time. Priced as an answer, it
//! made a new endpoint look slow for tens of seconds.

use std::time::Duration;

use http::Response;

/// Set on a response whose request opened its connection (or waited for
/// another request to open it); absent on one that came over a connection
/// already open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectTime(pub Duration);

impl ConnectTime {
    /// Puts the set-up time on `response`, when this request waited for a
    /// connection to open (`None`: it came over one already open).
    pub fn put_on<B>(time: Option<ConnectTime>, response: &mut Response<B>) {
        if let Some(time) = time {
            response.extensions_mut().insert(time);
        }
    }

    /// Takes the connection set-up time off `response` (zero if its
    /// connection was already open), so it does not travel on.
    pub fn take<B>(response: &mut Response<B>) -> Duration {
        response
            .extensions_mut()
            .remove::<ConnectTime>()
            .map_or(Duration::ZERO, |time| time.0)
    }
}
