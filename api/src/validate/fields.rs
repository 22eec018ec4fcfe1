//! The rules for each section of the spec (listed in the parent module).

use std::collections::HashSet;

use super::{
    syntax, Errors, MAX_ATTEMPTS, MAX_BUFFERED_BODY_BYTES, MAX_FALLBACK_BODY_BYTES, MAX_ROUTES,
};
use crate::defaults;
use crate::duration::Duration;
use crate::policy::*;
use crate::semantics;

pub(super) fn check_spec(e: &mut Errors, spec: &ResiliencePolicySpec) {
    target_ref(e, &spec.target_ref);
    if let Some(t) = &spec.timeouts {
        timeouts(e, "spec.timeouts", t, None);
    }
    if let Some(r) = &spec.retry {
        retry(e, "spec.retry", r, None);
    }
    if let Some(cb) = &spec.circuit_breaker {
        circuit_breaker(e, cb);
    }
    if let Some(od) = &spec.outlier_detection {
        let p = "spec.outlierDetection";
        e.at_least_one(format!("{p}.consecutiveFailures"), od.consecutive_failures);
        e.positive(format!("{p}.baseEjectionTime"), od.base_ejection_time);
        e.percent(format!("{p}.maxEjectionPercent"), od.max_ejection_percent);
        no_repeats(e, &format!("{p}.grpcCodes"), od.grpc_codes.as_deref());
    }
    if let Some(limits) = &spec.limits {
        e.at_least_one(
            "spec.limits.maxConcurrentRequests",
            limits.max_concurrent_requests,
        );
        // Without a cap nothing waits: the queue's settings would be ignored.
        if limits.max_concurrent_requests.is_none() {
            for (field, set) in [
                ("maxPendingRequests", limits.max_pending_requests.is_some()),
                ("pendingTimeout", limits.pending_timeout.is_some()),
            ] {
                if set {
                    e.add(
                        format!("spec.limits.{field}"),
                        "needs maxConcurrentRequests: without a limit nothing waits",
                    );
                }
            }
        }
    }
    if let Some(rl) = &spec.rate_limit {
        e.at_least_one(
            "spec.rateLimit.requestsPerSecond",
            Some(rl.requests_per_second),
        );
        e.at_least_one("spec.rateLimit.burst", rl.burst);
    }
    routes(e, spec);
    if spec.exclusive_routes {
        e.add("spec.exclusiveRoutes", GATEWAY_ONLY);
    }
}

/// Fields of the model that only attached HTTPRoutes/GRPCRoutes fill in
/// (they are not in the CRD): a policy that carries them was not written for
/// Outrigger, and taking them from one would give a policy powers (404s,
/// rerouting to other Services) that Gateway API status would never show.
const GATEWAY_ONLY: &str =
    "set by HTTPRoute/GRPCRoute only, not by a ResiliencePolicy (see docs/gateway-api.md)";

/// The Gateway-API-only fields a route sets, by wire name.
fn gateway_only_fields(route: &Route) -> Vec<&'static str> {
    let m = &route.r#match;
    [
        ("backends", !route.backends.is_empty()),
        ("requestHeaders", route.request_headers.is_some()),
        ("responseHeaders", route.response_headers.is_some()),
        ("source", route.source.is_some()),
        ("match.pathRegex", m.path_regex.is_some()),
        ("match.queryParams", !m.query_params.is_empty()),
        ("match.headerRegexes", !m.header_regexes.is_empty()),
    ]
    .into_iter()
    .filter(|(_, set)| *set)
    .map(|(field, _)| field)
    .collect()
}

fn target_ref(e: &mut Errors, t: &TargetRef) {
    if t.group != defaults::TARGET_GROUP && t.group != "core" {
        e.add(
            "spec.targetRef.group",
            format!("must be \"\" (core), got {:?}", t.group),
        );
    }
    if t.kind != defaults::TARGET_KIND {
        e.add(
            "spec.targetRef.kind",
            format!("must be Service, got {:?}", t.kind),
        );
    }
    if !syntax::is_dns_label(&t.name) {
        e.add("spec.targetRef.name", "must be a DNS-1123 label");
    }
    if t.port == Some(0) {
        e.add("spec.targetRef.port", "must be between 1 and 65535");
    }
}

