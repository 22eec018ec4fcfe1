//! `status.proxies` across replicas. A proxy streams from whichever replica
//! its connection reached, so each replica knows only its own proxies. Each
//! one publishes its tallies in a Lease of its own (`outrigger-proxies-<id>`,
//! labelled, renewed like the election Lease); the leader sums the live ones
//! with its own when it writes status. A replica that dies stops renewing and
//! drops out once its lease expires; one that stops cleanly deletes it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::Client;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::policy_server::Hub;

/// Marks report Leases (the leader watches this label).
pub const LABEL: &str = "outrigger.dev/proxy-report";
/// The tallies, as JSON: policy `namespace/name` → [`Tally`].
pub const ANNOTATION: &str = "outrigger.dev/proxy-counts";
const FIELD_MANAGER: &str = "outrigger-operator-proxy-report";

/// One replica's proxies for one policy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    /// Proxies with an open stream whose snapshots carry the policy.
    pub total: u32,
    /// Of those, proxies that applied this replica's latest snapshot.
    pub current: u32,
    /// The policy generation that latest snapshot carries: a replica whose
    /// cache lags reports an older one, and its proxies are not current.
    pub generation: Option<i64>,
}

/// The sum over replicas: (total, current at `generation`).
pub fn merge<'a>(
    tallies: impl IntoIterator<Item = &'a HashMap<String, Tally>>,
    policy: &str,
    generation: Option<i64>,
) -> (u32, u32) {
    tallies
        .into_iter()
        .filter_map(|t| t.get(policy))
        .fold((0, 0), |(total, current), t| {
            let up_to_date = t.generation == generation;
            (
                total + t.total,
                current + if up_to_date { t.current } else { 0 },
            )
        })
}

/// The tallies of other replicas' live reports (not expired at `now`).
pub fn live_reports(
    leases: &[Arc<Lease>],
    own_identity: &str,
    now: Timestamp,
) -> Vec<HashMap<String, Tally>> {
    leases
        .iter()
        .filter(|lease| {
            let spec = lease.spec.as_ref();
            let holder = spec.and_then(|s| s.holder_identity.as_deref());
            let expires = spec.and_then(|s| {
                let renewed = s.renew_time.as_ref()?.0;
                let secs = u64::try_from(s.lease_duration_seconds?).ok()?;
                Some(renewed + Duration::from_secs(secs))
            });
            holder.is_some_and(|h| h != own_identity) && expires.is_some_and(|e| e > now)
        })
        .filter_map(|lease| {
            let text = lease.metadata.annotations.as_ref()?.get(ANNOTATION)?;
            match serde_json::from_str(text) {
                Ok(tallies) => Some(tallies),
                Err(err) => {
                    tracing::warn!(lease = ?lease.metadata.name, error = %err, "unreadable proxy report");
                    None
                }
            }
        })
        .collect()
}

/// The report Lease's name for a replica.
pub fn lease_name(identity: &str) -> String {
    format!("outrigger-proxies-{identity}")
}

/// Where and how often a replica reports.
#[derive(Debug, Clone)]
pub struct ReportConfig {
    pub namespace: String,
    pub identity: String,
    /// At least this often, so the lease stays alive.
    pub renew_every: Duration,
    /// Others stop counting the report this long after its last renewal.
    pub lease_duration: Duration,
}

