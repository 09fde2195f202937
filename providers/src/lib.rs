//! Bulwark's provider adapters: the [`Provider`] trait that every answer engine implements,
//! the adapters that speak to real engines over HTTP (OpenAI-compatible chat completions and
//! the Anthropic Messages API), the simulated engine used by demos, tests and game days, and
//! the resilience that wraps each configured provider (circuit breaker, retries with backoff,
//! token-bucket rate limit, bulkhead, per-attempt timeout). This crate knows nothing of actors;
//! `bulwark-actors` puts one actor in front of each configured provider.
//!
//! # Layout
//! - `request`: [`CompletionRequest`], [`Completion`] and [`Usage`].
//! - `error`: [`ProviderError`], with stable codes and `is_retryable()`.
//! - `provider`: the [`Provider`] trait.
//! - `http`, `openai`, `anthropic`, `wire`: the HTTP adapters, their shared client and
//!   error mapping, and the two wire formats; [`ApiKey`] never shows in logs or errors.
//! - `simulated`: the simulated engine, in-process and as an HTTP server with fault knobs.
//! - `breaker`, `limiter`, `bulkhead`, `resilient`: [`ResilientProvider`] and its parts.
//! - `metrics`: metric names and the events that emit them.

mod anthropic;
mod breaker;
mod bulkhead;
mod error;
mod http;
mod limiter;
pub mod metrics;
mod openai;
mod provider;
mod request;
mod resilient;
mod rng;
pub mod simulated;
pub mod wire;

pub use anthropic::{ANTHROPIC_VERSION, AnthropicProvider};
pub use breaker::{
    Admission, BreakerCore, BreakerParams, BreakerPermit, BreakerState, CallOutcome, CircuitBreaker,
};
pub use bulkhead::{Bulkhead, BulkheadParams, BulkheadRejection};
pub use error::ProviderError;
pub use http::{ApiKey, HttpProviderParams};
pub use limiter::{ProviderRateLimiter, RateLimitParams, RateLimited};
pub use openai::OpenAiProvider;
pub use provider::Provider;
pub use request::{Completion, CompletionRequest, Usage};
pub use resilient::{ResilienceParams, ResilientProvider, RetryParams};
