//! OpenTelemetry traces: which exporter `[telemetry]` and the standard `OTEL_*` variables ask
//! for ([`TraceSettings::resolve`], a pure function of the config and the environment), and the
//! tracer provider that exports the spans of `tracing` over OTLP (gRPC or HTTP/protobuf)
//! through a bounded batch queue on its own thread, so an exporter that fails or hangs never
//! slows a job: spans beyond the queue are dropped. Spans are counted as they end and as they
//! are exported (`bulwark_trace_spans_total{outcome}`), so the drops show as the difference.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context;
use bulwark_config::{OtlpProtocol, TelemetryConfig};
use bulwark_core::{MetricSpec, MetricUnit};
use opentelemetry::KeyValue;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider, SpanData, SpanExporter,
    SpanProcessor,
};

pub const TRACE_SPANS_TOTAL: MetricSpec = MetricSpec::counter(
    "bulwark_trace_spans_total",
    "Spans by outcome: ended (sampled, handed to the export queue), exported, failed (their export failed); ended minus exported minus failed, beyond the 2,048 the queue holds, were dropped",
)
.with_labels(&["outcome"]);
pub const TRACE_EXPORT_SECONDS: MetricSpec = MetricSpec::histogram(
    "bulwark_trace_export_duration_seconds",
    MetricUnit::Seconds,
    bulwark_core::SLOW_SECONDS_BUCKETS,
    "How long one OTLP export of a batch of spans took (on the exporter's thread, never a job's)",
)
.with_labels(&["outcome"]);

/// The trace metrics, for the catalog.
pub const METRICS: &[MetricSpec] = &[TRACE_SPANS_TOTAL, TRACE_EXPORT_SECONDS];

/// Spans waiting for export at most; more are dropped.
const MAX_QUEUE_SIZE: usize = 2_048;

/// How the node exports its spans, once resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceSettings {
    pub protocol: OtlpProtocol,
    /// The full URL spans are sent to (for HTTP, with `/v1/traces`).
    pub endpoint: String,
    pub sampler: SamplerChoice,
    pub service_name: String,
}

/// The sampler, as `OTEL_TRACES_SAMPLER` names them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SamplerChoice {
    AlwaysOn,
    AlwaysOff,
    Ratio(f64),
    ParentBasedAlwaysOn,
    ParentBasedAlwaysOff,
    ParentBasedRatio(f64),
}

impl SamplerChoice {
    fn sampler(self) -> Sampler {
        match self {
            SamplerChoice::AlwaysOn => Sampler::AlwaysOn,
            SamplerChoice::AlwaysOff => Sampler::AlwaysOff,
            SamplerChoice::Ratio(ratio) => Sampler::TraceIdRatioBased(ratio),
            SamplerChoice::ParentBasedAlwaysOn => Sampler::ParentBased(Box::new(Sampler::AlwaysOn)),
            SamplerChoice::ParentBasedAlwaysOff => {
                Sampler::ParentBased(Box::new(Sampler::AlwaysOff))
            }
            SamplerChoice::ParentBasedRatio(ratio) => {
                Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(ratio)))
            }
        }
    }
}

impl TraceSettings {
    /// Returns the export the config and the standard variables ask for, `None` when traces
    /// are off (the default; `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none` turn them
    /// off whatever the config says). Errors name the variable or key at fault.
    pub fn resolve(
        config: &TelemetryConfig,
        env: &HashMap<String, String>,
    ) -> Result<Option<TraceSettings>, String> {
        let var = |name: &str| {
            env.get(name)
                .map(|value| value.trim())
                .filter(|value| !value.is_empty())
        };
        if var("OTEL_SDK_DISABLED").is_some_and(|value| value.eq_ignore_ascii_case("true")) {
            return Ok(None);
        }
        let exporter_asks = match var("OTEL_TRACES_EXPORTER") {
            None => false,
            Some("otlp") => true,
            Some("none") => return Ok(None),
            Some(other) => {
                return Err(format!(
                    "OTEL_TRACES_EXPORTER={other} is not supported: use otlp or none"
                ));
            }
        };
        let signal_endpoint = var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
        let base_endpoint = var("OTEL_EXPORTER_OTLP_ENDPOINT");
        let enabled = config.traces_enabled
            || exporter_asks
            || signal_endpoint.is_some()
            || base_endpoint.is_some();
        if !enabled {
            return Ok(None);
        }
        let protocol_var = [
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ]
        .into_iter()
        .find_map(|name| var(name).map(|value| (name, value)));
        let protocol = match protocol_var {
            None => config.otlp_protocol,
            Some((_, "grpc")) => OtlpProtocol::Grpc,
            Some((_, "http/protobuf")) => OtlpProtocol::HttpProtobuf,
            Some((name, other)) => {
                return Err(format!(
                    "{name}={other} is not supported: use grpc or http/protobuf"
                ));
            }
        };
        let with_signal_path = |base: &str| match protocol {
            OtlpProtocol::Grpc => base.to_owned(),
            OtlpProtocol::HttpProtobuf => format!("{}/v1/traces", base.trim_end_matches('/')),
        };
        let endpoint = match (signal_endpoint, base_endpoint, &config.otlp_endpoint) {
            (Some(endpoint), _, _) => endpoint.to_owned(),
            (None, Some(base), _) => with_signal_path(base),
            (None, None, Some(base)) => with_signal_path(base),
            (None, None, None) => with_signal_path(match protocol {
                OtlpProtocol::Grpc => "http://localhost:4317",
                OtlpProtocol::HttpProtobuf => "http://localhost:4318",
            }),
        };
        // The exporter is built without TLS: spans go to a collector or agent on the node or
        // its private network, which forwards them on over TLS.
        if endpoint.starts_with("https://") {
            return Err(format!(
                "the OTLP endpoint `{endpoint}` needs TLS, which this build's exporter does not speak: send spans to a local collector over http://"
            ));
        }
        if !endpoint.starts_with("http://") {
            return Err(format!(
                "the OTLP endpoint must be an http:// URL, not `{endpoint}`"
            ));
        }
        Ok(Some(TraceSettings {
            protocol,
            endpoint,
            sampler: sampler_choice(
                config.trace_sample_ratio,
                var("OTEL_TRACES_SAMPLER"),
                var("OTEL_TRACES_SAMPLER_ARG"),
            )?,
            service_name: var("OTEL_SERVICE_NAME")
                .map(str::to_owned)
                .unwrap_or_else(|| config.service_name.clone()),
        }))
    }