/// `inherited_request`: a route's parent request timeout, which its own
/// backendRequest must also respect.
fn timeouts(e: &mut Errors, path: &str, t: &Timeouts, inherited_request: Option<Duration>) {
    let request = t.request.or(inherited_request);
    if let (Some(request), Some(backend)) = (request, t.backend_request) {
        // A 0s request timeout is no limit, so any attempt timeout fits it.
        if !request.is_zero() && backend > request {
            e.add(
                format!("{path}.backendRequest"),
                format!("must be <= request ({request})"),
            );
        }
    }
    e.positive(format!("{path}.connect"), t.connect);
}

/// `parent`: the policy's retry, which a route's inherits unset fields from.
fn retry(e: &mut Errors, path: &str, r: &Retry, parent: Option<&Retry>) {
    if let Some(a) = r.attempts.filter(|a| *a > MAX_ATTEMPTS) {
        e.add(
            format!("{path}.attempts"),
            format!("must be at most {MAX_ATTEMPTS}, got {a}"),
        );
    }
    for (i, code) in r.codes.iter().flatten().enumerate() {
        if !(100..=599).contains(code) {
            e.add(
                format!("{path}.codes[{i}]"),
                format!("must be an HTTP status 100-599, got {code}"),
            );
        }
    }
    no_repeats(e, &format!("{path}.on"), r.on.as_deref());
    no_repeats(e, &format!("{path}.grpcCodes"), r.grpc_codes.as_deref());
    if let Some(b) = &r.backoff {
        backoff(
            e,
            &format!("{path}.backoff"),
            b,
            parent.and_then(|p| p.backoff.as_ref()),
        );
    }
    if let Some(budget) = &r.budget {
        e.percent(format!("{path}.budget.percent"), budget.percent);
        e.positive(format!("{path}.budget.interval"), budget.interval);
        if let Some(rate) = &budget.min_retry_rate {
            e.positive(
                format!("{path}.budget.minRetryRate.interval"),
                Some(rate.interval),
            );
        }
    }
    if let Some(bytes) = r
        .max_buffered_body_bytes
        .filter(|b| *b > MAX_BUFFERED_BODY_BYTES)
    {
        e.add(
            format!("{path}.maxBufferedBodyBytes"),
            format!("must be at most {MAX_BUFFERED_BODY_BYTES} (16 MiB), got {bytes}"),
        );
    }
}

/// A list of settings where each may appear once.
fn no_repeats<T: Eq + std::hash::Hash>(e: &mut Errors, path: &str, list: Option<&[T]>) {
    let mut seen = HashSet::new();
    for (i, item) in list.into_iter().flatten().enumerate() {
        if !seen.insert(item) {
            e.add(format!("{path}[{i}]"), "repeats an earlier entry");
        }
    }
}

fn backoff(e: &mut Errors, path: &str, own: &Backoff, inherited: Option<&Backoff>) {
    e.positive(format!("{path}.base"), own.base);
    let inherited = inherited.cloned().unwrap_or_default();
    let base = own
        .base
        .or(inherited.base)
        .unwrap_or(Duration::from_millis(defaults::BACKOFF_BASE_MS));
    let max = own
        .max
        .or(inherited.max)
        .unwrap_or(Duration::from_millis(defaults::BACKOFF_MAX_MS));
    ordered(e, path, ("base", own.base, base), ("max", own.max, max));
}

