//! The job runner and sentiment pool against a real SQLite store and real worker actors, with
//! a test model whose speed the test controls.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use bulwark_actors::{
    InFlightJobs, JobExecutor, JobRunnerActor, JobRunnerHandle, JobRunnerParams, ModelFactory,
    PoolError, RetryPolicy, ScoringChoice, SentimentPool, SentimentPoolParams,
    SentimentWorkerActor, SentimentWorkerParams,
};
use bulwark_core::{ErrorCode, Liveness};
use bulwark_ml::{
    BatchQueue, BatchingParams, EngineSet, InferenceError, ScoringOptions, SentimentLabel,
    SentimentModel, SentimentScore,
};
use bulwark_store::testsuite::{TestBackend, TestDatabase};
use bulwark_store::{Job, JobStatus, LocalQueue, LocalQueueParams, NewJob, Store};
use bulwark_test_support::eventually;
use ractor::Actor;
use serde_json::json;
use uuid::Uuid;

/// A model that takes `delay` per batch and calls every text positive.
struct SlowModel {
    delay: Duration,
}

impl SentimentModel for SlowModel {
    fn engine(&self) -> &str {
        "slow-test"
    }

    fn version(&self) -> &str {
        "1"
    }

    fn predict(&mut self, texts: &[String]) -> Result<Vec<SentimentScore>, InferenceError> {
        std::thread::sleep(self.delay);
        Ok(texts
            .iter()
            .map(|_| SentimentScore {
                label: SentimentLabel::Positive,
                score: 0.9,
                confidence: 0.9,
                positive_probability: 0.95,
                engine: "slow-test".to_owned(),
                model_version: "1".to_owned(),
            })
            .collect())
    }
}

/// Starts one registered worker serving `SlowModel` and returns a pool over it.
async fn start_pool(delay: Duration, max_queued: usize) -> (SentimentPool, Liveness) {
    let name = format!("test-worker-{}", Uuid::now_v7());
    let factory: ModelFactory =
        Arc::new(move || Ok(EngineSet::new(None, Box::new(SlowModel { delay }))));
    let queue = BatchQueue::new(BatchingParams {
        max_queued_texts: max_queued,
        ..BatchingParams::default()
    });
    let liveness = Liveness::default();
    let params = SentimentWorkerParams {
        model_factory: factory,
        thread_name: "test-inference".to_owned(),
        queue: queue.clone(),
        liveness: liveness.clone(),
        chaos: bulwark_ml::ChaosKnobs::default(),
    };
    Actor::spawn(Some(name.clone()), SentimentWorkerActor, params)
        .await
        .unwrap();
    let pool = SentimentPool::new(SentimentPoolParams {
        worker_names: vec![name],
        queue,
        call_timeout: Duration::from_secs(10),
        engine: "slow-test".to_owned(),
        default_options: ScoringOptions::default(),
    });
    (pool, liveness)
}

/// A pool whose worker names are registered by nobody.
fn pool_without_workers() -> SentimentPool {
    SentimentPool::new(SentimentPoolParams {
        worker_names: vec![format!("absent-{}", Uuid::now_v7())],
        queue: BatchQueue::new(BatchingParams::default()),
        call_timeout: Duration::from_secs(1),
        engine: "none".to_owned(),
        default_options: ScoringOptions::default(),
    })
}

struct Runner {
    handle: JobRunnerHandle,
    store: Store,
    _database: TestDatabase,
}

