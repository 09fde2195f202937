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

mod error;
mod provider;
mod request;

pub use error::ProviderError;
pub use provider::Provider;
pub use request::{Completion, CompletionRequest, Usage};