    /// Builds the tracer provider: the OTLP exporter behind a bounded batch queue, the sampler,
    /// and the resource (service name and version, the node as `service.instance.id`, and
    /// `OTEL_RESOURCE_ATTRIBUTES`). Needs a Tokio runtime entered (the gRPC client's).
    pub fn provider(&self, node_id: &str) -> anyhow::Result<SdkTracerProvider> {
        let exporter = match self.protocol {
            OtlpProtocol::Grpc => opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(&self.endpoint)
                .build(),
            OtlpProtocol::HttpProtobuf => opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(Protocol::HttpBinary)
                .with_endpoint(&self.endpoint)
                .build(),
        }
        .with_context(|| format!("failed to build the OTLP exporter for {}", self.endpoint))?;
        let batch_config = BatchConfigBuilder::default()
            .with_max_queue_size(MAX_QUEUE_SIZE)
            .build();
        let processor = CountingProcessor {
            inner: BatchSpanProcessor::builder(CountingExporter { inner: exporter })
                .with_batch_config(batch_config)
                .build(),
        };
        let resource = Resource::builder()
            .with_service_name(self.service_name.clone())
            .with_attributes([
                KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
                KeyValue::new("service.instance.id", node_id.to_owned()),
            ])
            .build();
        Ok(SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_sampler(self.sampler.sampler())
            .with_resource(resource)
            .build())
    }
}

/// Returns the tracing layer that turns `tracing` spans into OpenTelemetry spans of `provider`.
pub fn layer<S>(provider: &SdkTracerProvider) -> impl tracing_subscriber::Layer<S> + use<S>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    tracing_opentelemetry::layer().with_tracer(provider.tracer("bulwark"))
}

fn sampler_choice(
    config_ratio: f64,
    sampler_opt: Option<&str>,
    arg_opt: Option<&str>,
) -> Result<SamplerChoice, String> {
    let ratio = || -> Result<f64, String> {
        let Some(arg) = arg_opt else {
            return Ok(1.0);
        };
        arg.parse::<f64>()
            .ok()
            .filter(|ratio| (0.0..=1.0).contains(ratio))
            .ok_or_else(|| {
                format!("OTEL_TRACES_SAMPLER_ARG={arg} must be a number between 0 and 1")
            })
    };
    Ok(match sampler_opt {
        None if config_ratio >= 1.0 => SamplerChoice::ParentBasedAlwaysOn,
        None => SamplerChoice::ParentBasedRatio(config_ratio),
        Some("always_on") => SamplerChoice::AlwaysOn,
        Some("always_off") => SamplerChoice::AlwaysOff,
        Some("traceidratio") => SamplerChoice::Ratio(ratio()?),
        Some("parentbased_always_on") => SamplerChoice::ParentBasedAlwaysOn,
        Some("parentbased_always_off") => SamplerChoice::ParentBasedAlwaysOff,
        Some("parentbased_traceidratio") => SamplerChoice::ParentBasedRatio(ratio()?),
        Some(other) => {
            return Err(format!(
                "OTEL_TRACES_SAMPLER={other} is not supported: use always_on, always_off, traceidratio or their parentbased_ forms"
            ));
        }
    })
}

/// The batch processor, counting the sampled spans that ended (each goes to its bounded queue,
/// or is dropped when the queue is full).
#[derive(Debug)]
struct CountingProcessor<P> {
    inner: P,
}

