//! `bulwark-bench auth`: what checking a key and its rate limits costs one request, measured
//! in-process (one HMAC, a cache lookup, the per-IP and per-key buckets) on the configured
//! database. `make bench-auth` runs it beside HTTP loads with and without a key. A measurement
//! tool, not a test.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use anyhow::Context;
use bulwark_auth::{RateLimiters, Scope, Scopes};
use bulwark_config::{Config, RateLimit};
use clap::Args;
use serde::Serialize;

use crate::measure::percentile;

/// Options of `bulwark-bench auth`.
#[derive(Debug, Clone, Args)]
pub struct AuthBenchArgs {
    /// Checks measured, one at a time, after as many for warm-up.
    #[arg(long, default_value_t = 200_000)]
    pub checks: usize,
}

/// The result of `bulwark-bench auth`, printed as JSON.
#[derive(Debug, Serialize)]
pub struct AuthBenchReport {
    pub num_checks: usize,
    /// Key verification, per-IP bucket and per-key bucket, as one request pays them.
    pub check_mean_us: f64,
    pub check_p50_us: f64,
    pub check_p99_us: f64,
    pub check_p999_us: f64,
    pub checks_per_second_one_core: f64,
}

/// Returns the value at `quantile` of sorted nanosecond samples, in microseconds.
fn percentile_us(sorted_ns: &[u64], quantile: f64) -> f64 {
    percentile(sorted_ns, quantile) as f64 / 1_000.0
}

/// Makes a key on the configured database and times `checks` verifications with both rate
/// limits, each timed on its own.
pub async fn run(config: &Config, args: &AuthBenchArgs) -> anyhow::Result<AuthBenchReport> {
    anyhow::ensure!(args.checks > 0, "--checks must be at least 1");
    let store = bulwark::service::open_store(config).await?;
    let env: std::collections::HashMap<String, String> = std::env::vars().collect();
    let authenticator = bulwark::keys::open_authenticator(config, &store, &env).await?;
    let issued = authenticator
        .create_key(&bulwark_auth::NewKey {
            name: "bench-auth".to_owned(),
            scopes: Scopes::new(&[Scope::Submit]),
            expires_at_ms: None,
            daily_provider_calls: None,
        })
        .await
        .context("failed to make the benchmark key")?;
    let mut limits = config.auth.rate_limits.clone();
    limits.submit = RateLimit::new(u32::MAX, u32::MAX);
    limits.per_ip = RateLimit::new(u32::MAX, u32::MAX);
    let limiters = RateLimiters::new(&limits);
    let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let mut durations_ns = Vec::with_capacity(args.checks);
    let started = Instant::now();
    for index in 0..args.checks * 2 {
        let check_started = Instant::now();
        let _ = limiters.check_ip(ip);
        let principal = authenticator
            .verify(&issued.token)
            .await
            .map_err(|failure| anyhow::anyhow!("the benchmark key was refused: {failure:?}"))?;
        let _ = limiters.check_key(Scope::Submit, &principal.key_id);
        let elapsed = check_started.elapsed();
        if index >= args.checks {
            durations_ns.push(u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX));
        }
    }
    let total: Duration = started.elapsed();
    authenticator.revoke_key(&issued.key.id).await?;
    store.close().await;
    durations_ns.sort_unstable();
    let sum_ns: u64 = durations_ns.iter().sum();
    let mean_us = sum_ns as f64 / durations_ns.len() as f64 / 1_000.0;
    Ok(AuthBenchReport {
        num_checks: args.checks,
        check_mean_us: mean_us,
        check_p50_us: percentile_us(&durations_ns, 0.50),
        check_p99_us: percentile_us(&durations_ns, 0.99),
        check_p999_us: percentile_us(&durations_ns, 0.999),
        checks_per_second_one_core: (args.checks * 2) as f64 / total.as_secs_f64(),
    })
}
