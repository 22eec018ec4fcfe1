//! One HTTPRoute/GRPCRoute's rules as the policy model's routes: one
//! [`Route`] per (rule, match), with its timeouts, retry, header modifiers
//! and weighted backends. A field Outrigger cannot honour makes the whole
//! route unacceptable (Accepted=False, UnsupportedValue), since serving it
//! without that field would do something else than what was written; a
//! backend that cannot be resolved only makes that backend invalid (its
//! share of requests is answered 500), as Gateway API asks.

use gateway_api::experimental::grpcroutes::{
    GrpcRouteRules, GrpcRouteRulesBackendRefsFiltersType, GrpcRouteRulesFiltersType,
    GrpcRouteRulesMatches, GrpcRouteRulesMatchesHeadersType, GrpcRouteRulesMatchesMethodType,
};
use gateway_api::experimental::httproutes::{
    HttpRouteRules, HttpRouteRulesBackendRefsFiltersType, HttpRouteRulesFiltersType,
    HttpRouteRulesMatches, HttpRouteRulesMatchesHeadersType, HttpRouteRulesMatchesMethod,
    HttpRouteRulesMatchesPathType, HttpRouteRulesMatchesQueryParamsType, HttpRouteRulesRetry,
    HttpRouteRulesTimeouts,
};
use serde::Serialize;

use super::{RouteObject, RouteSpec, ServiceLookup, Services};
use crate::defaults;
use crate::duration::Duration;
use crate::policy::{
    Backend, Backoff, GrpcMatch, HeaderMatch, HeaderModifier, Retry, Route, RouteMatch, Timeouts,
    ValueMatch,
};

/// Retries Outrigger makes at most: a policy's retry.attempts' maximum.
const MAX_ATTEMPTS: i64 = crate::validate::MAX_ATTEMPTS as i64;

/// One (rule, match) pair.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct TranslatedMatch {
    pub rule: usize,
    pub index: usize,
    pub route: Route,
}

/// The route's rules, or why it cannot be accepted (UnsupportedValue).
pub(super) fn translate(
    object: &RouteObject,
    services: &dyn Services,
) -> Result<Vec<TranslatedMatch>, String> {
    let mut out = Vec::new();
    match &object.spec {
        RouteSpec::Http(spec) => {
            if spec.rules.as_deref().unwrap_or_default().is_empty() {
                // The CRD's default: one rule matching every request, to the
                // parent Service.
                let rule = HttpRouteRules::default();
                http_rule(object, 0, &rule, services, &mut out)?;
            }
            for (i, rule) in spec.rules.iter().flatten().enumerate() {
                http_rule(object, i, rule, services, &mut out).map_err(|e| at_rule(i, e))?;
            }
        }
        RouteSpec::Grpc(spec) => {
            if spec.rules.as_deref().unwrap_or_default().is_empty() {
                let rule = GrpcRouteRules::default();
                grpc_rule(object, 0, &rule, services, &mut out)?;
            }
            for (i, rule) in spec.rules.iter().flatten().enumerate() {
                grpc_rule(object, i, rule, services, &mut out).map_err(|e| at_rule(i, e))?;
            }
        }
    }
    Ok(out)
}

fn at_rule(index: usize, message: String) -> String {
    format!("rules[{index}]: {message}")
}

/// The fields every match of a rule shares.
fn base_route(object: &RouteObject, index: usize, rule_name: Option<&str>) -> Route {
    let rule = rule_name.map_or_else(|| index.to_string(), str::to_string);
    Route {
        name: Some(format!("{}/{rule}", object.name)),
        source: Some(format!("{} rule {index}", object.label())),
        ..Route::default()
    }
}

