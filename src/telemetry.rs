use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::Context;
use bulwark_api::metrics::MetricsExporter;
use bulwark_config::{LogFormat, TelemetryConfig};
use bulwark_core::{MetricSpec, MetricType, MetricUnit, format_rfc3339_ms, now_ms};
use bulwark_store::Store;
use bulwark_store::metrics::PoolStatus;
use bulwark_supervisors::RecentLogs;
use bulwark_supervisors::incident::LOG_LINES_PER_INCIDENT;
use bulwark_supervisors::metrics::IncidentDirRead;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::trace::SdkTracerProvider;
use serde_json::Value;
use tracing::Level;
use tracing::field::{Field, Visit};
use tracing::{info, warn};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::layer::{Context as LayerContext, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

static PROMETHEUS: OnceLock<Result<PrometheusHandle, String>> = OnceLock::new();
static RECENT_LOGS: OnceLock<RecentLogs> = OnceLock::new();

/// Returns the process's ring of recent log lines, which incident files include.
pub fn recent_logs() -> RecentLogs {
    RECENT_LOGS
        .get_or_init(|| RecentLogs::new(LOG_LINES_PER_INCIDENT))
        .clone()
}

/// Copies every log line that passes the filter into [`recent_logs`], as one text line.
struct RecentLogsLayer {
    logs: RecentLogs,
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for RecentLogsLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _context: LayerContext<'_, S>) {
        let metadata = event.metadata();
        let mut line = format!(
            "{} {} {}:",
            format_rfc3339_ms(now_ms()),
            metadata.level(),
            metadata.target()
        );
        event.record(&mut LineVisitor { line: &mut line });
        self.logs.push(line);
    }
}

struct LineVisitor<'a> {
    line: &'a mut String,
}

impl Visit for LineVisitor<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.line, " {value:?}");
        } else {
            let _ = write!(self.line, " {}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            let _ = write!(self.line, " {value}");
        } else {
            let _ = write!(self.line, " {}={value}", field.name());
        }
    }
}

/// What the process's telemetry holds until it ends: the tracer provider, when traces are
/// exported, flushed by [`Telemetry::shutdown`].
#[derive(Debug, Default)]
pub struct Telemetry {
    provider_opt: Option<SdkTracerProvider>,
    settings_opt: Option<crate::traces::TraceSettings>,
}

impl Telemetry {
    /// Exports the spans still queued (waiting at most the exporter's timeout).
    pub fn force_flush(&self) {
        if let Some(provider) = &self.provider_opt
            && let Err(error) = provider.force_flush()
        {
            warn!(%error, "failed to flush the queued spans");
        }
    }

    /// Flushes and stops the trace exporter.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider_opt
            && let Err(error) = provider.shutdown()
        {
            warn!(%error, "failed to stop the trace exporter");
        }
    }
}

/// Who is logging: on every JSON line.
#[derive(Debug, Clone)]
pub struct LogIdentity {
    pub service: String,
    pub node: String,
}

/// Installs the process-wide subscriber of [`subscriber`].
pub fn init(
    config: &TelemetryConfig,
    node_id: &str,
    env: &HashMap<String, String>,
) -> anyhow::Result<Telemetry> {
    let (subscriber, telemetry) = subscriber(config, node_id, env)?;
    subscriber
        .try_init()
        .map_err(|error| anyhow::anyhow!("failed to install log subscriber: {error}"))?;
    if let Some(settings) = &telemetry.settings_opt {
        info!(
            endpoint = settings.endpoint,
            protocol = settings.protocol.as_str(),
            sampler = ?settings.sampler,
            "exporting traces over OTLP"
        );
    }
    Ok(telemetry)
}

