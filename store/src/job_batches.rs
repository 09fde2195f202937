//! Creating many jobs at once: one `INSERT ... SELECT FROM UNNEST(...)` statement per batch on
//! PostgreSQL (plus one lookup of the rows whose idempotency keys were taken), one transaction
//! on SQLite. Every job of a batch is answered with its idempotency outcome, as if the jobs had
//! been submitted one by one, in order. Single submissions go through the same code as a batch
//! of one.

use std::collections::{HashMap, HashSet};

use bulwark_core::now_ms;
use uuid::Uuid;

use crate::db::Pool;
use crate::jobs::{JobRow, decode_rows, job_columns};
use crate::{InsertOutcome, Job, JobRoute, JobStatus, NewJob, Store, StoreError};

/// What [`Store::insert_job_batch`] did with one job of a batch.
#[derive(Debug, Clone, PartialEq)]
pub enum BatchInsertOutcome {
    /// The job was stored by this batch.
    Created(Job),
    /// Its idempotency key names a job of the same kind and payload (stored before, or by an
    /// earlier job of this batch); that job is returned unchanged.
    Existing(Job),
    /// Its idempotency key names a job of another kind or payload; nothing was stored for it.
    /// Holds the job the key names.
    Conflict(Job),
}

impl BatchInsertOutcome {
    /// Returns the outcome of a batch of one as a single submission's: created, or the job the
    /// key names (the caller tells a replay from a conflict with `NewJob::conflicts_with`).
    pub fn single(mut outcomes: Vec<BatchInsertOutcome>) -> Result<InsertOutcome, StoreError> {
        let Some(outcome) = outcomes.pop() else {
            return Err(StoreError::Invariant(
                "a batch of one had no outcome".into(),
            ));
        };
        Ok(match outcome {
            BatchInsertOutcome::Created(job) => InsertOutcome::Created(job),
            BatchInsertOutcome::Existing(job) | BatchInsertOutcome::Conflict(job) => {
                InsertOutcome::Existing(job)
            }
        })
    }

    /// Returns the job created, or the one the idempotency key names.
    pub fn job(&self) -> &Job {
        match self {
            BatchInsertOutcome::Created(job)
            | BatchInsertOutcome::Existing(job)
            | BatchInsertOutcome::Conflict(job) => job,
        }
    }

    /// Returns true when the job was stored by this batch.
    pub fn is_created(&self) -> bool {
        matches!(self, BatchInsertOutcome::Created(_))
    }
}

impl NewJob {
    /// Returns true when `stored`, the job found under this job's idempotency key, is another
    /// job: of another kind or with another payload. The one rule of every submission path: a
    /// replay gets the stored job back only when it asks for the same job.
    pub fn conflicts_with(&self, stored: &Job) -> bool {
        stored.kind != self.kind || stored.payload != self.payload
    }
}

impl JobRoute {
    /// Returns the `transport` and `published_at_ms` of a row created at `now` on this route.
    fn columns(self, now: i64) -> (&'static str, Option<i64>) {
        match self {
            JobRoute::Local => ("local", None),
            JobRoute::BrokerPending => ("amqp", None),
            JobRoute::BrokerPublished => ("amqp", Some(now)),
        }
    }
}

/// A job of the batch that is written: the first job under its idempotency key (or one
/// without a key), with the values its statement binds.
pub(crate) struct WrittenRow<'a> {
    /// The job's position in the batch.
    index: usize,
    id: String,
    max_attempts: i32,
    payload: String,
    new_job: &'a NewJob,
}

/// Returns the rows a batch writes: the first job under each idempotency key (and every job
/// without one), each with a new id.
pub(crate) fn written_rows(new_jobs: &[NewJob]) -> Vec<WrittenRow<'_>> {
    let mut seen_keys: HashSet<&str> = HashSet::new();
    let mut rows = Vec::with_capacity(new_jobs.len());
    for (index, new_job) in new_jobs.iter().enumerate() {
        if let Some(key) = &new_job.idempotency_key
            && !seen_keys.insert(key.as_str())
        {
            continue;
        }
        rows.push(WrittenRow {
            index,
            id: Uuid::now_v7().to_string(),
            max_attempts: i32::try_from(new_job.max_attempts).unwrap_or(i32::MAX),
            payload: new_job.payload.to_string(),
            new_job,
        });
    }
    rows
}

