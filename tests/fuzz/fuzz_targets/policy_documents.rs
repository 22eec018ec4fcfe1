//! Policy files as users write them: any text parses to documents or to an
//! error, never a panic. A policy that validates keeps validating once the
//! defaults are filled in, means the same then (what the operator streams is
//! what a file says), and survives the operator → proxy trip (JSON out, JSON
//! in) unchanged — durations included.
#![no_main]

use libfuzzer_sys::fuzz_target;
use outrigger_api::defaults::with_defaults;
use outrigger_api::manifest::{parse_documents, Document};
use outrigger_api::policy::ResiliencePolicySpec;
use outrigger_api::semantics;
use outrigger_api::validate::validate_manifest;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(documents) = parse_documents(text) else {
        return;
    };
    for document in documents {
        let Document::Policy(policy) = document else {
            continue;
        };
        if validate_manifest(&policy).is_err() {
            continue;
        }
        let mut effective = (*policy).clone();
        effective.spec = with_defaults(&policy.spec);
        if let Err(errors) = validate_manifest(&effective) {
            panic!("defaults made a valid policy invalid: {errors}\n{text}");
        }
        assert_eq!(with_defaults(&effective.spec), effective.spec, "not idempotent");
        assert_eq!(
            semantics::effective(&effective.spec),
            semantics::effective(&policy.spec),
            "the streamed spec means something else than the file's"
        );
        let wire = serde_json::to_string(&effective.spec).expect("a spec serializes");
        let back: ResiliencePolicySpec =
            serde_json::from_str(&wire).unwrap_or_else(|e| panic!("{e}: {wire}"));
        assert_eq!(back, effective.spec, "the JSON trip changed the policy");
    }
});
