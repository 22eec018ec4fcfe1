//! Semantic validation of a policy: every error, each with the full path of
//! its field in wire names (`spec.routes[1].match.pathPrefix: must start with "/"`).
//!
//! The rules (the CRD carries the same ones as OpenAPI bounds and CEL rules,
//! so kubectl and a local file are refused alike):
//! - metadata.name a DNS-1123 subdomain, metadata.namespace a DNS-1123 label;
//!   apiVersion outrigger.dev/v1alpha1, kind ResiliencePolicy;
//! - targetRef.kind Service, targetRef.group "" or "core", targetRef.name a
//!   DNS-1123 label, targetRef.port 1-65535;
//! - timeouts.backendRequest <= request unless request is 0s (no limit); on a
//!   route, against the route's request or else the policy's; connect > 0s;
//!   connect and idle not on a route (a connection serves every route);
//! - retry.attempts <= 10; codes each 100-599; `on` and grpcCodes without
//!   repeats (grpcCodes of circuitBreaker and outlierDetection too);
//!   backoff.base > 0s and base <= max, unset ones taking the inherited or
//!   default value; budget.interval and minRetryRate.interval > 0s; budget
//!   not on a route (every route's retries draw on the Service's budget);
//!   maxBufferedBodyBytes <= 16 MiB;
//! - percentages 0-100: budget.percent, failureRatePercent,
//!   slowCall.ratePercent, maxEjectionPercent;
//! - circuitBreaker: minimumRequests >= 1, halfOpenRequests >= 1, window
//!   1s-10m (it is kept in buckets), slowCall.duration > 0s, openFor > 0s and
//!   openFor <= maxOpenFor (defaults for unset ones), fallback.status 200-599,
//!   fallback.contentType a header value, fallback.body <= 4096 bytes;
//! - outlierDetection: consecutiveFailures >= 1, baseEjectionTime > 0s;
//! - limits.maxConcurrentRequests >= 1 (maxPendingRequests may be 0), and
//!   maxPendingRequests and pendingTimeout only with it;
//!   rateLimit.requestsPerSecond >= 1, burst >= 1;
//! - routes: at most 64; names DNS-1123 labels, unique, and neither
//!   `default` nor `route-<n>` (the labels of requests no route matches and
//!   of unnamed routes); match.pathPrefix and pathExact start
//!   with "/" and are not both set; method an uppercase HTTP token; header
//!   names HTTP tokens; grpc not with a path match, only with method POST,
//!   its service a fully qualified protobuf name and its method an
//!   identifier;
//! - what only attached HTTPRoutes/GRPCRoutes set is refused ("set by
//!   HTTPRoute/GRPCRoute only"): exclusiveRoutes, and on routes backends,
//!   requestHeaders, responseHeaders, source, match.pathRegex,
//!   match.queryParams, match.headerRegexes. The CRD has no such fields (the
//!   API server drops them), so this catches them in files. A spec composed
//!   with Gateway API routes ([`crate::gateway::compose`]) carries them and
//!   is therefore not one to validate here.

mod fields;
mod syntax;

use std::fmt;

use crate::manifest::{PolicyManifest, API_VERSION, KIND};
use crate::policy::ResiliencePolicySpec;

pub const MAX_ROUTES: usize = 64;
pub const MAX_ATTEMPTS: u32 = 10;
pub const MAX_BUFFERED_BODY_BYTES: u64 = 16 * 1024 * 1024;
pub const MAX_FALLBACK_BODY_BYTES: usize = 4096;

/// One broken rule: where, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Wire names and indices from the document root, e.g. `spec.retry.backoff.max`.
    pub path: String,
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Every broken rule, in document order; displayed one per line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationErrors(pub Vec<FieldError>);

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ValidationErrors {}

pub fn validate_manifest(manifest: &PolicyManifest) -> Result<(), ValidationErrors> {
    let mut errors = Errors::default();
    if manifest.api_version != API_VERSION {
        errors.add("apiVersion", format!("must be {API_VERSION}"));
    }
    if manifest.kind != KIND {
        errors.add("kind", format!("must be {KIND}"));
    }
    if !syntax::is_dns_subdomain(&manifest.metadata.name) {
        errors.add(
            "metadata.name",
            "must be a DNS-1123 subdomain (lowercase letters, digits, '-' and '.')",
        );
    }
    if let Some(namespace) = &manifest.metadata.namespace {
        if !syntax::is_dns_label(namespace) {
            errors.add("metadata.namespace", "must be a DNS-1123 label");
        }
    }
    fields::check_spec(&mut errors, &manifest.spec);
    errors.finish()
}

pub fn validate_spec(spec: &ResiliencePolicySpec) -> Result<(), ValidationErrors> {
    let mut errors = Errors::default();
    fields::check_spec(&mut errors, spec);
    errors.finish()
}

/// Collects errors with the checks most rules share.
#[derive(Default)]
struct Errors(Vec<FieldError>);

impl Errors {
    fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError {
            path: path.into(),
            message: message.into(),
        });
    }

    fn finish(self) -> Result<(), ValidationErrors> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ValidationErrors(self.0))
        }
    }

    fn percent(&mut self, path: impl Into<String>, value: Option<u32>) {
        if let Some(v) = value.filter(|v| *v > 100) {
            self.add(path, format!("must be between 0 and 100, got {v}"));
        }
    }

    fn at_least_one(&mut self, path: impl Into<String>, value: Option<u32>) {
        if value == Some(0) {
            self.add(path, "must be at least 1");
        }
    }

    fn positive(&mut self, path: impl Into<String>, value: Option<crate::duration::Duration>) {
        if value.is_some_and(|v| v.is_zero()) {
            self.add(path, "must be greater than 0s");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::TargetRef;

    #[test]
    fn manifest_envelope_is_checked_with_the_spec() {
        let mut manifest = PolicyManifest::new("Payments_1", ResiliencePolicySpec::default());
        manifest.api_version = "outrigger.dev/v1".into();
        manifest.metadata.namespace = Some("shop.eu".into());
        let errors = validate_manifest(&manifest).unwrap_err();
        assert_eq!(
            errors.to_string(),
            "apiVersion: must be outrigger.dev/v1alpha1\n\
             metadata.name: must be a DNS-1123 subdomain (lowercase letters, digits, '-' and '.')\n\
             metadata.namespace: must be a DNS-1123 label\n\
             spec.targetRef.name: must be a DNS-1123 label"
        );
    }

    #[test]
    fn a_minimal_manifest_is_valid() {
        let spec = ResiliencePolicySpec {
            target_ref: TargetRef::service("payments"),
            ..ResiliencePolicySpec::default()
        };
        assert_eq!(
            validate_manifest(&PolicyManifest::new("payments.v2", spec)),
            Ok(())
        );
    }
}
