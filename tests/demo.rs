//! The README's first command, end to end: the demo binary drives traffic
//! through a real proxy, and curl scrapes the metrics it points to.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use outrigger_e2e::{binary, require_tool};

#[test]
fn demo_reports_traffic_and_serves_metrics_to_curl() {
    if !require_tool("curl") {
        return;
    }
    let proxy = binary("outrigger-proxy", "outrigger-proxy").unwrap();
    let mut demo = Command::new(proxy)
        .args(["demo", "--duration=1s", "--linger=30s"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(demo.stdout.take().unwrap());
    let started = Instant::now();
    let mut report = String::new();
    let mut admin = None;
    for line in stdout.lines() {
        let line = line.unwrap();
        report.push_str(&line);
        report.push('\n');
        if let Some(url) = line.strip_prefix("admin: ") {
            admin = Some(url.trim().to_string());
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "demo too slow");
    }
    let admin = admin.unwrap_or_else(|| panic!("no admin line in:\n{report}"));

    // The report has both paths, with request counts and percentiles.
    let through = report
        .lines()
        .find(|l| l.starts_with("through outrigger"))
        .unwrap_or_else(|| panic!("no proxied line in:\n{report}"));
    let requests: u64 = through.split_whitespace().nth(2).unwrap().parse().unwrap();
    assert!(requests > 50, "too few requests: {through}");
    assert!(through.contains("ms"), "{through}");

    let output = Command::new("curl")
        .args(["-sS", "--fail", &format!("{admin}/metrics")])
        .output()
        .unwrap();
    assert!(output.status.success());
    let metrics = String::from_utf8(output.stdout).unwrap();
    let proxied: f64 = metrics
        .lines()
        .filter(|l| {
            l.starts_with("outrigger_requests_total{") && l.contains("direction=\"inbound\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(
        proxied as u64, requests,
        "metrics count every proxied request"
    );
    assert!(metrics.contains("outrigger_policy_version 1"), "{metrics}");

    demo.kill().unwrap();
    demo.wait().unwrap();
}
