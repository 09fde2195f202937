//! The `dead_letters` table: every job that could not be done, kept with the message as it was
//! received until it is recovered or an operator acts.

use bulwark_core::now_ms;
use serde::Serialize;
use uuid::Uuid;

use crate::db::with_pool;
use crate::jobs::{JobRow, job_columns};
use crate::{Job, Store, StoreError};

/// The columns of `dead_letters`, in [`DeadLetter`] order.
macro_rules! dead_letter_columns {
    () => {
        "id, source, source_key, job_id, queue, kind, message, headers, error_code, \
         error_message, retriable, retry_count, request_id, trace_id, status, next_retry_at_ms, \
         dead_at_ms, created_at_ms, updated_at_ms"
    };
}

/// The queue name of jobs carried by the database-backed local queue.
pub const LOCAL_QUEUE: &str = "local";

/// Statuses: `pending` waits for an automatic retry, `retrying` was retried automatically,
/// `parked` waits for an operator, `requeued` was requeued by an operator, `recovered` was
/// retried or requeued and then succeeded.
pub const DEAD_LETTER_STATUSES: [&str; 5] =
    ["pending", "retrying", "parked", "requeued", "recovered"];

/// One row of `dead_letters`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct DeadLetter {
    pub id: String,
    /// `local` (the jobs table) or `broker` (a `<ns>.dlq.<kind>` queue).
    pub source: String,
    /// Unique per job: `job:<id>` or `amqp:<message id>`.
    pub source_key: String,
    pub job_id: String,
    /// The queue the job came from: `local`, or the broker queue, e.g. `bulwark.sentiment.analyze`.
    pub queue: String,
    pub kind: String,
    /// The message as received (JSON text for local jobs and JSON envelopes).
    pub message: String,
    /// Broker headers as JSON (with `x-death`), when it came from the broker.
    pub headers: Option<String>,
    pub error_code: String,
    pub error_message: String,
    pub retriable: bool,
    pub retry_count: i32,
    pub request_id: Option<String>,
    pub trace_id: Option<String>,
    pub status: String,
    pub next_retry_at_ms: Option<i64>,
    pub dead_at_ms: i64,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

/// A dead letter to store.
#[derive(Debug, Clone)]
pub struct NewDeadLetter {
    pub source: &'static str,
    pub source_key: String,
    pub job_id: String,
    pub queue: String,
    pub kind: String,
    pub message: String,
    pub headers: Option<String>,
    pub error_code: String,
    pub error_message: String,
    pub retriable: bool,
    pub request_id: Option<String>,
    pub trace_id: Option<String>,
    /// `pending` (retriable, retried at `next_retry_at_ms`) or `parked`.
    pub status: &'static str,
    pub next_retry_at_ms: Option<i64>,
    pub dead_at_ms: i64,
}

/// Filters for listing, bulk requeue and purge. Empty fields match everything.
#[derive(Debug, Clone, Default)]
pub struct DeadLetterFilter {
    pub status: Option<String>,
    pub queue: Option<String>,
    pub kind: Option<String>,
    pub error_code: Option<String>,
    /// Only letters older than this id (time-ordered UUIDv7), for pagination.
    pub before_id: Option<String>,
    pub limit: u32,
}

impl DeadLetterFilter {
    /// Returns true when no field narrows the selection.
    pub fn is_empty(&self) -> bool {
        self.status.is_none()
            && self.queue.is_none()
            && self.kind.is_none()
            && self.error_code.is_none()
    }
}

/// A page of dead letters, newest first.
#[derive(Debug, Clone)]
pub struct DeadLetterPage {
    pub dead_letters: Vec<DeadLetter>,
    pub next_cursor: Option<String>,
}

/// Number of dead letters per queue, status and error code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct DeadLetterCount {
    pub queue: String,
    pub status: String,
    pub error_code: String,
    pub count: i64,
}