async fn start_runner(sentiment: SentimentPool) -> Runner {
    let database = TestDatabase::create(TestBackend::Sqlite).await;
    let store = database.open().await;
    let owner = format!("runner-{}", Uuid::now_v7());
    let transport = Arc::new(LocalQueue::new(
        store.clone(),
        LocalQueueParams {
            owner: owner.clone(),
            lease: Duration::from_secs(30),
            gates: Vec::new(),
        },
    ));
    let params = JobRunnerParams {
        transport,
        store: store.clone(),
        executor: JobExecutor::new(sentiment),
        concurrency: 4,
        poll_interval: Duration::from_millis(20),
        lease: Duration::from_secs(30),
        retry: RetryPolicy {
            base: Duration::from_millis(5),
            max: Duration::from_millis(20),
        },
        in_flight: InFlightJobs::default(),
        draining: Arc::new(AtomicBool::new(false)),
        liveness: Liveness::default(),
        controls: bulwark_actors::JobControls::default(),
    };
    Actor::spawn(Some(owner.clone()), JobRunnerActor, params)
        .await
        .unwrap();
    Runner {
        handle: JobRunnerHandle::new(owner),
        store,
        _database: database,
    }
}

async fn submit(store: &Store, payload: serde_json::Value, max_attempts: u32) -> String {
    let new_job = NewJob {
        kind: "sentiment.analyze".to_owned(),
        payload,
        idempotency_key: None,
        request_id: None,
        trace_id: None,
        max_attempts,
        priority: bulwark_store::DEFAULT_PRIORITY,
        run_at_ms: None,
        timeout_ms: None,
        result_ttl_ms: None,
    };
    store.insert_job(&new_job).await.unwrap().job().id.clone()
}

async fn wait_terminal(store: &Store, job_id: &str) -> Job {
    eventually(Duration::from_secs(10), || async {
        let job = store.get_job(job_id).await.unwrap().unwrap();
        job.status.is_terminal().then_some(job)
    })
    .await
}

/// Proves a valid job succeeds with the model's result stored.
#[tokio::test]
async fn job_succeeds_with_result() {
    let runner = start_runner(start_pool(Duration::ZERO, 8).await.0).await;
    let job_id = submit(&runner.store, json!({ "texts": ["fine", "good"] }), 3).await;
    runner.handle.notify();
    let job = wait_terminal(&runner.store, &job_id).await;
    assert_eq!(job.status, JobStatus::Succeeded);
    assert_eq!(job.attempts, 1);
    let results = job.result.unwrap()["results"].as_array().unwrap().len();
    assert_eq!(results, 2);
}

/// Proves a payload that can never work fails permanently on its first attempt.
#[tokio::test]
async fn invalid_payload_fails_without_retry() {
    let runner = start_runner(start_pool(Duration::ZERO, 8).await.0).await;
    let job_id = submit(&runner.store, json!({ "texts": [] }), 3).await;
    let job = wait_terminal(&runner.store, &job_id).await;
    assert_eq!(job.status, JobStatus::Failed);
    assert_eq!(job.attempts, 1);
    assert_eq!(job.error_code.as_deref(), Some("VALIDATION_FAILED"));
}

/// Proves a job that finds no sentiment worker running (the sentiment subsystem restarting, a
/// pool not started) waits without losing attempts: it is retried again and again past its
/// `max_attempts`, each time given its attempt back with `OVERLOADED` saying why, and never
/// ends `dead` for want of a worker (the game day's panic flood: jobs that only waited for
/// the restarting workers used to die).
#[tokio::test]
async fn a_job_without_a_sentiment_worker_waits_without_losing_attempts() {
    let runner = start_runner(pool_without_workers()).await;
    let job_id = submit(&runner.store, json!({ "texts": ["hello"] }), 2).await;
    // Each retry writes the row again: its distinct update times count the retries.
    let retries_seen = Arc::new(std::sync::Mutex::new(std::collections::BTreeSet::new()));
    let job = eventually(Duration::from_secs(10), || {
        let store = runner.store.clone();
        let retries_seen = retries_seen.clone();
        let job_id = job_id.clone();
        async move {
            let job = store.get_job(&job_id).await.unwrap().unwrap();
            assert!(
                !job.status.is_terminal(),
                "never ends for want of a worker: {job:?}"
            );
            let mut seen = retries_seen.lock().unwrap();
            if job.error_code.is_some() {
                seen.insert(job.updated_at_ms);
            }
            (seen.len() >= 4).then_some(job)
        }
    })
    .await;
    assert!(job.attempts <= 1, "attempts given back: {}", job.attempts);
    assert_eq!(
        job.error_code.as_deref(),
        Some(ErrorCode::Overloaded.as_str())
    );
    assert!(
        job.error_message
            .as_deref()
            .is_some_and(|message| message.contains("worker")),
        "{:?}",
        job.error_message
    );
}

