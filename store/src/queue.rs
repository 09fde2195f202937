use std::fmt::Debug;
use std::time::Duration;

use async_trait::async_trait;
use bulwark_core::{KindGate, now_ms};
use serde_json::Value;

use crate::jobs::CompleteJobs;
use crate::{
    GroupCommit, GroupCommitParams, Job, JobCompletion, JobFailure, LeaseRef, Store, StoreError,
};

/// Where the outcome of an attempt is written, whatever carried the job: the local queue, or
/// the broker's delivery path. The attempt core (`bulwark_actors::attempt`) decides what to
/// write; the sink only writes it, under this node's lease.
#[async_trait]
pub trait OutcomeSink: Send + Sync + Debug {
    /// Records a success and returns the job as stored; `None` means the lease was lost and
    /// the outcome was not stored.
    async fn complete(&self, job: &Job, result: &Value) -> Result<Option<Job>, StoreError>;

    /// Records a failed attempt and returns the job as stored; `None` means the lease was lost
    /// and nothing was stored.
    async fn fail(&self, job: &Job, failure: &JobFailure) -> Result<Option<Job>, StoreError>;

    /// Returns when a job retried after `delay` becomes runnable again in its row. The local
    /// queue waits in the row; the broker holds the message back instead and keeps the row
    /// runnable at once, so a redelivery can claim it.
    fn retry_at_ms(&self, delay: Duration) -> i64 {
        now_ms().saturating_add(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX))
    }
}

/// How jobs reach a node's job runner (claimed by the node, with leases) and how their outcomes
/// leave it. [`LocalQueue`] claims rows of the `jobs` table.
#[async_trait]
pub trait JobTransport: OutcomeSink + 'static {
    /// Returns up to `max_jobs` jobs this node now holds a lease on.
    async fn claim(&self, max_jobs: usize) -> Result<Vec<Job>, StoreError>;

    /// Extends this node's leases on jobs still running.
    async fn renew(&self, job_ids: &[String]) -> Result<u64, StoreError>;

    /// Returns jobs this node will not finish to the queue, without counting the attempt.
    async fn release(&self, job_ids: &[String]) -> Result<u64, StoreError>;

    /// Returns the lease owner name of this node.
    fn owner(&self) -> &str;
}

/// What a [`LocalQueue`] is built with.
#[derive(Debug, Clone)]
pub struct LocalQueueParams {
    /// This node's name in `lease_owner`; must be unique among nodes sharing the database.
    pub owner: String,
    pub lease: Duration,
    /// The limited kinds: their jobs are claimed only through their gates.
    pub gates: Vec<KindGate>,
}

/// The most completions one statement carries, and two statements in flight (see
/// [`GroupCommitParams`]).
const COMPLETIONS: GroupCommitParams = GroupCommitParams {
    max_batch: 256,
    num_writers: 2,
};

/// The embedded transport: jobs are claimed from the `jobs` table with leases, in batches
/// sized to the runner's free capacity; successes finishing together share one statement.
#[derive(Debug, Clone)]
pub struct LocalQueue {
    store: Store,
    params: LocalQueueParams,
    completions: GroupCommit<CompleteJobs>,
}

impl LocalQueue {
    /// Returns the queue; starts its completion writers on the current tokio runtime.
    pub fn new(store: Store, params: LocalQueueParams) -> Self {
        let completions = GroupCommit::spawn(CompleteJobs(store.clone()), COMPLETIONS);
        LocalQueue {
            store,
            params,
            completions,
        }
    }

    fn lease_until_ms(&self) -> i64 {
        now_ms().saturating_add(i64::try_from(self.params.lease.as_millis()).unwrap_or(i64::MAX))
    }
}

#[async_trait]
impl OutcomeSink for LocalQueue {
    async fn complete(&self, job: &Job, result: &Value) -> Result<Option<Job>, StoreError> {
        let completion = JobCompletion {
            id: job.id.clone(),
            owner: self.params.owner.clone(),
            attempt: job.attempts,
            result: result.clone(),
        };
        self.completions.submit(completion).await
    }