/// A job put back in the queue by [`Store::requeue_failed_job`].
#[derive(Debug, Clone)]
pub struct RequeuedJob {
    pub job: Job,
    /// True when the broker carries it: it is back in the outbox, waiting to be published.
    pub broker_routed: bool,
}

#[derive(sqlx::FromRow)]
struct RequeuedRow {
    transport: String,
    #[sqlx(flatten)]
    job: JobRow,
}

impl Store {
    /// Returns jobs that ended `dead` or `failed` at or after `since_ms` and have no dead
    /// letter for that ending yet, oldest first.
    pub async fn jobs_to_dead_letter(
        &self,
        since_ms: i64,
        limit: u32,
    ) -> Result<Vec<Job>, StoreError> {
        const SELECT: &str = "SELECT j.id FROM jobs j WHERE j.status IN ('dead', 'failed') \
             AND j.finished_at_ms >= $1 AND NOT EXISTS (SELECT 1 FROM dead_letters d \
             WHERE d.source_key = 'job:' || j.id AND d.dead_at_ms >= j.finished_at_ms) \
             ORDER BY j.finished_at_ms LIMIT $2";
        let ids: Vec<(String,)> = with_pool!(self, pool => {
            sqlx::query_as(SELECT)
                .bind(since_ms)
                .bind(i64::from(limit.max(1)))
                .fetch_all(pool)
                .await
        })?;
        let mut jobs = Vec::with_capacity(ids.len());
        for (id,) in ids {
            if let Some(job) = self.get_job(&id).await? {
                jobs.push(job);
            }
        }
        Ok(jobs)
    }

    /// Stores a dead letter, or, when the job died before and was retried or requeued since,
    /// brings its letter back with the new error (the retry count is kept). Returns true when
    /// something was written.
    pub async fn upsert_dead_letter(&self, letter: &NewDeadLetter) -> Result<bool, StoreError> {
        const UPSERT: &str = "INSERT INTO dead_letters (id, source, source_key, job_id, queue, \
             kind, message, headers, error_code, error_message, retriable, retry_count, \
             request_id, trace_id, status, next_retry_at_ms, dead_at_ms, created_at_ms, \
             updated_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 0, $12, $13, \
             $14, $15, $16, $17, $17) \
             ON CONFLICT (source_key) DO UPDATE SET error_code = excluded.error_code, \
             error_message = excluded.error_message, retriable = excluded.retriable, \
             message = excluded.message, headers = excluded.headers, \
             status = excluded.status, next_retry_at_ms = excluded.next_retry_at_ms, \
             dead_at_ms = excluded.dead_at_ms, updated_at_ms = excluded.updated_at_ms \
             WHERE dead_letters.dead_at_ms < excluded.dead_at_ms";
        let id = Uuid::now_v7().to_string();
        let rows_affected = with_pool!(self, pool => {
            sqlx::query(UPSERT)
                .bind(&id)
                .bind(letter.source)
                .bind(&letter.source_key)
                .bind(&letter.job_id)
                .bind(&letter.queue)
                .bind(&letter.kind)
                .bind(&letter.message)
                .bind(&letter.headers)
                .bind(&letter.error_code)
                .bind(&letter.error_message)
                .bind(letter.retriable)
                .bind(&letter.request_id)
                .bind(&letter.trace_id)
                .bind(letter.status)
                .bind(letter.next_retry_at_ms)
                .bind(letter.dead_at_ms)
                .bind(now_ms())
                .execute(pool)
                .await
                .map(|done| done.rows_affected())
        })?;
        Ok(rows_affected == 1)
    }

    /// Returns the dead letter with this id, if any.
    pub async fn get_dead_letter(&self, id: &str) -> Result<Option<DeadLetter>, StoreError> {
        const BY_ID: &str = concat!(
            "SELECT ",
            dead_letter_columns!(),
            " FROM dead_letters WHERE id = $1"
        );
        let letter =
            with_pool!(self, pool => sqlx::query_as(BY_ID).bind(id).fetch_optional(pool).await)?;
        Ok(letter)
    }

