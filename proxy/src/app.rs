//! Starting a proxy: load policy, bind listeners, run until told to drain.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admin::{self, AdminState, Readiness};
use crate::cli::RunArgs;
use crate::listener::{accept_loop, ListenerConfig};
use crate::state::{Drain, ProxyState};
use outrigger_api::stream::Subscription;
use outrigger_control::{ControlConfig, ControlPlane};
use outrigger_http::server::ServerLimits;
use outrigger_proxy_core::direction::Direction;
use outrigger_proxy_core::metrics::Metrics;
use outrigger_proxy_policy::{
    activate, load_policy_file, watch_policy_file, ActivePolicy, PolicyStore,
};
use outrigger_trace::{Tracing, TracingConfig};

/// How long, once the drain timeout has run out, the proxy waits for the 503
/// `shutdown` answers to requests still waiting to be written out.
const ANSWER_AFTER_DRAIN: std::time::Duration = std::time::Duration::from_millis(500);

/// A proxy that is serving. Dropping it does not stop it: call `shutdown`.
pub struct RunningProxy {
    pub inbound_addr: SocketAddr,
    pub outbound_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub metrics: Arc<Metrics>,
    pub policy: Arc<PolicyStore>,
    /// Cancelling it starts the drain (as SIGTERM or `POST /shutdown` do).
    pub shutdown: CancellationToken,
    finished: JoinHandle<()>,
}

impl RunningProxy {
    /// Resolves once the proxy has drained and stopped.
    pub async fn wait(self) {
        let _ = self.finished.await;
    }
}

