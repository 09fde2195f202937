//! Bulwark's supervisors: a supervisor actor with three strategies (`one_for_one`,
//! `one_for_all`, `rest_for_one`), restart types, bounded restart intensity with escalation,
//! exponential backoff between restarts, hang detection and operator controls; incident files
//! for every failure; and the tree that wires the subsystems together.
//!
//! ```text
//! root (one_for_one)                 children started in this order, downstream first
//! ├── sentiment (one_for_one)
//! │   └── sentiment-worker-0 .. N-1   each owns an inference thread
//! ├── providers (one_for_one)         only when providers are configured
//! │   └── provider-<name> ...         one per configured provider
//! ├── jobs (one_for_one)
//! │   └── job-runner                  claims batches, runs them through the attempt core
//! ├── scheduler (one_for_one)
//! │   └── scheduler                   fires due schedule slots as jobs, once across nodes
//! ├── dead-letter (one_for_one)
//! │   └── dead-letter                 stores jobs that cannot be done, retries, parks
//! └── ingress (one_for_one)           only with a broker (the broker crate builds its spec)
//!     ├── consumer-<kind>, dlq-consumer-<kind>
//!     └── republisher
//! ```
//!
//! The same tree, with what each child does, is drawn in `docs/architecture.md`.
//!
//! # Layout
//! - `supervisor`: [`SupervisorActor`], [`ChildSpec`], [`SupervisionStrategy`],
//!   [`SupervisorSnapshot`], operator controls ([`control_supervisor`]).
//! - `incident`: [`IncidentSink`] and the incident file format (`incident_v1`).
//! - `tree`: [`BulwarkTree`], the tree above, started downstream first.
//! - `ingress`: [`IngressFactory`], where the broker's `ingress` supervisor joins the tree.
//! - `dead_letters`: the `dead-letter` subsystem (supervisor over the dead-letter actor).
//! - `scheduler`: the `scheduler` subsystem (supervisor over the scheduler actor).
//! - `panics`: the panic hook that tells panics from error returns and keeps backtraces.
//! - `metrics`: metric names and events.

mod dead_letters;
pub mod incident;
mod ingress;
pub mod metrics;
mod panics;
mod providers;
mod scheduler;
mod supervisor;
mod tree;

pub use dead_letters::DeadLetterFactory;
pub use incident::{IncidentKind, IncidentReport, IncidentSettings, IncidentSink, RecentLogs};
pub use ingress::IngressFactory;
pub use panics::{PanicRecord, install_panic_hook, take_panic};
pub use providers::{ProviderSpec, ProvidersSettings, provider_actor_name};
pub use scheduler::SchedulerFactory;
pub use supervisor::{
    ChildSnapshot, ChildSpec, ChildStatus, ControlAction, ControlError, Counters, DrainFn,
    ExitKind, LastExit, RestartIntensity, RestartType, StartFn, SupervisionStrategy,
    SupervisorActor, SupervisorMsg, SupervisorParams, SupervisorSnapshot, SupervisorState,
    control_supervisor, observe_supervisor,
};
pub use tree::{BulwarkTree, SentimentSettings, SupervisionSettings, TreeParams, actor_spec};
