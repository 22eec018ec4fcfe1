//! Token bucket: `rate` tokens per second, at most `burst` saved up.

use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct TokenBucket {
    /// Nanoseconds to earn one token.
    per_token_ns: u128,
    burst: u32,
    /// The instant at which the bucket would hold zero tokens; tokens are
    /// `(now - empty_at) / per_token`, capped at `burst`. One number, no drift.
    empty_at: Option<Instant>,
}

impl TokenBucket {
    pub fn new(rate_per_sec: u32, burst: u32) -> Self {
        TokenBucket {
            per_token_ns: 1_000_000_000u128 / u128::from(rate_per_sec.max(1)),
            burst: burst.max(1),
            empty_at: None,
        }
    }

    /// Takes a token, or says how long until one is available.
    pub fn try_take(&mut self, now: Instant) -> Result<(), Duration> {
        let full_span = Duration::from_nanos((self.per_token_ns * u128::from(self.burst)) as u64);
        // Starts full; never holds more than `burst`.
        let floor = now.checked_sub(full_span).unwrap_or(now);
        let empty_at = self.empty_at.map_or(floor, |e| e.max(floor));
        let one = Duration::from_nanos(self.per_token_ns as u64);
        let after_take = empty_at + one;
        if after_take <= now {
            self.empty_at = Some(after_take);
            Ok(())
        } else {
            Err(after_take - now)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_steady_rate() {
        let t0 = Instant::now() + Duration::from_secs(10);
        let mut bucket = TokenBucket::new(100, 20);
        let accepted = (0..30).filter(|_| bucket.try_take(t0).is_ok()).count();
        assert_eq!(accepted, 20);
        assert_eq!(bucket.try_take(t0), Err(Duration::from_millis(10)));
        assert!(bucket.try_take(t0 + Duration::from_millis(10)).is_ok());
        assert!(bucket.try_take(t0 + Duration::from_millis(10)).is_err());
        // A long pause refills to the burst, not beyond.
        let later = t0 + Duration::from_secs(60);
        assert_eq!(
            (0..50).filter(|_| bucket.try_take(later).is_ok()).count(),
            20
        );
    }
}
