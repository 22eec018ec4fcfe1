//! Circuit breaker: Closed → Open when the failure (or slow-call) rate over a
//! rolling window reaches its threshold after a minimum number of calls; Open
//! for `open_for`, doubling on each re-trip up to `max_open_for`; then HalfOpen,
//! which admits exactly `half_open_requests` probes and closes only if all of
//! them succeed.

use std::time::{Duration, Instant};

use super::window::{Outcome, RollingWindow};

const BUCKETS: usize = 10;

#[derive(Debug, Clone, PartialEq)]
pub struct BreakerConfig {
    pub failure_rate_percent: u32,
    pub minimum_requests: u32,
    pub window: Duration,
    /// (duration at or above which a call is slow, slow-call rate that trips).
    pub slow_call: Option<(Duration, u32)>,
    pub open_for: Duration,
    pub max_open_for: Duration,
    pub half_open_requests: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half-open",
        }
    }

    /// The value of the state gauge: 0 closed, 1 open, 2 half-open.
    pub fn gauge_value(self) -> i64 {
        match self {
            BreakerState::Closed => 0,
            BreakerState::Open => 1,
            BreakerState::HalfOpen => 2,
        }
    }
}

/// Which state admitted a call: results are only counted by the state that
/// admitted them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PermitKind {
    Normal,
    Probe,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Allowed(PermitKind),
    Rejected { retry_after: Duration },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    pub from: BreakerState,
    pub to: BreakerState,
    pub reason: &'static str,
}

#[derive(Debug)]
enum Phase {
    Closed,
    Open { until: Instant },
    HalfOpen { admitted: u32, succeeded: u32 },
}

#[derive(Debug)]
pub struct CircuitBreaker {
    config: BreakerConfig,
    phase: Phase,
    window: RollingWindow,
    /// Consecutive trips without a full recovery: open time is open_for·2^(trips-1).
    trips: u32,
}

impl CircuitBreaker {
    pub fn new(config: BreakerConfig) -> Self {
        CircuitBreaker {
            window: RollingWindow::new(config.window, BUCKETS, Instant::now()),
            config,
            phase: Phase::Closed,
            trips: 0,
        }
    }

