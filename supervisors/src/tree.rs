use std::sync::Arc;
use std::time::Duration;

use bulwark_actors::{
    JobRunnerActor, JobRunnerHandle, JobRunnerParams, ModelFactory, SentimentPool,
    SentimentPoolParams, SentimentWorkerActor, SentimentWorkerParams,
};
use bulwark_core::Liveness;
use bulwark_ml::{BatchQueue, BatchingParams, ChaosKnobs, ScoringOptions};
use futures::FutureExt;
use ractor::{Actor, ActorCell, ActorRef};
use tokio::task::JoinHandle;

use crate::supervisor::{
    ChildSpec, DrainFn, RestartIntensity, RestartType, StartFn, SupervisionStrategy,
    SupervisorActor, SupervisorMsg, SupervisorParams, SupervisorSnapshot, observe_supervisor,
};

/// Restart policy applied to every supervisor of the tree.
#[derive(Debug, Clone, Copy)]
pub struct SupervisionSettings {
    pub intensity: RestartIntensity,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    pub hang_timeout: Duration,
    pub heartbeat: Duration,
    /// How long an operator's stop or restart lets running jobs finish before releasing them.
    pub drain_timeout: Duration,
}

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

/// What [`BulwarkTree::start`] is given. The job runner's params are built by the caller from
/// the sentiment pool this tree creates, through `job_runner`.
pub struct TreeParams {
    /// Prefix of every registered actor name, unique per process (several services may share
    /// one process in tests).
    pub instance: String,
    pub supervision: SupervisionSettings,
    pub sentiment: SentimentSettings,
    /// Builds the job runner's params once the sentiment pool exists.
    pub job_runner: Box<dyn FnOnce(SentimentPool) -> JobRunnerParams + Send>,
    /// The `scheduler` subsystem; `None` when this node runs no scheduler.
    pub scheduler: Option<crate::scheduler::SchedulerFactory>,
    /// The `dead-letter` subsystem; `None` when this node runs no dead-letter actor.
    pub dead_letters: Option<crate::dead_letters::DeadLetterFactory>,
    /// The `ingress` subsystem (RabbitMQ consumers); `None` without a broker.
    pub ingress: Option<crate::ingress::IngressFactory>,
    /// The `providers` subsystem; `None` when no provider is configured.
    pub providers: Option<crate::providers::ProvidersSettings>,
}

impl std::fmt::Debug for TreeParams {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("TreeParams")
            .field("instance", &self.instance)
            .finish_non_exhaustive()
    }
}

/// The running supervision tree:
///
/// ```text
/// root (one_for_one)
/// ├── sentiment (one_for_one)
/// │   ├── sentiment-worker-0   (model on its own inference thread)
/// │   └── sentiment-worker-N
/// └── jobs (one_for_one)
///     └── job-runner           (claims jobs, runs them through the sentiment pool)
/// ```
#[derive(Debug)]
pub struct BulwarkTree {
    pub root: ActorRef<SupervisorMsg>,
    pub root_handle: JoinHandle<()>,
    pub sentiment: SentimentPool,
    pub job_runner: JobRunnerHandle,
    /// `None` when this node runs no scheduler.
    pub scheduler: Option<bulwark_actors::SchedulerHandle>,
    /// `None` when this node runs no dead-letter actor.
    pub dead_letters: Option<bulwark_actors::DeadLetterHandle>,
    /// `None` when no provider is configured.
    pub providers: Option<bulwark_actors::ProviderRouter>,
}

