//! The request deadline (`timeouts.request`): the whole call, attempts and
//! backoff included, from when the proxy received the request; 504 `timeout`
//! when it passes.

use std::future::Future;
use std::time::Instant;

use http::Response;

use super::error::CallError;
use crate::config::RouteConfig;
use crate::stack::DestinationStack;
use outrigger_http::body::ProxyBody;
use outrigger_http::error_response::ProxyError;

pub async fn within(
    stack: &DestinationStack,
    route: &RouteConfig,
    deadline: Option<Instant>,
    call: impl Future<Output = Result<Response<ProxyBody>, CallError>>,
) -> Result<Response<ProxyBody>, CallError> {
    let Some(deadline) = deadline else {
        return call.await;
    };
    match tokio::time::timeout_at(deadline.into(), call).await {
        Ok(result) => result,
        Err(_) => {
            stack
                .metrics
                .resilience
                .timeouts
                .with_label_values(&[stack.direction, &stack.label, &route.name, "request"])
                .inc();
            Err(CallError::new(
                ProxyError::Timeout,
                format!(
                    "{} did not answer within the request timeout ({})",
                    stack.label,
                    outrigger_api::duration::Duration::from_std(
                        route.request_timeout.unwrap_or_default()
                    )
                ),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{config, counter, stack};
    use super::super::{now, Cause};
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn slow_calls_end_at_the_deadline_with_504() {
        let mut config = config();
        config.default_route.request_timeout = Some(Duration::from_secs(2));
        let stack = stack(config, 1);
        let route = &stack.config.default_route;
        let started = tokio::time::Instant::now();
        let deadline = Some(now() + Duration::from_secs(2));
        let slow = async {
            tokio::time::sleep(Duration::from_secs(10)).await;
            Ok(Response::new(outrigger_http::body::empty()))
        };
        let error = within(&stack, route, deadline, slow).await.unwrap_err();
        assert_eq!(started.elapsed(), Duration::from_secs(2));
        assert_eq!(error.cause(), Cause::Proxy(ProxyError::Timeout));
        assert_eq!(error.into_response().status(), 504);
        assert_eq!(counter(&stack.metrics, "outrigger_timeouts_total"), 1.0);
    }

    #[tokio::test(start_paused = true)]
    async fn answers_before_the_deadline_pass_through() {
        let stack = stack(config(), 1);
        let route = &stack.config.default_route;
        let quick = async {
            tokio::time::sleep(Duration::from_millis(1999)).await;
            Ok(Response::new(outrigger_http::body::empty()))
        };
        let deadline = Some(now() + Duration::from_secs(2));
        assert!(within(&stack, route, deadline, quick).await.is_ok());
        let never_ends = std::future::pending();
        // No deadline: nothing ends the call but the call.
        let bounded = tokio::time::timeout(
            Duration::from_secs(60),
            within(&stack, route, None, never_ends),
        );
        assert!(bounded.await.is_err());
    }
}
