//! [`JobIntake`]: the one path that creates jobs, from the API, the scheduler, dead-letter
//! requeues and broker deliveries alike.
//!
//! Without a broker, a job is a row the local job runner claims. With a broker, the row is
//! stored first (routed `amqp`, in the outbox), then published with publisher confirms; the
//! confirm takes the row out of the outbox. A publish that fails leaves the row in the outbox,
//! and the broker's republisher sends it again, so a stored job never vanishes and the caller
//! still gets its job back (the publish is an implementation detail, not the caller's problem).
//! A batch is stored in one statement and its jobs are published with pipelined confirms (all
//! sent, then every confirm awaited), then marked published in one statement.

use std::collections::HashSet;
use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use bulwark_core::{TraceContext, now_ms};
use bulwark_store::{
    BatchInsertOutcome, DeadLetter, InsertOutcome, Job, JobGraph, JobRoute, NewJob, Store,
    StoreError,
};
use tracing::{Instrument, debug, warn};

use crate::JobRunnerHandle;

/// Why a publish was not confirmed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("publish failed: {message}")]
pub struct PublishError {
    pub message: String,
    /// False when publishing the same job again cannot succeed (e.g. it cannot be encoded).
    pub retryable: bool,
}

impl PublishError {
    pub fn is_retryable(&self) -> bool {
        self.retryable
    }
}

/// Sends stored jobs to the broker: persistent, mandatory, and returns only once the broker
/// confirmed the message. Implemented by `bulwark-broker`, so actors stay free of AMQP.
#[async_trait]
pub trait JobPublisher: Send + Sync + Debug + 'static {
    async fn publish_job(&self, job: &Job, trace: &TraceContext) -> Result<(), PublishError>;

    /// Publishes several stored jobs, pipelined: every message is sent before any confirm is
    /// awaited. One answer per job, in order. The default publishes them concurrently through
    /// [`JobPublisher::publish_job`].
    async fn publish_jobs(
        &self,
        jobs: &[&Job],
        trace: &TraceContext,
    ) -> Vec<Result<(), PublishError>> {
        futures::future::join_all(jobs.iter().map(|job| self.publish_job(job, trace))).await
    }

    /// Publishes a broker dead letter's message back to its original queue, as it was
    /// received (body, content type, message id, correlation id, reply-to, request id, trace),
    /// marked with the letter's id; returns once the broker confirmed it.
    async fn publish_dead_letter(&self, letter: &DeadLetter) -> Result<(), PublishError>;

    /// Returns true while the publisher holds a live broker connection.
    fn is_connected(&self) -> bool;
}

/// Creates jobs: stores the row idempotently, then hands it to whoever runs it.
#[derive(Debug, Clone)]
pub struct JobIntake {
    store: Store,
    job_runner: Option<JobRunnerHandle>,
    publisher: Option<Arc<dyn JobPublisher>>,
}

impl JobIntake {
    /// An intake for the local queue: rows are claimed by `job_runner`, notified on create.
    pub fn local(store: Store, job_runner: JobRunnerHandle) -> Self {
        JobIntake {
            store,
            job_runner: Some(job_runner),
            publisher: None,
        }
    }

    /// An intake whose jobs travel over the broker through `publisher`.
    pub fn with_publisher(store: Store, publisher: Arc<dyn JobPublisher>) -> Self {
        JobIntake {
            store,
            job_runner: None,
            publisher: Some(publisher),
        }
    }

    /// Returns true when jobs created here are carried by the broker.
    pub fn uses_broker(&self) -> bool {
        self.publisher.is_some()
    }

    /// Returns the broker publisher, when jobs travel over the broker.
    pub fn publisher(&self) -> Option<&Arc<dyn JobPublisher>> {
        self.publisher.as_ref()
    }

    /// Creates a job whose payload the caller has validated for its kind, or returns the job
    /// already stored under the same idempotency key.
    pub async fn submit(&self, new_job: &NewJob) -> Result<InsertOutcome, StoreError> {
        self.submit_traced(new_job, &TraceContext::default()).await
    }

    /// Like [`JobIntake::submit`], carrying the caller's trace context to the broker. A
    /// submission is a batch of one: see [`JobIntake::submit_batch`].
    pub async fn submit_traced(
        &self,
        new_job: &NewJob,
        trace: &TraceContext,
    ) -> Result<InsertOutcome, StoreError> {
        let outcomes = self
            .submit_batch(std::slice::from_ref(new_job), trace)
            .await?;
        BatchInsertOutcome::single(outcomes)
    }

    /// Creates the jobs of a batch, whose payloads the caller has validated for their kinds;
    /// one outcome per job, in order (see [`Store::insert_job_batch`]). The local runner is
    /// woken once. With a broker, the created jobs, and replays whose first publish was never
    /// confirmed, are published with pipelined confirms; those not confirmed wait in the
    /// outbox for the republisher, and the caller still gets its outcomes.
    pub async fn submit_batch(
        &self,
        new_jobs: &[NewJob],
        trace: &TraceContext,
    ) -> Result<Vec<BatchInsertOutcome>, StoreError> {
        async {
            let outcomes = self.store.insert_job_batch(new_jobs, self.route()).await?;
            self.hand_over(&outcomes, trace).await?;
            Ok(outcomes)
        }
        .instrument(submit_span(new_jobs.len()))
        .await
    }

