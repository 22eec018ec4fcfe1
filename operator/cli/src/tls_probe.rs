//! A TLS handshake with a server endpoint, trusting only a given CA bundle
//! and checking the name clients use: whether the server really serves a
//! certificate those clients accept (a Secret can be right while the pods
//! still serve an older one).

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;

/// Why a probe did not verify.
#[derive(Debug)]
pub enum ProbeError {
    /// No TCP connection (not reachable from where the CLI runs).
    Unreachable(String),
    /// Connected, but the handshake failed: the certificate was refused.
    Handshake(String),
}

pub async fn probe(
    address: &str,
    server_name: &str,
    ca_pem: &[u8],
    timeout: Duration,
) -> Result<(), ProbeError> {
    let verifier =
        crate::certs::verifier(ca_pem).map_err(|e| ProbeError::Handshake(e.to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ProbeError::Handshake(e.to_string()))?
        .with_webpki_verifier(verifier)
        .with_no_client_auth();
    let name = ServerName::try_from(server_name.to_string())
        .map_err(|e| ProbeError::Handshake(format!("{server_name:?}: {e}")))?;
    let tcp = tokio::time::timeout(timeout, tokio::net::TcpStream::connect(address))
        .await
        .map_err(|_| ProbeError::Unreachable(format!("no connection within {timeout:?}")))?
        .map_err(|e| ProbeError::Unreachable(e.to_string()))?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    tokio::time::timeout(timeout, connector.connect(name, tcp))
        .await
        .map_err(|_| ProbeError::Handshake(format!("no handshake within {timeout:?}")))?
        .map(|_| ())
        .map_err(|e| ProbeError::Handshake(e.to_string()))
}