/// What the backend found for the written rows.
#[derive(Default)]
pub(crate) struct Written {
    /// Ids of the rows this batch created.
    created_ids: HashSet<String>,
    /// Rows already stored under a key this batch tried to write, by key.
    existing_by_key: HashMap<String, Job>,
}

/// Returns the row the insert statements below write for `row` at `now`. They return only the
/// ids of created rows: every value is known here, so reading a thousand rows back (payloads
/// included) would cost the node's CPU and the wire bytes for nothing (docs/benchmarks.md:
/// within run-to-run noise on a local database, which is the best case for reading back).
fn created_job(row: &WrittenRow<'_>, now: i64) -> Job {
    let new_job = row.new_job;
    Job {
        id: row.id.clone(),
        kind: new_job.kind.clone(),
        status: JobStatus::Queued,
        attempts: 0,
        max_attempts: row.max_attempts,
        payload: new_job.payload.clone(),
        result: None,
        error_code: None,
        error_message: None,
        request_id: new_job.request_id.clone(),
        idempotency_key: new_job.idempotency_key.clone(),
        created_at_ms: now,
        updated_at_ms: now,
        run_at_ms: new_job.run_at(now),
        started_at_ms: None,
        finished_at_ms: None,
        lease_owner: None,
        lease_expires_at_ms: None,
        trace_id: new_job.trace_id.clone(),
        priority: new_job.priority,
        timeout_ms: new_job.timeout_ms,
        cancel_requested_at_ms: None,
        parked_at_ms: None,
        attempt_started_at_ms: None,
        attempt_node: None,
        progress: None,
        result_ttl_ms: new_job.result_ttl_ms,
    }
}

impl Store {
    /// Creates a job routed as `route`, or returns the job already stored under the same
    /// idempotency key (whatever its route, kind or payload: see [`NewJob::conflicts_with`]).
    pub async fn insert_routed_job(
        &self,
        new_job: &NewJob,
        route: JobRoute,
    ) -> Result<InsertOutcome, StoreError> {
        let outcomes = self
            .insert_job_batch(std::slice::from_ref(new_job), route)
            .await?;
        BatchInsertOutcome::single(outcomes)
    }

    /// Creates the jobs of a batch routed as `route`; one outcome per job, in order. A job
    /// whose idempotency key is taken is answered with the job the key names (`Existing` when
    /// it is the same job, `Conflict` when not); a key used twice in the batch behaves as if
    /// the jobs had been submitted in order (the first creates, the later ones find it).
    /// PostgreSQL: one statement inserts every job (rows written in key order, so two batches
    /// with overlapping keys cannot deadlock) and one more reads the rows of taken keys.
    /// SQLite: one transaction.
    pub async fn insert_job_batch(
        &self,
        new_jobs: &[NewJob],
        route: JobRoute,
    ) -> Result<Vec<BatchInsertOutcome>, StoreError> {
        if new_jobs.is_empty() {
            return Ok(Vec::new());
        }
        let mut rows = written_rows(new_jobs);
        let now = now_ms();
        let write = WriteParams { now, route };
        let written = match &self.pool {
            Pool::Postgres(pool) => {
                let mut connection = pool.acquire().await?;
                write_postgres(&mut connection, &mut rows, write).await?
            }
            Pool::Sqlite(pool) => {
                let mut transaction = pool.begin().await?;
                let written = write_sqlite(&mut transaction, &rows, write).await?;
                transaction.commit().await?;
                written
            }
        };
        answer(new_jobs, &rows, written, now)
    }

