use std::fmt;
use std::str::FromStr;

use bulwark_core::now_ms;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::broker_jobs::JobCompletion;
use crate::db::{Pool, sqlite_rows_each, with_pool};
use crate::{BoxError, Store, StoreError};

/// The columns of `jobs`, in [`JobRow`] order.
macro_rules! job_columns {
    () => {
        "id, kind, status, attempts, max_attempts, payload, result, error_code, error_message, \
         request_id, idempotency_key, created_at_ms, updated_at_ms, run_at_ms, started_at_ms, \
         finished_at_ms, lease_owner, lease_expires_at_ms, trace_id, priority, \
         timeout_ms, cancel_requested_at_ms, parked_at_ms, attempt_started_at_ms, attempt_node, \
         progress, result_ttl_ms"
    };
}
pub(crate) use job_columns;

/// A row source that turns off `synchronous_commit` for the statement's own transaction, in the
/// same round trip (PostgreSQL only). For writes that need not survive a database crash on
/// their own: claims and leases. A claim lost in a crash leaves the job runnable again (at
/// least once, as with any lease), and a claim is never acted on durably without it: the
/// outcome's commit waits for the WAL up to and past the claim, and a broker message is acked
/// only after that. The commit returns without waiting for its WAL flush, which takes one
/// fsync off the claimer's path.
macro_rules! relaxed_commit {
    () => {
        "(SELECT set_config('synchronous_commit', 'off', true)) AS relaxed_commit"
    };
}
pub(crate) use relaxed_commit;

/// The claim statement: running jobs whose lease expired first, then `$due` (due queued jobs),
/// at most `$4` in all; `$kinds` says which kinds may be claimed. Binds `$1` owner, `$2` lease
/// end, `$3` now, `$4` limit, `$5` the kinds' parameter.
macro_rules! claim_sql {
    ($relaxed:expr, $lock:expr, $due:expr, $kinds:expr) => {
        concat!(
            "UPDATE jobs SET status = 'running', attempts = attempts + 1, \
             lease_owner = $1, lease_expires_at_ms = $2, updated_at_ms = $3, \
             started_at_ms = COALESCE(started_at_ms, $3), attempt_started_at_ms = $3 ",
            $relaxed,
            " WHERE id IN (SELECT id FROM (SELECT id FROM (SELECT id FROM jobs \
             WHERE status = 'running' AND lease_expires_at_ms < $3 AND transport = 'local' AND ",
            $kinds,
            " ORDER BY lease_expires_at_ms LIMIT $4",
            $lock,
            ") AS expired UNION ALL ",
            $due,
            ") AS runnable LIMIT $4) RETURNING ",
            job_columns!()
        )
    };
}
pub(crate) use claim_sql;

/// Due queued jobs on SQLite, by priority, then by when they were due.
macro_rules! due_sqlite {
    ($kinds:expr) => {
        concat!(
            "SELECT id FROM (SELECT id FROM jobs WHERE status = 'queued' \
             AND transport = 'local' AND run_at_ms <= $3 AND ",
            $kinds,
            " ORDER BY priority DESC, run_at_ms LIMIT $4) AS due"
        )
    };
}
pub(crate) use due_sqlite;

/// Due queued jobs on PostgreSQL: each priority's due rows are a range of `jobs_queued`
/// (priority, run_at_ms), read in turn, highest first, until the limit is met, so jobs
/// delayed into the future are never walked over.
macro_rules! due_postgres {
    ($kinds:expr) => {
        concat!(
            "SELECT due.id \
             FROM (VALUES (9), (8), (7), (6), (5), (4), (3), (2), (1), (0)) AS bands(priority) \
             CROSS JOIN LATERAL (SELECT id FROM jobs WHERE status = 'queued' \
             AND transport = 'local' AND priority = bands.priority AND run_at_ms <= $3 AND ",
            $kinds,
            " ORDER BY run_at_ms LIMIT $4 FOR UPDATE SKIP LOCKED) AS due"
        )
    };
}
pub(crate) use due_postgres;

/// Kinds neither paused nor in `$5` (a JSON array of kind names). Paused kinds are skipped
/// with `NOT IN`, a hashed set of the (few) paused kinds built once per statement: `NOT EXISTS`
/// let the planner choose an anti-join that hashed every queued row of a band before the limit
/// applied (0.19 ms against 63 ms over 20,000 queued rows, docs/benchmarks.md).
macro_rules! claimable_kinds_sqlite {
    () => {
        "kind NOT IN (SELECT kind FROM paused_kinds) \
         AND kind NOT IN (SELECT value FROM json_each($5))"
    };
}
macro_rules! claimable_kinds_postgres {
    () => {
        "kind NOT IN (SELECT kind FROM paused_kinds) \
         AND kind NOT IN (SELECT jsonb_array_elements_text($5::jsonb))"
    };
}

