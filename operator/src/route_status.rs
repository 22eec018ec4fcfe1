//! Gateway API route status (GAMMA): in `status.parents[]`, one entry per
//! parentRef of ours (a Service), with `controllerName: outrigger.dev/mesh`
//! and the conditions Accepted and ResolvedRefs.
//!
//! `status.parents` is an atomic list shared by every controller that acts on
//! the route (another mesh, a gateway): server-side apply would take the whole
//! list. So the leader reads the route, rebuilds the list keeping every other
//! controller's entry where it was, and writes it with a merge patch that
//! carries the resourceVersion it read; a conflict (someone wrote meanwhile)
//! is re-read and retried. Nothing is written when nothing changed.

use kube::api::{Api, DynamicObject, Patch, PatchParams};
use outrigger_api::gateway::{ParentVerdict, Verdict, CONTROLLER_NAME};
use serde_json::{json, Value};

fn is_ours(entry: &Value) -> bool {
    entry["controllerName"] == CONTROLLER_NAME
}

/// The condition, keeping `lastTransitionTime` from `previous` (our entry for
/// the same parentRef) unless the status flipped.
fn condition(
    kind: &str,
    outcome: &Verdict,
    previous: Option<&Value>,
    generation: Option<i64>,
    now: &str,
) -> Value {
    let status = if outcome.ok { "True" } else { "False" };
    let earlier = previous
        .and_then(|p| p["conditions"].as_array())
        .and_then(|cs| cs.iter().find(|c| c["type"] == kind))
        .filter(|c| c["status"] == status)
        .and_then(|c| c["lastTransitionTime"].as_str());
    let mut condition = json!({
        "type": kind,
        "status": status,
        "reason": outcome.reason,
        "message": outcome.message,
        "lastTransitionTime": earlier.unwrap_or(now),
    });
    if let Some(generation) = generation {
        condition["observedGeneration"] = generation.into();
    }
    condition
}

fn entry(
    ours: &ParentVerdict,
    previous: Option<&Value>,
    generation: Option<i64>,
    now: &str,
) -> Value {
    json!({
        "parentRef": ours.parent_ref,
        "controllerName": CONTROLLER_NAME,
        "conditions": [
            condition("Accepted", &ours.accepted, previous, generation, now),
            condition("ResolvedRefs", &ours.resolved_refs, previous, generation, now),
        ],
    })
}

/// The `status.parents` list the route should have: other controllers'
/// entries untouched and in place, ours updated in place, ours for parentRefs
/// no longer ours dropped, new ones appended. Stable: the same inputs give
/// the same list, so an unchanged route is never written (and two
/// controllers never reorder each other's entries back and forth).
pub fn desired_parents(
    existing: &[Value],
    ours: &[ParentVerdict],
    generation: Option<i64>,
    now: &str,
) -> Vec<Value> {
    let mut placed = vec![false; ours.len()];
    let mut out = Vec::with_capacity(existing.len() + ours.len());
    for current in existing {
        if !is_ours(current) {
            out.push(current.clone());
            continue;
        }
        let found = ours
            .iter()
            .enumerate()
            .find(|(i, o)| !placed[*i] && o.parent_ref == current["parentRef"]);
        if let Some((i, o)) = found {
            placed[i] = true;
            out.push(entry(o, Some(current), generation, now));
        }
    }
    for (i, o) in ours.iter().enumerate() {
        if !placed[i] {
            out.push(entry(o, None, generation, now));
        }
    }
    out
}

