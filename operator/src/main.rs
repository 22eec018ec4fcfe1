//! `outrigger-operator`: the control plane's command line. `run` watches
//! ResiliencePolicies, Services and EndpointSlices (or, with `--manifests DIR`,
//! files) and keeps a compiled view per destination Service; the lease holder
//! writes status. The parts live in the library (lib.rs).
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use outrigger_api::manifest::{parse_documents, Document};
use outrigger_api::validate::validate_manifest;
use outrigger_operator::{
    admin, cluster, crd, index, leader, local, metrics, policy_server, proxy_reports, reference,
    tls, webhook,
};

#[derive(Debug, Parser)]
#[command(
    name = "outrigger-operator",
    version,
    about = "Outrigger control plane"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check ResiliencePolicy files (YAML or JSON, multi-document) and report
    /// every invalid field with its path. Exit status 1 when any is invalid.
    Validate {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Print the ResiliencePolicy CustomResourceDefinition (YAML).
    Crds,
    /// Print the policy reference (Markdown) generated from the CRD schema.
    PolicyReference,
    /// Run the controllers.
    Run(Box<RunArgs>),
    /// Generate a CA and a policy-server certificate (ca.crt, tls.crt,
    /// tls.key) for development and tests.
    GenCerts {
        /// Directory to write into.
        dir: PathBuf,
        /// DNS names and IP addresses the certificate is valid for.
        #[arg(long = "name", default_values_t = ["localhost".to_string(), "127.0.0.1".to_string()])]
        names: Vec<String>,
    },
}

