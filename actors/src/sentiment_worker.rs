use std::sync::Arc;
use std::time::Instant;

use bulwark_ml::{
    InferenceError, InferenceThread, InferenceThreadParams, SentimentModel, SentimentScore,
};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tracing::{error, info};

use crate::Liveness;
use crate::metrics::SentimentBatchScored;

/// Builds the model a worker serves. Called on every (re)start, on a blocking thread.
pub type ModelFactory =
    Arc<dyn Fn() -> Result<Box<dyn SentimentModel>, InferenceError> + Send + Sync>;

/// Scores texts with one model on one dedicated inference thread.
#[derive(Debug, Default, Clone, Copy)]
pub struct SentimentWorkerActor;

/// What a sentiment worker is started with.
#[derive(Clone)]
pub struct SentimentWorkerParams {
    pub model_factory: ModelFactory,
    /// Name of the worker's inference thread.
    pub thread_name: String,
    pub liveness: Liveness,
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
    thread: InferenceThread,
    liveness: Liveness,
}

#[derive(Debug)]
pub enum SentimentWorkerMsg {
    /// Scores the texts; the reply has one score per text, in order.
    Analyze {
        texts: Vec<String>,
        reply: RpcReplyPort<Result<Vec<SentimentScore>, InferenceError>>,
    },
}

impl Actor for SentimentWorkerActor {
    type Msg = SentimentWorkerMsg;
    type State = SentimentWorkerState;
    type Arguments = SentimentWorkerParams;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        params: SentimentWorkerParams,
    ) -> Result<Self::State, ActorProcessingErr> {
        let factory = params.model_factory.clone();
        let model = tokio::task::spawn_blocking(move || factory()).await??;
        let thread_params = InferenceThreadParams {
            thread_name: params.thread_name.clone(),
            queue_capacity: 64,
        };
        let thread = InferenceThread::spawn(model, &thread_params)?;
        info!(
            thread = params.thread_name,
            engine = thread.engine(),
            "sentiment worker started"
        );
        Ok(SentimentWorkerState {
            thread,
            liveness: params.liveness,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            SentimentWorkerMsg::Analyze { texts, reply } => {
                let _busy = state.liveness.busy();
                let num_texts = texts.len();
                let started = Instant::now();
                let result = state.thread.predict(texts).await;
                if result.is_ok() {
                    SentimentBatchScored {
                        engine: state.thread.engine(),
                        num_texts,
                        duration: started.elapsed(),
                    }
                    .emit();
                }
                let broken = matches!(
                    result,
                    Err(InferenceError::Panicked(_) | InferenceError::EngineStopped)
                );
                let failure_opt = broken.then(|| format!("{:?}", result.as_ref().err()));
                let _ = reply.send(result);
                if let Some(failure) = failure_opt {
                    error!(%failure, "inference thread is gone, restarting worker");
                    return Err(failure.into());
                }
                Ok(())
            }
        }
    }
}
