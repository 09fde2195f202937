use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The scheduler: fires schedule slots as jobs (`[scheduler]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SchedulerConfig {
    /// Run the scheduler actor on this node. Every node may run it: slots fire once anyway.
    pub enabled: bool,
    /// The longest the scheduler sleeps between passes. It wakes earlier, at the earliest due
    /// slot of any active schedule and when a schedule changes through this node's API; this
    /// bound is how soon it sees schedules changed through other nodes, a `queue_one` slot
    /// whose previous run finished, finished runs to count, and expired claims. Named
    /// `tick_ms` before the scheduler woke on due slots (a fixed pass interval); the loader
    /// still reads that name.
    pub max_wait_ms: u64,
    /// Schedules claimed per batch.
    pub claim_batch: u32,
    /// How long a claim on a schedule lasts if its node dies mid-pass.
    pub claim_lease_ms: u64,
    /// A slot later than this is a misfire, handled by the schedule's misfire policy.
    pub misfire_grace_ms: u64,
    /// `catch_up` fires at most this many missed slots per schedule and pass.
    pub max_catch_up: u32,
    /// Schedules handled concurrently within a batch.
    pub concurrency: u32,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            enabled: true,
            max_wait_ms: 250,
            claim_batch: 200,
            claim_lease_ms: 30_000,
            misfire_grace_ms: 60_000,
            max_catch_up: 100,
            concurrency: 8,
        }
    }
}

impl SchedulerConfig {
    pub fn max_wait(&self) -> Duration {
        Duration::from_millis(self.max_wait_ms)
    }

    pub fn claim_lease(&self) -> Duration {
        Duration::from_millis(self.claim_lease_ms)
    }

    pub fn misfire_grace(&self) -> Duration {
        Duration::from_millis(self.misfire_grace_ms)
    }
}

/// The dead-letter actor: stores jobs that cannot be done, retries the retriable ones, parks
/// the rest for an operator (`[dead_letters]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeadLetterConfig {
    pub enabled: bool,
    /// Time between scans of the jobs table for jobs that ended `dead` or `failed`.
    pub scan_interval_ms: u64,
    /// Time between recovery passes over stored dead letters.
    pub recovery_interval_ms: u64,
    /// Automatic retries of a retriable dead letter before it is parked.
    pub max_retries: u32,
    /// The first retry waits this long; each further one twice as long.
    pub retry_backoff_ms: u64,
    pub retry_backoff_max_ms: u64,
    /// Rows read per scan or recovery batch.
    pub batch_size: u32,
}

impl Default for DeadLetterConfig {
    fn default() -> Self {
        DeadLetterConfig {
            enabled: true,
            scan_interval_ms: 1_000,
            recovery_interval_ms: 5_000,
            max_retries: 3,
            retry_backoff_ms: 30_000,
            retry_backoff_max_ms: 3_600_000,
            batch_size: 500,
        }
    }
}

impl DeadLetterConfig {
    pub fn scan_interval(&self) -> Duration {
        Duration::from_millis(self.scan_interval_ms)
    }

    pub fn recovery_interval(&self) -> Duration {
        Duration::from_millis(self.recovery_interval_ms)
    }
}

/// How long finished jobs are kept (`[jobs.retention]`): the job pruner deletes older ones in
/// small batches. An age of 0 keeps that status for ever.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    pub enabled: bool,
    /// Age, since it finished, after which a succeeded job is deleted (7 days).
    pub succeeded_ms: u64,
    /// ... a failed job (30 days).
    pub failed_ms: u64,
    /// ... a dead job (30 days). A dead or failed job with an open dead letter is kept.
    pub dead_ms: u64,
    /// ... a cancelled job (7 days).
    pub cancelled_ms: u64,
    /// Time between prune passes.
    pub interval_ms: u64,
    /// Rows deleted per statement, 1 to 10,000.
    pub batch_size: u32,
    /// Statements per status per pass at most; the rest waits for the next pass.
    pub max_batches_per_pass: u32,
}

const DAY_MS: u64 = 24 * 60 * 60 * 1000;

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            enabled: true,
            succeeded_ms: 7 * DAY_MS,
            failed_ms: 30 * DAY_MS,
            dead_ms: 30 * DAY_MS,
            cancelled_ms: 7 * DAY_MS,
            interval_ms: 60_000,
            batch_size: 500,
            max_batches_per_pass: 100,
        }
    }
}

impl RetentionConfig {
    pub fn interval(&self) -> Duration {
        Duration::from_millis(self.interval_ms)
    }

    /// Returns a retention as a duration; `None` (keep for ever) for 0.
    pub fn age(age_ms: u64) -> Option<Duration> {
        (age_ms > 0).then(|| Duration::from_millis(age_ms))
    }
}

/// Returns the first invalid key of `[jobs.retention]` and why.
pub(crate) fn validate_retention(
    retention: &RetentionConfig,
) -> Result<(), (&'static str, String)> {
    if retention.interval_ms == 0 {
        return Err((
            "jobs.retention.interval_ms",
            "must be greater than 0".to_owned(),
        ));
    }
    if !(1..=10_000).contains(&retention.batch_size) {
        return Err((
            "jobs.retention.batch_size",
            format!("must be 1 to 10000, got {}", retention.batch_size),
        ));
    }
    if retention.max_batches_per_pass == 0 {
        return Err((
            "jobs.retention.max_batches_per_pass",
            "must be greater than 0".to_owned(),
        ));
    }
    Ok(())
}

/// Returns the first invalid key of the scheduling sections and why.
pub(crate) fn validate_scheduling(
    scheduler: &SchedulerConfig,
    dead_letters: &DeadLetterConfig,
) -> Result<(), (&'static str, String)> {
    let positive: [(&'static str, u64); 9] = [
        ("scheduler.max_wait_ms", scheduler.max_wait_ms),
        ("scheduler.claim_batch", u64::from(scheduler.claim_batch)),
        ("scheduler.claim_lease_ms", scheduler.claim_lease_ms),
        ("scheduler.concurrency", u64::from(scheduler.concurrency)),
        (
            "dead_letters.scan_interval_ms",
            dead_letters.scan_interval_ms,
        ),
        (
            "dead_letters.recovery_interval_ms",
            dead_letters.recovery_interval_ms,
        ),
        (
            "dead_letters.retry_backoff_ms",
            dead_letters.retry_backoff_ms,
        ),
        (
            "dead_letters.retry_backoff_max_ms",
            dead_letters.retry_backoff_max_ms,
        ),
        (
            "dead_letters.batch_size",
            u64::from(dead_letters.batch_size),
        ),
    ];
    for (key, value) in positive {
        if value == 0 {
            return Err((key, "must be greater than 0".to_owned()));
        }
    }
    if scheduler.claim_lease_ms <= scheduler.max_wait_ms {
        return Err((
            "scheduler.claim_lease_ms",
            "must be longer than scheduler.max_wait_ms".to_owned(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves a claim lease must outlast the longest wait, naming both keys.
    #[test]
    fn claim_lease_must_outlast_max_wait() {
        let scheduler = SchedulerConfig {
            max_wait_ms: 30_000,
            claim_lease_ms: 30_000,
            ..SchedulerConfig::default()
        };
        let (key, message) =
            validate_scheduling(&scheduler, &DeadLetterConfig::default()).unwrap_err();
        assert_eq!(key, "scheduler.claim_lease_ms");
        assert!(message.contains("scheduler.max_wait_ms"), "{message}");
    }
}