fn http_rule(
    object: &RouteObject,
    index: usize,
    rule: &HttpRouteRules,
    services: &dyn Services,
    out: &mut Vec<TranslatedMatch>,
) -> Result<(), String> {
    if rule.session_persistence.is_some() {
        return Err(unsupported_field("sessionPersistence"));
    }
    let mut base = base_route(object, index, rule.name.as_deref());
    for filter in rule.filters.iter().flatten() {
        match filter.r#type {
            HttpRouteRulesFiltersType::RequestHeaderModifier => merge(
                &mut base.request_headers,
                modifier(&filter.request_header_modifier, "requestHeaderModifier")?,
            ),
            HttpRouteRulesFiltersType::ResponseHeaderModifier => merge(
                &mut base.response_headers,
                modifier(&filter.response_header_modifier, "responseHeaderModifier")?,
            ),
            ref other => return Err(unsupported_filter(other)),
        }
    }
    base.timeouts = timeouts(rule.timeouts.as_ref())?;
    base.retry = retry(rule.retry.as_ref())?;
    for (i, backend_ref) in rule.backend_refs.iter().flatten().enumerate() {
        let mut backend = resolve_backend(
            object,
            BackendRef {
                group: backend_ref.group.as_deref(),
                kind: backend_ref.kind.as_deref(),
                name: &backend_ref.name,
                namespace: backend_ref.namespace.as_deref(),
                port: backend_ref.port,
                weight: backend_ref.weight,
            },
            services,
        )
        .map_err(|e| format!("backendRefs[{i}]: {e}"))?
        .0;
        for filter in backend_ref.filters.iter().flatten() {
            match filter.r#type {
                HttpRouteRulesBackendRefsFiltersType::RequestHeaderModifier => merge(
                    &mut backend.request_headers,
                    modifier(&filter.request_header_modifier, "requestHeaderModifier")?,
                ),
                HttpRouteRulesBackendRefsFiltersType::ResponseHeaderModifier => merge(
                    &mut backend.response_headers,
                    modifier(&filter.response_header_modifier, "responseHeaderModifier")?,
                ),
                ref other => {
                    return Err(format!("backendRefs[{i}]: {}", unsupported_filter(other)))
                }
            }
        }
        base.backends.push(backend);
    }
    push_matches(index, &base, rule.matches.as_deref(), http_match, out)
}

fn grpc_rule(
    object: &RouteObject,
    index: usize,
    rule: &GrpcRouteRules,
    services: &dyn Services,
    out: &mut Vec<TranslatedMatch>,
) -> Result<(), String> {
    if rule.session_persistence.is_some() {
        return Err(unsupported_field("sessionPersistence"));
    }
    let mut base = base_route(object, index, rule.name.as_deref());
    for filter in rule.filters.iter().flatten() {
        match filter.r#type {
            GrpcRouteRulesFiltersType::RequestHeaderModifier => merge(
                &mut base.request_headers,
                modifier(&filter.request_header_modifier, "requestHeaderModifier")?,
            ),
            GrpcRouteRulesFiltersType::ResponseHeaderModifier => merge(
                &mut base.response_headers,
                modifier(&filter.response_header_modifier, "responseHeaderModifier")?,
            ),
            ref other => return Err(unsupported_filter(other)),
        }
    }
    for (i, backend_ref) in rule.backend_refs.iter().flatten().enumerate() {
        let mut backend = resolve_backend(
            object,
            BackendRef {
                group: backend_ref.group.as_deref(),
                kind: backend_ref.kind.as_deref(),
                name: &backend_ref.name,
                namespace: backend_ref.namespace.as_deref(),
                port: backend_ref.port,
                weight: backend_ref.weight,
            },
            services,
        )
        .map_err(|e| format!("backendRefs[{i}]: {e}"))?
        .0;
        for filter in backend_ref.filters.iter().flatten() {
            match filter.r#type {
                GrpcRouteRulesBackendRefsFiltersType::RequestHeaderModifier => merge(
                    &mut backend.request_headers,
                    modifier(&filter.request_header_modifier, "requestHeaderModifier")?,
                ),
                GrpcRouteRulesBackendRefsFiltersType::ResponseHeaderModifier => merge(
                    &mut backend.response_headers,
                    modifier(&filter.response_header_modifier, "responseHeaderModifier")?,
                ),
                ref other => {
                    return Err(format!("backendRefs[{i}]: {}", unsupported_filter(other)))
                }
            }
        }
        base.backends.push(backend);
    }
    push_matches(index, &base, rule.matches.as_deref(), grpc_match, out)
}

