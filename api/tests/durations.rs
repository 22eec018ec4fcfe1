//! Gateway API durations at the edges of the format.

use outrigger_api::duration::{Duration, PATTERN};

fn millis(text: &str) -> u64 {
    Duration::parse(text).unwrap().as_millis()
}

fn refusal(text: &str) -> String {
    Duration::parse(text).unwrap_err().to_string()
}

#[test]
fn accepted_forms() {
    assert_eq!(millis("1h30m"), 5_400_000);
    assert_eq!(millis("0s"), 0);
    assert_eq!(millis("0h0m0s0ms"), 0);
    assert_eq!(millis("99999s"), 99_999_000);
    assert_eq!(millis("1h1m1s1ms"), 3_661_001);
    assert_eq!(millis("00005s"), 5_000);
}

#[test]
fn refused_forms_say_why() {
    let cases = [
        ("100000s", "100000 has more than 5 digits"),
        (
            "1m1h",
            "each unit may appear once, in the order h, m, s, ms",
        ),
        (
            "1ms1s",
            "each unit may appear once, in the order h, m, s, ms",
        ),
        (
            "1.5s",
            "fractions are not allowed; use a smaller unit, as in 1s500ms",
        ),
        ("", "empty"),
        ("1", "1 has no unit; use h, m, s or ms"),
        ("1us", "unknown unit \"us\"; use h, m, s or ms"),
        ("s", "expected a number at \"s\""),
        ("+1s", "expected a number at \"+1s\""),
    ];
    for (text, reason) in cases {
        assert_eq!(
            refusal(text),
            format!("invalid duration {text:?}: {reason} (write e.g. 250ms, 5s or 1h30m)")
        );
    }
}

#[test]
fn display_is_canonical_and_parses_back() {
    for (text, canonical) in [
        ("1500ms", "1s500ms"),
        ("90m", "1h30m"),
        ("3600s", "1h"),
        ("0ms", "0s"),
        ("61s", "1m1s"),
        ("99999h99999m99999s99999ms", "99999h99999m99999s99999ms"),
    ] {
        let d = Duration::parse(text).unwrap();
        assert_eq!(d.to_string(), canonical);
        assert_eq!(Duration::parse(canonical).unwrap(), d);
    }
}

#[test]
fn ordering_and_std_conversions() {
    let short = Duration::parse("999ms").unwrap();
    let long = Duration::parse("1s").unwrap();
    assert!(short < long);
    assert_eq!(
        std::time::Duration::from(long),
        std::time::Duration::from_secs(1)
    );
    assert_eq!(
        Duration::from(std::time::Duration::from_micros(2_500)),
        Duration::from_millis(3)
    );
}

#[test]
fn the_schema_pattern_matches_the_gateway_api() {
    assert_eq!(PATTERN, "^([0-9]{1,5}(h|m|s|ms)){1,4}$");
}
