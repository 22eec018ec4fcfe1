//! State shared by every connection of a running proxy.

use std::net::SocketAddr;
use std::sync::Arc;

use outrigger_trace::Tracing;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cli::{OutboundMode, RunArgs};
use outrigger_control::ControlPlane;
use outrigger_engine::cache::StackCache;
use outrigger_engine::Engine;
use outrigger_proxy_core::metrics::Metrics;
use outrigger_proxy_policy::{DestinationMatcher, PolicyStore};
use outrigger_transport::connect::Connector;

pub struct ProxyState {
    /// Policy, control plane, connections and metrics: what builds and runs
    /// each destination's stack.
    pub engine: Engine,
    pub app_addr: Option<SocketAddr>,
    pub outbound_mode: OutboundMode,
    pub opaque_ports: Vec<u16>,
    pub access_log: bool,
    /// Request tracing, when an OTLP endpoint is set.
    pub tracing: Option<Tracing>,
    /// The proxy's own listeners: a request addressed to one of them would loop.
    pub own_addrs: Vec<SocketAddr>,
    /// Tunnels (upgrades, CONNECT, opaque TCP) outlive their request; the drain
    /// waits for them through this tracker.
    pub tunnels: TaskTracker,
    /// Cancelled when the drain timeout runs out: requests still waiting for
    /// a response are answered with 503 `shutdown` before the proxy exits.
    pub drain_expired: CancellationToken,
}

/// How a running proxy drains: the tunnels it waits for, and the signal
/// that its drain timeout has run out.
pub struct Drain {
    pub tunnels: TaskTracker,
    pub expired: CancellationToken,
}

impl ProxyState {
    pub fn new(
        args: &RunArgs,
        metrics: Arc<Metrics>,
        policy: Arc<PolicyStore>,
        own_addrs: Vec<SocketAddr>,
        drain: Drain,
        control: Option<Arc<ControlPlane>>,
        tracing: Option<Tracing>,
    ) -> Arc<Self> {
        Arc::new(ProxyState {
            engine: Engine {
                metrics,
                policy,
                matcher: DestinationMatcher {
                    namespace: args.namespace.clone(),
                    cluster_domain: args.cluster_domain.clone(),
                },
                connector: Connector {
                    connect_timeout: args.connect_timeout,
                    mark: args.outbound_mark,
                },
                pool_idle_timeout: args.pool_idle_timeout,
                service_name: args.service_name.clone(),
                pod_name: args.pod_name.clone(),
                control,
                stacks: StackCache::default(),
            },
            app_addr: args.app_addr,
            outbound_mode: args.outbound_mode,
            opaque_ports: args.opaque_ports.clone(),
            access_log: args.access_log,
            tracing,
            own_addrs,
            tunnels: drain.tunnels,
            drain_expired: drain.expired,
        })
    }

    /// Whether connecting to `addr` would reach one of our own listeners.
    pub fn is_own_listener(&self, addr: SocketAddr) -> bool {
        self.own_addrs.iter().any(|own| {
            own.port() == addr.port()
                && (own.ip() == addr.ip() || (own.ip().is_unspecified() && addr.ip().is_loopback()))
        })
    }
}
