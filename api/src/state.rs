use std::time::{Duration, Instant};

use bulwark_actors::{JobIntake, JobRunnerHandle, SentimentPool};
use bulwark_store::Store;
use bulwark_supervisors::SupervisorMsg;
use ractor::ActorRef;

/// Everything the handlers reach. Built by the binary; shared by every route.
#[derive(Debug, Clone)]
pub struct ApiState {
    pub store: Store,
    pub sentiment: SentimentPool,
    pub job_runner: JobRunnerHandle,
    /// Creates jobs: stores the row, then notifies the runner or publishes to the broker.
    pub intake: JobIntake,
    pub root_supervisor: ActorRef<SupervisorMsg>,
    /// `None` when no recorder is installed (some tests); `/metrics` then answers 503.
    pub metrics: Option<std::sync::Arc<dyn crate::metrics::MetricsExporter>>,
    /// Attempts given to jobs created through the API.
    /// What jobs get when their submission does not say: attempts, and per kind a priority
    /// and a timeout.
    pub job_defaults: bulwark_core::JobDefaults,
    /// Provider names an audit may ask; empty when no providers are configured.
    pub audit_providers: Vec<String>,
    pub node_id: String,
    pub started_at: Instant,
    /// How long readiness waits for the database before calling it down.
    pub dependency_timeout: Duration,
    /// The engines the sentiment workers run, e.g. `onnx+lexicon`.
    pub sentiment_engines: String,
    pub sentiment_model_version: Option<String>,
    /// Why the configured ONNX engine is not served; `None` when it is (or was not asked for).
    pub sentiment_degraded_reason: Option<String>,
    /// Where failures are reported and incident files are read; `None` in some tests.
    pub incidents: Option<bulwark_supervisors::IncidentSink>,
    /// API keys, scopes and rate limits.
    pub auth: std::sync::Arc<crate::ApiAuth>,
    /// Reaches the scheduler after schedule changes; `None` when this node runs none.
    pub scheduler: Option<bulwark_actors::SchedulerHandle>,
    /// Reaches the dead-letter actor; `None` when this node runs none.
    pub dead_letters: Option<bulwark_actors::DeadLetterHandle>,
    /// Reaches the provider actors; `None` when no provider is configured.
    pub providers: Option<bulwark_actors::ProviderRouter>,
    /// The kinds this node holds paused (refreshed by its job control actor).
    pub paused_kinds: bulwark_actors::PausedKinds,
    /// Set when the node begins to shut down: `/ready` answers 503 `draining` from then on.
    pub draining: Draining,
}

/// Whether the node is shutting down. Shared by the binary, which sets it on SIGTERM, and the
/// API, which then answers `/ready` with 503 and asks clients to reconnect elsewhere.
#[derive(Debug, Clone, Default)]
pub struct Draining(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl Draining {
    /// Marks the node as draining, for good.
    pub fn begin(&self) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn is_draining(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}
