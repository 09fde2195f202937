//! Operators' controls over jobs in the store: cancelling one job or every job matching a
//! filter, and pausing or resuming a kind cluster-wide.
//!
//! A queued job cancelled ends `cancelled` at once and is never claimed. A running job's
//! cancel is a request (`cancel_requested_at_ms`): the node running it polls for requests
//! ([`Store::cancel_requested_jobs`]), stops the attempt and records `cancelled` itself. A
//! paused kind's rows stay where they are: the claim and the outbox skip them until the kind is
//! resumed. Both live in the database, so they hold on every node and across restarts.

use bulwark_core::{ErrorCode, now_ms};

use crate::db::with_pool;
use crate::jobs::{JobRow, decode_rows, job_columns};
use crate::{Job, JobStatus, Store, StoreError};

/// The message a job cancelled while queued is finished with.
const CANCELLED_QUEUED: &str = "cancelled before it ran";

/// What [`Store::cancel_job`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum CancelOutcome {
    /// It was queued: now `cancelled`, it never runs.
    Cancelled(Job),
    /// It is running: the node running it is asked to stop it (cooperatively, then by abort).
    Requested(Job),
    /// It had already finished; nothing changed.
    Finished(Job),
}

impl CancelOutcome {
    pub fn job(&self) -> &Job {
        match self {
            CancelOutcome::Cancelled(job)
            | CancelOutcome::Requested(job)
            | CancelOutcome::Finished(job) => job,
        }
    }
}

/// Which unfinished jobs a bulk cancel touches; `None` matches any.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CancelFilter {
    pub kind: Option<String>,
    /// [`JobStatus::Queued`] or [`JobStatus::Running`]; other statuses match nothing.
    pub status: Option<JobStatus>,
}

/// What a bulk cancel did (or, dry, would do).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CancelCount {
    /// Queued jobs now cancelled.
    pub num_cancelled: u64,
    /// Running jobs asked to stop.
    pub num_requested: u64,
}

impl CancelCount {
    /// Adds up `(cancelled at once, number of jobs)` pairs: a queued job is cancelled at once,
    /// a running one is asked to stop.
    fn tally(groups: impl Iterator<Item = (bool, u64)>) -> CancelCount {
        let mut count = CancelCount::default();
        for (cancelled_at_once, num_jobs) in groups {
            if cancelled_at_once {
                count.num_cancelled += num_jobs;
            } else {
                count.num_requested += num_jobs;
            }
        }
        count
    }
}

/// A paused kind.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct PausedKind {
    pub kind: String,
    pub paused_at_ms: i64,
    /// Who paused it (an API key's name, or the CLI).
    pub paused_by: Option<String>,
}

/// The SET clause shared by the cancel statements: a queued row ends `cancelled`, a running
/// row gets its request time (the first request's). The CASEs read the row before the update.
macro_rules! cancel_set {
    () => {
        "UPDATE jobs SET \
         status = CASE WHEN status = 'queued' THEN 'cancelled' ELSE status END, \
         error_code = CASE WHEN status = 'queued' THEN $1 ELSE error_code END, \
         error_message = CASE WHEN status = 'queued' THEN $2 ELSE error_message END, \
         finished_at_ms = CASE WHEN status = 'queued' THEN $3 ELSE finished_at_ms END, \
         cancel_requested_at_ms = CASE WHEN status = 'running' \
         THEN COALESCE(cancel_requested_at_ms, $3) ELSE cancel_requested_at_ms END, \
         updated_at_ms = $3 "
    };
}

impl Store {
    /// Cancels a job: a queued job ends `cancelled` and never runs; a running job is asked to
    /// stop. Returns `None` when no job has this id.
    pub async fn cancel_job(&self, id: &str) -> Result<Option<CancelOutcome>, StoreError> {
        const CANCEL: &str = concat!(
            cancel_set!(),
            "WHERE id = $4 AND status IN ('queued', 'running') RETURNING ",
            job_columns!()
        );
        let row: Option<JobRow> = with_pool!(self, pool => {
            sqlx::query_as(CANCEL)
                .bind(ErrorCode::Cancelled.as_str())
                .bind(CANCELLED_QUEUED)
                .bind(now_ms())
                .bind(id)
                .fetch_optional(pool)
                .await
        })?;
        if let Some(row) = row {
            let job = Job::try_from(row)?;
            return Ok(Some(match job.status {
                JobStatus::Cancelled => CancelOutcome::Cancelled(job),
                _ => CancelOutcome::Requested(job),
            }));
        }
        Ok(self.get_job(id).await?.map(CancelOutcome::Finished))
    }

    /// Cancels every unfinished job matching `filter` (see [`Store::cancel_job`]) in one
    /// statement, and returns how many were cancelled and how many asked to stop.
    pub async fn cancel_jobs(&self, filter: &CancelFilter) -> Result<CancelCount, StoreError> {
        const CANCEL_MANY: &str = concat!(
            cancel_set!(),
            "WHERE status IN ('queued', 'running') AND ($4 IS NULL OR kind = $4) \
             AND ($5 IS NULL OR status = $5) RETURNING status"
        );
        let statuses: Vec<(String,)> = with_pool!(self, pool => {
            sqlx::query_as(CANCEL_MANY)
                .bind(ErrorCode::Cancelled.as_str())
                .bind(CANCELLED_QUEUED)
                .bind(now_ms())
                .bind(&filter.kind)
                .bind(filter.status.map(JobStatus::as_str))
                .fetch_all(pool)
                .await
        })?;
        // A queued row came back `cancelled`; a running one is still `running`.
        Ok(CancelCount::tally(statuses.iter().map(|(status,)| {
            (status == JobStatus::Cancelled.as_str(), 1)
        })))
    }

