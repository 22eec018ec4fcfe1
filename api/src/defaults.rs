//! Defaults applied where a policy leaves a field unset (documented on each field).

pub const REQUEST_TIMEOUT_SECS: u64 = 15;
pub const CONNECT_TIMEOUT_SECS: u64 = 1;
pub const IDLE_TIMEOUT_SECS: u64 = 300;
pub const RETRY_ATTEMPTS: u32 = 2;
pub const RETRY_CODES: [u16; 3] = [502, 503, 504];
pub const BACKOFF_BASE_MS: u64 = 25;
pub const BACKOFF_MAX_MS: u64 = 1000;
pub const BUDGET_PERCENT: u32 = 20;
pub const BUDGET_INTERVAL_SECS: u64 = 10;
pub const MIN_RETRIES_PER_SECOND: u32 = 10;
pub const MAX_BUFFERED_BODY_BYTES: u64 = 64 * 1024;
pub const FAILURE_RATE_PERCENT: u32 = 50;
pub const MINIMUM_REQUESTS: u32 = 20;
pub const WINDOW_SECS: u64 = 10;
pub const OPEN_FOR_SECS: u64 = 30;
pub const MAX_OPEN_FOR_SECS: u64 = 300;
pub const HALF_OPEN_REQUESTS: u32 = 3;
pub const FALLBACK_STATUS: u16 = 503;
pub const CONSECUTIVE_FAILURES: u32 = 5;
pub const BASE_EJECTION_SECS: u64 = 30;
pub const MAX_EJECTION_PERCENT: u32 = 50;
pub const PENDING_TIMEOUT_SECS: u64 = 1;
