use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bulwark_ml::{InferenceError, SentimentScore};
use ractor::rpc::CallResult;
use ractor::{ActorRef, registry};
use tokio::sync::Semaphore;

use crate::metrics::SentimentRejected;
use crate::{ErrorCode, JobError, SentimentWorkerMsg};

/// What a [`SentimentPool`] is built with.
#[derive(Debug, Clone)]
pub struct SentimentPoolParams {
    /// Registered names of the workers; the supervisor restarts workers under the same names.
    pub worker_names: Vec<String>,
    /// Calls queued or running across the pool before new ones are refused.
    pub max_queued: usize,
    pub call_timeout: Duration,
}

/// Why a call into the pool did not produce scores.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("sentiment pool is at capacity ({0} calls queued)")]
    Overloaded(usize),
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
            PoolError::Overloaded(_)
            | PoolError::NoWorker
            | PoolError::Timeout(_)
            | PoolError::WorkerStopped => true,
            PoolError::Inference(inference_error) => inference_error.is_retryable(),
        }
    }

    pub fn code(&self) -> ErrorCode {
        match self {
            PoolError::Overloaded(_) | PoolError::Inference(InferenceError::Overloaded) => {
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
    fn from(error: PoolError) -> Self {
        JobError::new(error.code(), error.to_string())
    }
}

/// A handle on the sentiment workers. Workers are looked up by registered name on every call,
/// so the handle stays valid across worker restarts; calls go to the least-loaded worker, and
/// at most `max_queued` calls are outstanding, beyond which callers get
/// [`PoolError::Overloaded`] at once instead of waiting without bound.
#[derive(Debug, Clone)]
pub struct SentimentPool {
    inner: Arc<PoolInner>,
}

#[derive(Debug)]
struct PoolInner {
    params: SentimentPoolParams,
    permits: Arc<Semaphore>,
    outstanding: Vec<AtomicUsize>,
}

impl SentimentPool {
    pub fn new(params: SentimentPoolParams) -> Self {
        let permits = Arc::new(Semaphore::new(params.max_queued));
        let outstanding = params
            .worker_names
            .iter()
            .map(|_| AtomicUsize::new(0))
            .collect();
        SentimentPool {
            inner: Arc::new(PoolInner {
                params,
                permits,
                outstanding,
            }),
        }
    }

    /// Returns how many calls are queued or running.
    pub fn queued(&self) -> usize {
        self.inner.params.max_queued - self.inner.permits.available_permits()
    }

    /// Returns how many workers are registered (running) right now.
    pub fn num_running_workers(&self) -> usize {
        self.inner
            .params
            .worker_names
            .iter()
            .filter(|name| registry::where_is((*name).clone()).is_some())
            .count()
    }

    pub fn num_workers(&self) -> usize {
        self.inner.params.worker_names.len()
    }

    /// Scores texts on one worker. The caller has validated them.
    pub async fn analyze(&self, texts: Vec<String>) -> Result<Vec<SentimentScore>, PoolError> {
        let Ok(_permit) = self.inner.permits.clone().try_acquire_owned() else {
            SentimentRejected {
                reason: "overloaded",
            }
            .emit();
            return Err(PoolError::Overloaded(self.inner.params.max_queued));
        };
        let (index, worker) = self.pick_worker()?;
        let outstanding = &self.inner.outstanding[index];
        outstanding.fetch_add(1, Ordering::Relaxed);
        let timeout = self.inner.params.call_timeout;
        let call = worker.call(
            |reply| SentimentWorkerMsg::Analyze { texts, reply },
            Some(timeout),
        );
        let outcome = call.await;
        outstanding.fetch_sub(1, Ordering::Relaxed);
        match outcome {
            Ok(CallResult::Success(result)) => Ok(result?),
            Ok(CallResult::Timeout) => Err(PoolError::Timeout(timeout)),
            Ok(CallResult::SenderError) | Err(_) => Err(PoolError::WorkerStopped),
        }
    }

    /// Returns the running worker with the fewest outstanding calls.
    fn pick_worker(&self) -> Result<(usize, ActorRef<SentimentWorkerMsg>), PoolError> {
        let mut best: Option<(usize, usize, ActorRef<SentimentWorkerMsg>)> = None;
        for (index, name) in self.inner.params.worker_names.iter().enumerate() {
            let Some(cell) = registry::where_is(name.clone()) else {
                continue;
            };
            let load = self.inner.outstanding[index].load(Ordering::Relaxed);
            if best
                .as_ref()
                .is_none_or(|(_, best_load, _)| load < *best_load)
            {
                best = Some((index, load, cell.into()));
            }
            if load == 0 {
                break;
            }
        }
        best.map(|(index, _, worker)| (index, worker))
            .ok_or_else(|| {
                SentimentRejected {
                    reason: "no_worker",
                }
                .emit();
                PoolError::NoWorker
            })
    }
}
