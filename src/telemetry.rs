use std::sync::OnceLock;

use anyhow::Context;
use bulwark_config::{LogFormat, TelemetryConfig};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

/// Latency buckets, in seconds, for every `*_seconds` histogram.
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

static PROMETHEUS: OnceLock<Result<PrometheusHandle, String>> = OnceLock::new();

/// Installs the process-wide log subscriber. `RUST_LOG`, when set, overrides the configured level.
pub fn init_logging(config: &TelemetryConfig) -> anyhow::Result<()> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(directives) => EnvFilter::try_new(directives).context("invalid RUST_LOG")?,
        Err(_) => EnvFilter::try_new(&config.log_level)
            .with_context(|| format!("invalid telemetry.log_level `{}`", config.log_level))?,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let installed = match config.log_format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(true)
            .try_init(),
        LogFormat::Pretty => builder.compact().try_init(),
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
