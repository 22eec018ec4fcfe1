//! Semantic validation of a policy, reporting every error with its field path
//! (`spec.retry.backoff.max: must be >= base (25ms)`). These rules are the
//! ones the CRD will carry as CEL validations:
//! - targetRef.kind Service, group "" or "core", name a DNS-1123 label;
//! - timeouts.backendRequest <= request (per route against the effective request);
//! - backoff.base > 0 and base <= max; openFor > 0 and openFor <= maxOpenFor;
//! - percents within 0..=100; retry.attempts <= 10; codes within 100..=599;
//! - halfOpenRequests, minimumRequests, consecutiveFailures, maxConcurrentRequests,
//!   requestsPerSecond >= 1; window within 1s..=10m; baseEjectionTime > 0;
//! - fallback.status within 200..=599, fallback.body <= 4096 bytes;
//!   maxBufferedBodyBytes <= 16 MiB;
//! - route paths start with "/", not both pathPrefix and pathExact, method an
//!   uppercase token, header names valid; route names unique; at most 64 routes.

use std::collections::HashSet;
use std::fmt;

use crate::duration::Duration;
use crate::manifest::{PolicyManifest, API_VERSION, KIND};
use crate::policy::*;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub path: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationErrors(pub Vec<FieldError>);

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}: {}", e.path, e.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for ValidationErrors {}

pub const MAX_ROUTES: usize = 64;
pub const MAX_BUFFERED_BODY_BYTES: u64 = 16 * 1024 * 1024;
pub const MAX_FALLBACK_BODY_BYTES: usize = 4096;
pub const MAX_ATTEMPTS: u32 = 10;

#[derive(Default)]
struct Collector(Vec<FieldError>);

impl Collector {
    fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError {
            path: path.into(),
            message: message.into(),
        });
    }

    fn percent(&mut self, path: &str, value: Option<u32>) {
        if let Some(v) = value.filter(|v| *v > 100) {
            self.add(path, format!("must be between 0 and 100, got {v}"));
        }
    }

    fn at_least_one(&mut self, path: &str, value: Option<u32>) {
        if value == Some(0) {
            self.add(path, "must be at least 1");
        }
    }

    fn positive(&mut self, path: &str, value: Option<Duration>) {
        if value.is_some_and(Duration::is_zero) {
            self.add(path, "must be greater than 0s");
        }
    }
}

pub fn validate_manifest(manifest: &PolicyManifest) -> Result<(), ValidationErrors> {
    let mut c = Collector::default();
    if manifest.api_version != API_VERSION {
        c.add("apiVersion", format!("must be {API_VERSION}"));
    }
    if manifest.kind != KIND {
        c.add("kind", format!("must be {KIND}"));
    }
    if !is_dns_subdomain(&manifest.metadata.name) {
        c.add(
            "metadata.name",
            "must be a DNS-1123 subdomain (lowercase letters, digits, '-' and '.')",
        );
    }
    if let Some(ns) = &manifest.metadata.namespace {
        if !is_dns_label(ns) {
            c.add("metadata.namespace", "must be a DNS-1123 label");
        }
    }
    check_spec(&mut c, &manifest.spec);
    finish(c)
}

pub fn validate_spec(spec: &ResiliencePolicySpec) -> Result<(), ValidationErrors> {
    let mut c = Collector::default();
    check_spec(&mut c, spec);
    finish(c)
}

fn finish(c: Collector) -> Result<(), ValidationErrors> {
    if c.0.is_empty() {
        Ok(())
    } else {
        Err(ValidationErrors(c.0))
    }
}

fn check_spec(c: &mut Collector, spec: &ResiliencePolicySpec) {
    let t = &spec.target_ref;
    if t.kind != "Service" {
        c.add(
            "spec.targetRef.kind",
            format!("must be Service, got {:?}", t.kind),
        );
    }
    if !(t.group.is_empty() || t.group == "core") {
        c.add("spec.targetRef.group", "must be \"\" (core)");
    }
    if !is_dns_label(&t.name) {
        c.add("spec.targetRef.name", "must be a DNS-1123 label");
    }
    if t.port == Some(0) {
        c.add("spec.targetRef.port", "must be between 1 and 65535");
    }
    if let Some(timeouts) = &spec.timeouts {
        check_timeouts(c, "spec.timeouts", timeouts, None);
    }
    if let Some(retry) = &spec.retry {
        check_retry(c, "spec.retry", retry);
    }
    if let Some(cb) = &spec.circuit_breaker {
        check_breaker(c, cb);
    }
    if let Some(od) = &spec.outlier_detection {
        c.at_least_one(
            "spec.outlierDetection.consecutiveFailures",
            od.consecutive_failures,
        );
        c.positive(
            "spec.outlierDetection.baseEjectionTime",
            od.base_ejection_time,
        );
        c.percent(
            "spec.outlierDetection.maxEjectionPercent",
            od.max_ejection_percent,
        );
    }
    if let Some(limits) = &spec.limits {
        c.at_least_one(
            "spec.limits.maxConcurrentRequests",
            limits.max_concurrent_requests,
        );
    }
    if let Some(rl) = &spec.rate_limit {
        c.at_least_one(
            "spec.rateLimit.requestsPerSecond",
            Some(rl.requests_per_second),
        );
    }
    check_routes(c, spec);
}

