use std::sync::OnceLock;

use std::fmt::Write as _;

use anyhow::Context;
use bulwark_config::{LogFormat, TelemetryConfig};
use bulwark_core::{format_rfc3339_ms, now_ms};
use bulwark_supervisors::RecentLogs;
use bulwark_supervisors::incident::LOG_LINES_PER_INCIDENT;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing::field::{Field, Visit};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::{Context as LayerContext, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;

/// Latency buckets, in seconds, for every `*_seconds` histogram.
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

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

/// Installs the process-wide log subscriber. `RUST_LOG`, when set, overrides the configured level.
pub fn init_logging(config: &TelemetryConfig) -> anyhow::Result<()> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(directives) => EnvFilter::try_new(directives).context("invalid RUST_LOG")?,
        Err(_) => EnvFilter::try_new(&config.log_level)
            .with_context(|| format!("invalid telemetry.log_level `{}`", config.log_level))?,
    };
    // sqlx warns about connection-URL parameters it does not know with their values, and a
    // value may be a password (`sslpassword=`): that one target is kept to errors, whatever
    // the filter says. A more specific directive wins over the level asked for.
    let filter = filter.add_directive(
        "sqlx_postgres::options::parse=error"
            .parse()
            .context("the fixed sqlx directive parses")?,
    );
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let ring = RecentLogsLayer {
        logs: recent_logs(),
    };
    let installed = match config.log_format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(true)
            .finish()
            .with(ring)
            .try_init(),
        LogFormat::Pretty => builder.compact().finish().with(ring).try_init(),
    };
    installed.map_err(|error| anyhow::anyhow!("failed to install log subscriber: {error}"))
}

/// Installs the Prometheus recorder once per process and returns its handle.
pub fn prometheus() -> anyhow::Result<PrometheusHandle> {
    PROMETHEUS
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), LATENCY_BUCKETS)
                .map_err(|error| format!("failed to set histogram buckets: {error}"))?;
            builder
                .install_recorder()
                .map_err(|error| format!("failed to install the prometheus recorder: {error}"))
        })
        .clone()
        .map_err(|message| anyhow::anyhow!(message))
}
