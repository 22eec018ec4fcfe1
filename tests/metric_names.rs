//! `promtool check metrics` on every metric family the proxy's and the
//! operator's registries hold, each given one series (label values are
//! placeholders): the naming rules (counters end in `_total`, base units in
//! names, help texts) hold for families the end-to-end test's traffic does
//! not reach (tests/node/tests/prometheus.rs checks the real /metrics after
//! traffic; the control-plane client's `outrigger_control_*` families,
//! registered by another crate, are checked there). Needs promtool
//! (`bash tests/setup.sh`).

use std::io::Write;
use std::process::{Command, Stdio};

use prometheus::core::{Collector, GenericCounterVec, GenericGaugeVec, Number};
use prometheus::HistogramVec;

/// One series in a family with labels (values "x").
trait Touch {
    fn touch(&self);
}

fn placeholders(c: &dyn Collector) -> Vec<&'static str> {
    vec!["x"; c.desc()[0].variable_labels.len()]
}

impl<P: prometheus::core::Atomic> Touch for GenericCounterVec<P> {
    fn touch(&self) {
        self.with_label_values(&placeholders(self)).inc();
    }
}

impl<P: prometheus::core::Atomic> Touch for GenericGaugeVec<P> {
    fn touch(&self) {
        self.with_label_values(&placeholders(self))
            .set(P::T::from_i64(1));
    }
}

impl Touch for HistogramVec {
    fn touch(&self) {
        self.with_label_values(&placeholders(self)).observe(0.01);
    }
}

fn promtool_check(what: &str, text: &[u8]) {
    outrigger_e2e::require_tool("promtool");
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs");
    child.stdin.take().unwrap().write_all(text).unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool check metrics on the {what}'s families:\n{said}\n{}",
        String::from_utf8_lossy(text)
    );
}

/// The `# TYPE` lines of an exposition: one per family rendered.
fn families(text: &[u8]) -> usize {
    String::from_utf8_lossy(text)
        .lines()
        .filter(|l| l.starts_with("# TYPE "))
        .count()
}

#[test]
fn every_proxy_family_passes_promtool() {
    let m = outrigger_proxy_core::metrics::Metrics::new(10);
    let r = &m.resilience;
    let touched: [&dyn Touch; 20] = [
        &m.requests,
        &m.request_duration,
        &m.route_backend_requests,
        &m.proxy_errors,
        &m.open_connections,
        &m.connections,
        &m.rejected_connections,
        &m.tcp_bytes,
        &r.retries,
        &r.retry_budget_exhausted,
        &r.retries_skipped,
        &r.timeouts,
        &r.circuit_state,
        &r.circuit_transitions,
        &r.fallbacks,
        &r.ejections,
        &r.ejected_endpoints,
        &r.shed,
        &r.rate_limited,
        &r.dry_run_would_reject,
    ];
    for family in touched {
        family.touch();
    }
    let text = m.render();
    // The 20 above and the 5 without labels (policy version, loaded
    // timestamp, reload errors, last reload, conflicts): a family added to
    // Metrics without being added here fails this count.
    assert_eq!(families(&text), 25, "{}", String::from_utf8_lossy(&text));
    promtool_check("proxy", &text);
}

#[test]
fn every_operator_family_passes_promtool() {
    let m = outrigger_operator::metrics::Metrics::new();
    m.reconcile_errors.touch();
    m.objects.touch();
    m.auth_failures.touch();
    let text = m.render();
    // 3 with labels, 9 without (as above, a new family must be counted).
    assert_eq!(families(&text), 12, "{}", String::from_utf8_lossy(&text));
    promtool_check("operator", &text);
}
