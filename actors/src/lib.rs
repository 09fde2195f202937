//! Bulwark's actors: the job runner that claims and executes jobs, and the sentiment workers
//! that score texts on dedicated inference threads. Actors know the store and the models, and
//! nothing of HTTP; supervisors start them with the `*Params` structs defined here. The
//! vocabulary they share with the rest (error codes, job kinds, trace context, liveness) is in
//! `bulwark-core`.
//!
//! # Layout
//! - `attempt`: [`AttemptCore`], the one job attempt core both transports call: execute under
//!   `catch_unwind`, decide a [`Disposition`], record it through an
//!   [`bulwark_store::OutcomeSink`] with retries.
//! - `job_runner`: [`JobRunnerActor`] claims jobs from a [`bulwark_store::JobTransport`] and
//!   runs each as a task, recording its outcome; [`JobRunnerHandle`] reaches it by name.
//! - `job_kinds`: the job kinds, their payload validation and [`JobExecutor`].
//! - `sentiment_aggregate`: what a `sentiment.aggregate` job makes of its parents' results.
//! - `sentiment_worker`: [`SentimentWorkerActor`], one model on one inference thread.
//! - `sentiment_pool`: [`SentimentPool`], the batching queue in front of the workers.
//! - `provider_actor`: [`ProviderActor`], the supervised front of one configured provider.
//! - `provider_router`: [`ProviderRouter`], reaches provider actors by name, with fallbacks.
//! - `intake`: [`JobIntake`], the one path that creates jobs (stores, then notifies the
//!   local runner or publishes to the broker through a [`JobPublisher`]).
//! - `in_flight`: [`InFlightJobs`], the jobs a node runs as tracked tasks, shared across runner
//!   restarts.
//! - `scheduler`: [`SchedulerActor`] fires due schedule slots as jobs; [`SchedulerHandle`].
//! - `schedule_trigger`: cron/interval/one-time slots, misfire planning, the [`Clock`].
//! - `dead_letter`: [`DeadLetterActor`] stores jobs that cannot be done, retries, parks.
//! - `job_control`: [`JobControlActor`] brings cancels ([`CancelSignals`]) and paused kinds
//!   ([`PausedKinds`]) stored in the database to the node's attempts, and resolves the waits
//!   of jobs on their parents (workflows).
//! - `node_membership`: [`NodeMembershipActor`] writes the node's heartbeat, fences silent
//!   nodes so their jobs run elsewhere within seconds, and stops this node's attempts when it
//!   was fenced itself ([`NodeIdentity`]).
//! - `job_pruner`: [`JobPrunerActor`] deletes finished jobs past their status's retention.
//! - `metrics`: metric names and the events that emit them.
//! - `describe`: [`DescribeMessage`], how every actor's message names itself in incident
//!   reports (what the actor's [`Liveness`] records while it handles it).
//! - `chaos` (the `chaos` feature only): [`Fault`], the panic / error / hang every actor's
//!   message enum wraps in its `Chaos` variant for game days and supervision tests.

pub mod attempt;
#[cfg(feature = "chaos")]
mod chaos;
mod dead_letter;
mod describe;
mod in_flight;
mod intake;
mod job_control;
mod job_kinds;
mod job_pruner;
mod job_runner;
pub mod metrics;
mod node_membership;
mod provider_actor;
mod provider_router;
mod schedule_trigger;
mod scheduler;
mod sentiment_aggregate;
mod sentiment_pool;
mod sentiment_worker;

pub use attempt::{AttemptCore, AttemptReport, Disposition, RetryPolicy};
pub use bulwark_ml::CallerIds;
#[cfg(feature = "chaos")]
pub use chaos::Fault;
pub use dead_letter::{
    DeadLetterActor, DeadLetterHandle, DeadLetterMsg, DeadLetterParams, DeadLetterPolicy,
    DeadLetterReport, DeadLetterState, RequeueError, RequeueTarget,
    refresh_depth as refresh_dead_letter_depth, requeue as requeue_dead_letter,
};
pub use describe::DescribeMessage;
pub use in_flight::InFlightJobs;
pub use intake::{JobIntake, JobPublisher, PublishError, publish_and_mark, publish_batch_and_mark};
pub use job_control::{
    CancelRegistration, CancelSignals, JobControlActor, JobControlMsg, JobControlParams,
    JobControls, PausedKinds,
};
pub use job_kinds::{
    CompletionParams, JobExecutor, MAX_PROMPT_CHARS, ProviderCompletePayload, SentimentRequest,
    SentimentResponse, validate_job, validate_neutral_threshold,
};
pub use job_pruner::{
    JobPrunerActor, JobPrunerHandle, JobPrunerMsg, JobPrunerParams, PruneReport, RetentionPolicy,
};
pub use job_runner::{DrainReport, JobRunnerActor, JobRunnerHandle, JobRunnerMsg, JobRunnerParams};
pub use node_membership::{
    NodeIdentity, NodeMembershipActor, NodeMembershipMsg, NodeMembershipParams,
};
pub use provider_actor::{ProviderActor, ProviderActorParams, ProviderMsg};
pub use provider_router::{ProviderCallError, ProviderRoute, ProviderRouter, ProviderStatus};
pub use schedule_trigger::{
    Clock, FirePlan, ManualClock, PlanParams, SystemClock, TriggerError, first_slot,
    next_slot_after, parse_cron, parse_timezone, plan_fires, validate_trigger,
};
pub use scheduler::{
    PassReport, SchedulerActor, SchedulerError, SchedulerHandle, SchedulerMsg, SchedulerParams,
    SchedulerState, TriggeredRun, slot_idempotency_key,
};
pub use sentiment_pool::{
    PoolError, ScoringChoice, SentimentPool, SentimentPoolParams, with_caller,
};
pub use sentiment_worker::{
    ModelFactory, SentimentWorkerActor, SentimentWorkerMsg, SentimentWorkerParams,
    SentimentWorkerState,
};
