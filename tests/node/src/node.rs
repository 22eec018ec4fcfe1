//! The node process: watches Pods, Services and EndpointSlices, runs each
//! pod (runtime.rs), keeps EndpointSlices (endpointslices.rs), `/etc/hosts`
//! and the Service rules (kubeproxy.rs) of every pod current. Level-based:
//! every change pokes a loop that compares the caches with what runs.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Client;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::network::{Network, PodNet};
use crate::{kubeproxy, volumes};

pub struct Config {
    pub name: String,
    pub network_id: Option<u8>,
    pub state_dir: PathBuf,
    pub bin_dir: PathBuf,
}

/// A running pod's files the Service loop rewrites.
struct Attached {
    netns: String,
    hosts: PathBuf,
    namespace: String,
    hostname: String,
    ip: std::net::Ipv4Addr,
}

pub struct Node {
    pub client: Client,
    pub net: Network,
    pub name: String,
    pub bin_dir: PathBuf,
    /// This binary: it is the container wrapper (`run-container`).
    pub self_exe: PathBuf,
    pub state_dir: PathBuf,
    /// How pods reach the API server (None if it could not be set up).
    pub access: Option<crate::apiserver::Access>,
    services: Store<Service>,
    slices: Store<EndpointSlice>,
    attached: Mutex<HashMap<String, Attached>>,
    /// Held while Service rules are computed from the caches and written:
    /// two refreshes that overlapped could otherwise write in the wrong
    /// order, the older rules last (a pod stopped after its drain would
    /// come back into a caller's rules and its connections time out).
    rules: Mutex<()>,
}

fn cloned<K>(store: &Store<K>) -> Vec<K>
where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: std::hash::Hash + Eq + Clone,
{
    store.state().iter().map(|k| (**k).clone()).collect()
}

impl Node {
    /// Registers a pod's namespace for Service updates and writes its
    /// `/etc/hosts` and rules now.
    pub fn attach(&self, uid: &str, ns: &str, name: &str, net: &PodNet, dir: &Path) -> Result<()> {
        let pod = Attached {
            netns: net.netns.clone(),
            hosts: dir.join("etc-hosts"),
            namespace: ns.into(),
            hostname: name.into(),
            ip: net.ip,
        };
        let _rules = self.rules.lock().unwrap();
        let services = cloned(&self.services);
        volumes::write_in_place(
            &pod.hosts,
            &volumes::hosts_file(ns, name, net.ip, &services),
        )?;
        kubeproxy::apply(
            &net.netns,
            &kubeproxy::rules(&services, &cloned(&self.slices)),
        )?;
        self.attached.lock().unwrap().insert(uid.into(), pod);
        Ok(())
    }

    pub fn detach(&self, uid: &str) {
        self.attached.lock().unwrap().remove(uid);
    }

    /// Rewrites one namespace's Service rules (after an init container).
    pub fn refresh_pod(&self, netns: &str) {
        let _rules = self.rules.lock().unwrap();
        let rules = kubeproxy::rules(&cloned(&self.services), &cloned(&self.slices));
        if let Err(e) = kubeproxy::apply(netns, &rules) {
            tracing::warn!(netns, error = %format!("{e:#}"), "service rules not applied");
        }
    }

    /// Every pod's `/etc/hosts` and Service rules, from the caches.
    fn refresh_all(&self) {
        // Read the caches under the lock: whoever writes last has read last.
        let _rules = self.rules.lock().unwrap();
        let services = cloned(&self.services);
        let rules = kubeproxy::rules(&services, &cloned(&self.slices));
        let pods: Vec<(String, PathBuf, String)> = self
            .attached
            .lock()
            .unwrap()
            .values()
            .map(|p| {
                let hosts = volumes::hosts_file(&p.namespace, &p.hostname, p.ip, &services);
                (p.netns.clone(), p.hosts.clone(), hosts)
            })
            .collect();
        for (netns, path, hosts) in pods {
            if let Err(e) = volumes::write_in_place(&path, &hosts) {
                tracing::warn!(netns, error = %e, "hosts file not written");
            }
            if let Err(e) = kubeproxy::apply(&netns, &rules) {
                tracing::warn!(netns, error = %format!("{e:#}"), "service rules not applied");
            }
        }
    }
}

