//! Workflows: jobs that wait for other jobs (their parents).
//!
//! A graph of jobs is stored in one transaction ([`Store::insert_job_graph`]): the jobs, an
//! edge per parent in `job_dependencies` (kept for the graph view, [`Store::job_graph`]) and,
//! for each job that waits, a row in `job_waits`. A waiting job is stored `queued` with
//! `run_at_ms` at [`WAITING_RUN_AT_MS`] (the year 9999), so the claim and the outbox never
//! read it. Every node's control actor resolves the waits ([`Store::resolve_waiting_jobs`]):
//! once every parent succeeded the job is released (`run_at_ms` = now, its wait deleted); once
//! a parent ended `failed`, `dead` or `cancelled` (or was deleted), the job is cancelled, or,
//! with the `run` policy, released when every parent finished. Its own dependants follow on
//! the next pass.

use std::collections::{BTreeSet, HashSet, VecDeque};

use bulwark_core::{ErrorCode, now_ms};

use crate::db::{Pool, with_pool};
use crate::job_batches::{WriteParams, answer, write_postgres, write_sqlite, written_rows};
use crate::jobs::{JobRow, decode_rows, job_columns};
use crate::{BatchInsertOutcome, Job, JobRoute, NewJob, Store, StoreError};

/// The `run_at_ms` of a job waiting for its parents: 9999-12-31T23:59:59.999Z.
pub const WAITING_RUN_AT_MS: i64 = 253_402_300_799_999;

/// At most this many waits are resolved per pass.
const RESOLVE_BATCH: i64 = 500;

/// What a waiting job does when one of its parents does not succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ParentFailurePolicy {
    /// It ends `cancelled` (and so do its own dependants, in turn).
    #[default]
    Cancel,
    /// It runs anyway once every parent finished.
    Run,
}

impl ParentFailurePolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            ParentFailurePolicy::Cancel => "cancel",
            ParentFailurePolicy::Run => "run",
        }
    }
}

/// A parent of a job of a graph.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParentRef {
    /// Another job of the same graph, by its position.
    Node(usize),
    /// A job already stored, by id.
    Job(String),
}

/// Jobs to store together, each with its parents.
#[derive(Debug, Clone)]
pub struct JobGraph {
    pub jobs: Vec<NewJob>,
    /// One list per job, in order.
    pub parents: Vec<Vec<ParentRef>>,
    pub on_parent_failure: ParentFailurePolicy,
}

/// Why a graph cannot be stored: the job at `index` and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("job {index}: {message}")]
pub struct GraphError {
    pub index: usize,
    pub message: String,
    /// The positions of a cycle, first repeated last (`[1, 3, 2, 1]`: 1 depends on 3, which
    /// depends on 2, which depends on 1); empty for other errors.
    pub cycle: Vec<usize>,
}

impl JobGraph {
    /// Checks that every parent within the graph exists and that the graph has no cycle; a
    /// cycle is reported at one of its jobs, naming the path.
    pub fn check(&self) -> Result<(), GraphError> {
        if self.parents.len() != self.jobs.len() {
            return Err(GraphError {
                index: self.jobs.len().min(self.parents.len()),
                message: "every job needs its list of parents".to_owned(),
                cycle: Vec::new(),
            });
        }
        for (index, parents) in self.parents.iter().enumerate() {
            for parent in parents {
                if let ParentRef::Node(position) = parent
                    && (*position >= self.jobs.len() || *position == index)
                {
                    return Err(GraphError {
                        index,
                        message: format!("parent {position} is not another job of the graph"),
                        cycle: Vec::new(),
                    });
                }
            }
        }
        // Kahn's algorithm: whatever never becomes free of parents lies on or behind a cycle.
        let mut num_waiting: Vec<usize> = self
            .parents
            .iter()
            .map(|parents| node_parents(parents).count())
            .collect();
        let mut free: VecDeque<usize> = (0..self.jobs.len())
            .filter(|index| num_waiting[*index] == 0)
            .collect();
        let mut num_ordered = 0;
        while let Some(done) = free.pop_front() {
            num_ordered += 1;
            for (child, parents) in self.parents.iter().enumerate() {
                for _ in node_parents(parents).filter(|parent| *parent == done) {
                    num_waiting[child] -= 1;
                    if num_waiting[child] == 0 {
                        free.push_back(child);
                    }
                }
            }
        }
        if num_ordered == self.jobs.len() {
            return Ok(());
        }
        let start = (0..self.jobs.len())
            .find(|index| num_waiting[*index] > 0)
            .unwrap_or_default();
        let cycle = self.cycle_from(start, &num_waiting);
        let path: Vec<String> = cycle.iter().map(ToString::to_string).collect();
        Err(GraphError {
            index: start,
            message: format!("depends_on: a cycle ({})", path.join(" -> ")),
            cycle,
        })
    }

