//! Subscriptions and their latest snapshots. Each subscription is one watch
//! channel holding only the newest snapshot: a slow stream skips straight to
//! the latest (coalescing), and memory per subscription is one snapshot no
//! matter how far behind a reader is. Each snapshot is serialized once, when
//! it is published: every stream of the subscription sends the same bytes.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use k8s_openapi::jiff::Timestamp;
use outrigger_api::stream::{Ack, Snapshot, StreamMessage, Subscription};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::resolve::resolve;
use super::tallies::{Entry, ProxyPolicies, Tallies};
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

/// One version of a subscription's state, as sent.
pub struct Published {
    pub snapshot: Snapshot,
    /// The stream line: `{"type":"snapshot",...}` and a newline. Shared by
    /// every stream of the subscription (cloning `Bytes` copies nothing).
    pub line: Bytes,
    /// The policy the snapshot carries, and its generation (for tallies).
    policy: Option<(Arc<str>, Option<i64>)>,
}

impl Published {
    fn new(snapshot: Snapshot) -> Arc<Self> {
        let message = StreamMessage::Snapshot(Box::new(snapshot));
        let mut line = serde_json::to_vec(&message).expect("messages serialize");
        line.push(b'\n');
        let StreamMessage::Snapshot(snapshot) = message else {
            unreachable!("built above")
        };
        let policy = snapshot
            .destination
            .as_ref()
            .and_then(|d| d.policy.as_ref())
            .map(|p| (Arc::from(p.name.as_str()), p.generation));
        Arc::new(Published {
            snapshot: *snapshot,
            line: Bytes::from(line),
            policy,
        })
    }
}

/// A subscription with at least one open stream.
pub struct Channel {
    subscription: Subscription,
    sender: watch::Sender<Arc<Published>>,
    /// Cleared (under the hub's lock) when the hub drops the channel; a
    /// proxy's acks may still point at it.
    live: AtomicBool,
}

#[derive(Default)]
struct HubState {
    /// Monotonic across all subscriptions.
    version: u64,
    channels: HashMap<Subscription, ChannelEntry>,
    /// When each version was published (for change-to-ack latency), pruned.
    published: BTreeMap<u64, Instant>,
    /// Per proxy with open streams: how many, and the version it applied per
    /// subscription. Proxies without streams are forgotten (pod names churn).
    proxies: HashMap<Arc<str>, ProxyState>,
    /// `status.proxies` per policy, kept up to date by every change below.
    tallies: Tallies,
}

struct ChannelEntry {
    channel: Arc<Channel>,
    /// The proxies with an applied entry for this channel, whose counts
    /// change with its snapshot or go when it is dropped.
    appliers: HashSet<Arc<str>>,
}

struct ProxyState {
    /// Its key in `proxies` (an applier's name).
    name: Arc<str>,
    open_streams: usize,
    /// When the proxy's first open stream began (for `outrigger proxies`).
    since: Timestamp,
    /// The channel of each open stream (one entry per stream), so the admin
    /// view lists subscriptions not acknowledged yet too.
    watching: Vec<Arc<Channel>>,
    /// A proxy watches a handful of subscriptions: a short list, searched by
    /// channel identity, costs less than a map keyed by subscription name.
    applied: Vec<(Arc<Channel>, u64)>,
    /// What its entries of `applied` on live channels add to the tallies.
    policies: ProxyPolicies,
}

/// Counts (`add`) or uncounts a proxy's applied entry of a live channel,
/// against the channel's latest snapshot.
fn count(
    tallies: &mut Tallies,
    policies: &mut ProxyPolicies,
    channel: &Channel,
    applied: u64,
    add: bool,
) {
    let published = channel.sender.borrow();
    if let Some((policy, generation)) = &published.policy {
        let entry = Entry {
            policy,
            generation: *generation,
            up_to_date: applied >= published.snapshot.version,
        };
        tallies.adjust(policies, entry, add);
    }
}

