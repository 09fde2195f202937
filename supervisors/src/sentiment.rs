//! The `sentiment` subsystem: one supervisor over the sentiment workers, each owning an
//! inference thread, fed by the pool's batch queue.

use std::time::Duration;

use bulwark_actors::{
    ModelFactory, SentimentPool, SentimentPoolParams, SentimentWorkerActor, SentimentWorkerParams,
};
use bulwark_core::Liveness;
use bulwark_ml::{BatchQueue, BatchingParams, ChaosKnobs, ScoringOptions};

use crate::subsystem::{ChildShape, SubsystemShape, SubsystemSpec, actor_spec};
use crate::supervisor::SupervisionStrategy;

/// What the sentiment subsystem is started with.
#[derive(Clone)]
pub struct SentimentSettings {
    pub num_workers: usize,
    pub model_factory: ModelFactory,
    /// Engine name reported in metrics.
    pub engine: String,
    /// Options for requests that do not choose their own.
    pub default_options: ScoringOptions,
    pub batching: BatchingParams,
    pub call_timeout: Duration,
    /// Faults injected on purpose (`chaos.*`); off by default.
    pub chaos: ChaosKnobs,
}

impl std::fmt::Debug for SentimentSettings {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("SentimentSettings")
            .field("num_workers", &self.num_workers)
            .field("engine", &self.engine)
            .field("batching", &self.batching)
            .finish_non_exhaustive()
    }
}

/// The `sentiment` subsystem's shape. One-for-one: workers are independent replicas; the batch
/// queue belongs to the pool, not to a worker, so a restart loses nothing.
pub const SHAPE: SubsystemShape = SubsystemShape {
    name: "sentiment",
    strategy: SupervisionStrategy::OneForOne,
    limits_note_opt: None,
    condition_opt: None,
    children: &[WORKER],
};

const WORKER: ChildShape = ChildShape {
    name: "sentiment-worker-<n>",
    role: "one per worker, each owns an inference thread (ONNX + VADER)",
};

/// Returns the `sentiment` subsystem and the pool that reaches its workers.
pub(crate) fn subsystem(
    instance: &str,
    settings: &SentimentSettings,
) -> SubsystemSpec<SentimentPool> {
    let worker_names: Vec<String> = (0..settings.num_workers)
        .map(|index| WORKER.registered_name(instance, &index.to_string()))
        .collect();
    let queue = BatchQueue::new(settings.batching);
    let pool = SentimentPool::new(SentimentPoolParams {
        worker_names: worker_names.clone(),
        queue: queue.clone(),
        call_timeout: settings.call_timeout,
        engine: settings.engine.clone(),
        default_options: settings.default_options,
    });
    let children = worker_names
        .iter()
        .enumerate()
        .map(|(index, name)| {
            let worker_params = SentimentWorkerParams {
                model_factory: settings.model_factory.clone(),
                thread_name: format!("inference-{index}"),
                queue: queue.clone(),
                liveness: Liveness::default(),
                chaos: settings.chaos.clone(),
            };
            let liveness = worker_params.liveness.clone();
            actor_spec(name, SentimentWorkerActor, worker_params, Some(liveness))
        })
        .collect();
    SubsystemSpec::new(&SHAPE, children, pool)
}