/// Proves a drain waits for running jobs up to its timeout, then releases the unfinished ones
/// back to the queue without counting the attempt, and claims nothing afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_releases_jobs_that_do_not_finish_in_time() {
    let runner = start_runner(start_pool(Duration::from_millis(1500), 8).await.0).await;
    let job_ids = [
        submit(&runner.store, json!({ "texts": ["a"] }), 3).await,
        submit(&runner.store, json!({ "texts": ["b"] }), 3).await,
    ];
    runner.handle.notify();
    // The first job starts.
    eventually(Duration::from_secs(5), || async {
        let job = runner.store.get_job(&job_ids[0]).await.unwrap().unwrap();
        (job.status == JobStatus::Running).then_some(())
    })
    .await;
    let report = runner
        .handle
        .drain(Duration::from_millis(100))
        .await
        .expect("runner drains");
    assert!(report.num_released >= 1, "{report:?}");
    for job_id in &job_ids {
        let job = runner.store.get_job(job_id).await.unwrap().unwrap();
        assert_eq!(job.status, JobStatus::Queued, "released or never claimed");
        assert_eq!(job.attempts, 0);
        assert!(job.lease_owner.is_none());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let job = runner.store.get_job(&job_ids[0]).await.unwrap().unwrap();
    assert_eq!(
        job.status,
        JobStatus::Queued,
        "a draining runner claims nothing"
    );
}

/// Proves the pool refuses calls beyond its bound at once instead of queueing them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_refuses_calls_beyond_its_bound() {
    let (pool, liveness) = start_pool(Duration::from_millis(300), 1).await;
    let busy_pool = pool.clone();
    let first = tokio::spawn(async move {
        busy_pool
            .analyze(vec!["slow".to_owned()], ScoringChoice::default())
            .await
    });
    // Once the first text is being scored it has left the queue; then fill the one slot.
    // The first batch is being scored.
    eventually(Duration::from_secs(5), || async {
        liveness.busy_for().map(drop)
    })
    .await;
    let waiting_pool = pool.clone();
    let second = tokio::spawn(async move {
        waiting_pool
            .analyze(vec!["queued".to_owned()], ScoringChoice::default())
            .await
    });
    // The second text waits in the queue.
    eventually(Duration::from_secs(5), || async {
        (pool.queued() > 0).then_some(())
    })
    .await;
    let refused = pool
        .analyze(vec!["third".to_owned()], ScoringChoice::default())
        .await
        .unwrap_err();
    assert!(matches!(refused, PoolError::Overloaded), "{refused:?}");
    assert_eq!(refused.code(), ErrorCode::Overloaded);
    assert!(refused.is_retryable());
    assert_eq!(first.await.unwrap().unwrap().len(), 1);
    assert_eq!(second.await.unwrap().unwrap().len(), 1);
    assert_eq!(
        pool.analyze(vec!["fourth".to_owned()], ScoringChoice::default())
            .await
            .unwrap()
            .len(),
        1
    );
}

/// Proves jobs turned away by a full sentiment queue wait for capacity instead of burning
/// attempts: with one attempt each and a queue of one text, every job still succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overloaded_jobs_wait_without_losing_attempts() {
    let runner = start_runner(start_pool(Duration::from_millis(30), 1).await.0).await;
    let mut job_ids = Vec::new();
    for index in 0..6 {
        job_ids.push(
            submit(
                &runner.store,
                json!({ "texts": [format!("text {index}")] }),
                1,
            )
            .await,
        );
    }
    runner.handle.notify();
    for job_id in &job_ids {
        let job = wait_terminal(&runner.store, job_id).await;
        assert_eq!(job.status, JobStatus::Succeeded, "{job:?}");
        assert_eq!(job.attempts, 1);
    }
}
