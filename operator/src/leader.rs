//! Leader election on a coordination.k8s.io Lease: every replica keeps its
//! caches warm and serves reads; only the lease holder writes status.
//!
//! The holder renews every `renew_every`; another replica takes the lease once
//! `renewTime + leaseDurationSeconds` has passed. Updates go through
//! `replace` with the resourceVersion read, so two replicas racing for an
//! expired lease cannot both win: the loser gets 409 Conflict.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use kube::Client;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_every: Duration,
}

/// Who leads, as this replica last saw it.
#[derive(Default)]
pub struct Leadership(AtomicBool);

impl Leadership {
    pub fn is_leader(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    /// Without election (a single replica) this replica always leads.
    pub fn force(&self, leader: bool) {
        self.0.store(leader, Ordering::SeqCst);
    }

    fn set(&self, leader: bool) -> bool {
        self.0.swap(leader, Ordering::SeqCst) != leader
    }
}

/// Runs the election until `stop` fires, then releases the lease if held.
pub async fn run(
    client: Client,
    config: LeaseConfig,
    leadership: Arc<Leadership>,
    on_change: impl Fn(bool),
    stop: CancellationToken,
) {
    let api: Api<Lease> = Api::namespaced(client, &config.namespace);
    loop {
        let leader = match try_acquire_or_renew(&api, &config).await {
            Ok(leader) => leader,
            Err(err) => {
                tracing::warn!(error = %err, "lease update failed");
                // Without a successful renewal we cannot know we still lead.
                false
            }
        };
        if leadership.set(leader) {
            tracing::info!(leader, identity = %config.identity, "leadership changed");
            on_change(leader);
        }
        tokio::select! {
            _ = tokio::time::sleep(config.renew_every) => {}
            _ = stop.cancelled() => break,
        }
    }
    if leadership.is_leader() {
        if let Err(err) = release(&api, &config).await {
            tracing::warn!(error = %err, "could not release the lease");
        }
        leadership.set(false);
        on_change(false);
    }
}

fn now() -> MicroTime {
    MicroTime(Timestamp::now())
}

async fn try_acquire_or_renew(api: &Api<Lease>, config: &LeaseConfig) -> kube::Result<bool> {
    let Some(mut lease) = api.get_opt(&config.name).await? else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(config.name.clone()),
                namespace: Some(config.namespace.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(config.identity.clone()),
                lease_duration_seconds: Some(config.lease_duration.as_secs() as i32),
                acquire_time: Some(now()),
                renew_time: Some(now()),
                lease_transitions: Some(0),
                ..LeaseSpec::default()
            }),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            // Another replica created it first.
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        };
    };
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    let holder = spec.holder_identity.clone().unwrap_or_default();
    let expired = match (&spec.renew_time, spec.lease_duration_seconds) {
        (Some(renewed), Some(secs)) => {
            let expires = renewed.0 + std::time::Duration::from_secs(secs.max(0) as u64);
            Timestamp::now() > expires
        }
        _ => true,
    };
    if holder != config.identity && !holder.is_empty() && !expired {
        return Ok(false);
    }
    if holder != config.identity {
        spec.holder_identity = Some(config.identity.clone());
        spec.acquire_time = Some(now());
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
    }
    spec.renew_time = Some(now());
    spec.lease_duration_seconds = Some(config.lease_duration.as_secs() as i32);
    match api
        .replace(&config.name, &PostParams::default(), &lease)
        .await
    {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

/// Gives the lease up at shutdown so a successor need not wait for expiry.
async fn release(api: &Api<Lease>, config: &LeaseConfig) -> kube::Result<()> {
    let mut lease = api.get(&config.name).await?;
    if let Some(spec) = lease.spec.as_mut() {
        if spec.holder_identity.as_deref() == Some(&config.identity) {
            spec.holder_identity = None;
            spec.renew_time = None;
            api.replace(&config.name, &PostParams::default(), &lease)
                .await?;
        }
    }
    Ok(())
}
