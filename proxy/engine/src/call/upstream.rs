//! The exchange with one endpoint, behind a small trait: the real one sends
//! through the stack's kept-alive connections (`UpstreamClients`); tests
//! script it.

use std::future::Future;
use std::sync::Arc;

use http::request::Parts;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{header, HeaderMap, HeaderName, HeaderValue, Request, Uri, Version};

use super::outcome::Outcome;
use outrigger_http::body::ProxyBody;
use outrigger_http::client::UpstreamClients;
use outrigger_http::headers::strip_hop_by_hop;
use outrigger_http::send_error::SendError;
use outrigger_proxy_core::addr::HostPort;
use outrigger_proxy_core::error::error_chain;

/// Sends one request to one endpoint. Never `Outcome::AttemptTimeout`: the
/// per-try timeout is the caller's.
pub trait Upstream: Sync {
    fn send(
        &self,
        target: &Arc<HostPort>,
        request: Request<ProxyBody>,
    ) -> impl Future<Output = Outcome> + Send;
}

impl Upstream for UpstreamClients {
    async fn send(&self, target: &Arc<HostPort>, request: Request<ProxyBody>) -> Outcome {
        match UpstreamClients::send(self, target, request).await {
            Ok(response) => Outcome::Response(response),
            Err(err) => classify_error(&err),
        }
    }
}

/// Maps a client error to what it means for retries.
fn classify_error(err: &SendError) -> Outcome {
    let detail = error_chain(err);
    match err {
        SendError::Connect(_) => Outcome::ConnectFailure(detail),
        SendError::NotSent(_) => Outcome::ResetBeforeRequest(detail),
        SendError::Failed(err) => {
            let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&**err);
            while let Some(e) = source {
                if let Some(h2) = e.downcast_ref::<h2::Error>() {
                    if refused_unprocessed(h2) {
                        return Outcome::RefusedStream(detail);
                    }
                }
                source = e.source();
            }
            Outcome::Reset(detail)
        }
    }
}

/// Whether an HTTP/2 upstream said it did not process the stream: it reset
/// it with REFUSED_STREAM, or it closed the connection gracefully (GOAWAY,
/// NO_ERROR) before taking it. RFC 9113 §8.7: both are safe to replay
/// whatever the method. The h2 crate fails exactly the streams above the
/// GOAWAY's last stream id with its error; the ones below are completed
/// (the server promised to) and fail with it only if it breaks that promise
/// and closes early, which a graceful close does not do. nginx closes every
/// HTTP/2 connection gracefully after 1,000 requests by default, so under
/// concurrency some streams are always in flight when it does.
fn refused_unprocessed(err: &h2::Error) -> bool {
    err.reason() == Some(h2::Reason::REFUSED_STREAM)
        || (err.is_go_away() && err.is_remote() && err.reason() == Some(h2::Reason::NO_ERROR))
}

/// The request head an attempt is built from.
pub enum Head<'a> {
    /// It may be replayed: the attempt sends the client's header map and
    /// leaves a copy in the [`HeaderCopy`] for the next one. (Sending a copy
    /// instead costs a reallocation per request: hyper reuses the map a
    /// request was sent with for its response's headers, and a copy has no
    /// room to spare.)
    Kept(&'a mut Parts, &'a mut HeaderCopy),
    /// The only attempt: it takes the headers.
    Once(&'a mut Parts),
}

/// A replayable request's header list: copied when its first attempt takes
/// the client's map, and made into a fresh map for each later attempt.
///
/// A list of pairs rather than a `HeaderMap` clone: a request that may be
/// retried pays for the copy whether or not it is retried, and the clone
/// (its index table and entries, two allocations, freed when the request
/// ends) cost ~1,100 instructions per request under the full policy, a
/// quarter of the resilience stack's cost (callgrind, `bash
/// bench/instructions.sh`). A later attempt, which is rare, rebuilds the
/// map instead.
#[derive(Default)]
pub struct HeaderCopy(Option<Vec<(HeaderName, HeaderValue)>>);

impl HeaderCopy {
    /// The headers for an attempt: the client's own the first time (a copy
    /// stays here), then a map rebuilt from the copy.
    fn for_attempt(&mut self, client: &mut HeaderMap) -> HeaderMap {
        match &self.0 {
            Some(copy) => rebuild(copy),
            None => {
                self.0 = Some(pairs(client));
                std::mem::take(client)
            }
        }
    }

    /// Puts the headers back into `client` (emptied by a first attempt),
    /// for an attempt that takes them.
    pub fn restore(self, client: &mut HeaderMap) {
        if let Some(copy) = self.0 {
            *client = rebuild(&copy);
        }
    }
}

/// `headers` as a list of pairs, in their order (a repeated name's values
/// too).
fn pairs(headers: &HeaderMap) -> Vec<(HeaderName, HeaderValue)> {
    let mut pairs = Vec::with_capacity(headers.len());
    pairs.extend(headers.iter().map(|(n, v)| (n.clone(), v.clone())));
    pairs
}

/// A map with the copied headers, in their order (a repeated name's values
/// too).
fn rebuild(copy: &[(HeaderName, HeaderValue)]) -> HeaderMap {
    let mut headers = HeaderMap::with_capacity(copy.len());
    for (name, value) in copy {
        headers.append(name.clone(), value.clone());
    }
    headers
}

