//! The resilience engine: per-destination stacks compiled from policy and the
//! per-request path through them (limits, timeouts, retries, breaker,
//! balancing, outlier ejection).
#![forbid(unsafe_code)]

pub mod backends;
pub mod balancer;
pub mod cache;
pub mod call;
pub mod config;
pub mod guarded_body;
pub mod limits;
pub mod route_match;
pub mod route_memo;
pub mod stack;
pub mod steer;

pub use cache::Engine;
