//! The circuit breaker around each attempt: admission (the policy's fallback
//! while open), recording the attempt's result, releasing the admission of an
//! abandoned attempt, and reporting every transition.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use outrigger_resilience::grpc::Codes;
use outrigger_resilience::{Admission, CircuitBreaker, Permit, Transition};

use super::error::CallError;
use super::outcome::Outcome;
use crate::stack::{Breaker, DestinationStack};
use outrigger_proxy_core::metrics::Metrics;

/// A breaker admission that must be answered: recorded with the outcome, or
/// released if the attempt is abandoned (the caller went away, the request
/// deadline passed), so a half-open breaker never waits for a lost probe.
pub struct BreakerPermit {
    breaker: Arc<Mutex<CircuitBreaker>>,
    permit: Option<Permit>,
}

impl Drop for BreakerPermit {
    fn drop(&mut self) {
        if let Some(permit) = self.permit.take() {
            self.breaker.lock().expect("not poisoned").release(permit);
        }
    }
}

/// `Ok(None)` without a breaker or when `DryRun` lets a rejected attempt through.
pub fn admit(stack: &DestinationStack, now: Instant) -> Result<Option<BreakerPermit>, CallError> {
    let Some(breaker) = &stack.breaker else {
        return Ok(None);
    };
    let (admission, transition, state) = {
        let mut state = breaker.state.lock().expect("not poisoned");
        let (admission, transition) = state.try_acquire_with_transition(now);
        (admission, transition, state.state(now))
    };
    if let Some(t) = transition {
        report_transition(&Site::of(stack), t);
    }
    // The gauge follows time too (open turns half-open): refreshed here.
    breaker.gauge.set(state.state_gauge_value());
    let metrics = &stack.metrics.resilience;
    match admission {
        Admission::Allowed(permit) => Ok(Some(BreakerPermit {
            breaker: breaker.state.clone(),
            permit: Some(permit),
        })),
        Admission::Rejected { .. } if stack.config.dry_run => {
            metrics
                .dry_run_would_reject
                .with_label_values(&[stack.direction, &stack.label, "circuit-open"])
                .inc();
            Ok(None)
        }
        Admission::Rejected { retry_after } => {
            metrics
                .fallbacks
                .with_label_values(&[stack.direction, &stack.label])
                .inc();
            Err(CallError::CircuitOpen {
                breaker: breaker.clone(),
                retry_after,
            })
        }
    }
}

/// Records an attempt's result under its admission; `grpc` says whether it
/// was a gRPC call, whose gRPC status counts.
pub fn record(
    stack: &DestinationStack,
    held: Option<BreakerPermit>,
    outcome: &Outcome,
    grpc: bool,
    elapsed: Duration,
    now: Instant,
) {
    let (Some(breaker), Some(held)) = (&stack.breaker, held) else {
        return;
    };
    let settings = &breaker.settings;
    let codes = match grpc {
        true => settings.grpc_codes,
        false => Codes::NONE,
    };
    let failure = outcome.is_breaker_failure(&settings.failure_on, codes);
    settle(&Site::of(stack), breaker, held, failure, elapsed, now);
}

/// Where results are reported: the destination's metrics and label.
pub struct Site<'a> {
    pub direction: &'static str,
    pub label: &'a str,
    pub metrics: &'a Metrics,
}

impl<'a> Site<'a> {
    pub fn of(stack: &'a DestinationStack) -> Self {
        Site {
            direction: stack.direction,
            label: &stack.label,
            metrics: &stack.metrics,
        }
    }
}

/// Records a result, a failure or not, under its admission (also when it
/// is known only after the call returned: a gRPC status in trailers).
pub fn settle(
    site: &Site<'_>,
    breaker: &Breaker,
    mut held: BreakerPermit,
    failure: bool,
    elapsed: Duration,
    now: Instant,
) {
    let mut state = breaker.state.lock().expect("not poisoned");
    if let Some(permit) = held.permit.take() {
        if let Some(t) = state.record(now, permit, failure, elapsed) {
            report_transition(site, t);
        }
    }
    breaker.gauge.set(state.state(now).state_gauge_value());
}

fn report_transition(site: &Site<'_>, t: Transition) {
    site.metrics
        .resilience
        .circuit_transitions
        .with_label_values(&[site.direction, site.label, t.from.as_str(), t.to.as_str()])
        .inc();
    tracing::warn!(
        destination = %site.label,
        from = t.from.as_str(),
        to = t.to.as_str(),
        reason = t.reason,
        "circuit breaker changed state"
    );
}

#[cfg(test)]
mod tests {
    use super::super::now;
    use super::super::testing::{breaker_config, counter, gauge, stack, status};
    use super::super::Cause;
    use super::*;
    use http::header;

    fn fail(stack: &DestinationStack) {
        let permit = admit(stack, now()).unwrap();
        record(
            stack,
            permit,
            &status(503),
            false,
            Duration::from_millis(1),
            now(),
        );
    }

    #[tokio::test(start_paused = true)]
    async fn opens_answers_with_the_fallback_then_probes_after_open_for() {
        let stack = stack(breaker_config(false), 1);
        fail(&stack);
        fail(&stack);
        assert_eq!(gauge(&stack.metrics, "outrigger_circuit_state"), 1.0);
        let error = admit(&stack, now()).err().expect("open");
        assert_eq!(error.cause(), Cause::CircuitOpen);
        let response = error.into_response();
        assert_eq!(response.status(), 503);
        assert_eq!(response.headers()["x-outrigger-error"], "circuit-open");
        assert_eq!(response.headers()[header::CONTENT_TYPE], "text/plain");
        assert_eq!(response.headers()[header::RETRY_AFTER], "5");
        assert_eq!(
            counter(&stack.metrics, "outrigger_fallback_responses_total"),
            1.0
        );

        // After openFor the next attempt is a probe (half-open); its success closes.
        tokio::time::advance(Duration::from_secs(5)).await;
        let probe = admit(&stack, now()).unwrap();
        assert_eq!(gauge(&stack.metrics, "outrigger_circuit_state"), 2.0);
        record(
            &stack,
            probe,
            &status(200),
            false,
            Duration::from_millis(1),
            now(),
        );
        assert_eq!(gauge(&stack.metrics, "outrigger_circuit_state"), 0.0);
        // closed→open, open→half-open, half-open→closed
        assert_eq!(
            counter(&stack.metrics, "outrigger_circuit_transitions_total"),
            3.0
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_abandoned_probe_is_released() {
        let stack = stack(breaker_config(false), 1);
        fail(&stack);
        fail(&stack);
        tokio::time::advance(Duration::from_secs(5)).await;
        let probe = admit(&stack, now()).unwrap();
        assert!(admit(&stack, now()).is_err(), "one probe at a time");
        drop(probe);
        assert!(
            admit(&stack, now()).is_ok(),
            "the lost probe's place is free again"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn dry_run_lets_attempts_through_an_open_circuit() {
        let stack = stack(breaker_config(true), 1);
        fail(&stack);
        fail(&stack);
        assert!(admit(&stack, now()).unwrap().is_none());
        assert_eq!(
            counter(&stack.metrics, "outrigger_dry_run_would_reject_total"),
            1.0
        );
    }
}
