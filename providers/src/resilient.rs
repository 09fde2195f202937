//! [`ResilientProvider`]: one configured provider wrapped in its breaker, rate limit,
//! bulkhead, per-attempt timeout and retries. It is itself a [`Provider`], so the actor in
//! front of it and the tests treat the bare adapter and the wrapped one alike.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use crate::breaker::{BreakerParams, BreakerState, CallOutcome, CircuitBreaker};
use crate::bulkhead::{Bulkhead, BulkheadParams, BulkheadRejection};
use crate::limiter::{ProviderRateLimiter, RateLimitParams};
use crate::metrics::{ProviderCallFinished, ProviderRejected, ProviderRetrying};
use crate::{Completion, CompletionRequest, Provider, ProviderError};

/// Retries of one call: exponential backoff with full jitter (a delay drawn uniformly from
/// `[0, min(max, base · 2^(n-1))]`), never shorter than the upstream's `Retry-After`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryParams {
    /// Attempts per call, the first included.
    pub max_attempts: u32,
    pub base: Duration,
    pub max: Duration,
}

impl Default for RetryParams {
    fn default() -> Self {
        RetryParams {
            max_attempts: 3,
            base: Duration::from_millis(200),
            max: Duration::from_secs(5),
        }
    }
}

impl RetryParams {
    /// Returns the backoff before attempt `next_attempt` (2 for the first retry).
    pub fn backoff(&self, next_attempt: u32) -> Duration {
        let exponent = next_attempt.saturating_sub(2).min(20);
        let ceiling = self.base.saturating_mul(1 << exponent).min(self.max);
        ceiling.mul_f64(fastrand::f64())
    }
}

/// Everything a provider's resilience is configured with.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ResilienceParams {
    /// Longest wait for one upstream attempt.
    pub attempt_timeout: Duration,
    /// Longest a call may take in all, waits and retries included.
    pub call_deadline: Duration,
    pub retry: RetryParams,
    pub breaker: BreakerParams,
    pub rate_limit: RateLimitParams,
    pub bulkhead: BulkheadParams,
    /// Answer budget assumed by the tokens-per-minute limit when a request sets none.
    pub default_max_tokens: u32,
}

impl Default for ResilienceParams {
    fn default() -> Self {
        ResilienceParams {
            attempt_timeout: Duration::from_secs(30),
            call_deadline: Duration::from_secs(60),
            retry: RetryParams::default(),
            breaker: BreakerParams::default(),
            rate_limit: RateLimitParams::default(),
            bulkhead: BulkheadParams::default(),
            default_max_tokens: 1_024,
        }
    }
}

/// A provider with its breaker, limiter, bulkhead, timeouts and retries. Each configured
/// provider has its own, so one failing provider never slows another.
#[derive(Debug, Clone)]
pub struct ResilientProvider {
    inner: Arc<dyn Provider>,
    params: ResilienceParams,
    breaker: CircuitBreaker,
    limiter: Arc<ProviderRateLimiter>,
    bulkhead: Arc<Bulkhead>,
}

impl ResilientProvider {
    pub fn new(inner: Arc<dyn Provider>, params: ResilienceParams) -> Self {
        ResilientProvider {
            breaker: CircuitBreaker::new(inner.name(), params.breaker),
            limiter: Arc::new(ProviderRateLimiter::new(params.rate_limit)),
            bulkhead: Arc::new(Bulkhead::new(params.bulkhead)),
            inner,
            params,
        }
    }

    /// Returns the breaker, for `/health` and tests.
    pub fn breaker(&self) -> &CircuitBreaker {
        &self.breaker
    }

    pub fn breaker_state(&self) -> BreakerState {
        self.breaker.state()
    }

    pub fn params(&self) -> &ResilienceParams {
        &self.params
    }

    fn reject(&self, error: ProviderError) -> ProviderError {
        ProviderRejected {
            provider: self.inner.name(),
            code: error.code(),
        }
        .emit();
        error
    }

