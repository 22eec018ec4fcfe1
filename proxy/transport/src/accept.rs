//! The one accept loop every listener of the proxy and the operator runs:
//! a bounded number of connections at once (the rest closed on accept, and
//! counted by the caller), a growing pause after accept errors (out of file
//! descriptors must not become a busy loop), and a stop that closes the
//! listener while connections already accepted go on in a tracker the caller
//! can wait on.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// First pause after a failed accept; it doubles up to `MAX_ACCEPT_BACKOFF`
/// while accepts keep failing, and starts over after a success.
const FIRST_ACCEPT_BACKOFF: Duration = Duration::from_millis(5);
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// How a listener accepts.
#[derive(Debug, Clone)]
pub struct AcceptConfig {
    /// Names the listener in logs.
    pub name: &'static str,
    /// Connections served at once; more are closed as they are accepted.
    pub max_connections: usize,
}

/// Accepts on `listener` until `stop` fires, spawning `handle` for each
/// connection on `tasks`. `on_reject` runs for each connection closed
/// because `max_connections` are open. Returning drops the listener, so new
/// connections are refused from then on.
pub async fn accept_loop<H, F>(
    listener: TcpListener,
    config: AcceptConfig,
    stop: CancellationToken,
    tasks: TaskTracker,
    on_reject: impl Fn(),
    mut handle: H,
) where
    H: FnMut(TcpStream, SocketAddr) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(config.max_connections));
    let mut backoff = FIRST_ACCEPT_BACKOFF;
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => {
                backoff = FIRST_ACCEPT_BACKOFF;
                pair
            }
            Err(err) => {
                tracing::warn!(listener = config.name, error = %err, pause = ?backoff, "accept failed");
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(MAX_ACCEPT_BACKOFF);
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            on_reject();
            drop(stream);
            continue;
        };
        let connection = handle(stream, peer);
        tasks.spawn(async move {
            connection.await;
            drop(slot);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::AsyncReadExt;

    async fn listener() -> (TcpListener, SocketAddr) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        (listener, addr)
    }

    #[tokio::test]
    async fn connections_beyond_the_limit_are_closed_and_counted() {
        let (listener, addr) = listener().await;
        let (stop, tasks) = (CancellationToken::new(), TaskTracker::new());
        let rejected = Arc::new(AtomicUsize::new(0));
        let release = CancellationToken::new();
        let counted = rejected.clone();
        let held = release.clone();
        let serving = tokio::spawn(accept_loop(
            listener,
            AcceptConfig {
                name: "test",
                max_connections: 2,
            },
            stop.clone(),
            tasks.clone(),
            move || {
                counted.fetch_add(1, Ordering::SeqCst);
            },
            move |stream, _| {
                let held = held.clone();
                async move {
                    held.cancelled().await;
                    drop(stream);
                }
            },
        ));
        let _a = TcpStream::connect(addr).await.unwrap();
        let _b = TcpStream::connect(addr).await.unwrap();
        let mut third = TcpStream::connect(addr).await.unwrap();
        // The third is closed by the loop: reading sees the end at once.
        let mut buf = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(5), third.read(&mut buf))
            .await
            .expect("the third connection is closed");
        assert!(matches!(read, Ok(0) | Err(_)));
        assert_eq!(rejected.load(Ordering::SeqCst), 1);

        // Stop: the listener closes, accepted connections finish in the tracker.
        stop.cancel();
        serving.await.unwrap();
        assert!(TcpStream::connect(addr).await.is_err(), "listener closed");
        tasks.close();
        assert_eq!(tasks.len(), 2);
        release.cancel();
        tokio::time::timeout(Duration::from_secs(5), tasks.wait())
            .await
            .expect("connections finish after release");
    }
}
