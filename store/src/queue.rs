use std::fmt::Debug;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;

use crate::{Job, JobFailure, Store, StoreError, now_ms};

/// How jobs reach a node's job runner and how their outcomes leave it. The local queue claims
/// rows of the `jobs` table; a broker-backed transport can take its place.
#[async_trait]
pub trait JobTransport: Send + Sync + Debug + 'static {
    /// Returns up to `max_jobs` jobs this node now holds a lease on.
    async fn claim(&self, max_jobs: usize) -> Result<Vec<Job>, StoreError>;

    /// Records a success; false means the lease was lost and the outcome was not stored.
    async fn complete(&self, job: &Job, result: &Value) -> Result<bool, StoreError>;

    /// Records a failed attempt; false means the lease was lost and nothing was stored.
    async fn fail(&self, job: &Job, failure: &JobFailure) -> Result<bool, StoreError>;

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
}

/// The embedded transport: jobs are claimed from the `jobs` table with leases.
#[derive(Debug, Clone)]
pub struct LocalQueue {
    store: Store,
    params: LocalQueueParams,
}

impl LocalQueue {
    pub fn new(store: Store, params: LocalQueueParams) -> Self {
        LocalQueue { store, params }
    }

    fn lease_until_ms(&self) -> i64 {
        now_ms().saturating_add(i64::try_from(self.params.lease.as_millis()).unwrap_or(i64::MAX))
    }
}

#[async_trait]
impl JobTransport for LocalQueue {
    async fn claim(&self, max_jobs: usize) -> Result<Vec<Job>, StoreError> {
        if max_jobs == 0 {
            return Ok(Vec::new());
        }
        let limit = u32::try_from(max_jobs).unwrap_or(u32::MAX);
        self.store
            .claim_jobs(&self.params.owner, self.lease_until_ms(), limit)
            .await
    }

    async fn complete(&self, job: &Job, result: &Value) -> Result<bool, StoreError> {
        self.store
            .complete_job(&job.id, &self.params.owner, result)
            .await
            .map(|finished| finished.is_some())
    }

    async fn fail(&self, job: &Job, failure: &JobFailure) -> Result<bool, StoreError> {
        self.store
            .fail_job(&job.id, &self.params.owner, failure)
            .await
            .map(|stored| stored.is_some())
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
