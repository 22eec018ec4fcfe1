//! docs/policy-reference.md, generated from the CRD's OpenAPI schema so the
//! reference cannot drift from what the API server enforces.

use kube::CustomResourceExt;
use outrigger_api::policy::ResiliencePolicy;
use outrigger_api::semantics;
use serde_json::Value;

/// How a policy applies, the same whether the operator streams it to the
/// proxies or a proxy reads it from `--policy` (`outrigger_api::semantics`).
const SEMANTICS: &str = "\
## How a policy applies (the same in both modes)

A policy means the same whether the operator compiles it and streams it to the
proxies or a proxy reads it from its `--policy` file: both go through one
layer, `outrigger_api::semantics`, and a test compiles every example and
generated policies both ways and compares the result field by field.

- **Which policy.** A policy applies to calls to its Service (`targetRef.name`,
  in the policy's own namespace) on `targetRef.port`, or, without a port, on
  every port no port-specific policy names. Two policies on the same Service
  and port (or both without one): the oldest wins (`creationTimestamp`; a
  policy without one, as in a file, counts as oldest), then the first by
  namespace/name. The operator marks the other `Accepted=False`, reason
  `Conflicted`; a proxy reading a file logs a warning naming both and counts it
  in `outrigger_policy_conflicts`. Inbound, the Service port is the one whose
  `targetPort` (a number, or a name the EndpointSlice resolves) is the pod port
  the traffic arrived at (in a file, when it holds the Service; a proxy
  started with `--service-name` and a control plane gets the policy of the
  Service's first port).
- **Defaults.** Each field's default (the *Default* in its description)
  applies where it is unset; routes inherit `request`, `backendRequest` and
  every retry field from the policy. Timeouts apply even without a `timeouts`
  section: a policy gives calls a 15s request timeout and a 1s connect
  timeout whatever the proxy's flags. Without any policy a proxy just
  forwards: its own `--connect-timeout` and `--pool-idle-timeout`, no request
  timeout, no retries.
- **Budget.** Every retry is under a budget: one per Service, from
  `spec.retry.budget` or the default budget (also when only routes retry),
  shared by all routes.
- **Routes.** The first route whose match holds applies. Its name (else
  `route-<index>`; `default` for requests no route matches) labels
  `outrigger_requests_total`, `outrigger_request_duration_seconds`,
  `outrigger_retries_total`, `outrigger_retries_skipped_total` and
  `outrigger_timeouts_total` as `route`, and is the access log's `route`.
- **Invalid policies.** Nothing accepted is ignored: a field that cannot act
  where it is written is refused. The API server refuses an invalid policy
  (the schema and the rules at the end); one the operator sees anyway is
  `Accepted=False`, reason `Invalid`, with every error, and applies nowhere; a
  policy file with an invalid policy is refused whole, and the proxy keeps the
  last good file.
- **Enforced by** (column below): `caller` is the calling pod's proxy
  (outbound), `server` each of the Service's pods' proxies (inbound), `both`
  each proxy for its own connections (`connect`, `idle`) or decisions
  (`mode`), `selection` decides which policy applies. A call through two
  proxies meets each field once: a failed call is retried `attempts` times in
  all, not `attempts` × `attempts`.

";

pub fn policy_reference() -> String {
    let crd = serde_json::to_value(ResiliencePolicy::crd()).expect("a CRD serializes");
    let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
    let mut out = String::from(
        "# ResiliencePolicy reference\n\n\
         Generated from the CRD schema by `outrigger-operator policy-reference`; do not edit.\n\
         `apiVersion: outrigger.dev/v1alpha1`, `kind: ResiliencePolicy` (short name `rp`), namespaced.\n\
         Durations are Gateway API durations: `250ms`, `5s`, `1m30s`.\n\n",
    );
    out.push_str(SEMANTICS);
    out.push_str(
        "## Fields\n\n\
         | field | type | constraints | enforced by | description |\n|---|---|---|---|---|\n",
    );
    walk(&mut out, "spec", schema);
    out.push_str("\n## Cross-field rules (checked by the API server)\n\n");
    rules(&mut out, "spec", schema);
    out.push_str(STATE);
    out.push_str(GRPC);
    out
}

/// What the schema cannot say: where a policy's state lives, and what
/// `mode: DryRun` covers.
const STATE: &str = "
## Where a policy's state lives

Each proxy keeps one state per Service port a policy applies to: one circuit
breaker, retry budget, outlier detector and set of latency estimates in each
calling pod's proxy, one concurrency limit and rate-limit bucket in each of
the Service's pods' proxies. Metrics name it in their `destination` label.

- Outbound (calling side), every way of reaching the Service port is the same
  state: `web`, `web.shop`, `web.shop.svc`, `web.shop.svc.cluster.local`
  and, with the control plane, its ClusterIP. The label is the canonical
  `web.shop.svc.cluster.local:80`. A destination that is not a known Service
  (an external host) has a state of its own, named by the address connected
  to; the number of such labels is capped (`--max-destination-labels`, then
  `other`).
- Inbound (the Service's pods), the state belongs to the pod's own Service and
  the port traffic came to. The request's Host header never selects it: a
  client cannot get a fresh rate-limit bucket, another policy or another
  metric series by changing it.
- WebSocket upgrades and CONNECT tunnels pass the same rate limit and
  concurrency limit as plain requests, and hold their concurrency slot while
  open.
- State survives policy edits that leave its parameters unchanged, and
  endpoints that stay in a changing endpoint set keep their ejection, failure
  streak and latency estimate.

## DryRun

`mode: DryRun` lets everything through and counts what Enforce would have
done in `outrigger_dry_run_would_reject_total{reason}`:

| field | reason | counted when |
|---|---|---|
| `rateLimit` | `rate-limited` | a request finds the bucket empty |
| `limits` | `queue-full`, `pending-timeout` | a request would be shed |
| `circuitBreaker` | `circuit-open` | an attempt meets an open (or full half-open) breaker |
| `retry.budget` | `budget-exhausted` | a retry exceeds the budget (it is sent) |
| `outlierDetection` | `outlier-ejected` | an attempt goes to an ejected endpoint while another is available |

The breaker and the outlier detector run as under Enforce, so
`outrigger_circuit_state`, `outrigger_circuit_transitions_total`,
`outrigger_ejections_total` and `outrigger_ejected_endpoints` show what
Enforce would do; each DryRun ejection is also logged. Timeouts and retries
act under DryRun as under Enforce.
";

/// How the fields above apply to gRPC calls (not in the schema).
const GRPC: &str = "
## gRPC

A request is gRPC when its content-type is `application/grpc` or
`application/grpc+...`; gRPC errors travel as HTTP 200 responses with a
`grpc-status`, so these rules read that instead of the HTTP status.

- `retry.grpcCodes` (default `[unavailable]`): a status is retried only
  while nothing of the response reached the client, that is from a
  trailers-only response (`grpc-status` in the headers, as servers answer
  a call that fails before any message). A status in trailers after the
  response began is passed on as it is. gRPC calls are POSTs: a call the
  server answered is replayed only under `nonIdempotent: Always` (or
  `IfIdempotencyKey` with an `Idempotency-Key` header), typically on a route
  matching the idempotent methods; a call that never reached a server
  (`retry.on`) is retried whatever the method. Replaying needs the request
  body buffered (`maxBufferedBodyBytes`).
- `circuitBreaker.grpcCodes` and `outlierDetection.grpcCodes` (default
  `[unavailable, internal, unknown, deadline-exceeded]`): a response with
  one of these codes is a failure, as a 5xx is, whether the code came in a
  trailers-only response or in trailers after the headers. A call whose
  response delivered a message first is a success (a stream that serves and
  later fails is the app's business, and a long stream does not hold a
  half-open probe); a body reset before either is a connection error, and
  one the client dropped first counts for nothing (its probe is released).
- Deadlines: a gRPC request's `grpc-timeout` header shortens the call's
  deadline (`timeouts.request`, or none on a route with `request: 0s`) and
  never lengthens it, on both the caller's and the server's proxy. The
  request leaves each proxy with `grpc-timeout` set to what is left of the
  deadline when each attempt is sent, so deadlines shrink hop by hop; a
  request that came without `grpc-timeout` gets none. A call past its
  deadline is answered with `grpc-status: 4` (DEADLINE_EXCEEDED); other
  errors the proxy answers take the gRPC form too (trailers-only, with
  `grpc-status` and `x-outrigger-error`).
- Streaming calls (server, client and bidirectional) pass through as they
  are, message by message. A response is never retried once it has begun
  (a status in trailers), and a request is replayed only if its body could
  be kept for it (`maxBufferedBodyBytes`). The request and per-try timeouts
  run until the response headers, which a quiet server stream may send
  late, and `timeouts.idle` cuts a stream silent in both directions for that
  long: give long-lived streams a route with `timeouts: {request: 0s,
  backendRequest: 0s}` and an idle timeout longer than their quiet spells.
- `routes[].match.grpc` selects gRPC calls by `service` (fully qualified,
  `package.Service`) and `method`, read from the path `/package.Service/Method`;
  either may be left out, and `grpc: {}` selects every gRPC call.
";

fn type_of(schema: &Value) -> String {
    match schema["type"].as_str() {
        Some("array") => format!("[]{}", type_of(&schema["items"])),
        Some(t) if schema.get("enum").is_some() => {
            let values: Vec<String> = schema["enum"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str().map(|s| format!("`{s}`")))
                .collect();
            format!("{t}: {}", values.join(", "))
        }
        Some(t) => t.to_string(),
        None => "object".into(),
    }
}

fn constraints(schema: &Value) -> String {
    let mut parts = Vec::new();
    if let Some(min) = schema["minimum"].as_f64() {
        parts.push(format!("≥ {min}"));
    }
    if let Some(max) = schema["maximum"].as_f64() {
        parts.push(format!("≤ {max}"));
    }
    if let Some(max) = schema["maxItems"].as_u64() {
        parts.push(format!("at most {max} items"));
    }
    if let Some(max) = schema["maxLength"].as_u64() {
        parts.push(format!("at most {max} characters"));
    }
    if let Some(pattern) = schema["pattern"].as_str() {
        parts.push(format!("matches `{}`", pattern.replace('|', "\\|")));
    }
    parts.join("; ")
}

fn walk(out: &mut String, path: &str, schema: &Value) {
    let Some(properties) = schema["properties"].as_object() else {
        return;
    };
    let required: Vec<&str> = schema["required"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str())
        .collect();
    for (name, child) in properties {
        let field = format!("{path}.{name}");
        let refused = semantics::NOT_ON_ROUTES
            .iter()
            .find(|(f, _, _)| field == format!("spec.routes[].{f}"));
        if let Some((_, why, instead)) = refused {
            out.push_str(&format!(
                "| `{field}` | {} | refused | — | Not allowed on a route: {why}; set `{instead}`. |\n",
                type_of(child)
            ));
            continue;
        }
        let description = child["description"]
            .as_str()
            .unwrap_or("")
            .replace('\n', " ")
            .replace('|', "\\|");
        let mut constraint = constraints(child);
        if required.contains(&name.as_str()) {
            constraint = if constraint.is_empty() {
                "required".into()
            } else {
                format!("required; {constraint}")
            };
        }
        out.push_str(&format!(
            "| `{field}` | {} | {constraint} | {} | {description} |\n",
            type_of(child),
            semantics::enforced_by(&field).as_str(),
        ));
        walk(out, &field, child);
        if child["type"] == "array" {
            walk(out, &format!("{field}[]"), &child["items"]);
        }
    }
}

fn rules(out: &mut String, path: &str, schema: &Value) {
    for rule in schema["x-kubernetes-validations"]
        .as_array()
        .into_iter()
        .flatten()
    {
        out.push_str(&format!(
            "- `{path}`: {} (`{}`)\n",
            rule["message"].as_str().unwrap_or(""),
            rule["rule"].as_str().unwrap_or("")
        ));
    }
    for (name, child) in schema["properties"].as_object().into_iter().flatten() {
        let field = format!("{path}.{name}");
        rules(out, &field, child);
        if child["type"] == "array" {
            rules(out, &format!("{field}[]"), &child["items"]);
        }
    }
}