    /// Returns how many jobs a bulk cancel with `filter` would touch now, by what it would do.
    pub async fn count_cancellable_jobs(
        &self,
        filter: &CancelFilter,
    ) -> Result<CancelCount, StoreError> {
        const COUNT: &str = "SELECT status, COUNT(*) FROM jobs \
             WHERE status IN ('queued', 'running') AND ($1 IS NULL OR kind = $1) \
             AND ($2 IS NULL OR status = $2) GROUP BY status";
        let counts: Vec<(String, i64)> = with_pool!(self, pool => {
            sqlx::query_as(COUNT)
                .bind(&filter.kind)
                .bind(filter.status.map(JobStatus::as_str))
                .fetch_all(pool)
                .await
        })?;
        Ok(CancelCount::tally(counts.iter().map(
            |(status, num_jobs)| {
                (
                    status == JobStatus::Queued.as_str(),
                    u64::try_from(*num_jobs).unwrap_or(0),
                )
            },
        )))
    }

    /// Returns the ids of running jobs whose cancel was asked for, on any node. It reads the
    /// partial index `jobs_cancel_requested`, empty but for jobs being cancelled, so nodes
    /// poll it often for nothing.
    pub async fn cancel_requested_jobs(&self) -> Result<Vec<String>, StoreError> {
        const REQUESTED: &str = "SELECT id FROM jobs \
             WHERE status = 'running' AND cancel_requested_at_ms IS NOT NULL";
        let ids: Vec<(String,)> =
            with_pool!(self, pool => sqlx::query_as(REQUESTED).fetch_all(pool).await)?;
        Ok(ids.into_iter().map(|(id,)| id).collect())
    }

    /// Pauses `kind` on every node: its jobs wait until it is resumed. Returns false when it
    /// was already paused (the first pause is kept).
    pub async fn pause_kind(
        &self,
        kind: &str,
        paused_by: Option<&str>,
    ) -> Result<bool, StoreError> {
        const PAUSE: &str = "INSERT INTO paused_kinds (kind, paused_at_ms, paused_by) \
             VALUES ($1, $2, $3) ON CONFLICT (kind) DO NOTHING";
        let num_inserted = with_pool!(self, pool => {
            sqlx::query(PAUSE)
                .bind(kind)
                .bind(now_ms())
                .bind(paused_by)
                .execute(pool)
                .await
                .map(|done| done.rows_affected())
        })?;
        Ok(num_inserted == 1)
    }

    /// Resumes `kind` on every node. Returns false when it was not paused.
    pub async fn resume_kind(&self, kind: &str) -> Result<bool, StoreError> {
        const RESUME: &str = "DELETE FROM paused_kinds WHERE kind = $1";
        let num_deleted = with_pool!(self, pool => {
            sqlx::query(RESUME)
                .bind(kind)
                .execute(pool)
                .await
                .map(|done| done.rows_affected())
        })?;
        Ok(num_deleted == 1)
    }

    /// Returns the paused kinds, by name.
    pub async fn paused_kinds(&self) -> Result<Vec<PausedKind>, StoreError> {
        const PAUSED: &str = "SELECT kind, paused_at_ms, paused_by FROM paused_kinds ORDER BY kind";
        let paused = with_pool!(self, pool => sqlx::query_as(PAUSED).fetch_all(pool).await)?;
        Ok(paused)
    }

    /// Parks a delivered message's job while its kind is paused: the row is stored queued and
    /// unpublished (created, or an existing queued row marked unpublished), so the message can
    /// be acked and the republisher publishes the job again once the kind is resumed. Returns
    /// the row, or `None` when the job already exists and is not queued (running or finished:
    /// the delivery handles it as any other).
    pub async fn park_delivered_job(
        &self,
        id: &str,
        new_job: &crate::NewJob,
    ) -> Result<Option<Job>, StoreError> {
        const UNPUBLISH: &str = concat!(
            "UPDATE jobs SET published_at_ms = NULL, parked_at_ms = $2, updated_at_ms = $2 \
             WHERE (id = $1 OR idempotency_key = $3) AND kind = $4 AND status = 'queued' \
             AND transport = 'amqp' RETURNING ",
            job_columns!()
        );
        let key = new_job.idempotency_key.as_deref().unwrap_or(id);
        let rows: Vec<JobRow> = with_pool!(self, pool => {
            sqlx::query_as(UNPUBLISH)
                .bind(id)
                .bind(now_ms())
                .bind(key)
                .bind(&new_job.kind)
                .fetch_all(pool)
                .await
        })?;
        if let Some(job) = decode_rows(rows)?.pop() {
            return Ok(Some(job));
        }
        let outcome = self
            .insert_routed_job(new_job, crate::JobRoute::BrokerPending)
            .await?;
        Ok(match outcome {
            crate::InsertOutcome::Created(job) => Some(job),
            crate::InsertOutcome::Existing(_) => None,
        })
    }
}
