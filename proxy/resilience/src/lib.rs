//! Pure resilience state machines (and the gRPC wire values they read):
//! no I/O, no clocks, no global randomness.
//!
//! Every function takes the current time (`now`) and, where needed, an RNG from the
//! caller, so behaviour is deterministic under test and the types can sit behind a
//! short-held `std::sync::Mutex` on the hot path (none allocates per call).
#![forbid(unsafe_code)]

pub mod backoff;
pub mod breaker;
pub mod budget;
pub mod grpc;
pub mod outlier;
pub mod rate_limit;
pub mod window;

pub use backoff::{next_delay, parse_retry_after, Backoff};
pub use breaker::{
    Admission, BreakerConfig, CircuitBreaker, Permit, PermitKind, State, Transition,
};
pub use budget::RetryBudget;
pub use outlier::{Ejection, OutlierDetector};
pub use rate_limit::TokenBucket;
pub use window::{Outcome, RollingWindow, TimeBuckets};

use std::time::{Duration, Instant};

/// `now + after`, saturating instead of panicking: durations come from user policy
/// (`maxOpenFor: 100000h` must not crash the proxy).
pub(crate) fn deadline(now: Instant, after: Duration) -> Instant {
    // ~136 years: far beyond any process lifetime, yet representable on every platform.
    const FAR: Duration = Duration::from_secs(u32::MAX as u64);
    now.checked_add(after)
        .or_else(|| now.checked_add(FAR))
        .unwrap_or(now)
}

/// Whole nanoseconds of `d`, saturating at `u64::MAX` (~584 years).
pub(crate) fn saturating_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadline_saturates_instead_of_panicking() {
        let now = Instant::now();
        assert_eq!(
            deadline(now, Duration::from_secs(5)),
            now + Duration::from_secs(5)
        );
        assert!(deadline(now, Duration::MAX) > now + Duration::from_secs(1_000_000));
    }

    #[test]
    fn every_state_machine_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Backoff>();
        assert_send_sync::<RetryBudget>();
        assert_send_sync::<RollingWindow>();
        assert_send_sync::<CircuitBreaker>();
        assert_send_sync::<OutlierDetector<std::net::SocketAddr>>();
        assert_send_sync::<TokenBucket>();
    }
}
