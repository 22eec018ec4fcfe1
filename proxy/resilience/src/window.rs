//! Rolling time windows split into a fixed number of buckets.
//!
//! Each bucket remembers which epoch (bucket-width slice of time since the first
//! event) it holds. A bucket left over from an older epoch is recognised as expired
//! the next time it is touched and cleared then: no timer, no sweep, O(1) per record,
//! and a read sums the N live buckets. The window is therefore accurate to one bucket:
//! it covers the current, partly elapsed bucket plus the N-1 before it.

use std::time::{Duration, Instant};

use super::saturating_nanos;

/// A ring of `T` accumulators, one per bucket of time.
#[derive(Debug, Clone)]
pub struct TimeBuckets<T> {
    width_nanos: u64,
    /// Set by the first update: constructors take no `now`.
    origin: Option<Instant>,
    /// `(epoch, value)`; the slot for epoch `e` is `e % len`.
    slots: Box<[(u64, T)]>,
}

impl<T: Copy + Default> TimeBuckets<T> {
    /// Splits `window` into `buckets` equal slices (at least one bucket of at least 1ns).
    pub fn new(window: Duration, buckets: usize) -> Self {
        let buckets = buckets.max(1);
        let width = saturating_nanos(window) / buckets as u64;
        Self {
            width_nanos: width.max(1),
            origin: None,
            slots: vec![(0, T::default()); buckets].into_boxed_slice(),
        }
    }

    fn epoch(&self, origin: Instant, now: Instant) -> u64 {
        // Callers may race slightly (`now` taken before the lock): an instant before
        // the origin falls into epoch 0 rather than panicking.
        saturating_nanos(now.saturating_duration_since(origin)) / self.width_nanos
    }

    /// Applies `f` to the bucket covering `now`. Updates older than the whole window
    /// (possible only with a badly out-of-order `now`) are dropped.
    pub fn update(&mut self, now: Instant, f: impl FnOnce(&mut T)) {
        let origin = *self.origin.get_or_insert(now);
        let epoch = self.epoch(origin, now);
        let len = self.slots.len() as u64;
        let slot = &mut self.slots[(epoch % len) as usize];
        if slot.0 < epoch {
            *slot = (epoch, T::default());
        } else if slot.0 > epoch {
            return;
        }
        f(&mut slot.1);
    }

    /// Folds the buckets still inside the window at `now`.
    pub fn fold<A>(&self, now: Instant, init: A, mut f: impl FnMut(A, &T) -> A) -> A {
        let Some(origin) = self.origin else {
            return init;
        };
        let epoch = self.epoch(origin, now);
        let len = self.slots.len() as u64;
        // Slots slightly in the future (an out-of-order `now`) still count.
        self.slots
            .iter()
            .filter(|(e, _)| e.saturating_add(len) > epoch)
            .fold(init, |acc, (_, v)| f(acc, v))
    }

    /// Forgets everything recorded so far.
    pub fn clear(&mut self) {
        self.slots.fill((0, T::default()));
    }
}

/// The result of one call, as the circuit breaker classifies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Outcome {
    pub failure: bool,
    pub slow: bool,
}

#[derive(Debug, Clone, Copy, Default)]
struct Counts {
    total: u64,
    failures: u64,
    slow: u64,
}

/// Outcome counts over a rolling time window.
#[derive(Debug, Clone)]
pub struct RollingWindow {
    buckets: TimeBuckets<Counts>,
}

impl RollingWindow {
    pub fn new(window: Duration, buckets: usize) -> Self {
        Self {
            buckets: TimeBuckets::new(window, buckets),
        }
    }

    pub fn record(&mut self, now: Instant, outcome: Outcome) {
        self.buckets.update(now, |c| {
            c.total += 1;
            c.failures += u64::from(outcome.failure);
            c.slow += u64::from(outcome.slow);
        });
    }

    /// `(total, failures, slow)` within the window ending at `now`.
    pub fn totals(&self, now: Instant) -> (u64, u64, u64) {
        self.buckets.fold(now, (0, 0, 0), |(t, f, s), c| {
            (t + c.total, f + c.failures, s + c.slow)
        })
    }

