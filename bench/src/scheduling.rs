//! `bulwark-bench scheduler` (slot lag with many active interval schedules) and
//! `bulwark-bench dlq` (dead-letter requeue rate), on the configured database. Measurement
//! tools, not tests.

use std::time::{Duration, Instant};

use anyhow::Context;
use bulwark_actors::{
    DeadLetterActor, DeadLetterHandle, DeadLetterParams, DeadLetterPolicy, JobIntake,
    JobRunnerHandle, RequeueTarget, RetryPolicy, SchedulerActor, requeue_dead_letter,
};
use bulwark_config::Config;
use bulwark_core::{Liveness, now_ms};
use bulwark_store::{
    DeadLetterFilter, JobFailure, JobStatus, LeaseRef, MisfirePolicy, NewJob, OverlapPolicy,
    ScheduleSpec, ScheduleStatus, ScheduleTrigger, Store,
};
use clap::Args;
use futures::StreamExt;
use ractor::Actor;
use serde::Serialize;
use serde_json::json;

use crate::measure::percentile;

/// Slots in the first seconds after the scheduler starts are not measured.
const WARM_UP_MS: i64 = 10_000;
/// The scheduler has caught up with the start-up backlog once its earliest unhandled slot is
/// less than this old.
const CAUGHT_UP_BEHIND_MS: i64 = 1_000;
/// How long the scheduler may take to catch up before the benchmark gives up.
const MAX_CATCH_UP: Duration = Duration::from_secs(300);
/// Benchmark schedules stored at once.
const CREATE_CONCURRENCY: usize = 16;

/// Options of `bulwark-bench scheduler`.
#[derive(Debug, Clone, Args)]
pub struct SchedulerBenchArgs {
    /// Active interval schedules, their slots spread evenly over the interval.
    #[arg(long, default_value_t = 10_000)]
    pub schedules: usize,
    /// Interval of every schedule, in milliseconds.
    #[arg(long, default_value_t = 60_000)]
    pub every_ms: i64,
    /// How long lags are recorded, in seconds, once the warm-up is over and the scheduler has
    /// caught up with the slots that fell due while the schedules were being created.
    #[arg(long, default_value_t = 120)]
    pub seconds: u64,
}

/// The result of `bulwark-bench scheduler`, printed as JSON.
#[derive(Debug, Serialize)]
pub struct SchedulerBenchReport {
    pub backend: &'static str,
    pub num_schedules: usize,
    pub every_ms: i64,
    /// From the scheduler's start until it had caught up with the start-up backlog.
    pub catch_up_ms: i64,
    /// The longest sleep between passes (`scheduler.max_wait_ms`); passes also start at each
    /// due slot, so this no longer bounds the lag from below.
    pub max_wait_ms: u64,
    pub fires_per_second_offered: f64,
    pub num_runs: usize,
    pub lag_p50_ms: i64,
    pub lag_p99_ms: i64,
    pub lag_max_ms: i64,
}

