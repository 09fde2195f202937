use std::sync::Arc;

use bulwark_core::Liveness;
use bulwark_ml::{
    BatchQueue, ChaosKnobs, EngineSet, InferenceError, InferenceThread, InferenceThreadParams,
    ThreadExit,
};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tracing::info;

/// Builds the engines a worker serves. Called on every (re)start, on a blocking thread.
pub type ModelFactory = Arc<dyn Fn() -> Result<EngineSet, InferenceError> + Send + Sync>;

/// Owns one inference thread that takes batches from the pool's queue. The actor's job is the
/// thread's life: it builds the model, starts the thread, and fails when the thread dies (a
/// model panic), so its supervisor restarts it with a fresh model.
#[derive(Debug, Default, Clone, Copy)]
pub struct SentimentWorkerActor;

/// What a sentiment worker is started with.
#[derive(Clone)]
pub struct SentimentWorkerParams {
    pub model_factory: ModelFactory,
    /// Name of the worker's inference thread.
    pub thread_name: String,
    /// The pool's queue; it outlives the worker.
    pub queue: BatchQueue,
    /// Busy while the thread scores a batch; the supervisor reads it to detect hangs.
    pub liveness: Liveness,
    /// Faults injected on purpose (tests, game days); off by default.
    pub chaos: ChaosKnobs,
}

impl std::fmt::Debug for SentimentWorkerParams {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("SentimentWorkerParams")
            .field("thread_name", &self.thread_name)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
pub struct SentimentWorkerState {
    /// Dropping it asks the thread to stop.
    _thread: InferenceThread,
}

#[derive(Debug)]
pub enum SentimentWorkerMsg {
    /// The inference thread ended; the worker fails so that it is restarted.
    ThreadExited(ThreadExit),
}

impl Actor for SentimentWorkerActor {
    type Msg = SentimentWorkerMsg;
    type State = SentimentWorkerState;
    type Arguments = SentimentWorkerParams;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        params: SentimentWorkerParams,
    ) -> Result<Self::State, ActorProcessingErr> {
        let factory = params.model_factory.clone();
        let engines = tokio::task::spawn_blocking(move || factory()).await??;
        let thread_params = InferenceThreadParams {
            thread_name: params.thread_name.clone(),
            queue: params.queue.clone(),
            liveness: params.liveness.clone(),
            chaos: params.chaos.clone(),
        };
        let mut thread = InferenceThread::spawn(engines, &thread_params)?;
        if let Some(exited) = thread.exited() {
            tokio::spawn(async move {
                let exit = exited.await.unwrap_or(ThreadExit::Stopped);
                let _ = myself.send_message(SentimentWorkerMsg::ThreadExited(exit));
            });
        }
        info!(
            thread = params.thread_name,
            engine = thread.engine(),
            "sentiment worker started"
        );
        Ok(SentimentWorkerState { _thread: thread })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        _state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            SentimentWorkerMsg::ThreadExited(exit) => {
                Err(format!("inference thread ended: {exit:?}").into())
            }
        }
    }
}