fn check_timeouts(
    c: &mut Collector,
    path: &str,
    t: &Timeouts,
    inherited_request: Option<Duration>,
) {
    let request = t.request.or(inherited_request);
    if let (Some(request), Some(backend)) = (request, t.backend_request) {
        if !request.is_zero() && backend > request {
            c.add(
                format!("{path}.backendRequest"),
                format!("must be <= request ({request})"),
            );
        }
    }
    c.positive(&format!("{path}.connect"), t.connect);
}

fn check_retry(c: &mut Collector, path: &str, r: &Retry) {
    if let Some(a) = r.attempts.filter(|a| *a > MAX_ATTEMPTS) {
        c.add(
            format!("{path}.attempts"),
            format!("must be at most {MAX_ATTEMPTS}, got {a}"),
        );
    }
    for (i, code) in r.codes.iter().flatten().enumerate() {
        if !(100..=599).contains(code) {
            c.add(
                format!("{path}.codes[{i}]"),
                format!("must be an HTTP status 100-599, got {code}"),
            );
        }
    }
    let mut seen = HashSet::new();
    for (i, on) in r.on.iter().flatten().enumerate() {
        if !seen.insert(on) {
            c.add(format!("{path}.on[{i}]"), "duplicate condition");
        }
    }
    if let Some(b) = &r.backoff {
        c.positive(&format!("{path}.backoff.base"), b.base);
        let base = b
            .base
            .unwrap_or(Duration::from_millis(crate::defaults::BACKOFF_BASE_MS));
        if let Some(max) = b.max {
            if max < base {
                c.add(
                    format!("{path}.backoff.max"),
                    format!("must be >= base ({base})"),
                );
            }
        }
    }
    if let Some(budget) = &r.budget {
        c.percent(&format!("{path}.budget.percent"), budget.percent);
        c.positive(&format!("{path}.budget.interval"), budget.interval);
        if let Some(rate) = &budget.min_retry_rate {
            c.positive(
                &format!("{path}.budget.minRetryRate.interval"),
                Some(rate.interval),
            );
        }
    }
    if let Some(bytes) = r
        .max_buffered_body_bytes
        .filter(|b| *b > MAX_BUFFERED_BODY_BYTES)
    {
        c.add(
            format!("{path}.maxBufferedBodyBytes"),
            format!("must be at most {MAX_BUFFERED_BODY_BYTES} (16 MiB), got {bytes}"),
        );
    }
}

fn check_breaker(c: &mut Collector, cb: &CircuitBreaker) {
    let p = "spec.circuitBreaker";
    c.percent(&format!("{p}.failureRatePercent"), cb.failure_rate_percent);
    c.at_least_one(&format!("{p}.minimumRequests"), cb.minimum_requests);
    c.at_least_one(&format!("{p}.halfOpenRequests"), cb.half_open_requests);
    if let Some(w) = cb.window {
        if w < Duration::from_secs(1) || w > Duration::from_secs(600) {
            c.add(format!("{p}.window"), "must be between 1s and 10m");
        }
    }
    if let Some(slow) = &cb.slow_call {
        c.percent(
            &format!("{p}.slowCall.ratePercent"),
            Some(slow.rate_percent),
        );
        c.positive(&format!("{p}.slowCall.duration"), Some(slow.duration));
    }
    c.positive(&format!("{p}.openFor"), cb.open_for);
    let open_for = cb
        .open_for
        .unwrap_or(Duration::from_secs(crate::defaults::OPEN_FOR_SECS));
    let max_open_for = cb
        .max_open_for
        .unwrap_or(Duration::from_secs(crate::defaults::MAX_OPEN_FOR_SECS));
    if open_for > max_open_for {
        c.add(
            format!("{p}.openFor"),
            format!("must be <= maxOpenFor ({max_open_for})"),
        );
    }
    if let Some(fb) = &cb.fallback {
        if let Some(s) = fb.status.filter(|s| !(200..=599).contains(s)) {
            c.add(
                format!("{p}.fallback.status"),
                format!("must be 200-599, got {s}"),
            );
        }
        if fb
            .body
            .as_ref()
            .is_some_and(|b| b.len() > MAX_FALLBACK_BODY_BYTES)
        {
            c.add(
                format!("{p}.fallback.body"),
                format!("must be at most {MAX_FALLBACK_BODY_BYTES} bytes"),
            );
        }
    }
}

