//! A job's attempt history: the attempts that ended in a retry, copied to `job_attempts` as
//! the job went back to the queue, and its current or last attempt, which the job row holds.

use crate::db::with_pool;
use crate::{Job, JobStatus, Store, StoreError};

/// One attempt of a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptRecord {
    /// 1-based.
    pub attempt: i32,
    /// The node that ran it; `None` when unknown (its node died before recording it).
    pub node: Option<String>,
    pub started_at_ms: Option<i64>,
    /// `None` while it runs, or when its node died without recording its end.
    pub finished_at_ms: Option<i64>,
    /// `retried`, `running`, `succeeded`, `failed`, `dead`, `cancelled`, or `lost` (its lease
    /// expired: the node stopped while it ran and the job was claimed again).
    pub outcome: String,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
}

#[derive(sqlx::FromRow)]
struct AttemptRow {
    attempt: i32,
    node: Option<String>,
    started_at_ms: Option<i64>,
    finished_at_ms: i64,
    outcome: String,
    error_code: Option<String>,
    error_message: Option<String>,
}

impl Store {
    /// Returns every attempt of `job`, first to last: the recorded retries, an entry for each
    /// attempt that left no record (`lost`), and the attempt the row holds when it is running
    /// or finished.
    pub async fn job_attempts(&self, job: &Job) -> Result<Vec<AttemptRecord>, StoreError> {
        const HISTORY: &str = "SELECT attempt, node, started_at_ms, finished_at_ms, outcome, \
             error_code, error_message FROM job_attempts WHERE job_id = $1 ORDER BY attempt";
        let rows: Vec<AttemptRow> = with_pool!(self, pool => {
            sqlx::query_as(HISTORY).bind(&job.id).fetch_all(pool).await
        })?;
        let mut recorded = rows.into_iter().map(|row| AttemptRecord {
            attempt: row.attempt,
            node: row.node,
            started_at_ms: row.started_at_ms,
            finished_at_ms: Some(row.finished_at_ms),
            outcome: row.outcome,
            error_code: row.error_code,
            error_message: row.error_message,
        });
        // The row's own attempt: running now, or the one that finished the job.
        let current_opt = (job.status == JobStatus::Running || job.status.is_terminal())
            .then_some(job.attempts)
            .filter(|attempts| *attempts > 0);
        let mut history = Vec::new();
        let mut next = recorded.next();
        for attempt in 1..=job.attempts {
            if let Some(record) = next.take_if(|record| record.attempt == attempt) {
                history.push(record);
                next = recorded.next();
            } else if current_opt == Some(attempt) {
                history.push(current_attempt(job));
            } else {
                history.push(AttemptRecord {
                    attempt,
                    node: None,
                    started_at_ms: None,
                    finished_at_ms: None,
                    outcome: "lost".to_owned(),
                    error_code: None,
                    error_message: None,
                });
            }
        }
        Ok(history)
    }
}

/// Returns the attempt the job row holds, running or the one that finished it.
fn current_attempt(job: &Job) -> AttemptRecord {
    let finished = job.status.is_terminal();
    AttemptRecord {
        attempt: job.attempts,
        node: job.lease_owner.clone().or_else(|| job.attempt_node.clone()),
        started_at_ms: job.attempt_started_at_ms,
        finished_at_ms: job.finished_at_ms.filter(|_| finished),
        outcome: job.status.as_str().to_owned(),
        error_code: job.error_code.clone().filter(|_| finished),
        error_message: job.error_message.clone().filter(|_| finished),
    }
}