/// Counts (`add`) or uncounts the entries every applier of `entry` holds for it.
fn count_appliers(
    tallies: &mut Tallies,
    proxies: &mut HashMap<Arc<str>, ProxyState>,
    entry: &ChannelEntry,
    add: bool,
) {
    for name in &entry.appliers {
        let Some(proxy) = proxies.get_mut(name) else {
            debug_assert!(false, "appliers leave with their proxy");
            continue;
        };
        if let Some((_, applied)) = proxy
            .applied
            .iter()
            .find(|(c, _)| Arc::ptr_eq(c, &entry.channel))
        {
            count(tallies, &mut proxy.policies, &entry.channel, *applied, add);
        }
    }
}

/// One open stream's hold on a subscription: the receiver of its channel,
/// and the bookkeeping undone when it is dropped.
pub struct Subscriber {
    // Field order matters: the receiver drops before the ticket, so the hub
    // sees the channel without this reader when the ticket unsubscribes.
    pub receiver: watch::Receiver<Arc<Published>>,
    _ticket: Ticket,
}

struct Ticket {
    hub: Arc<Hub>,
    proxy: Arc<str>,
    channel: Arc<Channel>,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.hub.unsubscribe(&self.proxy, &self.channel);
    }
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

    /// Opens a stream for `proxy`: the receiver starts at the current
    /// snapshot; dropping the subscriber closes the stream in the books.
    pub fn subscribe(self: &Arc<Self>, proxy: &str, subscription: &Subscription) -> Subscriber {
        let mut state = self.state.lock().expect("not poisoned");
        let proxy = match state.proxies.get_key_value(proxy) {
            Some((name, _)) => name.clone(),
            None => Arc::from(proxy),
        };
        let channel = match state.channels.get(subscription) {
            Some(entry) => entry.channel.clone(),
            None => {
                let destination = resolve(&self.index.load(), subscription, &self.cluster_domain);
                state.version += 1;
                let version = state.version;
                state.published.insert(version, Instant::now());
                let (sender, _) = watch::channel(Published::new(Snapshot {
                    version,
                    destination,
                }));
                let channel = Arc::new(Channel {
                    subscription: subscription.clone(),
                    sender,
                    live: AtomicBool::new(true),
                });
                state.channels.insert(
                    subscription.clone(),
                    ChannelEntry {
                        channel: channel.clone(),
                        appliers: HashSet::new(),
                    },
                );
                channel
            }
        };
        let entry = state
            .proxies
            .entry(proxy.clone())
            .or_insert_with(|| ProxyState {
                name: proxy.clone(),
                open_streams: 0,
                since: Timestamp::now(),
                watching: Vec::new(),
                applied: Vec::new(),
                policies: ProxyPolicies::default(),
            });
        entry.open_streams += 1;
        entry.watching.push(channel.clone());
        let receiver = channel.sender.subscribe();
        self.publish_gauges(&state);
        Subscriber {
            receiver,
            _ticket: Ticket {
                hub: self.clone(),
                proxy,
                channel,
            },
        }
    }

    /// A stream ended (its receiver is already dropped).
    fn unsubscribe(&self, proxy: &Arc<str>, channel: &Arc<Channel>) {
        let mut state = self.state.lock().expect("not poisoned");
        let HubState {
            channels,
            proxies,
            tallies,
            ..
        } = &mut *state;
        if let Some(p) = proxies.get_mut(proxy) {
            p.open_streams = p.open_streams.saturating_sub(1);
            if let Some(i) = p.watching.iter().position(|c| Arc::ptr_eq(c, channel)) {
                p.watching.swap_remove(i);
            }
            // Without streams a proxy counts nowhere: forget it, or every pod
            // that ever connected (pod names churn) stays in memory.
            if p.open_streams == 0 {
                let mut p = proxies.remove(proxy).expect("found above");
                for (c, applied) in &p.applied {
                    if c.live.load(Ordering::Relaxed) {
                        count(tallies, &mut p.policies, c, *applied, false);
                        if let Some(entry) = channels.get_mut(&c.subscription) {
                            entry.appliers.remove(proxy);
                        }
                    }
                }
                debug_assert!(p.policies.is_empty());
            }
        }
        // A channel without readers is dropped; a later subscribe recomputes.
        if channel.sender.receiver_count() == 0
            && channels
                .get(&channel.subscription)
                .is_some_and(|e| Arc::ptr_eq(&e.channel, channel))
        {
            let entry = channels.remove(&channel.subscription).expect("found above");
            // Entries of a dropped channel count nowhere.
            count_appliers(tallies, proxies, &entry, false);
            channel.live.store(false, Ordering::Relaxed);
        }
        self.publish_gauges(&state);
    }

    fn publish_gauges(&self, state: &HubState) {
        // Proxies without open streams are removed, so every one counts.
        self.metrics
            .connected_proxies
            .set(state.proxies.len() as i64);
        self.metrics.subscriptions.set(state.channels.len() as i64);
    }

    /// Recomputes every subscription against the current view; publishes a
    /// new snapshot only where the content changed.
    pub fn refresh(&self) {
        let compiled: Arc<Compiled> = self.index.load();
        let mut state = self.state.lock().expect("not poisoned");
        let HubState {
            version: last_version,
            channels,
            published,
            proxies,
            tallies,
        } = &mut *state;
        for entry in channels.values() {
            let channel = &entry.channel;
            let destination = resolve(&compiled, &channel.subscription, &self.cluster_domain);
            if channel.sender.borrow().snapshot.destination == destination {
                continue;
            }
            *last_version += 1;
            let version = *last_version;
            published.insert(version, Instant::now());
            // The appliers' entries are recounted against the new snapshot
            // (behind it, perhaps under another policy).
            count_appliers(tallies, proxies, entry, false);
            channel.sender.send_replace(Published::new(Snapshot {
                version,
                destination,
            }));
            count_appliers(tallies, proxies, entry, true);
            self.metrics.pushes.inc();
        }
        while published.len() > PUBLISHED_KEPT {
            published.pop_first();
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
        let since_published = state.published.get(&ack.version).map(Instant::elapsed);
        // Only subscriptions with open streams, of proxies with open streams,
        // are tracked (an ack racing the stream's close would otherwise
        // re-create a forgotten proxy).
        let HubState {
            channels,
            proxies,
            tallies,
            ..
        } = &mut *state;
        let (Some(entry), Some(proxy)) = (
            channels.get_mut(&ack.subscription),
            proxies.get_mut(ack.proxy.as_str()),
        ) else {
            return;
        };
        let channel = &entry.channel;
        match proxy
            .applied
            .iter_mut()
            .find(|(c, _)| Arc::ptr_eq(c, channel))
        {
            Some((_, applied)) => {
                // Change-to-ack latency: only a version newer than the one
                // this proxy had applied, i.e. a change it was subscribed
                // for. The snapshot a stream starts with (below) may have
                // been published long before the proxy came (another proxy's
                // subscription made the channel), and a repeated ack is no
                // new change. (A change racing a new stream's first ack is
                // not timed: its ack lands below.)
                if ack.version > *applied {
                    if let Some(elapsed) = since_published {
                        self.metrics.change_to_ack.observe(elapsed.as_secs_f64());
                    }
                }
                if ack.version != *applied {
                    count(tallies, &mut proxy.policies, channel, *applied, false);
                    *applied = ack.version;
                    count(tallies, &mut proxy.policies, channel, *applied, true);
                }
            }
            None => {
                // Entries of channels dropped since go with the new one
                // (uncounted when their channel was dropped).
                proxy
                    .applied
                    .retain(|(c, _)| c.live.load(Ordering::Relaxed));
                proxy.applied.push((channel.clone(), ack.version));
                count(tallies, &mut proxy.policies, channel, ack.version, true);
                entry.appliers.insert(proxy.name.clone());
            }
        }
    }

    /// Per policy (`namespace/name`): the proxies connected here that use it,
    /// those whose applied snapshot is this replica's latest, and the policy
    /// generation that latest snapshot carries.
    pub fn proxy_counts(&self) -> HashMap<String, Tally> {
        self.state.lock().expect("not poisoned").tallies.get()
    }

    /// `proxy_counts` by a scan of every proxy, as it was computed before
    /// the tallies were kept up to date: the reference they are tested
    /// against.
    #[cfg(test)]
    fn proxy_counts_by_scan(&self) -> HashMap<String, Tally> {
        let state = self.state.lock().expect("not poisoned");
        let mut counts: HashMap<Arc<str>, Tally> = HashMap::new();
        // Per proxy: (policy, every subscription to it current, generation).
        let mut per_policy: Vec<(Arc<str>, bool, Option<i64>)> = Vec::new();
        for proxy in state.proxies.values() {
            // A proxy counts once per policy, current only if every one of its
            // subscriptions to that policy is.
            per_policy.clear();
            for (channel, applied) in &proxy.applied {
                if !channel.live.load(Ordering::Relaxed) {
                    continue;
                }
                // The channel holds what the subscription resolves to now
                // (`refresh` follows every change of the view): no resolving
                // per proxy and subscription under the lock.
                let current = channel.sender.borrow();
                let Some((policy, generation)) = &current.policy else {
                    continue;
                };
                let up_to_date = *applied >= current.snapshot.version;
                match per_policy.iter_mut().find(|(name, ..)| name == policy) {
                    Some((_, all, _)) => *all &= up_to_date,
                    None => per_policy.push((policy.clone(), up_to_date, *generation)),
                }
            }
            for (policy, current, generation) in per_policy.drain(..) {
                let entry = counts.entry(policy).or_default();
                entry.total += 1;
                entry.current += u32::from(current);
                entry.generation = entry.generation.max(generation);
            }
        }
        counts
            .into_iter()
            .map(|(policy, tally)| (policy.to_string(), tally))
            .collect()
    }
}

