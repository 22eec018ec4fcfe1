//! Retry budget (as Finagle, Linkerd and Gateway API GEP-3388 define it):
//! retries within `interval` may not exceed `percent`% of the original requests
//! in that interval, plus a floor of `min_count` per `min_interval` so that a
//! quiet destination can still retry.

use std::time::{Duration, Instant};

use super::window::{Outcome, RollingWindow};

const BUCKETS: usize = 10;

#[derive(Debug)]
pub struct RetryBudget {
    percent: u32,
    min_count: u32,
    /// Original requests (`failure` unused), retries (`failure` set), over `interval`.
    traffic: RollingWindow,
    /// Retries over `min_interval`, for the floor.
    recent_retries: RollingWindow,
    exhausted: u64,
}

impl RetryBudget {
    pub fn new(
        percent: u32,
        interval: Duration,
        (min_count, min_interval): (u32, Duration),
    ) -> Self {
        let origin = Instant::now();
        RetryBudget {
            percent,
            min_count,
            traffic: RollingWindow::new(interval, BUCKETS, origin),
            recent_retries: RollingWindow::new(min_interval, BUCKETS, origin),
            exhausted: 0,
        }
    }

    /// Counts an original (first-attempt) request.
    pub fn record_request(&mut self, now: Instant) {
        self.traffic.record(now, Outcome::default());
    }

    /// Takes one retry from the budget if it allows one.
    pub fn try_withdraw(&mut self, now: Instant) -> bool {
        let (events, retries, _) = self.traffic.totals(now);
        let originals = events - retries;
        let (recent, _, _) = self.recent_retries.totals(now);
        let by_share = u64::from(retries) * 100 < u64::from(originals) * u64::from(self.percent);
        let by_floor = recent < self.min_count;
        if by_share || by_floor {
            let retry = Outcome {
                failure: true,
                slow: false,
            };
            self.traffic.record(now, retry);
            self.recent_retries.record(now, retry);
            true
        } else {
            self.exhausted += 1;
            false
        }
    }

    pub fn exhausted_total(&self) -> u64 {
        self.exhausted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_stay_within_share_plus_floor() {
        let t0 = Instant::now();
        let mut budget =
            RetryBudget::new(20, Duration::from_secs(10), (10, Duration::from_secs(1)));
        let mut retries = 0;
        // 1000 failing requests over 5s, each wanting to retry.
        for i in 0..1000u64 {
            let now = t0 + Duration::from_millis(i * 5);
            budget.record_request(now);
            if budget.try_withdraw(now) {
                retries += 1;
            }
        }
        // 20% of 1000 plus at most 10 per second over 5s.
        assert!(retries <= 200 + 50, "{retries}");
        assert!(retries >= 200, "{retries}");
        assert!(budget.exhausted_total() > 700);
    }

    #[test]
    fn floor_allows_retries_without_traffic() {
        let t0 = Instant::now();
        let mut budget = RetryBudget::new(20, Duration::from_secs(10), (3, Duration::from_secs(1)));
        assert_eq!((0..5).filter(|_| budget.try_withdraw(t0)).count(), 3);
        // The floor renews each interval.
        let later = t0 + Duration::from_millis(1100);
        assert_eq!((0..5).filter(|_| budget.try_withdraw(later)).count(), 3);
    }

    #[test]
    fn old_requests_stop_counting() {
        let t0 = Instant::now();
        let mut budget = RetryBudget::new(50, Duration::from_secs(10), (0, Duration::from_secs(1)));
        for _ in 0..10 {
            budget.record_request(t0);
        }
        assert_eq!((0..10).filter(|_| budget.try_withdraw(t0)).count(), 5);
        // Eleven seconds on, the window is empty: no share, no floor.
        assert!(!budget.try_withdraw(t0 + Duration::from_secs(11)));
    }
}
