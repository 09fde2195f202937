//! The jobs subsystem under its supervisor: the real [`JobRunnerActor`] on a real SQLite
//! queue, behind a transport that panics or hangs once on demand, proves that a runner crash or
//! hang is restarted and loses no job (tasks and leases outlive the runner), and that an error
//! from the transport is a value the runner survives.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bulwark_actors::{
    InFlightJobs, JobExecutor, JobRunnerActor, JobRunnerParams, RetryPolicy, SentimentPool,
    SentimentPoolParams, SentimentWorkerActor, SentimentWorkerParams,
};
use bulwark_core::Liveness;
use bulwark_ml::{BatchQueue, BatchingParams, ChaosKnobs, EngineSet, ScoringOptions, VaderModel};
use bulwark_store::testsuite::{TestBackend, TestDatabase};
use bulwark_store::{
    Job, JobFailure, JobStatus, JobTransport, LocalQueue, LocalQueueParams, NewJob, OutcomeSink,
    Store, StoreError,
};
use bulwark_supervisors::{
    ExitKind, RestartIntensity, SupervisionStrategy, SupervisorActor, SupervisorMsg,
    SupervisorParams, actor_spec, install_panic_hook, observe_supervisor,
};
use bulwark_test_support::{eventually, wait_for_restart_after};
use ractor::{Actor, ActorRef};
use serde_json::{Value, json};

const NO_FAULT: u8 = 0;
const PANIC_ONCE: u8 = 1;
const HANG_ONCE: u8 = 2;
const ERROR_ONCE: u8 = 3;
/// How long the runner's restart may take before the test fails.
const RESTART_DEADLINE: Duration = Duration::from_secs(10);
/// How long every submitted job may take to succeed before the test fails.
const JOBS_DEADLINE: Duration = Duration::from_secs(20);

/// A [`LocalQueue`] whose next `claim` panics, hangs or fails when told to.
#[derive(Debug)]
struct FaultyTransport {
    inner: LocalQueue,
    fault: Arc<AtomicU8>,
}

#[async_trait]
impl OutcomeSink for FaultyTransport {
    async fn complete(&self, job: &Job, result: &Value) -> Result<Option<Job>, StoreError> {
        self.inner.complete(job, result).await
    }

    async fn fail(&self, job: &Job, failure: &JobFailure) -> Result<Option<Job>, StoreError> {
        self.inner.fail(job, failure).await
    }
}

#[async_trait]
impl JobTransport for FaultyTransport {
    async fn claim(&self, max_jobs: usize) -> Result<Vec<Job>, StoreError> {
        match self.fault.swap(NO_FAULT, Ordering::SeqCst) {
            PANIC_ONCE => panic!("faulty transport: claim panicked"),
            HANG_ONCE => futures::future::pending().await,
            ERROR_ONCE => Err(StoreError::Unavailable(sqlx::Error::PoolTimedOut)),
            _ => self.inner.claim(max_jobs).await,
        }
    }

    async fn renew(&self, job_ids: &[String]) -> Result<u64, StoreError> {
        self.inner.renew(job_ids).await
    }

    async fn release(&self, job_ids: &[String]) -> Result<u64, StoreError> {
        self.inner.release(job_ids).await
    }

    fn owner(&self) -> &str {
        self.inner.owner()
    }
}

struct JobsSubsystem {
    supervisor: ActorRef<SupervisorMsg>,
    store: Store,
    fault: Arc<AtomicU8>,
    _database: TestDatabase,
}

async fn start(test: &str) -> JobsSubsystem {
    install_panic_hook();
    let database = TestDatabase::create(TestBackend::Sqlite).await;
    let store = database.open().await;
    let queue = BatchQueue::new(BatchingParams::default());
    let worker_name = format!("{test}/sentiment-worker-0");
    Actor::spawn(
        Some(worker_name.clone()),
        SentimentWorkerActor,
        SentimentWorkerParams {
            model_factory: Arc::new(|| Ok(EngineSet::new(None, Box::new(VaderModel::new())))),
            thread_name: format!("{test}-inference"),
            queue: queue.clone(),
            liveness: Liveness::default(),
            chaos: ChaosKnobs::default(),
        },
    )
    .await
    .expect("worker starts");
    let pool = SentimentPool::new(SentimentPoolParams {
        worker_names: vec![worker_name],
        queue,
        call_timeout: Duration::from_secs(5),
        engine: "lexicon".to_owned(),
        default_options: ScoringOptions::default(),
    });
    let fault = Arc::new(AtomicU8::new(NO_FAULT));
    let transport = Arc::new(FaultyTransport {
        inner: LocalQueue::new(
            store.clone(),
            LocalQueueParams {
                owner: format!("{test}-node"),
                lease: Duration::from_secs(30),
                gates: Vec::new(),
            },
        ),
        fault: fault.clone(),
    });
    let liveness = Liveness::default();
    let runner_params = JobRunnerParams {
        transport,
        store: store.clone(),
        executor: JobExecutor::new(pool),
        concurrency: 4,
        poll_interval: Duration::from_millis(20),
        lease: Duration::from_secs(30),
        retry: RetryPolicy {
            base: Duration::from_millis(5),
            max: Duration::from_millis(20),
        },
        in_flight: InFlightJobs::default(),
        draining: Arc::new(AtomicBool::new(false)),
        liveness: liveness.clone(),
        controls: bulwark_actors::JobControls::default(),
    };
    let runner_spec = actor_spec(
        &format!("{test}/job-runner"),
        JobRunnerActor,
        runner_params,
        Some(liveness),
    );
    let (supervisor, _handle) = Actor::spawn(
        Some(format!("{test}/jobs")),
        SupervisorActor,
        SupervisorParams {
            name: "jobs".to_owned(),
            children: vec![runner_spec],
            strategy: SupervisionStrategy::OneForOne,
            intensity: RestartIntensity {
                max_restarts: 10,
                within: Duration::from_secs(10),
            },
            backoff_base: Duration::from_millis(5),
            backoff_max: Duration::from_millis(50),
            hang_timeout: Duration::from_millis(300),
            heartbeat: Duration::from_millis(20),
        },
    )
    .await
    .expect("jobs supervisor starts");
    JobsSubsystem {
        supervisor,
        store,
        fault,
        _database: database,
    }
}

