//! Resilience state machines with no I/O: each takes the current time as an
//! argument, so tests drive them deterministically, and each is cheap enough to
//! sit behind a mutex held for microseconds (never across an await).

mod backoff;
mod breaker;
mod budget;
mod outlier;
mod rate_limit;
mod window;

pub use backoff::{parse_retry_after, Backoff};
pub use breaker::{Admission, BreakerConfig, BreakerState, CircuitBreaker, PermitKind, Transition};
pub use budget::RetryBudget;
pub use outlier::{Ejection, OutlierDetector};
pub use rate_limit::TokenBucket;
pub use window::{Outcome, RollingWindow};