/// Returns the subscriber the process logs and traces through: logs as `[telemetry]` says
/// (`RUST_LOG`, when set, overrides the level) and, when the config or the `OTEL_*` variables in
/// `env` ask for them, OpenTelemetry traces of Bulwark's own spans (`bulwark*` targets, debug and
/// above, whatever the log level). Needs a Tokio runtime entered (the gRPC exporter's client).
pub fn subscriber(
    config: &TelemetryConfig,
    node_id: &str,
    env: &HashMap<String, String>,
) -> anyhow::Result<(impl tracing::Subscriber + Send + Sync + 'static, Telemetry)> {
    let settings_opt = crate::traces::TraceSettings::resolve(config, env)
        .map_err(|message| anyhow::anyhow!("invalid trace export settings: {message}"))?;
    let provider_opt = settings_opt
        .as_ref()
        .map(|settings| settings.provider(node_id))
        .transpose()?;
    let identity = LogIdentity {
        service: settings_opt
            .as_ref()
            .map(|settings| settings.service_name.clone())
            .unwrap_or_else(|| config.service_name.clone()),
        node: node_id.to_owned(),
    };
    let ring = RecentLogsLayer {
        logs: recent_logs(),
    };
    // Only Bulwark's spans are exported: the exporter's own HTTP and gRPC clients (and every
    // other dependency) stay out of the traces.
    let otel_layer = provider_opt.as_ref().map(|provider| {
        crate::traces::layer(provider)
            .with_filter(Targets::new().with_target("bulwark", Level::DEBUG))
    });
    let fmt_layer = match config.log_format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .fmt_fields(JsonFields::new())
            .event_format(JsonLines { identity })
            .boxed(),
        LogFormat::Pretty => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .compact()
            .boxed(),
    };
    let subscriber = tracing_subscriber::registry()
        .with(otel_layer)
        .with(fmt_layer.with_filter(log_filter(config, env)?))
        .with(ring.with_filter(log_filter(config, env)?));
    Ok((
        subscriber,
        Telemetry {
            provider_opt,
            settings_opt,
        },
    ))
}

/// Returns the filter of the log lines (printed, and kept for incident files): the configured
/// level, or `RUST_LOG` when set.
fn log_filter(
    config: &TelemetryConfig,
    env: &HashMap<String, String>,
) -> anyhow::Result<EnvFilter> {
    let filter = match env.get("RUST_LOG") {
        Some(directives) => EnvFilter::try_new(directives).context("invalid RUST_LOG")?,
        None => EnvFilter::try_new(&config.log_level)
            .with_context(|| format!("invalid telemetry.log_level `{}`", config.log_level))?,
    };
    // sqlx warns about connection-URL parameters it does not know with their values, and a
    // value may be a password (`sslpassword=`): that one target is kept to errors, whatever
    // the filter says. A more specific directive wins over the level asked for.
    Ok(filter.add_directive(
        "sqlx_postgres::options::parse=error"
            .parse()
            .context("the fixed sqlx directive parses")?,
    ))
}

/// Keys of a JSON log line that events and spans cannot take: a field of that name is written
/// as `fields.<name>`, so every line has unique keys.
const RESERVED_KEYS: &[&str] = &[
    "timestamp",
    "level",
    "target",
    "message",
    "spans",
    "trace_id",
    "span_id",
    "service",
    "version",
    "node",
];

