//! Metric names of the HTTP API and the event that emits them. Routes are operation ids
//! (a fixed set), never raw paths.

use std::time::Duration;

pub const HTTP_REQUESTS_TOTAL: &str = "bulwark_http_requests_total";
pub const HTTP_REQUEST_DURATION_SECONDS: &str = "bulwark_http_request_duration_seconds";

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