/// Returns claimed jobs in the order they are run: by priority, highest first, then by when
/// they were due (the statement's rows come back in no particular order).
pub(crate) fn in_claim_order(mut jobs: Vec<Job>) -> Vec<Job> {
    jobs.sort_by(|left, right| {
        right
            .priority
            .cmp(&left.priority)
            .then(left.run_at_ms.cmp(&right.run_at_ms))
            .then(left.id.cmp(&right.id))
    });
    jobs
}

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    /// Waiting to be claimed (first run, or a retry once `run_at` passes).
    Queued,
    /// Claimed by a worker holding an unexpired lease.
    Running,
    Succeeded,
    /// Failed with an error that retrying cannot fix.
    Failed,
    /// Failed with retriable errors until its attempts ran out.
    Dead,
    /// Cancelled on request: never ran (it was queued), or stopped while running.
    Cancelled,
}

impl JobStatus {
    pub const ALL: [JobStatus; 6] = [
        JobStatus::Queued,
        JobStatus::Running,
        JobStatus::Succeeded,
        JobStatus::Failed,
        JobStatus::Dead,
        JobStatus::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Succeeded => "succeeded",
            JobStatus::Failed => "failed",
            JobStatus::Dead => "dead",
            JobStatus::Cancelled => "cancelled",
        }
    }

    /// Returns true for statuses a job never leaves.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobStatus::Succeeded | JobStatus::Failed | JobStatus::Dead | JobStatus::Cancelled
        )
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

impl FromStr for JobStatus {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        JobStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == text)
            .ok_or_else(|| format!("unknown job status `{text}`"))
    }
}

/// One row of `jobs`, decoded.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Job {
    pub id: String,
    pub kind: String,
    pub status: JobStatus,
    pub attempts: i32,
    pub max_attempts: i32,
    pub payload: Value,
    pub result: Option<Value>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub request_id: Option<String>,
    pub idempotency_key: Option<String>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    pub run_at_ms: i64,
    pub started_at_ms: Option<i64>,
    pub finished_at_ms: Option<i64>,
    pub lease_owner: Option<String>,
    pub lease_expires_at_ms: Option<i64>,
    /// The W3C trace id of the request or message that created it.
    pub trace_id: Option<String>,
    /// 0 (lowest) to 9 (highest): the database queue claims due jobs by priority, then by
    /// when they were due.
    pub priority: u8,
    /// An attempt running longer is aborted and counted as a retryable `JOB_TIMEOUT`.
    pub timeout_ms: Option<i64>,
    /// When a cancel of the running job was asked for; the node running it stops it.
    pub cancel_requested_at_ms: Option<i64>,
    /// When a broker delivery of the job was parked in the outbox because its kind was paused.
    pub parked_at_ms: Option<i64>,
    /// When the current (or last) attempt started.
    pub attempt_started_at_ms: Option<i64>,
    /// The node the last finished attempt ran on (a running one's is `lease_owner`); written
    /// as the lease is given up, so a claim writes no more than before.
    pub attempt_node: Option<String>,
    /// How far the running job is, as it last reported.
    pub progress: Option<JobProgress>,
    /// How long it is kept once finished (see [`NewJob::result_ttl_ms`]).
    pub result_ttl_ms: Option<i64>,
}

/// How far a running job is: `done` of `total` (when known), with a short message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobProgress {
    pub done: u64,
    pub total: Option<u64>,
    pub message: Option<String>,
    pub updated_at_ms: i64,
}

#[derive(sqlx::FromRow)]
pub(crate) struct JobRow {
    id: String,
    kind: String,
    status: String,
    attempts: i32,
    max_attempts: i32,
    payload: String,
    result: Option<String>,
    error_code: Option<String>,
    error_message: Option<String>,
    request_id: Option<String>,
    idempotency_key: Option<String>,
    created_at_ms: i64,
    updated_at_ms: i64,
    run_at_ms: i64,
    started_at_ms: Option<i64>,
    finished_at_ms: Option<i64>,
    lease_owner: Option<String>,
    lease_expires_at_ms: Option<i64>,
    trace_id: Option<String>,
    priority: i16,
    timeout_ms: Option<i64>,
    cancel_requested_at_ms: Option<i64>,
    parked_at_ms: Option<i64>,
    attempt_started_at_ms: Option<i64>,
    attempt_node: Option<String>,
    progress: Option<String>,
    result_ttl_ms: Option<i64>,
}

impl TryFrom<JobRow> for Job {
    type Error = StoreError;