    /// Returns a cycle among the jobs still waiting, found by walking parents from `start`,
    /// by position, the first repeated last.
    fn cycle_from(&self, start: usize, num_waiting: &[usize]) -> Vec<usize> {
        let mut path = vec![start];
        let mut current = start;
        loop {
            let next = node_parents(&self.parents[current])
                .find(|parent| num_waiting[*parent] > 0)
                .unwrap_or(start);
            if let Some(position) = path.iter().position(|seen| *seen == next) {
                let mut cycle = path.split_off(position);
                cycle.push(next);
                return cycle;
            }
            path.push(next);
            current = next;
        }
    }
}

fn node_parents(parents: &[ParentRef]) -> impl Iterator<Item = usize> + '_ {
    parents.iter().filter_map(|parent| match parent {
        ParentRef::Node(position) => Some(*position),
        ParentRef::Job(_) => None,
    })
}

impl Job {
    /// Returns true while the job waits for its parents.
    pub fn is_waiting_on_parents(&self) -> bool {
        self.status == crate::JobStatus::Queued && self.run_at_ms == WAITING_RUN_AT_MS
    }
}

/// What one pass of [`Store::resolve_waiting_jobs`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WaitsResolved {
    /// Jobs whose parents all succeeded (or finished, with the `run` policy): due now.
    pub released: Vec<String>,
    /// Jobs cancelled because a parent did not succeed.
    pub cancelled: Vec<String>,
}

/// A job and the jobs around it, parents and dependants, as far as they reach.
#[derive(Debug, Clone, PartialEq)]
pub struct JobGraphView {
    pub jobs: Vec<Job>,
    /// (parent id, job id).
    pub edges: Vec<(String, String)>,
    /// True when the graph has more jobs than were read.
    pub truncated: bool,
}

#[derive(sqlx::FromRow)]
struct WaitRow {
    job_id: String,
    on_parent_failure: String,
    job_status: Option<String>,
    num_parents: i64,
    num_succeeded: i64,
    num_unsuccessful: i64,
}

/// Writes the edges and waits of the created jobs of a graph on `$connection`, inside the
/// caller's transaction.
macro_rules! record_waits {
    ($connection:expr, $graph:expr, $outcomes:expr, $now:expr) => {{
        const EDGE: &str = "INSERT INTO job_dependencies (job_id, parent_id) VALUES ($1, $2) \
             ON CONFLICT DO NOTHING";
        const WAIT: &str = "INSERT INTO job_waits (job_id, on_parent_failure, created_at_ms) \
             VALUES ($1, $2, $3) ON CONFLICT DO NOTHING";
        for (index, parents) in $graph.parents.iter().enumerate() {
            let BatchInsertOutcome::Created(job) = &$outcomes[index] else {
                continue;
            };
            if parents.is_empty() {
                continue;
            }
            for parent in parents {
                let parent_id = match parent {
                    ParentRef::Node(position) => $outcomes[*position].job().id.as_str(),
                    ParentRef::Job(id) => id.as_str(),
                };
                sqlx::query(EDGE)
                    .bind(&job.id)
                    .bind(parent_id)
                    .execute(&mut *$connection)
                    .await?;
            }
            sqlx::query(WAIT)
                .bind(&job.id)
                .bind($graph.on_parent_failure.as_str())
                .bind($now)
                .execute(&mut *$connection)
                .await?;
        }
    }};
}