#[derive(Debug, Args)]
struct RunArgs {
    /// Local mode: read ResiliencePolicy, Service and EndpointSlice YAML from
    /// this directory (and follow changes) instead of the API server.
    #[arg(long, env = "OUTRIGGER_MANIFESTS")]
    manifests: Option<PathBuf>,
    /// How often local mode checks the directory.
    #[arg(long, default_value = "500ms", value_parser = parse_duration)]
    manifests_poll: Duration,
    /// Policy server: proxies watch their destinations here.
    #[arg(long, env = "OUTRIGGER_POLICY_ADDR", default_value = "0.0.0.0:8090")]
    policy_addr: SocketAddr,
    /// Policy-server certificate chain (PEM). With --tls-key, streams are TLS.
    #[arg(long, env = "OUTRIGGER_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// Policy-server private key (PEM).
    #[arg(long, env = "OUTRIGGER_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// How proxies authenticate: `token-review` (their projected service-account
    /// token, verified by the API server), `shared-token` (local mode), or
    /// `none` (local mode only). Default: token-review in a cluster, none in
    /// local mode.
    #[arg(long, value_enum)]
    auth: Option<AuthMode>,
    /// File holding the shared token (with --auth shared-token).
    #[arg(long, required_if_eq("auth", "shared-token"))]
    shared_token_file: Option<PathBuf>,
    /// Local mode with --auth token-review: the kubeconfig of the API server
    /// that reviews tokens (nothing else is read from it). The scale
    /// benchmark points it at a stand-in that counts reviews.
    #[arg(long, requires = "manifests")]
    token_review_kubeconfig: Option<PathBuf>,
    /// Serve the policy stream in plaintext outside local mode (tests only).
    #[arg(long)]
    insecure_plaintext: bool,
    /// Sidecar injection webhook (HTTPS); enabled with --webhook-tls-cert/key.
    #[arg(long, env = "OUTRIGGER_WEBHOOK_ADDR", default_value = "0.0.0.0:8443")]
    webhook_addr: SocketAddr,
    #[arg(long, env = "OUTRIGGER_WEBHOOK_TLS_CERT", requires = "webhook_tls_key")]
    webhook_tls_cert: Option<PathBuf>,
    #[arg(long, env = "OUTRIGGER_WEBHOOK_TLS_KEY", requires = "webhook_tls_cert")]
    webhook_tls_key: Option<PathBuf>,
    /// Image of the injected proxy (and its init step).
    #[arg(
        long,
        env = "OUTRIGGER_PROXY_IMAGE",
        default_value = "outrigger/proxy:0.1.0"
    )]
    proxy_image: String,
    /// Policy-server URL handed to injected proxies.
    #[arg(long, env = "OUTRIGGER_CONTROL_PLANE_URL")]
    control_plane_url: Option<String>,
    /// CA (PEM) injected proxies pin for the policy server.
    #[arg(long, env = "OUTRIGGER_CONTROL_CA_FILE")]
    control_ca_file: Option<PathBuf>,
    /// Inject the proxy as a native sidecar (Kubernetes 1.29+); false: as the
    /// first container with a postStart hook that waits for it.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    native_sidecar: bool,
    /// Injected proxies' default resources and log level (pod annotations
    /// override them per pod).
    #[arg(long, env = "OUTRIGGER_PROXY_CPU_REQUEST", default_value = "10m")]
    proxy_cpu_request: String,
    #[arg(long, env = "OUTRIGGER_PROXY_MEMORY_REQUEST", default_value = "16Mi")]
    proxy_memory_request: String,
    #[arg(long, env = "OUTRIGGER_PROXY_MEMORY_LIMIT", default_value = "64Mi")]
    proxy_memory_limit: String,
    #[arg(long, env = "OUTRIGGER_PROXY_CPU_LIMIT")]
    proxy_cpu_limit: Option<String>,
    #[arg(long, env = "OUTRIGGER_PROXY_LOG_LEVEL", default_value = "info")]
    proxy_log_level: String,
    /// Injected proxies export request spans over OTLP/gRPC here (unset: no
    /// tracing).
    #[arg(long, env = "OUTRIGGER_PROXY_TRACE_OTLP_ENDPOINT")]
    proxy_trace_otlp_endpoint: Option<String>,
    /// Share of the traces injected proxies start that are sampled.
    #[arg(long, env = "OUTRIGGER_PROXY_TRACE_SAMPLING")]
    proxy_trace_sampling: Option<String>,
    /// Namespace the operator runs in: its pods are never injected.
    #[arg(long, env = "POD_NAMESPACE", default_value = "outrigger-system")]
    operator_namespace: String,
    /// Heartbeat interval on idle policy streams.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    heartbeat: Duration,
    /// Cluster DNS domain (for subscriptions by full Service name).
    #[arg(
        long,
        env = "OUTRIGGER_CLUSTER_DOMAIN",
        default_value = "cluster.local"
    )]
    cluster_domain: String,
    /// Admin listener: /metrics, /live, /ready, /view.
    #[arg(long, env = "OUTRIGGER_ADMIN_ADDR", default_value = "0.0.0.0:9090")]
    admin_addr: SocketAddr,
    /// Elect a status writer with a Lease (several replicas); off: always write.
    #[arg(long, env = "OUTRIGGER_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    leader_election: bool,
    #[arg(
        long,
        env = "OUTRIGGER_LEASE_NAMESPACE",
        default_value = "outrigger-system"
    )]
    lease_namespace: String,
    #[arg(
        long,
        env = "OUTRIGGER_LEASE_NAME",
        default_value = "outrigger-operator"
    )]
    lease_name: String,
    /// This replica's name in the Lease (the pod name).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    lease_duration: Duration,
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    lease_renew: Duration,
    /// After binding, write the admin and policy-server addresses to this file
    /// as JSON (how a supervisor or test learns ports chosen with port 0).
    #[arg(long)]
    address_file: Option<PathBuf>,
    /// Log as JSON lines.
    #[arg(long, env = "OUTRIGGER_LOG_JSON")]
    log_json: bool,
    /// Honour Gateway API HTTPRoutes and GRPCRoutes whose parentRefs are
    /// Services (the mesh profile): watch them, compile them into the
    /// Services' policies and write their status. false: ignore them.
    #[arg(long, env = "OUTRIGGER_GATEWAY_API", default_value_t = true, action = clap::ArgAction::Set)]
    gateway_api: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum AuthMode {
    None,
    SharedToken,
    TokenReview,
}