    fn try_from(row: JobRow) -> Result<Self, Self::Error> {
        let corrupt = |what: &str, error: BoxError| {
            StoreError::corrupt(format!("job {}: {what}", row.id), error)
        };
        let status = row
            .status
            .parse()
            .map_err(|error: String| corrupt("status", error.into()))?;
        let payload =
            serde_json::from_str(&row.payload).map_err(|error| corrupt("payload", error.into()))?;
        let priority = u8::try_from(row.priority)
            .ok()
            .filter(|priority| *priority <= MAX_PRIORITY)
            .ok_or_else(|| corrupt("priority", format!("{} is not 0 to 9", row.priority).into()))?;
        let progress = match &row.progress {
            Some(text) => Some(
                serde_json::from_str(text).map_err(|error| corrupt("progress", error.into()))?,
            ),
            None => None,
        };
        let result = match &row.result {
            Some(text) => {
                Some(serde_json::from_str(text).map_err(|error| corrupt("result", error.into()))?)
            }
            None => None,
        };
        Ok(Job {
            status,
            payload,
            result,
            id: row.id,
            kind: row.kind,
            attempts: row.attempts,
            max_attempts: row.max_attempts,
            error_code: row.error_code,
            error_message: row.error_message,
            request_id: row.request_id,
            idempotency_key: row.idempotency_key,
            created_at_ms: row.created_at_ms,
            updated_at_ms: row.updated_at_ms,
            run_at_ms: row.run_at_ms,
            started_at_ms: row.started_at_ms,
            finished_at_ms: row.finished_at_ms,
            lease_owner: row.lease_owner,
            lease_expires_at_ms: row.lease_expires_at_ms,
            trace_id: row.trace_id,
            priority,
            timeout_ms: row.timeout_ms,
            cancel_requested_at_ms: row.cancel_requested_at_ms,
            parked_at_ms: row.parked_at_ms,
            attempt_started_at_ms: row.attempt_started_at_ms,
            attempt_node: row.attempt_node,
            progress,
            result_ttl_ms: row.result_ttl_ms,
        })
    }
}

pub(crate) fn decode_rows(rows: Vec<JobRow>) -> Result<Vec<Job>, StoreError> {
    rows.into_iter().map(Job::try_from).collect()
}

/// The statement that hands running jobs back to the queue without counting the interrupted
/// attempt (`$1` is now, `$2` when they may run again), for the running jobs `condition`
/// picks.
macro_rules! release_sql {
    ($condition:literal) => {
        concat!(
            "UPDATE jobs SET status = 'queued', \
             attempts = CASE WHEN attempts > 0 THEN attempts - 1 ELSE 0 END, updated_at_ms = $1, \
             run_at_ms = $2, lease_owner = NULL, lease_expires_at_ms = NULL \
             WHERE status = 'running' AND ",
            $condition
        )
    };
}

/// A job to create; the payload has been validated for its kind by the caller.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub kind: String,
    pub payload: Value,
    pub idempotency_key: Option<String>,
    pub request_id: Option<String>,
    /// The W3C trace id of the request or message creating it.
    pub trace_id: Option<String>,
    pub max_attempts: u32,
    /// 0 (lowest) to [`MAX_PRIORITY`]; submissions that name none get [`DEFAULT_PRIORITY`].
    pub priority: u8,
    /// When it may first run; `None` (or a time already past) is now.
    pub run_at_ms: Option<i64>,
    /// How long one attempt may run before it is aborted; `None`: no limit.
    pub timeout_ms: Option<i64>,
    /// How long the job (and its result) is kept once it finished, whatever its status's
    /// retention; `None`: the retention alone.
    pub result_ttl_ms: Option<i64>,
}

impl NewJob {
    /// Returns a job of `kind` that runs now with the default priority, no idempotency key,
    /// trace, timeout or result TTL, and up to `max_attempts` attempts.
    pub fn new(kind: impl Into<String>, payload: Value, max_attempts: u32) -> NewJob {
        NewJob {
            kind: kind.into(),
            payload,
            idempotency_key: None,
            request_id: None,
            trace_id: None,
            max_attempts,
            priority: DEFAULT_PRIORITY,
            run_at_ms: None,
            timeout_ms: None,
            result_ttl_ms: None,
        }
    }

    /// Returns when the job may first run, given the time it is stored: never before then.
    pub fn run_at(&self, now_ms: i64) -> i64 {
        self.run_at_ms
            .map_or(now_ms, |run_at_ms| run_at_ms.max(now_ms))
    }
}

/// The highest job priority; 0 is the lowest.
pub const MAX_PRIORITY: u8 = 9;

/// The priority of a job that does not name one (and of rows stored before priorities).
pub const DEFAULT_PRIORITY: u8 = bulwark_core::DEFAULT_JOB_PRIORITY;

