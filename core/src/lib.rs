//! Bulwark's shared vocabulary: the words every other crate speaks (error codes, job kinds,
//! trace context, liveness markers and wall-clock time). It depends on no other Bulwark crate,
//! so config, models, store, providers, actors and the API can all use it.
//!
//! The payloads of the job kinds (`SentimentRequest`, `ProviderCompletePayload`) need types of
//! the models and providers crates, so they stay beside `JobExecutor` in `bulwark-actors`.
//!
//! # Layout
//! - `error`: [`ErrorCode`], the error taxonomy clients and operators see, and [`JobError`].
//! - `job_kind`: [`JobKind`], the kinds of job and their wire names, and [`decode_payload`],
//!   the one decoder of job payloads (errors name the offending field).
//! - `job_defaults`: [`JobDefaults`], the priority, timeout and attempts a job gets when its
//!   submission does not say: its kind's (`[jobs.kinds.<kind>]`), else the node's; and
//!   [`KindLimits`], how many of a kind's jobs may run or start, cluster-wide and per node.
//! - `trace`: [`TraceContext`] and the W3C `traceparent` helpers.
//! - `liveness`: [`Liveness`], the busy marker supervisors use to detect hangs, and
//!   [`HandledMessage`], what crash and hang reports say an actor was handling.
//! - `time`: [`now_ms`] (the wall clock, or the shared clock once the node read it) and RFC 3339
//!   parsing and formatting of Unix milliseconds.
//! - `metric`: [`MetricSpec`], how each crate declares its metrics (type, unit, help, labels,
//!   buckets) once, for the recorder and the catalog in `docs/metrics.md`.

mod error;
mod job_defaults;
mod job_kind;
mod liveness;
mod metric;
mod time;
mod trace;

pub use error::{ErrorCode, JobError};
pub use job_defaults::{DEFAULT_JOB_PRIORITY, JobDefaults, KindDefaults, KindGate, KindLimits};
pub use job_kind::{JobKind, decode_payload};
pub use liveness::{BusyGuard, HandledMessage, Liveness};
pub use metric::{
    BATCH_SIZE_BUCKETS, FAST_SECONDS_BUCKETS, LAG_SECONDS_BUCKETS, MetricSpec, MetricType,
    MetricUnit, SLOW_SECONDS_BUCKETS,
};
pub use time::{
    CLOCK_TOLERANCE_MS, follow_shared_clock, format_rfc3339_ms, now_ms, parse_rfc3339_ms,
    wall_clock_ms,
};
pub use trace::{TraceContext, new_traceparent, rename_span, trace_id_of, traceparent_in};
