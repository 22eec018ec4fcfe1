//! Circuit breaker (resilience4j-style rates over a rolling time window, with
//! opossum-style growing open periods).
//!
//! The breaker only decides; the caller enforces. In DryRun mode a caller forwards a
//! `Rejected` request anyway and simply records nothing for it (it has no permit).
//!
//! Every transition bumps a generation stamped into each permit, and results carrying
//! an older generation are ignored: a request admitted while Closed that finishes
//! during HalfOpen, or a probe from a previous half-open round, cannot skew the
//! current state's accounting.

use std::time::{Duration, Instant};

use super::backoff::Backoff;
use super::deadline;
use super::window::{Outcome, RollingWindow};

/// Buckets in the rolling window: rates are accurate to a tenth of `window`.
const WINDOW_BUCKETS: usize = 10;

/// What to tell callers rejected while half-open probes are in flight. When the
/// circuit will close is unknown (it depends on the probes), so "shortly": one second
/// is the smallest non-zero `Retry-After` a client can be given.
pub const HALF_OPEN_RETRY_AFTER: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Trip when failures are at least this share of the window (1-100).
    pub failure_rate_percent: u32,
    /// No verdict until the window holds this many results.
    pub minimum_requests: u32,
    pub window: Duration,
    /// `(duration, rate_percent)`: a call taking at least `duration` is slow, and the
    /// circuit trips when slow calls are at least `rate_percent` of the window.
    pub slow_call: Option<(Duration, u32)>,
    /// Length of the first open period; each re-trip without recovery doubles it.
    pub open_for: Duration,
    /// Cap on the doubled open period (treated as `open_for` if set below it).
    pub max_open_for: Duration,
    /// Probes admitted per half-open round; all must succeed to close (min 1).
    pub half_open_requests: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    Closed,
    Open,
    HalfOpen,
}