/// What [`Store::insert_job`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum InsertOutcome {
    Created(Job),
    /// A job with the same idempotency key already existed; it is returned unchanged.
    Existing(Job),
}

impl InsertOutcome {
    pub fn job(&self) -> &Job {
        match self {
            InsertOutcome::Created(job) | InsertOutcome::Existing(job) => job,
        }
    }
}

/// A claim's fencing token: the node holding a job's lease and the attempt its claim began.
/// An outcome is stored only while both still match the row, so a node that lost a job (its
/// lease expired, or it was fenced as silent) cannot store that attempt's outcome, even after
/// it claimed the same job again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseRef<'a> {
    pub job_id: &'a str,
    pub owner: &'a str,
    pub attempt: i32,
}

impl<'a> LeaseRef<'a> {
    /// Returns the lease `owner` holds on `job` as claimed (its attempt number).
    pub fn of(job: &'a Job, owner: &'a str) -> Self {
        LeaseRef {
            job_id: &job.id,
            owner,
            attempt: job.attempts,
        }
    }
}

/// Why an attempt failed and what happens next.
#[derive(Debug, Clone)]
pub struct JobFailure {
    pub code: String,
    pub message: String,
    /// `Some(time)`: queue again, runnable at that Unix-millisecond time. `None`: final.
    pub retry_at_ms: Option<i64>,
    /// The final status when `retry_at_ms` is `None`: [`JobStatus::Failed`] or [`JobStatus::Dead`].
    pub final_status: JobStatus,
    /// With `retry_at_ms`: give the attempt back, because the job never ran (the node had no
    /// capacity for it). A job that waits for capacity this way never runs out of attempts.
    pub refund_attempt: bool,
}

/// Filters for [`Store::list_jobs`].
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    pub status: Option<JobStatus>,
    pub kind: Option<String>,
    /// Only jobs older than this id (ids are time-ordered UUIDv7), for pagination.
    pub before_id: Option<String>,
    pub limit: u32,
}

/// A page of jobs, newest first.
#[derive(Debug, Clone)]
pub struct JobPage {
    pub jobs: Vec<Job>,
    /// Pass as `before_id` for the next page; `None` on the last page.
    pub next_cursor: Option<String>,
}

/// Number of live (queued or running) jobs of one kind in one status.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct LiveCount {
    pub kind: String,
    pub status: String,
    pub count: i64,
    /// For queued jobs: the earliest `run_at_ms` among those already due, `None` when none is.
    pub oldest_due_at_ms: Option<i64>,
}

/// Number of jobs of one kind in one status.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct StatusCount {
    pub kind: String,
    pub status: String,
    pub count: i64,
}

impl Store {
    /// Creates a job in the local queue, or returns the job already stored under the same
    /// idempotency key.
    pub async fn insert_job(&self, new_job: &NewJob) -> Result<InsertOutcome, StoreError> {
        self.insert_routed_job(new_job, crate::JobRoute::Local)
            .await
    }

    /// Returns the job with this id, if any.
    pub async fn get_job(&self, id: &str) -> Result<Option<Job>, StoreError> {
        const BY_ID: &str = concat!("SELECT ", job_columns!(), " FROM jobs WHERE id = $1");
        let row: Option<JobRow> =
            with_pool!(self, pool => sqlx::query_as(BY_ID).bind(id).fetch_optional(pool).await)?;
        row.map(Job::try_from).transpose()
    }

    /// Stores how far a running job is. Returns false when it is not running (finished, or
    /// back in the queue): a late report changes nothing.
    pub async fn report_job_progress(
        &self,
        id: &str,
        progress: &JobProgress,
    ) -> Result<bool, StoreError> {
        const REPORT: &str = "UPDATE jobs SET progress = $1 WHERE id = $2 AND status = 'running'";
        let text = serde_json::to_string(progress)
            .map_err(|error| StoreError::corrupt(format!("job {id}: progress"), error))?;
        let num_updated = with_pool!(self, pool => {
            sqlx::query(REPORT)
                .bind(text)
                .bind(id)
                .execute(pool)
                .await
                .map(|done| done.rows_affected())
        })?;
        Ok(num_updated == 1)
    }