/// A cache of `K`, poking each of `triggers` on every event.
pub(crate) fn reflect<K>(
    api: Api<K>,
    triggers: Vec<Arc<Notify>>,
    stop: CancellationToken,
) -> Store<K>
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
        .reflect(writer);
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                item = stream.next() => match item {
                    Some(result) => {
                        if let Err(e) = result {
                            tracing::warn!(kind = %K::kind(&()), error = %e, "watch error");
                        }
                        triggers.iter().for_each(|t| t.notify_one());
                    }
                    None => return,
                },
            }
        }
    });
    store
}

/// A running pod: its stop and its task.
struct Running {
    stop: CancellationToken,
    /// Deleted: being taken out of Service rules before it is stopped.
    draining: bool,
    task: tokio::task::JoinHandle<()>,
}

fn finished(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// Starts pods new to the cache, stops those deleted (or being deleted).
fn reconcile_pods(node: &Arc<Node>, pods: &Store<Pod>, running: &mut HashMap<String, Running>) {
    let current: HashMap<String, Arc<Pod>> = pods
        .state()
        .into_iter()
        .filter_map(|p| Some((p.metadata.uid.clone()?, p)))
        .collect();
    running.retain(|uid, r| {
        let keep = current
            .get(uid)
            .is_some_and(|p| p.metadata.deletion_timestamp.is_none());
        if !keep && !r.draining {
            r.draining = true;
            tokio::spawn(drain_then_stop(node.clone(), uid.clone(), r.stop.clone()));
        }
        keep || !r.task.is_finished()
    });
    for (uid, pod) in current {
        if running.contains_key(&uid) || finished(&pod) || pod.metadata.deletion_timestamp.is_some()
        {
            continue;
        }
        let stop = CancellationToken::new();
        let task = tokio::spawn(crate::runtime::run(
            node.clone(),
            (*pod).clone(),
            stop.clone(),
        ));
        tokio::spawn(bind(node.clone(), (*pod).clone()));
        running.insert(
            uid,
            Running {
                stop,
                task,
                draining: false,
            },
        );
    }
}

/// A deleted pod leaves every Service's rules before its containers get
/// SIGTERM: the node waits (at most 3 s) until the EndpointSlice cache no
/// longer lists its address and rewrites every pod's rules. (A cluster races
/// the two, which apps cover with a preStop delay; the node does it in
/// order, so a rollout loses no request.)
async fn drain_then_stop(node: Arc<Node>, uid: String, stop: CancellationToken) {
    let ip = node
        .attached
        .lock()
        .unwrap()
        .get(&uid)
        .map(|a| a.ip.to_string());
    if let Some(ip) = ip {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        while tokio::time::Instant::now() < deadline
            && !stop.is_cancelled()
            && node
                .slices
                .state()
                .iter()
                .any(|s| s.endpoints.iter().any(|e| e.addresses.contains(&ip)))
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let n = node.clone();
        let _ = tokio::task::spawn_blocking(move || n.refresh_all()).await;
    }
    stop.cancel();
}

/// The scheduler's part: the pod is bound to this node (`spec.nodeName`).
async fn bind(node: Arc<Node>, pod: Pod) {
    if pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.as_ref())
        .is_some()
    {
        return;
    }
    let api: Api<Pod> = Api::namespaced(
        node.client.clone(),
        pod.metadata.namespace.as_deref().unwrap_or("default"),
    );
    let patch = serde_json::json!({"spec": {"nodeName": node.name}});
    let name = pod.metadata.name.unwrap_or_default();
    if let Err(e) = api
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        tracing::debug!(pod = %name, error = %e, "not bound");
    }
}