/// A proxy with open streams to this replica, as the admin endpoint
/// `/proxies` shows it (read by `outrigger proxies` and `outrigger check`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectedProxy {
    /// The id the proxy gave (its pod name).
    pub proxy: String,
    /// RFC 3339: when its first open stream began.
    pub connected_since: String,
    pub streams: usize,
    pub subscriptions: Vec<WatchState>,
}

/// One subscription of a proxy: what it applied against what it was sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WatchState {
    /// `dst:HOST:PORT`, `in:NS/SERVICE` or `pod:NS/POD:PORT`.
    pub subscription: String,
    /// The policy (`namespace/name`) the latest snapshot carries.
    pub policy: Option<String>,
    pub generation: Option<i64>,
    /// The snapshot version the proxy acknowledged last, if any.
    pub applied: Option<u64>,
    /// The latest snapshot version of the subscription.
    pub latest: u64,
    /// Whether the proxy applied the latest snapshot.
    pub current: bool,
}

impl Hub {
    /// Every proxy with open streams here, sorted by id.
    pub fn connected_proxies(&self) -> Vec<ConnectedProxy> {
        let state = self.state.lock().expect("not poisoned");
        let mut proxies: Vec<ConnectedProxy> = state
            .proxies
            .iter()
            .map(|(name, proxy)| {
                let mut subscriptions: Vec<WatchState> = Vec::new();
                for channel in &proxy.watching {
                    let key = channel.subscription.key();
                    // Two streams of one subscription show once.
                    if subscriptions.iter().any(|s| s.subscription == key) {
                        continue;
                    }
                    let applied = proxy
                        .applied
                        .iter()
                        .find(|(c, _)| Arc::ptr_eq(c, channel))
                        .map(|(_, v)| *v);
                    let published = channel.sender.borrow();
                    let latest = published.snapshot.version;
                    let (policy, generation) = match &published.policy {
                        Some((p, g)) => (Some(p.to_string()), *g),
                        None => (None, None),
                    };
                    subscriptions.push(WatchState {
                        subscription: key,
                        policy,
                        generation,
                        applied,
                        latest,
                        current: applied.is_some_and(|a| a >= latest),
                    });
                }
                subscriptions.sort_by(|a, b| a.subscription.cmp(&b.subscription));
                ConnectedProxy {
                    proxy: name.to_string(),
                    connected_since: proxy.since.to_string(),
                    streams: proxy.open_streams,
                    subscriptions,
                }
            })
            .collect();
        proxies.sort_by(|a, b| a.proxy.cmp(&b.proxy));
        proxies
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
        let mut subscriber = hub.subscribe("p1", &subscription);
        let receiver = &mut subscriber.receiver;
        let first = receiver.borrow_and_update().snapshot.version;
        // Thirty changes while the reader does nothing: nothing queues up.
        for n in 0..30 {
            index.store(compile(&[policy(n % 10)], &[service(80)], &[]));
            hub.refresh();
        }
        assert!(receiver.has_changed().unwrap());
        let latest = receiver.borrow_and_update().clone();
        assert!(
            latest.snapshot.version >= first + 29,
            "{} vs {first}",
            latest.snapshot.version
        );
        let policy = latest
            .snapshot
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
        drop(subscriber);
        let state = hub.state.lock().unwrap();
        assert_eq!(state.channels.len(), 0, "no readers, no channel");
        assert_eq!(state.proxies.len(), 0, "no streams, no proxy");
    }