    /// Deletes up to `limit` jobs that finished with `status` before `finished_before_ms`,
    /// the oldest first, and returns how many. A dead or failed job whose dead letter is still
    /// open (pending, retrying or parked) is kept: requeueing the letter needs its row. On
    /// PostgreSQL rows another transaction holds are skipped, so pruners on several nodes
    /// share the work. Only finished statuses are accepted.
    pub async fn prune_finished_jobs(
        &self,
        status: JobStatus,
        finished_before_ms: i64,
        limit: u32,
    ) -> Result<u64, StoreError> {
        macro_rules! prune_sql {
            ($lock:literal) => {
                concat!(
                    "DELETE FROM jobs WHERE id IN (SELECT id FROM jobs WHERE status = $1 \
                     AND finished_at_ms < $2 AND NOT EXISTS (SELECT 1 FROM dead_letters \
                     WHERE dead_letters.job_id = jobs.id \
                     AND dead_letters.status IN ('pending', 'retrying', 'parked')) \
                     ORDER BY finished_at_ms LIMIT $3",
                    $lock,
                    ")"
                )
            };
        }
        const PRUNE_SQLITE: &str = prune_sql!("");
        const PRUNE_POSTGRES: &str = prune_sql!(" FOR UPDATE SKIP LOCKED");
        if !status.is_terminal() {
            return Err(StoreError::Invariant(format!(
                "only finished jobs are pruned, not `{status}` ones"
            )));
        }
        let result = with_pool!(self, pool, prune = [PRUNE_SQLITE, PRUNE_POSTGRES] => {
            sqlx::query(prune)
                .bind(status.as_str())
                .bind(finished_before_ms)
                .bind(i64::from(limit))
                .execute(pool)
                .await
                .map(|done| done.rows_affected())
        })?;
        Ok(result)
    }

    /// Deletes up to `limit` finished jobs whose result TTL ran out by `now_ms` (they finished
    /// more than their `result_ttl_ms` ago), soonest expired first; a job whose dead letter is
    /// still open is kept, as [`Store::prune_finished_jobs`] keeps it. Returns how many it
    /// deleted.
    pub async fn prune_expired_jobs(&self, now_ms: i64, limit: u32) -> Result<u64, StoreError> {
        macro_rules! expired_sql {
            ($lock:literal) => {
                concat!(
                    "DELETE FROM jobs WHERE id IN (SELECT id FROM jobs \
                     WHERE result_ttl_ms IS NOT NULL AND finished_at_ms IS NOT NULL \
                     AND finished_at_ms + result_ttl_ms < $1 \
                     AND status IN ('succeeded', 'failed', 'dead', 'cancelled') \
                     AND NOT EXISTS (SELECT 1 FROM dead_letters \
                     WHERE dead_letters.job_id = jobs.id \
                     AND dead_letters.status IN ('pending', 'retrying', 'parked')) \
                     ORDER BY finished_at_ms + result_ttl_ms LIMIT $2",
                    $lock,
                    ")"
                )
            };
        }
        const EXPIRED_SQLITE: &str = expired_sql!("");
        const EXPIRED_POSTGRES: &str = expired_sql!(" FOR UPDATE SKIP LOCKED");
        let deleted = with_pool!(self, pool, expired = [EXPIRED_SQLITE, EXPIRED_POSTGRES] => {
            sqlx::query(expired)
                .bind(now_ms)
                .bind(i64::from(limit))
                .execute(pool)
                .await
                .map(|done| done.rows_affected())
        })?;
        Ok(deleted)
    }

    /// Returns one page of jobs matching the filter, newest first.
    pub async fn list_jobs(&self, filter: &JobFilter) -> Result<JobPage, StoreError> {
        const LIST: &str = concat!(
            "SELECT ",
            job_columns!(),
            " FROM jobs WHERE ($1 IS NULL OR status = $1) AND ($2 IS NULL OR kind = $2) \
             AND ($3 IS NULL OR id < $3) ORDER BY id DESC LIMIT $4"
        );
        let limit = i64::from(filter.limit.max(1));
        let status = filter.status.map(JobStatus::as_str);
        let rows: Vec<JobRow> = with_pool!(self, pool => {
            sqlx::query_as(LIST)
                .bind(status)
                .bind(&filter.kind)
                .bind(&filter.before_id)
                .bind(limit + 1)
                .fetch_all(pool)
                .await
        })?;
        let mut jobs = decode_rows(rows)?;
        let next_cursor = if jobs.len() as i64 > limit {
            jobs.truncate(limit as usize);
            jobs.last().map(|job| job.id.clone())
        } else {
            None
        };
        Ok(JobPage { jobs, next_cursor })
    }

    /// Claims up to `limit` runnable jobs for `owner` until `lease_until_ms`: running jobs whose
    /// lease expired (their worker died) first, then queued jobs whose `run_at` has passed,
    /// by priority, then oldest first. Jobs of paused kinds are left where they are. Each claim
    /// counts as an attempt. On PostgreSQL, rows locked by another claimer are skipped, so
    /// concurrent claimers never take the same job. Rows carried by the broker
    /// (`transport = 'amqp'`) are left to the broker consumers.
    ///
    /// Each half reads its own partial index of live rows (`jobs_running`, `jobs_queued`), so a
    /// claim costs the same with ten or ten million finished jobs in the table.
    pub async fn claim_jobs(
        &self,
        owner: &str,
        lease_until_ms: i64,
        limit: u32,
    ) -> Result<Vec<Job>, StoreError> {
        self.claim_jobs_except(owner, lease_until_ms, limit, &[])
            .await
    }

