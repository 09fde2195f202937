//! Metric names of the providers crate and the events that emit them. Labels are bounded:
//! providers come from the configuration, outcomes from [`crate::ProviderError::code`].

use std::time::Duration;

use tracing::{debug, info, warn};

use crate::breaker::BreakerState;

pub const PROVIDER_CALLS_TOTAL: &str = "bulwark_provider_calls_total";
pub const PROVIDER_CALL_SECONDS: &str = "bulwark_provider_call_duration_seconds";
pub const PROVIDER_RETRIES_TOTAL: &str = "bulwark_provider_retries_total";
pub const PROVIDER_BREAKER_STATE: &str = "bulwark_provider_breaker_state";
pub const PROVIDER_BREAKER_TRANSITIONS_TOTAL: &str = "bulwark_provider_breaker_transitions_total";
pub const PROVIDER_REJECTED_TOTAL: &str = "bulwark_provider_rejected_total";

/// A call through the resilience layer ended (after its retries).
#[derive(Debug)]
pub struct ProviderCallFinished<'a> {
    pub provider: &'a str,
    /// `ok` or an error code.
    pub outcome: &'a str,
    pub num_attempts: u32,
    pub duration: Duration,
}

impl ProviderCallFinished<'_> {
    pub fn emit(&self) {
        debug!(
            provider = self.provider,
            outcome = self.outcome,
            num_attempts = self.num_attempts,
            duration_ms = self.duration.as_millis() as u64,
            "provider call finished"
        );
        metrics::counter!(PROVIDER_CALLS_TOTAL, "provider" => self.provider.to_owned(), "outcome" => self.outcome.to_owned()).increment(1);
        metrics::histogram!(PROVIDER_CALL_SECONDS, "provider" => self.provider.to_owned())
            .record(self.duration.as_secs_f64());
    }
}

/// One attempt failed with a retriable error and the call will try again.
#[derive(Debug)]
pub struct ProviderRetrying<'a> {
    pub provider: &'a str,
    pub code: &'a str,
    pub attempt: u32,
    pub delay: Duration,
}

impl ProviderRetrying<'_> {
    pub fn emit(&self) {
        warn!(
            provider = self.provider,
            code = self.code,
            attempt = self.attempt,
            delay_ms = self.delay.as_millis() as u64,
            "provider call failed, retrying"
        );
        metrics::counter!(PROVIDER_RETRIES_TOTAL, "provider" => self.provider.to_owned(), "code" => self.code.to_owned()).increment(1);
    }
}

/// A call refused by this node before reaching the upstream (breaker, limiter, bulkhead).
#[derive(Debug)]
pub struct ProviderRejected<'a> {
    pub provider: &'a str,
    pub code: &'a str,
}

impl ProviderRejected<'_> {
    pub fn emit(&self) {
        debug!(
            provider = self.provider,
            code = self.code,
            "provider call rejected"
        );
        metrics::counter!(PROVIDER_REJECTED_TOTAL, "provider" => self.provider.to_owned(), "code" => self.code.to_owned()).increment(1);
    }
}

/// The breaker of a provider changed state.
#[derive(Debug)]
pub struct BreakerTransition<'a> {
    pub provider: &'a str,
    pub state: BreakerState,
}

impl BreakerTransition<'_> {
    pub fn emit(&self) {
        match self.state {
            BreakerState::Open => {
                warn!(
                    provider = self.provider,
                    state = self.state.as_str(),
                    "circuit breaker opened"
                )
            }
            _ => info!(
                provider = self.provider,
                state = self.state.as_str(),
                "circuit breaker changed state"
            ),
        }
        metrics::counter!(PROVIDER_BREAKER_TRANSITIONS_TOTAL, "provider" => self.provider.to_owned(), "state" => self.state.as_str()).increment(1);
        self.emit_gauge();
    }

    /// Sets the state gauge only (0 closed, 1 half-open, 2 open).
    pub fn emit_gauge(&self) {
        metrics::gauge!(PROVIDER_BREAKER_STATE, "provider" => self.provider.to_owned())
            .set(self.state.gauge_value());
    }
}
