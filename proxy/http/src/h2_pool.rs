//! Upstream HTTP/2 connections (prior knowledge): one per target, shared by
//! every request to it (streams multiplex), opened on first use, replaced
//! when it closes, and let go after the idle timeout without a request.
//!
//! Why not hyper-util's pooled client: per request it built a pool key from
//! the URI's scheme and authority, which therefore had to name the endpoint
//! (so the upstream saw the endpoint's address as `:authority`, not the
//! name the client used), went through its checkout machinery and boxed
//! futures; here the caller names the target and the URI goes as it is
//! (BENCHMARKS.md, "HTTP/2"). The connections themselves: `h2_connection`.

use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use foldhash::HashMap;
use http::{Request, Response};

use super::body::ProxyBody;
use super::connect_time::ConnectTime;
use super::h2_connection::{self, Connection, Failure, KeepAlive};
use super::send_error::SendError;
use outrigger_proxy_core::addr::HostPort;
use outrigger_transport::connect::Connector;

/// Upstream connections are pinged when quiet, and closed when a ping goes
/// unanswered: a dead peer is found before a request waits on it.
const KEEP_ALIVE: KeepAlive = KeepAlive {
    interval: Duration::from_secs(20),
    timeout: Duration::from_secs(10),
};

#[derive(Clone)]
pub struct Http2Pool {
    inner: Arc<Inner>,
}

struct Inner {
    connector: Connector,
    idle_timeout: Duration,
    connections: Mutex<Connections>,
}

#[derive(Default)]
struct Connections {
    by_target: HashMap<Arc<HostPort>, Target>,
    reaper_running: bool,
}

#[derive(Default)]
struct Target {
    open: Option<Shared>,
    /// Held while the target's connection is opened, so that requests
    /// arriving together share one connection instead of each opening
    /// one. Per target: a slow connect holds up only its own target.
    connecting: Arc<tokio::sync::Mutex<()>>,
}

struct Shared {
    sender: Connection,
    last_used: Instant,
}

impl Http2Pool {
    pub fn new(connector: Connector, idle_timeout: Duration) -> Self {
        Http2Pool {
            inner: Arc::new(Inner {
                connector,
                idle_timeout,
                connections: Mutex::new(Connections::default()),
            }),
        }
    }

    /// Sends `request` (absolute URI: its scheme and authority become the
    /// `:scheme` and `:authority` the upstream sees) to `target` over the
    /// target's connection. A request the connection never took (it had
    /// closed) goes once more over a new one.
    pub async fn send(
        &self,
        target: &Arc<HostPort>,
        request: Request<ProxyBody>,
    ) -> Result<Response<ProxyBody>, SendError> {
        let (mut sender, connect_time) = match self.checkout(target) {
            Some(sender) => (sender, None),
            None => {
                let (sender, time) = self.timed_connect(target).await?;
                (sender, Some(time))
            }
        };
        let request = match sender.send(request).await {
            Ok(mut response) => {
                ConnectTime::put_on(connect_time, &mut response);
                return Ok(response);
            }
            Err(Failure::Closed(unsent, _)) if connect_time.is_none() => *unsent,
            Err(failure) => return Err(send_error(failure)),
        };
        self.forget(target, &sender);
        let (mut sender, time) = self.timed_connect(target).await?;
        let mut response = sender.send(request).await.map_err(send_error)?;
        ConnectTime::put_on(Some(time), &mut response);
        Ok(response)
    }

    /// `connect`, and how long this request waited for it.
    async fn timed_connect(
        &self,
        target: &Arc<HostPort>,
    ) -> Result<(Connection, ConnectTime), SendError> {
        let connecting = tokio::time::Instant::now();
        let sender = self.connect(target).await?;
        Ok((sender, ConnectTime(connecting.elapsed())))
    }

    /// The target's connection, if open.
    fn checkout(&self, target: &HostPort) -> Option<Connection> {
        let mut connections = self.inner.connections.lock().expect("not poisoned");
        let entry = connections.by_target.get_mut(target)?;
        let shared = entry.open.as_mut()?;
        if shared.sender.is_closed() {
            entry.open = None;
            return None;
        }
        shared.last_used = Instant::now();
        Some(shared.sender.clone())
    }

    /// Drops the pool's handle on `sender`'s connection if it is still the
    /// target's (a request found it closed). A newer connection another
    /// request opened meanwhile stays, unless it is closed too.
    fn forget(&self, target: &HostPort, sender: &Connection) {
        let mut connections = self.inner.connections.lock().expect("not poisoned");
        if let Some(entry) = connections.by_target.get_mut(target) {
            if entry
                .open
                .as_ref()
                .is_some_and(|shared| shared.sender.is_closed() || shared.sender.same_as(sender))
            {
                entry.open = None;
            }
        }
    }