    /// Returns the dead letter of a source key (`job:<id>`, `amqp:<message id>`), if any.
    pub async fn get_dead_letter_by_key(
        &self,
        source_key: &str,
    ) -> Result<Option<DeadLetter>, StoreError> {
        const BY_KEY: &str = concat!(
            "SELECT ",
            dead_letter_columns!(),
            " FROM dead_letters WHERE source_key = $1"
        );
        let letter = with_pool!(self, pool => {
            sqlx::query_as(BY_KEY).bind(source_key).fetch_optional(pool).await
        })?;
        Ok(letter)
    }

    /// Returns one page of dead letters matching the filter, newest first.
    pub async fn list_dead_letters(
        &self,
        filter: &DeadLetterFilter,
    ) -> Result<DeadLetterPage, StoreError> {
        const LIST: &str = concat!(
            "SELECT ",
            dead_letter_columns!(),
            " FROM dead_letters WHERE ($1 IS NULL OR status = $1) AND ($2 IS NULL OR queue = $2) \
             AND ($3 IS NULL OR kind = $3) AND ($4 IS NULL OR error_code = $4) \
             AND ($5 IS NULL OR id < $5) ORDER BY id DESC LIMIT $6"
        );
        let limit = i64::from(filter.limit.max(1));
        let mut dead_letters: Vec<DeadLetter> = with_pool!(self, pool => {
            sqlx::query_as(LIST)
                .bind(&filter.status)
                .bind(&filter.queue)
                .bind(&filter.kind)
                .bind(&filter.error_code)
                .bind(&filter.before_id)
                .bind(limit + 1)
                .fetch_all(pool)
                .await
        })?;
        let next_cursor = if dead_letters.len() as i64 > limit {
            dead_letters.truncate(limit as usize);
            dead_letters.last().map(|letter| letter.id.clone())
        } else {
            None
        };
        Ok(DeadLetterPage {
            dead_letters,
            next_cursor,
        })
    }

    /// Returns the number of dead letters per queue, status and error code.
    pub async fn count_dead_letters(&self) -> Result<Vec<DeadLetterCount>, StoreError> {
        const COUNT: &str = "SELECT queue, status, error_code, COUNT(*) AS count \
             FROM dead_letters GROUP BY queue, status, error_code ORDER BY queue, status, error_code";
        let counts = with_pool!(self, pool => sqlx::query_as(COUNT).fetch_all(pool).await)?;
        Ok(counts)
    }

    /// Returns pending retriable letters whose retry time has come, oldest first.
    pub async fn due_dead_letters(
        &self,
        now_ms: i64,
        limit: u32,
    ) -> Result<Vec<DeadLetter>, StoreError> {
        const DUE: &str = concat!(
            "SELECT ",
            dead_letter_columns!(),
            " FROM dead_letters WHERE status = 'pending' AND next_retry_at_ms <= $1 \
             ORDER BY next_retry_at_ms LIMIT $2"
        );
        let letters = with_pool!(self, pool => {
            sqlx::query_as(DUE).bind(now_ms).bind(i64::from(limit.max(1))).fetch_all(pool).await
        })?;
        Ok(letters)
    }

    /// Moves a letter to `to_status` if it is in one of `from_statuses` (the first caller wins
    /// across nodes), adding `retry_increment` to its retry count. Returns true when it moved.
    pub async fn transition_dead_letter(
        &self,
        id: &str,
        from_statuses: &[&str],
        to_status: &str,
        retry_increment: i32,
    ) -> Result<bool, StoreError> {
        const MOVE: &str = "UPDATE dead_letters SET status = $2, \
             retry_count = retry_count + $3, updated_at_ms = $4 \
             WHERE id = $1 AND status IN ($5, $6, $7, $8)";
        let from = |index: usize| from_statuses.get(index).copied().unwrap_or("");
        let rows_affected = with_pool!(self, pool => {
            sqlx::query(MOVE)
                .bind(id)
                .bind(to_status)
                .bind(retry_increment)
                .bind(now_ms())
                .bind(from(0))
                .bind(from(1))
                .bind(from(2))
                .bind(from(3))
                .execute(pool)
                .await
                .map(|done| done.rows_affected())
        })?;
        Ok(rows_affected == 1)
    }