impl<P: SpanProcessor> SpanProcessor for CountingProcessor<P> {
    fn on_start(
        &self,
        span: &mut opentelemetry_sdk::trace::Span,
        context: &opentelemetry::Context,
    ) {
        self.inner.on_start(span, context);
    }

    fn on_end(&self, span: SpanData) {
        metrics::counter!(TRACE_SPANS_TOTAL.name, "outcome" => "ended").increment(1);
        self.inner.on_end(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// The OTLP exporter, counting what it exported and how long each export took.
#[derive(Debug)]
struct CountingExporter<E> {
    inner: E,
}

impl<E: SpanExporter> SpanExporter for CountingExporter<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let num_spans = batch.len() as u64;
        let started = std::time::Instant::now();
        let exported = self.inner.export(batch).await;
        let outcome = if exported.is_ok() {
            "exported"
        } else {
            "failed"
        };
        metrics::counter!(TRACE_SPANS_TOTAL.name, "outcome" => outcome).increment(num_spans);
        metrics::histogram!(TRACE_EXPORT_SECONDS.name, "outcome" => outcome)
            .record(started.elapsed().as_secs_f64());
        exported
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect()
    }

    /// Proves traces are off by default and when the standard variables turn them off, even if
    /// the config turns them on.
    #[test]
    fn traces_are_off_unless_asked_for() {
        let config = TelemetryConfig::default();
        assert_eq!(TraceSettings::resolve(&config, &env(&[])), Ok(None));
        let enabled = TelemetryConfig {
            traces_enabled: true,
            ..TelemetryConfig::default()
        };
        for off in [
            ("OTEL_SDK_DISABLED", "true"),
            ("OTEL_TRACES_EXPORTER", "none"),
        ] {
            assert_eq!(
                TraceSettings::resolve(&enabled, &env(&[off])),
                Ok(None),
                "{off:?}"
            );
        }
    }

    /// Proves the standard variables win over the config: endpoint (the signal's as-is, the
    /// base one with `/v1/traces` for HTTP), protocol, sampler and service name.
    #[test]
    fn standard_variables_win_over_the_config() {
        let config = TelemetryConfig {
            traces_enabled: true,
            otlp_endpoint: Some("http://config:4317".to_owned()),
            trace_sample_ratio: 0.5,
            ..TelemetryConfig::default()
        };
        let from_config = TraceSettings::resolve(&config, &env(&[])).unwrap().unwrap();
        assert_eq!(from_config.protocol, OtlpProtocol::Grpc);
        assert_eq!(from_config.endpoint, "http://config:4317");
        assert_eq!(from_config.sampler, SamplerChoice::ParentBasedRatio(0.5));
        assert_eq!(from_config.service_name, "bulwark");

        let from_env = TraceSettings::resolve(
            &TelemetryConfig::default(),
            &env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
                ("OTEL_TRACES_SAMPLER", "always_on"),
                ("OTEL_SERVICE_NAME", "bulwark-eu"),
            ]),
        )
        .unwrap()
        .expect("an endpoint turns traces on");
        assert_eq!(from_env.protocol, OtlpProtocol::HttpProtobuf);
        assert_eq!(from_env.endpoint, "http://collector:4318/v1/traces");
        assert_eq!(from_env.sampler, SamplerChoice::AlwaysOn);
        assert_eq!(from_env.service_name, "bulwark-eu");

        let signal = TraceSettings::resolve(
            &config,
            &env(&[
                (
                    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                    "http://traces:4318/custom",
                ),
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://ignored:4317"),
            ]),
        )
        .unwrap()
        .unwrap();
        assert_eq!(signal.endpoint, "http://traces:4318/custom");
    }

    /// Proves unsupported or malformed values are refused with the variable named.
    #[test]
    fn bad_values_name_their_variable() {
        let config = TelemetryConfig {
            traces_enabled: true,
            ..TelemetryConfig::default()
        };
        for (pair, named) in [
            (("OTEL_TRACES_EXPORTER", "jaeger"), "OTEL_TRACES_EXPORTER"),
            (
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
                "OTEL_EXPORTER_OTLP_PROTOCOL",
            ),
            (("OTEL_TRACES_SAMPLER", "sometimes"), "OTEL_TRACES_SAMPLER"),
            (
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4317"),
                "endpoint",
            ),
        ] {
            let error = TraceSettings::resolve(&config, &env(&[pair])).unwrap_err();
            assert!(error.contains(named), "{error}");
        }
        let error = TraceSettings::resolve(
            &config,
            &env(&[
                ("OTEL_TRACES_SAMPLER", "traceidratio"),
                ("OTEL_TRACES_SAMPLER_ARG", "2"),
            ]),
        )
        .unwrap_err();
        assert!(error.contains("OTEL_TRACES_SAMPLER_ARG"), "{error}");
    }
}