    /// Opens the target's connection, unless a request that got here first
    /// already did.
    async fn connect(&self, target: &Arc<HostPort>) -> Result<Connection, SendError> {
        let connecting = {
            let mut connections = self.inner.connections.lock().expect("not poisoned");
            let entry = connections.by_target.entry(target.clone()).or_default();
            entry.connecting.clone()
        };
        let _connecting = connecting.lock().await;
        if let Some(sender) = self.checkout(target) {
            return Ok(sender);
        }
        let stream = self
            .inner
            .connector
            .connect_authority(&target.host, target.port)
            .await?;
        let sender = h2_connection::handshake(stream, KEEP_ALIVE)
            .await
            .map_err(|err| SendError::NotSent(err.into()))?;
        let mut connections = self.inner.connections.lock().expect("not poisoned");
        connections
            .by_target
            .entry(target.clone())
            .or_default()
            .open = Some(Shared {
            sender: sender.clone(),
            last_used: Instant::now(),
        });
        if !connections.reaper_running {
            connections.reaper_running = true;
            tokio::spawn(reap(Arc::downgrade(&self.inner), self.inner.idle_timeout));
        }
        Ok(sender)
    }
}

fn send_error(failure: Failure) -> SendError {
    match failure {
        Failure::Closed(_, err) | Failure::NotSent(err) => SendError::NotSent(err.into()),
        Failure::Failed(err) => SendError::Failed(err.into()),
    }
}