    /// One attempt: breaker, then rate limit, then a bulkhead slot, then the upstream under
    /// the per-attempt timeout (clipped to the call's deadline).
    async fn attempt(
        &self,
        request: &CompletionRequest,
        deadline: Instant,
    ) -> Result<Completion, ProviderError> {
        let name = self.inner.name();
        let permit = self.breaker.admit().map_err(|retry_after| {
            self.reject(ProviderError::CircuitOpen {
                provider: name.to_owned(),
                retry_after: Some(retry_after),
            })
        })?;
        let num_tokens = request.estimated_tokens(self.params.default_max_tokens);
        self.limiter
            .acquire(num_tokens, deadline)
            .await
            .map_err(|limited| {
                self.reject(ProviderError::RateLimited {
                    message: format!("local rate limit of provider {name} is spent"),
                    retry_after: Some(limited.retry_after),
                })
            })?;
        let _slot = self.bulkhead.acquire(deadline).await.map_err(|rejection| {
            let bulkhead = self.bulkhead.params();
            self.reject(match rejection {
                BulkheadRejection::Full => ProviderError::BulkheadFull {
                    provider: name.to_owned(),
                    max_concurrent: bulkhead.max_concurrent,
                    max_waiting: bulkhead.max_waiting,
                },
                BulkheadRejection::DeadlineReached => {
                    ProviderError::Timeout(self.params.call_deadline)
                }
            })
        })?;
        let remaining = deadline.saturating_duration_since(Instant::now());
        let timeout = self.params.attempt_timeout.min(remaining);
        let outcome = match tokio::time::timeout(timeout, self.inner.complete(request)).await {
            Ok(outcome) => outcome,
            Err(_) => Err(ProviderError::Timeout(timeout)),
        };
        permit.record(match &outcome {
            Ok(_) => CallOutcome::Success,
            Err(error) if error.counts_against_breaker() => CallOutcome::Failure,
            Err(_) => CallOutcome::Neutral,
        });
        outcome
    }
}

#[async_trait]
impl Provider for ResilientProvider {
    async fn complete(&self, request: &CompletionRequest) -> Result<Completion, ProviderError> {
        let started = Instant::now();
        let deadline = started + self.params.call_deadline;
        let name = self.inner.name();
        let mut attempt = 1;
        let outcome = loop {
            let error = match self.attempt(request, deadline).await {
                Ok(completion) => break Ok(completion),
                Err(error) => error,
            };
            if !error.is_retryable_attempt() || attempt >= self.params.retry.max_attempts {
                break Err(error);
            }
            let backoff = self.params.retry.backoff(attempt + 1);
            let delay = backoff.max(error.retry_after().unwrap_or_default());
            if Instant::now() + delay >= deadline {
                break Err(error);
            }
            ProviderRetrying {
                provider: name,
                code: error.code(),
                attempt,
                delay,
            }
            .emit();
            tokio::time::sleep(delay).await;
            attempt += 1;
        };
        let duration = started.elapsed();
        ProviderCallFinished {
            provider: name,
            outcome: match &outcome {
                Ok(_) => "ok",
                Err(error) => error.code(),
            },
            num_attempts: attempt,
            duration,
        }
        .emit();
        outcome.map(|mut completion| {
            completion.provider = name.to_owned();
            completion.latency = duration;
            completion
        })
    }

    fn name(&self) -> &str {
        self.inner.name()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves backoff grows exponentially up to its cap and never passes it (full jitter).
    #[test]
    fn backoff_is_capped_full_jitter() {
        let retry = RetryParams {
            max_attempts: 10,
            base: Duration::from_millis(100),
            max: Duration::from_millis(1_000),
        };
        for _ in 0..200 {
            assert!(retry.backoff(2) <= Duration::from_millis(100));
            assert!(retry.backoff(4) <= Duration::from_millis(400));
            assert!(retry.backoff(30) <= Duration::from_millis(1_000));
        }
        let large = (0..200)
            .map(|_| retry.backoff(30))
            .filter(|delay| *delay > Duration::from_millis(500))
            .count();
        assert!(large > 50, "jitter spans the range: {large}");
    }
}
