//! gRPC's wire conventions the resilience layers read: the `grpc-timeout`
//! request header (a deadline) and the `grpc-status` code of a response.
//! Pure: bytes in, values out (the callers own the HTTP types).
//!
//! <https://github.com/grpc/grpc/blob/master/doc/PROTOCOL-HTTP2.md>

use std::time::Duration;

/// Digits a `grpc-timeout` value may have (`TimeoutValue`: at most 8).
const MAX_TIMEOUT_DIGITS: usize = 8;
const MAX_TIMEOUT_VALUE: u64 = 99_999_999;

/// `grpc-timeout`'s units, finest first, with their length in nanoseconds.
const UNITS: [(u8, u64); 6] = [
    (b'n', 1),
    (b'u', 1_000),
    (b'm', 1_000_000),
    (b'S', 1_000_000_000),
    (b'M', 60 * 1_000_000_000),
    (b'H', 3_600 * 1_000_000_000),
];

/// A `grpc-timeout` value (`1-8 digits` then a unit: `H`ours, `M`inutes,
/// `S`econds, `m`illiseconds, `u`microseconds, `n`anoseconds), or `None`
/// when it is malformed.
pub fn parse_timeout(value: &[u8]) -> Option<Duration> {
    let (&unit, digits) = value.split_last()?;
    if digits.is_empty()
        || digits.len() > MAX_TIMEOUT_DIGITS
        || !digits.iter().all(u8::is_ascii_digit)
    {
        return None;
    }
    let (_, nanos_per_unit) = UNITS.iter().find(|(u, _)| *u == unit)?;
    let count = digits
        .iter()
        .fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
    // 99999999H overflows a u64 of nanoseconds: whole units of a second
    // and more are counted in seconds.
    Some(match nanos_per_unit {
        n if *n < 1_000_000_000 => Duration::from_nanos(count * n),
        n => Duration::from_secs(count * (n / 1_000_000_000)),
    })
}

/// `d` as a `grpc-timeout` value: the finest unit whose count fits eight
/// digits, rounded down, so a deadline passed on never grows (the loss is
/// under one unit, and past nanoseconds a count is at least 100000: under
/// 0.001%). Past 99999999 hours it saturates there.
pub fn format_timeout(d: Duration) -> String {
    let nanos = d.as_nanos();
    for (unit, per) in UNITS {
        let count = nanos / u128::from(per);
        if count <= u128::from(MAX_TIMEOUT_VALUE) {
            return format!("{count}{}", unit as char);
        }
    }
    format!("{MAX_TIMEOUT_VALUE}H")
}

/// A `grpc-status` value: a decimal code. Codes past 16 are not defined but
/// are carried as they are (a client reads an unknown one as UNKNOWN).
pub fn parse_status(value: &[u8]) -> Option<u32> {
    if value.is_empty() || value.len() > 3 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(value.iter().fold(0u32, |n, d| n * 10 + u32::from(d - b'0')))
}

/// The status codes gRPC defines, by number (`OK` is 0).
pub const CODE_NAMES: [&str; 17] = [
    "ok",
    "cancelled",
    "unknown",
    "invalid-argument",
    "deadline-exceeded",
    "not-found",
    "already-exists",
    "permission-denied",
    "resource-exhausted",
    "failed-precondition",
    "aborted",
    "out-of-range",
    "unimplemented",
    "internal",
    "unavailable",
    "data-loss",
    "unauthenticated",
];

/// `grpc-<name>`: the retry reason (a metric label) for a status code.
pub fn retry_reason(code: u32) -> &'static str {
    const REASONS: [&str; 17] = [
        "grpc-ok",
        "grpc-cancelled",
        "grpc-unknown",
        "grpc-invalid-argument",
        "grpc-deadline-exceeded",
        "grpc-not-found",
        "grpc-already-exists",
        "grpc-permission-denied",
        "grpc-resource-exhausted",
        "grpc-failed-precondition",
        "grpc-aborted",
        "grpc-out-of-range",
        "grpc-unimplemented",
        "grpc-internal",
        "grpc-unavailable",
        "grpc-data-loss",
        "grpc-unauthenticated",
    ];
    REASONS.get(code as usize).copied().unwrap_or("grpc-other")
}

