//! Metric names of authentication and rate limiting, and the events that emit them. Labels
//! are fixed sets: failure reasons and limit names, never keys or addresses.

use bulwark_core::{MetricSpec, MetricUnit};
pub const AUTH_FAILURES_TOTAL: MetricSpec = MetricSpec::counter(
    "bulwark_auth_failures_total",
    "Requests whose credential was refused, by reason",
)
.with_labels(&["reason"]);
pub const RATE_LIMITED_TOTAL: MetricSpec = MetricSpec::counter(
    "bulwark_rate_limited_total",
    "Requests refused by a rate limit, by limit",
)
.with_labels(&["limit"]);
pub const AUTH_KEYS: MetricSpec = MetricSpec::gauge(
    "bulwark_auth_keys",
    MetricUnit::Count,
    "API keys in this node's key cache",
);

/// A request presented a credential that was refused.
#[derive(Debug)]
pub struct AuthFailed {
    /// `missing`, `unknown`, `expired`, `revoked`, `unavailable` or `scope`.
    pub reason: &'static str,
}

impl AuthFailed {
    pub fn emit(&self) {
        metrics::counter!(AUTH_FAILURES_TOTAL.name, "reason" => self.reason).increment(1);
    }
}

/// A request was refused by a rate limit.
#[derive(Debug)]
pub struct RateLimited {
    /// `read`, `submit`, `operate`, `admin`, `per_ip`, `failed_auth` or `daily_provider_calls`.
    pub limit: &'static str,
}

impl RateLimited {
    pub fn emit(&self) {
        metrics::counter!(RATE_LIMITED_TOTAL.name, "limit" => self.limit).increment(1);
    }
}

/// The key cache was reloaded.
#[derive(Debug)]
pub struct KeysLoaded {
    pub num_keys: usize,
}

impl KeysLoaded {
    pub fn emit(&self) {
        metrics::gauge!(AUTH_KEYS.name).set(self.num_keys as f64);
    }
}

/// Every metric this crate emits, for the recorder's descriptions and `docs/metrics.md`.
pub const METRICS: &[MetricSpec] = &[AUTH_FAILURES_TOTAL, RATE_LIMITED_TOTAL, AUTH_KEYS];