fn parse_duration(value: &str) -> Result<Duration, String> {
    outrigger_api::duration::Duration::parse(value)
        .map(|d| d.as_std())
        .map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Crds => {
            print!("{}", crd::crd_yaml());
            ExitCode::SUCCESS
        }
        Command::GenCerts { dir, names } => match tls::generate(&dir, &names) {
            Ok(()) => {
                println!("wrote {}/{{ca.crt,tls.crt,tls.key}}", dir.display());
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("outrigger-operator: {err:#}");
                ExitCode::from(2)
            }
        },
        Command::PolicyReference => {
            print!("{}", reference::policy_reference());
            ExitCode::SUCCESS
        }
        Command::Run(args) => {
            let args = *args;
            init_logging(args.log_json);
            let runtime = tokio::runtime::Runtime::new().expect("tokio runtime starts");
            match runtime.block_on(run(args)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => {
                    eprintln!("outrigger-operator: {err:#}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Validate { files } => {
            let mut all_valid = true;
            for file in &files {
                let report = validate_file(file);
                all_valid &= report.is_ok();
                match report {
                    Ok(count) => println!("{}: {count} valid ResiliencePolicy", file.display()),
                    Err(errors) => {
                        for error in errors {
                            eprintln!("{}: {error}", file.display());
                        }
                    }
                }
            }
            if all_valid {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// The number of policies in the file, or every error found in it.
fn validate_file(path: &PathBuf) -> Result<usize, Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(|e| vec![format!("cannot read: {e}")])?;
    let documents = parse_documents(&text).map_err(|e| vec![e.to_string()])?;
    let mut errors = Vec::new();
    let mut count = 0;
    for document in documents {
        if let Document::Policy(policy) = document {
            count += 1;
            if let Err(invalid) = validate_manifest(&policy) {
                errors.extend(
                    invalid
                        .0
                        .into_iter()
                        .map(|e| format!("{}: {}: {}", policy.metadata.name, e.path, e.message)),
                );
            }
        }
    }
    if errors.is_empty() {
        Ok(count)
    } else {
        Err(errors)
    }
}

fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("OUTRIGGER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour codes only for a person at a terminal: in files, pipes and
    // `kubectl logs` they are noise (`NO_COLOR` turns them off everywhere).
    use std::io::IsTerminal;
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// How proxies authenticate, checked against the mode (local or cluster).
#[derive(Debug, PartialEq)]
enum Auth {
    None,
    SharedToken(String),
    /// Resolved into an authenticator once the API client and caches exist.
    TokenReview,
}

fn auth(args: &RunArgs) -> anyhow::Result<Auth> {
    let local = args.manifests.is_some();
    let mode = args.auth.unwrap_or(if local {
        AuthMode::None
    } else {
        AuthMode::TokenReview
    });
    Ok(match mode {
        AuthMode::None if !local => anyhow::bail!("--auth none is for local mode only"),
        AuthMode::TokenReview if local && args.token_review_kubeconfig.is_none() => {
            anyhow::bail!(
                "--auth token-review needs the API server; local mode can use shared-token \
                 (or --token-review-kubeconfig)"
            )
        }
        AuthMode::None => Auth::None,
        AuthMode::TokenReview => Auth::TokenReview,
        AuthMode::SharedToken => {
            let path = args.shared_token_file.as_ref().expect("clap requires it");
            let token = std::fs::read_to_string(path).map_err(|e| {
                anyhow::anyhow!("cannot read --shared-token-file {}: {e}", path.display())
            })?;
            anyhow::ensure!(
                !token.trim().is_empty(),
                "--shared-token-file {} is empty",
                path.display()
            );
            Auth::SharedToken(token.trim().to_string())
        }
    })
}

/// The policy server's TLS: required outside local mode unless
/// --insecure-plaintext (tests).
fn policy_tls(args: &RunArgs) -> anyhow::Result<Option<Arc<rustls::ServerConfig>>> {
    Ok(match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(tls::server_config(cert, key)?),
        _ if args.manifests.is_some() || args.insecure_plaintext => None,
        _ => anyhow::bail!(
            "the policy server needs TLS outside local mode: pass --tls-cert and --tls-key \
             (or --insecure-plaintext for tests)"
        ),
    })
}

/// The injection webhook's TLS and what it injects; `None` without
/// --webhook-tls-cert/--webhook-tls-key.
fn webhook_config(
    args: &RunArgs,
) -> anyhow::Result<Option<(Arc<rustls::ServerConfig>, webhook::inject::InjectConfig)>> {
    let (Some(cert), Some(key)) = (&args.webhook_tls_cert, &args.webhook_tls_key) else {
        return Ok(None);
    };
    let control_ca_pem = match &args.control_ca_file {
        Some(path) => Some(std::fs::read_to_string(path).map_err(|e| {
            anyhow::anyhow!("cannot read --control-ca-file {}: {e}", path.display())
        })?),
        None => None,
    };
    let config = webhook::inject::InjectConfig {
        proxy_image: args.proxy_image.clone(),
        control_plane_url: args.control_plane_url.clone(),
        control_ca_pem,
        native_sidecar: args.native_sidecar,
        proxy_uid: outrigger_api::sidecar::PROXY_UID.into(),
        operator_namespace: args.operator_namespace.clone(),
        defaults: webhook::inject::ProxyDefaults {
            cpu_request: args.proxy_cpu_request.clone(),
            memory_request: args.proxy_memory_request.clone(),
            memory_limit: args.proxy_memory_limit.clone(),
            cpu_limit: args.proxy_cpu_limit.clone(),
            log_level: args.proxy_log_level.clone(),
            trace_otlp_endpoint: args.proxy_trace_otlp_endpoint.clone(),
            trace_sampling: args.proxy_trace_sampling.clone(),
        },
    };
    Ok(Some((tls::server_config(cert, key)?, config)))
}

async fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<tokio::net::TcpListener> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot bind the {what} on {addr}: {e}"))?;
    tracing::info!(addr = %listener.local_addr()?, "{what} listening");
    Ok(listener)
}

/// SIGTERM or Ctrl-C cancels `stop`.
fn stop_on_signal(stop: CancellationToken) {
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler installs");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        stop.cancel();
    });
}

/// Bound listeners' addresses as JSON, for supervisors and tests using port 0.
fn write_addresses(path: &std::path::Path, addresses: serde_json::Value) -> anyhow::Result<()> {
    let temp = path.with_extension("tmp");
    std::fs::write(&temp, addresses.to_string())?;
    std::fs::rename(&temp, path)?;
    Ok(())
}

/// Checks the flags, binds the listeners and starts the parts: admin, the
/// webhook, the policy server, then local mode or the cluster controllers.
async fn run(args: RunArgs) -> anyhow::Result<()> {
    // Every flag is checked before anything listens.
    let auth = auth(&args)?;
    let policy_tls = policy_tls(&args)?;
    let webhook = webhook_config(&args)?;

    let metrics = Arc::new(metrics::Metrics::new());
    let index = Arc::new(index::CompiledIndex::default());
    let ready = Arc::new(AtomicBool::new(false));
    let stop = CancellationToken::new();
    stop_on_signal(stop.clone());

    // Created before the admin server, which lists its proxies.
    let hub = policy_server::Hub::new(index.clone(), metrics.clone(), args.cluster_domain.clone());
    let admin_listener = bind(args.admin_addr, "admin listener").await?;
    let admin_addr = admin_listener.local_addr()?;
    let admin_state = admin::AdminState {
        metrics: metrics.clone(),
        index: index.clone(),
        ready: ready.clone(),
        hub: hub.clone(),
        replica: args.identity.clone(),
    };
    tokio::spawn(admin::serve(
        admin_listener,
        Arc::new(admin_state),
        stop.clone(),
    ));

    let mut webhook_addr = None;
    if let Some((tls, config)) = webhook {
        let listener = bind(args.webhook_addr, "injection webhook").await?;
        webhook_addr = Some(listener.local_addr()?);
        tokio::spawn(webhook::serve(
            listener,
            tls,
            Arc::new(config),
            stop.clone(),
        ));
    }

    let client = match args.manifests {
        Some(_) => None,
        None => Some(
            kube::Client::try_default()
                .await
                .map_err(|e| anyhow::anyhow!("cannot reach the Kubernetes API: {e}"))?,
        ),
    };
    let trigger = Arc::new(tokio::sync::Notify::new());
    let stores = client.as_ref().map(|client| {
        // With one replica (no election) there are no other reports to read.
        let reports = args
            .leader_election
            .then_some(args.lease_namespace.as_str());
        cluster::start_reflectors(client, trigger.clone(), reports, args.gateway_api, &stop)
    });
    let authenticator = match (auth, &client, &stores) {
        (Auth::None, ..) => policy_server::auth::Authenticator::None,
        (Auth::SharedToken(token), ..) => policy_server::auth::Authenticator::SharedToken(token),
        (Auth::TokenReview, Some(client), Some(stores)) => {
            policy_server::auth::Authenticator::token_review(
                client.clone(),
                Some(Box::new(cluster::CachedServiceAccounts {
                    services: stores.services.clone(),
                    pods: stores.pods.clone(),
                })),
            )
        }
        (Auth::TokenReview, None, _) => {
            // Local mode: tokens reviewed by the kubeconfig's API server;
            // inbound subscriptions narrowed by namespace only (no Pod cache).
            let path = args
                .token_review_kubeconfig
                .as_ref()
                .expect("checked by auth()");
            let kubeconfig = kube::config::Kubeconfig::read_from(path).map_err(|e| {
                anyhow::anyhow!("--token-review-kubeconfig {}: {e}", path.display())
            })?;
            let config = kube::Config::from_custom_kubeconfig(
                kubeconfig,
                &kube::config::KubeConfigOptions::default(),
            )
            .await
            .map_err(|e| anyhow::anyhow!("--token-review-kubeconfig {}: {e}", path.display()))?;
            let client = kube::Client::try_from(config).map_err(|e| {
                anyhow::anyhow!("--token-review-kubeconfig {}: {e}", path.display())
            })?;
            policy_server::auth::Authenticator::token_review(client, None)
        }
        (Auth::TokenReview, ..) => unreachable!("cluster mode has its caches"),
    };

    tokio::spawn(hub.clone().follow());
    let acked = Arc::new(tokio::sync::Notify::new());
    let policy_listener = bind(args.policy_addr, "policy server").await?;
    let policy_addr = policy_listener.local_addr()?;
    let policy_config = policy_server::ServerConfig {
        heartbeat: args.heartbeat,
        acked: acked.clone(),
        tls: policy_tls,
        auth: Arc::new(authenticator),
    };
    tokio::spawn(policy_server::serve(
        policy_listener,
        hub.clone(),
        metrics.clone(),
        policy_config,
        stop.clone(),
    ));

    if let Some(path) = &args.address_file {
        write_addresses(
            path,
            serde_json::json!({
                "admin": admin_addr.to_string(),
                "policy": policy_addr.to_string(),
                "webhook": webhook_addr.map(|a| a.to_string()),
            }),
        )?;
    }

    if let Some(dir) = args.manifests {
        tracing::info!(dir = %dir.display(), "local mode: reading manifests");
        tokio::spawn(local::report_proxies(hub.clone(), acked, stop.clone()));
        return local::run(dir, args.manifests_poll, index, metrics, ready, stop).await;
    }
    let parts = ClusterParts {
        client: client.expect("cluster mode has a client"),
        stores: stores.expect("cluster mode has stores"),
        index,
        metrics,
        ready,
        trigger,
        hub,
        acked,
    };
    run_cluster(&args, parts, stop).await
}

/// What cluster mode runs on, once the shared parts are up.
struct ClusterParts {
    client: kube::Client,
    stores: cluster::Stores,
    index: Arc<index::CompiledIndex>,
    metrics: Arc<metrics::Metrics>,
    ready: Arc<AtomicBool>,
    trigger: Arc<tokio::sync::Notify>,
    hub: Arc<policy_server::Hub>,
    acked: Arc<tokio::sync::Notify>,
}

/// Cluster mode: proxy reports and leader election (with several replicas),
/// then the controllers until `stop`.
async fn run_cluster(
    args: &RunArgs,
    parts: ClusterParts,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let ClusterParts {
        client,
        stores,
        index,
        metrics,
        ready,
        trigger,
        hub,
        acked,
    } = parts;
    let leadership = Arc::new(leader::Leadership::default());
    let identity = args
        .identity
        .clone()
        .unwrap_or_else(|| format!("outrigger-operator-{}", std::process::id()));
    // Acks change status.proxies (the status pass, not a recompute: they
    // leave the view as it is) and this replica's proxy report (read by the
    // leader).
    let report_acks = Arc::new(tokio::sync::Notify::new());
    let status_acks = Arc::new(tokio::sync::Notify::new());
    {
        let (status_acks, report_acks) = (status_acks.clone(), report_acks.clone());
        tokio::spawn(async move {
            loop {
                acked.notified().await;
                status_acks.notify_one();
                report_acks.notify_one();
            }
        });
    }
    // Tasks that must finish their goodbyes (release the Lease, delete this
    // replica's report) after `stop`, before the process exits: otherwise the
    // other replica waits out the lease instead of taking over at once.
    let mut farewells = Vec::new();
    if args.leader_election {
        // Other replicas' proxies reach status.proxies through these reports.
        farewells.push(tokio::spawn(proxy_reports::publish(
            client.clone(),
            proxy_reports::ReportConfig {
                namespace: args.lease_namespace.clone(),
                identity: identity.clone(),
                renew_every: args.lease_renew,
                lease_duration: args.lease_duration,
            },
            hub.clone(),
            report_acks,
            stop.clone(),
        )));
        let config = leader::LeaseConfig {
            namespace: args.lease_namespace.clone(),
            name: args.lease_name.clone(),
            identity: identity.clone(),
            lease_duration: args.lease_duration,
            renew_every: args.lease_renew,
        };
        let (metrics, trigger) = (metrics.clone(), trigger.clone());
        farewells.push(tokio::spawn(leader::run(
            client.clone(),
            config,
            leadership.clone(),
            move |leader| {
                metrics.leader.set(i64::from(leader));
                // A new leader brings every status up to date at once.
                trigger.notify_one();
            },
            stop.clone(),
        )));
    } else {
        leadership.force(true);
        metrics.leader.set(1);
    }
    let ctx = Arc::new(cluster::Context {
        client,
        index,
        metrics,
        leadership,
        ready,
        trigger,
        acks: status_acks,
        reporter: kube::runtime::events::Reporter {
            controller: "outrigger-operator".into(),
            instance: Some(identity.clone()),
        },
        hub,
        identity,
    });
    let result = cluster::run(ctx, stores, stop).await;
    let goodbyes = futures_util::future::join_all(farewells);
    if tokio::time::timeout(FAREWELL_LIMIT, goodbyes)
        .await
        .is_err()
    {
        tracing::warn!("lease release did not finish in time; the lease will expire instead");
    }
    result
}

/// How long shutdown waits for the Lease release and report deletion.
const FAREWELL_LIMIT: Duration = Duration::from_secs(5);

#[cfg(test)]
mod tests {
    use super::*;

    fn run_args(extra: &[&str]) -> RunArgs {
        let cli = Cli::try_parse_from(["outrigger-operator", "run"].iter().chain(extra)).unwrap();
        match cli.command {
            Command::Run(args) => *args,
            _ => unreachable!(),
        }
    }

    #[test]
    fn auth_follows_the_mode() {
        assert_eq!(auth(&run_args(&[])).unwrap(), Auth::TokenReview);
        assert_eq!(auth(&run_args(&["--manifests=/x"])).unwrap(), Auth::None);
        let err = auth(&run_args(&["--auth=none"])).unwrap_err().to_string();
        assert!(err.contains("local mode only"), "{err}");
        let err = auth(&run_args(&["--manifests=/x", "--auth=token-review"]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("needs the API server"), "{err}");
        assert_eq!(
            auth(&run_args(&[
                "--manifests=/x",
                "--auth=token-review",
                "--token-review-kubeconfig=/k"
            ]))
            .unwrap(),
            Auth::TokenReview
        );
        let err = auth(&run_args(&[
            "--auth=shared-token",
            "--shared-token-file=/nonexistent",
        ]))
        .unwrap_err()
        .to_string();
        assert!(err.contains("cannot read --shared-token-file"), "{err}");
    }

    #[test]
    fn the_policy_server_needs_tls_outside_local_mode() {
        let err = policy_tls(&run_args(&[])).unwrap_err().to_string();
        assert!(err.contains("needs TLS outside local mode"), "{err}");
        assert!(policy_tls(&run_args(&["--insecure-plaintext"]))
            .unwrap()
            .is_none());
        assert!(policy_tls(&run_args(&["--manifests=/x"]))
            .unwrap()
            .is_none());
        assert!(webhook_config(&run_args(&[])).unwrap().is_none());
    }
}
