//! Retry budgets from Gateway API's BackendTrafficPolicy (GEP-3388, served
//! as `XBackendTrafficPolicy` in `gateway.networking.x-k8s.io/v1alpha1`):
//! `spec.retryConstraint` caps the retries of calls to the Services it
//! targets. A Service's budget is its ResiliencePolicy's `spec.retry.budget`
//! where that is set (the one written for Outrigger), else the
//! BackendTrafficPolicy's, else the default; [`compose`](super::compose)
//! carries it in `spec.backendTrafficBudget`.

use std::collections::BTreeMap;

use gateway_api::experimental::xbackendtrafficpolicies::XBackendTrafficPolicy;
use serde_json::Value;

use super::{ServiceLookup, Services, Verdict};
use crate::duration::Duration;
use crate::policy::{RetryBudget, RetryRate};

/// The API group and the kind BackendTrafficPolicy is served as today.
pub const TRAFFIC_GROUP: &str = "gateway.networking.x-k8s.io";
pub const TRAFFIC_KIND: &str = "XBackendTrafficPolicy";

/// One BackendTrafficPolicy, read.
#[derive(Debug, Clone, PartialEq)]
pub struct TrafficPolicy {
    pub namespace: String,
    pub name: String,
    pub generation: Option<i64>,
    /// metadata.creationTimestamp: the oldest policy wins a Service two
    /// target (none, as in a file, counts as oldest).
    pub created: Option<String>,
    /// The Services targeted (targetRefs of kind Service, group "").
    pub services: Vec<String>,
    /// targetRefs of other kinds, as `group/kind name`: not ours.
    pub other_targets: Vec<String>,
    /// `Err`: why the retry constraint cannot be honoured.
    pub budget: Result<Option<RetryBudget>, String>,
}

impl TrafficPolicy {
    /// A whole XBackendTrafficPolicy object as JSON.
    pub fn from_value(value: &Value) -> Result<TrafficPolicy, String> {
        let api_version = value.get("apiVersion").and_then(Value::as_str);
        let expected = format!("{TRAFFIC_GROUP}/v1alpha1");
        if api_version != Some(expected.as_str()) {
            return Err(format!(
                "apiVersion: {api_version:?} is not served for {TRAFFIC_KIND} (use {expected})"
            ));
        }
        let policy: XBackendTrafficPolicy =
            serde_json::from_value(value.clone()).map_err(|e| format!("{TRAFFIC_KIND}: {e}"))?;
        let name = policy
            .metadata
            .name
            .filter(|n| !n.is_empty())
            .ok_or_else(|| format!("{TRAFFIC_KIND}: metadata.name is required"))?;
        let (services, other_targets) =
            policy.spec.target_refs.iter().partition::<Vec<_>, _>(|t| {
                t.kind == "Service" && (t.group.is_empty() || t.group == "core")
            });
        let budget = match &policy.spec.session_persistence {
            Some(_) => Err("sessionPersistence is not supported (the balancer has no session affinity)".to_string()),
            None => policy
                .spec
                .retry_constraint
                .as_ref()
                .map(|c| {
                    let budget = c.budget.as_ref();
                    let rate = c.min_retry_rate.as_ref();
                    Ok(RetryBudget {
                        percent: budget
                            .and_then(|b| b.percent)
                            .map(|p| {
                                u32::try_from(p)
                                    .ok()
                                    .filter(|p| *p <= 100)
                                    .ok_or(format!("retryConstraint.budget.percent: {p} is not 0-100"))
                            })
                            .transpose()?,
                        interval: budget
                            .and_then(|b| b.interval.as_deref())
                            .map(|d| positive("retryConstraint.budget.interval", d))
                            .transpose()?,
                        min_retry_rate: match rate {
                            Some(r) if r.count.is_some() || r.interval.is_some() => {
                                let count = r.count.unwrap_or(10);
                                Some(RetryRate {
                                    count: u32::try_from(count).map_err(|_| {
                                        format!("retryConstraint.minRetryRate.count: {count} is negative or too large")
                                    })?,
                                    interval: positive(
                                        "retryConstraint.minRetryRate.interval",
                                        r.interval.as_deref().unwrap_or("1s"),
                                    )?,
                                })
                            }
                            _ => None,
                        },
                    })
                })
                .transpose(),
        };
        Ok(TrafficPolicy {
            namespace: policy
                .metadata
                .namespace
                .unwrap_or_else(|| "default".into()),
            name,
            generation: policy.metadata.generation,
            created: policy.metadata.creation_timestamp.map(|t| t.0.to_string()),
            services: services.into_iter().map(|t| t.name.clone()).collect(),
            other_targets: other_targets
                .into_iter()
                .map(|t| format!("{}/{} {}", t.group, t.kind, t.name))
                .collect(),
            budget,
        })
    }

    /// "XBackendTrafficPolicy namespace/name".
    pub fn label(&self) -> String {
        format!("{TRAFFIC_KIND} {}/{}", self.namespace, self.name)
    }
}

fn positive(field: &str, value: &str) -> Result<Duration, String> {
    let d = Duration::parse(value).map_err(|e| format!("{field}: {e}"))?;
    if d.as_std().is_zero() {
        return Err(format!("{field}: must be more than 0s"));
    }
    Ok(d)
}

/// What the BackendTrafficPolicies give each Service, and each policy's
/// standing per targeted Service.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Budgets {
    /// By (namespace, Service name).
    pub services: BTreeMap<(String, String), RetryBudget>,
    /// The policy each budget of `services` comes from, as its label.
    pub holders: BTreeMap<(String, String), String>,
    /// (policy label, Service name, Accepted).
    pub verdicts: Vec<(String, String, Verdict)>,
}