    /// Like [`Store::claim_jobs`], leaving the jobs of `skipped_kinds` alone: the limited kinds,
    /// which start only through their gate ([`Store::claim_gated_jobs`]).
    pub async fn claim_jobs_except(
        &self,
        owner: &str,
        lease_until_ms: i64,
        limit: u32,
        skipped_kinds: &[String],
    ) -> Result<Vec<Job>, StoreError> {
        const CLAIM_SQLITE: &str = claim_sql!(
            "",
            "",
            due_sqlite!(claimable_kinds_sqlite!()),
            claimable_kinds_sqlite!()
        );
        const CLAIM_POSTGRES: &str = claim_sql!(
            concat!("FROM ", relaxed_commit!()),
            " FOR UPDATE SKIP LOCKED",
            due_postgres!(claimable_kinds_postgres!()),
            claimable_kinds_postgres!()
        );
        let skipped = serde_json::to_string(skipped_kinds)
            .map_err(|error| StoreError::Invariant(format!("kinds to skip: {error}")))?;
        let now = now_ms();
        let limit = i64::from(limit);
        let rows: Vec<JobRow> = with_pool!(self, pool, claim = [CLAIM_SQLITE, CLAIM_POSTGRES] => {
            sqlx::query_as(claim)
                .bind(owner)
                .bind(lease_until_ms)
                .bind(now)
                .bind(limit)
                .bind(&skipped)
                .fetch_all(pool)
                .await
        })?;
        Ok(in_claim_order(decode_rows(rows)?))
    }

    /// Records a success and returns the finished job. Returns `None` if the lease is no longer
    /// the one given (the job was claimed again, here or elsewhere), in which case nothing
    /// changes.
    pub async fn complete_job(
        &self,
        lease: LeaseRef<'_>,
        result: &Value,
    ) -> Result<Option<Job>, StoreError> {
        let completion = JobCompletion {
            id: lease.job_id.to_owned(),
            owner: lease.owner.to_owned(),
            attempt: lease.attempt,
            result: result.clone(),
        };
        Ok(self.complete_jobs(&[completion]).await?.pop().flatten())
    }

    /// Records several successes (see [`Store::complete_job`]) in one transaction, on
    /// PostgreSQL in one statement; one answer per completion, in order.
    pub async fn complete_jobs(
        &self,
        completions: &[JobCompletion],
    ) -> Result<Vec<Option<Job>>, StoreError> {
        const COMPLETE_ONE: &str = concat!(
            "UPDATE jobs SET status = 'succeeded', result = $1, \
             error_code = NULL, error_message = NULL, updated_at_ms = $2, finished_at_ms = $2, \
             attempt_node = lease_owner, lease_owner = NULL, lease_expires_at_ms = NULL \
             WHERE id = $3 AND status = 'running' AND lease_owner = $4 AND attempts = $5 \
             RETURNING ",
            job_columns!()
        );
        // The batch's columns are named apart from the table's, so RETURNING reads the table.
        // Arrays through sub-selects (see "Batch statements" in the crate's documentation).
        const COMPLETE_MANY: &str = concat!(
            "UPDATE jobs SET status = 'succeeded', result = batch.job_result, \
             error_code = NULL, error_message = NULL, updated_at_ms = $1, finished_at_ms = $1, \
             attempt_node = jobs.lease_owner, lease_owner = NULL, lease_expires_at_ms = NULL \
             FROM UNNEST((SELECT $2::text[]), (SELECT $3::text[]), (SELECT $4::text[]), \
             (SELECT $5::int[])) AS batch(job_id, job_owner, job_result, job_attempt) \
             WHERE jobs.id = batch.job_id AND jobs.status = 'running' \
             AND jobs.lease_owner = batch.job_owner AND jobs.attempts = batch.job_attempt \
             RETURNING ",
            job_columns!()
        );
        let now = now_ms();
        let results: Vec<String> = completions
            .iter()
            .map(|completion| completion.result.to_string())
            .collect();
        let rows: Vec<JobRow> = match &self.pool {
            Pool::Postgres(pool) => {
                let ids: Vec<&str> = completions.iter().map(|done| done.id.as_str()).collect();
                let owners: Vec<&str> =
                    completions.iter().map(|done| done.owner.as_str()).collect();
                let attempts: Vec<i32> = completions.iter().map(|done| done.attempt).collect();
                sqlx::query_as(COMPLETE_MANY)
                    .bind(now)
                    .bind(ids)
                    .bind(owners)
                    .bind(&results)
                    .bind(attempts)
                    .fetch_all(pool)
                    .await?
            }
            Pool::Sqlite(pool) => {
                let requests: Vec<(&JobCompletion, &String)> =
                    completions.iter().zip(&results).collect();
                sqlite_rows_each(pool, &requests, |(completion, result)| {
                    sqlx::query_as(COMPLETE_ONE)
                        .bind(*result)
                        .bind(now)
                        .bind(&completion.id)
                        .bind(&completion.owner)
                        .bind(completion.attempt)
                })
                .await?
            }
        };
        // Each finished row answers its completion once; a second completion of the same job
        // finds it taken, as it would find the job no longer running.
        let mut jobs = decode_rows(rows)?;
        let answers = completions.iter().map(|completion| {
            let position = jobs.iter().position(|job| job.id == completion.id)?;
            Some(jobs.swap_remove(position))
        });
        Ok(answers.collect())
    }

