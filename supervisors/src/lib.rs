//! Bulwark's supervisors: a supervisor actor with three strategies (`one_for_one`,
//! `one_for_all`, `rest_for_one`), restart types, bounded restart intensity with escalation,
//! exponential backoff between restarts, hang detection and operator controls; incident files
//! for every failure; and the tree that wires the subsystems together.
//!
//! ```text
//! root (one_for_one)                            children started in this order, downstream first
//! ├── sentiment (one_for_one)
//! │   └── sentiment-worker-<n>  one per worker, each owns an inference thread (ONNX + VADER)
//! ├── providers (one_for_one)                   only when [providers.<name>] are configured
//! │   └── provider-<name>       one actor per provider (breaker, limiter, bulkhead, retries)
//! ├── jobs (one_for_one)
//! │   ├── job-runner            claims jobs, runs each as a task, renews leases, drains
//! │   └── node-membership       writes the node's heartbeat, fences silent nodes, reclaims their jobs
//! ├── scheduler (one_for_one)                   only when scheduler.enabled
//! │   └── scheduler-actor       fires due schedule slots as jobs, once across nodes
//! ├── dead-letter (one_for_one)                 only when dead_letters.enabled
//! │   └── dead-letter-actor     stores jobs that cannot be done, retries, parks
//! ├── retention (one_for_one)                   only when jobs.retention.enabled
//! │   └── job-pruner            deletes finished jobs past their retention, in small batches
//! ├── control (one_for_one)
//! │   └── job-control           signals cancels of running jobs, keeps the paused kinds
//! └── ingress (one_for_one, reconnect backoff)  only with AMQP_URL
//!     ├── consumer-<kind>       one per job kind queue; acks once the outcome is stored
//!     ├── dlq-consumer-<kind>   one per dead-letter queue; stores each message, then acks
//!     └── republisher           publishes rows left in the outbox
//! ```
//!
//! [`render_tree`] draws it from the subsystems' shapes, [`BulwarkTree::start`] assembles it
//! from the same list, and a unit test checks this drawing and `docs/architecture.md`'s
//! against it.
//!
//! # Layout
//! - `supervisor`: [`SupervisorActor`], [`ChildSpec`], [`SupervisionStrategy`],
//!   [`SupervisorSnapshot`], operator controls ([`control_supervisor`]).
//! - `subsystem`: [`SubsystemShape`] (what a subsystem is, as the tree and its drawing read it),
//!   [`SubsystemSpec`] (its children and handle, built into its supervisor), the one builder of
//!   "a supervisor over one actor" ([`single_actor_subsystem`]), [`actor_spec`].
//! - `tree`: [`BulwarkTree`], the tree above assembled from the subsystems in the order of
//!   [`TREE`], and [`render_tree`], which draws it (a unit test checks this drawing and
//!   `docs/architecture.md`'s against it).
//! - one module per subsystem, each with its `SHAPE` and its spec: `sentiment`
//!   ([`SentimentSettings`]), `providers` ([`ProvidersSettings`]), `jobs`, `scheduler`
//!   ([`SchedulerFactory`]), `dead_letters` ([`DeadLetterFactory`]), `retention`, `control`, `ingress`
//!   ([`IngressFactory`]: the broker crate builds its children).
//! - `incident`: [`IncidentSink`] and the incident file format (`incident_v1`).
//! - `panics`: the panic hook that tells panics from error returns and keeps backtraces.
//! - `metrics`: metric names and events.

mod control;
mod dead_letters;
pub mod incident;
mod ingress;
mod jobs;
pub mod metrics;
mod panics;
mod providers;
mod retention;
mod scheduler;
mod sentiment;
mod subsystem;
mod supervisor;
mod tree;

pub use dead_letters::DeadLetterFactory;
pub use incident::{IncidentKind, IncidentReport, IncidentSettings, IncidentSink, RecentLogs};
pub use ingress::{IngressFactory, REPUBLISHER as INGRESS_REPUBLISHER, SHAPE as INGRESS};
pub use panics::{PanicRecord, install_panic_hook, take_panic};
pub use providers::{ProviderSpec, ProvidersSettings, provider_actor_name};
pub use scheduler::SchedulerFactory;
pub use sentiment::SentimentSettings;
pub use subsystem::{
    ChildShape, RestartLimits, SubsystemShape, SubsystemSpec, actor_spec, single_actor_subsystem,
};
pub use supervisor::{
    ChildSnapshot, ChildSpec, ChildStatus, ControlAction, ControlError, Counters, DrainFn,
    ExitKind, LastExit, RestartIntensity, RestartType, StartFn, SupervisionStrategy,
    SupervisorActor, SupervisorMsg, SupervisorParams, SupervisorSnapshot, SupervisorState,
    control_supervisor, observe_supervisor,
};
pub use tree::{BulwarkTree, SupervisionSettings, TREE, TreeParams, render_tree};