/// Lets go of connections without a request for the idle timeout, until
/// the pool is gone. (Streams still open keep their connection until they
/// end: h2 closes it when the last handle and stream are gone.)
async fn reap(pool: Weak<Inner>, idle_timeout: Duration) {
    let period = idle_timeout.clamp(Duration::from_millis(100), Duration::from_secs(30));
    loop {
        tokio::time::sleep(period).await;
        let Some(pool) = pool.upgrade() else {
            return;
        };
        let now = Instant::now();
        let mut connections = pool.connections.lock().expect("not poisoned");
        connections.by_target.retain(|_, entry| {
            if entry.open.as_ref().is_some_and(|shared| {
                shared.sender.is_closed() || now.duration_since(shared.last_used) >= idle_timeout
            }) {
                entry.open = None;
            }
            // Kept while open or while a request is connecting to it.
            entry.open.is_some() || Arc::strong_count(&entry.connecting) > 1
        });
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use tokio::net::TcpListener;
    use tokio::task::JoinSet;

    use super::*;
    use crate::body::empty;

    /// An HTTP/2 upstream (hyper's server) answering each request with the
    /// `:authority` it received, counting the connections it accepted;
    /// stopping it (dropping the set) closes them all.
    async fn upstream(port: u16) -> (Arc<HostPort>, Arc<AtomicUsize>, JoinSet<()>) {
        let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        let mut tasks = JoinSet::new();
        tasks.spawn(async move {
            let mut connections = JoinSet::new();
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                count.fetch_add(1, Ordering::SeqCst);
                connections.spawn(async move {
                    let service = hyper::service::service_fn(
                        |request: Request<hyper::body::Incoming>| async move {
                            let authority = request
                                .uri()
                                .authority()
                                .map(|a| a.to_string())
                                .unwrap_or_default();
                            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(authority))))
                        },
                    );
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        let target = HostPort {
            host: "127.0.0.1".into(),
            port,
        };
        (Arc::new(target), accepted, tasks)
    }

    #[tokio::test]
    async fn a_closed_connection_forgotten_late_leaves_its_successor_pooled() {
        let (target, accepted, _upstream) = upstream(0).await;
        let pool = pool();
        get(&pool, &target, "a").await.unwrap();
        let first = pool.checkout(&target).unwrap();
        // Another request found the first closed and opened a second.
        first.mark_closed();
        let second = pool.connect(&target).await.unwrap();
        assert!(!second.same_as(&first));
        // The first's request forgets its connection only now.
        pool.forget(&target, &first);
        let pooled = pool.checkout(&target).expect("the second stays pooled");
        assert!(pooled.same_as(&second));
        get(&pool, &target, "a").await.unwrap();
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    fn pool() -> Http2Pool {
        pool_connecting_for(Duration::from_secs(1))
    }

    fn pool_connecting_for(connect_timeout: Duration) -> Http2Pool {
        let connector = Connector {
            connect_timeout,
            mark: None,
        };
        Http2Pool::new(connector, Duration::from_secs(10))
    }

    /// A loopback target whose connects hang: a listener that never
    /// accepts, its queue filled (Linux then drops further SYNs).
    fn black_hole() -> (Arc<HostPort>, socket2::Socket, Vec<std::net::TcpStream>) {
        use socket2::{Domain, Socket, Type};
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        let any: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
        socket.bind(&any.into()).unwrap();
        socket.listen(0).unwrap();
        let address = socket.local_addr().unwrap().as_socket().unwrap();
        let mut queued = Vec::new();
        while let Ok(stream) =
            std::net::TcpStream::connect_timeout(&address, Duration::from_millis(300))
        {
            queued.push(stream);
            assert!(queued.len() < 16, "the listen queue never filled");
        }
        let target = HostPort {
            host: "127.0.0.1".into(),
            port: address.port(),
        };
        (Arc::new(target), socket, queued)
    }

    async fn get(
        pool: &Http2Pool,
        target: &Arc<HostPort>,
        authority: &str,
    ) -> Result<Bytes, SendError> {
        let response = pool.send(target, request_for(authority)).await?;
        Ok(response.into_body().collect().await.unwrap().to_bytes())
    }

    /// An HTTP/2 GET naming `authority`.
    fn request_for(authority: &str) -> Request<ProxyBody> {
        Request::get(format!("http://{authority}/"))
            .version(http::Version::HTTP_2)
            .body(empty())
            .unwrap()
    }

    #[tokio::test]
    async fn requests_together_share_one_connection_and_keep_their_authority() {
        let (target, accepted, _upstream) = upstream(0).await;
        let pool = pool();
        let mut requests = JoinSet::new();
        for i in 0..20 {
            let (pool, target) = (pool.clone(), target.clone());
            requests.spawn(async move { get(&pool, &target, &format!("svc-{i}.shop:9080")).await });
        }
        let mut answers: Vec<String> = Vec::new();
        while let Some(answer) = requests.join_next().await {
            answers.push(String::from_utf8(answer.unwrap().unwrap().to_vec()).unwrap());
        }
        answers.sort();
        let mut expected: Vec<String> = (0..20).map(|i| format!("svc-{i}.shop:9080")).collect();
        expected.sort();
        assert_eq!(
            answers, expected,
            "each upstream request names its client's authority"
        );
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            1,
            "one connection, multiplexed"
        );
    }

    #[tokio::test]
    async fn a_response_says_whether_its_request_opened_the_connection() {
        let (target, _, _upstream) = upstream(0).await;
        let pool = pool();
        let mut opened = Vec::new();
        for _ in 0..3 {
            let response = pool.send(&target, request_for("a")).await.unwrap();
            opened.push(response.extensions().get::<ConnectTime>().is_some());
            response.into_body().collect().await.unwrap();
        }
        assert_eq!(opened, [true, false, false]);
    }

    #[tokio::test]
    async fn a_restarted_upstream_gets_the_next_request_on_a_new_connection() {
        let (target, _, upstream_tasks) = upstream(0).await;
        let pool = pool();
        assert_eq!(&get(&pool, &target, "a").await.unwrap()[..], b"a");
        drop(upstream_tasks);
        // Wait until the pool's connection has seen the close.
        for _ in 0..200 {
            if pool.checkout(&target).is_none() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let (target, accepted, _upstream) = upstream(target.port).await;
        assert_eq!(&get(&pool, &target, "b").await.unwrap()[..], b"b");
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn nothing_listening_is_a_connect_error() {
        let port = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let target = Arc::new(HostPort {
            host: "127.0.0.1".into(),
            port,
        });
        let err = get(&pool(), &target, "a").await.unwrap_err();
        assert!(matches!(err, SendError::Connect(_)), "{err:?}");
    }

    #[tokio::test]
    async fn a_target_slow_to_connect_holds_up_no_other() {
        let (fast, _, _upstream) = upstream(0).await;
        let (slow, _listener, _queued) = black_hole();
        let pool = pool_connecting_for(Duration::from_secs(30));
        let stuck = tokio::spawn({
            let (pool, slow) = (pool.clone(), slow.clone());
            async move { get(&pool, &slow, "slow").await }
        });
        // Until the slow target's connect is under way.
        loop {
            let connecting = pool
                .inner
                .connections
                .lock()
                .unwrap()
                .by_target
                .get(&*slow)
                .is_some_and(|entry| entry.connecting.try_lock().is_err());
            if connecting {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(&get(&pool, &fast, "fast").await.unwrap()[..], b"fast");
        assert!(!stuck.is_finished(), "the slow connect is still waiting");
        stuck.abort();
    }
}