/// Creates the schedules, runs one scheduler actor on the wall clock, and reports the lag from
/// each slot to its job's creation. Wants a database of its own: the scheduler fires every
/// active schedule in it.
pub async fn scheduler(
    config: &Config,
    args: &SchedulerBenchArgs,
) -> anyhow::Result<SchedulerBenchReport> {
    let store = bulwark::service::open_store(config).await?;
    let start_ms = now_ms() + 5_000;
    let prefix = uuid::Uuid::now_v7().simple().to_string();
    let specs = (0..args.schedules).map(|index| {
        let anchor_ms = start_ms + (index as i64 * args.every_ms) / args.schedules as i64;
        ScheduleSpec {
            name: format!("bench-{prefix}-{index}"),
            kind: "sentiment.analyze".to_owned(),
            payload: json!({"texts": ["benchmark"]}),
            trigger: ScheduleTrigger::Interval {
                every_ms: args.every_ms,
                anchor_ms,
            },
            status: ScheduleStatus::Active,
            misfire_policy: MisfirePolicy::FireOnce,
            catch_up_window_ms: 0,
            overlap_policy: OverlapPolicy::Allow,
            max_consecutive_failures: 0,
            next_fire_at_ms: Some(anchor_ms),
        }
    });
    let mut inserts = futures::stream::iter(specs)
        .map(|spec| {
            let store = store.clone();
            async move { store.insert_schedule(&spec, now_ms()).await }
        })
        .buffer_unordered(CREATE_CONCURRENCY);
    while let Some(inserted) = inserts.next().await {
        inserted.context("failed to create a benchmark schedule")?;
    }
    let started_ms = now_ms();
    let name = format!("bench-scheduler-{prefix}");
    let (actor, handle) = Actor::spawn(
        Some(name),
        SchedulerActor,
        bulwark::scheduling::scheduler_params(
            &config.scheduler,
            store.clone(),
            format!("bench-{prefix}"),
            JobIntake::local(store.clone(), JobRunnerHandle::new("bench-no-runner")),
        ),
    )
    .await
    .context("failed to start the scheduler")?;
    // Slots that came due while the schedules were being created are a backlog, not lag: only
    // slots after a warm-up from the scheduler's start, and after it caught up, are measured.
    let caught_up_ms = wait_until_caught_up(&store).await?;
    let measured_from_ms = caught_up_ms.max(started_ms.max(start_ms) + WARM_UP_MS);
    let measure_until_ms = measured_from_ms + Duration::from_secs(args.seconds).as_millis() as i64;
    tokio::time::sleep(Duration::from_millis(
        measure_until_ms.saturating_sub(now_ms()).max(0) as u64,
    ))
    .await;
    actor.stop(None);
    let _ = handle.await;
    let mut lags = store.schedule_run_lags_ms(measured_from_ms).await?;
    lags.sort_unstable();
    store.close().await;
    Ok(SchedulerBenchReport {
        backend: store.backend().as_str(),
        num_schedules: args.schedules,
        every_ms: args.every_ms,
        catch_up_ms: caught_up_ms - started_ms,
        max_wait_ms: config.scheduler.max_wait_ms,
        fires_per_second_offered: args.schedules as f64 * 1_000.0 / args.every_ms as f64,
        num_runs: lags.len(),
        lag_p50_ms: percentile(&lags, 0.50),
        lag_p99_ms: percentile(&lags, 0.99),
        lag_max_ms: lags.last().copied().unwrap_or(0),
    })
}

