//! Bulwark's store: the `jobs` table on SQLite (embedded default) or PostgreSQL, and the local
//! queue that claims jobs from it with leases.
//!
//! Both backends run the same SQL where the dialects agree; the few statements that differ
//! (row locking on PostgreSQL) are chosen per backend. Migrations live in `migrations/sqlite`
//! and `migrations/postgres` and run at start and through `bulwark migrate`.
//!
//! # Layout
//! - `db`: [`Store`], the connection pool for either backend, migrations and health pings.
//! - `jobs`: job rows ([`Job`], [`NewJob`], [`JobStatus`]) and their queries.
//! - `queue`: the [`JobTransport`] trait and [`LocalQueue`], the database-backed transport.
//! - `error`: [`StoreError`].

mod db;
mod error;
mod jobs;
mod queue;

pub use db::{Backend, Store, StoreParams, now_ms};
pub use error::StoreError;
pub use jobs::{
    InsertOutcome, Job, JobFailure, JobFilter, JobPage, JobStatus, NewJob, StatusCount,
};
pub use queue::{JobTransport, LocalQueue, LocalQueueParams};

#[cfg(feature = "testsuite")]
pub mod testsuite;