    /// Records that the broker confirmed these jobs' messages; the rows leave the outbox. A
    /// row parked since it was read (a delivery of a paused kind put it back in the outbox
    /// while this confirm was on its way) stays in the outbox: its `parked_at_ms` must be the
    /// one read. One statement on PostgreSQL, one transaction on SQLite.
    pub async fn mark_jobs_published(&self, jobs: &[&Job]) -> Result<(), StoreError> {
        const MARK_ONE: &str = "UPDATE jobs SET published_at_ms = $1, parked_at_ms = NULL \
             WHERE id = $2 AND published_at_ms IS NULL AND parked_at_ms IS $3";
        const MARK_MANY: &str = "UPDATE jobs SET published_at_ms = $1, parked_at_ms = NULL \
             FROM UNNEST((SELECT $2::text[]), (SELECT $3::int8[])) \
             AS batch(job_id, job_parked_at_ms) \
             WHERE jobs.id = batch.job_id AND jobs.published_at_ms IS NULL \
             AND jobs.parked_at_ms IS NOT DISTINCT FROM batch.job_parked_at_ms";
        if jobs.is_empty() {
            return Ok(());
        }
        let now = now_ms();
        match &self.pool {
            Pool::Postgres(pool) => {
                let ids: Vec<&str> = jobs.iter().map(|job| job.id.as_str()).collect();
                let parked: Vec<Option<i64>> = jobs.iter().map(|job| job.parked_at_ms).collect();
                sqlx::query(MARK_MANY)
                    .bind(now)
                    .bind(ids)
                    .bind(parked)
                    .execute(pool)
                    .await?;
            }
            Pool::Sqlite(pool) => {
                let mut transaction = pool.begin().await?;
                for job in jobs {
                    sqlx::query(MARK_ONE)
                        .bind(now)
                        .bind(&job.id)
                        .bind(job.parked_at_ms)
                        .execute(&mut *transaction)
                        .await?;
                }
                transaction.commit().await?;
            }
        }
        Ok(())
    }

    /// Returns which of these jobs are broker jobs still waiting for a confirmed publish.
    pub async fn unpublished_job_ids(&self, ids: &[String]) -> Result<Vec<String>, StoreError> {
        const PENDING_ONE: &str = "SELECT id FROM jobs WHERE id = $1 \
             AND transport = 'amqp' AND published_at_ms IS NULL";
        const PENDING_MANY: &str = "SELECT id FROM jobs WHERE id = ANY($1) \
             AND transport = 'amqp' AND published_at_ms IS NULL";
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        match &self.pool {
            Pool::Postgres(pool) => Ok(sqlx::query_scalar(PENDING_MANY)
                .bind(ids)
                .fetch_all(pool)
                .await?),
            Pool::Sqlite(pool) => {
                let mut connection = pool.acquire().await?;
                let mut pending = Vec::new();
                for id in ids {
                    let found: Option<String> = sqlx::query_scalar(PENDING_ONE)
                        .bind(id)
                        .fetch_optional(&mut *connection)
                        .await?;
                    pending.extend(found);
                }
                Ok(pending)
            }
        }
    }
}

/// When and where a batch's rows are written.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WriteParams {
    pub(crate) now: i64,
    pub(crate) route: JobRoute,
}