/// `lower <= upper`, reported on the upper field when the user set it, else
/// on the lower one (an unset field's value is inherited or a default).
fn ordered(
    e: &mut Errors,
    path: &str,
    (lower_name, lower_set, lower): (&str, Option<Duration>, Duration),
    (upper_name, upper_set, upper): (&str, Option<Duration>, Duration),
) {
    if lower <= upper {
        return;
    }
    if upper_set.is_some() {
        e.add(
            format!("{path}.{upper_name}"),
            format!("must be >= {lower_name} ({lower})"),
        );
    } else if lower_set.is_some() {
        e.add(
            format!("{path}.{lower_name}"),
            format!("must be <= {upper_name} ({upper})"),
        );
    }
}

fn circuit_breaker(e: &mut Errors, cb: &CircuitBreaker) {
    let p = "spec.circuitBreaker";
    e.percent(format!("{p}.failureRatePercent"), cb.failure_rate_percent);
    e.at_least_one(format!("{p}.minimumRequests"), cb.minimum_requests);
    if let Some(w) = cb.window {
        if w < Duration::from_secs(1) || w > Duration::from_secs(600) {
            e.add(
                format!("{p}.window"),
                format!("must be between 1s and 10m, got {w}"),
            );
        }
    }
    if let Some(slow) = &cb.slow_call {
        e.positive(format!("{p}.slowCall.duration"), Some(slow.duration));
        e.percent(format!("{p}.slowCall.ratePercent"), Some(slow.rate_percent));
    }
    e.positive(format!("{p}.openFor"), cb.open_for);
    let open_for = cb
        .open_for
        .unwrap_or(Duration::from_secs(defaults::OPEN_FOR_SECS));
    let max_open_for = cb
        .max_open_for
        .unwrap_or(Duration::from_secs(defaults::MAX_OPEN_FOR_SECS));
    ordered(
        e,
        p,
        ("openFor", cb.open_for, open_for),
        ("maxOpenFor", cb.max_open_for, max_open_for),
    );
    e.at_least_one(format!("{p}.halfOpenRequests"), cb.half_open_requests);
    if let Some(fb) = &cb.fallback {
        if let Some(s) = fb.status.filter(|s| !(200..=599).contains(s)) {
            e.add(
                format!("{p}.fallback.status"),
                format!("must be 200-599, got {s}"),
            );
        }
        if let Some(ct) = &fb.content_type {
            // The proxy could not send it, and would answer without one.
            if ct.len() > 256 || !ct.bytes().all(|b| b == b'\t' || (b' '..=b'~').contains(&b)) {
                e.add(
                    format!("{p}.fallback.contentType"),
                    format!("must be a header value (visible ASCII, spaces and tabs), at most 256 characters, got {ct:?}"),
                );
            }
        }
        if let Some(len) = fb
            .body
            .as_ref()
            .map(String::len)
            .filter(|len| *len > MAX_FALLBACK_BODY_BYTES)
        {
            e.add(
                format!("{p}.fallback.body"),
                format!("must be at most {MAX_FALLBACK_BODY_BYTES} bytes, got {len}"),
            );
        }
    }
    no_repeats(e, &format!("{p}.grpcCodes"), cb.grpc_codes.as_deref());
}

