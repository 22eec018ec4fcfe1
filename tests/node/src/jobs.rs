//! The Job controller's job: pods (`<job>-<suffix>`, labels `job-name` and
//! `controller-uid`, ownerReference to the Job) until `completions` of them
//! succeeded, at most `parallelism` at a time; more than `backoffLimit`
//! failed pods fail the Job. `plan` is pure. A Job without `completions`
//! is complete when one pod succeeded and none is left running. Pod failure
//! policies, success policies, indexed completion, `activeDeadlineSeconds`
//! and suspension are not simulated.

use k8s_openapi::api::batch::v1::{Job, JobCondition, JobStatus};
use k8s_openapi::api::core::v1::Pod;

use crate::controllers::{self, Plan};

fn phase(pod: &Pod) -> Option<&str> {
    pod.status.as_ref().and_then(|s| s.phase.as_deref())
}

fn finished_condition(job: &Job) -> Option<&str> {
    job.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| {
            c.iter()
                .find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
        })
        .map(|c| c.type_.as_str())
}

fn condition(type_: &str, reason: &str, message: &str, now: &controllers::Time) -> JobCondition {
    JobCondition {
        type_: type_.into(),
        status: "True".into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_probe_time: Some(now.clone()),
        last_transition_time: Some(now.clone()),
    }
}

fn new_pod(job: &Job, seed: u64) -> Pod {
    let name = job.metadata.name.clone().unwrap_or_default();
    let uid = job.metadata.uid.clone().unwrap_or_default();
    let template = job
        .spec
        .as_ref()
        .map(|s| s.template.clone())
        .unwrap_or_default();
    let mut pod = controllers::pod_from_template(
        template,
        job.metadata.namespace.clone(),
        format!("{name}-{}", controllers::suffix(seed)),
        controllers::owner("batch/v1", "Job", &job.metadata),
    );
    let labels = pod.metadata.labels.get_or_insert_with(Default::default);
    for (k, v) in [
        ("job-name", &name),
        ("batch.kubernetes.io/job-name", &name),
        ("controller-uid", &uid),
        ("batch.kubernetes.io/controller-uid", &uid),
    ] {
        labels.entry(k.into()).or_insert_with(|| v.clone());
    }
    pod
}