/// Publishes this replica's tallies until `stop`: whenever a proxy
/// acknowledges (`acked`; a burst makes one write) and at least every
/// `renew_every`. Deletes the report on stop.
pub async fn publish(
    client: Client,
    config: ReportConfig,
    hub: Arc<Hub>,
    acked: Arc<Notify>,
    stop: CancellationToken,
) {
    let ReportConfig {
        namespace,
        identity,
        renew_every,
        lease_duration,
    } = config;
    let api: Api<Lease> = Api::namespaced(client, &namespace);
    let name = lease_name(&identity);
    let mut last: Option<BTreeMap<String, Tally>> = None;
    let mut renewed = tokio::time::Instant::now();
    loop {
        let tallies: BTreeMap<String, Tally> = hub.proxy_counts().into_iter().collect();
        let due = renewed.elapsed() >= renew_every;
        if last.as_ref() != Some(&tallies) || due {
            match write(&api, &name, &identity, &tallies, lease_duration).await {
                Ok(()) => {
                    last = Some(tallies);
                    renewed = tokio::time::Instant::now();
                }
                Err(err) => tracing::warn!(error = %err, "could not publish the proxy report"),
            }
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = acked.notified() => tokio::time::sleep(MIN_INTERVAL).await,
            _ = tokio::time::sleep(renew_every) => {}
        }
    }
    if let Err(err) = api.delete(&name, &DeleteParams::default()).await {
        tracing::debug!(error = %err, "could not delete the proxy report");
    }
}

/// Acks arrive in bursts after each change; one write covers a burst.
const MIN_INTERVAL: Duration = Duration::from_millis(200);

async fn write(
    api: &Api<Lease>,
    name: &str,
    identity: &str,
    tallies: &BTreeMap<String, Tally>,
    lease_duration: Duration,
) -> kube::Result<()> {
    let lease = Lease {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            labels: Some(BTreeMap::from([(LABEL.to_string(), "true".to_string())])),
            annotations: Some(BTreeMap::from([(
                ANNOTATION.to_string(),
                serde_json::to_string(tallies).expect("tallies serialize"),
            )])),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(identity.to_string()),
            lease_duration_seconds: Some(
                i32::try_from(lease_duration.as_secs().max(1)).unwrap_or(i32::MAX),
            ),
            renew_time: Some(MicroTime(Timestamp::now())),
            ..LeaseSpec::default()
        }),
    };
    let mut patch = serde_json::to_value(&lease).expect("a Lease serializes");
    patch["apiVersion"] = "coordination.k8s.io/v1".into();
    patch["kind"] = "Lease".into();
    api.patch(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tally(total: u32, current: u32, generation: i64) -> Tally {
        Tally {
            total,
            current,
            generation: Some(generation),
        }
    }

    #[test]
    fn replicas_add_up_and_lagging_ones_are_not_current() {
        let a = HashMap::from([("shop/web".to_string(), tally(2, 2, 3))]);
        let b = HashMap::from([("shop/web".to_string(), tally(3, 3, 3))]);
        let lagging = HashMap::from([("shop/web".to_string(), tally(1, 1, 2))]);
        assert_eq!(merge([&a, &b, &lagging], "shop/web", Some(3)), (6, 5));
        assert_eq!(merge([&a], "shop/other", Some(1)), (0, 0));
    }

    fn lease(holder: &str, renewed_secs_ago: i64, tallies: &str) -> Arc<Lease> {
        let renewed = Timestamp::now() - Duration::from_secs(renewed_secs_ago as u64);
        Arc::new(Lease {
            metadata: ObjectMeta {
                name: Some(lease_name(holder)),
                annotations: Some(BTreeMap::from([(ANNOTATION.into(), tallies.into())])),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(holder.into()),
                lease_duration_seconds: Some(15),
                renew_time: Some(MicroTime(renewed)),
                ..LeaseSpec::default()
            }),
        })
    }

    #[test]
    fn only_other_live_readable_reports_count() {
        let report = r#"{"shop/web":{"total":1,"current":1,"generation":2}}"#;
        let leases = [
            lease("b", 1, report),
            lease("c", 60, report),    // expired: replica gone
            lease("a", 1, report),     // our own: counted from memory instead
            lease("d", 1, "not json"), // unreadable: skipped, warned
        ];
        let live = live_reports(&leases, "a", Timestamp::now());
        assert_eq!(live.len(), 1);
        assert_eq!(live[0]["shop/web"], tally(1, 1, 2));
    }
}
