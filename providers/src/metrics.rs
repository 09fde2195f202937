//! Metric names of the providers crate and the events that emit them. Labels are bounded:
//! providers come from the configuration, outcomes from [`crate::ProviderError::code`].

use std::time::Duration;

use bulwark_core::{MetricSpec, MetricUnit, SLOW_SECONDS_BUCKETS};
use tracing::{debug, info, warn};

use crate::breaker::BreakerState;

pub const PROVIDER_CALLS_TOTAL: MetricSpec = MetricSpec::counter(
    "bulwark_provider_calls_total",
    "Provider calls finished after their retries, by provider and outcome (ok or an error code)",
)
.with_labels(&["provider", "outcome"]);
pub const PROVIDER_CALL_SECONDS: MetricSpec = MetricSpec::histogram(
    "bulwark_provider_call_duration_seconds",
    MetricUnit::Seconds,
    SLOW_SECONDS_BUCKETS,
    "How long a provider call took, retries included",
)
.with_labels(&["provider"]);
pub const PROVIDER_RETRIES_TOTAL: MetricSpec = MetricSpec::counter(
    "bulwark_provider_retries_total",
    "Provider call attempts that failed retriably and were tried again, by error code",
)
.with_labels(&["provider", "code"]);
pub const PROVIDER_BREAKER_STATE: MetricSpec = MetricSpec::gauge(
    "bulwark_provider_breaker_state",
    MetricUnit::None,
    "A provider's circuit breaker: 0 closed, 1 half-open, 2 open",
)
.with_labels(&["provider"]);
pub const PROVIDER_BREAKER_TRANSITIONS_TOTAL: MetricSpec = MetricSpec::counter(
    "bulwark_provider_breaker_transitions_total",
    "Circuit breaker state changes, by the state entered",
)
.with_labels(&["provider", "state"]);
pub const PROVIDER_REJECTED_TOTAL: MetricSpec = MetricSpec::counter(
    "bulwark_provider_rejected_total",
    "Provider calls refused on this node before the upstream (breaker, rate limit, bulkhead)",
)
.with_labels(&["provider", "code"]);

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
        metrics::counter!(PROVIDER_CALLS_TOTAL.name, "provider" => self.provider.to_owned(), "outcome" => self.outcome.to_owned()).increment(1);
        metrics::histogram!(PROVIDER_CALL_SECONDS.name, "provider" => self.provider.to_owned())
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
        metrics::counter!(PROVIDER_RETRIES_TOTAL.name, "provider" => self.provider.to_owned(), "code" => self.code.to_owned()).increment(1);
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
        metrics::counter!(PROVIDER_REJECTED_TOTAL.name, "provider" => self.provider.to_owned(), "code" => self.code.to_owned()).increment(1);
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
        metrics::counter!(PROVIDER_BREAKER_TRANSITIONS_TOTAL.name, "provider" => self.provider.to_owned(), "state" => self.state.as_str()).increment(1);
        self.emit_gauge();
    }

    /// Sets the state gauge only (0 closed, 1 half-open, 2 open).
    pub fn emit_gauge(&self) {
        metrics::gauge!(PROVIDER_BREAKER_STATE.name, "provider" => self.provider.to_owned())
            .set(self.state.gauge_value());
    }
}

/// Every metric this crate emits, for the recorder's descriptions and `docs/metrics.md`.
pub const METRICS: &[MetricSpec] = &[
    PROVIDER_CALLS_TOTAL,
    PROVIDER_CALL_SECONDS,
    PROVIDER_RETRIES_TOTAL,
    PROVIDER_BREAKER_STATE,
    PROVIDER_BREAKER_TRANSITIONS_TOTAL,
    PROVIDER_REJECTED_TOTAL,
];
