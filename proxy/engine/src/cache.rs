//! Destination stacks by destination, rebuilt when the policy generation
//! changes. A request takes one `Arc` to the stack current when it arrived and
//! keeps it to the end, so a policy swap never changes a request mid-flight.

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
use outrigger_proxy_policy::{DestinationMatcher, PolicyStore};
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
}

/// Stacks by destination, then by direction (inbound, outbound): looked up
/// with the request's own destination, so a lookup builds no key.
#[derive(Default)]
pub struct StackCache {
    stacks: RwLock<HashMap<Destination, [Option<Arc<DestinationStack>>; 2]>>,
}

fn slot(direction: Direction) -> usize {
    match direction {
        Direction::Inbound => 0,
        Direction::Outbound => 1,
    }
}

impl StackCache {
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
        if let Some(stack) = memo.as_ref().filter(|s| s.source == source) {
            return stack.clone();
        }
        let stack = self.shared(engine, direction, destination, applied.as_deref(), source);
        *memo = Some(stack.clone());
        stack
    }

    /// The stack every connection to `destination` shares, built or rebuilt
    /// when missing or older than `source`.
    fn shared(
        &self,
        engine: &Engine,
        direction: Direction,
        destination: &Destination,
        applied: Option<&Applied>,
        source: (u64, u64),
    ) -> Arc<DestinationStack> {
        let slot = slot(direction);
        let previous = {
            let stacks = self.stacks.read().expect("not poisoned");
            match stacks.get(destination).and_then(|d| d[slot].as_ref()) {
                Some(stack) if stack.source == source => return stack.clone(),
                other => other.cloned(),
            }
        };
        let snapshot = applied.and_then(|a| a.snapshot.destination.as_ref());
        let stack = Arc::new(build(
            engine,
            direction,
            destination,
            snapshot,
            source,
            previous.as_deref(),
        ));
        let mut stacks = self.stacks.write().expect("not poisoned");
        // Two first requests may build at once: the first to insert wins, so
        // every request shares one stack (one breaker, one limit, one budget).
        if let Some(existing) = stacks.get(destination).and_then(|d| d[slot].as_ref()) {
            if existing.source == source {
                return existing.clone();
            }
        }
        if stacks.len() < MAX_CACHED || stacks.contains_key(destination) {
            stacks.entry(destination.clone()).or_default()[slot] = Some(stack.clone());
        }
        stack
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

/// A stack for a destination: policy and endpoints from the control plane's
/// snapshot when there is one, else from the policy file (and DNS).
fn build(
    engine: &Engine,
    direction: Direction,
    destination: &Destination,
    snapshot: Option<&DestinationSnapshot>,
    source: (u64, u64),
    previous: Option<&DestinationStack>,
) -> DestinationStack {
    let (config, targets) = match snapshot {
        Some(snapshot) => from_snapshot(engine, direction, destination, snapshot),
        None => from_policy_file(engine, direction, destination),
    };
    let config = config.for_side(direction);
    DestinationStack::build(
        StackInputs {
            source,
            direction: direction.as_str(),
            label: engine
                .metrics
                .destination_label(&destination.name.to_string()),
            config,
            targets,
            connector: &engine.connector,
            metrics: engine.metrics.clone(),
        },
        previous,
    )
}

fn from_policy_file(
    engine: &Engine,
    direction: Direction,
    destination: &Destination,
) -> (DestinationConfig, Vec<HostPort>) {
    let active = engine.policy.current();
    let matcher = &engine.matcher;
    let service = match (direction, &engine.service_name) {
        (Direction::Inbound, Some(name)) => Some(matcher.own_service(name)),
        (Direction::Inbound, None) => None,
        (Direction::Outbound, _) => matcher.service_of(&destination.name.host),
    };
    let port = destination.name.port;
    // Inbound traffic arrives at the pod's port: its Service port, when the
    // file holds the Service, is the one the policy is chosen by.
    let policy_port = match (direction, &service) {
        (Direction::Inbound, Some(s)) => active
            .endpoints
            .service_port_of(&s.namespace, &s.name, destination.connect.port)
            .unwrap_or(port),
        _ => port,
    };
    let config = DestinationConfig::from_policy_file(
        &active,
        service.as_ref(),
        policy_port,
        engine.connector.connect_timeout,
        engine.pool_idle_timeout,
    );
    // Outbound to a Service the policy source lists endpoints for: balance over
    // them. Otherwise one target: the app, the original destination, or DNS.
    let targets: Vec<HostPort> = match (direction, &service) {
        (Direction::Outbound, Some(s)) if destination.connect == destination.name => active
            .endpoints
            .lookup(&s.namespace, &s.name, port)
            .map(|addrs| addrs.into_iter().map(HostPort::from).collect())
            .unwrap_or_else(|| vec![destination.connect.clone()]),
        _ => vec![destination.connect.clone()],
    };
    (config, targets)
}

/// The control plane's snapshot: its policy, and (outbound) its ready endpoints.
fn from_snapshot(
    engine: &Engine,
    direction: Direction,
    destination: &Destination,
    snapshot: &DestinationSnapshot,
) -> (DestinationConfig, Vec<HostPort>) {
    let config = DestinationConfig::from_snapshot(
        snapshot,
        engine.connector.connect_timeout,
        engine.pool_idle_timeout,
    );
    let targets = match direction {
        Direction::Inbound => vec![destination.connect.clone()],
        Direction::Outbound => snapshot
            .endpoints
            .iter()
            .filter_map(|e| e.parse::<std::net::SocketAddr>().ok())
            .map(HostPort::from)
            .collect(),
    };
    (config, targets)
}
