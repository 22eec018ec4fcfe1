//! The proxy's control-plane client: subscribes lazily to each destination
//! (and to its own inbound policy), applies each snapshot atomically, keeps the
//! last value through outages, reconnects with backoff, and persists snapshots
//! so a restart during an outage starts with them.
#![forbid(unsafe_code)]

mod decode;
mod state_dir;
mod subscription;

pub use decode::{DecodeError, LineDecoder};

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use http::Uri;
use outrigger_api::stream::{Snapshot, Subscription};
use prometheus::{IntCounter, IntGauge, IntGaugeVec, Opts};
use serde::Serialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use outrigger_proxy_core::metrics::{LabelBudget, Metrics};

/// Where a subscription's current value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    ControlPlane,
    StateDir,
}

/// A snapshot as applied by this proxy.
#[derive(Debug, Clone, Serialize)]
pub struct Applied {
    pub snapshot: Snapshot,
    pub source: Source,
    #[serde(skip)]
    pub received_at: SystemTime,
}

pub struct ControlConfig {
    pub base: Uri,
    pub proxy_id: String,
    pub state_dir: Option<PathBuf>,
    /// How long a request waits for its destination's first snapshot.
    pub initial_wait: Duration,
    /// TLS towards an https control plane, trusting only its CA.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Bearer token file, read on every connection and ack.
    pub token_file: Option<PathBuf>,
}

impl ControlConfig {
    /// The `Authorization` header value, if a token file is configured.
    fn authorization(&self) -> Option<String> {
        let path = self.token_file.as_ref()?;
        match std::fs::read_to_string(path) {
            Ok(token) => Some(format!("Bearer {}", token.trim())),
            Err(err) => {
                tracing::warn!(file = %path.display(), error = %err, "cannot read the control-plane token");
                None
            }
        }
    }
}

/// A client config that trusts only the CA certificates in `ca_file` (PEM):
/// the proxy pins its control plane instead of trusting the system roots.
pub fn pinned_tls(ca_file: &std::path::Path) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    use anyhow::Context;
    let pem =
        std::fs::read(ca_file).with_context(|| format!("cannot read {}", ca_file.display()))?;
    pinned_tls_pem(&pem).with_context(|| format!("CA file {}", ca_file.display()))
}

/// As [`pinned_tls`], from PEM text.
pub fn pinned_tls_pem(pem: &[u8]) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    use anyhow::Context;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.context("not PEM")?;
        roots.add(cert).context("invalid CA certificate")?;
    }
    anyhow::ensure!(!roots.is_empty(), "no certificate in the CA bundle");
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .context("TLS protocol versions")?
    .with_root_certificates(roots)
    .with_no_client_auth();
    // ALPN (h2) is set by the connector, which insists on doing it itself.
    Ok(Arc::new(config))
}

struct Entry {
    latest: watch::Sender<Option<Arc<Applied>>>,
    connected: Arc<std::sync::atomic::AtomicBool>,
}

pub struct ControlPlane {
    config: ControlConfig,
    entries: RwLock<HashMap<Subscription, Entry>>,
    /// The proxy's one HTTP/2 connection to the control plane, shared by
    /// every subscription and ack.
    client: subscription::ControlClient,
    metrics: ControlMetrics,
    stop: CancellationToken,
}

#[derive(Clone)]
pub struct ControlMetrics {
    pub connected: IntGauge,
    pub reconnects: IntCounter,
    pub snapshot_version: IntGaugeVec,
    pub snapshot_timestamp: IntGaugeVec,
    pub decode_errors: IntCounter,
    /// Subscriptions follow the names an app calls (outbound), which an
    /// attacker may choose: their label values are capped like destinations.
    subscription_labels: Arc<LabelBudget>,
}

impl ControlMetrics {
    /// The `subscription` label of `subscription`, within the label budget.
    fn subscription_label(&self, subscription: &Subscription) -> Arc<str> {
        self.subscription_labels.label(&subscription.key())
    }

    fn new(metrics: &Metrics) -> Self {
        let connected = IntGauge::new(
            "outrigger_control_streams_connected",
            "Policy streams to the control plane that are connected now",
        )
        .expect("valid metric");
        let reconnects = IntCounter::new(
            "outrigger_control_reconnects_total",
            "Policy streams re-opened after a failure",
        )
        .expect("valid metric");
        let snapshot_version = IntGaugeVec::new(
            Opts::new(
                "outrigger_control_snapshot_version",
                "Version of the snapshot applied, per subscription",
            ),
            &["subscription"],
        )
        .expect("valid metric");
        let snapshot_timestamp = IntGaugeVec::new(
            Opts::new(
                "outrigger_control_snapshot_timestamp_seconds",
                "Unix time the applied snapshot arrived (age = time() - this)",
            ),
            &["subscription"],
        )
        .expect("valid metric");
        let decode_errors = IntCounter::new(
            "outrigger_control_decode_errors_total",
            "Malformed lines on policy streams",
        )
        .expect("valid metric");
        for c in [
            Box::new(connected.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(reconnects.clone()),
            Box::new(snapshot_version.clone()),
            Box::new(snapshot_timestamp.clone()),
            Box::new(decode_errors.clone()),
        ] {
            metrics.register(c);
        }
        ControlMetrics {
            connected,
            reconnects,
            snapshot_version,
            snapshot_timestamp,
            decode_errors,
            subscription_labels: Arc::new(LabelBudget::new(metrics.max_destination_labels())),
        }
    }
}

impl ControlPlane {
    /// Loads persisted snapshots (if a state dir is set) and starts their
    /// subscriptions.
    pub fn start(config: ControlConfig, metrics: &Metrics, stop: CancellationToken) -> Arc<Self> {
        let control = Arc::new(ControlPlane {
            metrics: ControlMetrics::new(metrics),
            entries: RwLock::new(HashMap::new()),
            client: subscription::client(config.tls.clone()),
            config,
            stop,
        });
        if let Some(dir) = &control.config.state_dir {
            for (subscription, snapshot) in state_dir::load(dir) {
                tracing::info!(
                    subscription = subscription.key(),
                    version = snapshot.version,
                    "starting with a persisted snapshot"
                );
                let applied = Arc::new(Applied {
                    snapshot,
                    source: Source::StateDir,
                    received_at: SystemTime::now(),
                });
                control.ensure(&subscription, Some(applied));
            }
        }
        control
    }