    /// Records a failed attempt (queued again for `retry_at_ms`, or final) and returns the
    /// job as stored. Returns `None` if the lease is no longer the one given.
    pub async fn fail_job(
        &self,
        lease: LeaseRef<'_>,
        failure: &JobFailure,
    ) -> Result<Option<Job>, StoreError> {
        let (id, owner) = (lease.job_id, lease.owner);
        // A retried attempt is copied to the history in the same statement (PostgreSQL) or
        // transaction (SQLite); a refunded one never ran and is not history.
        macro_rules! retry_sql {
            () => {
                concat!(
                    "UPDATE jobs SET status = 'queued', error_code = $1, \
                     error_message = $2, updated_at_ms = $3, run_at_ms = $4, lease_owner = NULL, \
                     lease_expires_at_ms = NULL, progress = NULL, \
                     attempts = CASE WHEN $7 AND attempts > 0 THEN attempts - 1 ELSE attempts END \
                     WHERE id = $5 AND status = 'running' AND lease_owner = $6 AND attempts = $8 \
                     RETURNING ",
                    job_columns!()
                )
            };
        }
        macro_rules! record_attempt_sql {
            ($source:literal) => {
                concat!(
                    "INSERT INTO job_attempts (job_id, attempt, node, started_at_ms, \
                     finished_at_ms, outcome, error_code, error_message) \
                     SELECT id, attempts, $6, attempt_started_at_ms, $3, 'retried', \
                     $1, $2 FROM ",
                    $source,
                    " AND NOT $7 ON CONFLICT (job_id, attempt) DO NOTHING"
                )
            };
        }
        const RETRY_SQLITE: &str = retry_sql!();
        const RECORD_SQLITE: &str = record_attempt_sql!("jobs WHERE id = $5");
        const RETRY_POSTGRES: &str = concat!(
            "WITH retried AS (",
            retry_sql!(),
            "), recorded AS (",
            record_attempt_sql!("retried WHERE true"),
            ") SELECT ",
            job_columns!(),
            " FROM retried"
        );
        const FINAL: &str = concat!(
            "UPDATE jobs SET status = $4, error_code = $1, error_message = $2, \
             updated_at_ms = $3, finished_at_ms = $3, attempt_node = lease_owner, \
             lease_owner = NULL, lease_expires_at_ms = NULL WHERE id = $5 \
             AND status = 'running' AND lease_owner = $6 AND attempts = $7 RETURNING ",
            job_columns!()
        );
        let now = now_ms();
        macro_rules! bind_retry {
            ($sql:expr, $retry_at_ms:expr) => {
                $sql.bind(&failure.code)
                    .bind(&failure.message)
                    .bind(now)
                    .bind($retry_at_ms)
                    .bind(id)
                    .bind(owner)
                    .bind(failure.refund_attempt)
            };
        }
        let row: Option<JobRow> = match (failure.retry_at_ms, &self.pool) {
            (Some(retry_at_ms), Pool::Postgres(pool)) => {
                bind_retry!(sqlx::query_as(RETRY_POSTGRES), retry_at_ms)
                    .bind(lease.attempt)
                    .fetch_optional(pool)
                    .await?
            }
            (Some(retry_at_ms), Pool::Sqlite(pool)) => {
                let mut transaction = pool.begin().await?;
                let row: Option<JobRow> = bind_retry!(sqlx::query_as(RETRY_SQLITE), retry_at_ms)
                    .bind(lease.attempt)
                    .fetch_optional(&mut *transaction)
                    .await?;
                if row.is_some() {
                    bind_retry!(sqlx::query(RECORD_SQLITE), retry_at_ms)
                        .execute(&mut *transaction)
                        .await?;
                }
                transaction.commit().await?;
                row
            }
            (None, _) => with_pool!(self, pool => {
                sqlx::query_as(FINAL)
                    .bind(&failure.code)
                    .bind(&failure.message)
                    .bind(now)
                    .bind(failure.final_status.as_str())
                    .bind(id)
                    .bind(owner)
                    .bind(lease.attempt)
                    .fetch_optional(pool)
                    .await
            })?,
        };
        row.map(Job::try_from).transpose()
    }