impl JobsSubsystem {
    async fn submit(&self, count: usize) -> Vec<String> {
        let mut ids = Vec::with_capacity(count);
        for index in 0..count {
            let new_job = NewJob {
                kind: "sentiment.analyze".to_owned(),
                payload: json!({"texts": [format!("a pleasant job {index}")]}),
                idempotency_key: None,
                request_id: None,
                trace_id: None,
                max_attempts: 3,
                priority: bulwark_store::DEFAULT_PRIORITY,
                run_at_ms: None,
                timeout_ms: None,
                result_ttl_ms: None,
            };
            let outcome = self.store.insert_job(&new_job).await.expect("job stored");
            let job = match outcome {
                bulwark_store::InsertOutcome::Created(job)
                | bulwark_store::InsertOutcome::Existing(job) => job,
            };
            ids.push(job.id);
        }
        ids
    }

    /// Waits until every job succeeded.
    async fn assert_all_succeed(&self, ids: &[String]) {
        eventually(JOBS_DEADLINE, || async {
            for id in ids {
                let job = self
                    .store
                    .get_job(id)
                    .await
                    .expect("read")
                    .expect("job exists");
                assert!(
                    !matches!(job.status, JobStatus::Failed | JobStatus::Dead),
                    "job {id} ended {:?}",
                    job.status
                );
                if job.status != JobStatus::Succeeded {
                    return None;
                }
            }
            Some(())
        })
        .await;
    }
}

/// Proves a job runner that panics while claiming is counted as a panic and restarted, and
/// every job, before and after, succeeds: none is lost.
#[tokio::test]
async fn runner_panic_is_restarted_and_loses_no_job() {
    let jobs = start("runner_panic_is_restarted_and_loses_no_job").await;
    let before = jobs.submit(10).await;
    jobs.fault.store(PANIC_ONCE, Ordering::SeqCst);
    let after = jobs.submit(10).await;
    wait_for_restart_after(&jobs.supervisor, ExitKind::Panic, RESTART_DEADLINE).await;
    jobs.assert_all_succeed(&before).await;
    jobs.assert_all_succeed(&after).await;
    jobs.supervisor.stop(None);
}

/// Proves a job runner stuck in a claim is detected as hung, killed, restarted, and every job
/// still succeeds.
#[tokio::test]
async fn runner_hang_is_killed_and_loses_no_job() {
    let jobs = start("runner_hang_is_killed_and_loses_no_job").await;
    jobs.fault.store(HANG_ONCE, Ordering::SeqCst);
    let ids = jobs.submit(10).await;
    wait_for_restart_after(&jobs.supervisor, ExitKind::Hang, RESTART_DEADLINE).await;
    jobs.assert_all_succeed(&ids).await;
    jobs.supervisor.stop(None);
}

/// Proves an error from the transport is a value: the runner logs it, is not restarted, and
/// every job succeeds on a later poll.
#[tokio::test]
async fn transport_error_is_survived_without_restart() {
    let jobs = start("transport_error_is_survived_without_restart").await;
    jobs.fault.store(ERROR_ONCE, Ordering::SeqCst);
    let ids = jobs.submit(10).await;
    jobs.assert_all_succeed(&ids).await;
    assert_eq!(
        jobs.fault.load(Ordering::SeqCst),
        NO_FAULT,
        "the error was injected"
    );
    let snapshot = observe_supervisor(&jobs.supervisor)
        .await
        .expect("observed");
    assert_eq!(snapshot.children[0].counters.restarts, 0);
    jobs.supervisor.stop(None);
}
