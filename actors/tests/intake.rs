//! [`JobIntake`]'s batch path with a broker, against the real SQLite and PostgreSQL, with a
//! probe publisher that records what it is asked to publish and refuses what the test says.

use std::collections::HashSet;

use async_trait::async_trait;
use bulwark_actors::{JobIntake, JobPublisher, PublishError};
use bulwark_core::TraceContext;
use bulwark_store::on_both_backends;
use bulwark_store::testsuite::{TestBackend, TestDatabase};
use bulwark_store::{BatchInsertOutcome, DeadLetter, Job, NewJob, Store};
use bulwark_test_support::Probe;
use serde_json::json;

/// Records every batch it is asked to publish; refuses jobs whose payload text is `"refuse"`.
#[derive(Debug, Default)]
struct ProbePublisher {
    batches: Probe<Vec<String>>,
}

impl ProbePublisher {
    fn batches(&self) -> Vec<Vec<String>> {
        self.batches.records()
    }
}

#[async_trait]
impl JobPublisher for ProbePublisher {
    async fn publish_job(&self, job: &Job, trace: &TraceContext) -> Result<(), PublishError> {
        self.publish_jobs(&[job], trace).await.remove(0)
    }

    async fn publish_jobs(
        &self,
        jobs: &[&Job],
        _trace: &TraceContext,
    ) -> Vec<Result<(), PublishError>> {
        self.batches
            .record(jobs.iter().map(|job| job.id.clone()).collect());
        jobs.iter()
            .map(|job| match job.payload["texts"][0].as_str() {
                Some("refuse") => Err(PublishError {
                    message: "nacked by the probe".to_owned(),
                    retryable: true,
                }),
                _ => Ok(()),
            })
            .collect()
    }

    async fn publish_dead_letter(&self, _letter: &DeadLetter) -> Result<(), PublishError> {
        Ok(())
    }

    fn is_connected(&self) -> bool {
        true
    }
}

fn new_job(key: &str, text: &str) -> NewJob {
    NewJob {
        kind: "sentiment.analyze".to_owned(),
        payload: json!({ "texts": [text] }),
        idempotency_key: Some(key.to_owned()),
        request_id: None,
        trace_id: None,
        max_attempts: 3,
        priority: bulwark_store::DEFAULT_PRIORITY,
        run_at_ms: None,
        timeout_ms: None,
        result_ttl_ms: None,
    }
}

async fn outbox_ids(store: &Store) -> HashSet<String> {
    store
        .unpublished_jobs(i64::MAX, 1000)
        .await
        .unwrap()
        .into_iter()
        .map(|job| job.id)
        .collect()
}

/// Proves a batch over the broker is published in one pipelined call holding only the
/// created jobs (not the conflicts), that confirmed jobs leave the outbox while refused ones
/// stay there for the republisher, and that replaying the batch publishes again only the
/// jobs still in the outbox.
async fn a_batch_is_published_once_and_refusals_wait_in_the_outbox(backend: TestBackend) {
    let database = TestDatabase::create(backend).await;
    let store = database.open().await;
    let probe = std::sync::Arc::new(ProbePublisher::default());
    let intake = JobIntake::with_publisher(store.clone(), probe.clone());
    let batch = vec![
        new_job("a", "fine"),
        new_job("b", "refuse"),
        new_job("c", "fine"),
        new_job("a", "another payload"),
    ];
    let trace = TraceContext::continue_or_start(None);
    let outcomes = intake.submit_batch(&batch, &trace).await.unwrap();
    assert!(outcomes[..3].iter().all(BatchInsertOutcome::is_created));
    assert!(matches!(outcomes[3], BatchInsertOutcome::Conflict(_)));
    let created_ids: Vec<String> = outcomes[..3]
        .iter()
        .map(|outcome| outcome.job().id.clone())
        .collect();
    assert_eq!(
        probe.batches(),
        vec![created_ids.clone()],
        "one call, created jobs only"
    );
    let refused_id = created_ids[1].clone();
    assert_eq!(
        outbox_ids(&store).await,
        HashSet::from([refused_id.clone()])
    );

    let replayed = intake.submit_batch(&batch[..3], &trace).await.unwrap();
    assert!(
        replayed
            .iter()
            .all(|outcome| matches!(outcome, BatchInsertOutcome::Existing(_)))
    );
    assert_eq!(
        probe.batches().last(),
        Some(&vec![refused_id.clone()]),
        "a replay publishes only the job still in the outbox"
    );
    assert_eq!(outbox_ids(&store).await, HashSet::from([refused_id]));
}
on_both_backends!(
    a_batch_is_published_once_and_refusals_wait_in_the_outbox_on,
    a_batch_is_published_once_and_refusals_wait_in_the_outbox
);

/// Proves a batch whose jobs all conflict or replay published jobs publishes nothing.
async fn a_batch_without_new_jobs_publishes_nothing(backend: TestBackend) {
    let database = TestDatabase::create(backend).await;
    let store = database.open().await;
    let probe = std::sync::Arc::new(ProbePublisher::default());
    let intake = JobIntake::with_publisher(store.clone(), probe.clone());
    let trace = TraceContext::default();
    intake
        .submit_batch(&[new_job("x", "fine")], &trace)
        .await
        .unwrap();
    let outcomes = intake
        .submit_batch(&[new_job("x", "fine"), new_job("x", "other")], &trace)
        .await
        .unwrap();
    assert!(matches!(outcomes[0], BatchInsertOutcome::Existing(_)));
    assert!(matches!(outcomes[1], BatchInsertOutcome::Conflict(_)));
    assert_eq!(probe.batches().len(), 1, "only the first batch published");
    assert!(outbox_ids(&store).await.is_empty());
}
on_both_backends!(
    a_batch_without_new_jobs_publishes_nothing_on,
    a_batch_without_new_jobs_publishes_nothing
);
