//! The test images' programs (`outrigger/test-app`, `outrigger/test-client`)
//! and the minimal HTTP/1.1 client they and the probes share. Blocking std
//! code: names resolve through the libc resolver, so through the pod's
//! `/etc/hosts`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// `GET url` over a fresh connection: (status, body).
pub fn http_get(url: &str, timeout: Duration) -> Result<(u16, String)> {
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
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// The test app: answers every request with 200 and the pod's name.
pub fn serve(port: u16) -> Result<()> {
    let listener = TcpListener::bind(("0.0.0.0", port)).with_context(|| format!("port {port}"))?;
    let name = std::env::var("POD_NAME").unwrap_or_else(|_| "test-app".into());
    println!("test-app {name} listening on {port}");
    for stream in listener.incoming().flatten() {
        let name = name.clone();
        std::thread::spawn(move || answer(stream, &name));
    }
    Ok(())
}

fn answer(mut stream: TcpStream, name: &str) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut reader = BufReader::new(match stream.try_clone() {
        Ok(s) => s,
        Err(_) => return,
    });
    // Requests without bodies are enough for tests: read up to the blank line.
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) if line.trim().is_empty() => break,
            Ok(_) => {}
        }
    }
    let body = format!("hello from {name}\n");
    let _ = write!(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
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
