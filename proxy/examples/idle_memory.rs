//! Where an idle keep-alive client connection's memory goes: runs the proxy
//! in this process under a counting allocator, opens `--conns` HTTP/1.1
//! connections that each send one request and then stay open (`--idle-secs`),
//! and reports the
//! heap they hold (live bytes and allocations per connection, by size) and
//! the process's RSS growth.
//!
//!   cargo run --release -p outrigger-proxy --example idle_memory -- --conns 1000
//!
//! Allocation sizes are the requested ones (malloc's own overhead and
//! rounding come on top, which is why RSS per connection is larger).

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Duration;

use clap::Parser;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Live allocations by requested size, in 16-byte classes up to 64 KiB (the
/// last class holds everything larger).
const CLASSES: usize = 4097;
static LIVE_COUNT: [AtomicIsize; CLASSES] = [const { AtomicIsize::new(0) }; CLASSES];
static LIVE_BYTES: [AtomicIsize; CLASSES] = [const { AtomicIsize::new(0) }; CLASSES];

struct Counting;

fn class(size: usize) -> usize {
    (size / 16).min(CLASSES - 1)
}

thread_local! {
    /// Set on the client's thread: only the proxy's allocations are counted.
    static UNCOUNTED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn count(size: usize, sign: isize) {
    if UNCOUNTED.try_with(|u| u.get()).unwrap_or(true) {
        return;
    }
    LIVE_COUNT[class(size)].fetch_add(sign, Ordering::Relaxed);
    LIVE_BYTES[class(size)].fetch_add(sign * size as isize, Ordering::Relaxed);
}

// SAFETY: every call is passed on to the system allocator unchanged; only
// counters are updated around it.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size(), 1);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(layout.size(), -1);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size(), 1);
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(layout.size(), -1);
        count(new_size, 1);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn snapshot() -> Vec<(isize, isize)> {
    (0..CLASSES)
        .map(|i| {
            (
                LIVE_COUNT[i].load(Ordering::Relaxed),
                LIVE_BYTES[i].load(Ordering::Relaxed),
            )
        })
        .collect()
}

fn rss_kib() -> i64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|v| v.parse().unwrap_or(0)))
        })
        .unwrap_or(0)
}

#[derive(Parser)]
struct Args {
    /// Idle connections to hold.
    #[arg(long, default_value_t = 1000)]
    conns: usize,
    /// How long the connections are left idle before measuring.
    #[arg(long, default_value_t = 3.0)]
    idle_secs: f64,
    /// Call glibc's malloc_trim(0) before reading RSS: shows how much of the
    /// RSS is freed memory the allocator keeps rather than memory in use.
    #[arg(long)]
    trim: bool,
    /// Batches of `--conns` connections, each measured on its own while the
    /// earlier ones stay open (the later ones show what freed memory is reused).
    #[arg(long, default_value_t = 1)]
    batches: usize,
}

const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";

/// A keep-alive upstream that answers every request head with "ok".
async fn upstream(listener: TcpListener) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            return;
        };
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            let mut seen = Vec::new();
            loop {
                let Ok(n) = stream.read(&mut buf).await else {
                    return;
                };
                if n == 0 {
                    return;
                }
                seen.extend_from_slice(&buf[..n]);
                while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                    seen.drain(..end + 4);
                    if stream.write_all(RESPONSE).await.is_err() {
                        return;
                    }
                }
            }
        });
    }
}

/// One request on a fresh connection, read to its end; the connection is kept.
async fn one_request(addr: SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr)
        .await
        .expect("connect to the proxy");
    stream
        .write_all(b"GET / HTTP/1.1\r\nhost: a\r\n\r\n")
        .await
        .expect("send");
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !got.ends_with(b"\r\n\r\nok") {
        let n = stream.read(&mut buf).await.expect("read");
        assert!(n > 0, "the proxy closed the connection: {got:?}");
        got.extend_from_slice(&buf[..n]);
    }
    stream
}

extern "C" {
    fn malloc_trim(pad: usize) -> i32;
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn main() {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let up = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let up_addr = up.local_addr().expect("addr");
        tokio::spawn(upstream(up));
        let (inbound, admin) = (free_port(), free_port());
        let cli = outrigger_proxy::cli::Cli::parse_from([
            "outrigger-proxy".to_string(),
            format!("--inbound-addr=127.0.0.1:{inbound}"),
            "--outbound-addr=127.0.0.1:0".into(),
            format!("--admin-addr=127.0.0.1:{admin}"),
            format!("--app-addr={up_addr}"),
            "--workers=1".into(),
            "--log-level=warn".into(),
        ]);
        tokio::spawn(outrigger_proxy::app::run(cli.run));
        let addr: SocketAddr = format!("127.0.0.1:{inbound}").parse().expect("addr");
        let client = client_runtime();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(addr).await.is_err() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the proxy never listened"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Warm up: the upstream connection, the stack, the metrics.
        for _ in 0..3 {
            drop(one_request(addr).await);
        }
        settle().await;

        let mut held = Vec::new();
        for batch in 1..=args.batches {
            let (before, rss_before) = (snapshot(), rss_kib());
            for _ in 0..args.conns {
                held.push(client.spawn(one_request(addr)).await.expect("client"));
            }
            settle().await;
            tokio::time::sleep(Duration::from_secs_f64(args.idle_secs)).await;
            if args.trim {
                // SAFETY: glibc's malloc_trim takes a padding size and only
                // returns free pages to the kernel.
                unsafe { malloc_trim(0) };
            }
            let (after, rss_after) = (snapshot(), rss_kib());
            print!("batch {batch}: ");
            report(args.conns, &before, &after, rss_after - rss_before);
        }
        drop(held);
    });
}

/// The load's own runtime, on a thread whose allocations are not counted.
fn client_runtime() -> tokio::runtime::Handle {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        UNCOUNTED.with(|u| u.set(true));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("client runtime");
        tx.send(runtime.handle().clone()).expect("handle");
        runtime.block_on(std::future::pending::<()>());
    });
    rx.recv().expect("client runtime started")
}

/// Lets the proxy's connection tasks finish their writes and go idle.
async fn settle() {
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
}

fn report(conns: usize, before: &[(isize, isize)], after: &[(isize, isize)], rss_kib: i64) {
    let mut by_size = BTreeMap::new();
    let (mut count, mut bytes) = (0isize, 0isize);
    for (i, (b, a)) in before.iter().zip(after).enumerate() {
        let (dc, db) = (a.0 - b.0, a.1 - b.1);
        count += dc;
        bytes += db;
        if dc != 0 {
            by_size.insert(i, (dc, db));
        }
    }
    let n = conns as f64;
    println!(
        "{conns} idle connections: heap +{:.0} bytes and +{:.2} allocations per connection; RSS +{:.1} KiB per connection",
        bytes as f64 / n,
        count as f64 / n,
        rss_kib as f64 / n
    );
    println!("live allocations added, by requested size (per connection):");
    let mut rows: Vec<_> = by_size.into_iter().collect();
    rows.sort_by_key(|(_, (_, bytes))| -bytes);
    for (class, (dc, db)) in rows.into_iter().take(15) {
        if (dc.unsigned_abs() as f64) < n / 20.0 {
            continue;
        }
        println!(
            "  {:>6}-{:<6} bytes: {:>5.2} allocations, {:>7.0} bytes",
            class * 16,
            class * 16 + 15,
            dc as f64 / n,
            db as f64 / n
        );
    }
}
