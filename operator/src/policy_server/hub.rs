//! Subscriptions and their latest snapshots. Each subscription is one watch
//! channel holding only the newest snapshot: a slow stream skips straight to
//! the latest (coalescing), and memory per subscription is one snapshot no
//! matter how far behind a reader is.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use outrigger_api::stream::{Ack, DestinationSnapshot, Snapshot, Subscription};
use tokio::sync::watch;

use super::resolve::resolve;
use crate::compile::Compiled;
use crate::index::CompiledIndex;
use crate::metrics::Metrics;
use crate::proxy_reports::Tally;

pub struct Hub {
    index: Arc<CompiledIndex>,
    metrics: Arc<Metrics>,
    cluster_domain: String,
    state: Mutex<HubState>,
}

#[derive(Default)]
struct HubState {
    /// Monotonic across all subscriptions.
    version: u64,
    channels: HashMap<Subscription, watch::Sender<Arc<Snapshot>>>,
    /// When each version was published (for change-to-ack latency), pruned.
    published: BTreeMap<u64, Instant>,
    /// Per proxy: open streams, and the version it applied per subscription.
    proxies: HashMap<String, ProxyState>,
}

#[derive(Default)]
struct ProxyState {
    open_streams: usize,
    applied: HashMap<Subscription, u64>,
}

/// Keep publish times this long for latency; older acks are not timed.
const PUBLISHED_KEPT: usize = 4096;

impl Hub {
    pub fn new(
        index: Arc<CompiledIndex>,
        metrics: Arc<Metrics>,
        cluster_domain: String,
    ) -> Arc<Self> {
        // Versions start from the clock, so they keep increasing across
        // operator restarts and replicas: a proxy never mistakes a new
        // snapshot for one it already has.
        let start = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        Arc::new(Hub {
            index,
            metrics,
            cluster_domain,
            state: Mutex::new(HubState {
                version: start,
                ..HubState::default()
            }),
        })
    }

    /// Opens a stream for `proxy`: the receiver starts at the current snapshot.
    pub fn subscribe(
        &self,
        proxy: &str,
        subscription: &Subscription,
    ) -> watch::Receiver<Arc<Snapshot>> {
        let mut state = self.state.lock().expect("not poisoned");
        state
            .proxies
            .entry(proxy.to_string())
            .or_default()
            .open_streams += 1;
        if let Some(sender) = state.channels.get(subscription) {
            let receiver = sender.subscribe();
            self.publish_gauges(&state);
            return receiver;
        }
        let destination = resolve(&self.index.load(), subscription, &self.cluster_domain);
        state.version += 1;
        let version = state.version;
        state.published.insert(version, Instant::now());
        let (sender, receiver) = watch::channel(Arc::new(Snapshot {
            version,
            destination,
        }));
        state.channels.insert(subscription.clone(), sender);
        self.publish_gauges(&state);
        receiver
    }

    /// A stream ended.
    pub fn unsubscribe(&self, proxy: &str) {
        let mut state = self.state.lock().expect("not poisoned");
        if let Some(p) = state.proxies.get_mut(proxy) {
            p.open_streams = p.open_streams.saturating_sub(1);
            // Without streams a proxy counts nowhere: forget it, or every pod
            // that ever connected (pod names churn) stays in memory.
            if p.open_streams == 0 {
                state.proxies.remove(proxy);
            }
        }
        // Channels without readers are dropped; a later subscribe recomputes.
        state
            .channels
            .retain(|_, sender| sender.receiver_count() > 0);
        self.publish_gauges(&state);
    }

    fn publish_gauges(&self, state: &HubState) {
        let connected = state
            .proxies
            .values()
            .filter(|p| p.open_streams > 0)
            .count();
        self.metrics.connected_proxies.set(connected as i64);
        self.metrics.subscriptions.set(state.channels.len() as i64);
    }

    /// Recomputes every subscription against the current view; sends a new
    /// snapshot only where the content changed.
    pub fn refresh(&self) {
        let compiled: Arc<Compiled> = self.index.load();
        let mut state = self.state.lock().expect("not poisoned");
        let mut changed: Vec<(Subscription, Option<DestinationSnapshot>)> = Vec::new();
        for (subscription, sender) in &state.channels {
            let next = resolve(&compiled, subscription, &self.cluster_domain);
            if sender.borrow().destination != next {
                changed.push((subscription.clone(), next));
            }
        }
        for (subscription, destination) in changed {
            state.version += 1;
            let version = state.version;
            state.published.insert(version, Instant::now());
            if let Some(sender) = state.channels.get(&subscription) {
                sender.send_replace(Arc::new(Snapshot {
                    version,
                    destination,
                }));
                self.metrics.pushes.inc();
            }
        }
        while state.published.len() > PUBLISHED_KEPT {
            state.published.pop_first();
        }
    }