impl State {
    /// Metric/log label.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half-open",
        }
    }

    /// Value for the `outrigger_circuit_state` gauge.
    pub fn state_gauge_value(self) -> i64 {
        match self {
            State::Closed => 0,
            State::Open => 1,
            State::HalfOpen => 2,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PermitKind {
    /// Ordinary traffic while closed.
    Normal,
    /// One of the limited half-open trial requests.
    Probe,
}

/// Proof of admission; hand it back to [`CircuitBreaker::record`] or
/// [`CircuitBreaker::release`]. Only the breaker can make one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Permit {
    kind: PermitKind,
    generation: u64,
}

impl Permit {
    pub fn kind(&self) -> PermitKind {
        self.kind
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Allowed(Permit),
    Rejected { retry_after: Duration },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    pub from: State,
    pub to: State,
    /// Why, for logs: "failure-rate", "slow-call-rate", "open-elapsed",
    /// "probe-failed", "probe-slow", "probes-succeeded".
    pub reason: &'static str,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Closed,
    /// `trips`: consecutive trips without a full recovery (sets the open period).
    Open {
        until: Instant,
        trips: u32,
    },
    HalfOpen {
        admitted: u32,
        succeeded: u32,
        trips: u32,
    },
}

#[derive(Debug, Clone)]
pub struct CircuitBreaker {
    config: BreakerConfig,
    /// Open periods grow like a backoff ceiling, without jitter.
    open_periods: Backoff,
    window: RollingWindow,
    phase: Phase,
    generation: u64,
}

impl CircuitBreaker {
    pub fn new(mut config: BreakerConfig) -> Self {
        // Zero probes would leave the breaker half-open forever.
        config.half_open_requests = config.half_open_requests.max(1);
        Self {
            open_periods: Backoff {
                base: config.open_for,
                max: config.max_open_for.max(config.open_for),
            },
            window: RollingWindow::new(config.window, WINDOW_BUCKETS),
            config,
            phase: Phase::Closed,
            generation: 0,
        }
    }

    /// The state as seen at `now` (an elapsed open period reads as half-open).
    pub fn state(&self, now: Instant) -> State {
        match self.phase {
            Phase::Closed => State::Closed,
            Phase::Open { until, .. } if now < until => State::Open,
            Phase::Open { .. } | Phase::HalfOpen { .. } => State::HalfOpen,
        }
    }

    /// Asks to send a request.
    pub fn try_acquire(&mut self, now: Instant) -> Admission {
        self.try_acquire_with_transition(now).0
    }

    /// [`Self::try_acquire`], also reporting the open -> half-open transition it may
    /// cause (for transition metrics and logs).
    pub fn try_acquire_with_transition(&mut self, now: Instant) -> (Admission, Option<Transition>) {
        let mut transition = None;
        if let Phase::Open { until, trips } = self.phase {
            if now < until {
                let retry_after = until - now;
                return (Admission::Rejected { retry_after }, None);
            }
            self.enter(Phase::HalfOpen {
                admitted: 0,
                succeeded: 0,
                trips,
            });
            transition = Some(Transition {
                from: State::Open,
                to: State::HalfOpen,
                reason: "open-elapsed",
            });
        }
        let generation = self.generation;
        let admission = match &mut self.phase {
            Phase::Closed => Admission::Allowed(Permit {
                kind: PermitKind::Normal,
                generation,
            }),
            Phase::HalfOpen { admitted, .. } if *admitted < self.config.half_open_requests => {
                *admitted += 1;
                Admission::Allowed(Permit {
                    kind: PermitKind::Probe,
                    generation,
                })
            }
            _ => Admission::Rejected {
                retry_after: HALF_OPEN_RETRY_AFTER,
            },
        };
        (admission, transition)
    }

    /// Reports how an admitted request went. `elapsed` decides slowness. Returns the
    /// transition this result caused, if any.
    pub fn record(
        &mut self,
        now: Instant,
        permit: Permit,
        failure: bool,
        elapsed: Duration,
    ) -> Option<Transition> {
        if permit.generation != self.generation {
            return None; // admitted under an earlier state
        }
        let slow = self
            .config
            .slow_call
            .is_some_and(|(threshold, _)| elapsed >= threshold);
        match self.phase {
            Phase::Closed => {
                self.window.record(now, Outcome { failure, slow });
                let reason = self.trip_reason(now)?;
                Some(self.open(now, 1, State::Closed, reason))
            }
            Phase::HalfOpen {
                admitted,
                succeeded,
                trips,
            } => {
                // Recovery must be convincing: one bad probe (failed, or slow when slow
                // calls are tracked) reopens, for longer.
                if failure || slow {
                    let reason = if failure {
                        "probe-failed"
                    } else {
                        "probe-slow"
                    };
                    return Some(self.open(now, trips.saturating_add(1), State::HalfOpen, reason));
                }
                let succeeded = succeeded + 1;
                if succeeded < self.config.half_open_requests {
                    self.phase = Phase::HalfOpen {
                        admitted,
                        succeeded,
                        trips,
                    };
                    return None;
                }
                self.window.reset();
                self.enter(Phase::Closed);
                Some(Transition {
                    from: State::HalfOpen,
                    to: State::Closed,
                    reason: "probes-succeeded",
                })
            }
            // No permit of the current generation is issued while open.
            Phase::Open { .. } => None,
        }
    }

    /// Returns a permit whose request ended without a verdict (e.g. the client went
    /// away), so a half-open round does not wait forever for that probe.
    pub fn release(&mut self, permit: Permit) {
        if permit.generation != self.generation {
            return;
        }
        if let Phase::HalfOpen { admitted, .. } = &mut self.phase {
            *admitted = admitted.saturating_sub(1);
        }
    }

    fn trip_reason(&self, now: Instant) -> Option<&'static str> {
        let (total, failures, slow) = self.window.totals(now);
        if total < u64::from(self.config.minimum_requests) {
            return None;
        }
        // `x > 0` guards a 0% threshold from tripping on a clean window.
        let at_least = |count: u64, percent: u32| {
            count > 0 && count.saturating_mul(100) >= u64::from(percent).saturating_mul(total)
        };
        if at_least(failures, self.config.failure_rate_percent) {
            return Some("failure-rate");
        }
        match self.config.slow_call {
            Some((_, percent)) if at_least(slow, percent) => Some("slow-call-rate"),
            _ => None,
        }
    }

    fn open(&mut self, now: Instant, trips: u32, from: State, reason: &'static str) -> Transition {
        let period = self.open_periods.ceiling(trips - 1);
        self.enter(Phase::Open {
            until: deadline(now, period),
            trips,
        });
        Transition {
            from,
            to: State::Open,
            reason,
        }
    }

    fn enter(&mut self, phase: Phase) {
        self.phase = phase;
        self.generation = self.generation.wrapping_add(1);
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

    fn config() -> BreakerConfig {
        BreakerConfig {
            failure_rate_percent: 50,
            minimum_requests: 20,
            window: secs(10),
            slow_call: None,
            open_for: secs(30),
            max_open_for: secs(100),
            half_open_requests: 3,
        }
    }

    fn permit(b: &mut CircuitBreaker, now: Instant) -> Permit {
        match b.try_acquire(now) {
            Admission::Allowed(p) => p,
            other => panic!("expected admission, got {other:?}"),
        }
    }

    /// Sends one request finishing immediately; returns any transition.
    fn call(b: &mut CircuitBreaker, now: Instant, failure: bool) -> Option<Transition> {
        let p = permit(b, now);
        b.record(now, p, failure, ms(1))
    }

    fn rejected_for(b: &mut CircuitBreaker, now: Instant) -> Duration {
        match b.try_acquire(now) {
            Admission::Rejected { retry_after } => retry_after,
            other => panic!("expected rejection, got {other:?}"),
        }
    }

    /// Trips a fresh breaker at `t0` with 20 failures.
    fn tripped(t0: Instant) -> CircuitBreaker {
        let mut b = CircuitBreaker::new(config());
        for _ in 0..19 {
            assert_eq!(call(&mut b, t0, true), None);
        }
        assert!(call(&mut b, t0, true).is_some());
        b
    }

    #[test]
    fn does_not_open_below_minimum_requests_even_at_total_failure() {
        let t0 = Instant::now();
        let mut b = CircuitBreaker::new(config());
        for _ in 0..19 {
            assert_eq!(call(&mut b, t0, true), None);
        }
        assert_eq!(b.state(t0), State::Closed);
    }

    #[test]
    fn opens_exactly_at_the_failure_rate_threshold() {
        let t0 = Instant::now();
        let mut b = CircuitBreaker::new(config());
        for _ in 0..10 {
            call(&mut b, t0, false);
        }
        for _ in 0..9 {
            assert_eq!(call(&mut b, t0, true), None);
        }
        // 10 of 20 = 50%: trips.
        assert_eq!(
            call(&mut b, t0, true),
            Some(Transition {
                from: State::Closed,
                to: State::Open,
                reason: "failure-rate"
            })
        );
        assert_eq!(b.state(t0), State::Open);
    }

    #[test]
    fn just_below_threshold_stays_closed() {
        let t0 = Instant::now();
        let mut b = CircuitBreaker::new(config());
        for _ in 0..11 {
            call(&mut b, t0, false);
        }
        for _ in 0..9 {
            assert_eq!(call(&mut b, t0, true), None); // 9/20 = 45%
        }
        assert_eq!(call(&mut b, t0, true), None); // 10/21 = 47.6%
        assert_eq!(b.state(t0), State::Closed);
    }

    #[test]
    fn old_failures_leave_the_window() {
        let t0 = Instant::now();
        let mut b = CircuitBreaker::new(config());
        for _ in 0..19 {
            call(&mut b, t0, true);
        }
        // Ten seconds on those 19 have expired: one more failure is 1 of 1, < minimum.
        assert_eq!(call(&mut b, t0 + secs(10), true), None);
        assert_eq!(b.state(t0 + secs(10)), State::Closed);
    }

    #[test]
    fn open_rejects_with_the_remaining_time() {
        let t0 = Instant::now();
        let mut b = tripped(t0);
        assert_eq!(rejected_for(&mut b, t0), secs(30));
        assert_eq!(rejected_for(&mut b, t0 + ms(29_999)), ms(1));
        assert_eq!(b.state(t0 + ms(29_999)), State::Open);
        assert_eq!(b.state(t0 + secs(30)), State::HalfOpen);
    }

    #[test]
    fn half_open_admits_exactly_n_probes() {
        let t0 = Instant::now();
        let mut b = tripped(t0);
        let t1 = t0 + secs(30);
        let (first, transition) = b.try_acquire_with_transition(t1);
        assert!(matches!(first, Admission::Allowed(p) if p.kind() == PermitKind::Probe));
        assert_eq!(
            transition,
            Some(Transition {
                from: State::Open,
                to: State::HalfOpen,
                reason: "open-elapsed"
            })
        );
        assert_eq!(permit(&mut b, t1).kind(), PermitKind::Probe);
        assert_eq!(permit(&mut b, t1).kind(), PermitKind::Probe);
        assert_eq!(rejected_for(&mut b, t1), HALF_OPEN_RETRY_AFTER);
        assert_eq!(rejected_for(&mut b, t1 + secs(60)), HALF_OPEN_RETRY_AFTER);
        assert_eq!(b.state(t1), State::HalfOpen);
    }

    #[test]
    fn all_probes_succeeding_closes_with_a_clean_slate() {
        let t0 = Instant::now();
        let mut b = tripped(t0);
        let t1 = t0 + secs(30);
        let probes = [permit(&mut b, t1), permit(&mut b, t1), permit(&mut b, t1)];
        assert_eq!(b.record(t1, probes[0], false, ms(1)), None);
        assert_eq!(b.record(t1, probes[1], false, ms(1)), None);
        assert_eq!(b.state(t1), State::HalfOpen);
        assert_eq!(
            b.record(t1, probes[2], false, ms(1)),
            Some(Transition {
                from: State::HalfOpen,
                to: State::Closed,
                reason: "probes-succeeded"
            })
        );
        assert_eq!(b.state(t1), State::Closed);
        // Window reset: 19 failures (which with the old 20 would trip) do not.
        for _ in 0..19 {
            assert_eq!(call(&mut b, t1, true), None);
        }
        // Trip count reset: the next trip opens for the base 30s again.
        assert!(call(&mut b, t1, true).is_some());
        assert_eq!(rejected_for(&mut b, t1), secs(30));
    }

    #[test]
    fn closing_forgets_failures_still_inside_the_window() {
        let t0 = Instant::now();
        // Open shorter than the window, so the tripping failures are still in it.
        let mut b = CircuitBreaker::new(BreakerConfig {
            open_for: secs(1),
            half_open_requests: 1,
            ..config()
        });
        for _ in 0..20 {
            call(&mut b, t0, true);
        }
        let t1 = t0 + secs(1);
        assert_eq!(call(&mut b, t1, false).unwrap().to, State::Closed);
        // 1 failure of 1 would be 100% over 21 results without the reset.
        assert_eq!(call(&mut b, t1, true), None);
        assert_eq!(b.state(t1), State::Closed);
    }

    #[test]
    fn failed_probe_reopens_for_twice_as_long() {
        let t0 = Instant::now();
        let mut b = tripped(t0);
        let t1 = t0 + secs(30);
        let p = permit(&mut b, t1);
        let _still_out = permit(&mut b, t1);
        assert_eq!(
            b.record(t1, p, true, ms(1)),
            Some(Transition {
                from: State::HalfOpen,
                to: State::Open,
                reason: "probe-failed"
            })
        );
        assert_eq!(rejected_for(&mut b, t1), secs(60));
    }

    #[test]
    fn open_period_doubles_per_retrip_up_to_the_cap() {
        let t0 = Instant::now();
        let mut b = tripped(t0);
        let mut now = t0;
        let mut periods = vec![rejected_for(&mut b, now)];
        for _ in 0..4 {
            now += *periods.last().unwrap();
            let p = permit(&mut b, now);
            b.record(now, p, true, ms(1));
            periods.push(rejected_for(&mut b, now));
        }
        assert_eq!(periods, [30, 60, 100, 100, 100].map(secs));
    }

    #[test]
    fn max_below_open_for_means_no_growth() {
        let t0 = Instant::now();
        let mut b = CircuitBreaker::new(BreakerConfig {
            max_open_for: secs(1),
            minimum_requests: 1,
            ..config()
        });
        call(&mut b, t0, true);
        assert_eq!(rejected_for(&mut b, t0), secs(30));
        let t1 = t0 + secs(30);
        let p = permit(&mut b, t1);
        b.record(t1, p, true, ms(1));
        assert_eq!(rejected_for(&mut b, t1), secs(30));
    }

    #[test]
    fn slow_calls_trip_it() {
        let t0 = Instant::now();
        let mut b = CircuitBreaker::new(BreakerConfig {
            slow_call: Some((secs(2), 80)),
            ..config()
        });
        for _ in 0..4 {
            let p = permit(&mut b, t0);
            assert_eq!(b.record(t0, p, false, ms(1_999)), None); // just under: not slow
        }
        for _ in 0..15 {
            let p = permit(&mut b, t0);
            assert_eq!(b.record(t0, p, false, secs(2)), None);
        }
        // 16 slow of 20 = 80%, with no failures at all.
        let p = permit(&mut b, t0);
        assert_eq!(
            b.record(t0, p, false, secs(2)),
            Some(Transition {
                from: State::Closed,
                to: State::Open,
                reason: "slow-call-rate"
            })
        );
    }

    #[test]
    fn slowness_is_ignored_without_slow_call_config() {
        let t0 = Instant::now();
        let mut b = CircuitBreaker::new(config());
        for _ in 0..50 {
            let p = permit(&mut b, t0);
            assert_eq!(b.record(t0, p, false, secs(3600)), None);
        }
    }

    #[test]
    fn slow_probe_reopens() {
        let t0 = Instant::now();
        let mut b = CircuitBreaker::new(BreakerConfig {
            slow_call: Some((secs(2), 80)),
            ..config()
        });
        for _ in 0..20 {
            call(&mut b, t0, true);
        }
        let t1 = t0 + secs(30);
        let p = permit(&mut b, t1);
        let t = b.record(t1, p, false, secs(2)).unwrap();
        assert_eq!((t.to, t.reason), (State::Open, "probe-slow"));
    }

    #[test]
    fn stale_normal_results_do_not_count_in_half_open() {
        let t0 = Instant::now();
        let mut b = CircuitBreaker::new(config());
        let in_flight: Vec<Permit> = (0..5).map(|_| permit(&mut b, t0)).collect();
        for _ in 0..20 {
            call(&mut b, t0, true);
        }
        let t1 = t0 + secs(30);
        let probes = [permit(&mut b, t1), permit(&mut b, t1), permit(&mut b, t1)];
        // Old successes must not close it; old failures must not reopen it.
        for (i, p) in in_flight.iter().enumerate() {
            assert_eq!(b.record(t1, *p, i % 2 == 0, ms(1)), None);
        }
        assert_eq!(b.state(t1), State::HalfOpen);
        assert_eq!(rejected_for(&mut b, t1), HALF_OPEN_RETRY_AFTER);
        for p in &probes[..2] {
            assert_eq!(b.record(t1, *p, false, ms(1)), None);
        }
        let t = b.record(t1, probes[2], false, ms(1)).unwrap();
        assert_eq!(t.to, State::Closed);
    }

    #[test]
    fn stale_probe_from_an_earlier_round_is_ignored() {
        let t0 = Instant::now();
        let mut b = tripped(t0);
        let t1 = t0 + secs(30);
        let failing = permit(&mut b, t1);
        let straggler = permit(&mut b, t1);
        b.record(t1, failing, true, ms(1)); // reopen for 60s
        let t2 = t1 + secs(60);
        let fresh = permit(&mut b, t2);
        // The straggler from round one fails late: the new round is unaffected.
        assert_eq!(b.record(t2, straggler, true, ms(1)), None);
        assert_eq!(b.state(t2), State::HalfOpen);
        assert_eq!(b.record(t2, fresh, false, ms(1)), None);
    }

    #[test]
    fn results_arriving_while_open_are_ignored() {
        let t0 = Instant::now();
        let mut b = CircuitBreaker::new(config());
        let late = permit(&mut b, t0);
        for _ in 0..20 {
            call(&mut b, t0, true);
        }
        assert_eq!(b.record(t0 + secs(1), late, true, ms(1)), None);
        assert_eq!(rejected_for(&mut b, t0 + secs(1)), secs(29));
    }

    #[test]
    fn released_probe_frees_its_slot() {
        let t0 = Instant::now();
        let mut b = tripped(t0);
        let t1 = t0 + secs(30);
        let probes = [permit(&mut b, t1), permit(&mut b, t1), permit(&mut b, t1)];
        rejected_for(&mut b, t1);
        b.release(probes[0]);
        let replacement = permit(&mut b, t1);
        rejected_for(&mut b, t1);
        for p in [probes[1], probes[2], replacement] {
            b.record(t1, p, false, ms(1));
        }
        assert_eq!(b.state(t1), State::Closed);
    }

    #[test]
    fn zero_half_open_requests_still_probes_once() {
        let t0 = Instant::now();
        let mut b = CircuitBreaker::new(BreakerConfig {
            half_open_requests: 0,
            ..config()
        });
        for _ in 0..20 {
            call(&mut b, t0, true);
        }
        let t1 = t0 + secs(30);
        let p = permit(&mut b, t1);
        rejected_for(&mut b, t1);
        assert_eq!(b.record(t1, p, false, ms(1)).unwrap().to, State::Closed);
    }

    #[test]
    fn zero_failure_threshold_needs_a_failure() {
        let t0 = Instant::now();
        let mut b = CircuitBreaker::new(BreakerConfig {
            failure_rate_percent: 0,
            minimum_requests: 1,
            ..config()
        });
        assert_eq!(call(&mut b, t0, false), None);
        assert!(call(&mut b, t0, true).is_some());
    }

    #[test]
    fn labels_and_gauge_values() {
        let all = [State::Closed, State::Open, State::HalfOpen];
        assert_eq!(all.map(State::as_str), ["closed", "open", "half-open"]);
        assert_eq!(all.map(State::state_gauge_value), [0, 1, 2]);
    }
}
