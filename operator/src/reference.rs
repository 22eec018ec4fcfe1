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
    out
}

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