pub async fn start(args: RunArgs) -> anyhow::Result<RunningProxy> {
    let metrics = Metrics::new(args.max_destination_labels);
    let policy = PolicyStore::new(ActivePolicy::defaults());
    if let Some(path) = &args.policy {
        // At start an invalid file is fatal: there is no last good policy to keep.
        let loaded = load_policy_file(path)?;
        activate(&policy, &metrics, path, loaded);
    }

    let inbound = bind(args.inbound_addr, "inbound").await?;
    let outbound = bind(args.outbound_addr, "outbound").await?;
    let admin_listener = bind(args.admin_addr, "admin").await?;
    let inbound_addr = inbound.local_addr()?;
    let outbound_addr = outbound.local_addr()?;
    let admin_addr = admin_listener.local_addr()?;

    let shutdown = CancellationToken::new();
    let connections = TaskTracker::new();
    let tunnels = TaskTracker::new();
    let stop_background = CancellationToken::new();
    let drain_expired = CancellationToken::new();
    let control = match args.control_plane.clone() {
        None => None,
        Some(base) => {
            let tls = match (base.scheme_str(), &args.control_ca, &args.control_ca_pem) {
                (Some("https"), Some(ca), _) => Some(outrigger_control::pinned_tls(ca)?),
                (Some("https"), None, Some(pem)) => {
                    Some(outrigger_control::pinned_tls_pem(pem.as_bytes())?)
                }
                (Some("https"), None, None) => anyhow::bail!(
                    "--control-plane {base} uses TLS: pass --control-ca with the CA the proxy should trust"
                ),
                (Some("http"), _, _) => None,
                _ => anyhow::bail!("--control-plane must be an http:// or https:// URL, got {base}"),
            };
            let proxy_id = args.proxy_id.clone().unwrap_or_else(default_proxy_id);
            tracing::info!(control_plane = %base, proxy_id, "using the control plane");
            Some(ControlPlane::start(
                ControlConfig {
                    base,
                    proxy_id,
                    state_dir: args.state_dir.clone(),
                    initial_wait: args.control_initial_wait,
                    tls,
                    token_file: args.control_token_file.clone(),
                },
                &metrics,
                stop_background.clone(),
            ))
        }
    };
    let tracing = match &args.trace_otlp_endpoint {
        None => None,
        Some(endpoint) => {
            let mut resource = vec![("outrigger.namespace".to_string(), args.namespace.clone())];
            if let Some(pod) = &args.pod_name {
                resource.push(("k8s.pod.name".to_string(), pod.clone()));
            }
            let config = TracingConfig {
                otlp_endpoint: endpoint.clone(),
                sampling: args.trace_sampling,
                service_name: args
                    .service_name
                    .clone()
                    .unwrap_or_else(|| "outrigger-proxy".to_string()),
                resource,
            };
            tracing::info!(endpoint, sampling = args.trace_sampling, "tracing requests");
            Some(Tracing::start(&config).map_err(anyhow::Error::msg)?)
        }
    };
    let state = ProxyState::new(
        &args,
        metrics.clone(),
        policy.clone(),
        vec![inbound_addr, outbound_addr, admin_addr],
        Drain {
            tunnels: tunnels.clone(),
            expired: drain_expired.clone(),
        },
        control.clone(),
        tracing.clone(),
    );
    // The pod's own inbound policy is wanted at once, not on first request.
    if let (Some(control), Some(service)) = (&control, &args.service_name) {
        let subscription = Subscription::Inbound(format!("{}/{service}", args.namespace));
        let control = control.clone();
        tokio::spawn(async move { control.current(&subscription).await });
    }
    let server = ServerLimits {
        header_read_timeout: args.header_read_timeout,
        max_header_bytes: args.max_header_bytes,
        max_concurrent_streams: args.max_concurrent_streams,
    };
    for (listener, direction) in [
        (inbound, Direction::Inbound),
        (outbound, Direction::Outbound),
    ] {
        let config = Arc::new(ListenerConfig {
            direction,
            max_connections: args.max_connections,
            detect_timeout: args.detect_timeout,
            server: server.clone(),
        });
        tokio::spawn(accept_loop(
            listener,
            config,
            state.clone(),
            shutdown.clone(),
            connections.clone(),
        ));
    }

    if let Some(path) = args.policy.clone() {
        tokio::spawn(watch_policy_file(
            path,
            args.policy_poll_interval,
            policy.clone(),
            metrics.clone(),
            stop_background.clone(),
        ));
    }
    let readiness = Arc::new(Readiness::default());
    let admin_state = Arc::new(AdminState {
        metrics: metrics.clone(),
        policy: policy.clone(),
        readiness: readiness.clone(),
        shutdown: shutdown.clone(),
        control,
        listeners: serde_json::json!({
            "inbound": inbound_addr.to_string(),
            "outbound": outbound_addr.to_string(),
            "admin": admin_addr.to_string(),
            "outboundMode": format!("{:?}", args.outbound_mode).to_lowercase(),
            "appAddr": args.app_addr.map(|a| a.to_string()),
        }),
    });
    tokio::spawn(admin::serve(
        admin_listener,
        admin_state,
        stop_background.clone(),
    ));
    tokio::spawn(crate::malloc_tuning::release_after_bursts(
        stop_background.clone(),
    ));
    if let Some(path) = &args.address_file {
        write_address_file(path, inbound_addr, outbound_addr, admin_addr)?;
    }
    readiness.set(true);
    tracing::info!(%inbound_addr, %outbound_addr, %admin_addr, "proxy ready");

    let drain_timeout = args.drain_timeout;
    let drain = shutdown.clone();
    let finished = tokio::spawn(async move {
        drain.cancelled().await;
        readiness.set(false);
        tracing::info!(timeout = ?drain_timeout, "draining");
        connections.close();
        tunnels.close();
        let drained = tokio::time::timeout(drain_timeout, async {
            connections.wait().await;
            tunnels.wait().await;
        })
        .await;
        match drained {
            Ok(()) => tracing::info!("drained; exiting"),
            Err(_) => {
                tracing::warn!(
                    open = connections.len() + tunnels.len(),
                    "drain timeout reached; closing remaining connections"
                );
                // Requests still waiting for a response get 503 `shutdown`
                // rather than a bare close; a moment to write those out.
                drain_expired.cancel();
                let _ = tokio::time::timeout(ANSWER_AFTER_DRAIN, connections.wait()).await;
            }
        }
        stop_background.cancel();
        // The spans of the last requests, exported before the exit.
        if let Some(tracing) = tracing {
            let _ = tokio::task::spawn_blocking(move || tracing.shutdown()).await;
        }
    });

    Ok(RunningProxy {
        inbound_addr,
        outbound_addr,
        admin_addr,
        metrics,
        policy,
        shutdown,
        finished,
    })
}

/// Written to a temporary name and renamed, so a reader never sees half a file.
fn write_address_file(
    path: &std::path::Path,
    inbound: SocketAddr,
    outbound: SocketAddr,
    admin: SocketAddr,
) -> anyhow::Result<()> {
    let body = serde_json::json!({
        "inbound": inbound.to_string(),
        "outbound": outbound.to_string(),
        "admin": admin.to_string(),
    });
    let temp = path.with_extension("tmp");
    std::fs::write(&temp, body.to_string())
        .and_then(|()| std::fs::rename(&temp, path))
        .with_context(|| format!("cannot write the address file {}", path.display()))
}

/// The pod name is the natural id; outside Kubernetes, host and process.
fn default_proxy_id() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "proxy".into());
    format!("{host}-{}", std::process::id())
}

async fn bind(addr: SocketAddr, name: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot bind the {name} listener on {addr}"))
}

/// Runs until SIGTERM, SIGINT or `POST /shutdown`, then drains.
pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let proxy = start(args).await?;
    let shutdown = proxy.shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        shutdown.cancel();
    });
    proxy.wait().await;
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler installs");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler installs");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
}
