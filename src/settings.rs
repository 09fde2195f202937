//! Each subsystem's settings, built from the config tree by one [`FromConfig`] impl per type.
//! The types live in crates that know nothing of the config (store, ml, actors) or are started
//! by the supervision tree; the binary, which sees both, does the translation.

use std::time::Duration;

use bulwark_actors::RetryPolicy;
use bulwark_config::Config;
use bulwark_core::{JobDefaults, JobKind, KindDefaults, KindLimits};
use bulwark_ml::{BatchingParams, ChaosKnobs, ScoringOptions, Strategy};
use bulwark_store::{LocalQueueParams, StoreParams};
use bulwark_supervisors::{RestartIntensity, SupervisionSettings};

/// Builds a subsystem's settings from the whole config, as `From<&Config>` would (the types
/// and the config are foreign here, so the conversion is a trait of the binary's own).
pub trait FromConfig {
    fn from_config(config: &Config) -> Self;
}

/// Restart policy of every supervisor (`[supervision]`), and the drain an operator's stop or
/// restart allows (`shutdown.timeout_ms`).
impl FromConfig for SupervisionSettings {
    fn from_config(config: &Config) -> Self {
        let supervision = &config.supervision;
        SupervisionSettings {
            intensity: RestartIntensity {
                max_restarts: supervision.max_restarts,
                within: Duration::from_millis(supervision.within_ms),
            },
            root_intensity: RestartIntensity {
                max_restarts: supervision.root_max_restarts,
                within: Duration::from_millis(supervision.root_within_ms),
            },
            backoff_base: Duration::from_millis(supervision.backoff_base_ms),
            backoff_max: Duration::from_millis(supervision.backoff_max_ms),
            hang_timeout: Duration::from_millis(supervision.hang_timeout_ms),
            heartbeat: Duration::from_millis(supervision.heartbeat_ms),
            drain_timeout: config.shutdown.timeout(),
        }
    }
}

/// The database (`[database]`).
impl FromConfig for StoreParams {
    fn from_config(config: &Config) -> Self {
        StoreParams {
            url: config.database.url.expose().to_owned(),
            max_connections: config.database.max_connections,
            connect_timeout: config.database.connect_timeout(),
        }
    }
}

/// The backoff between a failed job's attempts (`jobs.retry_backoff_*`).
impl FromConfig for RetryPolicy {
    fn from_config(config: &Config) -> Self {
        RetryPolicy {
            base: Duration::from_millis(config.jobs.retry_backoff_ms),
            max: Duration::from_millis(config.jobs.retry_backoff_max_ms),
        }
    }
}

/// How the sentiment workers batch texts (`sentiment.max_batch_*`, `sentiment.max_queued`).
impl FromConfig for BatchingParams {
    fn from_config(config: &Config) -> Self {
        BatchingParams {
            max_batch_texts: config.sentiment.max_batch_texts,
            max_batch_tokens: config.sentiment.max_batch_tokens,
            max_wait: config.sentiment.max_batch_wait(),
            max_queued_texts: config.sentiment.max_queued,
        }
    }
}

/// The scoring options of requests that do not choose their own; an unknown strategy name is
/// the default strategy.
impl FromConfig for ScoringOptions {
    fn from_config(config: &Config) -> Self {
        ScoringOptions {
            strategy: config
                .sentiment
                .strategy
                .parse::<Strategy>()
                .unwrap_or_default(),
            neutral_threshold: config.sentiment.neutral_threshold,
            primary_weight: config.sentiment.ensemble_onnx_weight,
        }
    }
}

/// Faults the sentiment workers inject on purpose (`[chaos]`); off by default.
impl FromConfig for ChaosKnobs {
    fn from_config(config: &Config) -> Self {
        ChaosKnobs {
            panic_on_text: config.chaos.panic_on_text.clone(),
            hang_on_text: config.chaos.hang_on_text.clone(),
        }
    }
}

/// Returns the local queue's params for the node `owner` (`jobs.lease_ms`), with the gates of
/// the kinds `job_defaults` limits.
pub fn local_queue_params(
    config: &Config,
    owner: &str,
    job_defaults: &JobDefaults,
) -> LocalQueueParams {
    LocalQueueParams {
        owner: owner.to_owned(),
        lease: config.jobs.lease(),
        gates: job_defaults.gates(),
    }
}

/// Returns the defaults jobs get when their submission does not say (`jobs.max_attempts` and
/// `[jobs.kinds.<kind>]`), or the key of a kind that does not exist.
pub fn job_defaults(config: &Config) -> Result<JobDefaults, bulwark_config::ConfigError> {
    let mut defaults = JobDefaults::new(config.jobs.max_attempts);
    for (kind, kind_config) in &config.jobs.kinds {
        if let Err(error) = JobKind::parse(kind) {
            let message = error
                .message
                .strip_prefix("kind: ")
                .unwrap_or(&error.message)
                .to_owned();
            return Err(bulwark_config::ConfigError::Key {
                key: format!("jobs.kinds.{kind}"),
                message,
            });
        }
        defaults.kinds.insert(
            kind.clone(),
            KindDefaults {
                priority: kind_config.priority,
                timeout_ms: kind_config
                    .timeout_ms
                    .and_then(|timeout_ms| i64::try_from(timeout_ms).ok()),
                max_attempts: kind_config.max_attempts,
                limits: KindLimits {
                    max_running: kind_config.max_running,
                    max_running_per_node: kind_config.max_running_per_node,
                    max_starts_per_second: kind_config.max_starts_per_second,
                },
            },
        );
    }
    Ok(defaults)
}
