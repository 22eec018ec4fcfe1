//! The Deployment controller's job, without ReplicaSets: a Deployment owns
//! its Pods directly (`<deploy>-<template-hash>-<suffix>`, label
//! `pod-template-hash`, ownerReference to the Deployment). `plan` is pure:
//! from a Deployment and the pods it owns, the pods to create and delete and
//! the status to write. Rolling updates honour maxSurge/maxUnavailable
//! (surge rounded up, unavailable down, as Kubernetes does); `Recreate`
//! deletes every old pod before creating new ones. Ready counts as available
//! (minReadySeconds is not honoured).

use k8s_openapi::api::apps::v1::{Deployment, DeploymentCondition, DeploymentStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::controllers::{self, Plan};

pub const TEMPLATE_HASH: &str = "pod-template-hash";

/// The template's hash: FNV-1a (32 bit) of its JSON, in the alphabet
/// Kubernetes uses for generated names (no vowels, no look-alikes).
pub fn template_hash(deploy: &Deployment) -> String {
    let json =
        serde_json::to_string(&deploy.spec.as_ref().map(|s| &s.template)).unwrap_or_default();
    controllers::encode(controllers::fnv32(json.as_bytes()) as u64)
}

/// `value` of `total`: a number, or a percentage rounded up or down.
pub fn scaled(
    value: Option<&IntOrString>,
    default_percent: i32,
    total: i32,
    round_up: bool,
) -> i32 {
    let percent = match value {
        Some(IntOrString::Int(n)) => return (*n).max(0),
        Some(IntOrString::String(s)) => s
            .trim_end_matches('%')
            .parse::<i32>()
            .unwrap_or(default_percent),
        None => default_percent,
    };
    let product = i64::from(percent.max(0)) * i64::from(total.max(0));
    let n = if round_up {
        (product + 99) / 100
    } else {
        product / 100
    };
    n as i32
}

/// maxSurge and maxUnavailable for `replicas` (both zero makes
/// maxUnavailable one, as Kubernetes does).
pub fn surge_and_unavailable(deploy: &Deployment, replicas: i32) -> (i32, i32) {
    let rolling = deploy
        .spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.rolling_update.as_ref());
    let surge = scaled(
        rolling.and_then(|r| r.max_surge.as_ref()),
        25,
        replicas,
        true,
    );
    let unavailable = scaled(
        rolling.and_then(|r| r.max_unavailable.as_ref()),
        25,
        replicas,
        false,
    );
    if surge == 0 && unavailable == 0 {
        (0, 1)
    } else {
        (surge, unavailable)
    }
}

fn recreate(deploy: &Deployment) -> bool {
    deploy
        .spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.type_.as_deref())
        == Some("Recreate")
}

fn hash_of(pod: &Pod) -> Option<&str> {
    pod.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(TEMPLATE_HASH))
        .map(String::as_str)
}

/// Unready first, then the newest: the pods to remove first.
fn removal_order(pods: &mut [&Pod]) {
    pods.sort_by(|a, b| {
        controllers::ready(a)
            .cmp(&controllers::ready(b))
            .then_with(|| {
                b.metadata
                    .creation_timestamp
                    .cmp(&a.metadata.creation_timestamp)
            })
            .then_with(|| b.metadata.name.cmp(&a.metadata.name))
    });
}

/// A pod for the current template.
fn new_pod(deploy: &Deployment, hash: &str, seed: u64) -> Pod {
    let name = deploy.metadata.name.clone().unwrap_or_default();
    let template = deploy
        .spec
        .as_ref()
        .map(|s| s.template.clone())
        .unwrap_or_default();
    let mut pod = controllers::pod_from_template(
        template,
        deploy.metadata.namespace.clone(),
        format!("{name}-{hash}-{}", controllers::suffix(seed)),
        controllers::owner("apps/v1", "Deployment", &deploy.metadata),
    );
    pod.metadata
        .labels
        .get_or_insert_with(Default::default)
        .insert(TEMPLATE_HASH.into(), hash.into());
    pod
}

fn condition(
    old: Option<&DeploymentStatus>,
    type_: &str,
    ok: bool,
    reason: &str,
    message: String,
    now: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time,
) -> DeploymentCondition {
    let status = if ok { "True" } else { "False" };
    let previous = old
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == type_));
    let same = previous.is_some_and(|p| p.status == status && p.reason.as_deref() == Some(reason));
    let transition = match previous {
        Some(p) if p.status == status => p.last_transition_time.clone(),
        _ => Some(now.clone()),
    };
    DeploymentCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message),
        last_transition_time: transition,
        last_update_time: if same {
            previous.and_then(|p| p.last_update_time.clone())
        } else {
            Some(now.clone())
        },
    }
}

