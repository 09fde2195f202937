//! Wiring of the scheduler and the dead-letter actor: their params, built from the config.

use std::sync::Arc;

use std::time::Duration;

use bulwark_actors::{
    DeadLetterParams, DeadLetterPolicy, JobIntake, JobPrunerParams, JobPublisher, RetentionPolicy,
    RetryPolicy, SchedulerParams, SystemClock,
};
use bulwark_config::{Config, RetentionConfig, SchedulerConfig};
use bulwark_core::Liveness;
use bulwark_store::Store;
use bulwark_supervisors::{DeadLetterFactory, SchedulerFactory};

/// Returns how the tree builds the scheduler, or `None` when `scheduler.enabled` is false.
/// Scheduled jobs go through `broker_intake` when RabbitMQ carries jobs, otherwise into the
/// local queue.
pub fn scheduler_factory(
    config: &Config,
    store: &Store,
    node: &crate::service::NodeContext,
    broker_intake: Option<JobIntake>,
) -> Option<SchedulerFactory> {
    if !config.scheduler.enabled {
        return None;
    }
    let settings = config.scheduler.clone();
    let store = store.clone();
    let owner = node.node_id.clone();
    let job_defaults = node.job_defaults.clone();
    Some(Box::new(move |job_runner| {
        let intake = broker_intake.unwrap_or_else(|| JobIntake::local(store.clone(), job_runner));
        SchedulerParams {
            job_defaults,
            ..scheduler_params(&settings, store, owner, intake)
        }
    }))
}

/// Returns a scheduler's params from `[scheduler]`: it claims slots as `owner` and submits
/// their jobs through `intake`, each with one attempt (set `job_defaults` for more).
pub fn scheduler_params(
    settings: &SchedulerConfig,
    store: Store,
    owner: String,
    intake: JobIntake,
) -> SchedulerParams {
    SchedulerParams {
        intake,
        store,
        clock: Arc::new(SystemClock),
        owner,
        max_wait: settings.max_wait(),
        claim_batch: settings.claim_batch,
        claim_lease: settings.claim_lease(),
        misfire_grace: settings.misfire_grace(),
        max_catch_up: settings.max_catch_up as usize,
        concurrency: settings.concurrency as usize,
        job_defaults: bulwark_core::JobDefaults::new(1),
        liveness: Liveness::default(),
    }
}

/// Returns how dead letters are retried, from `[dead_letters]`.
pub fn dead_letter_policy(config: &Config) -> DeadLetterPolicy {
    let settings = &config.dead_letters;
    DeadLetterPolicy {
        max_retries: settings.max_retries,
        retry: RetryPolicy {
            base: Duration::from_millis(settings.retry_backoff_ms),
            max: Duration::from_millis(settings.retry_backoff_max_ms),
        },
    }
}

/// Returns how the tree builds the dead-letter actor, or `None` when `dead_letters.enabled`
/// is false. Requeued broker jobs and messages go through `publisher` when RabbitMQ carries
/// jobs.
/// Returns the job pruner's params; `None` when `jobs.retention.enabled` is off.
pub fn pruner_params(config: &Config, store: &Store) -> Option<JobPrunerParams> {
    let retention = &config.jobs.retention;
    if !retention.enabled {
        return None;
    }
    Some(JobPrunerParams {
        store: store.clone(),
        policy: RetentionPolicy {
            succeeded: RetentionConfig::age(retention.succeeded_ms),
            failed: RetentionConfig::age(retention.failed_ms),
            dead: RetentionConfig::age(retention.dead_ms),
            cancelled: RetentionConfig::age(retention.cancelled_ms),
            batch_size: retention.batch_size,
            max_batches_per_pass: retention.max_batches_per_pass,
        },
        interval: retention.interval(),
        liveness: Liveness::default(),
    })
}

pub fn dead_letter_factory(
    config: &Config,
    store: &Store,
    publisher: Option<Arc<dyn JobPublisher>>,
) -> Option<DeadLetterFactory> {
    if !config.dead_letters.enabled {
        return None;
    }
    let settings = config.dead_letters.clone();
    let policy = dead_letter_policy(config);
    let store = store.clone();
    Some(Box::new(move |job_runner| DeadLetterParams {
        store,
        scan_interval: settings.scan_interval(),
        recovery_interval: settings.recovery_interval(),
        policy,
        batch_size: settings.batch_size,
        job_runner,
        publisher,
        liveness: Liveness::default(),
    }))
}