/// UNKNOWN: what a client makes of a response that ended without a status.
pub const UNKNOWN: u32 = 2;

/// A set of status codes (a bit per code 0-31): which ones are retried, or
/// count as failures. Copy, no allocation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Codes(u32);

impl Codes {
    pub const NONE: Codes = Codes(0);

    pub fn contains(self, code: u32) -> bool {
        code < 32 && self.0 & (1 << code) != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl FromIterator<u32> for Codes {
    fn from_iter<I: IntoIterator<Item = u32>>(codes: I) -> Self {
        Codes(
            codes
                .into_iter()
                .filter(|c| *c < 32)
                .fold(0, |set, c| set | 1 << c),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_every_unit() {
        let t = |s: &str| parse_timeout(s.as_bytes());
        assert_eq!(t("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(t("2M"), Some(Duration::from_secs(120)));
        assert_eq!(t("3S"), Some(Duration::from_secs(3)));
        assert_eq!(t("250m"), Some(Duration::from_millis(250)));
        assert_eq!(t("7u"), Some(Duration::from_micros(7)));
        assert_eq!(t("0n"), Some(Duration::ZERO));
        assert_eq!(t("99999999n"), Some(Duration::from_nanos(99_999_999)));
        assert_eq!(t("99999999H"), Some(Duration::from_secs(99_999_999 * 3600)));
    }

    #[test]
    fn refuses_malformed_timeouts() {
        for bad in [
            "",
            "S",
            "10",
            "10s",
            "10 S",
            "-1S",
            "1.5S",
            "123456789m",
            "１S",
            "10SS",
        ] {
            assert_eq!(parse_timeout(bad.as_bytes()), None, "{bad:?}");
        }
    }

    #[test]
    fn formats_in_the_finest_unit_that_fits() {
        let f = format_timeout;
        assert_eq!(f(Duration::ZERO), "0n");
        assert_eq!(f(Duration::from_nanos(99_999_999)), "99999999n");
        assert_eq!(f(Duration::from_millis(100)), "100000u");
        assert_eq!(f(Duration::from_millis(1500)), "1500000u");
        // Rounded down, never up.
        assert_eq!(f(Duration::from_nanos(100_000_999)), "100000u");
        assert_eq!(f(Duration::from_secs(1000)), "1000000m");
        assert_eq!(f(Duration::from_secs(200_000)), "200000S");
        assert_eq!(f(Duration::from_secs(100_000_000)), "1666666M");
        assert_eq!(f(Duration::from_secs(10_000_000_000)), "2777777H");
        assert_eq!(f(Duration::MAX), "99999999H");
    }

    proptest! {
        /// What is formatted parses back to at most the original, within
        /// one part in 100000.
        #[test]
        fn format_then_parse_never_grows(nanos in 0u64..=u64::MAX) {
            let d = Duration::from_nanos(nanos);
            let text = format_timeout(d);
            let back = parse_timeout(text.as_bytes()).unwrap();
            prop_assert!(back <= d);
            prop_assert!((d - back).as_nanos() * 100_000 <= d.as_nanos());
        }

        #[test]
        fn parsing_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..12)) {
            let _ = parse_timeout(&bytes);
            let _ = parse_status(&bytes);
        }
    }

    #[test]
    fn statuses_and_sets() {
        assert_eq!(parse_status(b"14"), Some(14));
        assert_eq!(parse_status(b"0"), Some(0));
        assert_eq!(parse_status(b""), None);
        assert_eq!(parse_status(b"1x"), None);
        assert_eq!(parse_status(b"9999"), None);
        let set: Codes = [14, 4, 40].into_iter().collect();
        assert!(set.contains(14) && set.contains(4));
        assert!(!set.contains(0) && !set.contains(40) && !set.contains(99));
        assert!(Codes::NONE.is_empty() && !set.is_empty());
        assert_eq!(retry_reason(14), "grpc-unavailable");
        assert_eq!(retry_reason(99), "grpc-other");
        assert_eq!(CODE_NAMES[4], "deadline-exceeded");
    }
}
