//! Queries for jobs carried by RabbitMQ: the outbox (rows stored but not yet confirmed by the
//! broker) and claims of one job by id when its message is delivered.

use uuid::Uuid;

use crate::db::with_pool;
use crate::jobs::{JobRow, decode_rows, job_columns};
use crate::{InsertOutcome, Job, NewJob, Store, StoreError, now_ms};

/// Who runs a job, stored in `jobs.transport`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobRoute {
    /// Claimed from the table by the local job runner.
    Local,
    /// Carried by the broker, not yet confirmed: in the outbox until a publish is confirmed.
    BrokerPending,
    /// Carried by the broker, already on it (the row was created from a delivered message).
    BrokerPublished,
}

impl Store {
    /// Creates a job routed as `route`, or returns the job already stored under the same
    /// idempotency key (whatever its route).
    pub async fn insert_routed_job(
        &self,
        new_job: &NewJob,
        route: JobRoute,
    ) -> Result<InsertOutcome, StoreError> {
        let id = Uuid::now_v7().to_string();
        let now = now_ms();
        let payload = new_job.payload.to_string();
        let max_attempts = i32::try_from(new_job.max_attempts).unwrap_or(i32::MAX);
        let (transport, published_at_ms) = match route {
            JobRoute::Local => ("local", None),
            JobRoute::BrokerPending => ("amqp", None),
            JobRoute::BrokerPublished => ("amqp", Some(now)),
        };
        const INSERT: &str = concat!(
            "INSERT INTO jobs (id, kind, status, attempts, max_attempts, payload, request_id, \
             idempotency_key, created_at_ms, updated_at_ms, run_at_ms, transport, \
             published_at_ms, trace_id) \
             VALUES ($1, $2, 'queued', 0, $3, $4, $5, $6, $7, $7, $7, $8, $9, $10) \
             ON CONFLICT (idempotency_key) DO NOTHING RETURNING ",
            job_columns!()
        );
        let inserted: Option<JobRow> = with_pool!(self, pool => {
            sqlx::query_as(INSERT)
                .bind(&id)
                .bind(&new_job.kind)
                .bind(max_attempts)
                .bind(&payload)
                .bind(&new_job.request_id)
                .bind(&new_job.idempotency_key)
                .bind(now)
                .bind(transport)
                .bind(published_at_ms)
                .bind(&new_job.trace_id)
                .fetch_optional(pool)
                .await
        })?;
        if let Some(row) = inserted {
            return Ok(InsertOutcome::Created(row.try_into()?));
        }
        let Some(key) = &new_job.idempotency_key else {
            return Err(StoreError::Corrupt(format!(
                "insert of job {id} returned no row"
            )));
        };
        const BY_KEY: &str = concat!(
            "SELECT ",
            job_columns!(),
            " FROM jobs WHERE idempotency_key = $1"
        );
        let existing: JobRow =
            with_pool!(self, pool => sqlx::query_as(BY_KEY).bind(key).fetch_one(pool).await)?;
        Ok(InsertOutcome::Existing(existing.try_into()?))
    }

    /// Returns the row of a delivered message in one round trip: the job whose id is `id` (a
    /// message Bulwark published), else the job stored under the idempotency key `key`.
    pub async fn find_delivered_job(&self, id: &str, key: &str) -> Result<Option<Job>, StoreError> {
        const FIND: &str = concat!(
            "SELECT ",
            job_columns!(),
            " FROM jobs WHERE id = $1 OR idempotency_key = $2 \
             ORDER BY CASE WHEN id = $1 THEN 0 ELSE 1 END LIMIT 1"
        );
        let row: Option<JobRow> = with_pool!(self, pool => {
            sqlx::query_as(FIND).bind(id).bind(key).fetch_optional(pool).await
        })?;
        row.map(Job::try_from).transpose()
    }

