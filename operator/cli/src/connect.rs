//! Reaching the cluster as kubectl does: `--kubeconfig`, else `KUBECONFIG`
//! (a list of files), else `~/.kube/config`, else the pod's service
//! account; `--context`; `-n` else the context's namespace.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use kube::config::{KubeConfigOptions, Kubeconfig};

/// Options every command takes.
#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// Path to the kubeconfig file (default: $KUBECONFIG, ~/.kube/config).
    #[arg(long, global = true)]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use.
    #[arg(long, global = true)]
    pub context: Option<String>,
    /// Namespace of the Service to explain (default: the context's).
    #[arg(short = 'n', long, global = true)]
    pub namespace: Option<String>,
    /// Namespace Outrigger is installed in (the chart's release namespace).
    #[arg(long, global = true, default_value = "outrigger-system")]
    pub operator_namespace: String,
    /// Ask the operator's admin endpoint at this URL (repeat for each
    /// replica; e.g. after `kubectl port-forward`) instead of through the
    /// API server's pod proxy.
    #[arg(long = "admin-url", global = true)]
    pub admin_urls: Vec<String>,
    /// Give up on each request after this many seconds.
    #[arg(long, global = true, default_value_t = 10)]
    pub request_timeout: u64,
}

/// A client and the namespace commands default to.
#[derive(Clone)]
pub struct Kube {
    pub client: kube::Client,
    pub namespace: String,
    /// The API server's URL, for messages.
    pub server: String,
    pub timeout: Duration,
}

pub async fn connect(args: &GlobalArgs) -> anyhow::Result<Kube> {
    let options = KubeConfigOptions {
        context: args.context.clone(),
        ..KubeConfigOptions::default()
    };
    let mut config = match &args.kubeconfig {
        Some(path) => {
            let file = Kubeconfig::read_from(path)
                .map_err(|e| anyhow::anyhow!("--kubeconfig {}: {e}", path.display()))?;
            kube::Config::from_custom_kubeconfig(file, &options)
                .await
                .map_err(|e| anyhow::anyhow!("--kubeconfig {}: {e}", path.display()))?
        }
        // A context names a kubeconfig entry: no in-cluster fallback then.
        None if args.context.is_some() => kube::Config::from_kubeconfig(&options)
            .await
            .map_err(|e| anyhow::anyhow!("kubeconfig: {e}"))?,
        None => kube::Config::infer()
            .await
            .map_err(|e| anyhow::anyhow!("no kubeconfig and not in a cluster: {e}"))?,
    };
    let timeout = Duration::from_secs(args.request_timeout.max(1));
    config.connect_timeout = Some(timeout);
    config.read_timeout = Some(timeout);
    // kube's default layer retries 429/503/504 up to 15 times with backoff
    // growing to minutes: a command asking a proxy that cannot be reached
    // through the pod proxy (a 503) took five minutes to say so. A command
    // reports what it finds, within --request-timeout per request.
    config.default_retry = false;
    let namespace = args
        .namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    let server = config.cluster_url.to_string();
    let client = kube::Client::try_from(config)
        .map_err(|e| anyhow::anyhow!("cannot make a Kubernetes client: {e}"))?;
    Ok(Kube {
        client,
        namespace,
        server,
        timeout,
    })
}
