use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::SecretUrl;
pub use crate::amqp::AmqpConfig;

/// The whole configuration tree. Every section has defaults in code, so an empty file is valid.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub http: HttpConfig,
    pub database: DatabaseConfig,
    pub amqp: AmqpConfig,
    pub jobs: JobsConfig,
    pub sentiment: SentimentConfig,
    pub supervision: SupervisionConfig,
    pub shutdown: ShutdownConfig,
    pub telemetry: TelemetryConfig,
    pub incidents: crate::IncidentsConfig,
    pub chaos: crate::ChaosConfig,
    pub ops: crate::OpsConfig,
    pub scheduler: crate::SchedulerConfig,
    pub dead_letters: crate::DeadLetterConfig,
    pub providers: crate::ProvidersConfig,
    pub audits: crate::AuditsConfig,
    pub auth: crate::AuthConfig,
}

/// The HTTP API listener.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Address to listen on; port 0 picks a free port.
    pub addr: String,
    /// Largest request body accepted; larger bodies get `413`.
    pub max_body_bytes: usize,
    /// Origins (`https://app.example.com`) whose pages may call the API from a browser. Empty
    /// (the default): no CORS header is ever sent, so browsers keep other sites out.
    pub cors_allowed_origins: Vec<String>,
    /// `[http.tls]`: serve HTTPS (and send HSTS) instead of plain HTTP.
    pub tls: Option<crate::TlsConfig>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            addr: "127.0.0.1:8080".to_owned(),
            max_body_bytes: 1024 * 1024,
            cors_allowed_origins: Vec::new(),
            tls: None,
        }
    }
}

impl HttpConfig {
    /// Returns the parsed listen address; [`crate::load`] has validated it.
    pub fn socket_addr(&self) -> SocketAddr {
        self.addr
            .parse()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 8080)))
    }
}

/// The store: SQLite by default, PostgreSQL at scale.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `sqlite://path` or `postgres://user:password@host/db`.
    pub url: SecretUrl,
    pub max_connections: u32,
    pub connect_timeout_ms: u64,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            url: SecretUrl::new("sqlite://data/bulwark.db"),
            max_connections: 8,
            connect_timeout_ms: 5_000,
        }
    }
}

impl DatabaseConfig {
    /// Returns how long to wait for a connection before reporting the store unavailable.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }
}

/// How jobs are claimed, leased and retried.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JobsConfig {
    /// Jobs one node runs at once.
    pub concurrency: usize,
    /// How often an idle job runner looks for work written by other processes.
    pub poll_interval_ms: u64,
    /// How long a claim is valid; a job whose worker dies is claimed again after it expires.
    pub lease_ms: u64,
    /// Attempts before a job that keeps failing with retriable errors becomes `dead`.
    pub max_attempts: u32,
    /// First retry delay; doubles each attempt up to `retry_backoff_max_ms`.
    pub retry_backoff_ms: u64,
    pub retry_backoff_max_ms: u64,
    /// Identifies this process in lease owners; defaults to `<hostname>-<pid>`.
    pub node_id: Option<String>,
    /// How often a node reads operators' controls: cancels of the jobs it runs, and paused
    /// kinds. A cancel or a pause reaches every node within it.
    pub control_interval_ms: u64,
    /// How long a cancelled running job may take to stop by itself before it is aborted.
    pub cancel_grace_ms: u64,
    /// How often this node writes its heartbeat to the store and looks for silent nodes.
    pub node_heartbeat_ms: u64,
    /// Silence after which another node fences this one and runs its jobs elsewhere (long
    /// before their leases end). At least three heartbeats, and less than `lease_ms`.
    pub node_dead_after_ms: u64,
    /// How long finished jobs are kept.
    pub retention: crate::RetentionConfig,
    /// Per-kind defaults (`[jobs.kinds."audit.run"]`): what a kind's jobs get when their
    /// submission does not say. Kinds are checked against the known ones at start.
    pub kinds: std::collections::BTreeMap<String, KindConfig>,
}

/// What one kind's jobs get by default; unset keys fall back to the node's.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KindConfig {
    /// 0 (lowest) to 9 (highest); unset: 5.
    pub priority: Option<u8>,
    /// 1 ms to a day; unset: no limit.
    pub timeout_ms: Option<u64>,
    /// Unset: `jobs.max_attempts`.
    pub max_attempts: Option<u32>,
    /// At most this many of the kind's jobs running at once across every node sharing the
    /// database (claimed jobs count); unset: no cluster-wide limit. Every node must say the
    /// same: each enforces its own number.
    pub max_running: Option<u32>,
    /// At most this many running at once on one node; unset: only `jobs.concurrency`.
    pub max_running_per_node: Option<u32>,
    /// At most this many starts per second across every node (bursts of up to one second's
    /// worth, at least one); may be below 1 (0.5 is a start every 2 s). Unset: no rate limit.
    pub max_starts_per_second: Option<f64>,
}

