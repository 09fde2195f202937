//! Bulwark's store: the `jobs` table on SQLite (embedded default) or PostgreSQL, and the local
//! queue that claims jobs from it with leases.
//!
//! Both backends run the same SQL where the dialects agree; the few statements that differ
//! (row locking on PostgreSQL) are chosen per backend. Migrations live in `migrations/sqlite`
//! and `migrations/postgres` and run at start and through `bulwark migrate`.
//!
//! # Batch statements
//! A statement that carries a batch as arrays (`UNNEST($2::text[], …)` on PostgreSQL) reads
//! each array through a sub-select: `UNNEST((SELECT $2::text[]), …)`. sqlx prepares every
//! statement; given the arrays themselves, PostgreSQL sizes each custom plan by its batch and
//! prices it below the generic plan, so it never keeps the generic one and plans the statement
//! again on every call (`pg_prepared_statements`: 0 generic, 12 custom plans after 12 calls).
//! Through a sub-select both plans are sized alike, and the generic plan (the same index
//! lookups) is kept from the sixth call. Measured: the completion of a batch was planned 843 to
//! 1,172 times in 1,950 calls of a benchmark run, 42 times since; the RabbitMQ delivery insert
//! took 0.9–1.2 ms a call planned afresh against 0.27–0.42 ms on its generic plan
//! (docs/benchmarks.md).
//!
//! # Layout
//! - `db`: [`Store`], the connection pool for either backend, migrations and health pings.
//! - `jobs`: job rows ([`Job`], [`NewJob`], [`JobStatus`]) and their queries.
//! - `queue`: the [`OutcomeSink`] and [`JobTransport`] traits and [`LocalQueue`], the
//!   database-backed transport (batched claims, group-committed completions).
//! - `job_batches`: many jobs in one statement ([`BatchInsertOutcome`] per job), the path
//!   single submissions take too.
//! - `job_attempts`: a job's attempt history ([`AttemptRecord`]).
//! - `job_control`: cancelling jobs ([`CancelOutcome`]) and pausing kinds ([`PausedKind`]).
//! - `job_graphs`: workflows, jobs that wait for their parents ([`JobGraph`], stored in one
//!   transaction; waits resolved by every node; [`JobGraphView`] for the graph API).
//! - `kind_gates`: the gates of limited kinds, through which their jobs are claimed
//!   ([`GatedClaim`]): running and start-rate limits that hold across nodes.
//! - `broker_jobs`: jobs carried by RabbitMQ: the outbox and claims by id ([`JobRoute`]).
//! - `schedules`: [`Schedule`]s and their runs ([`ScheduleRun`]), claimed by the scheduler.
//! - `audits`: AI-visibility [`Audit`]s, their items and mentions, written idempotently.
//! - `nodes`: node membership: heartbeats, fencing of silent nodes and early reclaim of their
//!   leases ([`Heartbeat`], [`FencedNode`]).
//! - `ops_audit`: the operator audit log ([`OpsAuditEntry`]).
//! - `api_keys`: API keys as keyed digests ([`ApiKeyRow`]), daily provider-call budgets and the
//!   generated server secret.
//! - `dead_letters`: [`DeadLetter`]s, jobs that could not be done, until recovered or purged.
//! - `group_commit`: [`GroupCommit`], concurrent writers sharing one statement and commit.
//! - `metrics`: the store's metrics ([`metrics::METRICS`]) and [`metrics::PoolStatus`].
//! - `error`: [`StoreError`].

mod api_keys;
mod audits;
mod broker_jobs;
mod db;
mod dead_letters;
mod error;
mod group_commit;
mod job_attempts;
mod job_batches;
mod job_control;
mod job_graphs;
mod jobs;
mod kind_gates;
pub mod metrics;
mod nodes;
mod ops_audit;
mod queue;
mod schedules;

pub use api_keys::{ApiKeyRow, NewApiKeyRow, UsageCharge};
pub use audits::{
    Audit, AuditFinish, AuditItem, AuditItemStatus, AuditMention, AuditStatus, NewAudit,
};
pub use broker_jobs::{ClaimedInsert, DeliveredKey, DeliveredRow, JobCompletion, JobRoute};
pub use db::{Backend, Store, StoreParams};
pub use dead_letters::{
    DEAD_LETTER_STATUSES, DeadLetter, DeadLetterCount, DeadLetterFilter, DeadLetterPage,
    LOCAL_QUEUE, NewDeadLetter, RequeuedJob,
};
pub use error::{BoxError, StoreError};
pub use group_commit::{BatchWrite, GroupCommit, GroupCommitParams};
pub use job_attempts::AttemptRecord;
pub use job_batches::BatchInsertOutcome;
pub use job_control::{CancelCount, CancelFilter, CancelOutcome, PausedKind};
pub use job_graphs::{
    GraphError, JobGraph, JobGraphView, ParentFailurePolicy, ParentRef, WAITING_RUN_AT_MS,
    WaitsResolved,
};
pub use jobs::{
    CompleteJobs, DEFAULT_PRIORITY, InsertOutcome, Job, JobFailure, JobFilter, JobPage,
    JobProgress, JobStatus, LeaseRef, LiveCount, MAX_PRIORITY, NewJob, StatusCount,
};
pub use kind_gates::GatedClaim;
pub use nodes::{FencedNode, Heartbeat, NodeRegistration, NodeRow, Registered};
pub use ops_audit::{NewOpsAuditEntry, OpsAuditEntry};
pub use queue::{JobTransport, LocalQueue, LocalQueueParams, OutcomeSink, QUEUED_JOBS_CHANNEL};
pub use schedules::{
    FinishedRun, MisfirePolicy, NewScheduleRun, OverlapPolicy, RunOutcome, RunSettled, Schedule,
    ScheduleAdvance, ScheduleFilter, SchedulePage, ScheduleRun, ScheduleSpec, ScheduleStatus,
    ScheduleTrigger, ScheduleWrite,
};

#[cfg(feature = "testsuite")]
pub mod testsuite;