impl Store {
    /// Stores the jobs of a graph (see [`JobGraph::check`], run first) routed as `route`, in
    /// one transaction: the jobs (one outcome each, in order, as [`Store::insert_job_batch`]
    /// answers), their edges, and a wait for each created job that has parents, which stays
    /// queued until its parents are resolved. A job found under its idempotency key keeps
    /// the edges it was stored with.
    pub async fn insert_job_graph(
        &self,
        graph: &JobGraph,
        route: JobRoute,
    ) -> Result<Vec<BatchInsertOutcome>, StoreError> {
        graph
            .check()
            .map_err(|error| StoreError::Invariant(error.to_string()))?;
        if graph.jobs.is_empty() {
            return Ok(Vec::new());
        }
        let jobs: Vec<NewJob> = graph
            .jobs
            .iter()
            .zip(&graph.parents)
            .map(|(new_job, parents)| {
                let mut new_job = new_job.clone();
                if !parents.is_empty() {
                    new_job.run_at_ms = Some(WAITING_RUN_AT_MS);
                }
                new_job
            })
            .collect();
        let mut rows = written_rows(&jobs);
        let now = now_ms();
        let write = WriteParams { now, route };
        let outcomes = match &self.pool {
            Pool::Postgres(pool) => {
                let mut transaction = pool.begin().await?;
                let written = write_postgres(&mut transaction, &mut rows, write).await?;
                let outcomes = answer(&jobs, &rows, written, now)?;
                record_waits!(transaction, graph, outcomes, now);
                transaction.commit().await?;
                outcomes
            }
            Pool::Sqlite(pool) => {
                let mut transaction = pool.begin().await?;
                let written = write_sqlite(&mut transaction, &rows, write).await?;
                let outcomes = answer(&jobs, &rows, written, now)?;
                record_waits!(transaction, graph, outcomes, now);
                transaction.commit().await?;
                outcomes
            }
        };
        Ok(outcomes)
    }

    /// Resolves the waits whose parents allow it (see the module), at most a few hundred per
    /// pass; safe on every node at once (each change is conditional on the job still
    /// queued).
    pub async fn resolve_waiting_jobs(&self) -> Result<WaitsResolved, StoreError> {
        const WAITS: &str = "SELECT waits.job_id, waits.on_parent_failure, \
             child.status AS job_status, COUNT(*) AS num_parents, \
             SUM(CASE WHEN parent.status = 'succeeded' THEN 1 ELSE 0 END) AS num_succeeded, \
             SUM(CASE WHEN parent.status IS NULL \
             OR parent.status IN ('failed', 'dead', 'cancelled') THEN 1 ELSE 0 END) \
             AS num_unsuccessful \
             FROM (SELECT job_id, on_parent_failure FROM job_waits ORDER BY created_at_ms \
             LIMIT $1) AS waits \
             JOIN job_dependencies edges ON edges.job_id = waits.job_id \
             LEFT JOIN jobs child ON child.id = waits.job_id \
             LEFT JOIN jobs parent ON parent.id = edges.parent_id \
             GROUP BY waits.job_id, waits.on_parent_failure, child.status";
        const RELEASE: &str = "UPDATE jobs SET run_at_ms = $1, updated_at_ms = $1 \
             WHERE id = $2 AND status = 'queued' AND run_at_ms = $3";
        const CANCEL: &str = "UPDATE jobs SET status = 'cancelled', error_code = $1, \
             error_message = $2, finished_at_ms = $3, updated_at_ms = $3 \
             WHERE id = $4 AND status = 'queued'";
        const FORGET: &str = "DELETE FROM job_waits WHERE job_id = $1";
        let rows: Vec<WaitRow> = with_pool!(self, pool => {
            sqlx::query_as(WAITS).bind(RESOLVE_BATCH).fetch_all(pool).await
        })?;
        let mut resolved = WaitsResolved::default();
        for row in rows {
            let waiting = row.job_status.as_deref() == Some("queued");
            let all_finished = row.num_succeeded + row.num_unsuccessful == row.num_parents;
            let run_anyway = row.on_parent_failure == ParentFailurePolicy::Run.as_str();
            let now = now_ms();
            if !waiting {
                // Cancelled by an operator, or deleted: nothing waits any more.
            } else if row.num_succeeded == row.num_parents || (run_anyway && all_finished) {
                let done = with_pool!(self, pool => {
                    sqlx::query(RELEASE)
                        .bind(now)
                        .bind(&row.job_id)
                        .bind(WAITING_RUN_AT_MS)
                        .execute(pool)
                        .await
                        .map(|done| done.rows_affected())
                })?;
                if done > 0 {
                    resolved.released.push(row.job_id.clone());
                }
            } else if row.num_unsuccessful > 0 && !run_anyway {
                let done = with_pool!(self, pool => {
                    sqlx::query(CANCEL)
                        .bind(ErrorCode::Cancelled.as_str())
                        .bind("a job it depends on did not succeed")
                        .bind(now)
                        .bind(&row.job_id)
                        .execute(pool)
                        .await
                        .map(|done| done.rows_affected())
                })?;
                if done > 0 {
                    resolved.cancelled.push(row.job_id.clone());
                }
            } else {
                continue;
            }
            with_pool!(self, pool => {
                sqlx::query(FORGET)
                    .bind(&row.job_id)
                    .execute(pool)
                    .await
                    .map(|done| done.rows_affected())
            })?;
        }
        Ok(resolved)
    }

