//! Queries for jobs carried by RabbitMQ: the outbox (rows stored but not yet confirmed by the
//! broker) and claims of one job by id when its message is delivered.

use bulwark_core::now_ms;
use serde_json::Value;
use uuid::Uuid;

use crate::db::{Pool, sqlite_rows_each, with_pool};
use crate::jobs::{JobRow, decode_rows, job_columns, relaxed_commit};
use crate::{Job, NewJob, Store, StoreError};

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

/// How a delivered message's row is looked up: by the job id the message may carry (it was
/// published by Bulwark), else by its job key (message id or idempotency key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveredKey {
    pub id: String,
    pub key: String,
}

/// A row to create from a delivered message, already claimed by `owner` until
/// `lease_until_ms`. The job's idempotency key is the message's job key.
#[derive(Debug, Clone)]
pub struct ClaimedInsert {
    /// The message's id: nothing is created when a job has this id (Bulwark published the
    /// message for a row it already stored).
    pub message_id: String,
    pub new_job: NewJob,
    pub owner: String,
    pub lease_until_ms: i64,
}

/// The row of a delivered message (see [`Store::create_delivered_jobs`]).
#[derive(Debug, Clone, PartialEq)]
pub enum DeliveredRow {
    /// Created by this statement, already claimed by the insert's owner.
    Created(Job),
    /// It existed: named by the message's id, or stored under its key.
    Existing(Job),
}

/// A success to record, if `owner` still holds the job's lease from claim `attempt` (see
/// [`crate::LeaseRef`]).
#[derive(Debug, Clone)]
pub struct JobCompletion {
    pub id: String,
    pub owner: String,
    pub attempt: i32,
    pub result: Value,
}

/// A [`ClaimedInsert`] with the values its statement binds.
struct ClaimedRow<'a> {
    /// Where the insert is in the caller's slice (rows are written in key order).
    index: usize,
    id: String,
    max_attempts: i32,
    payload: String,
    insert: &'a ClaimedInsert,
}

impl Store {
    /// Returns the rows of delivered messages, one per lookup in order: the job whose id is the
    /// lookup's `id` (a message Bulwark published), else the job stored under its `key`. On
    /// PostgreSQL in one statement.
    pub async fn find_delivered_jobs(
        &self,
        lookups: &[DeliveredKey],
    ) -> Result<Vec<Option<Job>>, StoreError> {
        const FIND_MANY: &str = concat!(
            "SELECT ",
            job_columns!(),
            " FROM jobs WHERE id = ANY($1) OR idempotency_key = ANY($2)"
        );
        let rows: Vec<JobRow> = match &self.pool {
            Pool::Postgres(pool) => {
                let ids: Vec<&str> = lookups.iter().map(|lookup| lookup.id.as_str()).collect();
                let keys: Vec<&str> = lookups.iter().map(|lookup| lookup.key.as_str()).collect();
                sqlx::query_as(FIND_MANY)
                    .bind(ids)
                    .bind(keys)
                    .fetch_all(pool)
                    .await?
            }
            Pool::Sqlite(pool) => {
                sqlite_rows_each(pool, lookups, |lookup| {
                    sqlx::query_as(FIND_DELIVERED_SQLITE)
                        .bind(&lookup.id)
                        .bind(&lookup.key)
                })
                .await?
            }
        };
        let jobs = decode_rows(rows)?;
        let found = lookups.iter().map(|lookup| {
            let by_id = jobs.iter().find(|job| job.id == lookup.id);
            let by_key = || {
                jobs.iter()
                    .find(|job| job.idempotency_key.as_deref() == Some(lookup.key.as_str()))
            };
            by_id.or_else(by_key).cloned()
        });
        Ok(found.collect())
    }