    /// Runs `refresh` on every change of the view.
    pub async fn follow(self: Arc<Self>) {
        let mut changes = self.index.changes();
        while changes.changed().await.is_ok() {
            self.refresh();
        }
    }

    pub fn record_ack(&self, ack: &Ack) {
        let mut state = self.state.lock().expect("not poisoned");
        if let Some(published) = state.published.get(&ack.version) {
            self.metrics
                .change_to_ack
                .observe(published.elapsed().as_secs_f64());
        }
        // Only proxies with an open stream are tracked (an ack racing the
        // stream's close would otherwise re-create a forgotten proxy).
        if let Some(proxy) = state.proxies.get_mut(&ack.proxy) {
            proxy.applied.insert(ack.subscription.clone(), ack.version);
        }
    }

    /// Per policy (`namespace/name`): the proxies connected here that use it,
    /// those whose applied snapshot is this replica's latest, and the policy
    /// generation that latest snapshot carries.
    pub fn proxy_counts(&self) -> HashMap<String, Tally> {
        let state = self.state.lock().expect("not poisoned");
        let mut counts: HashMap<String, Tally> = HashMap::new();
        for proxy in state.proxies.values().filter(|p| p.open_streams > 0) {
            // A proxy counts once per policy, current only if every one of its
            // subscriptions to that policy is.
            let mut per_policy: HashMap<String, (bool, Option<i64>)> = HashMap::new();
            for (subscription, applied) in &proxy.applied {
                let Some(current) = state.channels.get(subscription).map(|s| s.borrow().clone())
                else {
                    continue;
                };
                // The channel holds what the subscription resolves to now
                // (`refresh` follows every change of the view): no resolving
                // per proxy and subscription under the lock.
                let Some(policy) = current.destination.as_ref().and_then(|d| d.policy.as_ref())
                else {
                    continue;
                };
                let up_to_date = *applied >= current.version;
                per_policy
                    .entry(policy.name.clone())
                    .and_modify(|(all, _)| *all &= up_to_date)
                    .or_insert((up_to_date, policy.generation));
            }
            for (policy, (current, generation)) in per_policy {
                let entry = counts.entry(policy).or_default();
                entry.total += 1;
                entry.current += u32::from(current);
                entry.generation = entry.generation.max(generation);
            }
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::compile;
    use k8s_openapi::api::core::v1::Service;

    fn policy(attempts: u32) -> outrigger_api::policy::ResiliencePolicy {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "outrigger.dev/v1alpha1", "kind": "ResiliencePolicy",
            "metadata": {"name": "web", "namespace": "shop", "generation": attempts},
            "spec": {"targetRef": {"kind": "Service", "name": "web"}, "retry": {"attempts": attempts}}
        }))
        .unwrap()
    }

    fn service(port: i32) -> Service {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"ports": [{"name": "http", "port": port}]}
        }))
        .unwrap()
    }

    #[tokio::test]
    async fn a_reader_that_falls_behind_sees_only_the_newest_snapshot() {
        let index = Arc::new(CompiledIndex::default());
        index.store(compile(&[], &[service(80)], &[]));
        let hub = Hub::new(index.clone(), Arc::default(), "cluster.local".into());
        let subscription = Subscription::Destination("web.shop:80".into());
        let mut receiver = hub.subscribe("p1", &subscription);
        let first = receiver.borrow_and_update().version;
        // Thirty changes while the reader does nothing: nothing queues up.
        for n in 0..30 {
            index.store(compile(&[policy(n % 10)], &[service(80)], &[]));
            hub.refresh();
        }
        assert!(receiver.has_changed().unwrap());
        let latest = receiver.borrow_and_update().clone();
        assert!(
            latest.version >= first + 29,
            "{} vs {first}",
            latest.version
        );
        let policy = latest
            .destination
            .as_ref()
            .unwrap()
            .policy
            .as_ref()
            .unwrap();
        assert_eq!(
            policy.spec.retry.as_ref().unwrap().attempts,
            Some(9),
            "the newest"
        );
        assert!(
            !receiver.has_changed().unwrap(),
            "exactly one pending value"
        );
        // Unchanged content publishes nothing new.
        hub.refresh();
        assert!(!receiver.has_changed().unwrap());
        drop(receiver);
        hub.unsubscribe("p1");
        assert_eq!(
            hub.state.lock().unwrap().channels.len(),
            0,
            "no readers, no channel"
        );
    }
}