/// Inserts the rows in one statement, then reads the rows of the keys that were taken.
pub(crate) async fn write_postgres(
    connection: &mut sqlx::PgConnection,
    rows: &mut [WrittenRow<'_>],
    write: WriteParams,
) -> Result<Written, StoreError> {
    // The batch's columns are named apart from the table's.
    const INSERT_MANY: &str = "INSERT INTO jobs (id, kind, status, attempts, max_attempts, \
         payload, request_id, idempotency_key, created_at_ms, updated_at_ms, run_at_ms, transport, \
         published_at_ms, trace_id, priority, timeout_ms, result_ttl_ms) \
         SELECT batch.job_id, batch.job_kind, 'queued', 0, batch.job_max_attempts, \
         batch.job_payload, batch.job_request_id, batch.job_key, $1, $1, batch.job_run_at, $2, \
         $3::int8, batch.job_trace_id, batch.job_priority, batch.job_timeout, batch.job_ttl \
         FROM UNNEST((SELECT $4::text[]), (SELECT $5::text[]), (SELECT $6::int4[]), \
         (SELECT $7::text[]), (SELECT $8::text[]), (SELECT $9::text[]), (SELECT $10::text[]), \
         (SELECT $11::int2[]), (SELECT $12::int8[]), (SELECT $13::int8[]), \
         (SELECT $14::int8[])) AS batch(job_id, \
         job_kind, job_max_attempts, job_payload, job_request_id, job_key, job_trace_id, \
         job_priority, job_run_at, job_timeout, job_ttl) \
         ORDER BY batch.job_key ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING RETURNING jobs.id";
    const BY_KEYS: &str = concat!(
        "SELECT ",
        job_columns!(),
        " FROM jobs WHERE idempotency_key = ANY($1)"
    );
    let (transport, published_at_ms) = write.route.columns(write.now);
    // Rows are written in key order (rows without a key last, in any order): two batches
    // that share keys take their locks in the same order.
    rows.sort_by(|left, right| {
        match (
            left.new_job.idempotency_key.as_deref(),
            right.new_job.idempotency_key.as_deref(),
        ) {
            (Some(left_key), Some(right_key)) => left_key.cmp(right_key),
            (left_key, right_key) => right_key.is_some().cmp(&left_key.is_some()),
        }
    });
    let ids: Vec<&str> = rows.iter().map(|row| row.id.as_str()).collect();
    let kinds: Vec<&str> = rows.iter().map(|row| row.new_job.kind.as_str()).collect();
    let max_attempts: Vec<i32> = rows.iter().map(|row| row.max_attempts).collect();
    let payloads: Vec<&str> = rows.iter().map(|row| row.payload.as_str()).collect();
    let request_ids: Vec<Option<&str>> = rows
        .iter()
        .map(|row| row.new_job.request_id.as_deref())
        .collect();
    let keys: Vec<Option<&str>> = rows
        .iter()
        .map(|row| row.new_job.idempotency_key.as_deref())
        .collect();
    let trace_ids: Vec<Option<&str>> = rows
        .iter()
        .map(|row| row.new_job.trace_id.as_deref())
        .collect();
    let priorities: Vec<i16> = rows
        .iter()
        .map(|row| i16::from(row.new_job.priority))
        .collect();
    let run_ats: Vec<i64> = rows
        .iter()
        .map(|row| row.new_job.run_at(write.now))
        .collect();
    let timeouts: Vec<Option<i64>> = rows.iter().map(|row| row.new_job.timeout_ms).collect();
    let ttls: Vec<Option<i64>> = rows.iter().map(|row| row.new_job.result_ttl_ms).collect();
    let created_ids: HashSet<String> = sqlx::query_scalar(INSERT_MANY)
        .bind(write.now)
        .bind(transport)
        .bind(published_at_ms)
        .bind(ids)
        .bind(kinds)
        .bind(max_attempts)
        .bind(payloads)
        .bind(request_ids)
        .bind(&keys)
        .bind(trace_ids)
        .bind(priorities)
        .bind(run_ats)
        .bind(timeouts)
        .bind(ttls)
        .fetch_all(&mut *connection)
        .await?
        .into_iter()
        .collect();
    let taken_keys: Vec<&str> = rows
        .iter()
        .filter(|row| !created_ids.contains(&row.id))
        .filter_map(|row| row.new_job.idempotency_key.as_deref())
        .collect();
    let mut written = Written {
        created_ids,
        existing_by_key: HashMap::new(),
    };
    if taken_keys.is_empty() {
        return Ok(written);
    }
    let existing_rows: Vec<JobRow> = sqlx::query_as(BY_KEYS)
        .bind(taken_keys)
        .fetch_all(&mut *connection)
        .await?;
    written.existing_by_key = by_key(decode_rows(existing_rows)?);
    Ok(written)
}

/// Inserts the rows one statement at a time (in-process, so a statement costs no round trip),
/// in one transaction, reading the row of each key that was taken.
/// Writes the rows on `connection`, inside the caller's transaction.
pub(crate) async fn write_sqlite(
    connection: &mut sqlx::SqliteConnection,
    rows: &[WrittenRow<'_>],
    write: WriteParams,
) -> Result<Written, StoreError> {
    const INSERT_ONE: &str = "INSERT INTO jobs (id, kind, status, attempts, max_attempts, \
         payload, request_id, idempotency_key, created_at_ms, updated_at_ms, run_at_ms, \
         transport, published_at_ms, trace_id, priority, timeout_ms, result_ttl_ms) \
         VALUES ($1, $2, 'queued', 0, $3, $4, $5, $6, $7, $7, $11, $8, $9, $10, $12, $13, $14) \
         ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING RETURNING id";
    const BY_KEY: &str = concat!(
        "SELECT ",
        job_columns!(),
        " FROM jobs WHERE idempotency_key = $1"
    );
    let (transport, published_at_ms) = write.route.columns(write.now);
    let mut created_ids = HashSet::new();
    let mut existing_rows = Vec::new();
    for row in rows {
        let new_job = row.new_job;
        let inserted: Option<String> = sqlx::query_scalar(INSERT_ONE)
            .bind(&row.id)
            .bind(&new_job.kind)
            .bind(row.max_attempts)
            .bind(&row.payload)
            .bind(&new_job.request_id)
            .bind(&new_job.idempotency_key)
            .bind(write.now)
            .bind(transport)
            .bind(published_at_ms)
            .bind(&new_job.trace_id)
            .bind(new_job.run_at(write.now))
            .bind(i16::from(new_job.priority))
            .bind(new_job.timeout_ms)
            .bind(new_job.result_ttl_ms)
            .fetch_optional(&mut *connection)
            .await?;
        match (inserted, &new_job.idempotency_key) {
            (Some(created_id), _) => {
                created_ids.insert(created_id);
            }
            (None, Some(key)) => existing_rows.extend(
                sqlx::query_as::<_, JobRow>(BY_KEY)
                    .bind(key)
                    .fetch_optional(&mut *connection)
                    .await?,
            ),
            (None, None) => {}
        }
    }
    Ok(Written {
        created_ids,
        existing_by_key: by_key(decode_rows(existing_rows)?),
    })
}

fn by_key(jobs: Vec<Job>) -> HashMap<String, Job> {
    jobs.into_iter()
        .filter_map(|job| Some((job.idempotency_key.clone()?, job)))
        .collect()
}

/// Answers every job of the batch, in order, from what the written rows found.
pub(crate) fn answer(
    new_jobs: &[NewJob],
    rows: &[WrittenRow<'_>],
    written: Written,
    now: i64,
) -> Result<Vec<BatchInsertOutcome>, StoreError> {
    let mut created_by_index: HashMap<usize, Job> = HashMap::new();
    // The job each key names once the batch is stored: the one found, or the one created by
    // the key's first job.
    let mut stored_by_key = written.existing_by_key;
    for row in rows
        .iter()
        .filter(|row| written.created_ids.contains(&row.id))
    {
        let job = created_job(row, now);
        if let Some(key) = &job.idempotency_key {
            stored_by_key.insert(key.clone(), job.clone());
        }
        created_by_index.insert(row.index, job);
    }
    let mut outcomes = Vec::with_capacity(new_jobs.len());
    for (index, new_job) in new_jobs.iter().enumerate() {
        if let Some(job) = created_by_index.remove(&index) {
            outcomes.push(BatchInsertOutcome::Created(job));
            continue;
        }
        let stored_opt = new_job
            .idempotency_key
            .as_ref()
            .and_then(|key| stored_by_key.get(key));
        let Some(stored) = stored_opt else {
            return Err(StoreError::Invariant(format!(
                "job {index} of a batch was neither created nor found under its key"
            )));
        };
        outcomes.push(if new_job.conflicts_with(stored) {
            BatchInsertOutcome::Conflict(stored.clone())
        } else {
            BatchInsertOutcome::Existing(stored.clone())
        });
    }
    Ok(outcomes)
}
