use std::time::{Duration, Instant};

use async_trait::async_trait;
use bulwark_audit::{ScoringError, TextScorer};
use bulwark_core::{ErrorCode, JobError};
use bulwark_ml::{BatchQueue, CallerIds, InferenceError, ScoringOptions, SentimentScore, Strategy};
use ractor::registry;

use crate::metrics::{SentimentBatchScored, SentimentRejected};

/// What a [`SentimentPool`] is built with.
#[derive(Debug, Clone)]
pub struct SentimentPoolParams {
    /// Registered names of the workers; the supervisor restarts workers under the same names.
    pub worker_names: Vec<String>,
    /// The queue the workers' inference threads take batches from.
    pub queue: BatchQueue,
    pub call_timeout: Duration,
    /// Engine name for metrics.
    pub engine: String,
    /// Options for requests that do not choose their own.
    pub default_options: ScoringOptions,
}

/// What one request may choose; unset fields take the pool's defaults.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ScoringChoice {
    pub strategy: Option<Strategy>,
    pub neutral_threshold: Option<f32>,
}

/// Why a call into the pool did not produce scores.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("sentiment pool is at capacity")]
    Overloaded,
    #[error("no sentiment worker is running")]
    NoWorker,
    #[error("sentiment call timed out after {0:?}")]
    Timeout(Duration),
    #[error("sentiment worker stopped while handling the call")]
    WorkerStopped,
    #[error(transparent)]
    Inference(#[from] InferenceError),
}

impl PoolError {
    pub fn is_retryable(&self) -> bool {
        match self {
            PoolError::Overloaded
            | PoolError::NoWorker
            | PoolError::Timeout(_)
            | PoolError::WorkerStopped => true,
            PoolError::Inference(inference_error) => inference_error.is_retryable(),
        }
    }

    pub fn code(&self) -> ErrorCode {
        match self {
            PoolError::Overloaded | PoolError::Inference(InferenceError::Overloaded) => {
                ErrorCode::Overloaded
            }
            PoolError::NoWorker
            | PoolError::WorkerStopped
            | PoolError::Inference(InferenceError::EngineStopped) => ErrorCode::ServiceUnavailable,
            PoolError::Timeout(_) => ErrorCode::UpstreamTimeout,
            PoolError::Inference(InferenceError::Failed(_) | InferenceError::Panicked(_)) => {
                ErrorCode::InternalError
            }
        }
    }
}

impl From<PoolError> for JobError {
    /// A job the pool could not score because no worker was running (the sentiment
    /// subsystem restarting) never ran: it gets `Overloaded`, so it waits without losing an
    /// attempt, like a job a node had no capacity for. A worker that stopped while it held the
    /// job counts (the job's own text may have hung or crashed it).
    fn from(error: PoolError) -> Self {
        let code = match &error {
            PoolError::NoWorker => ErrorCode::Overloaded,
            _ => error.code(),
        };
        JobError::new(code, error.to_string())
    }
}

/// The way into the sentiment workers: texts go into one bounded batching queue that every
/// worker's inference thread takes batches from, so concurrent requests and jobs share
/// batches, a worker restart loses nothing queued, and a full queue is refused at once with
/// [`PoolError::Overloaded`] instead of growing without bound.
#[derive(Debug, Clone)]
pub struct SentimentPool {
    params: SentimentPoolParams,
}

impl SentimentPool {
    pub fn new(params: SentimentPoolParams) -> Self {
        SentimentPool { params }
    }

    /// Returns how many texts wait for a batch.
    pub fn queued(&self) -> usize {
        self.params.queue.queued_texts()
    }

    /// Returns how many workers are registered (running) right now.
    pub fn num_running_workers(&self) -> usize {
        self.params
            .worker_names
            .iter()
            .filter(|name| registry::where_is((*name).clone()).is_some())
            .count()
    }

    pub fn num_workers(&self) -> usize {
        self.params.worker_names.len()
    }

    /// Scores texts, in order. The caller has validated them. The request and trace id of the
    /// current [`with_caller`] scope go with the texts into crash and hang reports.
    pub async fn analyze(
        &self,
        texts: Vec<String>,
        choice: ScoringChoice,
    ) -> Result<Vec<SentimentScore>, PoolError> {
        let defaults = self.params.default_options;
        let options = ScoringOptions {
            strategy: choice.strategy.unwrap_or(defaults.strategy),
            neutral_threshold: choice
                .neutral_threshold
                .unwrap_or(defaults.neutral_threshold),
            primary_weight: defaults.primary_weight,
        };
        if self.num_running_workers() == 0 {
            SentimentRejected {
                reason: "no_worker",
            }
            .emit();
            return Err(PoolError::NoWorker);
        }
        let num_texts = texts.len();
        let started = Instant::now();
        let scores_rx = self
            .params
            .queue
            .submit(texts, options, current_caller())
            .map_err(|error| match error {
                InferenceError::Overloaded => {
                    SentimentRejected {
                        reason: "overloaded",
                    }
                    .emit();
                    PoolError::Overloaded
                }
                other => PoolError::Inference(other),
            })?;
        let timeout = self.params.call_timeout;
        let scores = match tokio::time::timeout(timeout, scores_rx).await {
            Ok(Ok(result)) => result?,
            Ok(Err(_)) => return Err(PoolError::WorkerStopped),
            Err(_) => return Err(PoolError::Timeout(timeout)),
        };
        SentimentBatchScored {
            engine: &self.params.engine,
            num_texts,
            duration: started.elapsed(),
        }
        .emit();
        Ok(scores)
    }
}

tokio::task_local! {
    static CALLER: CallerIds;
}

/// Runs `future` with `caller` as the request and trace id of the sentiment calls it makes
/// (the HTTP middleware wraps each request, the job executor each job).
pub async fn with_caller<F: std::future::Future>(caller: CallerIds, future: F) -> F::Output {
    CALLER.scope(caller, future).await
}

fn current_caller() -> CallerIds {
    let mut caller = CALLER.try_with(Clone::clone).unwrap_or_default();
    caller.span_trace_opt = bulwark_core::TraceContext::of_span(&tracing::Span::current());
    caller
}

/// Audits score the tone of brand sentences on the pool with the node's default choices; only
/// a full queue is worth a short wait.
#[async_trait]
impl TextScorer for SentimentPool {
    async fn score(&self, texts: Vec<String>) -> Result<Vec<SentimentScore>, ScoringError> {
        self.analyze(texts, ScoringChoice::default())
            .await
            .map_err(|error| match error {
                PoolError::Overloaded => ScoringError::AtCapacity(error.into()),
                other => ScoringError::Failed(other.into()),
            })
    }
}
