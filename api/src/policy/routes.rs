use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Retry, Timeouts};

/// Overrides for the requests a match selects.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "!has(self.timeouts) || !has(self.timeouts.connect)",
     "message": "not allowed on a route: a connection serves every route, so set spec.timeouts.connect",
     "fieldPath": ".timeouts.connect"},
    {"rule": "!has(self.timeouts) || !has(self.timeouts.idle)",
     "message": "not allowed on a route: a connection serves every route, so set spec.timeouts.idle",
     "fieldPath": ".timeouts.idle"},
    {"rule": "!has(self.retry) || !has(self.retry.budget)",
     "message": "not allowed on a route: every route's retries draw on the Service's budget, so set spec.retry.budget",
     "fieldPath": ".retry.budget"},
    {"rule": "!has(self.name) || (self.name != 'default' && !self.name.matches('^route-[0-9]+$'))",
     "message": "default and route-<n> are reserved: requests no route matches are labelled default, unnamed routes route-<index>",
     "fieldPath": ".name"}
]))]
pub struct Route {
    /// Names the route: the `route` label of its requests, retries and
    /// timeouts in metrics, and the route field of the access log. A
    /// DNS-1123 label, unique within the policy; not `default` (requests no
    /// route matches) or `route-<n>`. Default route-<index>.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: Option<String>,
    /// Which requests the route applies to.
    #[serde(rename = "match")]
    pub r#match: RouteMatch,
    /// request and backendRequest for this route; unset ones inherit the
    /// policy's. Not connect or idle (a connection serves every route: set
    /// them in spec.timeouts). Default: the policy's timeouts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<Timeouts>,
    /// Retry for this route; unset fields inherit the policy's retry, and
    /// {attempts: 0} turns retries off. Not budget: every route's retries
    /// draw on the Service's budget (spec.retry.budget, or the default
    /// budget when spec.retry sets none). Default: the policy's retry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<Retry>,
    /// Where the requests go, when a Gateway API route (HTTPRoute or
    /// GRPCRoute rule) says so: one backend picked per request by weight.
    /// Empty: the Service the policy targets. Not part of the CRD (Gateway
    /// API routes are where users write it); the operator and file mode
    /// fill it in from attached routes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(skip)]
    pub backends: Vec<Backend>,
    /// Request headers changed before the request goes upstream
    /// (RequestHeaderModifier). Gateway API routes only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(skip)]
    pub request_headers: Option<HeaderModifier>,
    /// Response headers changed before the response goes back
    /// (ResponseHeaderModifier). Gateway API routes only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(skip)]
    pub response_headers: Option<HeaderModifier>,
    /// What the route came from, for `/view`, status and logs, such as
    /// `HTTPRoute shop/checkout rule 0`. Gateway API routes only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(skip)]
    pub source: Option<String>,
}

/// One of a route's backends: a Service port and its share of the requests.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Backend {
    /// The Service's name.
    pub name: String,
    /// The Service's namespace.
    pub namespace: String,
    /// The Service port.
    pub port: u16,
    /// Its share: weight / sum of the route's weights. 0 never receives
    /// requests.
    pub weight: u32,
    /// Set when the backend cannot be used (no such Service, a kind other
    /// than Service, a port the Service does not have): requests that pick
    /// it are answered 500, as Gateway API asks, so a broken reference
    /// never sends its share elsewhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invalid: Option<String>,
    /// Request headers changed for this backend only, after the route's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_headers: Option<HeaderModifier>,
    /// Response headers changed for this backend only, after the route's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_headers: Option<HeaderModifier>,
}

/// Header changes, in Gateway API's order: set (replace), add (append),
/// remove.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderModifier {
    /// Headers given exactly this value, replacing any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub set: Vec<HeaderValue>,
    /// Values appended to a header (a new header when absent).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub add: Vec<HeaderValue>,
    /// Headers removed, by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

/// A header name and a value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderValue {
    /// Header name.
    pub name: String,
    /// Header value.
    pub value: String,
}

/// Conditions a request must all meet; an empty match selects every request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "!(has(self.pathPrefix) && has(self.pathExact))", "message": "set pathPrefix or pathExact, not both"},
    {"rule": "!has(self.grpc) || !(has(self.pathPrefix) || has(self.pathExact))",
     "message": "set grpc or a path match, not both", "fieldPath": ".grpc"},
    {"rule": "!has(self.grpc) || !has(self.method) || self.method == 'POST'",
     "message": "gRPC calls are POSTs: method must be POST or unset with grpc", "fieldPath": ".method"}
]))]
pub struct RouteMatch {
    /// Path prefix, by whole segments: /charge matches /charge and /charge/1,
    /// not /charges. Starts with "/". Default: any path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024), regex(pattern = r"^/"))]
    pub path_prefix: Option<String>,
    /// Exact path, starting with "/"; not with pathPrefix. Default: any path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024), regex(pattern = r"^/"))]
    pub path_exact: Option<String>,
    /// HTTP method, uppercase, such as GET or POST. Default: any method.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[A-Z0-9!#$%&'*+.^_`|~-]+$"))]
    pub method: Option<String>,
    /// Headers the request must carry with exactly these values. Default: none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub headers: Vec<HeaderMatch>,
    /// A gRPC method: selects gRPC requests (content-type application/grpc
    /// or application/grpc+...) to /service/method; {} selects every gRPC
    /// call. Not with pathPrefix or pathExact. Default: any request, gRPC or
    /// not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc: Option<GrpcMatch>,
    /// A regular expression (RE2 syntax, the `regex` crate's) the whole
    /// path must match. Gateway API routes only (path type
    /// RegularExpression).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(skip)]
    pub path_regex: Option<String>,
    /// Query parameters the request must carry (Gateway API routes only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(skip)]
    pub query_params: Vec<ValueMatch>,
    /// Headers whose value must match a regular expression (Gateway API
    /// routes only: header match type RegularExpression).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(skip)]
    pub header_regexes: Vec<ValueMatch>,
}

/// A named value (a query parameter, a header) and what it must be.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ValueMatch {
    /// The name: a query parameter's compared exactly, a header's
    /// case-insensitively.
    pub name: String,
    /// The exact value, or with `regex` a regular expression the whole
    /// value must match.
    pub value: String,
    /// `value` is a regular expression.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub regex: bool,
}

/// A gRPC method, as named in a call's path /package.Service/Method. An unset
/// part matches any.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GrpcMatch {
    /// The fully qualified service, package included, such as
    /// helloworld.Greeter; compared exactly. Default: any service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 1024),
        regex(pattern = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
    )]
    pub service: Option<String>,
    /// The method, such as SayHello; compared exactly. Default: any method.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 1024),
        regex(pattern = r"^[A-Za-z_][A-Za-z0-9_]*$")
    )]
    pub method: Option<String>,
}

/// A request header and the exact value it must have.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderMatch {
    /// Header name (an HTTP token), compared case-insensitively.
    #[schemars(
        length(min = 1, max = 256),
        regex(pattern = r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")
    )]
    pub name: String,
    /// The value, compared exactly.
    #[schemars(length(max = 4096))]
    pub value: String,
}
