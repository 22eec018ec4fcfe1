//! Destination stacks by the identity of the state they hold, rebuilt when
//! what they were built from changes. A request takes one `Arc` to the stack
//! current when it arrived and keeps it to the end, so a policy swap never
//! changes a request mid-flight.
//!
//! State (breaker, retry budget, limits, rate limit, outlier detector,
//! latency estimates) belongs to a Service port, not to the name a client
//! spelled: `web`, `web.shop`, `web.shop.svc`, `web.shop.svc.cluster.local`
//! and the ClusterIP (through the control plane's snapshot) all reach the
//! stack of `web.shop.svc.cluster.local:80`. Inbound, it belongs to the
//! pod's own Service and the port traffic came to, never to the request's
//! Host header. See [`locate`].

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use outrigger_api::stream::{DestinationSnapshot, Subscription};

use super::config::DestinationConfig;
use super::stack::{DestinationStack, StackInputs};
use crate::route_memo::Resolved;
use outrigger_control::{Applied, ControlPlane};
use outrigger_proxy_core::addr::{Destination, HostPort};
use outrigger_proxy_core::direction::Direction;
use outrigger_proxy_core::metrics::Metrics;
use outrigger_proxy_policy::{ActivePolicy, DestinationMatcher, PolicyStore, ServiceRef};
use outrigger_transport::connect::Connector;

/// More destinations than this are served, but not cached (a client naming
/// endless hosts must not grow memory without bound).
const MAX_CACHED: usize = 10_000;

/// What the engine needs of the running proxy to build a destination's stack:
/// the policy sources (file and control plane), how to connect, the pod's
/// inbound identity, and where metrics go.
pub struct Engine {
    pub metrics: Arc<Metrics>,
    pub policy: Arc<PolicyStore>,
    pub matcher: DestinationMatcher,
    pub connector: Connector,
    /// Idle timeout of upstream connections where no policy sets one.
    pub pool_idle_timeout: Duration,
    /// The Service this pod serves (`--service-name`), which names its
    /// inbound policy; without it, the control plane finds it by pod.
    pub service_name: Option<String>,
    /// This pod's name: with a control plane, what inbound policy is asked by.
    pub pod_name: Option<String>,
    /// The control-plane client, when one is configured.
    pub control: Option<Arc<ControlPlane>>,
    pub stacks: StackCache,
}

impl Engine {
    /// The stack serving a request to `resolved` now.
    pub async fn stack(&self, direction: Direction, resolved: &Resolved) -> Arc<DestinationStack> {
        self.stacks.get(self, direction, resolved).await
    }

    /// The outbound stack of a Gateway API route's backend, named
    /// `name.ns.svc.<domain>:port` as an explicit request naming the Service
    /// would be. Its resolution (subscription, last stack) is kept like a
    /// client connection's, so steered requests look nothing up twice.
    pub async fn backend_stack(&self, target: HostPort) -> Arc<DestinationStack> {
        let resolved = self.stacks.backend(target);
        self.stack(Direction::Outbound, &resolved).await
    }
}

/// Stacks by state identity (see [`locate`]), then by direction (inbound,
/// outbound). A client connection remembers the stack its last authority
/// used (`Resolved`), so most requests look nothing up here.
#[derive(Default)]
pub struct StackCache {
    stacks: RwLock<HashMap<Arc<str>, [Option<Cached>; 2]>>,
    /// Gateway API backends as destinations; names come from policies, and
    /// past `MAX_CACHED` a backend is resolved afresh for each request.
    backends: RwLock<HashMap<HostPort, Arc<Resolved>>>,
}

struct Cached {
    stack: Arc<DestinationStack>,
    built: Built,
}

/// What a stack was built from: the policy file generation, the control
/// plane's snapshot, and the single target of a destination without an
/// endpoint list. A request that would build differently rebuilds the stack,
/// carrying its state over (`DestinationStack::build`).
struct Built {
    policy_version: u64,
    applied: Option<Arc<Applied>>,
    via: Option<HostPort>,
}

