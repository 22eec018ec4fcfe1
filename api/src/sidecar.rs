//! The sidecar contract: what the injection webhook writes into a pod and
//! what the proxy, its `init` command and the operator read back. The three
//! are built separately and meet only in a running pod, so every name and
//! number they share lives here, once.

/// The proxy's listeners in a pod.
pub const INBOUND_PORT: u16 = 4143;
pub const OUTBOUND_PORT: u16 = 4140;
pub const ADMIN_PORT: u16 = 4191;

/// The proxy's user: `init` exempts its connections from the redirect (no
/// loops), and the webhook runs the proxy container as it.
pub const PROXY_UID: u32 = 2102;

/// Container names the webhook adds (and recognises, so it never adds twice).
pub const PROXY_CONTAINER: &str = "outrigger-proxy";
pub const INIT_CONTAINER: &str = "outrigger-init";

/// The audience of the projected service-account token a proxy presents to
/// the control plane, which reviews it for that audience only.
pub const TOKEN_AUDIENCE: &str = "outrigger";
/// Where the webhook mounts that token, and the proxy's state directory.
pub const TOKEN_DIR: &str = "/var/run/secrets/outrigger";
pub const TOKEN_FILE: &str = "/var/run/secrets/outrigger/token";
pub const STATE_DIR: &str = "/var/run/outrigger/state";

/// Environment variables of the proxy (each also a `--flag`).
pub mod env {
    pub const INBOUND_ADDR: &str = "OUTRIGGER_INBOUND_ADDR";
    pub const OUTBOUND_ADDR: &str = "OUTRIGGER_OUTBOUND_ADDR";
    pub const ADMIN_ADDR: &str = "OUTRIGGER_ADMIN_ADDR";
    pub const OUTBOUND_MODE: &str = "OUTRIGGER_OUTBOUND_MODE";
    pub const NAMESPACE: &str = "OUTRIGGER_NAMESPACE";
    pub const SERVICE_NAME: &str = "OUTRIGGER_SERVICE_NAME";
    /// The pod's name, from the downward API: the proxy's id towards the
    /// control plane and the key of its inbound policy.
    pub const POD_NAME: &str = "POD_NAME";
    pub const POD_IP: &str = "POD_IP";
    pub const LOG: &str = "OUTRIGGER_LOG";
    pub const LOG_FORMAT: &str = "OUTRIGGER_LOG_FORMAT";
    pub const STATE_DIR: &str = "OUTRIGGER_STATE_DIR";
    pub const CONTROL_PLANE: &str = "OUTRIGGER_CONTROL_PLANE";
    pub const CONTROL_CA_PEM: &str = "OUTRIGGER_CONTROL_CA_PEM";
    pub const CONTROL_TOKEN_FILE: &str = "OUTRIGGER_CONTROL_TOKEN_FILE";
    pub const OPAQUE_PORTS: &str = "OUTRIGGER_OPAQUE_PORTS";
    pub const TRACE_OTLP_ENDPOINT: &str = "OUTRIGGER_TRACE_OTLP_ENDPOINT";
    pub const TRACE_SAMPLING: &str = "OUTRIGGER_TRACE_SAMPLING";
}

/// Annotations users put on pods (and the marker the webhook leaves).
pub mod annotations {
    /// `disabled`: never inject this pod.
    pub const INJECT: &str = "outrigger.dev/inject";
    /// Set by the webhook on an injected pod.
    pub const INJECTED: &str = "outrigger.dev/injected";
    pub const SKIP_INBOUND_PORTS: &str = "outrigger.dev/skip-inbound-ports";
    pub const SKIP_OUTBOUND_PORTS: &str = "outrigger.dev/skip-outbound-ports";
    pub const SKIP_OUTBOUND_CIDRS: &str = "outrigger.dev/skip-outbound-cidrs";
    pub const OPAQUE_PORTS: &str = "outrigger.dev/opaque-ports";
    pub const PROXY_LOG_LEVEL: &str = "outrigger.dev/proxy-log-level";
    pub const PROXY_CPU_REQUEST: &str = "outrigger.dev/proxy-cpu-request";
    pub const PROXY_MEMORY_REQUEST: &str = "outrigger.dev/proxy-memory-request";
    pub const PROXY_MEMORY_LIMIT: &str = "outrigger.dev/proxy-memory-limit";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_file_is_inside_the_token_dir() {
        assert_eq!(
            std::path::Path::new(TOKEN_FILE).parent(),
            Some(std::path::Path::new(TOKEN_DIR))
        );
    }
}
