//! Property-based fuzzing of the policy parser and validator (run in CI with a
//! bounded case count; `PROPTEST_CASES` raises it). Failures proptest finds
//! are saved under proptest-regressions/ and replayed first on every run.

use outrigger_api::duration::Duration;
use outrigger_api::manifest::{parse_documents, Document};
use outrigger_api::validate::validate_manifest;
use proptest::prelude::*;

proptest! {
    /// Any text: an error or documents, never a panic.
    #[test]
    fn arbitrary_text_never_panics(text in ".{0,400}") {
        let _ = parse_documents(&text);
    }

    /// Any duration-looking string parses or is refused; what parses prints
    /// back to the same length of time.
    #[test]
    fn durations_round_trip(text in "[0-9hms]{0,14}") {
        if let Ok(d) = Duration::parse(&text) {
            let again = Duration::parse(&d.to_string()).unwrap();
            prop_assert_eq!(d, again);
        }
    }

    /// Every valid duration (each unit 0-99999) prints in a form that parses
    /// back to it — what the operator serializes, the proxy must read.
    #[test]
    fn valid_durations_round_trip(h in 0u64..100_000, m in 0u64..100_000, s in 0u64..100_000, ms in 0u64..100_000) {
        let d = Duration::parse(&format!("{h}h{m}m{s}s{ms}ms")).unwrap();
        let again = Duration::parse(&d.to_string()).unwrap();
        prop_assert_eq!(d, again);
    }

    /// Structurally plausible policies with arbitrary values: parse and
    /// validate without panicking, and every error names a spec field.
    #[test]
    fn plausible_policies_validate_without_panics(
        attempts in any::<i64>(),
        percent in any::<i64>(),
        base in "[0-9]{1,6}(ms|s|m|h|d)?",
        max in "[0-9]{1,6}(ms|s|m|h)",
        code in any::<i32>(),
        prefix in "[ -~]{0,12}",
        method in "[A-Za-z]{0,8}",
        half_open in any::<i64>(),
    ) {
        let yaml = format!(
            "apiVersion: outrigger.dev/v1alpha1\nkind: ResiliencePolicy\nmetadata: {{name: p}}\nspec:\n  targetRef: {{name: p}}\n  retry: {{attempts: {attempts}, codes: [{code}], backoff: {{base: \"{base}\", max: \"{max}\"}}, budget: {{percent: {percent}}}}}\n  circuitBreaker: {{halfOpenRequests: {half_open}}}\n  routes:\n  - match: {{pathPrefix: {prefix:?}, method: {method:?}}}\n"
        );
        if let Ok(documents) = parse_documents(&yaml) {
            for document in documents {
                if let Document::Policy(policy) = document {
                    if let Err(errors) = validate_manifest(&policy) {
                        for error in errors.0 {
                            prop_assert!(error.path.starts_with("spec.") || error.path.starts_with("metadata."), "{}", error.path);
                        }
                    }
                }
            }
        }
    }
}