fn parents_of(route: &DynamicObject) -> Vec<Value> {
    route.data["status"]["parents"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Brings one route's `status.parents` up to date; whether it wrote.
/// Conflicts are retried a few times on a fresh read; any other error (or a
/// conflict that persists) is returned and retried on the next recompute.
pub async fn write(
    api: &Api<DynamicObject>,
    route: &DynamicObject,
    ours: &[ParentVerdict],
    now: &str,
) -> Result<bool, kube::Error> {
    const ATTEMPTS: usize = 3;
    let name = route.metadata.name.clone().unwrap_or_default();
    let mut current = route.clone();
    for attempt in 1..=ATTEMPTS {
        let existing = parents_of(&current);
        let desired = desired_parents(&existing, ours, current.metadata.generation, now);
        if desired == existing {
            return Ok(false);
        }
        let patch = json!({
            "metadata": {"resourceVersion": current.metadata.resource_version},
            "status": {"parents": desired},
        });
        match api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => return Ok(true),
            Err(kube::Error::Api(status)) if status.code == 409 && attempt < ATTEMPTS => {
                current = api.get_status(&name).await?;
            }
            Err(err) => return Err(err),
        }
    }
    unreachable!("the last attempt returns")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(ok: bool, reason: &str) -> Verdict {
        Verdict {
            ok,
            reason: reason.into(),
            message: format!("{reason} message"),
        }
    }

    fn parent(name: &str, accepted: bool, resolved: bool) -> ParentVerdict {
        ParentVerdict {
            parent_ref: json!({"group": "", "kind": "Service", "name": name, "port": 80}),
            accepted: outcome(
                accepted,
                if accepted {
                    "Accepted"
                } else {
                    "UnsupportedValue"
                },
            ),
            resolved_refs: outcome(
                resolved,
                if resolved {
                    "ResolvedRefs"
                } else {
                    "BackendNotFound"
                },
            ),
        }
    }

    fn other_controller() -> Value {
        json!({"parentRef": {"group": "", "kind": "Service", "name": "echo", "port": 80},
               "controllerName": "example.com/other-mesh",
               "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted",
                               "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}]})
    }

    #[test]
    fn other_controllers_entries_stay_in_place_and_ours_follow() {
        let existing = vec![other_controller()];
        let first = desired_parents(&existing, &[parent("echo", true, true)], Some(1), "T1");
        assert_eq!(first.len(), 2);
        assert_eq!(first[0], other_controller());
        assert_eq!(first[1]["controllerName"], CONTROLLER_NAME);
        let conditions = first[1]["conditions"].as_array().unwrap();
        assert_eq!(conditions[0]["type"], "Accepted");
        assert_eq!(conditions[0]["status"], "True");
        assert_eq!(conditions[0]["observedGeneration"], 1);
        assert_eq!(conditions[0]["lastTransitionTime"], "T1");
        assert_eq!(conditions[1]["reason"], "ResolvedRefs");

        // Unchanged: the same list, so no write.
        let again = desired_parents(&first, &[parent("echo", true, true)], Some(1), "T2");
        assert_eq!(again, first);

        // A new generation with ResolvedRefs flipped: only that time moves.
        let flipped = desired_parents(&first, &[parent("echo", true, false)], Some(2), "T3");
        let conditions = flipped[1]["conditions"].as_array().unwrap();
        assert_eq!(conditions[0]["lastTransitionTime"], "T1");
        assert_eq!(conditions[0]["observedGeneration"], 2);
        assert_eq!(conditions[1]["lastTransitionTime"], "T3");
        assert_eq!(conditions[1]["reason"], "BackendNotFound");
        assert_eq!(flipped[0], other_controller());
    }

    #[test]
    fn our_entries_for_parents_no_longer_ours_are_dropped_in_place() {
        let ours_first = desired_parents(
            &[],
            &[parent("a", true, true), parent("b", true, true)],
            Some(1),
            "T1",
        );
        // Another controller appended after ours: its position is kept.
        let mut existing = ours_first.clone();
        existing.push(other_controller());
        let next = desired_parents(&existing, &[parent("b", true, true)], Some(2), "T2");
        assert_eq!(next.len(), 2);
        assert_eq!(next[0]["parentRef"]["name"], "b");
        assert_eq!(next[1], other_controller());
        // No parent of ours left: only the other controller's entry.
        assert_eq!(
            desired_parents(&next, &[], Some(3), "T3"),
            vec![other_controller()]
        );
    }

    /// A write that meets a concurrent one (409) reads the route again and
    /// retries with the new resourceVersion, keeping what the other writer
    /// added.
    #[tokio::test]
    async fn a_conflict_is_reread_and_retried_with_the_new_resource_version() {
        use http::{Method, Request, Response, StatusCode};
        use kube::client::Body;
        use std::sync::{Arc, Mutex};

        let route = |rv: &str, parents: Value| -> Value {
            json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
                   "metadata": {"name": "r", "namespace": "shop", "generation": 1, "resourceVersion": rv},
                   "spec": {}, "status": {"parents": parents}})
        };
        let respond_json = |status: StatusCode, body: Value| {
            Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .body(Body::from(serde_json::to_vec(&body).unwrap()))
                .unwrap()
        };
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let patches: Arc<Mutex<Vec<Value>>> = Arc::default();
        let seen = patches.clone();
        let fresh = route("8", json!([other_controller()]));
        tokio::spawn(async move {
            while let Some((request, send)) = handle.next_request().await {
                assert_eq!(
                    request.uri().path(),
                    "/apis/gateway.networking.k8s.io/v1/namespaces/shop/httproutes/r/status"
                );
                if request.method() == Method::GET {
                    send.send_response(respond_json(StatusCode::OK, fresh.clone()));
                    continue;
                }
                assert_eq!(request.method(), Method::PATCH);
                let body = http_body_util::BodyExt::collect(request.into_body())
                    .await
                    .unwrap()
                    .to_bytes();
                let patch: Value = serde_json::from_slice(&body).unwrap();
                let first = seen.lock().unwrap().is_empty();
                seen.lock().unwrap().push(patch);
                if first {
                    send.send_response(respond_json(
                        StatusCode::CONFLICT,
                        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                               "message": "the object has been modified", "reason": "Conflict", "code": 409}),
                    ));
                } else {
                    send.send_response(respond_json(StatusCode::OK, fresh.clone()));
                }
            }
        });
        let client = kube::Client::new(service, "default");
        let resource = kube::api::ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk(
            "gateway.networking.k8s.io",
            "v1",
            "HTTPRoute",
        ));
        let api: Api<DynamicObject> = Api::namespaced_with(client, "shop", &resource);
        let stale: DynamicObject = serde_json::from_value(route("7", json!([]))).unwrap();
        let wrote = write(&api, &stale, &[parent("echo", true, true)], "T1")
            .await
            .unwrap();
        assert!(wrote);
        let patches = patches.lock().unwrap();
        assert_eq!(patches.len(), 2);
        assert_eq!(patches[0]["metadata"]["resourceVersion"], "7");
        assert_eq!(patches[0]["status"]["parents"].as_array().unwrap().len(), 1);
        assert_eq!(patches[1]["metadata"]["resourceVersion"], "8");
        let parents = patches[1]["status"]["parents"].as_array().unwrap();
        assert_eq!(
            parents[0],
            other_controller(),
            "the other writer's entry is kept"
        );
        assert_eq!(parents[1]["controllerName"], CONTROLLER_NAME);
    }
}