/// Waits until the earliest unhandled slot of any active schedule is less than
/// [`CAUGHT_UP_BEHIND_MS`] old; returns when that was.
async fn wait_until_caught_up(store: &Store) -> anyhow::Result<i64> {
    let give_up = Instant::now() + MAX_CATCH_UP;
    loop {
        let now_ms = now_ms();
        let earliest_ms_opt = store.next_schedule_slot_after(i64::MIN).await?;
        if earliest_ms_opt.is_none_or(|earliest_ms| now_ms - earliest_ms < CAUGHT_UP_BEHIND_MS) {
            return Ok(now_ms);
        }
        anyhow::ensure!(
            Instant::now() < give_up,
            "the scheduler did not catch up with its start-up backlog within {MAX_CATCH_UP:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Options of `bulwark-bench dlq`.
#[derive(Debug, Clone, Args)]
pub struct DlqBenchArgs {
    /// Dead jobs to store and requeue.
    #[arg(long, default_value_t = 5_000)]
    pub letters: usize,
}

/// The result of `bulwark-bench dlq`, printed as JSON.
#[derive(Debug, Serialize)]
pub struct DlqBenchReport {
    pub backend: &'static str,
    pub num_letters: usize,
    /// Dead jobs found and stored as dead letters, per second.
    pub stored_per_second: f64,
    /// Dead letters requeued (letter moved, job queued again under its id), per second.
    pub requeued_per_second: f64,
}

/// Kills `letters` jobs, times the dead-letter actor storing them, then times requeueing all.
pub async fn dlq(config: &Config, args: &DlqBenchArgs) -> anyhow::Result<DlqBenchReport> {
    let store = bulwark::service::open_store(config).await?;
    let prefix = uuid::Uuid::now_v7().simple().to_string();
    let owner = format!("bench-broken-{prefix}");
    for index in 0..args.letters {
        store
            .insert_job(&NewJob {
                kind: "sentiment.analyze".to_owned(),
                payload: json!({"texts": ["benchmark"]}),
                idempotency_key: Some(format!("bench-dlq-{prefix}-{index}")),
                request_id: None,
                trace_id: None,
                max_attempts: 1,
                priority: bulwark_store::DEFAULT_PRIORITY,
                run_at_ms: None,
                timeout_ms: None,
                result_ttl_ms: None,
            })
            .await?;
    }
    let failure = JobFailure {
        code: "UPSTREAM_TIMEOUT".to_owned(),
        message: "benchmark".to_owned(),
        retry_at_ms: None,
        final_status: JobStatus::Failed,
        refund_attempt: false,
    };
    loop {
        let jobs = store.claim_jobs(&owner, now_ms() + 600_000, 500).await?;
        if jobs.is_empty() {
            break;
        }
        for job in jobs {
            store.fail_job(LeaseRef::of(&job, &owner), &failure).await?;
        }
    }
    let runner = JobRunnerHandle::new("bench-no-runner");
    let name = format!("bench-dead-letters-{prefix}");
    let started_spawn = Instant::now();
    let (actor, handle) = Actor::spawn(
        Some(name.clone()),
        DeadLetterActor,
        DeadLetterParams {
            store: store.clone(),
            scan_interval: Duration::from_secs(3_600),
            recovery_interval: Duration::from_secs(3_600),
            policy: DeadLetterPolicy {
                max_retries: 0,
                retry: RetryPolicy {
                    base: Duration::from_secs(1),
                    max: Duration::from_secs(1),
                },
            },
            batch_size: 500,
            job_runner: runner.clone(),
            publisher: None,
            liveness: Liveness::default(),
        },
    )
    .await
    .context("failed to start the dead-letter actor")?;
    // The actor scans at start; the run pass below is queued behind that scan.
    let started = started_spawn;
    DeadLetterHandle::new(name.clone())
        .run_pass()
        .await
        .context("dead-letter actor stopped")??;
    let num_stored: i64 = store
        .count_dead_letters()
        .await?
        .iter()
        .filter(|count| count.error_code == "UPSTREAM_TIMEOUT")
        .map(|count| count.count)
        .sum();
    let stored_seconds = started.elapsed().as_secs_f64();
    actor.stop(None);
    let _ = handle.await;

    let filter = DeadLetterFilter {
        status: Some("parked".to_owned()),
        error_code: Some("UPSTREAM_TIMEOUT".to_owned()),
        limit: u32::try_from(args.letters).unwrap_or(u32::MAX),
        ..DeadLetterFilter::default()
    };
    let letters = store.list_dead_letters(&filter).await?.dead_letters;
    let started = Instant::now();
    let mut num_requeued = 0;
    let target = RequeueTarget {
        store: &store,
        job_runner: &runner,
        publisher: None,
    };
    for letter in &letters {
        if requeue_dead_letter(&target, letter, &["parked"], "requeued").await? {
            num_requeued += 1;
        }
    }
    let requeue_seconds = started.elapsed().as_secs_f64();
    store.close().await;
    Ok(DlqBenchReport {
        backend: store.backend().as_str(),
        num_letters: num_requeued,
        stored_per_second: num_stored as f64 / stored_seconds.max(1e-9),
        requeued_per_second: num_requeued as f64 / requeue_seconds.max(1e-9),
    })
}
