//! The test images' programs (`outrigger/test-app`, `outrigger/test-client`)
//! and the minimal HTTP/1.1 client they and the probes share. Blocking std
//! code: names resolve through the libc resolver, so through the pod's
//! `/etc/hosts`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// `GET url` over a fresh connection: (status, body).
pub fn http_get(url: &str, timeout: Duration) -> Result<(u16, String)> {
    http_get_head(url, timeout).map(|(status, _, body)| (status, body))
}

/// `GET url` over a fresh connection: (status, header lines, body).
pub fn http_get_head(url: &str, timeout: Duration) -> Result<(u16, String, String)> {
    let rest = url
        .strip_prefix("http://")
        .context("only http:// URLs are supported")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let with_port = if authority.contains(':') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let addr = with_port
        .to_socket_addrs()
        .with_context(|| format!("resolving {authority}"))?
        .next()
        .with_context(|| format!("{authority} has no address"))?;
    let mut stream = TcpStream::connect_timeout(&addr, timeout)
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: outrigger-testnode\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no HTTP status line")?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .map(|(h, b)| (h.to_string(), b.to_string()))
        .unwrap_or_default();
    Ok((status, head, body))
}

/// The test app: answers every request with 200 and the pod's name, except
/// `GET /fail` (503, counted), `GET /failures` (200, that count as body) and
/// `GET /slow` (200 after a second).
pub fn serve(port: u16) -> Result<()> {
    let listener = TcpListener::bind(("0.0.0.0", port)).with_context(|| format!("port {port}"))?;
    let name = std::env::var("POD_NAME").unwrap_or_else(|_| "test-app".into());
    println!("test-app {name} listening on {port}");
    let failures = std::sync::Arc::new(AtomicU64::new(0));
    for stream in listener.incoming().flatten() {
        let name = name.clone();
        let failures = failures.clone();
        std::thread::spawn(move || answer(stream, &name, &failures));
    }
    Ok(())
}

fn answer(mut stream: TcpStream, name: &str, failures: &AtomicU64) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut reader = BufReader::new(match stream.try_clone() {
        Ok(s) => s,
        Err(_) => return,
    });
    // Requests without bodies are enough for tests: read up to the blank line.
    let mut path = String::new();
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) if line.trim().is_empty() => break,
            Ok(_) => {
                if path.is_empty() {
                    path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
                }
            }
        }
    }
    let (status, body) = match path.as_str() {
        "/fail" => {
            failures.fetch_add(1, Ordering::SeqCst);
            (
                "503 Service Unavailable",
                format!("failing on purpose: {name}\n"),
            )
        }
        "/failures" => ("200 OK", format!("{}\n", failures.load(Ordering::SeqCst))),
        "/slow" => {
            std::thread::sleep(Duration::from_secs(1));
            ("200 OK", format!("slow hello from {name}\n"))
        }
        _ => ("200 OK", format!("hello from {name}\n")),
    };
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

/// The test client: GETs each URL until it answers 2xx (at most `patience`
/// each, since a Service's endpoints may still be coming up), prints the
/// bodies; fails on the first URL that never does.
pub fn client(urls: &[String], patience: Duration) -> Result<()> {
    for url in urls {
        let deadline = Instant::now() + patience;
        loop {
            match http_get(url, Duration::from_secs(2)) {
                Ok((status, body)) if (200..300).contains(&status) => {
                    println!("{url} {status} {}", body.trim());
                    break;
                }
                outcome if Instant::now() >= deadline => {
                    bail!("{url}: no 2xx within {patience:?}; last: {outcome:?}")
                }
                _ => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }
    Ok(())
}

/// The load client: `rate` GETs a second on fresh connections for `seconds`,
/// each bounded by a 5 s timeout, from `workers` threads; prints every
/// failure (anything but 2xx: the status and `x-outrigger-error`, or the
/// transport error) and a summary line `load: requests=N failed=F
/// p50_ms=.. p99_ms=.. statuses=..`. Exits 0 either way: the caller judges.
pub fn load(url: &str, rate: u32, seconds: u64, workers: u32) -> Result<()> {
    use std::collections::BTreeMap;
    use std::sync::Mutex;
    let total = u64::from(rate) * seconds;
    let next = AtomicU64::new(0);
    let results: Mutex<(Vec<Duration>, BTreeMap<String, u64>, u64)> =
        Mutex::new((Vec::new(), BTreeMap::new(), 0));
    let start = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
    std::thread::scope(|scope| {
        for _ in 0..workers.max(1) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= total {
                    break;
                }
                // Open loop: request i is due at start + i * interval.
                let due = start + interval * i as u32;
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                let began = Instant::now();
                let outcome = http_get_head(url, Duration::from_secs(5));
                let took = began.elapsed();
                let key = match &outcome {
                    Ok((status, head, _)) => {
                        let error = head
                            .lines()
                            .find_map(|l| {
                                let (k, v) = l.split_once(':')?;
                                k.eq_ignore_ascii_case("x-outrigger-error")
                                    .then(|| v.trim().to_string())
                            })
                            .unwrap_or_default();
                        if error.is_empty() {
                            status.to_string()
                        } else {
                            format!("{status}/{error}")
                        }
                    }
                    Err(e) => format!("error/{}", e.root_cause()).replace(' ', "_"),
                };
                let failed = !key.starts_with('2');
                if failed {
                    println!("failure {i} after {took:?}: {key} {outcome:?}");
                }
                let mut r = results.lock().unwrap();
                r.0.push(took);
                *r.1.entry(key).or_default() += 1;
                r.2 += u64::from(failed);
            });
        }
    });
    let (mut times, statuses, failed) = results.into_inner().unwrap();
    times.sort();
    let pct = |p: f64| {
        times
            .get(((times.len() as f64 * p).ceil() as usize).saturating_sub(1))
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    let statuses: Vec<String> = statuses.iter().map(|(k, v)| format!("{k}={v}")).collect();
    println!(
        "load: requests={} failed={failed} p50_ms={:.1} p99_ms={:.1} seconds={:.1} statuses={}",
        times.len(),
        pct(0.5),
        pct(0.99),
        start.elapsed().as_secs_f64(),
        statuses.join(",")
    );
    Ok(())
}
