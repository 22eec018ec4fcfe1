//! Cluster mode: reflectors over ResiliencePolicies, Services and
//! EndpointSlices feed one recompute loop; the lease holder writes status.
//!
//! Watch errors (410 Gone, API 5xx, dropped connections) are absorbed by the
//! watchers' backoff and re-list; a failed status write is retried on the
//! next recompute (at the latest one resync later). One bad object only ever
//! costs its own status.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Client, Resource, ResourceExt};
use outrigger_api::policy::ResiliencePolicy;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::compile::{compile, ObjectKey};
use crate::index::CompiledIndex;
use crate::leader::Leadership;
use crate::metrics::Metrics;
use crate::status::{acceptance_changed, desired_status};

/// Field manager for server-side apply of status.
pub const FIELD_MANAGER: &str = "outrigger-operator";

/// Changes within this window are folded into one recompute.
const DEBOUNCE: Duration = Duration::from_millis(50);
/// A recompute at least this often, to retry failed status writes.
const RESYNC: Duration = Duration::from_secs(30);

pub struct Context {
    pub client: Client,
    pub index: Arc<CompiledIndex>,
    pub metrics: Arc<Metrics>,
    pub leadership: Arc<Leadership>,
    /// Set once every cache has listed its resources.
    pub ready: Arc<std::sync::atomic::AtomicBool>,
    /// Pokes the recompute loop (e.g. when this replica becomes leader).
    pub trigger: Arc<Notify>,
    pub reporter: Reporter,
}

pub struct Stores {
    pub policies: Store<ResiliencePolicy>,
    pub services: Store<Service>,
    pub slices: Store<EndpointSlice>,
}

/// Starts the three reflectors; each change pokes `trigger`.
pub fn start_reflectors(client: &Client, trigger: Arc<Notify>, stop: &CancellationToken) -> Stores {
    fn reflect<K>(api: Api<K>, trigger: Arc<Notify>, stop: CancellationToken) -> Store<K>
    where
        K: kube::Resource<DynamicType = ()>
            + Clone
            + std::fmt::Debug
            + serde::de::DeserializeOwned
            + Send
            + Sync
            + 'static,
    {
        let (store, writer) = reflector::store();
        let stream = watcher(api, watcher::Config::default())
            .default_backoff()
            .reflect(writer)
            .applied_objects();
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    item = stream.next() => match item {
                        Some(Ok(_)) => trigger.notify_one(),
                        Some(Err(err)) => {
                            // The backoff already delays the retry; deletions
                            // also surface here as re-lists.
                            tracing::warn!(kind = K::kind(&()).as_ref(), error = %err, "watch error");
                            trigger.notify_one();
                        }
                        None => return,
                    },
                }
            }
        });
        store
    }
    Stores {
        policies: reflect(
            Api::<ResiliencePolicy>::all(client.clone()),
            trigger.clone(),
            stop.clone(),
        ),
        services: reflect(
            Api::<Service>::all(client.clone()),
            trigger.clone(),
            stop.clone(),
        ),
        slices: reflect(
            Api::<EndpointSlice>::all(client.clone()),
            trigger,
            stop.clone(),
        ),
    }
}

/// Waits for the caches, then recomputes on every change until `stop`.
pub async fn run(ctx: Arc<Context>, stores: Stores, stop: CancellationToken) -> anyhow::Result<()> {
    tokio::select! {
        _ = stop.cancelled() => return Ok(()),
        synced = async {
            stores.policies.wait_until_ready().await?;
            stores.services.wait_until_ready().await?;
            stores.slices.wait_until_ready().await
        } => synced?,
    }
    ctx.ready.store(true, std::sync::atomic::Ordering::SeqCst);
    tracing::info!("caches synced");
    loop {
        recompute(&ctx, &stores).await;
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            _ = ctx.trigger.notified() => tokio::time::sleep(DEBOUNCE).await,
            _ = tokio::time::sleep(RESYNC) => {}
        }
    }
}

/// One pass: compile the view from the caches, publish it, and (as leader)
/// bring every policy's status up to date.
pub async fn recompute(ctx: &Context, stores: &Stores) {
    let started = Instant::now();
    let policies: Vec<ResiliencePolicy> = stores
        .policies
        .state()
        .iter()
        .map(|p| (**p).clone())
        .collect();
    let services: Vec<Service> = stores
        .services
        .state()
        .iter()
        .map(|s| (**s).clone())
        .collect();
    let slices: Vec<EndpointSlice> = stores
        .slices
        .state()
        .iter()
        .map(|s| (**s).clone())
        .collect();
    for (kind, count) in [
        ("ResiliencePolicy", policies.len()),
        ("Service", services.len()),
        ("EndpointSlice", slices.len()),
    ] {
        ctx.metrics
            .objects
            .with_label_values(&[kind])
            .set(count as i64);
    }
    let compiled = compile(&policies, &services, &slices);
    if ctx.leadership.is_leader() {
        write_statuses(ctx, &policies, &compiled).await;
    }
    ctx.index.store(compiled);
    ctx.metrics.reconciles.inc();
    ctx.metrics
        .reconcile_duration
        .observe(started.elapsed().as_secs_f64());
}

async fn write_statuses(
    ctx: &Context,
    policies: &[ResiliencePolicy],
    compiled: &crate::compile::Compiled,
) {
    let now = Timestamp::now();
    let recorder = Recorder::new(ctx.client.clone(), ctx.reporter.clone());
    for policy in policies {
        let key = ObjectKey {
            namespace: policy.namespace().unwrap_or_default(),
            name: policy.name_any(),
        };
        let Some(verdict) = compiled.verdicts.get(&key) else {
            continue;
        };
        let existing = policy.status.as_ref();
        let desired = desired_status(verdict, existing, None, now);
        if existing == Some(&desired) {
            continue;
        }
        let api: Api<ResiliencePolicy> = Api::namespaced(ctx.client.clone(), &key.namespace);
        let patch = serde_json::json!({
            "apiVersion": "outrigger.dev/v1alpha1",
            "kind": "ResiliencePolicy",
            "status": desired,
        });
        let params = PatchParams::apply(FIELD_MANAGER).force();
        match api
            .patch_status(&key.name, &params, &Patch::Apply(&patch))
            .await
        {
            Ok(_) => {
                ctx.metrics.status_writes.inc();
                if acceptance_changed(existing, &desired) {
                    publish_event(&recorder, policy, verdict).await;
                }
            }
            Err(err) => {
                let kind = match &err {
                    kube::Error::Api(e) if e.code == 409 => "conflict",
                    kube::Error::Api(e) if e.code == 404 => "not-found",
                    kube::Error::Api(e) if e.code >= 500 => "server",
                    _ => "other",
                };
                ctx.metrics
                    .reconcile_errors
                    .with_label_values(&[kind])
                    .inc();
                tracing::warn!(policy = %key, error = %err, "status write failed; will retry");
            }
        }
    }
}

async fn publish_event(
    recorder: &Recorder,
    policy: &ResiliencePolicy,
    verdict: &crate::compile::Verdict,
) {
    let event = Event {
        type_: if verdict.accepted.status {
            EventType::Normal
        } else {
            EventType::Warning
        },
        reason: verdict.accepted.reason.into(),
        note: Some(verdict.accepted.message.clone()),
        action: "Reconcile".into(),
        secondary: None,
    };
    if let Err(err) = recorder.publish(&event, &policy.object_ref(&())).await {
        // Events are a courtesy; a cluster that refuses them loses nothing else.
        tracing::debug!(error = %err, "could not publish event");
    }
}