fn check_routes(c: &mut Collector, spec: &ResiliencePolicySpec) {
    if spec.routes.len() > MAX_ROUTES {
        c.add("spec.routes", format!("at most {MAX_ROUTES} routes"));
    }
    let request = spec.timeouts.as_ref().and_then(|t| t.request);
    let mut names = HashSet::new();
    for (i, route) in spec.routes.iter().enumerate() {
        let path = format!("spec.routes[{i}]");
        if let Some(name) = &route.name {
            if !names.insert(name) {
                c.add(
                    format!("{path}.name"),
                    format!("duplicate route name {name:?}"),
                );
            }
        }
        let m = &route.r#match;
        for (field, value) in [("pathPrefix", &m.path_prefix), ("pathExact", &m.path_exact)] {
            if value.as_ref().is_some_and(|p| !p.starts_with('/')) {
                c.add(format!("{path}.match.{field}"), "must start with \"/\"");
            }
        }
        if m.path_prefix.is_some() && m.path_exact.is_some() {
            c.add(
                format!("{path}.match"),
                "set pathPrefix or pathExact, not both",
            );
        }
        if let Some(method) = &m.method {
            if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
                c.add(
                    format!("{path}.match.method"),
                    "must be an uppercase HTTP method such as GET",
                );
            }
        }
        for (j, h) in m.headers.iter().enumerate() {
            let valid = !h.name.is_empty()
                && h.name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_!#$%&'*+.^`|~".contains(&b));
            if !valid {
                c.add(
                    format!("{path}.match.headers[{j}].name"),
                    "must be a valid header name",
                );
            }
        }
        if let Some(t) = &route.timeouts {
            check_timeouts(c, &format!("{path}.timeouts"), t, request);
        }
        if let Some(r) = &route.retry {
            check_retry(c, &format!("{path}.retry"), r);
        }
    }
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns_label)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{parse_documents, Document};

    fn spec(yaml: &str) -> ResiliencePolicySpec {
        let text = format!("apiVersion: outrigger.dev/v1alpha1\nkind: ResiliencePolicy\nmetadata: {{name: p}}\nspec:\n{yaml}");
        match parse_documents(&text).unwrap().remove(0) {
            Document::Policy(p) => p.spec,
            other => panic!("{other:?}"),
        }
    }

    fn errors(yaml: &str) -> Vec<String> {
        match validate_spec(&spec(yaml)) {
            Ok(()) => vec![],
            Err(e) => {
                e.0.into_iter()
                    .map(|e| format!("{}: {}", e.path, e.message))
                    .collect()
            }
        }
    }

    #[test]
    fn reports_every_error_with_its_path() {
        let errs = errors(
            "  targetRef: {name: Bad_Name}\n  timeouts: {request: 1s, backendRequest: 2s}\n  retry: {backoff: {base: 25ms, max: 10ms}, codes: [700]}\n  circuitBreaker: {halfOpenRequests: 0, failureRatePercent: 101}\n  routes:\n  - match: {pathPrefix: charge}\n",
        );
        assert_eq!(
            errs,
            vec![
                "spec.targetRef.name: must be a DNS-1123 label",
                "spec.timeouts.backendRequest: must be <= request (1s)",
                "spec.retry.codes[0]: must be an HTTP status 100-599, got 700",
                "spec.retry.backoff.max: must be >= base (25ms)",
                "spec.circuitBreaker.failureRatePercent: must be between 0 and 100, got 101",
                "spec.circuitBreaker.halfOpenRequests: must be at least 1",
                "spec.routes[0].match.pathPrefix: must start with \"/\"",
            ]
        );
    }

    #[test]
    fn route_backend_timeout_checked_against_inherited_request() {
        let errs = errors("  targetRef: {name: p}\n  timeouts: {request: 1s}\n  routes:\n  - match: {pathPrefix: /a}\n    timeouts: {backendRequest: 3s}\n");
        assert_eq!(
            errs,
            vec!["spec.routes[0].timeouts.backendRequest: must be <= request (1s)"]
        );
    }

    #[test]
    fn accepts_a_sound_policy() {
        assert!(
            errors("  targetRef: {name: payments, port: 8080}\n  retry: {attempts: 2}\n")
                .is_empty()
        );
    }
}