impl Built {
    fn snapshot(&self) -> Option<&DestinationSnapshot> {
        self.applied.as_ref()?.snapshot.destination.as_ref()
    }

    /// Whether a stack built from `self` serves a request that would build
    /// from `other`. Snapshots compare by content: the subscriptions of two
    /// spellings of one Service (its name, its ClusterIP) carry the same
    /// destination under different versions.
    fn serves(&self, other: &Built) -> bool {
        let same_snapshot = match (&self.applied, &other.applied) {
            (Some(a), Some(b)) if Arc::ptr_eq(a, b) => true,
            _ => self.snapshot() == other.snapshot(),
        };
        self.policy_version == other.policy_version && self.via == other.via && same_snapshot
    }
}

fn slot(direction: Direction) -> usize {
    match direction {
        Direction::Inbound => 0,
        Direction::Outbound => 1,
    }
}

impl StackCache {
    /// A backend's destination, remembered (see [`Engine::backend_stack`]).
    fn backend(&self, target: HostPort) -> Arc<Resolved> {
        if let Some(resolved) = self.backends.read().expect("not poisoned").get(&target) {
            return resolved.clone();
        }
        let resolved = Arc::new(Resolved::new(Destination {
            connect: target.clone(),
            name: target.clone(),
        }));
        let mut backends = self.backends.write().expect("not poisoned");
        if backends.len() < MAX_CACHED {
            return backends.entry(target).or_insert(resolved).clone();
        }
        resolved
    }

    pub async fn get(
        &self,
        engine: &Engine,
        direction: Direction,
        resolved: &Resolved,
    ) -> Arc<DestinationStack> {
        let destination = &resolved.destination;
        let active = engine.policy.current();
        // Without a control plane there is nothing to ask (and no name to build).
        let subscription = engine.control.as_ref().and_then(|control| {
            let subscription = resolved
                .subscription
                .get_or_init(|| subscription_for(engine, direction, destination));
            Some((control, subscription.as_ref()?))
        });
        let applied = match subscription {
            Some((control, subscription)) => match control.peek(subscription) {
                Some(applied) => Some(applied),
                // First use: subscribe, and wait briefly for the first snapshot.
                None => control.current(subscription).await,
            },
            None => None,
        };
        let source = (
            active.version,
            applied.as_ref().map_or(0, |a| a.snapshot.version),
        );
        let mut memo = resolved.stack.lock().expect("not poisoned");
        if let Some((memo_source, stack)) = memo.as_ref() {
            if *memo_source == source {
                return stack.clone();
            }
        }
        let snapshot = applied
            .as_ref()
            .and_then(|a| a.snapshot.destination.as_ref());
        let location = locate(
            engine,
            direction,
            destination,
            &active,
            snapshot,
            subscription.map(|(_, s)| s),
        );
        let built = Built {
            policy_version: active.version,
            applied,
            via: location.via.clone(),
        };
        let stack = self.shared(engine, direction, location, built, &active, source);
        *memo = Some((source, stack.clone()));
        stack
    }

    /// The stack every request to `location` shares, built or rebuilt when
    /// missing or built from something else.
    fn shared(
        &self,
        engine: &Engine,
        direction: Direction,
        location: Location,
        built: Built,
        active: &ActivePolicy,
        source: (u64, u64),
    ) -> Arc<DestinationStack> {
        let slot = slot(direction);
        let identity = location.identity.as_str();
        let previous = {
            let stacks = self.stacks.read().expect("not poisoned");
            match stacks.get(identity).and_then(|d| d[slot].as_ref()) {
                Some(cached) if cached.built.serves(&built) => return cached.stack.clone(),
                other => other.map(|c| c.stack.clone()),
            }
        };
        let stack = Arc::new(build(
            engine,
            direction,
            &location,
            built.snapshot(),
            active,
            source,
            previous.as_deref(),
        ));
        let mut stacks = self.stacks.write().expect("not poisoned");
        // Two first requests may build at once: the first to insert wins, so
        // every request shares one stack (one breaker, one limit, one budget).
        if let Some(existing) = stacks.get(identity).and_then(|d| d[slot].as_ref()) {
            if existing.built.serves(&built) {
                return existing.stack.clone();
            }
        }
        if stacks.len() < MAX_CACHED || stacks.contains_key(identity) {
            stacks.entry(Arc::from(identity)).or_default()[slot] = Some(Cached {
                stack: stack.clone(),
                built,
            });
        }
        stack
    }

