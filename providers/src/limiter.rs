//! The per-provider rate limit: two token buckets (requests per minute, tokens per minute),
//! built on `governor`'s GCRA limiter, which is lock-free, well kept and exact about when the
//! next cell is free. The bucket holds one minute's worth, so a quiet provider may take a burst.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::time::Instant;

/// Limits per minute; `None` means unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateLimitParams {
    pub requests_per_minute: Option<u32>,
    pub tokens_per_minute: Option<u32>,
}

/// Both buckets of one provider.
#[derive(Debug)]
pub struct ProviderRateLimiter {
    requests: Option<(DefaultDirectRateLimiter, NonZeroU32)>,
    tokens: Option<(DefaultDirectRateLimiter, NonZeroU32)>,
    clock: DefaultClock,
}

/// Why a call could not be admitted before its deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimited {
    /// When the buckets will have room.
    pub retry_after: Duration,
}

fn bucket(per_minute: Option<u32>) -> Option<(DefaultDirectRateLimiter, NonZeroU32)> {
    let per_minute = NonZeroU32::new(per_minute?)?;
    Some((
        RateLimiter::direct(Quota::per_minute(per_minute)),
        per_minute,
    ))
}

impl ProviderRateLimiter {
    pub fn new(params: RateLimitParams) -> Self {
        ProviderRateLimiter {
            requests: bucket(params.requests_per_minute),
            tokens: bucket(params.tokens_per_minute),
            clock: DefaultClock::default(),
        }
    }

    /// Waits until one request spending `num_tokens` fits both buckets, or returns at once
    /// when that would be after `deadline`. A bucket passed once is not charged again while
    /// the call waits for the other.
    pub async fn acquire(&self, num_tokens: u32, deadline: Instant) -> Result<(), RateLimited> {
        let mut has_request_cell = self.requests.is_none();
        let mut has_tokens = self.tokens.is_none();
        loop {
            let now = self.clock.now();
            let mut wait = Duration::ZERO;
            if !has_request_cell && let Some((requests, _)) = &self.requests {
                match requests.check() {
                    Ok(()) => has_request_cell = true,
                    Err(not_until) => wait = not_until.wait_time_from(now),
                }
            }
            if has_request_cell
                && !has_tokens
                && let Some((tokens, capacity)) = &self.tokens
            {
                // A request larger than a minute's budget takes the whole budget.
                let wanted =
                    NonZeroU32::new(num_tokens.min(capacity.get())).unwrap_or(NonZeroU32::MIN);
                match tokens.check_n(wanted) {
                    Ok(Ok(())) | Err(_) => has_tokens = true,
                    Ok(Err(not_until)) => wait = not_until.wait_time_from(now),
                }
            }
            if has_request_cell && has_tokens {
                return Ok(());
            }
            let wait = wait.max(Duration::from_millis(1));
            if Instant::now() + wait > deadline {
                return Err(RateLimited { retry_after: wait });
            }
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves a full request bucket refuses at once when the wait would pass the deadline.
    #[tokio::test]
    async fn full_bucket_refuses_past_deadline() {
        let limiter = ProviderRateLimiter::new(RateLimitParams {
            requests_per_minute: Some(2),
            tokens_per_minute: None,
        });
        let deadline = Instant::now() + Duration::from_millis(100);
        assert!(limiter.acquire(1, deadline).await.is_ok());
        assert!(limiter.acquire(1, deadline).await.is_ok());
        let refused = limiter.acquire(1, deadline).await.unwrap_err();
        assert!(refused.retry_after > Duration::from_secs(20), "{refused:?}");
    }

    /// Proves the tokens-per-minute bucket counts tokens, not requests.
    #[tokio::test]
    async fn token_bucket_counts_tokens() {
        let limiter = ProviderRateLimiter::new(RateLimitParams {
            requests_per_minute: None,
            tokens_per_minute: Some(1_000),
        });
        let deadline = Instant::now() + Duration::from_millis(100);
        assert!(limiter.acquire(600, deadline).await.is_ok());
        assert!(limiter.acquire(600, deadline).await.is_err());
        assert!(limiter.acquire(300, deadline).await.is_ok());
    }
}