    /// Hands unfinished jobs back to the queue at shutdown: they become runnable at once and
    /// the interrupted attempt is not counted. Returns how many were released.
    pub async fn release_jobs(&self, ids: &[String], owner: &str) -> Result<u64, StoreError> {
        const RELEASE: &str = release_sql!("id = $3 AND lease_owner = $4");
        let mut num_released = 0;
        let now = now_ms();
        for id in ids {
            num_released += with_pool!(self, pool => {
                sqlx::query(RELEASE)
                    .bind(now)
                    .bind(now)
                    .bind(id)
                    .bind(owner)
                    .execute(pool)
                    .await
                    .map(|done| done.rows_affected())
            })?;
        }
        Ok(num_released)
    }

    /// Hands every job `owner` still runs back to the queue, as [`Store::release_jobs`] does,
    /// runnable again from `runnable_at_ms`: for a node that exits before its runner could say
    /// which jobs it holds (a second signal, or a shutdown past its deadline). A moment ahead
    /// keeps the exiting process, whose runner may be claiming still, from taking them back
    /// before it is gone. Returns how many were released.
    pub async fn release_jobs_of_owner(
        &self,
        owner: &str,
        runnable_at_ms: i64,
    ) -> Result<u64, StoreError> {
        const RELEASE_ALL: &str = release_sql!("lease_owner = $3");
        let num_released = with_pool!(self, pool => {
            sqlx::query(RELEASE_ALL)
                .bind(now_ms())
                .bind(runnable_at_ms)
                .bind(owner)
                .execute(pool)
                .await
                .map(|done| done.rows_affected())
        })?;
        Ok(num_released)
    }

    /// Extends the leases `owner` still holds on these jobs. Returns how many were extended.
    pub async fn renew_leases(
        &self,
        ids: &[String],
        owner: &str,
        lease_until_ms: i64,
    ) -> Result<u64, StoreError> {
        const RENEW: &str = "UPDATE jobs SET lease_expires_at_ms = $1 \
             WHERE id = $2 AND status = 'running' AND lease_owner = $3";
        let mut num_renewed = 0;
        for id in ids {
            num_renewed += with_pool!(self, pool => {
                sqlx::query(RENEW)
                    .bind(lease_until_ms)
                    .bind(id)
                    .bind(owner)
                    .execute(pool)
                    .await
                    .map(|done| done.rows_affected())
            })?;
        }
        Ok(num_renewed)
    }

    /// Returns the number of jobs per kind and status, every status (a scan of the table: for
    /// tests and tools, not for metrics; see [`Store::count_live_jobs`]).
    pub async fn count_jobs(&self) -> Result<Vec<StatusCount>, StoreError> {
        const COUNT: &str =
            "SELECT kind, status, COUNT(*) AS count FROM jobs GROUP BY kind, status";
        let counts = with_pool!(self, pool => sqlx::query_as(COUNT).fetch_all(pool).await)?;
        Ok(counts)
    }

    /// Returns the number of queued and running jobs per kind, and when the oldest queued job
    /// that is due by `now_ms` became due, for queue-depth metrics. It reads the partial index
    /// of live rows (`jobs_live_kinds`, which carries `run_at_ms`), never the finished history.
    pub async fn count_live_jobs(&self, now_ms: i64) -> Result<Vec<LiveCount>, StoreError> {
        const COUNT: &str = "SELECT kind, status, COUNT(*) AS count, \
             MIN(run_at_ms) FILTER (WHERE status = 'queued' AND run_at_ms <= $1) AS oldest_due_at_ms \
             FROM jobs WHERE status IN ('queued', 'running') GROUP BY kind, status";
        let counts =
            with_pool!(self, pool => sqlx::query_as(COUNT).bind(now_ms).fetch_all(pool).await)?;
        Ok(counts)
    }
}

/// The group-committed form of [`Store::complete_jobs`]: jobs finishing at about the same time
/// on one node share one statement and one commit.
#[derive(Debug)]
pub struct CompleteJobs(pub Store);

impl crate::BatchWrite for CompleteJobs {
    type Request = JobCompletion;
    type Response = Option<Job>;
    const NAME: &'static str = "complete_jobs";

    async fn write(&self, completions: &[JobCompletion]) -> Result<Vec<Option<Job>>, StoreError> {
        self.0.complete_jobs(completions).await
    }
}