    /// How many state identities hold stacks.
    pub fn len(&self) -> usize {
        self.stacks.read().expect("not poisoned").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Where a request's state lives, and what its stack is built from.
#[derive(Debug, Clone, PartialEq)]
pub struct Location {
    /// The key of the state, and the `destination` label of its metrics:
    /// the Service port as `name.namespace.svc.<domain>:port` when the policy
    /// source knows the Service, else the address connected to.
    pub identity: String,
    /// The Service whose policy-file policy applies, and the port it is
    /// matched on.
    pub service: Option<ServiceRef>,
    pub port: u16,
    /// The one target, for a destination without an endpoint list (`None`:
    /// the snapshot's endpoints, or those the policy file lists for
    /// `service`).
    pub via: Option<HostPort>,
}

/// Finds the state identity of a request to `destination`.
///
/// Outbound, a Service port is one identity whatever reached it:
/// - the control plane's snapshot names the Service (for any spelling of its
///   name, and for its ClusterIP);
/// - else the policy file knows the name `DestinationMatcher::service_of`
///   resolves (a policy targets that Service port, or EndpointSlices list its
///   endpoints). Without listed endpoints an explicit request connects to the
///   canonical name (so every spelling reaches the same target), a
///   transparent one to its original destination (the ClusterIP);
/// - else the address connected to: an external host is its own identity
///   (bounded: at most `MAX_CACHED` cached stacks and the metrics' label cap).
///
/// Inbound, the identity is the pod's own Service (`--service-name`, or the
/// one the control plane found for this pod) and the port traffic came to;
/// without one, the app's address. The Host header plays no part: it is the
/// client's to choose, and a client must not get a fresh rate-limit bucket,
/// another policy or another metric series by changing it.
pub fn locate(
    engine: &Engine,
    direction: Direction,
    destination: &Destination,
    active: &ActivePolicy,
    snapshot: Option<&DestinationSnapshot>,
    subscription: Option<&Subscription>,
) -> Location {
    let matcher = &engine.matcher;
    let host =
        |namespace: &str, name: &str| format!("{name}.{namespace}.svc.{}", matcher.cluster_domain);
    let canonical = |namespace: &str, name: &str, port: u16| {
        HostPort {
            host: host(namespace, name),
            port,
        }
        .to_string()
    };
    // `namespace/name` of the Service a snapshot describes.
    let snapshot_service = snapshot.and_then(|s| Some((s, s.service.split_once('/')?)));
    match direction {
        Direction::Inbound => {
            let port = destination.connect.port;
            let service = engine.service_name.as_ref().map(|n| matcher.own_service(n));
            let identity = match (snapshot_service, &service) {
                // Asked by pod and port, the operator answers with the Service
                // port that sends traffic to this one.
                (Some((s, (namespace, name))), _) => {
                    let port = match subscription {
                        Some(Subscription::Pod(_)) => s.port,
                        _ => port,
                    };
                    canonical(namespace, name, port)
                }
                (None, Some(own)) => canonical(&own.namespace, &own.name, port),
                (None, None) => destination.connect.to_string(),
            };
            Location {
                identity,
                service,
                port,
                via: Some(destination.connect.clone()),
            }
        }
        Direction::Outbound => {
            let port = destination.name.port;
            if let Some((s, (namespace, name))) = snapshot_service {
                return Location {
                    identity: canonical(namespace, name, s.port),
                    service: None,
                    port,
                    via: None,
                };
            }
            let unknown = || Location {
                identity: destination.connect.to_string(),
                service: None,
                port,
                via: Some(destination.connect.clone()),
            };
            let Some(service) = matcher.service_of(&destination.name.host) else {
                return unknown();
            };
            let listed = active.endpoints.lists(&service.namespace, &service.name);
            let has_policy = active.policy_for(&service, port).is_some();
            if !listed && !has_policy {
                return unknown();
            }
            let fqdn = HostPort {
                host: host(&service.namespace, &service.name),
                port,
            };
            let identity = fqdn.to_string();
            // Explicit mode connects where the request names; transparent
            // mode where the client connected (the endpoints are not used).
            let explicit = destination.connect == destination.name;
            let via = match (explicit, listed) {
                (true, true) => None,
                (true, false) => Some(fqdn),
                (false, _) => Some(destination.connect.clone()),
            };
            Location {
                identity,
                service: Some(service),
                port,
                via,
            }
        }
    }
}

/// What to ask the control plane about a destination: the Service it names
/// (fully qualified, so the operator needs no namespace context), the
/// original destination IP (a ClusterIP) in transparent mode, or, inbound,
/// the pod's own Service: named with --service-name, else found by the
/// operator from this pod and the port traffic came to. External names have
/// no subscription.
fn subscription_for(
    engine: &Engine,
    direction: Direction,
    destination: &Destination,
) -> Option<Subscription> {
    let matcher = &engine.matcher;
    match direction {
        Direction::Inbound => match (&engine.service_name, &engine.pod_name) {
            (Some(name), _) => Some(Subscription::Inbound(format!(
                "{}/{name}",
                matcher.namespace
            ))),
            (None, Some(pod)) => Some(Subscription::pod(
                &matcher.namespace,
                pod,
                destination.connect.port,
            )),
            (None, None) => None,
        },
        Direction::Outbound => {
            if let Some(service) = matcher.service_of(&destination.name.host) {
                return Some(Subscription::Destination(format!(
                    "{}.{}.svc.{}:{}",
                    service.name, service.namespace, matcher.cluster_domain, destination.name.port
                )));
            }
            destination
                .connect
                .host
                .parse::<std::net::IpAddr>()
                .ok()
                .map(|_| Subscription::Destination(destination.connect.to_string()))
        }
    }
}

/// A stack for a location: policy and endpoints from the control plane's
/// snapshot when there is one, else from the policy file (and DNS).
fn build(
    engine: &Engine,
    direction: Direction,
    location: &Location,
    snapshot: Option<&DestinationSnapshot>,
    active: &ActivePolicy,
    source: (u64, u64),
    previous: Option<&DestinationStack>,
) -> DestinationStack {
    let (config, listed) = match snapshot {
        Some(snapshot) => {
            let config = DestinationConfig::from_snapshot(
                snapshot,
                engine.connector.connect_timeout,
                engine.pool_idle_timeout,
            );
            let endpoints = snapshot
                .endpoints
                .iter()
                .filter_map(|e| e.parse::<std::net::SocketAddr>().ok())
                .map(HostPort::from)
                .collect();
            (config, endpoints)
        }
        None => {
            // Inbound traffic arrives at the pod's port: its Service port,
            // when the file holds the Service, is the one the policy is
            // chosen by (as the operator does).
            let policy_port = match (direction, &location.service) {
                (Direction::Inbound, Some(s)) => active
                    .endpoints
                    .service_port_of(&s.namespace, &s.name, location.port)
                    .unwrap_or(location.port),
                _ => location.port,
            };
            let config = DestinationConfig::from_policy_file(
                active,
                location.service.as_ref(),
                policy_port,
                engine.connector.connect_timeout,
                engine.pool_idle_timeout,
            );
            // Explicit requests to a Service the file lists endpoints for.
            let listed = match (&location.via, &location.service) {
                (None, Some(s)) => active
                    .endpoints
                    .lookup(&s.namespace, &s.name, location.port),
                _ => None,
            };
            let listed = listed.unwrap_or_default();
            (config, listed.into_iter().map(HostPort::from).collect())
        }
    };
    // An endpoint list (the snapshot's, the file's), else the one target.
    let targets = match &location.via {
        Some(via) => vec![via.clone()],
        None => listed,
    };
    DestinationStack::build(
        StackInputs {
            source,
            direction: direction.as_str(),
            label: engine.metrics.destination_label(&location.identity),
            config: config.for_side(direction),
            targets,
            connector: &engine.connector,
            metrics: engine.metrics.clone(),
        },
        previous,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use outrigger_control::ControlConfig;
    use outrigger_proxy_policy::{activate, load_policy_file, ActivePolicy};

    const WEB: &str = r#"
apiVersion: outrigger.dev/v1alpha1
kind: ResiliencePolicy
metadata: {name: web, namespace: shop}
spec:
  targetRef: {kind: Service, name: web}
  circuitBreaker: {minimumRequests: 3}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-1, namespace: shop, labels: {kubernetes.io/service-name: web}}
ports: [{port: 8080}]
endpoints: [{addresses: ["10.0.0.1"]}, {addresses: ["10.0.0.2"]}]
---
apiVersion: outrigger.dev/v1alpha1
kind: ResiliencePolicy
metadata: {name: api, namespace: shop}
spec:
  targetRef: {kind: Service, name: api}
  circuitBreaker: {minimumRequests: 3}
"#;

    fn temp_dir(name: &str) -> std::path::PathBuf {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "outrigger-engine-{name}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn engine(
        yaml: &str,
        service_name: Option<&str>,
        control: Option<Arc<ControlPlane>>,
        max_labels: usize,
    ) -> Engine {
        let metrics = Metrics::new(max_labels);
        let policy = PolicyStore::new(ActivePolicy::defaults());
        if !yaml.is_empty() {
            let dir = temp_dir("policy");
            let path = dir.join("policy.yaml");
            std::fs::write(&path, yaml).unwrap();
            activate(&policy, &metrics, &path, load_policy_file(&path).unwrap());
            std::fs::remove_dir_all(&dir).unwrap();
        }
        Engine {
            metrics,
            policy,
            matcher: DestinationMatcher {
                namespace: "shop".into(),
                cluster_domain: "cluster.local".into(),
            },
            connector: Connector {
                connect_timeout: Duration::from_secs(1),
                mark: None,
            },
            pool_idle_timeout: Duration::from_secs(60),
            service_name: service_name.map(Into::into),
            pod_name: None,
            control,
            stacks: StackCache::default(),
        }
    }

    fn host_port(s: &str) -> HostPort {
        let (host, port) = s.rsplit_once(':').unwrap();
        HostPort {
            host: host.into(),
            port: port.parse().unwrap(),
        }
    }

    /// The stack for a request connecting to `connect` and naming `name`,
    /// on a fresh client connection.
    async fn stack(
        engine: &Engine,
        direction: Direction,
        connect: &str,
        name: &str,
    ) -> Arc<DestinationStack> {
        let resolved = Resolved::new(Destination {
            connect: host_port(connect),
            name: host_port(name),
        });
        engine.stack(direction, &resolved).await
    }

    /// Explicit mode: the request names where it goes.
    async fn named(engine: &Engine, name: &str) -> Arc<DestinationStack> {
        stack(engine, Direction::Outbound, name, name).await
    }

    /// A Gateway API backend reaches the stack a request naming its Service
    /// does, through one remembered destination.
    #[tokio::test]
    async fn a_backend_shares_its_services_stack() {
        let engine = engine(WEB, None, None, 100);
        let target = HostPort {
            host: "web.shop.svc.cluster.local".into(),
            port: 80,
        };
        let backend = engine.backend_stack(target.clone()).await;
        assert!(Arc::ptr_eq(&backend, &named(&engine, "web:80").await));
        assert!(Arc::ptr_eq(
            &engine.stacks.backend(target.clone()),
            &engine.stacks.backend(target)
        ));
    }

    #[tokio::test]
    async fn every_spelling_of_a_service_shares_one_stack() {
        let engine = engine(WEB, None, None, 100);
        let first = named(&engine, "web:80").await;
        assert_eq!(&*first.label, "web.shop.svc.cluster.local:80");
        assert!(first.breaker.is_some());
        assert_eq!(first.endpoints.targets.len(), 2);
        for spelling in [
            "web.shop:80",
            "web.shop.svc:80",
            "web.shop.svc.cluster.local:80",
            "web.shop.svc.cluster.local.:80",
        ] {
            let other = named(&engine, spelling).await;
            assert!(Arc::ptr_eq(&first, &other), "{spelling}");
        }
        // Another port, namespace or Service is another state.
        for other in ["web:8080", "web.other:80", "api:80"] {
            let other_stack = named(&engine, other).await;
            assert!(!Arc::ptr_eq(&first, &other_stack), "{other}");
        }
        assert_eq!(engine.stacks.len(), 4);
    }

    #[tokio::test]
    async fn without_endpoints_every_spelling_reaches_the_canonical_name() {
        let engine = engine(WEB, None, None, 100);
        let first = named(&engine, "api:80").await;
        for spelling in ["api.shop:80", "api.shop.svc.cluster.local:80"] {
            assert!(Arc::ptr_eq(&first, &named(&engine, spelling).await));
        }
        assert_eq!(
            first.endpoints.targets,
            vec![host_port("api.shop.svc.cluster.local:80")]
        );
    }

    #[tokio::test]
    async fn transparent_requests_share_the_service_state_and_keep_their_target() {
        let engine = engine(WEB, None, None, 100);
        let outbound = Direction::Outbound;
        let first = stack(&engine, outbound, "10.96.0.9:80", "api:80").await;
        let again = stack(&engine, outbound, "10.96.0.9:80", "api.shop.svc:80").await;
        assert!(Arc::ptr_eq(&first, &again));
        assert_eq!(first.endpoints.targets, vec![host_port("10.96.0.9:80")]);
        // A Host naming the Service on a connection to another address is
        // sent where it was going, under the Service's one breaker.
        let elsewhere = stack(&engine, outbound, "10.96.0.10:80", "api:80").await;
        assert_eq!(
            elsewhere.endpoints.targets,
            vec![host_port("10.96.0.10:80")]
        );
        assert_eq!(&*elsewhere.label, &*first.label);
        let state = |s: &DestinationStack| s.breaker.as_ref().unwrap().state.clone();
        assert!(Arc::ptr_eq(&state(&first), &state(&elsewhere)));
    }

    #[tokio::test]
    async fn unknown_hosts_are_their_own_state_under_a_bounded_label() {
        let engine = engine(WEB, None, None, 3);
        let mut labels = std::collections::HashSet::new();
        for i in 0..20 {
            let host = format!("h{i}.example.org:80");
            let stack = named(&engine, &host).await;
            assert!(stack.breaker.is_none());
            assert_eq!(stack.endpoints.targets, vec![host_port(&host)]);
            labels.insert(stack.label.to_string());
        }
        assert_eq!(engine.stacks.len(), 20);
        assert_eq!(labels.len(), 4, "{labels:?}");
        assert!(labels.contains("other"));
        // A Service name without policy or endpoints in the file is not known
        // to be one: its own state, no policy.
        let plain = named(&engine, "nothing.here:80").await;
        assert_eq!(&*plain.label, "other");
        assert!(plain.config.policy.is_none());
    }

    const INBOUND: &str = r#"
apiVersion: outrigger.dev/v1alpha1
kind: ResiliencePolicy
metadata: {name: web, namespace: shop}
spec:
  targetRef: {kind: Service, name: web}
  rateLimit: {requestsPerSecond: 1}
---
apiVersion: outrigger.dev/v1alpha1
kind: ResiliencePolicy
metadata: {name: web-9999, namespace: shop}
spec:
  targetRef: {kind: Service, name: web, port: 9999}
"#;

    #[tokio::test]
    async fn inbound_state_belongs_to_the_service_and_port_not_the_host_header() {
        let engine = engine(INBOUND, Some("web"), None, 100);
        let inbound = Direction::Inbound;
        let first = stack(&engine, inbound, "127.0.0.1:8080", "web:80").await;
        assert_eq!(&*first.label, "web.shop.svc.cluster.local:8080");
        assert!(first.rate_limit.is_some());
        // Any Host, even one naming the port of a policy without a rate limit.
        for host in ["web.shop:80", "evil-1:80", "x.example.org:443", "web:9999"] {
            let other = stack(&engine, inbound, "127.0.0.1:8080", host).await;
            assert!(Arc::ptr_eq(&first, &other), "{host}");
        }
        // Traffic to another port of the pod is another state.
        let other_port = stack(&engine, inbound, "127.0.0.1:9999", "web:80").await;
        assert!(!Arc::ptr_eq(&first, &other_port));
        assert!(other_port.rate_limit.is_none(), "the port-9999 policy");
        // Without a Service of its own, the app's address.
        let anonymous = self::engine(INBOUND, None, None, 100);
        let app = stack(&anonymous, inbound, "127.0.0.1:8080", "evil:80").await;
        assert_eq!(&*app.label, "127.0.0.1:8080");
    }

    /// A control plane that is never reachable, started with persisted
    /// snapshots: `(subscription JSON, snapshot JSON)`.
    fn control(
        metrics: &Metrics,
        persisted: &[(&str, String)],
    ) -> (Arc<ControlPlane>, std::path::PathBuf) {
        let dir = temp_dir("state");
        for (i, (subscription, snapshot)) in persisted.iter().enumerate() {
            std::fs::write(
                dir.join(format!("snapshot-{i}.json")),
                format!(r#"{{"subscription": {subscription}, "snapshot": {snapshot}}}"#),
            )
            .unwrap();
        }
        let control = ControlPlane::start(
            ControlConfig {
                base: "http://127.0.0.1:1".parse().unwrap(),
                proxy_id: "test".into(),
                state_dir: Some(dir.clone()),
                initial_wait: Duration::from_millis(10),
                tls: None,
                token_file: None,
            },
            metrics,
            tokio_util::sync::CancellationToken::new(),
        );
        (control, dir)
    }

    fn web_snapshot(version: u64, endpoints: &str) -> String {
        format!(
            r#"{{"version": {version}, "destination": {{"service": "shop/web", "port": 80,
                "endpoints": [{endpoints}],
                "policy": {{"name": "shop/web", "generation": 1, "spec":
                    {{"targetRef": {{"kind": "Service", "name": "web"}},
                      "circuitBreaker": {{"minimumRequests": 3}}}}}}}}}}"#
        )
    }

    #[tokio::test]
    async fn a_cluster_ip_and_the_name_share_the_state_the_snapshot_names() {
        let metrics = Metrics::new(100);
        let endpoints = r#""10.0.0.1:8080", "10.0.0.2:8080""#;
        let (control, dir) = control(
            &metrics,
            &[
                (
                    r#"{"kind": "destination", "name": "web.shop.svc.cluster.local:80"}"#,
                    web_snapshot(3, endpoints),
                ),
                (
                    r#"{"kind": "destination", "name": "10.96.0.7:80"}"#,
                    web_snapshot(5, endpoints),
                ),
            ],
        );
        let engine = engine("", None, Some(control), 100);
        let outbound = Direction::Outbound;
        let by_name = named(&engine, "web:80").await;
        assert_eq!(&*by_name.label, "web.shop.svc.cluster.local:80");
        assert!(by_name.breaker.is_some());
        assert_eq!(by_name.endpoints.targets.len(), 2);
        // The ClusterIP, connected to transparently without a Host naming
        // the Service: the same stack, though its snapshot has another
        // version; and alternating does not rebuild it.
        for _ in 0..3 {
            let by_ip = stack(&engine, outbound, "10.96.0.7:80", "10.96.0.7:80").await;
            assert!(Arc::ptr_eq(&by_name, &by_ip));
            assert!(Arc::ptr_eq(&by_name, &named(&engine, "web.shop:80").await));
        }
        assert_eq!(engine.stacks.len(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