/// The request for one attempt, addressed to the chosen endpoint.
pub fn upstream_request(head: Head<'_>, body: ProxyBody, target: &HostPort) -> Request<ProxyBody> {
    let (parts, headers) = match head {
        Head::Kept(parts, copy) => {
            let headers = copy.for_attempt(&mut parts.headers);
            (&*parts, headers)
        }
        Head::Once(parts) => {
            let headers = std::mem::take(&mut parts.headers);
            (&*parts, headers)
        }
    };
    let http2 = parts.version >= Version::HTTP_2;
    let path = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    let uri = if http2 {
        http2_uri(&parts.uri, &headers, path, target)
    } else {
        Uri::from(path)
    };
    let mut request = Request::new(body);
    *request.method_mut() = parts.method.clone();
    *request.version_mut() = if http2 {
        Version::HTTP_2
    } else {
        Version::HTTP_11
    };
    *request.uri_mut() = uri;
    *request.headers_mut() = headers;
    strip_hop_by_hop(request.headers_mut(), false);
    if !http2 && !request.headers().contains_key(header::HOST) {
        // HTTP/1.1 needs a Host: the absolute-form URI's authority when the
        // client sent one (and no Host), else the target.
        let host = match parts.uri.authority() {
            Some(authority) => HeaderValue::from_str(authority.as_str()),
            None => HeaderValue::try_from(target.to_string()),
        };
        if let Ok(host) = host {
            request.headers_mut().insert(header::HOST, host);
        }
    }
    request
}

/// An HTTP/2 request's URI upstream: its scheme and authority become the
/// `:scheme` and `:authority` the upstream sees, so they are the client's
/// (its `:authority`, else its Host), and the target's address only when the
/// client named neither. (The connection is chosen by target, not by URI.)
fn http2_uri(client: &Uri, headers: &HeaderMap, path: PathAndQuery, target: &HostPort) -> Uri {
    let authority = client.authority().cloned().or_else(|| {
        let host = headers.get(header::HOST)?;
        Authority::try_from(host.as_bytes()).ok()
    });
    let authority = match authority {
        Some(authority) => authority,
        None => match Authority::try_from(target.to_string()) {
            Ok(authority) => authority,
            Err(_) => Authority::from_static("localhost"),
        },
    };
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(client.scheme().cloned().unwrap_or(Scheme::HTTP));
    parts.authority = Some(authority);
    parts.path_and_query = Some(path);
    Uri::from_parts(parts).expect("scheme, authority and path form a URI")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> HostPort {
        HostPort {
            host: "10.0.0.7".into(),
            port: 8080,
        }
    }

    #[test]
    fn http1_gets_origin_form_and_a_host() {
        let (mut parts, ()) = Request::get("http://svc.ns:80/a?b=1")
            .header("connection", "keep-alive")
            .body(())
            .unwrap()
            .into_parts();
        let request = upstream_request(
            Head::Once(&mut parts),
            outrigger_http::body::empty(),
            &target(),
        );
        assert_eq!(request.uri(), "/a?b=1");
        assert_eq!(request.headers()[header::HOST], "svc.ns:80");
        assert!(!request.headers().contains_key("connection"));
    }

    #[test]
    fn http2_is_addressed_to_the_endpoint() {
        let (mut parts, ()) = Request::get("/x")
            .version(Version::HTTP_2)
            .body(())
            .unwrap()
            .into_parts();
        let request = upstream_request(
            Head::Kept(&mut parts, &mut HeaderCopy::default()),
            outrigger_http::body::empty(),
            &target(),
        );
        assert_eq!(request.uri(), "http://10.0.0.7:8080/x");
        assert_eq!(request.version(), Version::HTTP_2);
        assert!(!request.headers().contains_key(header::HOST));
    }

    #[test]
    fn http2_keeps_the_clients_authority_and_scheme() {
        let (mut parts, ()) = Request::get("https://reviews.shop:9080/Reviews/List?x=1")
            .version(Version::HTTP_2)
            .body(())
            .unwrap()
            .into_parts();
        let request = upstream_request(
            Head::Once(&mut parts),
            outrigger_http::body::empty(),
            &target(),
        );
        assert_eq!(request.uri(), "https://reviews.shop:9080/Reviews/List?x=1");

        // No :authority, a Host header: the Host names the authority.
        let (mut parts, ()) = Request::get("/x")
            .version(Version::HTTP_2)
            .header(header::HOST, "reviews")
            .body(())
            .unwrap()
            .into_parts();
        let request = upstream_request(
            Head::Once(&mut parts),
            outrigger_http::body::empty(),
            &target(),
        );
        assert_eq!(request.uri(), "http://reviews/x");
    }

    #[test]
    fn a_kept_head_sends_the_same_headers_on_every_attempt() {
        let (mut parts, ()) = Request::get("/x")
            .header("accept", "text/html")
            .header("x-b", "1")
            .header("accept", "application/json")
            .header("x-a", "2")
            .body(())
            .unwrap()
            .into_parts();
        let client = pairs(&parts.headers);
        let mut copy = HeaderCopy::default();
        let sent = |parts: &mut Parts, copy: &mut HeaderCopy| {
            let request = upstream_request(
                Head::Kept(parts, copy),
                outrigger_http::body::empty(),
                &target(),
            );
            let mut headers = pairs(request.headers());
            headers.retain(|(name, _)| name != header::HOST);
            headers
        };
        let first = sent(&mut parts, &mut copy);
        assert_eq!(first, client, "the client's map, in its order");
        assert!(parts.headers.is_empty(), "taken, not cloned");
        assert_eq!(sent(&mut parts, &mut copy), client, "rebuilt from the copy");
        assert_eq!(sent(&mut parts, &mut copy), client, "and again");
        copy.restore(&mut parts.headers);
        assert_eq!(pairs(&parts.headers), client, "put back for a last attempt");
    }
}
