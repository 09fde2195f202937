//! Metric names of the HTTP API and the event that emits them. Routes are operation ids
//! (a fixed set), never raw paths.

use std::time::Duration;

pub const HTTP_REQUESTS_TOTAL: &str = "bulwark_http_requests_total";
pub const HTTP_REQUEST_DURATION_SECONDS: &str = "bulwark_http_request_duration_seconds";
/// Jobs of `POST /v1/jobs/batch` by outcome (`created`, `existing`, `conflict`, `invalid`).
pub const JOB_BATCH_ITEMS_TOTAL: &str = "bulwark_job_batch_items_total";

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
            HTTP_REQUESTS_TOTAL,
            "route" => self.route,
            "method" => method.clone(),
            "status" => self.status.to_string()
        )
        .increment(1);
        metrics::histogram!(HTTP_REQUEST_DURATION_SECONDS, "route" => self.route, "method" => method)
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
            metrics::counter!(JOB_BATCH_ITEMS_TOTAL, "status" => status)
                .increment(u64::from(count));
        }
    }
}
