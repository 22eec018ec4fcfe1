//! Opaque TCP: bytes copied both ways, half-close passed on, bytes counted.

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::connect::Connector;
use crate::counted_io::CountedIo;
use outrigger_proxy_core::addr::HostPort;
use outrigger_proxy_core::direction::Direction;
use outrigger_proxy_core::metrics::{Metrics, TunnelBytes};

/// Connects to `target`, replays `prefix` (bytes read during detection) and
/// splices until both sides have closed.
pub async fn forward<IO>(
    metrics: &Metrics,
    connector: &Connector,
    direction: Direction,
    client: IO,
    prefix: Bytes,
    target: HostPort,
) where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let label = metrics.destination_label(&target.to_string());
    let mut upstream = match connector.connect_authority(&target.host, target.port).await {
        Ok(stream) => stream,
        Err(err) => {
            tracing::info!(destination = %target, error = %err, "opaque connection: upstream unreachable");
            metrics
                .proxy_errors
                .with_label_values(&[direction.as_str(), "connect-failure"])
                .inc();
            return;
        }
    };
    if !prefix.is_empty() {
        if let Err(err) = upstream.write_all(&prefix).await {
            tracing::debug!(destination = %target, error = %err, "opaque connection: replay failed");
            return;
        }
    }
    let bytes = metrics.tunnel_bytes(direction.as_str(), &label);
    bytes.sent.inc_by(prefix.len() as u64);
    splice_counted(bytes, &label, client, upstream).await;
}

/// Copies both ways until both sides have closed, counting the bytes as they
/// pass (`bytes`: the destination's counters; bytes sent before the splice,
/// such as a replayed prefix, are the caller's to count).
/// copy_bidirectional shuts down each write side when its read side ends, so
/// a client's half-close reaches the server and vice versa.
pub async fn splice_counted<C, U>(bytes: TunnelBytes, label: &str, client: C, mut upstream: U)
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let mut client = CountedIo::new(client, bytes);
    if let Err(err) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        tracing::debug!(destination = label, error = %err, "spliced connection ended with an error");
    }
}