    /// Creates the jobs of a workflow graph, whose payloads the caller has validated and
    /// which passed [`JobGraph::check`]; one outcome per job, in order (see
    /// [`Store::insert_job_graph`]). Jobs without parents are handed over as a batch's are;
    /// the others wait in the store until their parents are resolved.
    pub async fn submit_graph(
        &self,
        graph: &JobGraph,
        trace: &TraceContext,
    ) -> Result<Vec<BatchInsertOutcome>, StoreError> {
        async {
            let outcomes = self.store.insert_job_graph(graph, self.route()).await?;
            self.hand_over(&outcomes, trace).await?;
            Ok(outcomes)
        }
        .instrument(submit_span(graph.jobs.len()))
        .await
    }

    fn route(&self) -> JobRoute {
        match self.publisher {
            Some(_) => JobRoute::BrokerPending,
            None => JobRoute::Local,
        }
    }

    /// Hands stored jobs to whoever runs them: the local runner is woken once; with a broker,
    /// the created jobs due now, and replays whose first publish was never confirmed, are
    /// published with pipelined confirms, and those not confirmed wait in the outbox for the
    /// republisher.
    async fn hand_over(
        &self,
        outcomes: &[BatchInsertOutcome],
        trace: &TraceContext,
    ) -> Result<(), StoreError> {
        let Some(publisher) = &self.publisher else {
            if outcomes.iter().any(BatchInsertOutcome::is_created)
                && let Some(job_runner) = &self.job_runner
            {
                job_runner.notify();
            }
            return Ok(());
        };
        // A replay whose first publish was never confirmed is sent again now, as a single
        // submission's is, rather than waiting for the republisher.
        let mut replayed_ids: Vec<String> = outcomes
            .iter()
            .filter_map(|outcome| match outcome {
                BatchInsertOutcome::Existing(job) => Some(job.id.clone()),
                BatchInsertOutcome::Created(_) | BatchInsertOutcome::Conflict(_) => None,
            })
            .collect();
        replayed_ids.sort_unstable();
        replayed_ids.dedup();
        let mut unpublished_ids: HashSet<String> = self
            .store
            .unpublished_job_ids(&replayed_ids)
            .await?
            .into_iter()
            .collect();
        // A delayed (or waiting) job stays in the outbox: the republisher publishes it once
        // it is due.
        let now = now_ms();
        let to_publish: Vec<&Job> = outcomes
            .iter()
            .filter(|outcome| match outcome {
                BatchInsertOutcome::Created(_) => true,
                BatchInsertOutcome::Existing(job) => unpublished_ids.remove(&job.id),
                BatchInsertOutcome::Conflict(_) => false,
            })
            .map(BatchInsertOutcome::job)
            .filter(|job| job.run_at_ms <= now)
            .collect();
        publish_batch_and_mark(&self.store, publisher.as_ref(), &to_publish, trace).await;
        Ok(())
    }
}

/// The span of a submission: storing its jobs and handing them over (published, or the local
/// runner woken).
fn submit_span(num_jobs: usize) -> tracing::Span {
    tracing::info_span!("job.submit", otel.kind = "internal", job.count = num_jobs)
}

/// Publishes stored jobs with pipelined confirms and takes the confirmed ones out of the
/// outbox in one statement. Returns how many the broker confirmed. Failures are logged once
/// for the batch: those rows stay in the outbox for the republisher.
pub async fn publish_batch_and_mark(
    store: &Store,
    publisher: &dyn JobPublisher,
    jobs: &[&Job],
    trace: &TraceContext,
) -> usize {
    if jobs.is_empty() {
        return 0;
    }
    let answers = publisher.publish_jobs(jobs, trace).await;
    let mut confirmed = Vec::with_capacity(jobs.len());
    let mut first_failure_opt = None;
    for (job, answer) in jobs.iter().zip(answers) {
        match answer {
            Ok(()) => confirmed.push(*job),
            Err(error) => {
                first_failure_opt.get_or_insert((error, *job));
            }
        }
    }
    let num_confirmed = confirmed.len();
    if let Err(error) = store.mark_jobs_published(&confirmed).await {
        // The jobs are on the broker; the republisher may send them again, and the
        // consumer's idempotency makes the duplicates harmless.
        warn!(%error, num_confirmed, "failed to mark jobs published");
    }
    match first_failure_opt {
        None => debug!(
            num_published = num_confirmed,
            first_job_id = %jobs[0].id,
            kind = %jobs[0].kind,
            "jobs published"
        ),
        Some((error, job)) => warn!(
            %error,
            job_id = %job.id,
            kind = %job.kind,
            num_published = num_confirmed,
            num_waiting = jobs.len() - num_confirmed,
            "jobs stored but not all published, the rest waits in the outbox"
        ),
    }
    num_confirmed
}

/// Publishes a stored job and takes it out of the outbox once confirmed. Returns true when
/// the broker confirmed. Failures are logged: the row stays in the outbox for the republisher.
pub async fn publish_and_mark(
    store: &Store,
    publisher: &dyn JobPublisher,
    job: &Job,
    trace: &TraceContext,
) -> bool {
    publish_batch_and_mark(store, publisher, &[job], trace).await == 1
}
