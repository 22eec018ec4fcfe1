//! Durations in Gateway API form (GEP-2257): `250ms`, `5s`, `1m`, `1h30m`.

use std::borrow::Cow;
use std::fmt;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The pattern every duration string matches (each unit once, in h, m, s, ms order).
pub const PATTERN: &str = "^([0-9]{1,5}(h|m|s|ms)){1,4}$";

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration(std::time::Duration);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {input:?}: {reason} (expected e.g. 250ms, 5s, 1m30s)")]
pub struct DurationError {
    input: String,
    reason: &'static str,
}

/// Units in the order they must appear, with their length in milliseconds.
const UNITS: [(&str, u64); 4] = [("h", 3_600_000), ("m", 60_000), ("s", 1_000), ("ms", 1)];

impl Duration {
    pub fn parse(input: &str) -> Result<Duration, DurationError> {
        let fail = |reason| DurationError {
            input: input.to_string(),
            reason,
        };
        if input.is_empty() {
            return Err(fail("empty"));
        }
        let mut rest = input;
        let mut next_unit = 0;
        let mut millis: u64 = 0;
        while !rest.is_empty() {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                return Err(fail("a number must come before each unit"));
            }
            if digits > 5 {
                return Err(fail("at most 5 digits per unit"));
            }
            let value: u64 = rest[..digits].parse().expect("ascii digits");
            rest = &rest[digits..];
            let unit_len = if rest.starts_with("ms") {
                2
            } else {
                rest.bytes()
                    .take_while(u8::is_ascii_alphabetic)
                    .count()
                    .min(1)
            };
            let unit = &rest[..unit_len];
            let position = UNITS[next_unit..]
                .iter()
                .position(|(name, _)| *name == unit)
                .ok_or_else(|| {
                    if UNITS.iter().any(|(name, _)| *name == unit) {
                        fail("units must appear once each, in h, m, s, ms order")
                    } else {
                        fail("unknown unit (use h, m, s or ms)")
                    }
                })?;
            millis += value * UNITS[next_unit + position].1;
            next_unit += position + 1;
            rest = &rest[unit_len..];
        }
        Ok(Duration(std::time::Duration::from_millis(millis)))
    }

    pub fn as_std(self) -> std::time::Duration {
        self.0
    }

    /// Rounds to whole milliseconds, the finest unit the format has.
    pub fn from_std(d: std::time::Duration) -> Duration {
        Duration(std::time::Duration::from_millis(d.as_millis() as u64))
    }

    pub fn from_millis(ms: u64) -> Duration {
        Duration(std::time::Duration::from_millis(ms))
    }

    pub fn from_secs(s: u64) -> Duration {
        Duration(std::time::Duration::from_secs(s))
    }

    pub fn is_zero(self) -> bool {
        self.0.is_zero()
    }
}

impl From<std::time::Duration> for Duration {
    fn from(d: std::time::Duration) -> Self {
        Duration::from_std(d)
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut millis = self.0.as_millis() as u64;
        if millis == 0 {
            return f.write_str("0s");
        }
        // At most 5 digits per unit (the format's limit): a large value keeps
        // its excess in the next smaller unit, so the output always parses.
        for (name, unit) in UNITS {
            let count = (millis / unit).min(99_999);
            if count > 0 {
                write!(f, "{count}{name}")?;
                millis -= count * unit;
            }
        }
        Ok(())
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = Cow::<str>::deserialize(d)?;
        Duration::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for Duration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": PATTERN,
            "description": "A Gateway API duration such as 250ms, 5s or 1h30m."
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_gateway_durations() {
        assert_eq!(
            Duration::parse("250ms").unwrap(),
            Duration::from_millis(250)
        );
        assert_eq!(Duration::parse("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(Duration::parse("0s").unwrap(), Duration::default());
        assert_eq!(
            Duration::parse("1s500ms").unwrap(),
            Duration::from_millis(1500)
        );
    }

    #[test]
    fn rejects_malformed_durations() {
        for bad in [
            "", "100000s", "1m1h", "1.5s", "5", "s", "1d", "1s1s", "-1s", "1 s",
        ] {
            assert!(Duration::parse(bad).is_err(), "{bad:?} accepted");
        }
        let err = Duration::parse("1m1h").unwrap_err().to_string();
        assert!(err.contains("h, m, s, ms order"), "{err}");
    }

    #[test]
    fn largest_values_print_parseably() {
        let max = Duration::parse("99999h99999m99999s99999ms").unwrap();
        assert_eq!(max.to_string(), "99999h99999m99999s99999ms");
        let d = Duration::parse("99999h99999m").unwrap();
        assert_eq!(Duration::parse(&d.to_string()).unwrap(), d);
    }

    #[test]
    fn displays_canonical_form() {
        assert_eq!(Duration::from_millis(1500).to_string(), "1s500ms");
        assert_eq!(Duration::from_secs(5400).to_string(), "1h30m");
        assert_eq!(Duration::default().to_string(), "0s");
    }
}