    /// The current value of `subscription`, subscribing on first use. The
    /// first call waits up to `initial_wait` for the first snapshot.
    pub async fn current(self: &Arc<Self>, subscription: &Subscription) -> Option<Arc<Applied>> {
        let mut receiver = self.ensure(subscription, None);
        if receiver.borrow().is_none() {
            let _ =
                tokio::time::timeout(self.config.initial_wait, receiver.wait_for(|v| v.is_some()))
                    .await;
        }
        let value = receiver.borrow().clone();
        value
    }

    /// The current value without subscribing or waiting.
    pub fn peek(&self, subscription: &Subscription) -> Option<Arc<Applied>> {
        let entries = self.entries.read().expect("not poisoned");
        let value = entries.get(subscription)?.latest.borrow().clone();
        value
    }

    fn ensure(
        self: &Arc<Self>,
        subscription: &Subscription,
        initial: Option<Arc<Applied>>,
    ) -> watch::Receiver<Option<Arc<Applied>>> {
        if let Some(entry) = self.entries.read().expect("not poisoned").get(subscription) {
            return entry.latest.subscribe();
        }
        let mut entries = self.entries.write().expect("not poisoned");
        if let Some(entry) = entries.get(subscription) {
            return entry.latest.subscribe();
        }
        let (latest, receiver) = watch::channel(initial);
        let connected = Arc::new(std::sync::atomic::AtomicBool::new(false));
        entries.insert(
            subscription.clone(),
            Entry {
                latest,
                connected: connected.clone(),
            },
        );
        drop(entries);
        tokio::spawn(subscription::run(
            self.clone(),
            subscription.clone(),
            connected,
        ));
        receiver
    }

    /// Installs a snapshot received from the control plane.
    fn apply(&self, subscription: &Subscription, snapshot: Snapshot) {
        let applied = Arc::new(Applied {
            snapshot,
            source: Source::ControlPlane,
            received_at: SystemTime::now(),
        });
        let key = self.metrics.subscription_label(subscription);
        self.metrics
            .snapshot_version
            .with_label_values(&[&*key])
            .set(applied.snapshot.version as i64);
        let unix = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        self.metrics
            .snapshot_timestamp
            .with_label_values(&[&*key])
            .set(unix);
        if let Some(dir) = &self.config.state_dir {
            if let Err(err) = state_dir::save(dir, subscription, &applied.snapshot) {
                tracing::warn!(error = %err, "could not persist the snapshot");
            }
        }
        if let Some(entry) = self.entries.read().expect("not poisoned").get(subscription) {
            entry.latest.send_replace(Some(applied));
        }
    }

    /// What `/config` shows about each subscription.
    pub fn describe(&self) -> serde_json::Value {
        let entries = self.entries.read().expect("not poisoned");
        let mut list: Vec<serde_json::Value> = entries
            .iter()
            .map(|(subscription, entry)| {
                let latest = entry.latest.borrow().clone();
                serde_json::json!({
                    "subscription": subscription,
                    "connected": entry.connected.load(std::sync::atomic::Ordering::SeqCst),
                    "version": latest.as_ref().map(|a| a.snapshot.version),
                    "source": latest.as_ref().map(|a| a.source),
                    "ageSeconds": latest.as_ref().and_then(|a| a.received_at.elapsed().ok()).map(|d| d.as_secs_f64()),
                    "destination": latest.as_ref().map(|a| &a.snapshot.destination),
                })
            })
            .collect();
        list.sort_by_key(|v| v["subscription"].to_string());
        serde_json::json!({
            "controlPlane": self.config.base.to_string(),
            "proxy": self.config.proxy_id,
            "subscriptions": list,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscription_labels_are_bounded() {
        let metrics = Metrics::new(2);
        let control = ControlMetrics::new(&metrics);
        let label = |name: &str| {
            let subscription = Subscription::Destination(format!("{name}.svc.cluster.local:80"));
            control.subscription_label(&subscription).to_string()
        };
        assert_eq!(label("a.x"), "dst:a.x.svc.cluster.local:80");
        assert_eq!(label("b.x"), "dst:b.x.svc.cluster.local:80");
        // Names an app (or whoever steers it) makes up share one series.
        for i in 0..50 {
            assert_eq!(label(&format!("made-up-{i}.x")), "other");
        }
        assert_eq!(label("a.x"), "dst:a.x.svc.cluster.local:80");
    }
}