impl BulwarkTree {
    /// Starts the whole tree, downstream first: sentiment workers before the job runner.
    pub async fn start(params: TreeParams) -> Result<BulwarkTree, ractor::SpawnErr> {
        let instance = params.instance;
        let settings = params.supervision;
        let worker_names: Vec<String> = (0..params.sentiment.num_workers)
            .map(|index| format!("{instance}/sentiment-worker-{index}"))
            .collect();
        let queue = BatchQueue::new(params.sentiment.batching);
        let sentiment = SentimentPool::new(SentimentPoolParams {
            worker_names: worker_names.clone(),
            queue: queue.clone(),
            call_timeout: params.sentiment.call_timeout,
            engine: params.sentiment.engine.clone(),
            default_options: params.sentiment.default_options,
        });
        let worker_specs = worker_names
            .iter()
            .enumerate()
            .map(|(index, name)| {
                let worker_params = SentimentWorkerParams {
                    model_factory: params.sentiment.model_factory.clone(),
                    thread_name: format!("inference-{index}"),
                    queue: queue.clone(),
                    liveness: Liveness::default(),
                    chaos: params.sentiment.chaos.clone(),
                };
                let liveness = worker_params.liveness.clone();
                actor_spec(name, SentimentWorkerActor, worker_params, Some(liveness))
            })
            .collect();
        let runner_params = (params.job_runner)(sentiment.clone());
        let ingress_executor = runner_params.executor.clone();
        let runner_name = format!("{instance}/job-runner");
        let runner_liveness = runner_params.liveness.clone();
        let mut runner_spec = actor_spec(
            &runner_name,
            JobRunnerActor,
            runner_params,
            Some(runner_liveness),
        );
        runner_spec.drain = Some(drain_job_runner(
            JobRunnerHandle::new(runner_name.clone()),
            settings.drain_timeout,
        ));

        let sentiment_supervisor = supervisor_spec(
            &instance,
            supervisor_params("sentiment", worker_specs, settings),
        );
        let jobs_supervisor = supervisor_spec(
            &instance,
            supervisor_params("jobs", vec![runner_spec], settings),
        );
        let mut root_children = vec![sentiment_supervisor];
        let providers = params.providers.map(|providers_settings| {
            let (spec, router) =
                crate::providers::providers_supervisor(&instance, &providers_settings, settings);
            root_children.push(spec);
            router
        });
        root_children.push(jobs_supervisor);
        let scheduler = params.scheduler.map(|factory| {
            let scheduler_params = factory(JobRunnerHandle::new(runner_name.clone()));
            let (spec, handle) =
                crate::scheduler::scheduler_supervisor(&instance, scheduler_params, settings);
            root_children.push(spec);
            handle
        });
        let dead_letters = params.dead_letters.map(|factory| {
            let dead_letter_params = factory(JobRunnerHandle::new(runner_name.clone()));
            let (spec, handle) = crate::dead_letters::dead_letter_supervisor(
                &instance,
                dead_letter_params,
                settings,
            );
            root_children.push(spec);
            handle
        });
        if let Some(factory) = params.ingress {
            root_children.push(factory(ingress_executor, settings));
        }
        let root_params = supervisor_params("root", root_children, settings);
        let (root, root_handle) = Actor::spawn(
            Some(format!("{instance}/root")),
            SupervisorActor,
            root_params,
        )
        .await?;
        Ok(BulwarkTree {
            root,
            root_handle,
            sentiment,
            job_runner: JobRunnerHandle::new(runner_name),
            scheduler,
            dead_letters,
            providers,
        })
    }

    /// Returns the whole tree's counters, or `None` if the root does not answer.
    pub async fn observe(&self) -> Option<SupervisorSnapshot> {
        observe_supervisor(&self.root).await
    }
}

/// Returns a subsystem supervisor's params with the tree's restart policy and the default
/// strategy, `one_for_one`; set `strategy` on the result to choose another
/// (`SupervisorParams { strategy: SupervisionStrategy::RestForOne, ..supervisor_params(..) }`).
pub(crate) fn supervisor_params(
    name: &str,
    children: Vec<ChildSpec>,
    settings: SupervisionSettings,
) -> SupervisorParams {
    SupervisorParams {
        name: name.to_owned(),
        children,
        strategy: SupervisionStrategy::OneForOne,
        intensity: settings.intensity,
        backoff_base: settings.backoff_base,
        backoff_max: settings.backoff_max,
        hang_timeout: settings.hang_timeout,
        heartbeat: settings.heartbeat,
    }
}

/// Returns the child spec of a subsystem supervisor, registered as `<instance>/<name>`.
pub(crate) fn supervisor_spec(instance: &str, params: SupervisorParams) -> ChildSpec {
    let name = params.name.clone();
    let mut spec = actor_spec(&format!("{instance}/{name}"), SupervisorActor, params, None);
    spec.name = name;
    spec.is_supervisor = true;
    spec
}

/// Returns a permanent child spec that spawns `actor` under `registered_name` with a clone of
/// `arguments` on every (re)start.
pub fn actor_spec<A>(
    registered_name: &str,
    actor: A,
    arguments: A::Arguments,
    liveness: Option<Liveness>,
) -> ChildSpec
where
    A: Actor + Clone + Sync,
    A::Arguments: Clone + Sync,
{
    let registered = registered_name.to_owned();
    let start: StartFn = Arc::new(move |supervisor: ActorCell| {
        let actor = actor.clone();
        let arguments = arguments.clone();
        let registered = registered.clone();
        async move {
            let (actor_ref, _handle) =
                Actor::spawn_linked(Some(registered), actor, arguments, supervisor).await?;
            Ok(actor_ref.get_cell())
        }
        .boxed()
    });
    ChildSpec {
        name: registered_name
            .rsplit('/')
            .next()
            .unwrap_or(registered_name)
            .to_owned(),
        restart: RestartType::Permanent,
        start,
        liveness,
        is_supervisor: false,
        drain: None,
    }
}

/// Returns the hook an operator's stop or restart of the job runner calls first: running jobs
/// finish within `timeout`, the rest go back to the queue.
fn drain_job_runner(handle: JobRunnerHandle, timeout: Duration) -> DrainFn {
    Arc::new(move || {
        let handle = handle.clone();
        async move {
            if let Some(report) = handle.drain(timeout).await {
                tracing::info!(
                    num_finished = report.num_finished,
                    num_released = report.num_released,
                    "job runner drained for an operator"
                );
            }
        }
        .boxed()
    })
}
