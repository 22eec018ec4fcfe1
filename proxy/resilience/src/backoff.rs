//! Retry delays: capped exponential backoff with full jitter, and `Retry-After`.
//!
//! Full jitter (uniform in `[0, ceiling]`) spreads synchronized clients best for the
//! least work (see the AWS "Exponential Backoff and Jitter" analysis).

use std::time::{Duration, SystemTime};

use rand::Rng;

use super::saturating_nanos;

/// Exponential backoff: the ceiling for retry `i` (0-based) is `min(max, base * 2^i)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
}

impl Backoff {
    /// Upper bound of the jittered delay for `retry_index`; saturates instead of
    /// overflowing, so any index is safe.
    pub fn ceiling(&self, retry_index: u32) -> Duration {
        let base = self.base.as_nanos();
        let max = self.max.as_nanos();
        // base * 2^i overflows u128 iff base > u128::MAX >> i; then it is surely > max.
        let grown = match retry_index {
            _ if base == 0 => Some(0),
            i if i >= u128::BITS => None,
            i if base > u128::MAX >> i => None,
            i => Some(base << i),
        };
        let nanos = grown.map_or(max, |g| g.min(max));
        // nanos <= max.as_nanos(), so the seconds fit in u64.
        Duration::new(
            (nanos / 1_000_000_000) as u64,
            (nanos % 1_000_000_000) as u32,
        )
    }

    /// Full-jitter delay: uniform in `[0, ceiling(retry_index)]`, nanosecond grain.
    /// Ceilings beyond ~584 years are clamped to that (u64 nanoseconds).
    pub fn delay<R: Rng + ?Sized>(&self, retry_index: u32, rng: &mut R) -> Duration {
        let ceiling = saturating_nanos(self.ceiling(retry_index));
        Duration::from_nanos(rng.random_range(0..=ceiling))
    }
}

/// Parses a `Retry-After` value: delta-seconds (`"120"`) or an HTTP date (IMF-fixdate;
/// the obsolete RFC 850 and asctime forms are accepted too, as RFC 9110 asks of
/// recipients). A date in the past means "now" (zero). Anything else is `None`.
pub fn parse_retry_after(value: &str, now_system: SystemTime) -> Option<Duration> {
    let value = value.trim();
    // `u64::from_str` would also take "+5"; delta-seconds is 1*DIGIT only.
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // Absurdly long digit strings are valid grammar: treat as "very long".
        let secs = value.parse::<u64>().unwrap_or(u64::MAX);
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now_system).unwrap_or(Duration::ZERO))
}

