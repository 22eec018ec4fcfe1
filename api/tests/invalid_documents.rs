//! Broken policies, each refused with the field's full path: by the parser
//! when the shape is wrong, by validation when a value breaks a rule.

use outrigger_api::manifest::{parse_documents, Document};
use outrigger_api::validate::validate_manifest;

/// A policy named `p` whose spec is `spec` (indented YAML lines).
fn policy(spec: &str) -> String {
    format!(
        "apiVersion: outrigger.dev/v1alpha1\nkind: ResiliencePolicy\nmetadata: {{name: p}}\nspec:\n  targetRef: {{name: p}}\n{spec}"
    )
}

fn parse_error(text: &str) -> String {
    parse_documents(text).unwrap_err().to_string()
}

fn validation_errors(text: &str) -> Vec<String> {
    let Document::Policy(manifest) = parse_documents(text).unwrap().remove(0) else {
        panic!("not a policy")
    };
    match validate_manifest(&manifest) {
        Ok(()) => Vec::new(),
        Err(errors) => errors.to_string().lines().map(str::to_owned).collect(),
    }
}

#[test]
fn shape_errors_name_the_field_and_its_position() {
    let cases = [
        (
            "  retry: {attempts: x}\n",
            "spec.retry.attempts: invalid type: string \"x\", expected u32 at line 6 column 21",
        ),
        (
            "  retry: {attempts: 2, budgett: {}}\n",
            "spec.retry.budgett: unknown field `budgett`, expected one of `attempts`, `codes`, \
             `on`, `backoff`, `budget`, `nonIdempotent`, `maxBufferedBodyBytes`, `grpcCodes` at line 6 column 33",
        ),
        (
            "  timeouts: {request: 1.5s}\n",
            "spec.timeouts.request: invalid duration \"1.5s\": fractions are not allowed; use a \
             smaller unit, as in 1s500ms (write e.g. 250ms, 5s or 1h30m) at line 6 column 23",
        ),
        (
            "  timeouts: {request: 5}\n",
            "spec.timeouts.request: invalid type: integer `5`, expected a Gateway API duration \
             such as 250ms, 5s or 1h30m at line 6 column 23",
        ),
        (
            "  mode: dryRun\n",
            "spec.mode: unknown variant `dryRun`, expected `Enforce` or `DryRun` at line 6 column 9",
        ),
        (
            "  retry:\n    \"on\": [connect-failure, timeout]\n",
            "spec.retry.on[1]: unknown variant `timeout`, expected one of `connect-failure`, \
             `refused-stream`, `reset`, `reset-before-request` at line 7 column 29",
        ),
        (
            "  circuitBreaker: {slowCall: {duration: 2s}}\n",
            "spec.circuitBreaker.slowCall: missing field `ratePercent` at line 6 column 30",
        ),
        (
            "  routes:\n  - match: {pathPrefix: /a}\n  - timeouts: {request: 1s}\n",
            "spec.routes[1]: missing field `match` at line 8 column 5",
        ),
        (
            "  rateLimit: {requestsPerSecond: 100000000000}\n",
            "spec.rateLimit.requestsPerSecond: invalid value: integer `100000000000`, expected \
             u32 at line 6 column 34",
        ),
    ];
    for (spec, expected) in cases {
        assert_eq!(
            parse_error(&policy(spec)),
            format!("document 1 (p): {expected}"),
            "{spec}"
        );
    }
}

#[test]
fn rule_errors_name_the_field() {
    let cases: [(&str, &[&str]); 6] = [
        (
            "  retry: {backoff: {max: 10ms}}\n",
            &["spec.retry.backoff.max: must be >= base (25ms)"],
        ),
        (
            "  routes:\n  - match: {pathPrefix: /a}\n  - match: {pathPrefix: b}\n",
            &["spec.routes[1].match.pathPrefix: must start with \"/\""],
        ),
        (
            "  timeouts: {request: 1s, backendRequest: 2s}\n",
            &["spec.timeouts.backendRequest: must be <= request (1s)"],
        ),
        (
            "  retry: {codes: [503, 99, 600]}\n",
            &[
                "spec.retry.codes[1]: must be an HTTP status 100-599, got 99",
                "spec.retry.codes[2]: must be an HTTP status 100-599, got 600",
            ],
        ),
        (
            "  circuitBreaker: {window: 500ms, halfOpenRequests: 0}\n",
            &[
                "spec.circuitBreaker.window: must be between 1s and 10m, got 500ms",
                "spec.circuitBreaker.halfOpenRequests: must be at least 1",
            ],
        ),
        (
            "  routes:\n  - match: {method: get}\n    retry: {attempts: 11}\n",
            &[
                "spec.routes[0].match.method: must be an uppercase HTTP method such as GET, got \"get\"",
                "spec.routes[0].retry.attempts: must be at most 10, got 11",
            ],
        ),
    ];
    for (spec, expected) in cases {
        assert_eq!(validation_errors(&policy(spec)), expected, "{spec}");
    }
}

#[test]
fn metadata_and_envelope_errors() {
    let text = policy("").replace("{name: p}\nspec", "{name: Payments}\nspec");
    assert_eq!(
        validation_errors(&text),
        ["metadata.name: must be a DNS-1123 subdomain (lowercase letters, digits, '-' and '.')"]
    );
    let text = policy("").replace("outrigger.dev/v1alpha1", "outrigger.dev/v1beta1");
    assert_eq!(
        parse_error(&text),
        "document 1 (p): apiVersion: \"outrigger.dev/v1beta1\" is not served for \
         ResiliencePolicy (use outrigger.dev/v1alpha1)"
    );
}

#[test]
fn a_broken_file_is_a_syntax_error() {
    assert_eq!(
        parse_error("apiVersion: v1\nkind: Service\n  metadata: {}\n"),
        "not valid YAML: mapping values are not allowed in this context at line 3 column 11"
    );
}