    /// Creates the row of a delivered message already claimed by `owner` (running, attempt 1,
    /// leased until `lease_until_ms`), saving the separate claim. Returns `None` when a row with
    /// the same idempotency key exists (another delivery created it first).
    pub async fn insert_claimed_job(
        &self,
        new_job: &NewJob,
        owner: &str,
        lease_until_ms: i64,
    ) -> Result<Option<Job>, StoreError> {
        const INSERT: &str = concat!(
            "INSERT INTO jobs (id, kind, status, attempts, max_attempts, payload, request_id, \
             idempotency_key, created_at_ms, updated_at_ms, run_at_ms, started_at_ms, \
             transport, published_at_ms, trace_id, lease_owner, lease_expires_at_ms) \
             VALUES ($1, $2, 'running', 1, $3, $4, $5, $6, $7, $7, $7, $7, 'amqp', $7, $8, $9, \
             $10) ON CONFLICT (idempotency_key) DO NOTHING RETURNING ",
            job_columns!()
        );
        let id = Uuid::now_v7().to_string();
        let max_attempts = i32::try_from(new_job.max_attempts).unwrap_or(i32::MAX);
        let row: Option<JobRow> = with_pool!(self, pool => {
            sqlx::query_as(INSERT)
                .bind(&id)
                .bind(&new_job.kind)
                .bind(max_attempts)
                .bind(new_job.payload.to_string())
                .bind(&new_job.request_id)
                .bind(&new_job.idempotency_key)
                .bind(now_ms())
                .bind(&new_job.trace_id)
                .bind(owner)
                .bind(lease_until_ms)
                .fetch_optional(pool)
                .await
        })?;
        row.map(Job::try_from).transpose()
    }

    /// Records that the broker confirmed the job's message; the row leaves the outbox.
    pub async fn mark_job_published(&self, id: &str) -> Result<(), StoreError> {
        const MARK: &str = "UPDATE jobs SET published_at_ms = $1 \
             WHERE id = $2 AND published_at_ms IS NULL";
        with_pool!(self, pool => {
            sqlx::query(MARK).bind(now_ms()).bind(id).execute(pool).await.map(|_| ())
        })?;
        Ok(())
    }

    /// Returns true when the job is a broker job still waiting for a confirmed publish.
    pub async fn is_job_unpublished(&self, id: &str) -> Result<bool, StoreError> {
        const PENDING: &str = "SELECT COUNT(*) FROM jobs WHERE id = $1 \
             AND transport = 'amqp' AND published_at_ms IS NULL";
        let count: i64 = with_pool!(self, pool => {
            sqlx::query_scalar(PENDING).bind(id).fetch_one(pool).await
        })?;
        Ok(count > 0)
    }

    /// Returns broker jobs stored before `created_before_ms` whose publish was never
    /// confirmed, oldest first: the outbox the republisher drains.
    pub async fn unpublished_jobs(
        &self,
        created_before_ms: i64,
        limit: u32,
    ) -> Result<Vec<Job>, StoreError> {
        const OUTBOX: &str = concat!(
            "SELECT ",
            job_columns!(),
            " FROM jobs WHERE transport = 'amqp' AND published_at_ms IS NULL \
             AND status = 'queued' AND created_at_ms < $1 ORDER BY created_at_ms LIMIT $2"
        );
        let rows: Vec<JobRow> = with_pool!(self, pool => {
            sqlx::query_as(OUTBOX)
                .bind(created_before_ms)
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await
        })?;
        decode_rows(rows)
    }

    /// Claims one broker job by id for `owner` until `lease_until_ms`, counting an attempt:
    /// only when it is queued, or running under an expired lease (its consumer died). Returns
    /// `None` when the job is finished or another consumer holds a live lease.
    pub async fn claim_job_by_id(
        &self,
        id: &str,
        owner: &str,
        lease_until_ms: i64,
    ) -> Result<Option<Job>, StoreError> {
        const CLAIM: &str = concat!(
            "UPDATE jobs SET status = 'running', attempts = attempts + 1, \
             lease_owner = $1, lease_expires_at_ms = $2, updated_at_ms = $3, \
             started_at_ms = COALESCE(started_at_ms, $3) \
             WHERE id = $4 AND (status = 'queued' \
             OR (status = 'running' AND lease_expires_at_ms < $3)) RETURNING ",
            job_columns!()
        );
        let row: Option<JobRow> = with_pool!(self, pool => {
            sqlx::query_as(CLAIM)
                .bind(owner)
                .bind(lease_until_ms)
                .bind(now_ms())
                .bind(id)
                .fetch_optional(pool)
                .await
        })?;
        row.map(Job::try_from).transpose()
    }
}
