//! Admission: the inbound rate limit (429 with Retry-After), then the
//! concurrency limit (503 `overloaded` when its queue is full or the wait
//! passes `pendingTimeout`). The slot returned is held until the response
//! body ends. Under `DryRun` both only count what they would reject.

use tokio::sync::OwnedSemaphorePermit;

use super::error::CallError;
use super::now;
use crate::stack::DestinationStack;
use outrigger_http::error_response::ProxyError;

pub async fn admit(stack: &DestinationStack) -> Result<Option<OwnedSemaphorePermit>, CallError> {
    rate_limit(stack)?;
    concurrency_limit(stack).await
}

fn rate_limit(stack: &DestinationStack) -> Result<(), CallError> {
    let Some(bucket) = &stack.rate_limit else {
        return Ok(());
    };
    let verdict = bucket.lock().expect("not poisoned").try_take(now());
    let Err(retry_after) = verdict else {
        return Ok(());
    };
    let metrics = &stack.metrics.resilience;
    if stack.config.dry_run {
        would_reject(stack, "rate-limited");
        return Ok(());
    }
    metrics
        .rate_limited
        .with_label_values(&[stack.direction, &stack.label])
        .inc();
    Err(CallError::Proxy {
        error: ProxyError::RateLimited,
        detail: "request rate above the policy's rateLimit".into(),
        retry_after: Some(retry_after),
    })
}

async fn concurrency_limit(
    stack: &DestinationStack,
) -> Result<Option<OwnedSemaphorePermit>, CallError> {
    let Some(limit) = &stack.limit else {
        return Ok(None);
    };
    match limit.acquire().await {
        Ok(permit) => Ok(Some(permit)),
        Err(shed) if stack.config.dry_run => {
            would_reject(stack, shed.as_str());
            Ok(None)
        }
        Err(shed) => {
            stack
                .metrics
                .resilience
                .shed
                .with_label_values(&[stack.direction, &stack.label, shed.as_str()])
                .inc();
            Err(CallError::new(
                ProxyError::Overloaded,
                format!(
                    "{} is at its concurrency limit ({})",
                    stack.label,
                    shed.as_str()
                ),
            ))
        }
    }
}

fn would_reject(stack: &DestinationStack, reason: &str) {
    stack
        .metrics
        .resilience
        .dry_run_would_reject
        .with_label_values(&[stack.direction, &stack.label, reason])
        .inc();
}

#[cfg(test)]
mod tests {
    use super::super::testing::{config, counter, stack};
    use super::*;
    use crate::config::{LimitSettings, RateLimitSettings};
    use outrigger_http::error_response::ERROR_HEADER;
    use std::time::Duration;

    fn limited(max_pending: u32, dry_run: bool) -> DestinationStack {
        let mut config = config();
        config.dry_run = dry_run;
        config.limits = Some(LimitSettings {
            max_concurrent: 1,
            max_pending,
            pending_timeout: Duration::from_millis(300),
        });
        stack(config, 1)
    }

    #[tokio::test(start_paused = true)]
    async fn rate_limit_answers_429_with_retry_after() {
        let mut config = config();
        config.rate_limit = Some(RateLimitSettings {
            requests_per_second: 2,
            burst: 1,
        });
        let stack = stack(config, 1);
        assert!(admit(&stack).await.is_ok());
        let response = admit(&stack).await.unwrap_err().into_response();
        assert_eq!(response.status(), 429);
        assert_eq!(response.headers()[ERROR_HEADER], "rate-limited");
        assert_eq!(response.headers()["retry-after"], "1");
        assert_eq!(counter(&stack.metrics, "outrigger_rate_limited_total"), 1.0);
        // The bucket refills on the (paused) clock.
        tokio::time::advance(Duration::from_millis(500)).await;
        assert!(admit(&stack).await.is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_for_a_slot_ends_at_the_pending_timeout() {
        let stack = limited(1, false);
        let held = admit(&stack).await.unwrap();
        let started = tokio::time::Instant::now();
        let error = admit(&stack).await.unwrap_err();
        assert_eq!(started.elapsed(), Duration::from_millis(300));
        let response = error.into_response();
        assert_eq!(response.status(), 503);
        assert_eq!(response.headers()[ERROR_HEADER], "overloaded");
        drop(held);
        assert!(admit(&stack).await.unwrap().is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn a_released_slot_goes_to_the_waiter() {
        let stack = limited(1, false);
        let held = admit(&stack).await.unwrap();
        let (waiter, ()) = tokio::join!(admit(&stack), async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            drop(held);
        });
        assert!(waiter.unwrap().is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn dry_run_admits_what_it_would_shed() {
        let stack = limited(0, true);
        let _held = admit(&stack).await.unwrap();
        assert!(admit(&stack).await.unwrap().is_none());
        assert_eq!(
            counter(&stack.metrics, "outrigger_dry_run_would_reject_total"),
            1.0
        );
    }
}