    /// The state as of `now` (an elapsed Open reads as HalfOpen).
    pub fn state(&self, now: Instant) -> BreakerState {
        match self.phase {
            Phase::Closed => BreakerState::Closed,
            Phase::Open { until } if until > now => BreakerState::Open,
            Phase::Open { .. } | Phase::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    pub fn try_acquire(&mut self, now: Instant) -> Admission {
        match self.phase {
            Phase::Closed => Admission::Allowed(PermitKind::Normal),
            Phase::Open { until } if until > now => Admission::Rejected {
                retry_after: until - now,
            },
            Phase::Open { .. } => {
                self.phase = Phase::HalfOpen {
                    admitted: 1,
                    succeeded: 0,
                };
                Admission::Allowed(PermitKind::Probe)
            }
            Phase::HalfOpen {
                ref mut admitted, ..
            } => {
                if *admitted < self.config.half_open_requests {
                    *admitted += 1;
                    Admission::Allowed(PermitKind::Probe)
                } else {
                    // Probes are out; their verdict decides. Come back shortly.
                    Admission::Rejected {
                        retry_after: Duration::from_secs(1).min(self.config.open_for),
                    }
                }
            }
        }
    }

    /// Records the result of a call admitted with `kind`.
    pub fn record(
        &mut self,
        now: Instant,
        kind: PermitKind,
        failure: bool,
        elapsed: Duration,
    ) -> Option<Transition> {
        let slow = self
            .config
            .slow_call
            .is_some_and(|(threshold, _)| elapsed >= threshold);
        match (&mut self.phase, kind) {
            (Phase::Closed, PermitKind::Normal) => {
                self.window.record(now, Outcome { failure, slow });
                let reason = self.trip_reason(now)?;
                Some(self.open(now, BreakerState::Closed, reason))
            }
            (Phase::HalfOpen { succeeded, .. }, PermitKind::Probe) => {
                if failure || slow {
                    let reason = if failure {
                        "probe failed"
                    } else {
                        "probe slow"
                    };
                    return Some(self.open(now, BreakerState::HalfOpen, reason));
                }
                *succeeded += 1;
                if *succeeded >= self.config.half_open_requests {
                    self.phase = Phase::Closed;
                    self.trips = 0;
                    self.window.reset();
                    return Some(Transition {
                        from: BreakerState::HalfOpen,
                        to: BreakerState::Closed,
                        reason: "probes succeeded",
                    });
                }
                None
            }
            // Results of calls admitted under another state say nothing about now.
            _ => None,
        }
    }

    fn trip_reason(&self, now: Instant) -> Option<&'static str> {
        let (total, failures, slow) = self.window.totals(now);
        if total < self.config.minimum_requests || total == 0 {
            return None;
        }
        if u64::from(failures) * 100
            >= u64::from(self.config.failure_rate_percent) * u64::from(total)
        {
            return Some("failure rate");
        }
        let slow_tripped = self.config.slow_call.is_some_and(|(_, percent)| {
            u64::from(slow) * 100 >= u64::from(percent) * u64::from(total)
        });
        slow_tripped.then_some("slow-call rate")
    }

    fn open(&mut self, now: Instant, from: BreakerState, reason: &'static str) -> Transition {
        self.trips += 1;
        let factor = 1u32.checked_shl(self.trips - 1).unwrap_or(u32::MAX);
        let open_for = self
            .config
            .open_for
            .checked_mul(factor)
            .unwrap_or(self.config.max_open_for)
            .min(self.config.max_open_for);
        self.phase = Phase::Open {
            until: now + open_for,
        };
        self.window.reset();
        Transition {
            from,
            to: BreakerState::Open,
            reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn breaker() -> CircuitBreaker {
        CircuitBreaker::new(BreakerConfig {
            failure_rate_percent: 50,
            minimum_requests: 10,
            window: Duration::from_secs(10),
            slow_call: Some((Duration::from_millis(500), 80)),
            open_for: Duration::from_secs(30),
            max_open_for: Duration::from_secs(100),
            half_open_requests: 3,
        })
    }

    fn fail(b: &mut CircuitBreaker, now: Instant, n: usize) -> Option<Transition> {
        let mut last = None;
        for _ in 0..n {
            assert_eq!(b.try_acquire(now), Admission::Allowed(PermitKind::Normal));
            last = b.record(now, PermitKind::Normal, true, MS).or(last);
        }
        last
    }

    #[test]
    fn opens_only_after_minimum_requests() {
        let t0 = Instant::now();
        let mut b = breaker();
        assert_eq!(fail(&mut b, t0, 9), None);
        assert_eq!(b.state(t0), BreakerState::Closed);
        let t = fail(&mut b, t0, 1).unwrap();
        assert_eq!(
            (t.from, t.to, t.reason),
            (BreakerState::Closed, BreakerState::Open, "failure rate")
        );
        assert_eq!(
            b.try_acquire(t0 + Duration::from_secs(10)),
            Admission::Rejected {
                retry_after: Duration::from_secs(20)
            }
        );
    }

    #[test]
    fn failure_rate_below_threshold_stays_closed() {
        let t0 = Instant::now();
        let mut b = breaker();
        for i in 0..100 {
            b.try_acquire(t0);
            assert_eq!(b.record(t0, PermitKind::Normal, i % 3 == 0, MS), None);
        }
    }

    #[test]
    fn half_open_admits_exactly_n_probes_and_closes_on_success() {
        let t0 = Instant::now();
        let mut b = breaker();
        fail(&mut b, t0, 10);
        let t1 = t0 + Duration::from_secs(30);
        assert_eq!(b.state(t1), BreakerState::HalfOpen);
        for _ in 0..3 {
            assert_eq!(b.try_acquire(t1), Admission::Allowed(PermitKind::Probe));
        }
        assert!(matches!(b.try_acquire(t1), Admission::Rejected { .. }));
        // A late result of a call admitted while closed does not count.
        assert_eq!(b.record(t1, PermitKind::Normal, false, MS), None);
        assert_eq!(b.record(t1, PermitKind::Probe, false, MS), None);
        assert_eq!(b.record(t1, PermitKind::Probe, false, MS), None);
        let t = b.record(t1, PermitKind::Probe, false, MS).unwrap();
        assert_eq!(
            (t.from, t.to),
            (BreakerState::HalfOpen, BreakerState::Closed)
        );
        assert_eq!(b.state(t1), BreakerState::Closed);
    }

    #[test]
    fn failed_probe_reopens_for_twice_as_long_capped() {
        let t0 = Instant::now();
        let mut b = breaker();
        fail(&mut b, t0, 10);
        let mut now = t0;
        for expected in [60, 100, 100] {
            now += Duration::from_secs(200);
            assert_eq!(b.try_acquire(now), Admission::Allowed(PermitKind::Probe));
            let t = b.record(now, PermitKind::Probe, true, MS).unwrap();
            assert_eq!((t.from, t.to), (BreakerState::HalfOpen, BreakerState::Open));
            assert_eq!(
                b.try_acquire(now),
                Admission::Rejected {
                    retry_after: Duration::from_secs(expected)
                }
            );
        }
    }

    #[test]
    fn slow_calls_trip_it() {
        let t0 = Instant::now();
        let mut b = breaker();
        let mut transition = None;
        for _ in 0..10 {
            b.try_acquire(t0);
            transition = b.record(t0, PermitKind::Normal, false, Duration::from_secs(1));
        }
        assert_eq!(transition.unwrap().reason, "slow-call rate");
    }
}