/// One JSON object per line with unique keys: `timestamp`, `level`, `target`, `message`, the
/// event's fields, `spans` (root first, each `{"span": name, ..fields}`), `trace_id` and
/// `span_id` when known (the OpenTelemetry span's, else a `trace_id` field of a span),
/// `service`, `version` and `node`.
#[derive(Debug)]
struct JsonLines {
    identity: LogIdentity,
}

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: tracing::Subscriber + for<'lookup> LookupSpan<'lookup>,
    N: for<'writer> FormatFields<'writer> + 'static,
{
    fn format_event(
        &self,
        context: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        // The OpenTelemetry context first: it may take a span's extensions for writing, so no
        // extension may be held while it is read.
        let otel_opt = context
            .lookup_current()
            .and_then(|span| span_context_of(&span.id()));
        let mut line = serde_json::Map::new();
        let mut timestamp = String::new();
        SystemTime.format_time(&mut Writer::new(&mut timestamp))?;
        line.insert("timestamp".to_owned(), timestamp.into());
        let metadata = event.metadata();
        line.insert("level".to_owned(), metadata.level().as_str().into());
        line.insert("target".to_owned(), metadata.target().into());
        let mut fields = JsonVisitor::default();
        event.record(&mut fields);
        for (key, value) in fields.map {
            insert_unreserved(&mut line, key, value);
        }
        let mut spans = Vec::new();
        let mut span_trace_id_opt = None;
        if let Some(scope) = context.event_scope() {
            for span in scope.from_root() {
                let mut object = serde_json::Map::new();
                object.insert("span".to_owned(), span.name().into());
                let extensions = span.extensions();
                let recorded = extensions
                    .get::<FormattedFields<N>>()
                    .and_then(|formatted| {
                        serde_json::from_str::<serde_json::Map<String, Value>>(&formatted.fields)
                            .ok()
                    })
                    .unwrap_or_default();
                for (key, value) in recorded {
                    if key == "trace_id" {
                        span_trace_id_opt = Some(value.clone());
                    }
                    let key = if key == "span" {
                        "fields.span".to_owned()
                    } else {
                        key
                    };
                    object.insert(key, value);
                }
                spans.push(Value::Object(object));
            }
        }
        if !spans.is_empty() {
            line.insert("spans".to_owned(), Value::Array(spans));
        }
        match otel_opt {
            Some((trace_id, span_id)) => {
                line.insert("trace_id".to_owned(), trace_id.into());
                line.insert("span_id".to_owned(), span_id.into());
            }
            None => {
                if let Some(trace_id) = span_trace_id_opt {
                    line.insert("trace_id".to_owned(), trace_id);
                }
            }
        }
        line.insert("service".to_owned(), self.identity.service.clone().into());
        line.insert("version".to_owned(), env!("CARGO_PKG_VERSION").into());
        line.insert("node".to_owned(), self.identity.node.clone().into());
        let text = serde_json::to_string(&line).map_err(|_| std::fmt::Error)?;
        writeln!(writer, "{text}")
    }
}

/// Returns the trace and span ids of a span that OpenTelemetry traces.
fn span_context_of(id: &tracing::span::Id) -> Option<(String, String)> {
    tracing::dispatcher::get_default(|dispatch| {
        let context = tracing_opentelemetry::get_otel_context(id, dispatch)?;
        let span = context.span();
        let span_context = span.span_context();
        span_context.is_valid().then(|| {
            (
                span_context.trace_id().to_string(),
                span_context.span_id().to_string(),
            )
        })
    })
}

fn insert_unreserved(line: &mut serde_json::Map<String, Value>, key: String, value: Value) {
    let key = if RESERVED_KEYS.contains(&key.as_str()) && key != "message" {
        format!("fields.{key}")
    } else {
        key
    };
    line.insert(key, value);
}

/// An event's fields as JSON values.
#[derive(Debug, Default)]
struct JsonVisitor {
    map: Vec<(String, Value)>,
}

impl Visit for JsonVisitor {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.map
            .push((field.name().to_owned(), format!("{value:?}").into()));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.map.push((field.name().to_owned(), value.into()));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.map.push((field.name().to_owned(), value.into()));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.map.push((field.name().to_owned(), value.into()));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.map.push((field.name().to_owned(), value.into()));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.map.push((field.name().to_owned(), value.into()));
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.map
            .push((field.name().to_owned(), value.to_string().into()));
    }
}

pub const BUILD_INFO: MetricSpec = MetricSpec::gauge(
    "bulwark_build_info",
    MetricUnit::None,
    "Always 1; its label is the running build's version (nodes on two versions show as two series)",
)
.with_labels(&["version"]);
pub const CONFIG_INFO: MetricSpec = MetricSpec::gauge(
    "bulwark_config_info",
    MetricUnit::None,
    "Always 1; its label is a digest of this node's effective configuration (its node id left out, secrets redacted): nodes on two configurations show as two series",
)
.with_labels(&["sha256"]);
pub const STARTUP_SECONDS: MetricSpec = MetricSpec::gauge(
    "bulwark_startup_duration_seconds",
    MetricUnit::Seconds,
    "How long this node took from start to serving: store opened and migrated, tree started, listener bound",
);
pub const SHUTDOWN_SECONDS: MetricSpec = MetricSpec::gauge(
    "bulwark_shutdown_duration_seconds",
    MetricUnit::Seconds,
    "How long this node's last shutdown took to drain and stop (set as it ends; its log line `shutdown complete` carries it too)",
);

