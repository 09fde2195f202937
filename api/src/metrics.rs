//! Metric names of the HTTP API and the event that emits them. Routes are operation ids
//! (a fixed set), never raw paths.

use std::time::Duration;

use bulwark_core::{FAST_SECONDS_BUCKETS, MetricSpec, MetricUnit};

pub const HTTP_REQUESTS_TOTAL: MetricSpec = MetricSpec::counter(
    "bulwark_http_requests_total",
    "HTTP requests answered, by route (operation id), method and status",
)
.with_labels(&["route", "method", "status"]);
pub const HTTP_REQUEST_DURATION_SECONDS: MetricSpec = MetricSpec::histogram(
    "bulwark_http_request_duration_seconds",
    MetricUnit::Seconds,
    FAST_SECONDS_BUCKETS,
    "How long an HTTP request took to answer",
)
.with_labels(&["route", "method"]);
/// Jobs of `POST /v1/jobs/batch` by outcome (`created`, `existing`, `conflict`, `invalid`).
pub const JOB_BATCH_ITEMS_TOTAL: MetricSpec = MetricSpec::counter(
    "bulwark_job_batch_items_total",
    "Jobs of POST /v1/jobs/batch, by outcome (created, existing, conflict, invalid)",
)
.with_labels(&["status"]);

/// One HTTP request finished.
#[derive(Debug)]
pub struct HttpRequestFinished<'a> {
    pub route: &'static str,
    pub method: &'a str,
    pub status: u16,
    pub duration: Duration,
}

impl HttpRequestFinished<'_> {
    pub fn emit(&self) {
        let method = self.method.to_owned();
        metrics::counter!(
            HTTP_REQUESTS_TOTAL.name,
            "route" => self.route,
            "method" => method.clone(),
            "status" => self.status.to_string()
        )
        .increment(1);
        metrics::histogram!(HTTP_REQUEST_DURATION_SECONDS.name, "route" => self.route, "method" => method)
            .record(self.duration.as_secs_f64());
    }
}

/// A batch of jobs was answered.
#[derive(Debug)]
pub struct JobBatchSubmitted<'a> {
    pub counts: &'a crate::routes::job_batches::JobBatchCounts,
}

impl JobBatchSubmitted<'_> {
    pub fn emit(&self) {
        let counts = self.counts;
        tracing::info!(
            num_created = counts.created,
            num_existing = counts.existing,
            num_conflict = counts.conflict,
            num_invalid = counts.invalid,
            "job batch submitted"
        );
        for (status, count) in [
            ("created", counts.created),
            ("existing", counts.existing),
            ("conflict", counts.conflict),
            ("invalid", counts.invalid),
        ] {
            metrics::counter!(JOB_BATCH_ITEMS_TOTAL.name, "status" => status)
                .increment(u64::from(count));
        }
    }
}

pub const READY: MetricSpec = MetricSpec::gauge(
    "bulwark_ready",
    MetricUnit::None,
    "1 when this node's last readiness check (GET /ready) found it ready, else 0",
);
pub const READY_LAST_SUCCESS_SECONDS: MetricSpec = MetricSpec::gauge(
    "bulwark_ready_last_success_timestamp_seconds",
    MetricUnit::Seconds,
    "Unix time this node's readiness check last found it ready",
);

/// Renders the node's metrics in the Prometheus text format. The binary owns the recorder and
/// reads what is only known at scrape time (process, pool) before rendering.
pub trait MetricsExporter: Send + Sync + std::fmt::Debug {
    fn render(&self) -> String;
}

/// The readiness probe was answered.
#[derive(Debug)]
pub struct ReadinessChecked {
    pub is_ready: bool,
}

impl ReadinessChecked {
    pub fn emit(&self) {
        metrics::gauge!(READY.name).set(if self.is_ready { 1.0 } else { 0.0 });
        if self.is_ready {
            let now_seconds = bulwark_core::now_ms() as f64 / 1000.0;
            metrics::gauge!(READY_LAST_SUCCESS_SECONDS.name).set(now_seconds);
        }
    }
}

/// Every metric this crate emits, for the recorder's descriptions and `docs/metrics.md`.
pub const METRICS: &[MetricSpec] = &[
    HTTP_REQUESTS_TOTAL,
    HTTP_REQUEST_DURATION_SECONDS,
    JOB_BATCH_ITEMS_TOTAL,
    READY,
    READY_LAST_SUCCESS_SECONDS,
];
