//! The process's subscriber: log lines (JSON with unique keys, or pretty) on stderr, the ring
//! of recent lines incident files include, and, when asked for, OpenTelemetry traces of
//! Bulwark's spans (`crate::traces`). Installed once per process by [`init`]; tests build their
//! own with [`subscriber`].

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::OnceLock;

use anyhow::Context;
use bulwark_config::{LogFormat, TelemetryConfig};
use bulwark_core::{format_rfc3339_ms, now_ms};
use bulwark_supervisors::RecentLogs;
use bulwark_supervisors::incident::LOG_LINES_PER_INCIDENT;
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