/// The process metrics of `metrics-process`, read from `/proc` at every scrape.
const PROCESS_METRICS: &[MetricSpec] = &[
    MetricSpec::counter(
        "process_cpu_seconds_total",
        "CPU time this process used, user and system",
    )
    .with_unit(MetricUnit::Seconds),
    MetricSpec::gauge(
        "process_resident_memory_bytes",
        MetricUnit::Bytes,
        "Resident memory of this process",
    ),
    MetricSpec::gauge(
        "process_virtual_memory_bytes",
        MetricUnit::Bytes,
        "Virtual memory of this process",
    ),
    MetricSpec::gauge(
        "process_virtual_memory_max_bytes",
        MetricUnit::Bytes,
        "The most virtual memory this process may use",
    ),
    MetricSpec::gauge(
        "process_open_fds",
        MetricUnit::Count,
        "Open file descriptors of this process",
    ),
    MetricSpec::gauge(
        "process_max_fds",
        MetricUnit::Count,
        "The most file descriptors this process may open",
    ),
    MetricSpec::gauge(
        "process_start_time_seconds",
        MetricUnit::Seconds,
        "Unix time this process started",
    ),
    MetricSpec::gauge(
        "process_threads",
        MetricUnit::Count,
        "OS threads of this process",
    ),
];

const NODE_METRICS: &[MetricSpec] = &[
    BUILD_INFO,
    CONFIG_INFO,
    STARTUP_SECONDS,
    SHUTDOWN_SECONDS,
    crate::engines::SENTIMENT_DEGRADED,
];

/// Every metric a node exports, by the part of the system that emits it: the source of the
/// recorder's descriptions and buckets, and of `docs/metrics.md`.
pub const CATALOG: &[(&str, &[MetricSpec])] = &[
    ("Node", NODE_METRICS),
    ("Traces", crate::traces::METRICS),
    ("Process", PROCESS_METRICS),
    ("HTTP API", bulwark_api::metrics::METRICS),
    (
        "Authentication and rate limits",
        bulwark_auth::metrics::METRICS,
    ),
    (
        "Jobs, scheduler, dead letters, sentiment calls",
        bulwark_actors::metrics::METRICS,
    ),
    ("Inference", bulwark_ml::metrics::METRICS),
    ("Providers", bulwark_providers::metrics::METRICS),
    ("Audits", bulwark_audit::metrics::METRICS),
    ("RabbitMQ", bulwark_broker::metrics::METRICS),
    ("Store", bulwark_store::metrics::METRICS),
    (
        "Supervision and incidents",
        bulwark_supervisors::metrics::METRICS,
    ),
];