/// What to do for `deploy`, given the (unfinished, undeleted) pods it owns.
/// `seed` makes the new pods' name suffixes.
pub fn plan(deploy: &Deployment, owned: &[&Pod], seed: u64) -> Plan<DeploymentStatus> {
    let spec = deploy.spec.as_ref();
    let replicas = spec.and_then(|s| s.replicas).unwrap_or(1).max(0);
    let paused = spec.and_then(|s| s.paused).unwrap_or(false);
    let hash = template_hash(deploy);
    let (mut new, mut old): (Vec<&Pod>, Vec<&Pod>) = owned
        .iter()
        .copied()
        .partition(|p| hash_of(p) == Some(hash.as_str()));
    removal_order(&mut new);
    removal_order(&mut old);
    let count_ready = |pods: &[&Pod]| pods.iter().filter(|p| controllers::ready(p)).count() as i32;
    let (n, o) = (new.len() as i32, old.len() as i32);
    let (new_ready, old_ready) = (count_ready(&new), count_ready(&old));
    let (surge, unavailable) = surge_and_unavailable(deploy, replicas);
    let mut create = 0;
    let mut delete: Vec<&Pod> = Vec::new();
    if paused {
        // Nothing moves while paused.
    } else if recreate(deploy) && o > 0 {
        delete.extend(old.iter().copied());
    } else if o == 0 || recreate(deploy) {
        if n < replicas {
            create = replicas - n;
        } else {
            delete.extend(new.iter().take((n - replicas) as usize).copied());
        }
    } else {
        // Rolling: new pods up to replicas + maxSurge in all...
        let room = (replicas + surge - n - o).max(0);
        create = (replicas - n).max(0).min(room);
        if n > replicas {
            delete.extend(new.iter().take((n - replicas) as usize).copied());
        }
        // ...old ones go: unready ones at once (they are not available
        // anyway), ready ones while the available count stays at least
        // replicas - maxUnavailable.
        let min_available = replicas - unavailable;
        let mut available = new_ready.min(replicas) + old_ready;
        for pod in &old {
            if !controllers::ready(pod) {
                delete.push(pod);
            } else if available > min_available {
                available -= 1;
                delete.push(pod);
            }
        }
    }
    let creates = (0..create)
        .map(|i| new_pod(deploy, &hash, seed.wrapping_add(i as u64)))
        .collect();

    let now = controllers::now();
    let previous = deploy.status.as_ref();
    let available = new_ready + old_ready;
    let min_available = replicas - unavailable;
    let complete = n == replicas && o == 0 && new_ready == replicas;
    let progressing_reason = if complete {
        "NewReplicaSetAvailable"
    } else {
        "ReplicaSetUpdated"
    };
    let status = DeploymentStatus {
        observed_generation: deploy.metadata.generation,
        replicas: Some(n + o),
        updated_replicas: Some(n),
        ready_replicas: Some(available),
        available_replicas: Some(available),
        unavailable_replicas: Some((replicas - available).max(0)),
        collision_count: previous.and_then(|s| s.collision_count),
        terminating_replicas: None,
        conditions: Some(vec![
            condition(
                previous,
                "Available",
                available >= min_available,
                if available >= min_available {
                    "MinimumReplicasAvailable"
                } else {
                    "MinimumReplicasUnavailable"
                },
                format!(
                    "{available} of {replicas} pods available (at least {min_available} wanted)"
                ),
                &now,
            ),
            condition(
                previous,
                "Progressing",
                true,
                progressing_reason,
                format!("pods of template {hash}: {n} ({new_ready} ready); older pods: {o}"),
                &now,
            ),
        ]),
    };
    Plan {
        create: creates,
        delete: delete
            .into_iter()
            .filter_map(|p| p.metadata.name.clone())
            .collect(),
        status,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment(replicas: i32, image: &str, strategy: serde_json::Value) -> Deployment {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "shop", "uid": "d-1", "generation": 2},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": "web"}},
                "strategy": strategy,
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "app", "image": image}]}
                }
            }
        }))
        .unwrap()
    }

    fn pod(name: &str, hash: &str, ready: bool, created: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {
                "name": name, "namespace": "shop",
                "labels": {"app": "web", "pod-template-hash": hash},
                "creationTimestamp": created,
            },
            "spec": {"containers": []},
            "status": {"conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]}
        }))
        .unwrap()
    }

    fn rolling(surge: serde_json::Value, unavailable: serde_json::Value) -> serde_json::Value {
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable}})
    }

    #[test]
    fn percentages_round_as_kubernetes_does() {
        let p = |s: &str| IntOrString::String(s.into());
        assert_eq!(scaled(Some(&p("25%")), 25, 2, true), 1);
        assert_eq!(scaled(Some(&p("25%")), 25, 2, false), 0);
        assert_eq!(scaled(Some(&p("25%")), 25, 10, true), 3);
        assert_eq!(scaled(Some(&p("25%")), 25, 10, false), 2);
        assert_eq!(scaled(Some(&IntOrString::Int(3)), 25, 10, false), 3);
        assert_eq!(scaled(None, 25, 4, false), 1);
        let d = deployment(2, "a", json!(null));
        assert_eq!(surge_and_unavailable(&d, 2), (1, 0));
        let d = deployment(2, "a", rolling(json!(0), json!(0)));
        assert_eq!(surge_and_unavailable(&d, 2), (0, 1));
    }

    #[test]
    fn a_new_deployment_creates_its_replicas_named_and_owned() {
        let d = deployment(2, "a", json!(null));
        let plan = plan(&d, &[], 7);
        assert_eq!(plan.create.len(), 2);
        let hash = template_hash(&d);
        let p = &plan.create[0];
        let name = p.metadata.name.as_deref().unwrap();
        assert!(name.starts_with(&format!("web-{hash}-")), "{name}");
        assert_ne!(plan.create[0].metadata.name, plan.create[1].metadata.name);
        assert_eq!(p.metadata.labels.as_ref().unwrap()[TEMPLATE_HASH], hash);
        assert_eq!(p.metadata.labels.as_ref().unwrap()["app"], "web");
        let owner = &p.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str()),
            ("Deployment", "d-1")
        );
        assert_eq!(owner.controller, Some(true));
        assert_eq!(plan.status.replicas, Some(0));
        assert_eq!(plan.status.observed_generation, Some(2));
    }

    #[test]
    fn scaling_down_removes_unready_then_newest() {
        let d = deployment(1, "a", json!(null));
        let h = template_hash(&d);
        let a = pod("a", &h, true, "2026-01-01T00:00:00Z");
        let b = pod("b", &h, true, "2026-01-01T00:00:05Z");
        let c = pod("c", &h, false, "2026-01-01T00:00:01Z");
        let plan = plan(&d, &[&a, &b, &c], 0);
        assert!(plan.create.is_empty());
        assert_eq!(plan.delete, vec!["c", "b"]);
    }

    #[test]
    fn a_rollout_surges_first_and_deletes_old_pods_only_as_new_ones_are_ready() {
        // 2 replicas, defaults: maxSurge 1 (rounded up), maxUnavailable 0.
        let d = deployment(2, "b", json!(null));
        let h = template_hash(&d);
        let old1 = pod("old1", "oldhash", true, "2026-01-01T00:00:00Z");
        let old2 = pod("old2", "oldhash", true, "2026-01-01T00:00:01Z");
        let step = plan(&d, &[&old1, &old2], 0);
        assert_eq!((step.create.len(), step.delete.len()), (1, 0));
        assert_eq!(step.status.updated_replicas, Some(0));
        // The new pod is not ready yet: nothing more.
        let new1 = pod("new1", &h, false, "2026-01-01T00:01:00Z");
        let step = plan(&d, &[&old1, &old2, &new1], 0);
        assert_eq!((step.create.len(), step.delete.len()), (0, 0));
        // Ready: one old pod goes (the newest old one first).
        let new1 = pod("new1", &h, true, "2026-01-01T00:01:00Z");
        let step = plan(&d, &[&old1, &old2, &new1], 0);
        assert_eq!(step.create.len(), 0);
        assert_eq!(step.delete, vec!["old2"]);
        // With one old pod left, the second new one may start.
        let step = plan(&d, &[&old1, &new1], 0);
        assert_eq!((step.create.len(), step.delete.len()), (1, 0));
        let new2 = pod("new2", &h, true, "2026-01-01T00:02:00Z");
        let step = plan(&d, &[&old1, &new1, &new2], 0);
        assert_eq!(step.delete, vec!["old1"]);
        let done = plan(&d, &[&new1, &new2], 0);
        assert!(done.create.is_empty() && done.delete.is_empty());
        let s = &done.status;
        assert_eq!(
            (
                s.replicas,
                s.updated_replicas,
                s.ready_replicas,
                s.available_replicas
            ),
            (Some(2), Some(2), Some(2), Some(2))
        );
        let c = s.conditions.as_ref().unwrap();
        assert_eq!(c[0].type_, "Available");
        assert_eq!(c[0].status, "True");
        assert_eq!(c[1].reason.as_deref(), Some("NewReplicaSetAvailable"));
    }

    #[test]
    fn max_unavailable_lets_old_pods_go_before_new_ones_are_ready() {
        let d = deployment(4, "b", rolling(json!(0), json!("50%")));
        let olds: Vec<Pod> = (0..4)
            .map(|i| pod(&format!("old{i}"), "x", true, "2026-01-01T00:00:00Z"))
            .collect();
        let refs: Vec<&Pod> = olds.iter().collect();
        let step = plan(&d, &refs, 0);
        // No surge: nothing created until old pods are gone; two may go.
        assert_eq!((step.create.len(), step.delete.len()), (0, 2));
        let step = plan(&d, &refs[..2], 0);
        assert_eq!((step.create.len(), step.delete.len()), (2, 0));
        // Unready old pods go at once.
        let sick = pod("sick", "x", false, "2026-01-01T00:00:00Z");
        let step = plan(&d, &[&sick, refs[0], refs[1], refs[2]], 0);
        assert!(step.delete.contains(&"sick".to_string()));
    }

    #[test]
    fn recreate_deletes_everything_old_first() {
        let d = deployment(2, "b", json!({"type": "Recreate"}));
        let old = pod("old", "x", true, "2026-01-01T00:00:00Z");
        let step = plan(&d, &[&old], 0);
        assert_eq!(
            (step.create.len(), step.delete),
            (0, vec!["old".to_string()])
        );
        let step = plan(&d, &[], 0);
        assert_eq!(step.create.len(), 2);
    }
}