    /// Puts a job that ended `dead` or `failed` back in the queue with the same id, runnable
    /// now with fresh attempts, and returns it; `None` if it is not in a final failed state.
    /// A broker-carried job goes back into the outbox (`published_at_ms` cleared), so it is
    /// published again by the caller or, failing that, by a republisher.
    pub async fn requeue_failed_job(
        &self,
        job_id: &str,
    ) -> Result<Option<RequeuedJob>, StoreError> {
        const REQUEUE: &str = concat!(
            "UPDATE jobs SET status = 'queued', attempts = 0, run_at_ms = $2, \
             updated_at_ms = $2, finished_at_ms = NULL, lease_owner = NULL, \
             lease_expires_at_ms = NULL, published_at_ms = CASE WHEN transport = 'amqp' \
             THEN NULL ELSE published_at_ms END \
             WHERE id = $1 AND status IN ('dead', 'failed') RETURNING transport, ",
            job_columns!()
        );
        let row: Option<RequeuedRow> = with_pool!(self, pool => {
            sqlx::query_as(REQUEUE)
                .bind(job_id)
                .bind(now_ms())
                .fetch_optional(pool)
                .await
        })?;
        row.map(|row| {
            Ok(RequeuedJob {
                broker_routed: row.transport == "amqp",
                job: row.job.try_into()?,
            })
        })
        .transpose()
    }

    /// Marks retried or requeued letters whose job has since succeeded as `recovered`;
    /// returns how many per queue. A broker letter's `job_id` is its message's job key: the
    /// job's id when Bulwark published it, or the idempotency key of the row the message made.
    pub async fn mark_recovered_dead_letters(&self) -> Result<Vec<(String, i64)>, StoreError> {
        const RECOVERED: &str = "UPDATE dead_letters SET status = 'recovered', updated_at_ms = $1 \
             WHERE status IN ('retrying', 'requeued') AND (EXISTS \
             (SELECT 1 FROM jobs j WHERE j.id = dead_letters.job_id AND j.status = 'succeeded') \
             OR (source = 'broker' AND EXISTS (SELECT 1 FROM jobs j \
             WHERE j.idempotency_key = dead_letters.job_id AND j.status = 'succeeded'))) \
             RETURNING queue";
        let queues: Vec<(String,)> = with_pool!(self, pool => {
            sqlx::query_as(RECOVERED).bind(now_ms()).fetch_all(pool).await
        })?;
        let mut counts: Vec<(String, i64)> = Vec::new();
        for (queue,) in queues {
            match counts.iter_mut().find(|(known, _)| *known == queue) {
                Some((_, count)) => *count += 1,
                None => counts.push((queue, 1)),
            }
        }
        Ok(counts)
    }

    /// Deletes the dead letters matching the filter; returns how many.
    pub async fn purge_dead_letters(&self, filter: &DeadLetterFilter) -> Result<u64, StoreError> {
        const PURGE: &str = "DELETE FROM dead_letters WHERE ($1 IS NULL OR status = $1) \
             AND ($2 IS NULL OR queue = $2) AND ($3 IS NULL OR kind = $3) \
             AND ($4 IS NULL OR error_code = $4)";
        let rows_affected = with_pool!(self, pool => {
            sqlx::query(PURGE)
                .bind(&filter.status)
                .bind(&filter.queue)
                .bind(&filter.kind)
                .bind(&filter.error_code)
                .execute(pool)
                .await
                .map(|done| done.rows_affected())
        })?;
        Ok(rows_affected)
    }
}
