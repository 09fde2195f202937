use async_trait::async_trait;

use crate::{Completion, CompletionRequest, ProviderError};

/// An answer engine. Implementations make one attempt per call; retries, the breaker, the rate
/// limit and the bulkhead wrap them from outside (`ResilientProvider`), so every adapter gets
/// the same behaviour under failure.
#[async_trait]
pub trait Provider: Send + Sync + std::fmt::Debug {
    /// Asks the engine once. Expected failures (429, timeouts, bad bodies) are `Err` values
    /// whose messages never contain the API key.
    async fn complete(&self, request: &CompletionRequest) -> Result<Completion, ProviderError>;

    /// Returns the configured provider name, e.g. `openai` or `sim-fast`.
    fn name(&self) -> &str;
}