    /// Creates the rows of delivered messages already claimed (running, attempt 1, leased to
    /// their owner), saving a separate claim, or returns the row that exists: the job whose id
    /// is the message's id (Bulwark published it), else the job stored under its key (an earlier
    /// delivery, or another message of the batch, created it). One answer per insert, in
    /// order, so any message costs this one statement on PostgreSQL (on SQLite, in-process
    /// statements in one transaction). `None` only when another transaction stored the key
    /// after the statement began: the caller looks it up with
    /// [`Store::find_delivered_jobs`]. Rows are written in key order, so two nodes inserting
    /// overlapping keys cannot deadlock.
    pub async fn create_delivered_jobs(
        &self,
        inserts: &[ClaimedInsert],
    ) -> Result<Vec<Option<DeliveredRow>>, StoreError> {
        let mut rows = inserts
            .iter()
            .enumerate()
            .map(|(index, insert)| ClaimedRow {
                index,
                id: Uuid::now_v7().to_string(),
                max_attempts: i32::try_from(insert.new_job.max_attempts).unwrap_or(i32::MAX),
                payload: insert.new_job.payload.to_string(),
                insert,
            })
            .collect::<Vec<_>>();
        rows.sort_by(|left, right| {
            let key = |row: &ClaimedRow| row.insert.new_job.idempotency_key.clone();
            key(left).cmp(&key(right))
        });
        let now = now_ms();
        let answered = match &self.pool {
            Pool::Postgres(pool) => create_delivered_postgres(pool, &rows, now).await?,
            Pool::Sqlite(pool) => create_delivered_sqlite(pool, &rows, now).await?,
        };
        let mut answers: Vec<Option<DeliveredRow>> = inserts.iter().map(|_| None).collect();
        for (position, row) in answered {
            let index = usize::try_from(position - 1)
                .ok()
                .and_then(|position| rows.get(position))
                .map(|row| row.index)
                .ok_or_else(|| {
                    StoreError::Invariant(format!("delivered row at unknown position {position}"))
                })?;
            answers[index] = Some(row);
        }
        Ok(answers)
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

    /// Returns the outbox the republisher drains, the earliest due first: broker jobs due now
    /// whose publish was never confirmed, that were stored before `created_before_ms` (younger
    /// ones are left to their submitter's own publish) or were delayed (nobody publishes those
    /// but the republisher, once they are due). Jobs of paused kinds wait there until resumed.
    pub async fn unpublished_jobs(
        &self,
        created_before_ms: i64,
        limit: u32,
    ) -> Result<Vec<Job>, StoreError> {
        const OUTBOX: &str = concat!(
            "SELECT ",
            job_columns!(),
            " FROM jobs WHERE transport = 'amqp' AND published_at_ms IS NULL \
             AND status = 'queued' AND run_at_ms <= $3 \
             AND (created_at_ms < $1 OR run_at_ms > created_at_ms) \
             AND kind NOT IN (SELECT kind FROM paused_kinds) \
             ORDER BY run_at_ms LIMIT $2"
        );
        let rows: Vec<JobRow> = with_pool!(self, pool => {
            sqlx::query_as(OUTBOX)
                .bind(created_before_ms)
                .bind(i64::from(limit))
                .bind(now_ms())
                .fetch_all(pool)
                .await
        })?;
        decode_rows(rows)
    }

    /// Returns how many broker jobs due by `now_ms` wait in the outbox to be published (never
    /// confirmed; jobs of paused kinds, parked there on purpose, left out), for the
    /// outbox-depth gauge. It reads the outbox's partial index (`jobs_unpublished`), never the
    /// published history.
    pub async fn count_outbox(&self, now_ms: i64) -> Result<i64, StoreError> {
        const COUNT: &str = "SELECT COUNT(*) FROM jobs WHERE transport = 'amqp' \
             AND published_at_ms IS NULL AND status = 'queued' AND run_at_ms <= $1 \
             AND kind NOT IN (SELECT kind FROM paused_kinds)";
        let num_jobs: i64 = with_pool!(self, pool => {
            sqlx::query_scalar(COUNT).bind(now_ms).fetch_one(pool).await
        })?;
        Ok(num_jobs)
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
        macro_rules! claim_sql {
            ($relaxed:expr) => {
                concat!(
                    "UPDATE jobs SET status = 'running', attempts = attempts + 1, \
                     lease_owner = $1, lease_expires_at_ms = $2, updated_at_ms = $3, \
                     started_at_ms = COALESCE(started_at_ms, $3), attempt_started_at_ms = $3 ",
                    $relaxed,
                    " WHERE id = $4 AND (status = 'queued' \
                     OR (status = 'running' AND lease_expires_at_ms < $3)) RETURNING ",
                    job_columns!()
                )
            };
        }
        const CLAIM_SQLITE: &str = claim_sql!("");
        // See `relaxed_commit!`: a claim need not be durable on its own.
        const CLAIM_POSTGRES: &str = claim_sql!(concat!("FROM ", relaxed_commit!()));
        let row: Option<JobRow> = with_pool!(self, pool, claim = [CLAIM_SQLITE, CLAIM_POSTGRES] => {
            sqlx::query_as(claim)
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

/// A delivered message's row on SQLite: the job whose id is the message's, else the one stored
/// under its key.
const FIND_DELIVERED_SQLITE: &str = concat!(
    "SELECT ",
    job_columns!(),
    " FROM jobs WHERE id = $1 OR idempotency_key = $2 \
     ORDER BY CASE WHEN id = $1 THEN 0 ELSE 1 END LIMIT 1"
);

async fn find_delivered_sqlite(
    connection: &mut sqlx::SqliteConnection,
    id: &str,
    key: &str,
) -> Result<Option<Job>, StoreError> {
    let row: Option<JobRow> = sqlx::query_as(FIND_DELIVERED_SQLITE)
        .bind(id)
        .bind(key)
        .fetch_optional(connection)
        .await?;
    row.map(Job::try_from).transpose()
}

/// A job row with the position (1-based, in key order) of the insert it answers.
#[derive(sqlx::FromRow)]
struct AnsweredRow {
    position: i64,
    created: bool,
    #[sqlx(flatten)]
    job: JobRow,
}

impl AnsweredRow {
    fn decode(self) -> Result<(i64, DeliveredRow), StoreError> {
        let job = Job::try_from(self.job)?;
        let row = if self.created {
            DeliveredRow::Created(job)
        } else {
            DeliveredRow::Existing(job)
        };
        Ok((self.position, row))
    }
}

/// Creates or finds the rows of `rows` (in key order) in one statement: the rows whose message
/// id names no job are inserted (a key already taken, by a stored row or another insert of the
/// batch, inserts nothing), and each insert that created nothing is answered with the job its
/// message id names, else the one stored under its key, else the batch's insert of that key.
/// The lookups run only for those: a new message costs the insert alone.
async fn create_delivered_postgres(
    pool: &sqlx::PgPool,
    rows: &[ClaimedRow<'_>],
    now: i64,
) -> Result<Vec<(i64, DeliveredRow)>, StoreError> {
    const CREATE_OR_FIND: &str = concat!(
        // The batch's columns are named apart from the job columns, so the job columns of the
        // answers need no table name.
        // Arrays through sub-selects, so the generic plan is kept (see "Batch statements" in
        // the crate's documentation): planned afresh, this statement cost 0.6 ms a delivery.
        "WITH batch AS (SELECT * FROM UNNEST((SELECT $2::text[]), (SELECT $3::text[]), \
         (SELECT $4::int4[]), (SELECT $5::text[]), (SELECT $6::text[]), (SELECT $7::text[]), \
         (SELECT $8::text[]), (SELECT $9::text[]), (SELECT $10::int8[]), (SELECT $11::text[]), \
         (SELECT $12::int2[]), (SELECT $13::int8[])) \
         WITH ORDINALITY AS batch(new_id, new_kind, new_max_attempts, new_payload, \
         new_request_id, new_key, new_trace_id, new_owner, new_lease_until, message_id, \
         new_priority, new_timeout, position)), inserted AS (INSERT INTO jobs (id, kind, status, attempts, max_attempts, payload, \
         request_id, idempotency_key, created_at_ms, updated_at_ms, run_at_ms, started_at_ms, \
         transport, published_at_ms, trace_id, lease_owner, lease_expires_at_ms, priority, \
         timeout_ms, attempt_started_at_ms) \
         SELECT new_id, new_kind, 'running', 1, new_max_attempts, new_payload, new_request_id, \
         new_key, $1, $1, $1, $1, 'amqp', $1, new_trace_id, new_owner, new_lease_until, \
         new_priority, new_timeout, $1 \
         FROM batch CROSS JOIN ",
        // A claimed row is acted on durably only through the completion's commit, which
        // flushes the WAL past this insert, and the message is acked only after that.
        relaxed_commit!(),
        " WHERE NOT EXISTS (SELECT 1 FROM jobs WHERE jobs.id = batch.message_id) \
         ORDER BY batch.position \
         ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING \
         RETURNING ",
        job_columns!(),
        ") SELECT batch.position, true AS created, ",
        job_columns!(),
        " FROM batch JOIN inserted ON inserted.id = batch.new_id \
         UNION ALL SELECT batch.position, false AS created, ",
        job_columns!(),
        " FROM batch CROSS JOIN LATERAL (SELECT 0 AS rank, ",
        job_columns!(),
        " FROM jobs WHERE jobs.id = batch.message_id UNION ALL SELECT 1, ",
        job_columns!(),
        " FROM jobs WHERE jobs.idempotency_key = batch.new_key UNION ALL SELECT 2, ",
        job_columns!(),
        " FROM inserted WHERE inserted.idempotency_key = batch.new_key \
         ORDER BY rank LIMIT 1) AS found \
         WHERE batch.new_id NOT IN (SELECT id FROM inserted)"
    );
    let jobs = rows.iter().map(|row| &row.insert.new_job);
    let ids: Vec<&str> = rows.iter().map(|row| row.id.as_str()).collect();
    let kinds: Vec<&str> = jobs.clone().map(|job| job.kind.as_str()).collect();
    let max_attempts: Vec<i32> = rows.iter().map(|row| row.max_attempts).collect();
    let payloads: Vec<&str> = rows.iter().map(|row| row.payload.as_str()).collect();
    let request_ids: Vec<Option<&str>> =
        jobs.clone().map(|job| job.request_id.as_deref()).collect();
    let keys: Vec<Option<&str>> = jobs
        .clone()
        .map(|job| job.idempotency_key.as_deref())
        .collect();
    let trace_ids: Vec<Option<&str>> = jobs.map(|job| job.trace_id.as_deref()).collect();
    let owners: Vec<&str> = rows.iter().map(|row| row.insert.owner.as_str()).collect();
    let leases: Vec<i64> = rows.iter().map(|row| row.insert.lease_until_ms).collect();
    let message_ids: Vec<&str> = rows
        .iter()
        .map(|row| row.insert.message_id.as_str())
        .collect();
    let priorities: Vec<i16> = rows
        .iter()
        .map(|row| i16::from(row.insert.new_job.priority))
        .collect();
    let timeouts: Vec<Option<i64>> = rows
        .iter()
        .map(|row| row.insert.new_job.timeout_ms)
        .collect();
    let answered: Vec<AnsweredRow> = sqlx::query_as(CREATE_OR_FIND)
        .bind(now)
        .bind(ids)
        .bind(kinds)
        .bind(max_attempts)
        .bind(payloads)
        .bind(request_ids)
        .bind(keys)
        .bind(trace_ids)
        .bind(owners)
        .bind(leases)
        .bind(message_ids)
        .bind(priorities)
        .bind(timeouts)
        .fetch_all(pool)
        .await?;
    answered.into_iter().map(AnsweredRow::decode).collect()
}

/// Creates or finds the rows of `rows` (in key order) on SQLite: per row an insert that skips
/// a message whose id or key names a stored job, then, only when it created nothing, the
/// lookup; one transaction. SQLite runs one writer at a time, so every row is answered.
async fn create_delivered_sqlite(
    pool: &sqlx::SqlitePool,
    rows: &[ClaimedRow<'_>],
    now: i64,
) -> Result<Vec<(i64, DeliveredRow)>, StoreError> {
    const INSERT_ONE: &str = concat!(
        "INSERT INTO jobs (id, kind, status, attempts, max_attempts, payload, request_id, \
         idempotency_key, created_at_ms, updated_at_ms, run_at_ms, started_at_ms, \
         transport, published_at_ms, trace_id, lease_owner, lease_expires_at_ms, priority, \
         timeout_ms, attempt_started_at_ms) \
         SELECT $1, $2, 'running', 1, $3, $4, $5, $6, $7, $7, $7, $7, 'amqp', $7, $8, $9, \
         $10, $12, $13, $7 WHERE NOT EXISTS (SELECT 1 FROM jobs WHERE id = $11 OR idempotency_key = $6) \
         ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING RETURNING ",
        job_columns!()
    );
    let mut transaction = pool.begin().await?;
    let mut answered = Vec::with_capacity(rows.len());
    for (position, row) in (1_i64..).zip(rows) {
        let job = &row.insert.new_job;
        let created: Option<JobRow> = sqlx::query_as(INSERT_ONE)
            .bind(&row.id)
            .bind(&job.kind)
            .bind(row.max_attempts)
            .bind(&row.payload)
            .bind(&job.request_id)
            .bind(&job.idempotency_key)
            .bind(now)
            .bind(&job.trace_id)
            .bind(&row.insert.owner)
            .bind(row.insert.lease_until_ms)
            .bind(&row.insert.message_id)
            .bind(i16::from(job.priority))
            .bind(job.timeout_ms)
            .fetch_optional(&mut *transaction)
            .await?;
        let answer = match created {
            Some(created) => Some(DeliveredRow::Created(Job::try_from(created)?)),
            None => {
                let key = job.idempotency_key.as_deref().unwrap_or_default();
                find_delivered_sqlite(&mut transaction, &row.insert.message_id, key)
                    .await?
                    .map(DeliveredRow::Existing)
            }
        };
        answered.extend(answer.map(|answer| (position, answer)));
    }
    transaction.commit().await?;
    Ok(answered)
}
