//! Durations in Gateway API form (GEP-2257): `250ms`, `5s`, `1m`, `1h30m`.

use std::borrow::Cow;
use std::fmt;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The pattern every duration string matches (GEP-2257). The regex alone
/// admits repeated or misordered units; [`Duration::parse`] also rejects those.
pub const PATTERN: &str = "^([0-9]{1,5}(h|m|s|ms)){1,4}$";

/// Units in the order they must appear, with their length in milliseconds.
const UNITS: [(&str, u64); 4] = [("h", 3_600_000), ("m", 60_000), ("s", 1_000), ("ms", 1)];

/// At most five digits per unit.
const MAX_COUNT: u64 = 99_999;

/// `99999h99999m99999s99999ms`: every value up to this prints in a form that
/// parses back, so constructors saturate here rather than print something
/// the other side would refuse.
const MAX_MILLIS: u64 = MAX_COUNT * (3_600_000 + 60_000 + 1_000 + 1);

/// A non-negative span of whole milliseconds, written as a Gateway API duration.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration(std::time::Duration);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {input:?}: {reason} (write e.g. 250ms, 5s or 1h30m)")]
pub struct DurationError {
    input: String,
    reason: String,
}

impl Duration {
    pub const ZERO: Duration = Duration::from_millis(0);
    /// The largest duration the format can express.
    pub const MAX: Duration = Duration::from_millis(MAX_MILLIS);

    pub fn parse(input: &str) -> Result<Duration, DurationError> {
        parse_millis(input)
            .map(Duration::from_millis)
            .map_err(|reason| DurationError {
                input: input.to_string(),
                reason,
            })
    }

    /// Saturates at [`Duration::MAX`].
    pub const fn from_millis(ms: u64) -> Duration {
        let ms = if ms > MAX_MILLIS { MAX_MILLIS } else { ms };
        Duration(std::time::Duration::from_millis(ms))
    }

    /// Saturates at [`Duration::MAX`].
    pub const fn from_secs(s: u64) -> Duration {
        Duration::from_millis(s.saturating_mul(1_000))
    }

    /// Rounds to the nearest millisecond, the finest unit the format has, and
    /// saturates at [`Duration::MAX`].
    pub fn from_std(d: std::time::Duration) -> Duration {
        let millis = (d.as_nanos() + 500_000) / 1_000_000;
        Duration::from_millis(u64::try_from(millis).unwrap_or(u64::MAX))
    }

    pub const fn as_std(self) -> std::time::Duration {
        self.0
    }

    pub const fn as_millis(self) -> u64 {
        // Lossless: every value is at most MAX_MILLIS.
        self.0.as_millis() as u64
    }

    pub const fn is_zero(self) -> bool {
        self.0.is_zero()
    }
}

/// Digits then a unit, up to four times, units in h, m, s, ms order.
fn parse_millis(input: &str) -> Result<u64, String> {
    if input.is_empty() {
        return Err("empty".into());
    }
    let mut rest = input;
    let mut allowed = &UNITS[..];
    let mut millis = 0;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(format!("expected a number at {rest:?}"));
        }
        let (number, after) = rest.split_at(digits);
        if after.starts_with('.') {
            return Err("fractions are not allowed; use a smaller unit, as in 1s500ms".into());
        }
        if digits > 5 {
            return Err(format!("{number} has more than 5 digits"));
        }
        let letters = after.bytes().take_while(u8::is_ascii_alphabetic).count();
        let (unit, after) = after.split_at(letters);
        if unit.is_empty() {
            return Err(format!("{number} has no unit; use h, m, s or ms"));
        }
        let Some(position) = allowed.iter().position(|(name, _)| *name == unit) else {
            return Err(if UNITS.iter().any(|(name, _)| *name == unit) {
                "each unit may appear once, in the order h, m, s, ms".into()
            } else {
                format!("unknown unit {unit:?}; use h, m, s or ms")
            });
        };
        let count: u64 = number.parse().expect("at most 5 ASCII digits");
        millis += count * allowed[position].1;
        allowed = &allowed[position + 1..];
        rest = after;
    }
    Ok(millis)
}

impl From<std::time::Duration> for Duration {
    fn from(d: std::time::Duration) -> Self {
        Duration::from_std(d)
    }
}

impl From<Duration> for std::time::Duration {
    fn from(d: Duration) -> Self {
        d.as_std()
    }
}