    /// The line every stream sends is the snapshot message serialized once.
    #[tokio::test]
    async fn the_shared_line_is_the_serialized_message() {
        let index = Arc::new(CompiledIndex::default());
        index.store(compile(&[policy(3)], &[service(80)], &[]));
        let hub = Hub::new(index, Arc::default(), "cluster.local".into());
        let a = hub.subscribe("p1", &Subscription::Destination("web.shop:80".into()));
        let b = hub.subscribe("p2", &Subscription::Destination("web.shop:80".into()));
        let published = a.receiver.borrow().clone();
        assert!(Arc::ptr_eq(&published, &b.receiver.borrow()), "one channel");
        let message = StreamMessage::Snapshot(Box::new(published.snapshot.clone()));
        let mut expected = serde_json::to_vec(&message).unwrap();
        expected.push(b'\n');
        assert_eq!(published.line, expected);
        let parsed: StreamMessage = serde_json::from_slice(&published.line).unwrap();
        assert_eq!(parsed, message);
    }

    /// Change-to-ack latency times the changes a subscribed proxy receives,
    /// not the snapshot a new stream starts with (possibly published long
    /// before, for another proxy), nor a repeated ack.
    #[tokio::test]
    async fn change_to_ack_times_changes_only() {
        let index = Arc::new(CompiledIndex::default());
        index.store(compile(&[policy(1)], &[service(80)], &[]));
        let metrics = Arc::new(Metrics::new());
        let hub = Hub::new(index.clone(), metrics.clone(), "cluster.local".into());
        let web = Subscription::Destination("web.shop:80".into());
        let ack = |proxy: &str, s: &Subscriber| Ack {
            proxy: proxy.into(),
            subscription: web.clone(),
            version: s.receiver.borrow().snapshot.version,
        };
        let timed = || metrics.change_to_ack.get_sample_count();
        let p1 = hub.subscribe("p1", &web);
        hub.record_ack(&ack("p1", &p1));
        // p2 joins the channel p1 made: its first snapshot is not a change.
        let p2 = hub.subscribe("p2", &web);
        hub.record_ack(&ack("p2", &p2));
        assert_eq!(timed(), 0, "first snapshots are not timed");
        index.store(compile(&[policy(2)], &[service(80)], &[]));
        hub.refresh();
        hub.record_ack(&ack("p1", &p1));
        hub.record_ack(&ack("p2", &p2));
        assert_eq!(timed(), 2, "the change, once per proxy");
        hub.record_ack(&ack("p1", &p1));
        assert_eq!(timed(), 2, "a repeated ack is not timed again");
    }

