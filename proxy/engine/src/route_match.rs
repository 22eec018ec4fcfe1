//! Which route a request takes: a route's match compiled once per policy
//! generation (regular expressions included), then tested per request. The
//! conditions are those of `spec.routes[].match` and of Gateway API route
//! matches (path Exact / PathPrefix / RegularExpression, method, headers,
//! query parameters, gRPC service and method); every given condition must
//! hold.

use http::{HeaderMap, HeaderName, Method};
use outrigger_api::policy as spec;
use outrigger_http::error_response::is_grpc;

/// The largest compiled regular expression accepted (the `regex` crate's
/// default is 10 MiB; a route's patterns are small, and one policy must
/// not cost every proxy megabytes).
const REGEX_SIZE_LIMIT: usize = 256 * 1024;

/// How a route selects requests (all given conditions must hold).
#[derive(Debug, Clone, PartialEq)]
pub struct RouteMatcher {
    pub path_prefix: Option<String>,
    pub path_exact: Option<String>,
    /// Matches the whole path.
    pub path_regex: Option<Pattern>,
    pub method: Option<Method>,
    /// Exact header values; names lowercase.
    pub headers: Vec<(String, String)>,
    /// Header values matching a pattern.
    pub header_patterns: Vec<(HeaderName, Pattern)>,
    /// Query parameters (compared after percent-decoding; the first of a
    /// repeated name counts).
    pub query: Vec<(String, ValueTest)>,
    pub grpc: Option<GrpcMethod>,
    /// A pattern that did not compile, or a header name that is not one:
    /// the route matches nothing rather than more than it says.
    pub never: bool,
}

/// A regular expression that must match a whole value. Compared by its
/// source, so two compilations of one policy are equal.
#[derive(Debug, Clone)]
pub struct Pattern(regex::Regex);

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_str() == other.0.as_str()
    }
}

impl Pattern {
    /// `source` anchored at both ends; `None` when it does not compile
    /// (within [`REGEX_SIZE_LIMIT`]).
    pub fn whole(source: &str) -> Option<Pattern> {
        regex::RegexBuilder::new(&format!("^(?:{source})$"))
            .size_limit(REGEX_SIZE_LIMIT)
            .build()
            .map(Pattern)
            .map_err(|e| tracing::warn!(pattern = source, error = %e, "route pattern ignored: the route matches nothing"))
            .ok()
    }

    pub fn is_match(&self, value: &str) -> bool {
        self.0.is_match(value)
    }
}

/// What a named value must be.
#[derive(Debug, Clone, PartialEq)]
pub enum ValueTest {
    Exact(String),
    Pattern(Pattern),
}

impl ValueTest {
    fn holds(&self, value: &str) -> bool {
        match self {
            ValueTest::Exact(expected) => expected == value,
            ValueTest::Pattern(pattern) => pattern.is_match(value),
        }
    }
}

/// A gRPC method match: gRPC requests whose path is `/service/method`; an
/// unset part matches any.
#[derive(Debug, Clone, PartialEq)]
pub struct GrpcMethod {
    pub service: Option<String>,
    pub method: Option<String>,
}

impl GrpcMethod {
    pub fn matches(&self, path: &str, headers: &HeaderMap) -> bool {
        let Some((service, method)) = path.strip_prefix('/').and_then(|rest| rest.split_once('/'))
        else {
            return false;
        };
        is_grpc(headers)
            && !method.contains('/')
            && self.service.as_deref().is_none_or(|s| s == service)
            && self.method.as_deref().is_none_or(|m| m == method)
    }
}

impl RouteMatcher {
    /// Compiles a route's match. Validation (or the Gateway API CRDs) keeps
    /// names and patterns well formed; what still fails to compile makes
    /// the route match nothing, logged.
    pub fn compile(m: &spec::RouteMatch) -> RouteMatcher {
        let mut never = false;
        let mut pattern = |source: &str| {
            let compiled = Pattern::whole(source);
            never |= compiled.is_none();
            compiled
        };
        let path_regex = m.path_regex.as_deref().and_then(&mut pattern);
        let header_patterns = m
            .header_regexes
            .iter()
            .filter_map(|h| {
                let name = HeaderName::from_bytes(h.name.as_bytes()).ok();
                Some((name?, pattern(&h.value)?))
            })
            .collect::<Vec<_>>();
        let query = m
            .query_params
            .iter()
            .filter_map(|q| {
                let test = if q.regex {
                    ValueTest::Pattern(pattern(&q.value)?)
                } else {
                    ValueTest::Exact(q.value.clone())
                };
                Some((q.name.clone(), test))
            })
            .collect();
        never |= header_patterns.len() != m.header_regexes.len();
        RouteMatcher {
            path_prefix: m.path_prefix.clone(),
            path_exact: m.path_exact.clone(),
            path_regex,
            // Validation guarantees a token; an unparsable one matches nothing.
            method: m
                .method
                .as_deref()
                .and_then(|s| Method::from_bytes(s.as_bytes()).ok()),
            headers: m
                .headers
                .iter()
                .map(|h| (h.name.to_ascii_lowercase(), h.value.clone()))
                .collect(),
            header_patterns,
            query,
            grpc: m.grpc.as_ref().map(|g| GrpcMethod {
                service: g.service.clone(),
                method: g.method.clone(),
            }),
            never,
        }
    }

