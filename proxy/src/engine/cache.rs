//! Destination stacks by destination, rebuilt when the policy generation
//! changes. A request takes one `Arc` to the stack current when it arrived and
//! keeps it to the end, so a policy swap never changes a request mid-flight.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use super::config::DestinationConfig;
use super::stack::{DestinationStack, StackInputs};
use crate::destination::{Destination, HostPort};
use crate::direction::Direction;
use crate::state::ProxyState;

/// More destinations than this are served, but not cached (a client naming
/// endless hosts must not grow memory without bound).
const MAX_CACHED: usize = 10_000;

#[derive(Default)]
pub struct StackCache {
    stacks: RwLock<HashMap<(Direction, String, String), Arc<DestinationStack>>>,
}

impl StackCache {
    pub fn get(
        &self,
        state: &ProxyState,
        direction: Direction,
        destination: &Destination,
    ) -> Arc<DestinationStack> {
        let active = state.policy.current();
        let key = (
            direction,
            destination.name.to_string(),
            destination.connect.to_string(),
        );
        let previous = {
            let stacks = self.stacks.read().expect("not poisoned");
            match stacks.get(&key) {
                Some(stack) if stack.generation == active.version => return stack.clone(),
                other => other.cloned(),
            }
        };
        let stack = Arc::new(build(state, direction, destination, previous.as_deref()));
        let mut stacks = self.stacks.write().expect("not poisoned");
        if stacks.len() < MAX_CACHED || stacks.contains_key(&key) {
            stacks.insert(key, stack.clone());
        }
        stack
    }
}

fn build(
    state: &ProxyState,
    direction: Direction,
    destination: &Destination,
    previous: Option<&DestinationStack>,
) -> DestinationStack {
    let active = state.policy.current();
    let matcher = &state.matcher;
    let service = match (direction, &state.service_name) {
        (Direction::Inbound, Some(name)) => Some(matcher.own_service(name)),
        (Direction::Inbound, None) => None,
        (Direction::Outbound, _) => matcher.service_of(&destination.name.host),
    };
    let port = destination.name.port;
    let policy = service
        .as_ref()
        .and_then(|s| matcher.find(&active.policies, s, port));
    let config = match policy {
        Some(p) => DestinationConfig::compile(
            format!(
                "{}/{}",
                p.metadata.namespace.as_deref().unwrap_or("default"),
                p.metadata.name
            ),
            &p.spec,
            state.connector.connect_timeout,
        ),
        None => DestinationConfig::without_policy(state.connector.connect_timeout),
    };
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
    DestinationStack::build(
        StackInputs {
            generation: active.version,
            direction: direction.as_str(),
            label: state
                .metrics
                .destination_label(&destination.name.to_string()),
            config,
            targets,
            connector: &state.connector,
            metrics: state.metrics.clone(),
        },
        previous,
    )
}