/// One route per match of rule `index` (none: one that selects every
/// request, as Gateway API defaults it), each `base` with its match.
fn push_matches<M: Default>(
    index: usize,
    base: &Route,
    matches: Option<&[M]>,
    read: fn(&M) -> Result<RouteMatch, String>,
    out: &mut Vec<TranslatedMatch>,
) -> Result<(), String> {
    let default_match = [M::default()];
    let matches = match matches {
        None | Some([]) => &default_match[..],
        Some(matches) => matches,
    };
    for (i, m) in matches.iter().enumerate() {
        let r#match = read(m).map_err(|e| format!("matches[{i}]: {e}"))?;
        out.push(TranslatedMatch {
            rule: index,
            index: i,
            route: Route {
                r#match,
                ..base.clone()
            },
        });
    }
    Ok(())
}

fn http_match(m: &HttpRouteRulesMatches) -> Result<RouteMatch, String> {
    let mut out = RouteMatch::default();
    if let Some(path) = &m.path {
        let value = path.value.clone().unwrap_or_else(|| "/".into());
        match path
            .r#type
            .clone()
            .unwrap_or(HttpRouteRulesMatchesPathType::PathPrefix)
        {
            // "/" selects every path, as no path match does.
            HttpRouteRulesMatchesPathType::PathPrefix if value == "/" => {}
            HttpRouteRulesMatchesPathType::PathPrefix => out.path_prefix = Some(value),
            HttpRouteRulesMatchesPathType::Exact => out.path_exact = Some(value),
            HttpRouteRulesMatchesPathType::RegularExpression => {
                check_regex(&value).map_err(|e| format!("path: {e}"))?;
                out.path_regex = Some(value);
            }
        }
    }
    out.method = m.method.as_ref().map(method_name);
    for (i, h) in m.headers.iter().flatten().enumerate() {
        match h.r#type {
            Some(HttpRouteRulesMatchesHeadersType::RegularExpression) => {
                check_regex(&h.value).map_err(|e| format!("headers[{i}]: {e}"))?;
                out.header_regexes
                    .push(value_match(&h.name, &h.value, true));
            }
            _ => out.headers.push(HeaderMatch {
                name: h.name.clone(),
                value: h.value.clone(),
            }),
        }
    }
    for (i, q) in m.query_params.iter().flatten().enumerate() {
        let regex = matches!(
            q.r#type,
            Some(HttpRouteRulesMatchesQueryParamsType::RegularExpression)
        );
        if regex {
            check_regex(&q.value).map_err(|e| format!("queryParams[{i}]: {e}"))?;
        }
        out.query_params.push(value_match(&q.name, &q.value, regex));
    }
    Ok(out)
}

fn grpc_match(m: &GrpcRouteRulesMatches) -> Result<RouteMatch, String> {
    let mut grpc = GrpcMatch::default();
    if let Some(method) = &m.method {
        if method.r#type == Some(GrpcRouteRulesMatchesMethodType::RegularExpression) {
            return Err("method: type RegularExpression is not supported (Exact only)".into());
        }
        grpc.service = method.service.clone();
        grpc.method = method.method.clone();
    }
    let mut out = RouteMatch {
        grpc: Some(grpc),
        ..RouteMatch::default()
    };
    for (i, h) in m.headers.iter().flatten().enumerate() {
        match h.r#type {
            Some(GrpcRouteRulesMatchesHeadersType::RegularExpression) => {
                check_regex(&h.value).map_err(|e| format!("headers[{i}]: {e}"))?;
                out.header_regexes
                    .push(value_match(&h.name, &h.value, true));
            }
            _ => out.headers.push(HeaderMatch {
                name: h.name.clone(),
                value: h.value.clone(),
            }),
        }
    }
    Ok(out)
}

