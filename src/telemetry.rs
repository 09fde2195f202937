//! The node's metrics: every metric declared in the code ([`CATALOG`]), the Prometheus recorder
//! they are described to (buckets per histogram, upkeep), what a scrape reads first
//! ([`NodeMetrics`]), the node's own series, and `docs/metrics.md` generated from the catalog.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use bulwark_api::metrics::MetricsExporter;
use bulwark_core::{MetricSpec, MetricType, MetricUnit};
use bulwark_store::Store;
use bulwark_store::metrics::PoolStatus;
use bulwark_supervisors::metrics::IncidentDirRead;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing::{info, warn};

static PROMETHEUS: OnceLock<Result<PrometheusHandle, String>> = OnceLock::new();
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