fn routes(e: &mut Errors, spec: &ResiliencePolicySpec) {
    if spec.routes.len() > MAX_ROUTES {
        e.add(
            "spec.routes",
            format!(
                "must hold at most {MAX_ROUTES} routes, got {}",
                spec.routes.len()
            ),
        );
    }
    let request = spec.timeouts.as_ref().and_then(|t| t.request);
    let mut names = HashSet::new();
    for (i, route) in spec.routes.iter().enumerate() {
        let path = format!("spec.routes[{i}]");
        if let Some(name) = &route.name {
            route_name(e, &format!("{path}.name"), name, &mut names);
        }
        route_match(e, &format!("{path}.match"), &route.r#match);
        for field in gateway_only_fields(route) {
            e.add(format!("{path}.{field}"), GATEWAY_ONLY);
        }
        // Per connection or per Service: a route cannot have its own.
        let set = |field: &str| match field {
            "timeouts.connect" => route.timeouts.as_ref().is_some_and(|t| t.connect.is_some()),
            "timeouts.idle" => route.timeouts.as_ref().is_some_and(|t| t.idle.is_some()),
            "retry.budget" => route.retry.as_ref().is_some_and(|r| r.budget.is_some()),
            _ => false,
        };
        for (field, why, instead) in semantics::NOT_ON_ROUTES {
            if set(field) {
                e.add(
                    format!("{path}.{field}"),
                    semantics::not_on_route(why, instead),
                );
            }
        }
        if let Some(t) = &route.timeouts {
            let own = Timeouts {
                connect: None,
                idle: None,
                ..t.clone()
            };
            timeouts(e, &format!("{path}.timeouts"), &own, request);
        }
        if let Some(r) = &route.retry {
            let own = Retry {
                budget: None,
                ..r.clone()
            };
            retry(e, &format!("{path}.retry"), &own, spec.retry.as_ref());
        }
    }
}

/// A route's name is its `route` label in metrics and logs: a DNS label
/// (as Gateway API names route rules), unique, and not one the proxy gives
/// to what has no name of its own.
fn route_name<'a>(e: &mut Errors, path: &str, name: &'a str, names: &mut HashSet<&'a str>) {
    if !syntax::is_dns_label(name) {
        e.add(
            path,
            format!(
                "must be a DNS-1123 label (lowercase letters, digits and '-', at most 63), got {name:?}"
            ),
        );
    } else if name == semantics::DEFAULT_ROUTE || syntax::is_generated_route_name(name) {
        e.add(
            path,
            format!(
                "{name:?} is reserved: requests no route matches are labelled default, unnamed routes route-<index>"
            ),
        );
    }
    if !names.insert(name) {
        e.add(path, format!("repeats route name {name:?}"));
    }
}

fn route_match(e: &mut Errors, path: &str, m: &RouteMatch) {
    for (field, value) in [("pathPrefix", &m.path_prefix), ("pathExact", &m.path_exact)] {
        if value.as_ref().is_some_and(|p| !p.starts_with('/')) {
            e.add(format!("{path}.{field}"), "must start with \"/\"");
        }
    }
    if m.path_prefix.is_some() && m.path_exact.is_some() {
        e.add(path, "set pathPrefix or pathExact, not both");
    }
    if let Some(method) = &m.method {
        if !syntax::is_uppercase_method(method) {
            e.add(
                format!("{path}.method"),
                format!("must be an uppercase HTTP method such as GET, got {method:?}"),
            );
        }
    }
    for (j, header) in m.headers.iter().enumerate() {
        if !syntax::is_token(&header.name) {
            e.add(
                format!("{path}.headers[{j}].name"),
                format!("must be an HTTP header name, got {:?}", header.name),
            );
        }
    }
    if let Some(grpc) = &m.grpc {
        grpc_match(e, path, m, grpc);
    }
}

