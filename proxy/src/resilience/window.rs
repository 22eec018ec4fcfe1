//! A rolling time window of call outcomes, in buckets: O(1) per record and
//! fixed memory, accurate to one bucket's width.

use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Outcome {
    pub failure: bool,
    pub slow: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Bucket {
    /// Which bucket-width period since `origin` this bucket holds.
    period: u64,
    total: u32,
    failures: u32,
    slow: u32,
}

#[derive(Debug, Clone)]
pub struct RollingWindow {
    origin: Instant,
    width: Duration,
    buckets: Vec<Bucket>,
}

impl RollingWindow {
    pub fn new(window: Duration, buckets: usize, origin: Instant) -> Self {
        let buckets = buckets.max(1);
        RollingWindow {
            origin,
            width: (window / buckets as u32).max(Duration::from_millis(1)),
            buckets: vec![Bucket::default(); buckets],
        }
    }

    fn period(&self, now: Instant) -> u64 {
        (now.saturating_duration_since(self.origin).as_nanos() / self.width.as_nanos()) as u64
    }

    pub fn record(&mut self, now: Instant, outcome: Outcome) {
        let period = self.period(now);
        let len = self.buckets.len() as u64;
        let bucket = &mut self.buckets[(period % len) as usize];
        if bucket.period != period {
            *bucket = Bucket {
                period,
                ..Bucket::default()
            };
        }
        bucket.total += 1;
        bucket.failures += u32::from(outcome.failure);
        bucket.slow += u32::from(outcome.slow);
    }

    /// (total, failures, slow) over the buckets still inside the window.
    pub fn totals(&self, now: Instant) -> (u32, u32, u32) {
        let period = self.period(now);
        let len = self.buckets.len() as u64;
        self.buckets
            .iter()
            .filter(|b| b.total > 0 && b.period + len > period && b.period <= period)
            .fold((0, 0, 0), |(t, f, s), b| {
                (t + b.total, f + b.failures, s + b.slow)
            })
    }

    pub fn reset(&mut self) {
        self.buckets.fill(Bucket::default());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_buckets_expire() {
        let t0 = Instant::now();
        let mut w = RollingWindow::new(Duration::from_secs(10), 10, t0);
        w.record(
            t0,
            Outcome {
                failure: true,
                slow: false,
            },
        );
        w.record(
            t0 + Duration::from_secs(5),
            Outcome {
                failure: false,
                slow: true,
            },
        );
        assert_eq!(w.totals(t0 + Duration::from_secs(5)), (2, 1, 1));
        // The first bucket leaves the window after 10s.
        assert_eq!(w.totals(t0 + Duration::from_millis(10_500)), (1, 0, 1));
        assert_eq!(w.totals(t0 + Duration::from_secs(16)), (0, 0, 0));
        // A reused slot starts from zero.
        w.record(t0 + Duration::from_secs(20), Outcome::default());
        assert_eq!(w.totals(t0 + Duration::from_secs(20)), (1, 0, 0));
    }
}
