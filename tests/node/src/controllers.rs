//! The controller manager's part for workloads: the Deployment controller
//! (deployments.rs) and the Job controller (jobs.rs) on the node's Pod cache,
//! and the garbage collector for the pods they own. Each controller runs
//! only if the API server serves its kind. After creating or deleting pods a
//! controller waits until its cache shows them (or 30 s pass) before
//! planning that owner again, so a slow watch never doubles a pod.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::reflector::Store;
use kube::Client;
use serde::Serialize;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// A controller's decision for one owner.
#[derive(Debug)]
pub struct Plan<S> {
    pub create: Vec<Pod>,
    /// Pod names (in the owner's namespace).
    pub delete: Vec<String>,
    pub status: S,
}

pub fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

pub fn fnv32(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    })
}

/// Digits of `n` in the alphabet of generated names (no vowels, so no words;
/// no 0, 1, 3 that look like letters).
pub fn encode(mut n: u64) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut out = String::new();
    loop {
        out.push(ALPHABET[(n % ALPHABET.len() as u64) as usize] as char);
        n /= ALPHABET.len() as u64;
        if n == 0 {
            return out;
        }
    }
}

/// Five characters for a pod name from `seed`.
pub fn suffix(seed: u64) -> String {
    let mixed = fnv32(&seed.to_le_bytes()) as u64 | (1 << 40);
    encode(mixed).chars().take(5).collect()
}

/// A fresh seed for `suffix`: the clock and a counter.
pub fn seed() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or_default();
    nanos ^ COUNTER.fetch_add(1 << 20, Ordering::Relaxed)
}

pub fn ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

pub fn finished(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

pub fn owner(api_version: &str, kind: &str, meta: &ObjectMeta) -> OwnerReference {
    OwnerReference {
        api_version: api_version.into(),
        kind: kind.into(),
        name: meta.name.clone().unwrap_or_default(),
        uid: meta.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

pub fn pod_from_template(
    template: PodTemplateSpec,
    namespace: Option<String>,
    name: String,
    owner: OwnerReference,
) -> Pod {
    let meta = template.metadata.unwrap_or_default();
    Pod {
        metadata: ObjectMeta {
            name: Some(name),
            namespace,
            labels: Some(meta.labels.unwrap_or_default()),
            annotations: meta.annotations,
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        spec: template.spec,
        status: None,
    }
}

/// The uid of the pod's controlling owner of `kind`.
fn controller_uid<'a>(pod: &'a Pod, kind: &str) -> Option<&'a str> {
    pod.metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true) && o.kind == kind)
        .map(|o| o.uid.as_str())
}

/// Pods created or deleted for an owner that the cache does not show yet.
struct Expectation {
    namespace: String,
    created: HashSet<String>,
    deleted: HashSet<String>,
    since: Instant,
}

impl Expectation {
    fn met(&self, names: &HashSet<(String, String)>) -> bool {
        let key = |n: &String| (self.namespace.clone(), n.clone());
        self.since.elapsed() > Duration::from_secs(30)
            || (self.created.iter().all(|n| names.contains(&key(n)))
                && !self.deleted.iter().any(|n| names.contains(&key(n))))
    }
}

struct Controllers {
    client: Client,
    pods: Store<Pod>,
    deployments: Option<Store<Deployment>>,
    jobs: Option<Store<Job>>,
    expected: HashMap<String, Expectation>,
}

