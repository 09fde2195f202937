//! Bulwark's supervisors: a one-for-one supervisor actor with restart types, bounded restart
//! intensity with escalation, exponential backoff between restarts and hang detection, and the
//! tree that wires the subsystems together.
//!
//! ```text
//! root (one_for_one)
//! ├── sentiment (one_for_one)
//! │   ├── sentiment-worker-0 .. N-1   (each owns an inference thread)
//! └── jobs (one_for_one)
//!     └── job-runner
//! ```
//!
//! # Layout
//! - `supervisor`: [`SupervisorActor`], [`ChildSpec`], [`SupervisorSnapshot`].
//! - `tree`: [`BulwarkTree`], the tree above, started downstream first.
//! - `panics`: the panic hook that tells panics from error returns and keeps backtraces.
//! - `metrics`: metric names and events.

pub mod metrics;
mod panics;
mod supervisor;
mod tree;

pub use panics::{PanicRecord, install_panic_hook, take_panic};
pub use supervisor::{
    ChildSnapshot, ChildSpec, Counters, ExitKind, LastExit, RestartIntensity, RestartType, StartFn,
    SupervisorActor, SupervisorMsg, SupervisorParams, SupervisorSnapshot, SupervisorState,
    observe_supervisor,
};
pub use tree::{BulwarkTree, SentimentSettings, SupervisionSettings, TreeParams, actor_spec};