/// How often histogram samples are folded into their buckets, whether or not anyone scrapes.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Installs the Prometheus recorder once per process, describes every metric of [`CATALOG`]
/// (`# HELP`, `# TYPE`, each histogram's buckets), starts its upkeep thread, and returns its
/// handle.
pub fn prometheus() -> anyhow::Result<PrometheusHandle> {
    PROMETHEUS
        .get_or_init(|| {
            let mut builder = PrometheusBuilder::new();
            for spec in CATALOG.iter().flat_map(|(_, specs)| specs.iter()) {
                if let MetricType::Histogram { buckets } = spec.metric_type {
                    builder = builder
                        .set_buckets_for_metric(Matcher::Full(spec.name.to_owned()), buckets)
                        .map_err(|error| format!("invalid buckets for {}: {error}", spec.name))?;
                }
            }
            let handle = builder
                .install_recorder()
                .map_err(|error| format!("failed to install the prometheus recorder: {error}"))?;
            for spec in CATALOG.iter().flat_map(|(_, specs)| specs.iter()) {
                describe(spec);
                // An unlabeled counter exists from the start at zero: alerts on its
                // `increase()` then see its first event (a series born at 1 reads as none).
                if spec.metric_type == MetricType::Counter && spec.labels.is_empty() {
                    metrics::counter!(spec.name).increment(0);
                }
            }
            spawn_upkeep(handle.clone())
                .map_err(|error| format!("failed to start the metrics upkeep: {error}"))?;
            metrics::gauge!(BUILD_INFO.name, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
            Ok(handle)
        })
        .clone()
        .map_err(|message| anyhow::anyhow!(message))
}

fn describe(spec: &MetricSpec) {
    let unit_opt = match spec.unit {
        MetricUnit::Seconds => Some(metrics::Unit::Seconds),
        MetricUnit::Bytes => Some(metrics::Unit::Bytes),
        MetricUnit::Count => Some(metrics::Unit::Count),
        MetricUnit::None => None,
    };
    let key = metrics::KeyName::from_const_str(spec.name);
    let help = metrics::SharedString::const_str(spec.help);
    metrics::with_recorder(|recorder| match spec.metric_type {
        MetricType::Counter => recorder.describe_counter(key, unit_opt, help),
        MetricType::Gauge => recorder.describe_gauge(key, unit_opt, help),
        MetricType::Histogram { .. } => recorder.describe_histogram(key, unit_opt, help),
    });
}

/// Folds histogram samples into buckets every [`UPKEEP_INTERVAL`]: without it they pile up in
/// memory between scrapes (or forever, with no scraper). The recorder is the process's, so the
/// thread is too.
fn spawn_upkeep(handle: PrometheusHandle) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("bulwark-metrics-upkeep".to_owned())
        .spawn(move || {
            loop {
                std::thread::sleep(UPKEEP_INTERVAL);
                handle.run_upkeep();
            }
        })
        .map(drop)
}

/// A node's metrics endpoint: reads what is known only at scrape time (the process's use of
/// CPU, memory and descriptors; the pool's connections), then renders the recorder.
#[derive(Debug)]
pub struct NodeMetrics {
    handle: PrometheusHandle,
    process: metrics_process::Collector,
    store: Store,
    incident_dir: PathBuf,
}

impl NodeMetrics {
    pub fn new(handle: PrometheusHandle, store: Store, incident_dir: &Path) -> NodeMetrics {
        NodeMetrics {
            handle,
            process: metrics_process::Collector::default(),
            store,
            incident_dir: incident_dir.to_path_buf(),
        }
    }
}

impl MetricsExporter for NodeMetrics {
    fn render(&self) -> String {
        self.process.collect();
        PoolStatus::of(&self.store).emit();
        match IncidentDirRead::of(&self.incident_dir) {
            Ok(read) => read.emit(),
            Err(error) => {
                warn!(%error, dir = %self.incident_dir.display(), "failed to read the incident directory's use")
            }
        }
        self.handle.render()
    }
}

/// A node runs with this configuration: its digest labels `bulwark_config_info`.
#[derive(Debug)]
pub struct ConfigInUse<'a> {
    pub config: &'a bulwark_config::Config,
}

impl ConfigInUse<'_> {
    pub fn emit(&self) {
        use sha2::Digest as _;

        let mut shared = self.config.clone();
        shared.jobs.node_id = None;
        // The rendering `bulwark config check` prints: secrets are redacted in it.
        let rendered = toml::to_string(&shared).unwrap_or_default();
        let digest = sha2::Sha256::digest(rendered.as_bytes());
        let short: String = digest
            .iter()
            .take(8)
            .map(|byte| format!("{byte:02x}"))
            .collect();
        metrics::gauge!(CONFIG_INFO.name, "sha256" => short).set(1.0);
    }
}

/// A node started serving.
#[derive(Debug)]
pub struct NodeStarted {
    pub duration: Duration,
}

impl NodeStarted {
    pub fn emit(&self) {
        metrics::gauge!(STARTUP_SECONDS.name).set(self.duration.as_secs_f64());
    }
}

/// A node finished its shutdown.
#[derive(Debug)]
pub struct NodeStopped {
    pub duration: Duration,
}

impl NodeStopped {
    pub fn emit(&self) {
        info!(
            duration_ms = self.duration.as_millis() as u64,
            "shutdown complete"
        );
        metrics::gauge!(SHUTDOWN_SECONDS.name).set(self.duration.as_secs_f64());
    }
}