    /// Returns the jobs `id` depends on, by id; jobs deleted since are missing.
    pub async fn parent_jobs(&self, id: &str) -> Result<Vec<Job>, StoreError> {
        const PARENTS: &str = concat!(
            "SELECT ",
            job_columns!(),
            " FROM jobs WHERE id IN (SELECT parent_id FROM job_dependencies WHERE job_id = $1) \
             ORDER BY id"
        );
        let rows: Vec<JobRow> = with_pool!(self, pool => {
            sqlx::query_as(PARENTS).bind(id).fetch_all(pool).await
        })?;
        decode_rows(rows)
    }

    /// Returns the graph around job `id`: every job reachable through parents and dependants,
    /// up to `max_jobs`, and the edges between them; `None` when no job has this id.
    pub async fn job_graph(
        &self,
        id: &str,
        max_jobs: usize,
    ) -> Result<Option<JobGraphView>, StoreError> {
        const PARENTS: &str = "SELECT parent_id FROM job_dependencies WHERE job_id = $1";
        const CHILDREN: &str = "SELECT job_id FROM job_dependencies WHERE parent_id = $1";
        let Some(start) = self.get_job(id).await? else {
            return Ok(None);
        };
        let mut seen: HashSet<String> = HashSet::from([start.id.clone()]);
        let mut frontier = VecDeque::from([start.id.clone()]);
        let mut jobs = vec![start];
        let mut edges: BTreeSet<(String, String)> = BTreeSet::new();
        let mut truncated = false;
        while let Some(current) = frontier.pop_front() {
            let parents: Vec<String> = with_pool!(self, pool => {
                sqlx::query_scalar(PARENTS).bind(&current).fetch_all(pool).await
            })?;
            let children: Vec<String> = with_pool!(self, pool => {
                sqlx::query_scalar(CHILDREN).bind(&current).fetch_all(pool).await
            })?;
            let neighbours = parents
                .into_iter()
                .map(|parent| (parent.clone(), (parent, current.clone())))
                .chain(
                    children
                        .into_iter()
                        .map(|child| (child.clone(), (current.clone(), child))),
                );
            for (neighbour, edge) in neighbours {
                if seen.contains(&neighbour) {
                    edges.insert(edge);
                    continue;
                }
                if jobs.len() >= max_jobs {
                    truncated = true;
                    continue;
                }
                // A parent deleted by retention leaves its edge without a job.
                let Some(job) = self.get_job(&neighbour).await? else {
                    continue;
                };
                edges.insert(edge);
                seen.insert(neighbour.clone());
                frontier.push_back(neighbour);
                jobs.push(job);
            }
        }
        Ok(Some(JobGraphView {
            jobs,
            edges: edges.into_iter().collect(),
            truncated,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(parents: Vec<Vec<ParentRef>>) -> JobGraph {
        let job = NewJob {
            kind: "sentiment.analyze".to_owned(),
            payload: serde_json::json!({}),
            idempotency_key: None,
            request_id: None,
            trace_id: None,
            max_attempts: 1,
            priority: crate::DEFAULT_PRIORITY,
            run_at_ms: None,
            timeout_ms: None,
            result_ttl_ms: None,
        };
        JobGraph {
            jobs: vec![job; parents.len()],
            parents,
            on_parent_failure: ParentFailurePolicy::Cancel,
        }
    }

    /// Proves a fan-out/fan-in graph passes, a cycle is refused at one of its jobs with the
    /// path named, and a parent outside the graph (or the job itself) is refused.
    #[test]
    fn cycles_and_bad_parents_are_refused() {
        use ParentRef::Node;
        let fan = graph(vec![
            vec![],
            vec![Node(0)],
            vec![Node(0)],
            vec![Node(1), Node(2)],
        ]);
        assert_eq!(fan.check(), Ok(()));
        let cycle = graph(vec![
            vec![],
            vec![Node(0), Node(3)],
            vec![Node(1)],
            vec![Node(2)],
        ])
        .check()
        .unwrap_err();
        assert!(
            cycle.message.contains("cycle (1 -> 3 -> 2 -> 1)"),
            "{cycle}"
        );
        assert_eq!(cycle.cycle, vec![1, 3, 2, 1]);
        let outside = graph(vec![vec![Node(5)]]).check().unwrap_err();
        assert_eq!(outside.index, 0);
        assert!(outside.message.contains("parent 5"), "{outside}");
        let itself = graph(vec![vec![], vec![Node(1)]]).check().unwrap_err();
        assert_eq!(itself.index, 1);
    }
}