    async fn fail(&self, job: &Job, failure: &JobFailure) -> Result<Option<Job>, StoreError> {
        self.store
            .fail_job(LeaseRef::of(job, &self.params.owner), failure)
            .await
    }
}

#[async_trait]
impl JobTransport for LocalQueue {
    /// Claims the limited kinds' jobs first, each through its gate (a gate lets few through,
    /// and a full batch of other jobs must not keep them waiting), then the rest.
    async fn claim(&self, max_jobs: usize) -> Result<Vec<Job>, StoreError> {
        let mut room = u32::try_from(max_jobs).unwrap_or(u32::MAX);
        let mut jobs = Vec::new();
        let lease_until_ms = self.lease_until_ms();
        for gate in &self.params.gates {
            if room == 0 {
                break;
            }
            let gated = self
                .store
                .claim_gated_jobs(&self.params.owner, lease_until_ms, gate, room)
                .await?;
            room = room.saturating_sub(u32::try_from(gated.len()).unwrap_or(u32::MAX));
            jobs.extend(gated);
        }
        if room > 0 {
            let skipped: Vec<String> = self
                .params
                .gates
                .iter()
                .map(|gate| gate.kind.clone())
                .collect();
            let claimed = self
                .store
                .claim_jobs_except(&self.params.owner, lease_until_ms, room, &skipped)
                .await?;
            jobs.extend(claimed);
        }
        Ok(jobs)
    }

    async fn renew(&self, job_ids: &[String]) -> Result<u64, StoreError> {
        self.store
            .renew_leases(job_ids, &self.params.owner, self.lease_until_ms())
            .await
    }

    async fn release(&self, job_ids: &[String]) -> Result<u64, StoreError> {
        self.store.release_jobs(job_ids, &self.params.owner).await
    }

    fn owner(&self) -> &str {
        &self.params.owner
    }
}

/// The PostgreSQL channel the `jobs_notify_queued` trigger notifies when a statement queues
/// jobs for the local queue.
pub const QUEUED_JOBS_CHANNEL: &str = "bulwark_jobs";

impl Store {
    /// Calls `wake` whenever a statement on any node queues jobs for the local queue
    /// (PostgreSQL `LISTEN bulwark_jobs`), and once after every (re)subscription, since
    /// notifications sent while not subscribed are lost. The task runs until aborted. Returns
    /// `None` on SQLite: one process owns the file, and its own inserts wake its runner.
    pub fn spawn_queued_jobs_listener(
        &self,
        wake: impl Fn() + Send + Sync + 'static,
    ) -> Option<tokio::task::JoinHandle<()>> {
        let crate::db::Pool::Postgres(pool) = &self.pool else {
            return None;
        };
        let pool = pool.clone();
        Some(tokio::spawn(async move {
            let mut retry_delay = Duration::from_millis(100);
            loop {
                match listen_until_lost(&pool, &wake).await {
                    Ok(()) => retry_delay = Duration::from_millis(100),
                    Err(error) => {
                        tracing::warn!(%error, "failed to listen for queued jobs, retrying");
                        tokio::time::sleep(retry_delay).await;
                        retry_delay = (retry_delay * 2).min(Duration::from_secs(5));
                    }
                }
            }
        }))
    }
}

/// Listens on [`QUEUED_JOBS_CHANNEL`] and calls `wake` per notification; returns when the
/// connection is lost.
async fn listen_until_lost(
    pool: &sqlx::PgPool,
    wake: &(impl Fn() + Send + Sync),
) -> Result<(), sqlx::Error> {
    let mut listener = sqlx::postgres::PgListener::connect_with(pool).await?;
    listener.listen(QUEUED_JOBS_CHANNEL).await?;
    // Jobs queued before the subscription took effect notified no one: look once.
    wake();
    // `try_recv` answers `None` once when the connection drops (and reconnects on the next
    // call); ending here makes the caller subscribe again, and wake the runner once more.
    while listener.try_recv().await?.is_some() {
        wake();
    }
    Ok(())
}