/// Returns the first invalid key of `[jobs.kinds.<kind>]` and why (the kind names are the
/// binary's to check: this crate knows no kinds).
pub(crate) fn validate_kinds(
    kinds: &std::collections::BTreeMap<String, KindConfig>,
) -> Result<(), (String, String)> {
    for (kind, defaults) in kinds {
        if let Some(priority) = defaults.priority
            && priority > 9
        {
            return Err((
                format!("jobs.kinds.{kind}.priority"),
                format!("must be 0 to 9, got {priority}"),
            ));
        }
        if let Some(timeout_ms) = defaults.timeout_ms
            && !(1..=86_400_000).contains(&timeout_ms)
        {
            return Err((
                format!("jobs.kinds.{kind}.timeout_ms"),
                format!("must be 1 to 86400000 (a day), got {timeout_ms}"),
            ));
        }
        for (name, value) in [
            ("max_attempts", defaults.max_attempts),
            ("max_running", defaults.max_running),
            ("max_running_per_node", defaults.max_running_per_node),
        ] {
            if value == Some(0) {
                return Err((
                    format!("jobs.kinds.{kind}.{name}"),
                    "must be greater than 0".to_owned(),
                ));
            }
        }
        if let Some(rate) = defaults.max_starts_per_second
            && !(rate.is_finite() && (0.001..=100_000.0).contains(&rate))
        {
            return Err((
                format!("jobs.kinds.{kind}.max_starts_per_second"),
                format!("must be 0.001 to 100000, got {rate}"),
            ));
        }
    }
    Ok(())
}

impl Default for JobsConfig {
    fn default() -> Self {
        JobsConfig {
            concurrency: 16,
            poll_interval_ms: 250,
            lease_ms: 30_000,
            max_attempts: 5,
            retry_backoff_ms: 1_000,
            retry_backoff_max_ms: 60_000,
            node_id: None,
            control_interval_ms: 250,
            cancel_grace_ms: 5_000,
            node_heartbeat_ms: 500,
            node_dead_after_ms: 3_000,
            retention: crate::RetentionConfig::default(),
            kinds: std::collections::BTreeMap::new(),
        }
    }
}

impl JobsConfig {
    pub fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.poll_interval_ms)
    }

    pub fn lease(&self) -> Duration {
        Duration::from_millis(self.lease_ms)
    }

    pub fn node_heartbeat(&self) -> Duration {
        Duration::from_millis(self.node_heartbeat_ms)
    }

    pub fn node_dead_after(&self) -> Duration {
        Duration::from_millis(self.node_dead_after_ms)
    }

    pub fn control_interval(&self) -> Duration {
        Duration::from_millis(self.control_interval_ms)
    }

    pub fn cancel_grace(&self) -> Duration {
        Duration::from_millis(self.cancel_grace_ms)
    }
}

/// The sentiment worker pool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SentimentConfig {
    /// `onnx` (the MiniLM classifier, with the lexicon beside it; if the model or runtime
    /// cannot be loaded the node starts degraded on the lexicon) or `lexicon` (VADER only).
    pub engine: SentimentEngine,
    /// The model folder; unset: `BULWARK_MODEL_DIR`, then `ml-models/models/sentiment-minilm-sst2`.
    pub model_dir: Option<String>,
    /// The ONNX Runtime library; unset: `ORT_DYLIB_PATH`, then `ml-models/cache/onnxruntime/`.
    pub runtime_path: Option<String>,
    /// Intra-op threads of each worker's ONNX session; workers × threads should not pass the
    /// number of cores.
    pub intra_op_threads: usize,
    /// The strategy of requests that do not name one: `primary`, `ensemble` or `consensus`.
    pub strategy: String,
    /// Confidence below which a label is reported neutral; 0 turns the band off.
    pub neutral_threshold: f32,
    /// Weight of the ONNX engine in the `ensemble` strategy; the lexicon gets the rest.
    pub ensemble_onnx_weight: f32,
    /// Worker actors, each with its own inference thread; 0 means one per core.
    pub workers: usize,
    /// Texts waiting for a batch across the pool before callers get `OVERLOADED`.
    pub max_queued: usize,
    /// Deadline for one call into the pool.
    pub call_timeout_ms: u64,
    /// A batch closes at this many texts...
    pub max_batch_texts: usize,
    /// ... or at this many padded tokens (longest text × texts)...
    pub max_batch_tokens: usize,
    /// ... or when its oldest text has waited this long, in microseconds. 0 (the default)
    /// sends whatever is queued as soon as a thread is free: under load texts pile up while
    /// threads are busy and batch themselves, and at low load nobody waits for company.
    pub max_batch_wait_us: u64,
}

