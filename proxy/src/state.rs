//! State shared by every connection of a running proxy.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio_util::task::TaskTracker;

use crate::cli::{OutboundMode, RunArgs};
use crate::engine::cache::StackCache;
use outrigger_control::ControlPlane;
use outrigger_proxy_core::metrics::Metrics;
use outrigger_proxy_policy::{DestinationMatcher, PolicyStore};
use outrigger_transport::connect::Connector;

pub struct ProxyState {
    pub metrics: Arc<Metrics>,
    pub policy: Arc<PolicyStore>,
    pub matcher: DestinationMatcher,
    pub connector: Connector,
    /// Idle timeout of upstream connections where no policy sets one.
    pub pool_idle_timeout: std::time::Duration,
    pub app_addr: Option<SocketAddr>,
    pub outbound_mode: OutboundMode,
    pub service_name: Option<String>,
    /// This pod's name: with a control plane, what inbound policy is asked by.
    pub pod_name: Option<String>,
    pub opaque_ports: Vec<u16>,
    pub access_log: bool,
    /// The proxy's own listeners: a request addressed to one of them would loop.
    pub own_addrs: Vec<SocketAddr>,
    /// Tunnels (upgrades, CONNECT, opaque TCP) outlive their request; the drain
    /// waits for them through this tracker.
    pub tunnels: TaskTracker,
    /// Per-destination resilience stacks.
    pub stacks: StackCache,
    /// The control-plane client, when one is configured.
    pub control: Option<Arc<ControlPlane>>,
}

impl ProxyState {
    pub fn new(
        args: &RunArgs,
        metrics: Arc<Metrics>,
        policy: Arc<PolicyStore>,
        own_addrs: Vec<SocketAddr>,
        tunnels: TaskTracker,
        control: Option<Arc<ControlPlane>>,
    ) -> Arc<Self> {
        let connector = Connector {
            connect_timeout: args.connect_timeout,
            mark: args.outbound_mark,
        };
        Arc::new(ProxyState {
            pool_idle_timeout: args.pool_idle_timeout,
            connector,
            metrics,
            policy,
            matcher: DestinationMatcher {
                namespace: args.namespace.clone(),
                cluster_domain: args.cluster_domain.clone(),
            },
            app_addr: args.app_addr,
            outbound_mode: args.outbound_mode,
            service_name: args.service_name.clone(),
            pod_name: args.pod_name.clone(),
            opaque_ports: args.opaque_ports.clone(),
            access_log: args.access_log,
            own_addrs,
            tunnels,
            stacks: StackCache::default(),
            control,
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
