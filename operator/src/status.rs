//! A policy's status from its verdict: Gateway-API-style conditions whose
//! `lastTransitionTime` moves only when their status does.

use k8s_openapi::jiff::Timestamp;
use outrigger_api::policy::{Condition, ProxyCount, ResiliencePolicyStatus};

use crate::compile::{ConditionState, Verdict};

/// The status a policy should have. `existing` keeps transition times stable.
pub fn desired_status(
    verdict: &Verdict,
    existing: Option<&ResiliencePolicyStatus>,
    proxies: Option<ProxyCount>,
    now: Timestamp,
) -> ResiliencePolicyStatus {
    let programmed = ConditionState {
        status: verdict.is_programmed(),
        reason: if verdict.is_programmed() {
            "Programmed"
        } else {
            "NotProgrammed"
        },
        message: if verdict.is_programmed() {
            "compiled into the view proxies receive".into()
        } else {
            "not applied: see Accepted and ResolvedRefs".into()
        },
    };
    let condition = |kind: &str, state: &ConditionState| {
        let status = if state.status { "True" } else { "False" };
        let previous = existing.and_then(|s| s.conditions.iter().find(|c| c.type_ == kind));
        let last_transition_time = match previous {
            Some(p) if p.status == status => p.last_transition_time.clone(),
            _ => Some(now.to_string()),
        };
        Condition {
            type_: kind.into(),
            status: status.into(),
            reason: state.reason.into(),
            message: state.message.clone(),
            last_transition_time,
            observed_generation: verdict.generation,
        }
    };
    ResiliencePolicyStatus {
        observed_generation: verdict.generation,
        conditions: vec![
            condition("Accepted", &verdict.accepted),
            condition("ResolvedRefs", &verdict.resolved_refs),
            condition("Programmed", &programmed),
        ],
        proxies: proxies.or_else(|| existing.and_then(|s| s.proxies.clone())),
        routes: verdict.routes.clone(),
    }
}

/// Whether the acceptance outcome changed (worth a Kubernetes Event).
pub fn acceptance_changed(
    old: Option<&ResiliencePolicyStatus>,
    new: &ResiliencePolicyStatus,
) -> bool {
    let accepted = |s: &ResiliencePolicyStatus| {
        s.conditions
            .iter()
            .find(|c| c.type_ == "Accepted")
            .map(|c| (c.status.clone(), c.reason.clone()))
    };
    old.and_then(accepted) != accepted(new)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(accepted: bool, resolved: bool) -> Verdict {
        let state = |ok: bool, yes: &'static str, no: &'static str| ConditionState {
            status: ok,
            reason: if ok { yes } else { no },
            message: String::new(),
        };
        Verdict {
            generation: Some(2),
            accepted: state(accepted, "Accepted", "Conflicted"),
            resolved_refs: state(resolved, "ResolvedRefs", "ServiceNotFound"),
            routes: Vec::new(),
        }
    }

    #[test]
    fn transition_time_moves_only_with_status() {
        let t1: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let t2: Timestamp = "2026-01-02T00:00:00Z".parse().unwrap();
        let first = desired_status(&verdict(true, false), None, None, t1);
        assert_eq!(first.observed_generation, Some(2));
        assert_eq!(first.conditions[2].status, "False", "not programmed");
        let second = desired_status(&verdict(true, true), Some(&first), None, t2);
        let time =
            |s: &ResiliencePolicyStatus, i: usize| s.conditions[i].last_transition_time.clone();
        assert_eq!(time(&second, 0), time(&first, 0), "Accepted unchanged");
        assert_eq!(
            time(&second, 1).unwrap(),
            t2.to_string(),
            "ResolvedRefs flipped"
        );
        assert!(!acceptance_changed(Some(&first), &second));
        let third = desired_status(&verdict(false, true), Some(&second), None, t2);
        assert!(acceptance_changed(Some(&second), &third));
    }
}