impl Default for SentimentConfig {
    fn default() -> Self {
        SentimentConfig {
            engine: SentimentEngine::Onnx,
            model_dir: None,
            runtime_path: None,
            intra_op_threads: 1,
            strategy: "primary".to_owned(),
            neutral_threshold: 0.0,
            ensemble_onnx_weight: 0.7,
            workers: 0,
            max_queued: 16_384,
            call_timeout_ms: 10_000,
            max_batch_texts: 32,
            max_batch_tokens: 4_096,
            max_batch_wait_us: 0,
        }
    }
}

impl SentimentConfig {
    /// Returns the number of workers to start, resolving 0 to the number of cores.
    pub fn num_workers(&self) -> usize {
        if self.workers > 0 {
            return self.workers;
        }
        std::thread::available_parallelism()
            .map(|cores| cores.get())
            .unwrap_or(1)
    }

    pub fn call_timeout(&self) -> Duration {
        Duration::from_millis(self.call_timeout_ms)
    }

    pub fn max_batch_wait(&self) -> Duration {
        Duration::from_micros(self.max_batch_wait_us)
    }
}

/// Which sentiment engine a node serves.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SentimentEngine {
    #[default]
    Onnx,
    Lexicon,
}

/// Restart policy shared by the supervisors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SupervisionConfig {
    /// At most `max_restarts` restarts of one supervisor's children in `within_ms`, then the
    /// supervisor fails and its parent decides.
    pub max_restarts: u32,
    pub within_ms: u64,
    /// The root's own intensity over the subsystems: at most `root_max_restarts` subsystem
    /// restarts in `root_within_ms`, then the node shuts down and exits 1. Wider than a
    /// subsystem's, so one subsystem that keeps escalating (a flood of input that crashes its
    /// workers) is restarted with backoff while the rest of the node serves, instead of
    /// taking the node, and then every node the same input reaches, down with it.
    pub root_max_restarts: u32,
    pub root_within_ms: u64,
    /// Delay before the first restart of a child; doubles per recent restart.
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
    /// A child busy on one message for longer than this is killed and restarted.
    pub hang_timeout_ms: u64,
    /// How often supervisors check their children for hangs.
    pub heartbeat_ms: u64,
}

impl Default for SupervisionConfig {
    fn default() -> Self {
        SupervisionConfig {
            max_restarts: 5,
            within_ms: 10_000,
            root_max_restarts: 20,
            root_within_ms: 60_000,
            backoff_base_ms: 50,
            backoff_max_ms: 5_000,
            hang_timeout_ms: 30_000,
            heartbeat_ms: 1_000,
        }
    }
}

/// Graceful shutdown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShutdownConfig {
    /// The overall deadline of a shutdown, from SIGTERM to exit: running jobs get it less a
    /// teardown reserve (a fifth, at most 5 s) to finish before their leases are released,
    /// and the process exits when it passes, whatever is left. Below the 30 s grace Docker and
    /// Kubernetes give by default.
    pub timeout_ms: u64,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        ShutdownConfig { timeout_ms: 25_000 }
    }
}

impl ShutdownConfig {
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Json,
    Pretty,
}

/// The OTLP transport traces are exported over.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum OtlpProtocol {
    #[default]
    #[serde(rename = "grpc")]
    Grpc,
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
}

impl OtlpProtocol {
    pub fn as_str(self) -> &'static str {
        match self {
            OtlpProtocol::Grpc => "grpc",
            OtlpProtocol::HttpProtobuf => "http/protobuf",
        }
    }
}

/// Logs and traces.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetryConfig {
    pub log_format: LogFormat,
    /// A `tracing` filter directive, e.g. `info` or `bulwark=debug,sqlx=warn`.
    pub log_level: String,
    /// Export OpenTelemetry traces over OTLP. Off by default; the standard `OTEL_*` variables
    /// (`OTEL_TRACES_EXPORTER=otlp`, `OTEL_EXPORTER_OTLP_ENDPOINT`) turn it on too.
    pub traces_enabled: bool,
    /// Where the collector listens; `OTEL_EXPORTER_OTLP_ENDPOINT` (or `…_TRACES_ENDPOINT`) wins.
    /// `None`: the protocol's default (`http://localhost:4317`, `http://localhost:4318`).
    pub otlp_endpoint: Option<String>,
    /// `OTEL_EXPORTER_OTLP_PROTOCOL` (or `…_TRACES_PROTOCOL`) wins.
    pub otlp_protocol: OtlpProtocol,
    /// The share of new traces sampled (0 to 1); a caller's sampled flag is followed.
    /// `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG` win.
    pub trace_sample_ratio: f64,
    /// `service.name` of the spans; `OTEL_SERVICE_NAME` wins.
    pub service_name: String,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            log_format: LogFormat::Json,
            log_level: "info".to_owned(),
            traces_enabled: false,
            otlp_endpoint: None,
            otlp_protocol: OtlpProtocol::Grpc,
            trace_sample_ratio: 1.0,
            service_name: "bulwark".to_owned(),
        }
    }
}
