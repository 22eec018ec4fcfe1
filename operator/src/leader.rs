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

use tokio::time::Instant;

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
    // When the last update that kept this replica leading started: the
    // lease is ours until then + lease_duration in every replica's view.
    let mut held_since: Option<Instant> = None;
    loop {
        let started = Instant::now();
        let deadline = update_deadline(&config, held_since, started);
        let update = tokio::time::timeout_at(deadline, try_acquire_or_renew(&api, &config));
        let leader = match update.await {
            Ok(Ok(leader)) => leader,
            Ok(Err(err)) => {
                tracing::warn!(error = %err, "lease update failed");
                // Without a successful renewal we cannot know we still lead.
                false
            }
            Err(_) => {
                tracing::warn!(
                    "lease update unanswered before the lease could expire: stepping down"
                );
                false
            }
        };
        held_since = leader.then_some(started);
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

/// When a lease update must have finished. A holder has to know it still
/// leads before its lease can expire for the others (the last successful
/// update's start + lease_duration), less half a renewal period for clock
/// drift and latency: the API client's own retries (kube retries 429, 503
/// and 504 with backoff growing to minutes) must not keep a replica
/// writing as leader after another has taken over.
fn update_deadline(config: &LeaseConfig, held_since: Option<Instant>, now: Instant) -> Instant {
    match held_since {
        Some(since) => since + config.lease_duration.saturating_sub(config.renew_every / 2),
        None => now + config.lease_duration,
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

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::atomic::AtomicBool;

    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use hyper::body::Incoming;
    use hyper::{Request, Response};
    use hyper_util::rt::TokioIo;

    use super::*;

    /// A stand-in API server for one Lease: it lets the first replica
    /// create it, then, once `overloaded` is set, answers everything with
    /// 429 as an API server shedding load does (no Retry-After).
    async fn api_server(overloaded: Arc<AtomicBool>) -> Client {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let overloaded = overloaded.clone();
                let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                    let overloaded = overloaded.clone();
                    async move {
                        let status = |code: u16, reason: &str| {
                            let body = format!(
                                r#"{{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"{reason}","code":{code}}}"#
                            );
                            Response::builder()
                                .status(code)
                                .header("content-type", "application/json")
                                .body(Full::new(Bytes::from(body)))
                                .unwrap()
                        };
                        let response = if overloaded.load(Ordering::SeqCst) {
                            status(429, "TooManyRequests")
                        } else if request.method() == http::Method::POST {
                            // The Lease created, as sent.
                            let body = request.into_body().collect().await.unwrap().to_bytes();
                            Response::builder()
                                .status(201)
                                .header("content-type", "application/json")
                                .body(Full::new(body))
                                .unwrap()
                        } else {
                            status(404, "NotFound")
                        };
                        Ok::<_, Infallible>(response)
                    }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service),
                );
            }
        });
        // As the operator's client: kube's default retry layer included.
        Client::try_from(kube::Config::new(url.parse().unwrap())).unwrap()
    }

    /// A holder whose renewals go unanswered steps down before its lease
    /// can expire, although the client keeps retrying the 429s.
    #[tokio::test]
    async fn a_holder_that_cannot_renew_steps_down_before_its_lease_expires() {
        let overloaded = Arc::new(AtomicBool::new(false));
        let client = api_server(overloaded.clone()).await;
        let config = LeaseConfig {
            namespace: "outrigger-system".into(),
            name: "outrigger-operator".into(),
            identity: "replica-a".into(),
            lease_duration: Duration::from_secs(1),
            renew_every: Duration::from_millis(200),
        };
        let leadership = Arc::new(Leadership::default());
        let stop = CancellationToken::new();
        tokio::spawn(run(
            client,
            config,
            leadership.clone(),
            |_| {},
            stop.clone(),
        ));
        let until = |leading: bool, limit: Duration| {
            let leadership = leadership.clone();
            async move {
                let deadline = Instant::now() + limit;
                while leadership.is_leader() != leading {
                    assert!(
                        Instant::now() < deadline,
                        "leader still {} after {limit:?}",
                        !leading
                    );
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        };
        until(true, Duration::from_secs(5)).await;
        overloaded.store(true, Ordering::SeqCst);
        // It steps down 0.9 s after its last successful renewal began (see
        // `update_deadline`); the bound leaves room for a loaded machine,
        // while the client alone would keep retrying for minutes.
        until(false, Duration::from_secs(3)).await;
        stop.cancel();
    }

    #[test]
    fn a_holder_must_know_before_its_lease_can_expire() {
        let config = LeaseConfig {
            namespace: "ns".into(),
            name: "lease".into(),
            identity: "a".into(),
            lease_duration: Duration::from_secs(15),
            renew_every: Duration::from_secs(5),
        };
        let since = Instant::now();
        let now = since + config.renew_every;
        let deadline = update_deadline(&config, Some(since), now);
        assert_eq!(deadline, since + Duration::from_millis(12_500));
        assert!(deadline < since + config.lease_duration);
        // Not leading: nothing to lose by waiting, but not forever.
        assert_eq!(
            update_deadline(&config, None, now),
            now + config.lease_duration
        );
    }
}
