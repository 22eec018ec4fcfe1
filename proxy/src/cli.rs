//! Command-line interface of the `outrigger-proxy` binary.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use outrigger_api::sidecar::{env, ADMIN_PORT, INBOUND_PORT, OUTBOUND_PORT};

#[derive(Debug, Parser)]
#[command(
    name = "outrigger-proxy",
    version,
    about = "Outrigger sidecar proxy",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Install the pod's iptables redirect (run once, with NET_ADMIN, before the app).
    Init(crate::init::InitArgs),
    /// Wait until a proxy's /ready answers 200 (a postStart hook for clusters
    /// without native sidecars).
    WaitReady {
        #[arg(long, default_value = "http://127.0.0.1:4191/ready")]
        url: String,
        #[arg(long, value_parser = parse_duration, default_value = "60s")]
        timeout: Duration,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutboundMode {
    /// Destination from the absolute-form URI or the Host header (like HTTP_PROXY).
    Explicit,
    /// Destination from the connection's original destination (SO_ORIGINAL_DST),
    /// as set up by the iptables redirect.
    Transparent,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Plain,
    Json,
}

/// Flags of a running proxy. Every flag can also be set by an `OUTRIGGER_*` variable.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Inbound listener: traffic to the pod.
    #[arg(long, env = env::INBOUND_ADDR, default_value_t = SocketAddr::from(([0, 0, 0, 0], INBOUND_PORT)))]
    pub inbound_addr: SocketAddr,

    /// Where inbound traffic goes. Without it, to 127.0.0.1 on the connection's
    /// original destination port (transparent capture).
    #[arg(long, env = "OUTRIGGER_APP_ADDR")]
    pub app_addr: Option<SocketAddr>,

    /// Outbound listener: traffic from the application.
    #[arg(
        long,
        env = env::OUTBOUND_ADDR,
        default_value_t = SocketAddr::from(([127, 0, 0, 1], OUTBOUND_PORT))
    )]
    pub outbound_addr: SocketAddr,

    /// How the outbound listener finds a connection's destination.
    #[arg(
        long,
        env = env::OUTBOUND_MODE,
        value_enum,
        default_value = "explicit"
    )]
    pub outbound_mode: OutboundMode,

    /// Admin listener: /metrics, /live, /ready, /config, /shutdown.
    #[arg(long, env = env::ADMIN_ADDR, default_value_t = SocketAddr::from(([0, 0, 0, 0], ADMIN_PORT)))]
    pub admin_addr: SocketAddr,

    /// Policy file (YAML or JSON, the same documents a user would `kubectl apply`).
    /// Reloaded when it changes; an invalid file keeps the last good policy.
    #[arg(long, env = "OUTRIGGER_POLICY")]
    pub policy: Option<PathBuf>,

    /// How often the policy file is checked for changes.
    #[arg(long, env = "OUTRIGGER_POLICY_POLL", value_parser = parse_duration, default_value = "1s")]
    pub policy_poll_interval: Duration,

    /// Service this pod serves: selects the policy applied to inbound traffic.
    /// Unset, with a control plane and --pod-name, the operator finds it: the
    /// Service whose EndpointSlices list this pod on the port traffic came to.
    #[arg(long, env = env::SERVICE_NAME)]
    pub service_name: Option<String>,

    /// This pod's name (set from the downward API in an injected pod).
    #[arg(long, env = env::POD_NAME)]
    pub pod_name: Option<String>,

    /// Namespace of this pod: short destination names resolve in it.
    #[arg(long, env = env::NAMESPACE, default_value = "default")]
    pub namespace: String,

    /// Cluster DNS domain used to match destinations to policies.
    #[arg(
        long,
        env = "OUTRIGGER_CLUSTER_DOMAIN",
        default_value = "cluster.local"
    )]
    pub cluster_domain: String,

    /// Ports forwarded as plain TCP without protocol detection (server-speaks-first
    /// protocols such as MySQL or SMTP must be listed here). Comma separated.
    #[arg(
        long,
        env = env::OPAQUE_PORTS,
        value_delimiter = ',',
        default_value = "25,587,3306,4444,4567,4568,5432,6379,9300,11211"
    )]
    pub opaque_ports: Vec<u16>,

    /// How long to wait for a client's first bytes before treating the connection
    /// as opaque TCP.
    #[arg(long, env = "OUTRIGGER_DETECT_TIMEOUT", value_parser = parse_duration, default_value = "1s")]
    pub detect_timeout: Duration,

    /// Connect timeout to upstreams no policy covers (a policy sets its own
    /// `timeouts.connect`, 1s by default, the same from a file or the operator).
    #[arg(long, env = "OUTRIGGER_CONNECT_TIMEOUT", value_parser = parse_duration, default_value = "1s")]
    pub connect_timeout: Duration,

    /// Time allowed to receive a request's headers (slowloris protection).
    #[arg(long, env = "OUTRIGGER_HEADER_READ_TIMEOUT", value_parser = parse_duration, default_value = "10s")]
    pub header_read_timeout: Duration,

    /// Largest request head (request line and headers) accepted; larger gets 431.
    #[arg(long, env = "OUTRIGGER_MAX_HEADER_BYTES", default_value_t = 32 * 1024)]
    pub max_header_bytes: usize,

    /// Most connections open at once per listener; more are closed on accept.
    #[arg(long, env = "OUTRIGGER_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,

    /// Most concurrent HTTP/2 streams a client may open on one connection.
    #[arg(long, env = "OUTRIGGER_MAX_CONCURRENT_STREAMS", default_value_t = 256)]
    pub max_concurrent_streams: u32,

    /// Idle upstream connections are closed after this long, for destinations
    /// no policy covers (a policy sets its own `timeouts.idle`).
    #[arg(long, env = "OUTRIGGER_POOL_IDLE_TIMEOUT", value_parser = parse_duration, default_value = "90s")]
    pub pool_idle_timeout: Duration,

    /// On SIGTERM/SIGINT or /shutdown, how long in-flight work may take to
    /// finish; requests still waiting for a response then get 503 `shutdown`.
    #[arg(long, env = "OUTRIGGER_DRAIN_TIMEOUT", value_parser = parse_duration, default_value = "10s")]
    pub drain_timeout: Duration,

    /// Most distinct destinations named in metric labels; the rest share "other".
    #[arg(long, env = "OUTRIGGER_MAX_DESTINATION_LABELS", default_value_t = 100)]
    pub max_destination_labels: usize,

    /// Socket mark (SO_MARK) set on upstream connections, so an iptables rule can
    /// exempt the proxy's own traffic from capture. Needs CAP_NET_ADMIN.
    #[arg(long, env = "OUTRIGGER_OUTBOUND_MARK", value_parser = parse_mark)]
    pub outbound_mark: Option<u32>,

    /// Write one JSON access-log line per request.
    #[arg(long, env = "OUTRIGGER_ACCESS_LOG")]
    pub access_log: bool,

    /// Trace requests and export the spans over OTLP/gRPC to this endpoint
    /// (e.g. http://otel-collector.observability:4317). Unset: no tracing
    /// (trace headers pass through untouched).
    #[arg(long, env = env::TRACE_OTLP_ENDPOINT)]
    pub trace_otlp_endpoint: Option<String>,

    /// Share of the traces the proxy starts (requests without a trace
    /// context) that are sampled, 0 to 1. Requests with a context keep
    /// their caller's decision.
    #[arg(long, env = env::TRACE_SAMPLING, default_value_t = 0.01, value_parser = parse_ratio)]
    pub trace_sampling: f64,

    /// Log format.
    #[arg(
        long,
        env = env::LOG_FORMAT,
        value_enum,
        default_value = "plain"
    )]
    pub log_format: LogFormat,

    /// Log filter (tracing env-filter syntax), e.g. `info` or `outrigger_proxy=debug`.
    #[arg(long, env = env::LOG, default_value = "info")]
    pub log_level: String,

    /// Control plane (the operator's policy server), e.g. `http://outrigger:8090`.
    /// Without it the proxy runs on its policy file and DNS.
    #[arg(long, env = env::CONTROL_PLANE)]
    pub control_plane: Option<http::Uri>,

    /// CA certificate(s) (PEM) the control plane's TLS certificate must chain
    /// to; required for an https control plane (the proxy pins it).
    #[arg(long, env = "OUTRIGGER_CONTROL_CA")]
    pub control_ca: Option<PathBuf>,

    /// The same CA as PEM text (how the injector hands it to proxies).
    #[arg(
        long,
        env = env::CONTROL_CA_PEM,
        hide_env_values = true,
        conflicts_with = "control_ca"
    )]
    pub control_ca_pem: Option<String>,

    /// Bearer token for the control plane, re-read on every connection (the
    /// projected service-account token rotates).
    #[arg(long, env = env::CONTROL_TOKEN_FILE)]
    pub control_token_file: Option<PathBuf>,

    /// This proxy's name towards the control plane (the pod name).
    #[arg(long, env = env::POD_NAME)]
    pub proxy_id: Option<String>,

    /// Directory for the last good snapshots from the control plane, so a
    /// restart during a control-plane outage starts with them.
    #[arg(long, env = env::STATE_DIR)]
    pub state_dir: Option<PathBuf>,

    /// How long a request waits for its destination's first snapshot.
    #[arg(long, env = "OUTRIGGER_CONTROL_INITIAL_WAIT", value_parser = parse_duration, default_value = "1s")]
    pub control_initial_wait: Duration,

    /// After binding, write the listeners' actual addresses to this file as
    /// JSON (`{"inbound": .., "outbound": .., "admin": ..}`): with port 0,
    /// the way a supervisor or test learns which ports were chosen.
    #[arg(long, env = "OUTRIGGER_ADDRESS_FILE")]
    pub address_file: Option<PathBuf>,

    /// Tokio worker threads; a sidecar needs few. With 1, the proxy runs on a
    /// single thread (tokio's current-thread scheduler).
    #[arg(long, env = "OUTRIGGER_WORKERS", default_value_t = 2)]
    pub workers: usize,
}

/// Durations on the command line use the same form as in policies (`250ms`, `1m30s`).
pub fn parse_duration(value: &str) -> Result<Duration, String> {
    outrigger_api::duration::Duration::parse(value)
        .map(|d| d.as_std())
        .map_err(|e| e.to_string())
}

/// Socket marks are usually written in hex (`0x4f52`), as iptables prints them.
fn parse_mark(value: &str) -> Result<u32, String> {
    let parsed = match value
        .strip_prefix("0x")
        .or_else(|| value.strip_prefix("0X"))
    {
        Some(hex) => u32::from_str_radix(hex, 16),
        None => value.parse(),
    };
    parsed.map_err(|e| format!("{value:?} is not a mark (decimal or 0x hex): {e}"))
}

fn parse_ratio(value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(ratio) if (0.0..=1.0).contains(&ratio) => Ok(ratio),
        _ => Err(format!("{value:?} is not a ratio between 0 and 1")),
    }
}
