//! Exponential backoff with full jitter, and `Retry-After` parsing.

use std::time::{Duration, SystemTime};

use rand::Rng;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
}

impl Backoff {
    /// The wait before retry number `retry_index` (0 for the first retry):
    /// uniform in [0, min(max, base·2^retry_index)]. Full jitter spreads the
    /// retries of many clients instead of synchronising them.
    pub fn delay<R: Rng + ?Sized>(&self, retry_index: u32, rng: &mut R) -> Duration {
        let ceiling = self.ceiling(retry_index);
        if ceiling.is_zero() {
            return Duration::ZERO;
        }
        Duration::from_nanos(rng.random_range(0..=ceiling.as_nanos() as u64))
    }

    /// The largest wait retry number `retry_index` may get.
    pub fn ceiling(&self, retry_index: u32) -> Duration {
        let factor = 1u32.checked_shl(retry_index.min(31)).unwrap_or(u32::MAX);
        self.base
            .checked_mul(factor)
            .unwrap_or(self.max)
            .min(self.max)
    }
}

/// Parses `Retry-After` (RFC 9110 §10.2.3): delay-seconds or an HTTP date.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let date = httpdate::parse_http_date(value).ok()?;
    Some(date.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn delays_stay_within_the_exponential_ceiling() {
        let b = Backoff {
            base: Duration::from_millis(25),
            max: Duration::from_secs(1),
        };
        assert_eq!(b.ceiling(0), Duration::from_millis(25));
        assert_eq!(b.ceiling(3), Duration::from_millis(200));
        assert_eq!(b.ceiling(6), Duration::from_secs(1));
        assert_eq!(b.ceiling(400), Duration::from_secs(1));
        let mut rng = rand::rngs::StdRng::seed_from_u64(9);
        for n in 0..10 {
            let mut seen_max = Duration::ZERO;
            for _ in 0..200 {
                let d = b.delay(n, &mut rng);
                assert!(d <= b.ceiling(n));
                seen_max = seen_max.max(d);
            }
            // Jitter really spans the range.
            assert!(seen_max > b.ceiling(n) / 2, "{n}: {seen_max:?}");
        }
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(parse_retry_after("3", now), Some(Duration::from_secs(3)));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(10));
        assert_eq!(
            parse_retry_after(&later, now),
            Some(Duration::from_secs(10))
        );
        let earlier = httpdate::fmt_http_date(now - Duration::from_secs(10));
        assert_eq!(parse_retry_after(&earlier, now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-1", now), None);
    }
}
