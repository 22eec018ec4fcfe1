//! Opaque TCP: bytes copied both ways, half-close passed on, bytes counted.

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::connect::Connector;
use crate::counted_io::CountedIo;
use outrigger_proxy_core::addr::HostPort;
use outrigger_proxy_core::direction::Direction;
use outrigger_proxy_core::metrics::Metrics;

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
    let replayed = prefix.len() as u64;
    splice_counted(metrics, direction, &label, client, upstream, replayed).await;
}

/// Copies both ways until both sides have closed, then counts the bytes
/// (`already_sent`: bytes sent upstream before the splice, e.g. a replay).
/// copy_bidirectional shuts down each write side when its read side ends, so
/// a client's half-close reaches the server and vice versa; the counting
/// wrapper keeps the totals of a connection that ends in a reset.
pub async fn splice_counted<C, U>(
    metrics: &Metrics,
    direction: Direction,
    label: &str,
    client: C,
    mut upstream: U,
    already_sent: u64,
) where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let mut client = CountedIo::new(client);
    if let Err(err) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        tracing::debug!(destination = label, error = %err, "spliced connection ended with an error");
    }
    let (sent, received) = client.counts();
    let direction = direction.as_str();
    metrics
        .tcp_bytes
        .with_label_values(&[direction, label, "sent"])
        .inc_by(sent + already_sent);
    metrics
        .tcp_bytes
        .with_label_values(&[direction, label, "received"])
        .inc_by(received);
}