fn grpc_match(e: &mut Errors, path: &str, m: &RouteMatch, grpc: &GrpcMatch) {
    if m.path_prefix.is_some() || m.path_exact.is_some() {
        e.add(format!("{path}.grpc"), "set grpc or a path match, not both");
    }
    if m.method.as_deref().is_some_and(|method| method != "POST") {
        e.add(
            format!("{path}.method"),
            "gRPC calls are POSTs: method must be POST or unset with grpc",
        );
    }
    if let Some(service) = grpc.service.as_deref() {
        if !syntax::is_proto_full_name(service) || service.len() > 1024 {
            e.add(
                format!("{path}.grpc.service"),
                format!("must be a fully qualified service name such as helloworld.Greeter, got {service:?}"),
            );
        }
    }
    if let Some(method) = grpc.method.as_deref() {
        if !syntax::is_proto_ident(method) || method.len() > 1024 {
            e.add(
                format!("{path}.grpc.method"),
                format!("must be a method name such as SayHello, got {method:?}"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::manifest::{parse_documents, Document};
    use crate::validate::validate_spec;

    /// The errors for a spec written as indented YAML.
    fn errors(spec: &str) -> Vec<String> {
        let text = format!(
            "apiVersion: outrigger.dev/v1alpha1\nkind: ResiliencePolicy\nmetadata: {{name: p}}\nspec:\n{spec}"
        );
        let Document::Policy(policy) = parse_documents(&text).unwrap().remove(0) else {
            panic!("not a policy")
        };
        match validate_spec(&policy.spec) {
            Ok(()) => vec![],
            Err(e) => e.0.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn reports_every_error_in_document_order() {
        let errs = errors(
            "  targetRef: {name: Bad_Name}\n  timeouts: {request: 1s, backendRequest: 2s}\n  retry: {backoff: {base: 25ms, max: 10ms}, codes: [700]}\n  circuitBreaker: {halfOpenRequests: 0, failureRatePercent: 101}\n  routes:\n  - match: {pathPrefix: charge}\n",
        );
        assert_eq!(
            errs,
            [
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
    fn unset_bounds_take_defaults_and_the_set_field_is_blamed() {
        assert_eq!(
            errors("  targetRef: {name: p}\n  retry: {backoff: {base: 2s}}\n"),
            ["spec.retry.backoff.base: must be <= max (1s)"]
        );
        assert_eq!(
            errors("  targetRef: {name: p}\n  circuitBreaker: {maxOpenFor: 10s}\n"),
            ["spec.circuitBreaker.maxOpenFor: must be >= openFor (30s)"]
        );
        assert_eq!(
            errors("  targetRef: {name: p}\n  circuitBreaker: {openFor: 10m}\n"),
            ["spec.circuitBreaker.openFor: must be <= maxOpenFor (5m)"]
        );
    }

    #[test]
    fn routes_are_checked_against_what_they_inherit() {
        let errs = errors(
            "  targetRef: {name: p}\n  timeouts: {request: 1s}\n  retry: {backoff: {max: 100ms}}\n  routes:\n  - match: {pathPrefix: /a}\n    timeouts: {backendRequest: 3s}\n    retry: {backoff: {base: 200ms}}\n",
        );
        assert_eq!(
            errs,
            [
                "spec.routes[0].timeouts.backendRequest: must be <= request (1s)",
                "spec.routes[0].retry.backoff.base: must be <= max (100ms)",
            ]
        );
    }

    #[test]
    fn fields_of_gateway_api_routes_are_refused() {
        let errs = errors(
            "  targetRef: {name: p}\n  exclusiveRoutes: true\n  routes:\n  - match: {pathRegex: '/a.*', queryParams: [{name: q, value: '1'}], headerRegexes: [{name: h, value: x, regex: true}]}\n    backends: [{name: b, namespace: n, port: 80, weight: 1}]\n    requestHeaders: {remove: [x]}\n    responseHeaders: {set: [{name: a, value: b}]}\n    source: HTTPRoute n/r rule 0\n",
        );
        let only =
            "set by HTTPRoute/GRPCRoute only, not by a ResiliencePolicy (see docs/gateway-api.md)";
        let expected: Vec<String> = [
            "spec.routes[0].backends",
            "spec.routes[0].requestHeaders",
            "spec.routes[0].responseHeaders",
            "spec.routes[0].source",
            "spec.routes[0].match.pathRegex",
            "spec.routes[0].match.queryParams",
            "spec.routes[0].match.headerRegexes",
            "spec.exclusiveRoutes",
        ]
        .iter()
        .map(|field| format!("{field}: {only}"))
        .collect();
        assert_eq!(errs, expected);
    }

    #[test]
    fn zero_request_timeout_is_no_limit() {
        assert_eq!(
            errors("  targetRef: {name: p}\n  timeouts: {request: 0s, backendRequest: 2s}\n"),
            Vec::<String>::new()
        );
    }

    #[test]
    fn route_rules() {
        let errs = errors(
            "  targetRef: {name: p}\n  routes:\n  - name: a\n    match: {pathPrefix: /a, pathExact: /a, method: post, headers: [{name: 'bad name', value: x}]}\n  - name: a\n    match: {pathExact: a}\n",
        );
        assert_eq!(
            errs,
            [
                "spec.routes[0].match: set pathPrefix or pathExact, not both",
                "spec.routes[0].match.method: must be an uppercase HTTP method such as GET, got \"post\"",
                "spec.routes[0].match.headers[0].name: must be an HTTP header name, got \"bad name\"",
                "spec.routes[1].name: repeats route name \"a\"",
                "spec.routes[1].match.pathExact: must start with \"/\"",
            ]
        );
        let errs = errors(
            "  targetRef: {name: p}\n  routes:\n  - match: {grpc: {service: pkg.Svc, method: Get}}\n  - match: {grpc: {}, method: POST}\n  - match: {pathPrefix: /pkg.Svc, method: GET, grpc: {service: pkg..Svc, method: a/b}}\n",
        );
        assert_eq!(
            errs,
            [
                "spec.routes[2].match.grpc: set grpc or a path match, not both",
                "spec.routes[2].match.method: gRPC calls are POSTs: method must be POST or unset with grpc",
                "spec.routes[2].match.grpc.service: must be a fully qualified service name such as helloworld.Greeter, got \"pkg..Svc\"",
                "spec.routes[2].match.grpc.method: must be a method name such as SayHello, got \"a/b\"",
            ]
        );
        let errs = errors(
            "  targetRef: {name: p}\n  routes:\n  - name: Charge\n    match: {}\n  - name: default\n    match: {}\n  - name: route-3\n    match: {}\n  - name: route-x\n    match: {}\n",
        );
        assert_eq!(
            errs,
            [
                "spec.routes[0].name: must be a DNS-1123 label (lowercase letters, digits and '-', at most 63), got \"Charge\"",
                "spec.routes[1].name: \"default\" is reserved: requests no route matches are labelled default, unnamed routes route-<index>",
                "spec.routes[2].name: \"route-3\" is reserved: requests no route matches are labelled default, unnamed routes route-<index>",
            ]
        );
        let many = "  - match: {}\n".repeat(65);
        assert_eq!(
            errors(&format!("  targetRef: {{name: p}}\n  routes:\n{many}")),
            ["spec.routes: must hold at most 64 routes, got 65"]
        );
    }

    #[test]
    fn numeric_bounds() {
        let body = "x".repeat(4097);
        let errs = errors(&format!(
            "  targetRef: {{group: apps, kind: Deployment, name: p, port: 0}}
  timeouts: {{connect: 0s}}
  retry:
    attempts: 11
    on: [reset, reset]
    grpcCodes: [unavailable, cancelled, unavailable]
    backoff: {{base: 0s}}
    budget: {{percent: 101, interval: 0s, minRetryRate: {{count: 1, interval: 0s}}}}
    maxBufferedBodyBytes: 16777217
  circuitBreaker:
    minimumRequests: 0
    window: 11m
    slowCall: {{duration: 0s, ratePercent: 101}}
    openFor: 0s
    fallback: {{status: 199, body: {body}}}
    grpcCodes: [internal, internal]
  outlierDetection: {{consecutiveFailures: 0, baseEjectionTime: 0s, maxEjectionPercent: 101, grpcCodes: [unknown, unknown]}}
  limits: {{maxConcurrentRequests: 0, maxPendingRequests: 0}}
  rateLimit: {{requestsPerSecond: 0, burst: 0}}
"
        ));
        assert_eq!(
            errs,
            [
                "spec.targetRef.group: must be \"\" (core), got \"apps\"",
                "spec.targetRef.kind: must be Service, got \"Deployment\"",
                "spec.targetRef.port: must be between 1 and 65535",
                "spec.timeouts.connect: must be greater than 0s",
                "spec.retry.attempts: must be at most 10, got 11",
                "spec.retry.on[1]: repeats an earlier entry",
                "spec.retry.grpcCodes[2]: repeats an earlier entry",
                "spec.retry.backoff.base: must be greater than 0s",
                "spec.retry.budget.percent: must be between 0 and 100, got 101",
                "spec.retry.budget.interval: must be greater than 0s",
                "spec.retry.budget.minRetryRate.interval: must be greater than 0s",
                "spec.retry.maxBufferedBodyBytes: must be at most 16777216 (16 MiB), got 16777217",
                "spec.circuitBreaker.minimumRequests: must be at least 1",
                "spec.circuitBreaker.window: must be between 1s and 10m, got 11m",
                "spec.circuitBreaker.slowCall.duration: must be greater than 0s",
                "spec.circuitBreaker.slowCall.ratePercent: must be between 0 and 100, got 101",
                "spec.circuitBreaker.openFor: must be greater than 0s",
                "spec.circuitBreaker.fallback.status: must be 200-599, got 199",
                "spec.circuitBreaker.fallback.body: must be at most 4096 bytes, got 4097",
                "spec.circuitBreaker.grpcCodes[1]: repeats an earlier entry",
                "spec.outlierDetection.consecutiveFailures: must be at least 1",
                "spec.outlierDetection.baseEjectionTime: must be greater than 0s",
                "spec.outlierDetection.maxEjectionPercent: must be between 0 and 100, got 101",
                "spec.outlierDetection.grpcCodes[1]: repeats an earlier entry",
                "spec.limits.maxConcurrentRequests: must be at least 1",
                "spec.rateLimit.requestsPerSecond: must be at least 1",
                "spec.rateLimit.burst: must be at least 1",
            ]
        );
    }

    #[test]
    fn a_fallback_content_type_is_a_header_value() {
        assert_eq!(
            errors("  targetRef: {name: p}\n  circuitBreaker: {fallback: {contentType: \"text/plain\\nx: y\"}}\n"),
            ["spec.circuitBreaker.fallback.contentType: must be a header value (visible ASCII, spaces and tabs), at most 256 characters, got \"text/plain\\nx: y\""]
        );
        assert_eq!(
            errors("  targetRef: {name: p}\n  circuitBreaker: {fallback: {contentType: \"text/plain; charset=utf-8\"}}\n"),
            Vec::<String>::new()
        );
    }

    #[test]
    fn a_queue_needs_a_limit() {
        assert_eq!(
            errors("  targetRef: {name: p}\n  limits: {maxPendingRequests: 3, pendingTimeout: 1s}\n"),
            [
                "spec.limits.maxPendingRequests: needs maxConcurrentRequests: without a limit nothing waits",
                "spec.limits.pendingTimeout: needs maxConcurrentRequests: without a limit nothing waits",
            ]
        );
        assert_eq!(
            errors("  targetRef: {name: p}\n  limits: {}\n"),
            Vec::<String>::new()
        );
    }

    /// Fields a route cannot have: per-connection timeouts and a budget of
    /// its own, each refused pointing at where it belongs.
    #[test]
    fn per_service_fields_are_refused_on_routes() {
        let errs = errors(
            "  targetRef: {name: p}\n  routes:\n  - match: {}\n    timeouts: {request: 1s, connect: 0s, idle: 1m}\n    retry: {attempts: 1, budget: {percent: 101}}\n",
        );
        assert_eq!(
            errs,
            [
                "spec.routes[0].timeouts.connect: not allowed on a route: a connection serves every route, so set spec.timeouts.connect",
                "spec.routes[0].timeouts.idle: not allowed on a route: a connection serves every route, so set spec.timeouts.idle",
                "spec.routes[0].retry.budget: not allowed on a route: every route's retries draw on the Service's budget, so set spec.retry.budget",
            ]
        );
        // The same fields in the policy's own sections are fine.
        assert_eq!(
            errors("  targetRef: {name: p}\n  timeouts: {connect: 2s, idle: 1m}\n  retry: {budget: {percent: 5}}\n  routes:\n  - name: charge\n    match: {}\n    retry: {attempts: 1}\n"),
            Vec::<String>::new()
        );
    }
}
