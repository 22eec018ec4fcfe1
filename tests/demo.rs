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
    let tools = binary("outrigger-tools", "outrigger-tools").unwrap();
    let mut demo = Command::new(tools)
        .args(["demo", "--duration=1s", "--linger=30s"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(demo.stdout.take().unwrap()).lines();
    let started = Instant::now();
    let mut report = String::new();
    let mut admin = None;
    for line in stdout.by_ref() {
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
    // Keep reading, so the demo's later lines do not hit a closed pipe.
    std::thread::spawn(move || stdout.for_each(drop));

    // Phase 1: both Services, with request counts and percentiles; the
    // policy's retries lift the success rate above the upstream's 80%.
    let success = |name: &str| -> f64 {
        let line = report
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no {name:?} line in:\n{report}"));
        let requests: u64 = line.split_whitespace().nth(2).unwrap().parse().unwrap();
        assert!(requests > 50, "too few requests: {line}");
        assert!(line.contains("ms"), "{line}");
        line.split_whitespace()
            .find(|w| w.ends_with('%'))
            .unwrap()
            .trim_end_matches('%')
            .parse()
            .unwrap()
    };
    let (raw, with_policy) = (success("without policy"), success("with policy"));
    assert!(raw < 90.0, "the upstream fails 20%: {raw}\n{report}");
    assert!(
        with_policy > raw + 5.0,
        "retries help: {with_policy} vs {raw}\n{report}"
    );

    // Phase 2: the breaker opened during the outage and closed after it.
    let transitions = report
        .lines()
        .find(|l| l.starts_with("circuit transitions:"))
        .unwrap_or_else(|| panic!("no transitions line in:\n{report}"));
    assert!(!transitions.contains("closed->open 0"), "{report}");
    assert!(!transitions.contains("half-open->closed 0"), "{report}");

    let output = Command::new("curl")
        .args(["-sS", "--fail", &format!("{admin}/metrics")])
        .output()
        .unwrap();
    assert!(output.status.success());
    let metrics = String::from_utf8(output.stdout).unwrap();
    for family in [
        "outrigger_requests_total{",
        "outrigger_retries_total{",
        "outrigger_circuit_transitions_total{",
        "outrigger_fallback_responses_total{",
        "outrigger_circuit_state{",
    ] {
        assert!(metrics.contains(family), "{family} missing:\n{metrics}");
    }
    assert!(metrics.contains("outrigger_policy_version 1"), "{metrics}");

    demo.kill().unwrap();
    demo.wait().unwrap();
}
