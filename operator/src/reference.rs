//! docs/policy-reference.md, generated from the CRD's OpenAPI schema so the
//! reference cannot drift from what the API server enforces.

use kube::CustomResourceExt;
use outrigger_api::policy::ResiliencePolicy;
use serde_json::Value;

pub fn policy_reference() -> String {
    let crd = serde_json::to_value(ResiliencePolicy::crd()).expect("a CRD serializes");
    let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
    let mut out = String::from(
        "# ResiliencePolicy reference\n\n\
         Generated from the CRD schema by `outrigger-operator policy-reference`; do not edit.\n\
         `apiVersion: outrigger.dev/v1alpha1`, `kind: ResiliencePolicy` (short name `rp`), namespaced.\n\
         Durations are Gateway API durations: `250ms`, `5s`, `1m30s`.\n\n\
         | field | type | constraints | description |\n|---|---|---|---|\n",
    );
    walk(&mut out, "spec", schema);
    out.push_str("\n## Cross-field rules (checked by the API server)\n\n");
    rules(&mut out, "spec", schema);
    out.push_str(SEMANTICS);
    out
}

/// What the schema cannot say: where a policy's state lives, and what
/// `mode: DryRun` covers.
const SEMANTICS: &str = "
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
            "| `{field}` | {} | {constraint} | {description} |\n",
            type_of(child)
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