/// Delay before retry `retry_index`, or `None` when no retry fits.
///
/// A server's `Retry-After` replaces the jittered delay (it knows its own recovery
/// better than we do) and is capped by nothing but `remaining`, the time left in the
/// overall request timeout. A delay that would use up all the remaining time leaves no
/// room for the attempt itself, so it is `None` (delay >= remaining).
pub fn next_delay<R: Rng + ?Sized>(
    backoff: &Backoff,
    retry_index: u32,
    retry_after: Option<Duration>,
    remaining: Option<Duration>,
    rng: &mut R,
) -> Option<Duration> {
    let delay = match retry_after {
        Some(server_says) => server_says,
        None => backoff.delay(retry_index, rng),
    };
    match remaining {
        Some(left) if delay >= left => None,
        _ => Some(delay),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{rngs::StdRng, RngCore, SeedableRng};

    /// An RNG that always yields the same word: pins jitter to its extremes.
    struct Constant(u64);
    impl RngCore for Constant {
        fn next_u32(&mut self) -> u32 {
            self.0 as u32
        }
        fn next_u64(&mut self) -> u64 {
            self.0
        }
        fn fill_bytes(&mut self, dst: &mut [u8]) {
            dst.fill(self.0 as u8);
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    const B: Backoff = Backoff {
        base: Duration::from_millis(25),
        max: Duration::from_secs(1),
    };

    #[test]
    fn ceiling_doubles_then_caps() {
        let got: Vec<_> = (0..8).map(|i| B.ceiling(i)).collect();
        let want = [25, 50, 100, 200, 400, 800, 1000, 1000].map(ms);
        assert_eq!(got, want);
    }

    #[test]
    fn ceiling_never_overflows() {
        for i in [31, 32, 63, 64, 100, 127, 128, 1000, u32::MAX] {
            assert_eq!(B.ceiling(i), ms(1000), "index {i}");
        }
        let huge = Backoff {
            base: Duration::MAX,
            max: Duration::MAX,
        };
        assert_eq!(huge.ceiling(0), Duration::MAX);
        assert_eq!(huge.ceiling(u32::MAX), Duration::MAX);
        // A tiny base keeps growing past 2^32 instead of jumping to max early.
        let tiny = Backoff {
            base: Duration::from_nanos(1),
            max: Duration::from_secs(3600),
        };
        assert_eq!(tiny.ceiling(40), Duration::from_nanos(1 << 40));
    }

    #[test]
    fn zero_base_means_no_delay() {
        let b = Backoff {
            base: Duration::ZERO,
            max: ms(1000),
        };
        assert_eq!(b.ceiling(200), Duration::ZERO);
        assert_eq!(b.delay(200, &mut Constant(u64::MAX)), Duration::ZERO);
    }

    #[test]
    fn jitter_spans_zero_to_ceiling() {
        assert_eq!(B.delay(2, &mut Constant(0)), Duration::ZERO);
        let top = B.delay(2, &mut Constant(u64::MAX));
        assert!(
            top <= ms(100) && top >= ms(100) - Duration::from_micros(1),
            "{top:?}"
        );
    }

    #[test]
    fn jitter_is_uniform_enough_and_bounded() {
        let mut rng = StdRng::seed_from_u64(7);
        let samples: Vec<Duration> = (0..10_000).map(|_| B.delay(2, &mut rng)).collect();
        assert!(samples.iter().all(|d| *d <= ms(100)));
        let mean = samples.iter().sum::<Duration>() / samples.len() as u32;
        assert!(mean > ms(48) && mean < ms(52), "mean {mean:?}");
        assert!(samples.iter().any(|d| *d < ms(1)));
        assert!(samples.iter().any(|d| *d > ms(99)));
    }

    #[test]
    fn retry_after_delta_seconds() {
        let now = SystemTime::UNIX_EPOCH;
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("99999999999999999999999", now),
            Some(Duration::from_secs(u64::MAX))
        );
        for bad in ["", "+5", "-1", "1.5", "5s", "abc", "1 2"] {
            assert_eq!(parse_retry_after(bad, now), None, "{bad:?}");
        }
    }

    #[test]
    fn retry_after_http_date() {
        // Sun, 06 Nov 1994 08:49:37 GMT == 784111777 s after the epoch.
        let date = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777);
        let now = date - Duration::from_secs(90);
        let imf = "Sun, 06 Nov 1994 08:49:37 GMT";
        assert_eq!(parse_retry_after(imf, now), Some(Duration::from_secs(90)));
        let rfc850 = "Sunday, 06-Nov-94 08:49:37 GMT";
        assert_eq!(
            parse_retry_after(rfc850, now),
            Some(Duration::from_secs(90))
        );
        // Already past: retry immediately rather than refusing.
        let later = date + Duration::from_secs(5);
        assert_eq!(parse_retry_after(imf, later), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 25:00:00 GMT", now),
            None
        );
    }

    #[test]
    fn next_delay_uses_jitter_without_retry_after() {
        let mut top = Constant(u64::MAX);
        let d = next_delay(&B, 0, None, None, &mut top).unwrap();
        assert!(d <= ms(25) && d > ms(24));
        assert_eq!(next_delay(&B, 0, None, None, &mut Constant(0)), Some(ms(0)));
    }

    #[test]
    fn retry_after_overrides_jitter_and_max() {
        let mut rng = Constant(0);
        let server = Some(Duration::from_secs(30)); // well above backoff.max
        assert_eq!(next_delay(&B, 0, server, None, &mut rng), server);
        assert_eq!(
            next_delay(&B, 0, server, Some(Duration::from_secs(31)), &mut rng),
            server
        );
    }

    #[test]
    fn no_delay_when_it_would_exhaust_remaining_time() {
        let mut rng = Constant(0);
        let server = Some(ms(500));
        assert_eq!(next_delay(&B, 0, server, Some(ms(500)), &mut rng), None);
        assert_eq!(next_delay(&B, 0, server, Some(ms(501)), &mut rng), server);
        // Zero jitter still needs some time left for the attempt itself.
        assert_eq!(
            next_delay(&B, 0, None, Some(Duration::ZERO), &mut rng),
            None
        );
        assert_eq!(
            next_delay(&B, 0, None, Some(Duration::from_nanos(1)), &mut rng),
            Some(Duration::ZERO)
        );
    }
}