/// Runs the node until `shutdown`, then stops every pod (each with its grace
/// period) and removes the network.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<()> {
    let client = Client::try_default().await.context("kubeconfig")?;
    let net = Network::create(config.network_id)?;
    tracing::info!(bridge = %net.bridge, host_ip = %net.host_ip, "network ready");
    let stop = CancellationToken::new();
    let (pods_changed, endpoints_due, services_changed, controllers_due) = (
        Arc::new(Notify::new()),
        Arc::new(Notify::new()),
        Arc::new(Notify::new()),
        Arc::new(Notify::new()),
    );
    let pods = reflect(
        Api::<Pod>::all(client.clone()),
        vec![
            pods_changed.clone(),
            endpoints_due.clone(),
            controllers_due.clone(),
        ],
        stop.clone(),
    );
    let services = reflect(
        Api::<Service>::all(client.clone()),
        vec![endpoints_due.clone(), services_changed.clone()],
        stop.clone(),
    );
    let slices = reflect(
        Api::<EndpointSlice>::all(client.clone()),
        vec![services_changed.clone()],
        stop.clone(),
    );
    let filled = async {
        pods.wait_until_ready().await?;
        services.wait_until_ready().await?;
        slices.wait_until_ready().await
    };
    tokio::select! {
        filled = filled => filled.context("caches did not fill")?,
        // Dropping the network on the way out removes the bridge.
        _ = shutdown.cancelled() => return Ok(()),
    }
    let access = match crate::apiserver::setup(&client, net.host_ip, stop.clone()).await {
        Ok(a) => {
            tracing::info!(service = %a.service_ip, "pods reach the API server through the kubernetes Service");
            Some(a)
        }
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "pods cannot reach the API server");
            None
        }
    };
    let node = Arc::new(Node {
        access,
        client: client.clone(),
        net,
        name: config.name,
        bin_dir: config.bin_dir,
        self_exe: std::env::current_exe()?,
        state_dir: config.state_dir,
        services: services.clone(),
        slices,
        attached: Mutex::new(HashMap::new()),
        rules: Mutex::new(()),
    });
    let controllers = tokio::spawn(crate::controllers::run(
        client.clone(),
        pods.clone(),
        controllers_due,
        stop.clone(),
    ));
    // EndpointSlices: retried a moment later on an API error (a conflict).
    let endpoints = {
        let (client, pods, services, stop) = (client, pods.clone(), services, stop.clone());
        tokio::spawn(async move {
            loop {
                let services = cloned(&services);
                let pods = cloned(&pods);
                if let Err(e) = crate::endpointslices::reconcile(&client, &services, &pods).await {
                    tracing::warn!(error = %e, "endpointslices not reconciled; retrying");
                    endpoints_due.notify_one();
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                tokio::select! {
                    _ = endpoints_due.notified() => {}
                    _ = stop.cancelled() => return,
                }
            }
        })
    };
    let proxy = {
        let (node, stop) = (node.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = services_changed.notified() => {}
                    _ = stop.cancelled() => return,
                }
                let node = node.clone();
                let _ = tokio::task::spawn_blocking(move || node.refresh_all()).await;
            }
        })
    };
    let mut running: HashMap<String, Running> = HashMap::new();
    loop {
        reconcile_pods(&node, &pods, &mut running);
        tokio::select! {
            _ = pods_changed.notified() => {}
            _ = shutdown.cancelled() => break,
        }
    }
    tracing::info!(pods = running.len(), "stopping");
    for r in running.values() {
        r.stop.cancel();
    }
    for (_, r) in running.drain() {
        let _ = r.task.await;
    }
    stop.cancel();
    let _ = tokio::join!(endpoints, proxy, controllers);
    drop(pods);
    match Arc::try_unwrap(node) {
        Ok(node) => drop(node),
        Err(_) => tracing::warn!("the network is still in use; removed at the next start"),
    }
    Ok(())
}