/// Renders [`CATALOG`] as the Markdown of `docs/metrics.md`.
pub fn catalog_markdown() -> String {
    let mut doc = String::from(
        "# Metrics\n\n\
         Every metric a Bulwark node exports at `GET /metrics` (Prometheus text format). This \
         file is generated from the declarations in the code (`MetricSpec`s, gathered in \
         `src/telemetry.rs`); `make metrics-doc` writes it again and `make test` fails when it \
         is out of date.\n\n\
         - Every series has `# HELP` and `# TYPE`; there are no summaries: latencies and sizes \
         are histograms with the buckets listed here, so they aggregate across nodes.\n\
         - Labels are bounded sets (kinds, statuses, configured providers, operation ids); no \
         label carries an id, a key or an address.\n\
         - Gauges marked *cluster-wide* are read from the shared store, so every node reports \
         the same value: aggregate them with `max`, not `sum`.\n\
         - Histogram samples are folded into their buckets every 5 s by an upkeep thread, \
         whether or not anything scrapes.\n",
    );
    for (section, specs) in CATALOG {
        let _ = write!(
            doc,
            "\n## {section}\n\n| metric | type | unit | labels | meaning |\n| --- | --- | --- | --- | --- |\n"
        );
        for spec in specs.iter() {
            let labels = spec
                .labels
                .iter()
                .map(|label| format!("`{label}`"))
                .collect::<Vec<_>>()
                .join(", ");
            let mut meaning = spec.help.to_owned();
            if let MetricType::Histogram { buckets } = spec.metric_type {
                let bounds = buckets
                    .iter()
                    .map(f64::to_string)
                    .collect::<Vec<_>>()
                    .join(", ");
                let _ = write!(meaning, ". Buckets: {bounds}");
            }
            let _ = writeln!(
                doc,
                "| `{}` | {} | {} | {} | {} |",
                spec.name,
                spec.metric_type.as_str(),
                spec.unit.as_str(),
                labels,
                meaning.replace('|', "\\|")
            );
        }
    }
    doc
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    const METRICS_DOC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/metrics.md");

    /// Proves `docs/metrics.md` lists exactly the metrics the code declares; with
    /// `UPDATE_METRICS_DOC=1` (`make metrics-doc`) it writes the file instead.
    #[test]
    fn metrics_doc_matches_the_catalog() {
        let expected = catalog_markdown();
        if std::env::var_os("UPDATE_METRICS_DOC").is_some() {
            std::fs::write(METRICS_DOC, &expected).expect("docs/metrics.md written");
            return;
        }
        let documented = std::fs::read_to_string(METRICS_DOC).unwrap_or_default();
        assert!(
            documented == expected,
            "docs/metrics.md is out of date with the metrics declared in the code: run `make metrics-doc`"
        );
    }

    /// Proves the catalog follows the naming rules: names are unique and prefixed, counters end
    /// in `_total`, a `_seconds` or `_bytes` name has that unit, histograms have buckets.
    #[test]
    fn catalog_names_follow_the_conventions() {
        let mut names = HashSet::new();
        for spec in CATALOG.iter().flat_map(|(_, specs)| specs.iter()) {
            assert!(names.insert(spec.name), "{} declared twice", spec.name);
            assert!(
                spec.name.starts_with("bulwark_") || spec.name.starts_with("process_"),
                "{}",
                spec.name
            );
            assert!(!spec.help.is_empty(), "{} has no help", spec.name);
            let base = spec.name.trim_end_matches("_total");
            match spec.metric_type {
                MetricType::Counter => assert!(spec.name.ends_with("_total"), "{}", spec.name),
                MetricType::Gauge => assert!(!spec.name.ends_with("_total"), "{}", spec.name),
                MetricType::Histogram { buckets } => assert!(!buckets.is_empty(), "{}", spec.name),
            }
            if base.ends_with("_seconds") {
                assert_eq!(spec.unit, MetricUnit::Seconds, "{}", spec.name);
            }
            if base.ends_with("_bytes") {
                assert_eq!(spec.unit, MetricUnit::Bytes, "{}", spec.name);
            }
        }
    }
}