fn method_name(method: &HttpRouteRulesMatchesMethod) -> String {
    // The crate's wire names are the HTTP methods.
    serde_json::to_value(method)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

fn value_match(name: &str, value: &str, regex: bool) -> ValueMatch {
    ValueMatch {
        name: name.to_string(),
        value: value.to_string(),
        regex,
    }
}

/// The proxy matches with the `regex` crate (RE2 syntax): what it would
/// refuse is refused here, where the route's status can say so.
fn check_regex(pattern: &str) -> Result<(), String> {
    regex::Regex::new(pattern)
        .map(drop)
        .map_err(|e| format!("invalid regular expression {pattern:?}: {e}"))
}

/// A header modifier filter of any of the crate's per-position types: they
/// all serialize as {set, add, remove}, the policy model's shape.
fn modifier<T: Serialize>(value: &Option<T>, field: &str) -> Result<HeaderModifier, String> {
    let value = value
        .as_ref()
        .ok_or_else(|| format!("filter without its {field}"))?;
    serde_json::to_value(value)
        .and_then(serde_json::from_value)
        .map_err(|e| format!("{field}: {e}"))
}

/// Two filters of one type (which the CRD refuses, a file may not) apply
/// in order.
fn merge(into: &mut Option<HeaderModifier>, more: HeaderModifier) {
    match into {
        Some(existing) => {
            existing.set.extend(more.set);
            existing.add.extend(more.add);
            existing.remove.extend(more.remove);
        }
        None => *into = Some(more),
    }
}

fn unsupported_filter(filter_type: &impl Serialize) -> String {
    let name = serde_json::to_value(filter_type)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| "?".into());
    format!(
        "filter {name} is not supported (only RequestHeaderModifier and ResponseHeaderModifier)"
    )
}

fn unsupported_field(field: &str) -> String {
    format!("{field} is not supported")
}

fn duration(field: &str, value: &str) -> Result<Duration, String> {
    Duration::parse(value).map_err(|e| format!("{field}: {e}"))
}

fn timeouts(t: Option<&HttpRouteRulesTimeouts>) -> Result<Option<Timeouts>, String> {
    let Some(t) = t else { return Ok(None) };
    let request = t
        .request
        .as_deref()
        .map(|v| duration("timeouts.request", v))
        .transpose()?;
    let backend_request = t
        .backend_request
        .as_deref()
        .map(|v| duration("timeouts.backendRequest", v))
        .transpose()?;
    if let (Some(request), Some(backend)) = (request, backend_request) {
        // 0s is no limit: any attempt timeout fits in it, and 0s for
        // backendRequest leaves attempts unlimited within request.
        if !request.is_zero() && backend > request {
            return Err("timeouts.backendRequest must be <= request".into());
        }
    }
    if request.is_none() && backend_request.is_none() {
        return Ok(None);
    }
    Ok(Some(Timeouts {
        request,
        backend_request,
        connect: None,
        idle: None,
    }))
}

fn retry(r: Option<&HttpRouteRulesRetry>) -> Result<Option<Retry>, String> {
    let Some(r) = r else { return Ok(None) };
    let attempts = match r.attempts {
        None => None,
        Some(n @ 0..=MAX_ATTEMPTS) => Some(n as u32),
        Some(n) => {
            return Err(format!(
                "retry.attempts: {n} is not supported (0 to {MAX_ATTEMPTS})"
            ))
        }
    };
    let codes = r
        .codes
        .as_ref()
        .map(|codes| {
            codes
                .iter()
                .map(|&c| match u16::try_from(c) {
                    Ok(code @ 100..=599) => Ok(code),
                    _ => Err(format!("retry.codes: {c} is not an HTTP status")),
                })
                .collect::<Result<Vec<u16>, String>>()
        })
        .transpose()?;
    let backoff = match r.backoff.as_deref() {
        None => None,
        Some(v) => {
            let base = duration("retry.backoff", v)?;
            if base.is_zero() {
                return Err("retry.backoff: 0s is not supported (more than 0s)".into());
            }
            let max = base.max(Duration::from_millis(defaults::BACKOFF_MAX_MS));
            Some(Backoff {
                base: Some(base),
                max: Some(max),
            })
        }
    };
    Ok(Some(Retry {
        attempts,
        codes,
        backoff,
        ..Retry::default()
    }))
}