impl Budgets {
    pub fn for_service(&self, namespace: &str, name: &str) -> Option<&RetryBudget> {
        self.services
            .get(&(namespace.to_string(), name.to_string()))
    }

    /// "XBackendTrafficPolicy ns/name" of the Service's budget.
    pub fn holder(&self, namespace: &str, name: &str) -> Option<&str> {
        self.holders
            .get(&(namespace.to_string(), name.to_string()))
            .map(String::as_str)
    }
}

/// Each Service's budget: of the policies targeting it, the oldest (then
/// the first by namespace/name) that has a valid retry constraint; the
/// others are `Conflicted`.
pub fn budgets(policies: &[TrafficPolicy], services: &dyn Services) -> Budgets {
    let mut order: Vec<&TrafficPolicy> = policies.iter().collect();
    // No timestamp sorts first: a file's policies count as oldest.
    order.sort_by(|a, b| {
        (&a.created, &a.namespace, &a.name).cmp(&(&b.created, &b.namespace, &b.name))
    });
    let mut out = Budgets::default();
    for policy in order {
        for service in &policy.services {
            let key = (policy.namespace.clone(), service.clone());
            let verdict = match (&policy.budget, services.lookup(&policy.namespace, service)) {
                (_, ServiceLookup::NotFound) => Verdict::fail(
                    "TargetNotFound",
                    format!("no Service {}/{service}", policy.namespace),
                ),
                (Err(why), _) => Verdict::fail("Invalid", why.clone()),
                (Ok(None), _) => {
                    Verdict::ok("Accepted", "no retryConstraint: the default budget applies")
                }
                (Ok(Some(_)), _) if out.services.contains_key(&key) => Verdict::fail(
                    "Conflicted",
                    "an older BackendTrafficPolicy sets this Service's retry budget",
                ),
                (Ok(Some(budget)), _) => {
                    out.services.insert(key.clone(), budget.clone());
                    out.holders.insert(key, policy.label());
                    Verdict::ok("Accepted", "the Service's retries draw on this budget where its ResiliencePolicy sets none")
                }
            };
            out.verdicts
                .push((policy.label(), service.clone(), verdict));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    struct Known;
    impl Services for Known {
        fn lookup(&self, _: &str, name: &str) -> ServiceLookup {
            if name == "missing" {
                ServiceLookup::NotFound
            } else {
                ServiceLookup::Unknown
            }
        }
    }

    fn policy(name: &str, created: Option<&str>, spec: Value) -> TrafficPolicy {
        let mut metadata = json!({"name": name, "namespace": "shop"});
        if let Some(created) = created {
            metadata["creationTimestamp"] = json!(created);
        }
        TrafficPolicy::from_value(&json!({
            "apiVersion": "gateway.networking.x-k8s.io/v1alpha1",
            "kind": "XBackendTrafficPolicy",
            "metadata": metadata,
            "spec": spec,
        }))
        .unwrap()
    }

    #[test]
    fn a_retry_constraint_is_the_services_budget() {
        let p = policy(
            "budget",
            None,
            json!({
                "targetRefs": [{"group": "", "kind": "Service", "name": "checkout"},
                               {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "gw"}],
                "retryConstraint": {"budget": {"percent": 35, "interval": "20s"},
                                    "minRetryRate": {"count": 3, "interval": "2s"}}
            }),
        );
        assert_eq!(p.services, ["checkout"]);
        assert_eq!(p.other_targets, ["gateway.networking.k8s.io/Gateway gw"]);
        let b = budgets(&[p], &Known);
        let budget = b.for_service("shop", "checkout").unwrap();
        assert_eq!(budget.percent, Some(35));
        assert_eq!(budget.interval, Some(Duration::parse("20s").unwrap()));
        let rate = budget.min_retry_rate.as_ref().unwrap();
        assert_eq!((rate.count, rate.interval.as_std().as_secs()), (3, 2));
        assert!(b.verdicts[0].2.ok);
    }

    #[test]
    fn the_oldest_policy_wins_and_bad_ones_say_why() {
        let spec = |percent: i64| {
            json!({"targetRefs": [{"group": "", "kind": "Service", "name": "checkout"}],
                   "retryConstraint": {"budget": {"percent": percent}}})
        };
        let newer = policy("newer", Some("2026-02-01T00:00:00Z"), spec(50));
        let older = policy("older", Some("2026-01-01T00:00:00Z"), spec(10));
        let b = budgets(&[newer, older], &Known);
        assert_eq!(b.for_service("shop", "checkout").unwrap().percent, Some(10));
        let newer = b.verdicts.iter().find(|v| v.0.ends_with("/newer")).unwrap();
        assert_eq!((newer.2.ok, newer.2.reason.as_str()), (false, "Conflicted"));

        let bad = policy("bad", None, spec(150));
        let b = budgets(&[bad], &Known);
        assert!(b.services.is_empty());
        assert_eq!(b.verdicts[0].2.reason, "Invalid");
        assert!(b.verdicts[0].2.message.contains("150"), "{:?}", b.verdicts);

        let missing = policy(
            "m",
            None,
            json!({"targetRefs": [{"group": "", "kind": "Service", "name": "missing"}],
                   "retryConstraint": {"budget": {"percent": 5}}}),
        );
        assert_eq!(
            budgets(&[missing], &Known).verdicts[0].2.reason,
            "TargetNotFound"
        );

        let sticky = policy(
            "s",
            None,
            json!({"targetRefs": [{"group": "", "kind": "Service", "name": "checkout"}],
                   "sessionPersistence": {"sessionName": "x"}}),
        );
        assert_eq!(budgets(&[sticky], &Known).verdicts[0].2.reason, "Invalid");
    }
}