    /// Whether a request holds every condition. `target` is the request's
    /// path with its query, if any (`/a/b?x=1`).
    pub fn matches(&self, method: &Method, target: &str, headers: &HeaderMap) -> bool {
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        !self.never
            && self.grpc.as_ref().is_none_or(|g| g.matches(path, headers))
            && self.method.as_ref().is_none_or(|m| m == method)
            && self.path_exact.as_deref().is_none_or(|p| p == path)
            && self
                .path_prefix
                .as_deref()
                .is_none_or(|prefix| path_has_prefix(path, prefix))
            && self.path_regex.as_ref().is_none_or(|p| p.is_match(path))
            && self.headers.iter().all(|(name, value)| {
                headers
                    .get(name.as_str())
                    .is_some_and(|v| v.as_bytes() == value.as_bytes())
            })
            && self.header_patterns.iter().all(|(name, pattern)| {
                headers
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| pattern.is_match(v))
            })
            && self
                .query
                .iter()
                .all(|(name, test)| query_value(query, name).is_some_and(|v| test.holds(&v)))
    }
}

/// The first value of query parameter `name`, percent-decoded.
fn query_value(query: &str, name: &str) -> Option<String> {
    form_urlencoded::parse(query.as_bytes())
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.into_owned())
}

/// Gateway API prefix semantics: `/charge` matches `/charge` and `/charge/x`,
/// not `/charges`.
fn path_has_prefix(path: &str, prefix: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    prefix.is_empty()
        || path == prefix
        || (path.starts_with(prefix) && path.as_bytes().get(prefix.len()) == Some(&b'/'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use outrigger_api::policy::{RouteMatch, ValueMatch};

    fn value(name: &str, value: &str, regex: bool) -> ValueMatch {
        ValueMatch {
            name: name.into(),
            value: value.into(),
            regex,
        }
    }

    fn get(m: &RouteMatcher, target: &str, headers: &[(&str, &str)]) -> bool {
        let mut map = HeaderMap::new();
        for (n, v) in headers {
            map.append(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        m.matches(&Method::GET, target, &map)
    }

    #[test]
    fn query_parameters_match_decoded_and_the_first_of_a_repeat_counts() {
        let m = RouteMatcher::compile(&RouteMatch {
            query_params: vec![value("animal", "whale", false)],
            ..RouteMatch::default()
        });
        assert!(get(&m, "/?animal=whale", &[]));
        assert!(get(&m, "/a/b?x=1&animal=wh%61le", &[]));
        assert!(!get(&m, "/?animal=dolphin&animal=whale", &[]));
        assert!(!get(&m, "/?Animal=whale", &[]), "names are case-sensitive");
        assert!(!get(&m, "/", &[]));
        let pattern = RouteMatcher::compile(&RouteMatch {
            query_params: vec![value("id", "[0-9]+", true)],
            ..RouteMatch::default()
        });
        assert!(get(&pattern, "/?id=42", &[]));
        assert!(!get(&pattern, "/?id=42x", &[]), "the whole value");
    }

    #[test]
    fn path_patterns_match_the_whole_path_without_the_query() {
        let m = RouteMatcher::compile(&RouteMatch {
            path_regex: Some("/items/[0-9]+".into()),
            ..RouteMatch::default()
        });
        assert!(get(&m, "/items/7", &[]));
        assert!(get(&m, "/items/7?x=1", &[]));
        assert!(!get(&m, "/items/7/more", &[]));
        assert!(!get(&m, "/v1/items/7", &[]));
    }

    #[test]
    fn header_patterns_and_exact_headers_combine() {
        let m = RouteMatcher::compile(&RouteMatch {
            headers: vec![outrigger_api::policy::HeaderMatch {
                name: "Version".into(),
                value: "two".into(),
            }],
            header_regexes: vec![value("x-user", "(alice|bob)", true)],
            ..RouteMatch::default()
        });
        assert!(get(&m, "/", &[("version", "two"), ("x-user", "bob")]));
        assert!(!get(&m, "/", &[("version", "two"), ("x-user", "bobby")]));
        assert!(!get(&m, "/", &[("x-user", "bob")]));
    }

    #[test]
    fn a_pattern_that_does_not_compile_matches_nothing() {
        for m in [
            RouteMatch {
                path_regex: Some("(".into()),
                ..RouteMatch::default()
            },
            RouteMatch {
                header_regexes: vec![value("x", "[", true)],
                ..RouteMatch::default()
            },
            RouteMatch {
                header_regexes: vec![value("not a name", ".*", true)],
                ..RouteMatch::default()
            },
            RouteMatch {
                query_params: vec![value("q", "a{99999}{99999}", true)],
                ..RouteMatch::default()
            },
        ] {
            let m = RouteMatcher::compile(&m);
            assert!(m.never, "{m:?}");
            assert!(!get(&m, "/", &[("x", "y")]));
        }
        // An empty match selects everything.
        assert!(get(
            &RouteMatcher::compile(&RouteMatch::default()),
            "/any?q",
            &[]
        ));
    }
}