    /// A proxy counts once per policy, current only once it acknowledged the
    /// latest snapshot of every subscription carrying that policy; proxies
    /// and channels leave the books with their last stream.
    #[tokio::test]
    async fn acks_make_proxies_current_per_policy() {
        let index = Arc::new(CompiledIndex::default());
        index.store(compile(&[policy(1)], &[service(80)], &[]));
        let hub = Hub::new(index.clone(), Arc::default(), "cluster.local".into());
        let short = Subscription::Destination("web.shop:80".into());
        let long = Subscription::Destination("web.shop.svc.cluster.local:80".into());
        let version = |s: &Subscriber| s.receiver.borrow().snapshot.version;
        let ack = |proxy: &str, subscription: &Subscription, version: u64| Ack {
            proxy: proxy.into(),
            subscription: subscription.clone(),
            version,
        };
        let p1_short = hub.subscribe("p1", &short);
        let p1_long = hub.subscribe("p1", &long);
        let p2_short = hub.subscribe("p2", &short);
        let tally = |hub: &Hub| {
            let counts = hub.proxy_counts();
            assert_eq!(counts, hub.proxy_counts_by_scan());
            let t = counts.get("shop/web").copied().unwrap_or_default();
            (t.total, t.current, t.generation)
        };
        assert_eq!(tally(&hub), (0, 0, None), "no acks yet");
        hub.record_ack(&ack("p1", &short, version(&p1_short)));
        assert_eq!(tally(&hub), (1, 1, Some(1)));
        hub.record_ack(&ack("p2", &short, version(&p2_short)));
        hub.record_ack(&ack("p1", &long, version(&p1_long)));
        assert_eq!(tally(&hub), (2, 2, Some(1)), "p1 counts once");

        // A new generation: nobody is current until they acknowledge it.
        index.store(compile(&[policy(2)], &[service(80)], &[]));
        hub.refresh();
        assert_eq!(tally(&hub), (2, 0, Some(2)));
        hub.record_ack(&ack("p1", &short, version(&p1_short)));
        assert_eq!(tally(&hub), (2, 0, Some(2)), "p1 has not applied long yet");
        hub.record_ack(&ack("p1", &long, version(&p1_long)));
        hub.record_ack(&ack("p2", &short, version(&p2_short)));
        assert_eq!(tally(&hub), (2, 2, Some(2)));

        // Acks for unknown proxies or subscriptions change nothing.
        hub.record_ack(&ack("p3", &short, u64::MAX));
        hub.record_ack(&ack("p2", &long, u64::MAX));
        assert_eq!(tally(&hub), (2, 2, Some(2)));

        // The admin view: each proxy once, each subscription once, with what
        // it applied against the latest.
        let listed = hub.connected_proxies();
        assert_eq!(
            listed.iter().map(|p| p.proxy.as_str()).collect::<Vec<_>>(),
            ["p1", "p2"]
        );
        assert_eq!(listed[0].streams, 2);
        assert_eq!(listed[0].subscriptions.len(), 2);
        let p2 = &listed[1].subscriptions[0];
        assert_eq!(p2.subscription, "dst:web.shop:80");
        assert_eq!(p2.policy.as_deref(), Some("shop/web"));
        assert_eq!(p2.generation, Some(2));
        assert_eq!(p2.applied, Some(version(&p2_short)));
        assert!(p2.current);
        assert!(listed[0].connected_since.parse::<Timestamp>().is_ok());
        // A new generation nobody acknowledged: every subscription is behind.
        index.store(compile(&[policy(3)], &[service(80)], &[]));
        hub.refresh();
        let listed = hub.connected_proxies();
        assert!(listed
            .iter()
            .flat_map(|p| &p.subscriptions)
            .all(|s| !s.current && s.applied < Some(s.latest)));
        hub.record_ack(&ack("p1", &short, version(&p1_short)));
        hub.record_ack(&ack("p1", &long, version(&p1_long)));
        hub.record_ack(&ack("p2", &short, version(&p2_short)));

        drop(p2_short);
        assert_eq!(tally(&hub), (1, 1, Some(3)), "p2 left");
        drop(p1_short);
        assert_eq!(hub.connected_proxies()[0].subscriptions.len(), 1);
        drop(p1_long);
        assert_eq!(tally(&hub), (0, 0, None));
        assert!(hub.connected_proxies().is_empty());
        let state = hub.state.lock().unwrap();
        assert_eq!((state.channels.len(), state.proxies.len()), (0, 0));
    }

