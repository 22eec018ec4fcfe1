//! Retry budget (Finagle/Linkerd style, Gateway API GEP-3388 fields): retries may add
//! at most `percent`% on top of the original requests seen in a sliding interval, plus
//! a small floor (`minRetryRate`) so low-traffic services can still retry at all.
//!
//! The two allowances are separate pools and add up: a retry is taken from the
//! percentage pool when it fits there, else from the floor, which is a true rate
//! (`count` per its own interval) rather than a lump granted once per budget interval,
//! so an idle service cannot burst a whole interval's floor at once.

use std::ops::Add;
use std::time::{Duration, Instant};

use super::window::TimeBuckets;

/// Buckets per interval: the window is accurate to a tenth of it.
const BUCKETS: usize = 10;

#[derive(Debug, Clone, Copy, Default)]
struct Traffic {
    requests: u64,
    /// Retries paid for by the percentage pool only.
    retries: u64,
}

impl Add for Traffic {
    type Output = Self;
    fn add(self, other: Self) -> Self {
        Self {
            requests: self.requests + other.requests,
            retries: self.retries + other.retries,
        }
    }
}

#[derive(Debug, Clone)]
struct Floor {
    count: u64,
    retries: TimeBuckets<u64>,
}

/// A sliding-window retry budget. O(1) memory; no allocation after `new`.
#[derive(Debug, Clone)]
pub struct RetryBudget {
    percent: u64,
    traffic: TimeBuckets<Traffic>,
    floor: Option<Floor>,
    exhausted: u64,
}

impl RetryBudget {
    /// `percent` of original requests in `interval` may be retried, plus
    /// `min_retries_per_interval = (count, per)` retries in any `per`. A zero
    /// `count` or `per` disables the floor.
    pub fn new(
        percent: u32,
        interval: Duration,
        min_retries_per_interval: (u32, Duration),
    ) -> Self {
        let (count, per) = min_retries_per_interval;
        let floor = (count > 0 && !per.is_zero()).then(|| Floor {
            count: u64::from(count),
            retries: TimeBuckets::new(per, BUCKETS),
        });
        Self {
            percent: u64::from(percent),
            traffic: TimeBuckets::new(interval, BUCKETS),
            floor,
            exhausted: 0,
        }
    }

    /// Counts an original request (not a retry): it earns the percentage pool credit.
    pub fn record_request(&mut self, now: Instant) {
        self.traffic.update(now, |t| t.requests += 1);
    }

    /// Takes one retry from the budget, or counts an exhaustion and returns false.
    pub fn try_withdraw(&mut self, now: Instant) -> bool {
        let seen = self.traffic.fold(now, Traffic::default(), |a, b| a + *b);
        // After this retry the pool must still be within percent%: with 20% and one
        // request, `retries < 0.2` would let a whole retry through.
        let within_percent =
            (seen.retries + 1).saturating_mul(100) <= self.percent.saturating_mul(seen.requests);
        if within_percent {
            self.traffic.update(now, |t| t.retries += 1);
            return true;
        }
        if let Some(floor) = &mut self.floor {
            if floor.retries.fold(now, 0, |a, b| a + b) < floor.count {
                floor.retries.update(now, |n| *n += 1);
                return true;
            }
        }
        self.exhausted += 1;
        false
    }

    /// Retries refused since creation (`outrigger_retry_budget_exhausted_total`).
    pub fn exhausted_total(&self) -> u64 {
        self.exhausted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }
    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    /// The policy example: 20% over 10s, at least 10 retries per second.
    fn example() -> RetryBudget {
        RetryBudget::new(20, secs(10), (10, secs(1)))
    }

    fn no_floor(percent: u32) -> RetryBudget {
        RetryBudget::new(percent, secs(10), (0, secs(1)))
    }

    #[test]
    fn all_failing_traffic_is_held_to_percent_plus_floor() {
        let t0 = Instant::now();
        let mut b = example();
        let mut retries = 0u64;
        // 1000 requests over one second, every one failing and trying 2 retries.
        for i in 0..1000 {
            let now = t0 + ms(i);
            b.record_request(now);
            for _ in 0..2 {
                retries += u64::from(b.try_withdraw(now));
            }
        }
        // 20% of 1000 from the pool, plus the floor's 10 in that one second.
        assert_eq!(retries, 200 + 10);
        assert_eq!(b.exhausted_total(), 2000 - 210);
    }

    #[test]
    fn percentage_never_exceeded_at_any_point() {
        let t0 = Instant::now();
        let mut b = no_floor(20);
        let (mut requests, mut retries) = (0u64, 0u64);
        for i in 0..100 {
            b.record_request(t0 + ms(i));
            requests += 1;
            if b.try_withdraw(t0 + ms(i)) {
                retries += 1;
            }
            assert!(retries * 100 <= 20 * requests, "{retries}/{requests}");
        }
        assert_eq!(retries, 20);
    }

    #[test]
    fn single_request_earns_no_whole_retry_at_twenty_percent() {
        let t0 = Instant::now();
        let mut b = no_floor(20);
        b.record_request(t0);
        assert!(!b.try_withdraw(t0));
        for _ in 0..4 {
            b.record_request(t0);
        }
        assert!(b.try_withdraw(t0)); // 5 requests earn exactly one
        assert!(!b.try_withdraw(t0));
        assert_eq!(b.exhausted_total(), 2);
    }

    #[test]
    fn floor_allows_retries_with_zero_traffic() {
        let t0 = Instant::now();
        let mut b = example();
        let granted = (0..15).filter(|_| b.try_withdraw(t0)).count();
        assert_eq!(granted, 10);
        assert_eq!(b.exhausted_total(), 5);
        // The floor is a rate: a second later ten more, not a lump of 100 up front.
        assert!(!b.try_withdraw(t0 + ms(999)));
        let granted = (0..15).filter(|_| b.try_withdraw(t0 + secs(1))).count();
        assert_eq!(granted, 10);
    }

    #[test]
    fn no_traffic_and_no_floor_means_no_retries() {
        let mut b = no_floor(100);
        assert!(!b.try_withdraw(Instant::now()));
        assert_eq!(b.exhausted_total(), 1);
    }

    #[test]
    fn window_slides_and_old_requests_stop_counting() {
        let t0 = Instant::now();
        let mut b = no_floor(20);
        for _ in 0..100 {
            b.record_request(t0);
        }
        for _ in 0..10 {
            assert!(b.try_withdraw(t0 + secs(5)));
        }
        // Requests from the [0s, 1s) bucket still count until 10s...
        assert!(b.try_withdraw(t0 + ms(9_999)));
        // ...and at 10s they are gone, taking their credit with them.
        assert!(!b.try_withdraw(t0 + secs(10)));
        // New traffic earns new credit; the 11 retries since 5s still weigh against it.
        for _ in 0..100 {
            b.record_request(t0 + secs(10));
        }
        let granted = (0..30).filter(|_| b.try_withdraw(t0 + secs(10))).count();
        assert_eq!(granted, 20 - 11);
        // Once the 5s retries expire (at 15s), 1 + 9 remain: the same requests fund 10 more.
        let granted = (0..30).filter(|_| b.try_withdraw(t0 + secs(15))).count();
        assert_eq!(granted, 10);
    }

    #[test]
    fn hundred_percent_allows_one_retry_per_request() {
        let t0 = Instant::now();
        let mut b = no_floor(100);
        for _ in 0..3 {
            b.record_request(t0);
        }
        let granted = (0..10).filter(|_| b.try_withdraw(t0)).count();
        assert_eq!(granted, 3);
    }
}
