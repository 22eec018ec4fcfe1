//! Token bucket for inbound rate limiting (429 + `Retry-After`).
//!
//! Tokens are kept in integer "nano-tokens" (1 token = 10^9): `rate` tokens per
//! second is exactly `rate` nano-tokens per nanosecond, so refill is a single exact
//! multiplication with no rounding and therefore no drift, however the calls are spaced.

use std::time::{Duration, Instant};

use super::saturating_nanos;

const NANO: u64 = 1_000_000_000;

#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate_per_sec: u64,
    capacity: u64,
    level: u64,
    /// Last refill; set by the first call since constructors take no `now`.
    last: Option<Instant>,
}

impl TokenBucket {
    /// Starts full. A `burst` of 0 is treated as 1 (otherwise not even one request
    /// could ever pass). A `rate_per_sec` of 0 never refills.
    pub fn new(rate_per_sec: u32, burst: u32) -> Self {
        let capacity = u64::from(burst.max(1)) * NANO;
        Self {
            rate_per_sec: u64::from(rate_per_sec),
            capacity,
            level: capacity,
            last: None,
        }
    }

    fn refill(&mut self, now: Instant) {
        let last = *self.last.get_or_insert(now);
        // An out-of-order `now` (taken before a racing caller's) adds nothing and
        // must not move the clock backwards.
        if now > last {
            let elapsed = saturating_nanos(now - last);
            let added = elapsed.saturating_mul(self.rate_per_sec);
            self.level = self.level.saturating_add(added).min(self.capacity);
            self.last = Some(now);
        }
    }

    /// Takes one token, or says how long until one is available.
    pub fn try_take(&mut self, now: Instant) -> Result<(), Duration> {
        self.refill(now);
        if self.level >= NANO {
            self.level -= NANO;
            return Ok(());
        }
        if self.rate_per_sec == 0 {
            return Err(Duration::MAX);
        }
        let missing = NANO - self.level;
        Err(Duration::from_nanos(missing.div_ceil(self.rate_per_sec)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nanos(n: u64) -> Duration {
        Duration::from_nanos(n)
    }

    fn taken(b: &mut TokenBucket, now: Instant, tries: u32) -> u32 {
        (0..tries).filter(|_| b.try_take(now).is_ok()).count() as u32
    }

    #[test]
    fn burst_at_one_instant_admits_exactly_burst() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(200, 50);
        assert_eq!(taken(&mut b, t0, 60), 50);
    }

    #[test]
    fn one_token_per_period_with_exact_retry_after() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10, 5); // one token per 100ms
        assert_eq!(taken(&mut b, t0, 5), 5);
        assert_eq!(b.try_take(t0), Err(Duration::from_millis(100)));
        let almost = t0 + nanos(99_999_999);
        assert_eq!(b.try_take(almost), Err(nanos(1)));
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(b.try_take(t1), Ok(()));
        assert_eq!(b.try_take(t1), Err(Duration::from_millis(100)));
    }

    #[test]
    fn non_integral_periods_round_retry_after_up() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(3, 1); // 333_333_333.3ns per token
        b.try_take(t0).unwrap();
        assert_eq!(b.try_take(t0), Err(nanos(333_333_334)));
        assert_eq!(b.try_take(t0 + nanos(333_333_333)), Err(nanos(1)));
        assert_eq!(b.try_take(t0 + nanos(333_333_334)), Ok(()));
    }

    #[test]
    fn no_drift_over_many_refills() {
        let t0 = Instant::now();
        // Burst 2 so the rounded-up waits never overfill the bucket (a full bucket
        // rightly discards the excess nanoseconds' worth).
        let mut b = TokenBucket::new(3, 2);
        assert_eq!(taken(&mut b, t0, 2), 2);
        // Take each token the moment it is due, 3000 times: exactly 1000s elapse.
        let mut now = t0;
        for _ in 0..3000 {
            let wait = b.try_take(now).unwrap_err();
            now += wait;
            b.try_take(now).unwrap();
        }
        assert_eq!(now - t0, Duration::from_secs(1000));
        // Nothing gained or lost: the next token is exactly one rounded period away.
        assert_eq!(b.try_take(now), Err(nanos(333_333_334)));
    }

    #[test]
    fn refill_stops_at_burst() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10, 5);
        taken(&mut b, t0, 5);
        let later = t0 + Duration::from_secs(3600);
        assert_eq!(taken(&mut b, later, 20), 5);
    }

    #[test]
    fn partial_refill_accumulates_across_calls() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10, 5);
        taken(&mut b, t0, 5);
        // Two rejected looks at 40ms and 80ms must not lose the time they saw.
        assert!(b.try_take(t0 + Duration::from_millis(40)).is_err());
        assert_eq!(
            b.try_take(t0 + Duration::from_millis(80)),
            Err(Duration::from_millis(20))
        );
        assert_eq!(b.try_take(t0 + Duration::from_millis(100)), Ok(()));
    }

    #[test]
    fn out_of_order_instants_do_not_mint_tokens() {
        let t0 = Instant::now() + Duration::from_secs(1);
        let mut b = TokenBucket::new(10, 1);
        b.try_take(t0).unwrap();
        assert!(b.try_take(t0 - Duration::from_millis(500)).is_err());
        assert_eq!(
            b.try_take(t0 + Duration::from_millis(50)),
            Err(Duration::from_millis(50))
        );
    }

    #[test]
    fn degenerate_configs() {
        let t0 = Instant::now();
        let mut zero_burst = TokenBucket::new(10, 0);
        assert_eq!(taken(&mut zero_burst, t0, 3), 1);
        let mut zero_rate = TokenBucket::new(0, 2);
        assert_eq!(taken(&mut zero_rate, t0, 3), 2);
        assert_eq!(
            zero_rate.try_take(t0 + Duration::from_secs(3600)),
            Err(Duration::MAX)
        );
        // Huge numbers saturate rather than overflow.
        let mut huge = TokenBucket::new(u32::MAX, u32::MAX);
        assert_eq!(taken(&mut huge, t0, 10), 10);
        assert!(huge
            .try_take(t0 + Duration::from_secs(86_400 * 365))
            .is_ok());
    }
}