/// What to do for `job`, given every pod it owns (finished ones included).
pub fn plan(job: &Job, owned: &[&Pod], seed: u64) -> Plan<JobStatus> {
    let spec = job.spec.as_ref();
    let parallelism = spec.and_then(|s| s.parallelism).unwrap_or(1).max(0);
    let completions = spec.and_then(|s| s.completions);
    let backoff_limit = spec.and_then(|s| s.backoff_limit).unwrap_or(6);
    let succeeded = owned
        .iter()
        .filter(|p| phase(p) == Some("Succeeded"))
        .count() as i32;
    let failed = owned.iter().filter(|p| phase(p) == Some("Failed")).count() as i32;
    let active: Vec<&&Pod> = owned
        .iter()
        .filter(|p| !matches!(phase(p), Some("Succeeded" | "Failed")))
        .collect();
    let ready = active.iter().filter(|p| controllers::ready(p)).count() as i32;
    let now = controllers::now();
    let previous = job.status.clone().unwrap_or_default();
    let mut status = JobStatus {
        active: Some(active.len() as i32),
        succeeded: Some(succeeded),
        failed: Some(failed),
        ready: Some(ready),
        start_time: previous.start_time.clone().or(Some(now.clone())),
        completion_time: previous.completion_time.clone(),
        conditions: previous.conditions.clone(),
        ..Default::default()
    };
    let mut plan = Plan {
        create: Vec::new(),
        delete: Vec::new(),
        status: status.clone(),
    };
    if finished_condition(job).is_some() {
        // Finished: only the counts move (no pod is created again).
        plan.delete = active
            .iter()
            .filter_map(|p| p.metadata.name.clone())
            .collect();
        return plan;
    }
    let conditions = status.conditions.get_or_insert_with(Vec::new);
    if failed > backoff_limit {
        let message = format!("{failed} pods failed; backoffLimit is {backoff_limit}");
        conditions.push(condition(
            "FailureTarget",
            "BackoffLimitExceeded",
            &message,
            &now,
        ));
        conditions.push(condition("Failed", "BackoffLimitExceeded", &message, &now));
        plan.delete = active
            .iter()
            .filter_map(|p| p.metadata.name.clone())
            .collect();
        status.active = Some(0);
        status.ready = Some(0);
        plan.status = status;
        return plan;
    }
    let done = match completions {
        Some(c) => succeeded >= c,
        None => succeeded >= 1 && active.is_empty(),
    };
    if done {
        let message = format!("{succeeded} pods succeeded");
        conditions.push(condition(
            "SuccessCriteriaMet",
            "CompletionsReached",
            &message,
            &now,
        ));
        conditions.push(condition("Complete", "CompletionsReached", &message, &now));
        status.completion_time = Some(now.clone());
        plan.delete = active
            .iter()
            .filter_map(|p| p.metadata.name.clone())
            .collect();
        status.active = Some(0);
        status.ready = Some(0);
        plan.status = status;
        return plan;
    }
    let wanted = match completions {
        Some(c) => parallelism.min(c - succeeded),
        // Work-queue Jobs: no new pods once one succeeded.
        None if succeeded > 0 => 0,
        None => parallelism,
    };
    let create = (wanted - active.len() as i32).max(0);
    plan.create = (0..create)
        .map(|i| new_pod(job, seed.wrapping_add(i as u64)))
        .collect();
    plan.status = status;
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn job(completions: Option<i32>, parallelism: i32, backoff: i32) -> Job {
        serde_json::from_value(json!({
            "metadata": {"name": "once", "namespace": "ns", "uid": "j-1"},
            "spec": {
                "completions": completions,
                "parallelism": parallelism,
                "backoffLimit": backoff,
                "template": {"spec": {"restartPolicy": "Never",
                    "containers": [{"name": "c", "image": "outrigger/shell"}]}}
            }
        }))
        .unwrap()
    }

    fn pod(name: &str, phase: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "ns"},
            "status": {"phase": phase}
        }))
        .unwrap()
    }

    fn types(s: &JobStatus) -> Vec<&str> {
        s.conditions
            .iter()
            .flatten()
            .map(|c| c.type_.as_str())
            .collect()
    }

    #[test]
    fn pods_up_to_parallelism_then_complete_at_completions() {
        let j = job(Some(3), 2, 6);
        let p = plan(&j, &[], 1);
        assert_eq!(p.create.len(), 2);
        let pod0 = &p.create[0];
        assert!(pod0.metadata.name.as_deref().unwrap().starts_with("once-"));
        assert_eq!(pod0.metadata.labels.as_ref().unwrap()["job-name"], "once");
        assert_eq!(
            pod0.metadata.owner_references.as_ref().unwrap()[0].kind,
            "Job"
        );
        assert!(p.status.start_time.is_some());
        let (a, b) = (pod("a", "Succeeded"), pod("b", "Running"));
        let p = plan(&j, &[&a, &b], 1);
        // Two left to do, one running: one more.
        assert_eq!(p.create.len(), 1);
        assert_eq!((p.status.active, p.status.succeeded), (Some(1), Some(1)));
        let (b, c) = (pod("b", "Succeeded"), pod("c", "Running"));
        // One left to do, one running: nothing new.
        assert!(plan(&j, &[&a, &b, &c], 1).create.is_empty());
        let c = pod("c", "Succeeded");
        let p = plan(&j, &[&a, &b, &c], 1);
        assert_eq!(types(&p.status), vec!["SuccessCriteriaMet", "Complete"]);
        assert!(p.status.completion_time.is_some());
        assert_eq!(p.status.succeeded, Some(3));
    }

    #[test]
    fn failed_pods_are_replaced_until_the_backoff_limit() {
        let j = job(Some(1), 1, 1);
        let f1 = pod("f1", "Failed");
        let p = plan(&j, &[&f1], 1);
        assert_eq!(p.create.len(), 1);
        assert_eq!(p.status.failed, Some(1));
        let f2 = pod("f2", "Failed");
        let p = plan(&j, &[&f1, &f2], 1);
        assert!(p.create.is_empty());
        assert_eq!(types(&p.status), vec!["FailureTarget", "Failed"]);
    }

    #[test]
    fn a_finished_job_creates_nothing_more() {
        let mut j = job(Some(1), 1, 6);
        let a = pod("a", "Succeeded");
        j.status = Some(plan(&j, &[&a], 1).status);
        let p = plan(&j, &[&a], 1);
        assert!(p.create.is_empty());
        assert_eq!(types(&p.status), vec!["SuccessCriteriaMet", "Complete"]);
    }

    #[test]
    fn without_completions_one_success_and_nothing_running_completes() {
        let j = job(None, 2, 6);
        assert_eq!(plan(&j, &[], 1).create.len(), 2);
        let (a, b) = (pod("a", "Succeeded"), pod("b", "Running"));
        let p = plan(&j, &[&a, &b], 1);
        assert!(p.create.is_empty());
        assert!(types(&p.status).is_empty());
        let b = pod("b", "Succeeded");
        assert_eq!(
            types(&plan(&j, &[&a, &b], 1).status),
            vec!["SuccessCriteriaMet", "Complete"]
        );
    }
}