/// Canonical form: each unit as large as it can be, zero units left out
/// (`1500ms` prints `1s500ms`, `90m` prints `1h30m`, zero prints `0s`).
impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut millis = self.as_millis();
        if millis == 0 {
            return f.write_str("0s");
        }
        for (name, unit) in UNITS {
            // Past 99999 of a unit the excess stays in the next smaller one,
            // which the MAX_MILLIS bound guarantees has room.
            let count = (millis / unit).min(MAX_COUNT);
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
        d.deserialize_str(DurationVisitor)
    }
}

/// A visitor rather than `String::deserialize`, so a number where a duration
/// belongs is reported as "expected a Gateway API duration".
struct DurationVisitor;

impl Visitor<'_> for DurationVisitor {
    type Value = Duration;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a Gateway API duration such as 250ms, 5s or 1h30m")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
        Duration::parse(v).map_err(E::custom)
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

    fn parse(s: &str) -> Duration {
        Duration::parse(s).unwrap()
    }

    fn reason(s: &str) -> String {
        Duration::parse(s).unwrap_err().reason
    }

    #[test]
    fn parses_each_unit_and_combinations() {
        assert_eq!(parse("250ms"), Duration::from_millis(250));
        assert_eq!(parse("5s"), Duration::from_secs(5));
        assert_eq!(parse("1m"), Duration::from_secs(60));
        assert_eq!(parse("1h30m"), Duration::from_secs(5400));
        assert_eq!(parse("1s500ms"), Duration::from_millis(1500));
        assert_eq!(parse("0s"), Duration::ZERO);
        assert_eq!(parse("99999h99999m99999s99999ms"), Duration::MAX);
    }

    #[test]
    fn explains_each_kind_of_mistake() {
        assert_eq!(reason(""), "empty");
        assert_eq!(reason("100000s"), "100000 has more than 5 digits");
        assert_eq!(
            reason("1m1h"),
            "each unit may appear once, in the order h, m, s, ms"
        );
        assert_eq!(
            reason("1s1s"),
            "each unit may appear once, in the order h, m, s, ms"
        );
        assert_eq!(
            reason("1.5s"),
            "fractions are not allowed; use a smaller unit, as in 1s500ms"
        );
        assert_eq!(reason("5"), "5 has no unit; use h, m, s or ms");
        assert_eq!(reason("1d"), "unknown unit \"d\"; use h, m, s or ms");
        assert_eq!(reason("1sec"), "unknown unit \"sec\"; use h, m, s or ms");
        assert_eq!(reason("-1s"), "expected a number at \"-1s\"");
        assert_eq!(reason("1s "), "expected a number at \" \"");
        assert_eq!(
            Duration::parse("1m1h").unwrap_err().to_string(),
            "invalid duration \"1m1h\": each unit may appear once, in the order h, m, s, ms \
             (write e.g. 250ms, 5s or 1h30m)"
        );
    }

    #[test]
    fn displays_canonical_form() {
        assert_eq!(Duration::from_millis(1500).to_string(), "1s500ms");
        assert_eq!(Duration::from_secs(5400).to_string(), "1h30m");
        assert_eq!(Duration::from_secs(3600).to_string(), "1h");
        assert_eq!(Duration::ZERO.to_string(), "0s");
        assert_eq!(Duration::MAX.to_string(), "99999h99999m99999s99999ms");
    }

    #[test]
    fn std_conversions_round_and_saturate() {
        let micros = std::time::Duration::from_micros;
        assert_eq!(Duration::from_std(micros(1_499)), Duration::from_millis(1));
        assert_eq!(Duration::from_std(micros(1_500)), Duration::from_millis(2));
        assert_eq!(Duration::from(micros(400)), Duration::ZERO);
        assert_eq!(Duration::from_std(std::time::Duration::MAX), Duration::MAX);
        assert_eq!(Duration::from_secs(u64::MAX), Duration::MAX);
        assert_eq!(parse("2s").as_std(), std::time::Duration::from_secs(2));
    }

    #[test]
    fn serde_uses_the_string_form() {
        assert_eq!(
            serde_json::to_string(&Duration::from_millis(1500)).unwrap(),
            "\"1s500ms\""
        );
        let d: Duration = serde_json::from_str("\"1h30m\"").unwrap();
        assert_eq!(d, Duration::from_secs(5400));
        let err = serde_json::from_str::<Duration>("5")
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "invalid type: integer `5`, expected a Gateway API duration such as 250ms, 5s \
             or 1h30m at line 1 column 1"
        );
    }

    #[test]
    fn schema_is_a_patterned_string() {
        let schema = serde_json::to_value(schemars::schema_for!(Duration)).unwrap();
        assert_eq!(schema["type"], "string");
        assert_eq!(schema["pattern"], PATTERN);
    }
}
