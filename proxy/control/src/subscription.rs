//! One subscription's stream: connect, apply each snapshot, acknowledge it,
//! and on any failure keep the last value and reconnect with exponential
//! backoff and full jitter. Every subscription (and every ack) of a proxy is
//! an HTTP/2 stream on the proxy's one connection to the control plane.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use outrigger_api::stream::{Ack, StreamMessage, Subscription, ACK_PATH, WATCH_PATH};

use super::decode::LineDecoder;
use super::ControlPlane;
use outrigger_resilience::Backoff;

/// A stream silent this long (no snapshot, no heartbeat) is presumed dead.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
const BACKOFF: Backoff = Backoff {
    base: Duration::from_millis(100),
    max: Duration::from_secs(10),
};

pub(crate) type ControlClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// HTTP/2 to the control plane; TLS (with the pinned CA) for https URLs.
/// One client per proxy, shared by all its subscriptions: HTTP/2-only pools
/// hold one connection per host (a second request waits for the connection
/// being opened instead of opening another), so the proxy holds one TCP (and
/// TLS) connection to the control plane, however many destinations it
/// watches. Pooled connections never expire while open: with a 90 s idle
/// expiry (the default), the first ack after a quiet spell would open a
/// second connection beside the one carrying the watch streams.
pub(crate) fn client(tls: Option<Arc<rustls::ClientConfig>>) -> ControlClient {
    let mut http = HttpConnector::new();
    http.set_connect_timeout(Some(Duration::from_secs(2)));
    http.set_nodelay(true);
    http.enforce_http(false);
    let tls = tls.map(|c| (*c).clone()).unwrap_or_else(no_roots);
    let connector = HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http2()
        .wrap_connector(http);
    Client::builder(TokioExecutor::new())
        .timer(TokioTimer::new())
        .http2_only(true)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .http2_keep_alive_timeout(Duration::from_secs(5))
        .pool_idle_timeout(None)
        .build(connector)
}

/// For plaintext control planes: a TLS config that trusts nobody.
fn no_roots() -> rustls::ClientConfig {
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("default protocol versions")
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth()
}

/// Query values are names and authorities; escape what would end them.
fn escape(value: &str) -> String {
    value
        .chars()
        .map(|c| match c {
            '%' | '&' | '=' | '#' | '+' | ' ' | '?' => format!("%{:02X}", c as u32),
            c => c.to_string(),
        })
        .collect()
}

pub async fn run(
    control: Arc<ControlPlane>,
    subscription: Subscription,
    connected: Arc<AtomicBool>,
) {
    let client = &control.client;
    let base = control.config.base.to_string();
    let base = base.trim_end_matches('/');
    let query = match &subscription {
        Subscription::Destination(a) => format!("destination={}", escape(a)),
        Subscription::Inbound(s) => format!("inbound={}", escape(s)),
        Subscription::Pod(p) => format!("pod={}", escape(p)),
    };
    let proxy = &control.config.proxy_id;
    let watch_uri = format!("{base}{WATCH_PATH}?{query}&proxy={}", escape(proxy));
    let ack_uri = format!("{base}{ACK_PATH}");
    let mut failures = 0u32;
    loop {
        let outcome = tokio::select! {
            _ = control.stop.cancelled() => return,
            outcome = stream_once(&control, client, &watch_uri, &ack_uri, &subscription, &connected) => outcome,
        };
        if connected.swap(false, Ordering::SeqCst) {
            control.metrics.connected.dec();
        }
        match outcome {
            // Received at least one snapshot: the next failure starts over.
            Ok(true) => failures = 0,
            Ok(false) => {}
            Err(reason) => tracing::info!(
                subscription = subscription.key(),
                reason,
                "policy stream down; keeping the last snapshot"
            ),
        }
        let delay = BACKOFF.delay(failures, &mut rand::rng());
        failures = failures.saturating_add(1);
        control.metrics.reconnects.inc();
        tokio::select! {
            _ = control.stop.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// One connection's life. `Ok(true)`: it delivered at least one snapshot.
async fn stream_once(
    control: &Arc<ControlPlane>,
    client: &ControlClient,
    watch_uri: &str,
    ack_uri: &str,
    subscription: &Subscription,
    connected: &AtomicBool,
) -> Result<bool, String> {
    let mut request = Request::get(watch_uri);
    if let Some(token) = control.config.authorization() {
        request = request.header(header::AUTHORIZATION, token);
    }
    let request = request
        .body(Full::default())
        .map_err(|e| format!("bad watch URI: {e}"))?;
    let response = client
        .request(request)
        .await
        .map_err(|e| outrigger_proxy_core::error::error_chain(&e))?;
    if response.status() != StatusCode::OK {
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        return Err(format!(
            "control plane answered {status}: {}",
            String::from_utf8_lossy(&body)
        ));
    }
    connected.store(true, Ordering::SeqCst);
    control.metrics.connected.inc();
    let mut body = response.into_body();
    let mut decoder = LineDecoder::default();
    let mut delivered = false;
    loop {
        let frame = match tokio::time::timeout(IDLE_TIMEOUT, body.frame()).await {
            Err(_) => return Err(format!("no message for {IDLE_TIMEOUT:?}")),
            Ok(None) => return Ok(delivered),
            Ok(Some(Err(e))) => return Err(e.to_string()),
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        for message in decoder.push(&data) {
            match message {
                Ok(StreamMessage::Snapshot(snapshot)) => {
                    let version = snapshot.version;
                    control.apply(subscription, *snapshot);
                    delivered = true;
                    acknowledge(
                        client.clone(),
                        ack_uri.to_string(),
                        control.config.authorization(),
                        Ack {
                            proxy: control.config.proxy_id.clone(),
                            subscription: subscription.clone(),
                            version,
                        },
                    );
                }
                Ok(StreamMessage::Heartbeat { .. }) => {}
                Err(err) => {
                    control.metrics.decode_errors.inc();
                    // A stream we cannot read is not one to trust further.
                    return Err(err.to_string());
                }
            }
        }
    }
}

fn acknowledge(client: ControlClient, uri: String, authorization: Option<String>, ack: Ack) {
    tokio::spawn(async move {
        let body = serde_json::to_vec(&ack).expect("acks serialize");
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(&uri)
            .header(header::CONTENT_TYPE, "application/json");
        if let Some(token) = authorization {
            request = request.header(header::AUTHORIZATION, token);
        }
        let request = request
            .body(Full::new(Bytes::from(body)))
            .expect("valid ack request");
        match client.request(request).await {
            Ok(response) if response.status().is_success() => {}
            Ok(response) => tracing::debug!(status = %response.status(), "ack refused"),
            Err(err) => tracing::debug!(error = %err, "ack failed"),
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_query_values() {
        assert_eq!(escape("a&b=c d#%"), "a%26b%3Dc%20d%23%25");
        assert_eq!(
            escape("web.shop.svc.cluster.local:80"),
            "web.shop.svc.cluster.local:80"
        );
    }

    #[test]
    fn jitter_stays_under_the_cap() {
        let mut rng = rand::rng();
        for n in 0..40 {
            assert!(BACKOFF.delay(n, &mut rng) <= Duration::from_secs(10));
        }
    }
}