impl Controllers {
    async fn reconcile(&mut self) {
        let pods: Vec<Arc<Pod>> = self.pods.state();
        let names: HashSet<(String, String)> = pods
            .iter()
            .filter_map(|p| Some((p.metadata.namespace.clone()?, p.metadata.name.clone()?)))
            .collect();
        self.expected.retain(|_, e| !e.met(&names));
        let mut by_owner: BTreeMap<(&str, &str), Vec<&Pod>> = BTreeMap::new();
        for pod in &pods {
            for kind in ["Deployment", "Job"] {
                if let Some(uid) = controller_uid(pod, kind) {
                    by_owner.entry((kind, uid)).or_default().push(pod);
                }
            }
        }
        let mut live: HashSet<(&str, String)> = HashSet::new();
        if let Some(store) = &self.deployments {
            for d in store.state() {
                let Some(uid) = d.metadata.uid.clone() else {
                    continue;
                };
                live.insert(("Deployment", uid.clone()));
                if d.metadata.deletion_timestamp.is_some() || self.expected.contains_key(&uid) {
                    continue;
                }
                let owned = by_owner
                    .get(&("Deployment", &uid))
                    .cloned()
                    .unwrap_or_default();
                // Finished pods are deleted (and so replaced).
                let (gone, owned): (Vec<&Pod>, Vec<&Pod>) = owned
                    .into_iter()
                    .filter(|p| p.metadata.deletion_timestamp.is_none())
                    .partition(|p| finished(p));
                let mut plan = crate::deployments::plan(&d, &owned, seed());
                tracing::debug!(
                    deployment = d.metadata.name.as_deref().unwrap_or_default(),
                    pods = owned.len(),
                    ready = owned.iter().filter(|p| ready(p)).count(),
                    create = plan.create.len(),
                    delete = plan.delete.len(),
                    "planned"
                );
                plan.delete
                    .extend(gone.iter().filter_map(|p| p.metadata.name.clone()));
                let api: Api<Deployment> = Api::namespaced(self.client.clone(), ns_of(&d.metadata));
                self.execute(&d.metadata, &uid, plan, d.status.as_ref(), api)
                    .await;
            }
        }
        if let Some(store) = &self.jobs {
            for j in store.state() {
                let Some(uid) = j.metadata.uid.clone() else {
                    continue;
                };
                live.insert(("Job", uid.clone()));
                if j.metadata.deletion_timestamp.is_some() || self.expected.contains_key(&uid) {
                    continue;
                }
                let owned: Vec<&Pod> = by_owner
                    .get(&("Job", &uid))
                    .cloned()
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|p| p.metadata.deletion_timestamp.is_none())
                    .collect();
                let plan = crate::jobs::plan(&j, &owned, seed());
                let api: Api<Job> = Api::namespaced(self.client.clone(), ns_of(&j.metadata));
                self.execute(&j.metadata, &uid, plan, j.status.as_ref(), api)
                    .await;
            }
        }
        // The garbage collector's part: pods whose owner is gone.
        for ((kind, uid), owned) in &by_owner {
            let watched = match *kind {
                "Deployment" => self.deployments.is_some(),
                _ => self.jobs.is_some(),
            };
            if !watched || live.contains(&(*kind, uid.to_string())) {
                continue;
            }
            for pod in owned {
                let (Some(ns), Some(name)) = (&pod.metadata.namespace, &pod.metadata.name) else {
                    continue;
                };
                let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
                match api.delete(name, &DeleteParams::default()).await {
                    Ok(_) => tracing::info!(pod = %name, %kind, "owner gone; pod deleted"),
                    Err(e) => tracing::debug!(pod = %name, error = %e, "not deleted"),
                }
            }
        }
    }

    /// Creates and deletes the plan's pods and writes the owner's status if
    /// it changed.
    async fn execute<K, S>(
        &mut self,
        meta: &ObjectMeta,
        uid: &str,
        plan: Plan<S>,
        current: Option<&S>,
        api: Api<K>,
    ) where
        K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
        S: Serialize + PartialEq,
    {
        let ns = ns_of(meta).to_string();
        let owner = meta.name.clone().unwrap_or_default();
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        let mut expectation = Expectation {
            namespace: ns.clone(),
            created: HashSet::new(),
            deleted: HashSet::new(),
            since: Instant::now(),
        };
        for pod in &plan.create {
            match pods.create(&PostParams::default(), pod).await {
                Ok(p) => {
                    let name = p.metadata.name.unwrap_or_default();
                    tracing::info!(%owner, pod = %name, "pod created");
                    expectation.created.insert(name);
                }
                Err(e) => tracing::warn!(%owner, error = %e, "pod not created"),
            }
        }
        for name in &plan.delete {
            match pods.delete(name, &DeleteParams::default()).await {
                Ok(_) => {
                    tracing::info!(%owner, pod = %name, "pod deleted");
                    expectation.deleted.insert(name.clone());
                }
                Err(e) => tracing::debug!(%owner, pod = %name, error = %e, "pod not deleted"),
            }
        }
        if !expectation.created.is_empty() || !expectation.deleted.is_empty() {
            self.expected.insert(uid.to_string(), expectation);
        }
        if current != Some(&plan.status) {
            let patch = serde_json::json!({ "status": plan.status });
            if let Err(e) = api
                .patch_status(&owner, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                tracing::debug!(%owner, error = %e, "status not written");
            }
        }
    }
}

fn ns_of(meta: &ObjectMeta) -> &str {
    meta.namespace.as_deref().unwrap_or("default")
}

/// Whether the API server serves `K` (a list of at most one item works).
async fn served<K>(client: &Client) -> bool
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match Api::<K>::all(client.clone())
        .list_metadata(&ListParams::default().limit(1))
        .await
    {
        Ok(_) => true,
        Err(e) => {
            tracing::info!(kind = %K::kind(&()), error = %e, "not served; its controller is off");
            false
        }
    }
}

/// Runs the controllers until `stop`; `due` is poked by the Pod cache.
pub async fn run(client: Client, pods: Store<Pod>, due: Arc<Notify>, stop: CancellationToken) {
    let deployments = if served::<Deployment>(&client).await {
        Some(crate::node::reflect(
            Api::<Deployment>::all(client.clone()),
            vec![due.clone()],
            stop.clone(),
        ))
    } else {
        None
    };
    let jobs = if served::<Job>(&client).await {
        Some(crate::node::reflect(
            Api::<Job>::all(client.clone()),
            vec![due.clone()],
            stop.clone(),
        ))
    } else {
        None
    };
    if deployments.is_none() && jobs.is_none() {
        return;
    }
    let filled = async {
        if let Some(s) = &deployments {
            s.wait_until_ready().await?;
        }
        if let Some(s) = &jobs {
            s.wait_until_ready().await?;
        }
        anyhow::Ok(())
    };
    tokio::select! {
        _ = filled => {}
        _ = stop.cancelled() => return,
    }
    let mut controllers = Controllers {
        client,
        pods,
        deployments,
        jobs,
        expected: HashMap::new(),
    };
    loop {
        controllers.reconcile().await;
        // Woken by any change; a tick catches expectations that time out.
        tokio::select! {
            _ = due.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = stop.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_names_use_the_safe_alphabet() {
        let a = suffix(1);
        let b = suffix(2);
        assert_eq!(a.len(), 5);
        assert_ne!(a, b);
        assert!(a.chars().all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c)));
    }

    #[test]
    fn expectations_wait_for_the_cache() {
        let e = Expectation {
            namespace: "ns".into(),
            created: HashSet::from(["a".to_string()]),
            deleted: HashSet::from(["b".to_string()]),
            since: Instant::now(),
        };
        let names = |v: &[&str]| -> HashSet<(String, String)> {
            v.iter()
                .map(|n| ("ns".to_string(), n.to_string()))
                .collect()
        };
        assert!(!e.met(&names(&["b"])));
        assert!(!e.met(&names(&["a", "b"])));
        assert!(e.met(&names(&["a"])));
    }
}