    pub fn reset(&mut self) {
        self.buckets.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAIL: Outcome = Outcome {
        failure: true,
        slow: false,
    };
    const SLOW: Outcome = Outcome {
        failure: false,
        slow: true,
    };
    const OK: Outcome = Outcome {
        failure: false,
        slow: false,
    };

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn empty_window_is_zero() {
        let w = RollingWindow::new(Duration::from_secs(10), 10);
        assert_eq!(w.totals(Instant::now()), (0, 0, 0));
    }

    #[test]
    fn counts_each_kind() {
        let t0 = Instant::now();
        let mut w = RollingWindow::new(Duration::from_secs(10), 10);
        w.record(t0, OK);
        w.record(t0 + ms(1), FAIL);
        w.record(t0 + ms(2), SLOW);
        w.record(
            t0 + ms(3),
            Outcome {
                failure: true,
                slow: true,
            },
        );
        assert_eq!(w.totals(t0 + ms(3)), (4, 2, 2));
    }

    #[test]
    fn buckets_expire_exactly_one_window_after_their_start() {
        let t0 = Instant::now();
        let mut w = RollingWindow::new(Duration::from_secs(10), 10); // 1s buckets
        w.record(t0, FAIL); // bucket [0s, 1s)
        w.record(t0 + ms(999), FAIL); // same bucket
        w.record(t0 + ms(1000), OK); // bucket [1s, 2s)
        assert_eq!(w.totals(t0 + ms(9_999)), (3, 2, 0));
        // At 10s the first bucket leaves the window, both of its entries together.
        assert_eq!(w.totals(t0 + ms(10_000)), (1, 0, 0));
        assert_eq!(w.totals(t0 + ms(10_999)), (1, 0, 0));
        assert_eq!(w.totals(t0 + ms(11_000)), (0, 0, 0));
    }

    #[test]
    fn reused_slot_is_cleared_lazily() {
        let t0 = Instant::now();
        let mut w = RollingWindow::new(Duration::from_secs(10), 10);
        w.record(t0 + ms(500), FAIL);
        // 10s later the same slot is reused; the old failure must not leak in.
        w.record(t0 + ms(10_500), OK);
        assert_eq!(w.totals(t0 + ms(10_500)), (1, 0, 0));
    }

    #[test]
    fn long_idle_forgets_everything() {
        let t0 = Instant::now();
        let mut w = RollingWindow::new(Duration::from_secs(10), 10);
        for i in 0..10 {
            w.record(t0 + Duration::from_secs(i), FAIL);
        }
        assert_eq!(w.totals(t0 + ms(9_000)), (10, 10, 0));
        let later = t0 + Duration::from_secs(3600);
        assert_eq!(w.totals(later), (0, 0, 0));
        w.record(later, OK);
        assert_eq!(w.totals(later), (1, 0, 0));
    }

    #[test]
    fn slides_one_bucket_at_a_time() {
        let t0 = Instant::now();
        let mut w = RollingWindow::new(Duration::from_secs(5), 5);
        for s in 0..5 {
            w.record(t0 + Duration::from_secs(s), FAIL);
        }
        for s in 5..10u64 {
            // Exactly one bucket has expired per elapsed second.
            assert_eq!(w.totals(t0 + Duration::from_secs(s)).0, 9 - s);
        }
    }

    #[test]
    fn reset_clears() {
        let t0 = Instant::now();
        let mut w = RollingWindow::new(Duration::from_secs(10), 10);
        w.record(t0, FAIL);
        w.reset();
        assert_eq!(w.totals(t0), (0, 0, 0));
        w.record(t0 + ms(1), OK);
        assert_eq!(w.totals(t0 + ms(1)), (1, 0, 0));
    }

    #[test]
    fn out_of_order_instants_are_tolerated() {
        let t0 = Instant::now() + Duration::from_secs(1);
        let mut w = RollingWindow::new(Duration::from_secs(10), 10);
        w.record(t0, FAIL);
        // Taken before the origin (lost a race for the lock): lands in epoch 0.
        w.record(t0 - ms(1), FAIL);
        assert_eq!(w.totals(t0), (2, 2, 0));
        // A read with a slightly older `now` still sees the newer bucket.
        w.record(t0 + ms(1_500), OK);
        assert_eq!(w.totals(t0 + ms(900)), (3, 2, 0));
        // Older than the whole window when it arrives: dropped, not misfiled.
        w.record(t0 + ms(20_000), OK);
        w.record(t0 + ms(1), FAIL);
        assert_eq!(w.totals(t0 + ms(20_000)), (1, 0, 0));
    }

    #[test]
    fn degenerate_sizes_do_not_panic() {
        let t0 = Instant::now();
        let mut w = RollingWindow::new(Duration::ZERO, 0);
        w.record(t0, FAIL);
        assert_eq!(w.totals(t0), (1, 1, 0));
        assert_eq!(w.totals(t0 + Duration::from_nanos(1)), (0, 0, 0));
    }
}