/// A backendRef, whichever route kind it comes from.
struct BackendRef<'a> {
    group: Option<&'a str>,
    kind: Option<&'a str>,
    name: &'a str,
    namespace: Option<&'a str>,
    port: Option<i32>,
    weight: Option<i32>,
}

/// Why a backend cannot be used: the ResolvedRefs reason and a message.
pub(super) type Unresolved = (&'static str, String);

/// Every backendRef of the route that cannot be used: (ResolvedRefs
/// reason, message). Read apart from [`translate`], so a route that is not
/// accepted still reports its references.
pub(super) fn unresolved(object: &RouteObject, services: &dyn Services) -> Vec<Unresolved> {
    let refs: Vec<BackendRef<'_>> = match &object.spec {
        RouteSpec::Http(spec) => spec
            .rules
            .iter()
            .flatten()
            .flat_map(|rule| rule.backend_refs.iter().flatten())
            .map(|b| BackendRef {
                group: b.group.as_deref(),
                kind: b.kind.as_deref(),
                name: &b.name,
                namespace: b.namespace.as_deref(),
                port: b.port,
                weight: b.weight,
            })
            .collect(),
        RouteSpec::Grpc(spec) => spec
            .rules
            .iter()
            .flatten()
            .flat_map(|rule| rule.backend_refs.iter().flatten())
            .map(|b| BackendRef {
                group: b.group.as_deref(),
                kind: b.kind.as_deref(),
                name: &b.name,
                namespace: b.namespace.as_deref(),
                port: b.port,
                weight: b.weight,
            })
            .collect(),
    };
    refs.into_iter()
        .filter_map(|r| resolve_backend(object, r, services).ok())
        .filter_map(|(_, problem)| problem)
        .collect()
}

/// The backend, `invalid` when it cannot be used, with the ResolvedRefs
/// reason; an error only for values no route may carry.
fn resolve_backend(
    object: &RouteObject,
    r: BackendRef<'_>,
    services: &dyn Services,
) -> Result<(Backend, Option<Unresolved>), String> {
    let namespace = r.namespace.unwrap_or(&object.namespace).to_string();
    let weight = match r.weight {
        None => 1,
        Some(w) => u32::try_from(w).map_err(|_| format!("weight {w} is negative"))?,
    };
    let port = match r.port {
        None => None,
        Some(p) => Some(u16::try_from(p).map_err(|_| format!("port {p} is out of range"))?),
    };
    let mut backend = Backend {
        name: r.name.to_string(),
        namespace: namespace.clone(),
        port: port.unwrap_or(0),
        weight,
        ..Backend::default()
    };
    let group = r.group.unwrap_or("");
    let kind = r.kind.unwrap_or("Service");
    let problem: Option<Unresolved> = if !matches!(group, "" | "core") || kind != "Service" {
        Some((
            "InvalidKind",
            format!(
                "backendRef {}: kind {kind} of group {group:?} is not supported (Service only)",
                r.name
            ),
        ))
    } else if namespace != object.namespace {
        Some((
            "RefNotPermitted",
            format!(
                "backendRef {namespace}/{}: a Service in another namespace needs a ReferenceGrant, which is not supported yet",
                r.name
            ),
        ))
    } else if port.is_none() {
        Some((
            "BackendNotFound",
            format!("backendRef {}: port is required for a Service", r.name),
        ))
    } else {
        let port = port.unwrap_or(0);
        match services.lookup(&namespace, r.name) {
            ServiceLookup::Unknown => None,
            ServiceLookup::NotFound => Some((
                "BackendNotFound",
                format!("backendRef {namespace}/{}: no such Service", r.name),
            )),
            ServiceLookup::Ports(ports) if ports.iter().any(|p| p.port == port) => None,
            ServiceLookup::Ports(_) => Some((
                "BackendNotFound",
                format!(
                    "backendRef {namespace}/{}: the Service has no port {port}",
                    r.name
                ),
            )),
        }
    };
    backend.invalid = problem.as_ref().map(|(_, message)| message.clone());
    Ok((backend, problem))
}