    #[derive(Debug, Clone)]
    enum Op {
        Subscribe {
            proxy: u8,
            subscription: u8,
        },
        Close(usize),
        Ack {
            proxy: u8,
            subscription: u8,
            behind: bool,
        },
        /// Policies of `web` and `api` (none, or a generation), as one view.
        Edit(Option<u32>, Option<u32>),
    }

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        let generation = || proptest::option::of(1u32..4);
        prop_oneof![
            3 => (0u8..4, 0u8..3).prop_map(|(proxy, subscription)| Op::Subscribe { proxy, subscription }),
            1 => (0usize..16).prop_map(Op::Close),
            4 => (0u8..4, 0u8..3, proptest::bool::ANY)
                .prop_map(|(proxy, subscription, behind)| Op::Ack { proxy, subscription, behind }),
            1 => (generation(), generation()).prop_map(|(web, api)| Op::Edit(web, api)),
        ]
    }

    fn view(web: Option<u32>, api: Option<u32>) -> Compiled {
        let named = |name: &str, generation: u32| {
            serde_json::from_value(serde_json::json!({
                "apiVersion": "outrigger.dev/v1alpha1", "kind": "ResiliencePolicy",
                "metadata": {"name": name, "namespace": "shop", "generation": generation},
                "spec": {"targetRef": {"kind": "Service", "name": name}, "retry": {"attempts": generation}}
            }))
            .unwrap()
        };
        let service = |name: &str| {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": name, "namespace": "shop"},
                "spec": {"ports": [{"name": "http", "port": 80}]}
            }))
            .unwrap()
        };
        let mut policies = Vec::new();
        policies.extend(web.map(|g| named("web", g)));
        policies.extend(api.map(|g| named("api", g)));
        compile(&policies, &[service("web"), service("api")], &[])
    }

    proptest::proptest! {
        /// The tallies kept up to date equal a scan of every proxy after any
        /// sequence of streams opening and closing, acks (current, behind,
        /// for subscriptions the proxy has no stream to) and edits that
        /// change generations or move subscriptions off and onto policies.
        #[test]
        fn tallies_equal_a_scan(ops in proptest::collection::vec(op(), 1..60)) {
            let subscriptions = [
                Subscription::Destination("web.shop:80".into()),
                Subscription::Destination("web.shop.svc.cluster.local:80".into()),
                Subscription::Destination("api.shop:80".into()),
            ];
            let index = Arc::new(CompiledIndex::default());
            index.store(view(Some(1), None));
            let hub = Hub::new(index.clone(), Arc::default(), "cluster.local".into());
            let mut open: Vec<(u8, Subscriber)> = Vec::new();
            for op in ops {
                match op {
                    Op::Subscribe { proxy, subscription } => {
                        let s = &subscriptions[usize::from(subscription)];
                        open.push((subscription, hub.subscribe(&format!("p{proxy}"), s)));
                    }
                    Op::Close(i) => {
                        if !open.is_empty() {
                            open.swap_remove(i % open.len());
                        }
                    }
                    Op::Ack { proxy, subscription, behind } => {
                        let latest = open
                            .iter()
                            .find(|(s, _)| *s == subscription)
                            .map_or(0, |(_, o)| o.receiver.borrow().snapshot.version);
                        hub.record_ack(&Ack {
                            proxy: format!("p{proxy}"),
                            subscription: subscriptions[usize::from(subscription)].clone(),
                            version: latest - u64::from(behind && latest > 0),
                        });
                    }
                    Op::Edit(web, api) => {
                        index.store(view(web, api));
                        hub.refresh();
                    }
                }
                proptest::prop_assert_eq!(hub.proxy_counts(), hub.proxy_counts_by_scan());
            }
            open.clear();
            proptest::prop_assert!(hub.proxy_counts().is_empty());
        }
    }
}
