//! What the runner needs from the rest of the node, as two small traits: a way to ask a
//! provider a prompt and a way to score the tone of sentences. The actors crate implements
//! them with its provider router and its sentiment pool.

use std::fmt::Debug;

use async_trait::async_trait;
use bulwark_core::JobError;
use bulwark_ml::SentimentScore;
use bulwark_providers::{Completion, CompletionRequest};

/// Why a provider gave no answer to one audit item; the item is stored failed with both.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct AnswerError {
    /// A provider error code, e.g. `UPSTREAM_TIMEOUT` or `UNKNOWN_PROVIDER`.
    pub code: String,
    pub message: String,
}

/// Asks configured providers, by name, for completions.
#[async_trait]
pub trait AnswerSource: Debug + Send + Sync + 'static {
    /// Returns the configured provider names.
    fn provider_names(&self) -> Vec<String>;

    /// Asks `provider` for one completion. A failure is the item's, not the audit's.
    async fn complete(
        &self,
        provider: &str,
        request: CompletionRequest,
    ) -> Result<Completion, AnswerError>;
}

/// Why texts were not scored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScoringError {
    /// The scorer has no room right now; the same call may succeed shortly.
    #[error("{}", .0.message)]
    AtCapacity(JobError),
    /// Any other failure, as the job reports it.
    #[error("{}", .0.message)]
    Failed(JobError),
}

/// Scores the tone of texts with the node's default scoring choices.
#[async_trait]
pub trait TextScorer: Debug + Send + Sync + 'static {
    /// Returns one score per text, in order.
    async fn score(&self, texts: Vec<String>) -> Result<Vec<SentimentScore>, ScoringError>;
}
