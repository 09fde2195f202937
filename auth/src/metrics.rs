//! Metric names of authentication and rate limiting, and the events that emit them. Labels
//! are fixed sets: failure reasons and limit names, never keys or addresses.

pub const AUTH_FAILURES_TOTAL: &str = "bulwark_auth_failures_total";
pub const RATE_LIMITED_TOTAL: &str = "bulwark_rate_limited_total";
pub const AUTH_KEYS: &str = "bulwark_auth_keys";

/// A request presented a credential that was refused.
#[derive(Debug)]
pub struct AuthFailed {
    /// `missing`, `unknown`, `expired`, `revoked`, `unavailable` or `scope`.
    pub reason: &'static str,
}

impl AuthFailed {
    pub fn emit(&self) {
        metrics::counter!(AUTH_FAILURES_TOTAL, "reason" => self.reason).increment(1);
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
        metrics::counter!(RATE_LIMITED_TOTAL, "limit" => self.limit).increment(1);
    }
}

/// The key cache was reloaded.
#[derive(Debug)]
pub struct KeysLoaded {
    pub num_keys: usize,
}

impl KeysLoaded {
    pub fn emit(&self) {
        metrics::gauge!(AUTH_KEYS).set(self.num_keys as f64);
    }
}
