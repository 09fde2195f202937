//! The scheduler actor against real SQLite and PostgreSQL stores, with an injected clock: each
//! trigger type, the misfire and overlap policies, auto-pause, two schedulers sharing one
//! database firing each slot once, and the wake-up at the earliest due slot.

use std::sync::Arc;
use std::time::Duration;

use bulwark_actors::{
    Clock, JobIntake, JobRunnerHandle, ManualClock, PassReport, SchedulerActor, SchedulerHandle,
    SchedulerParams, SystemClock, slot_idempotency_key,
};
use bulwark_core::{Liveness, parse_rfc3339_ms};
use bulwark_store::testsuite::{TestBackend, TestDatabase};
use bulwark_store::{
    JobFailure, JobStatus, LeaseRef, MisfirePolicy, OverlapPolicy, Schedule, ScheduleRun,
    ScheduleSpec, ScheduleStatus, ScheduleTrigger, ScheduleWrite, Store,
};
use bulwark_test_support::eventually;
use futures::future::BoxFuture;
use ractor::Actor;
use serde_json::json;
use uuid::Uuid;

const SECOND: i64 = 1_000;
const MINUTE: i64 = 60 * SECOND;
/// 2026-01-10T00:00:00Z.
const START_MS: i64 = 1_768_003_200_000;
/// Longer than any test: a scheduler that waits this long has missed its wake-up.
const MAX_WAIT: Duration = Duration::from_secs(3_600);
/// How long a condition polled on the wall clock may take before the test fails.
const DEADLINE: Duration = Duration::from_secs(10);

/// A manual clock whose sleeps never end: passes run only when a test asks (`run_pass`), so no
/// wake-up races the pass whose report a test checks.
#[derive(Debug, Clone)]
struct TestDrivenClock(ManualClock);

impl Clock for TestDrivenClock {
    fn now_ms(&self) -> i64 {
        self.0.now_ms()
    }

    fn sleep_until(&self, _deadline_ms: i64) -> BoxFuture<'static, ()> {
        Box::pin(std::future::pending())
    }
}

/// Who starts the scheduler's passes in a test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Passes {
    /// Only the test, through `run_pass`.
    OnRequest,
    /// Also the scheduler's own wake-ups, when the manual clock reaches a due slot.
    OnWakeUp,
}

struct Harness {
    store: Store,
    clock: ManualClock,
    passes: Passes,
    scheduler: SchedulerHandle,
    _database: TestDatabase,
}

fn params(store: &Store, clock: Arc<dyn Clock>, owner: &str) -> SchedulerParams {
    SchedulerParams {
        store: store.clone(),
        clock,
        owner: owner.to_owned(),
        max_wait: MAX_WAIT,
        claim_batch: 50,
        claim_lease: Duration::from_secs(30),
        misfire_grace: Duration::from_secs(5),
        max_catch_up: 2,
        concurrency: 4,
        job_defaults: bulwark_core::JobDefaults::new(3),
        intake: JobIntake::local(store.clone(), JobRunnerHandle::new("no-runner")),
        liveness: Liveness::default(),
    }
}

async fn spawn_scheduler(params: SchedulerParams) -> SchedulerHandle {
    let name = format!("test-scheduler-{}", Uuid::now_v7());
    Actor::spawn(Some(name.clone()), SchedulerActor, params)
        .await
        .expect("scheduler starts");
    SchedulerHandle::new(name)
}

impl Harness {
    async fn start(backend: TestBackend) -> Harness {
        Harness::start_with(backend, Passes::OnRequest).await
    }

    async fn start_with(backend: TestBackend, passes: Passes) -> Harness {
        let database = TestDatabase::create(backend).await;
        let store = database.open().await;
        let clock = ManualClock::new(START_MS);
        let harness_clock = Harness::clock_for(&clock, passes);
        let scheduler = spawn_scheduler(params(&store, harness_clock, "node-a")).await;
        // The actor's first pass runs at start; wait for it so tests start from a quiet state.
        scheduler.run_pass().await.expect("first pass");
        Harness {
            store,
            clock,
            passes,
            scheduler,
            _database: database,
        }
    }

    fn clock_for(clock: &ManualClock, passes: Passes) -> Arc<dyn Clock> {
        match passes {
            Passes::OnRequest => Arc::new(TestDrivenClock(clock.clone())),
            Passes::OnWakeUp => Arc::new(clock.clone()),
        }
    }

    /// Returns the clock a further scheduler on this database reads.
    fn scheduler_clock(&self) -> Arc<dyn Clock> {
        Harness::clock_for(&self.clock, self.passes)
    }

    async fn create(&self, spec: ScheduleSpec) -> Schedule {
        match self
            .store
            .insert_schedule(&spec, self.clock_ms())
            .await
            .unwrap()
        {
            ScheduleWrite::Stored(schedule) => *schedule,
            other => panic!("schedule not stored: {other:?}"),
        }
    }

    fn clock_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    async fn pass(&self) -> PassReport {
        self.scheduler.run_pass().await.expect("pass runs")
    }

    async fn at(&self, now_ms: i64) -> PassReport {
        self.clock.set(now_ms);
        self.pass().await
    }

    async fn schedule(&self, id: &str) -> Schedule {
        self.store
            .get_schedule(id)
            .await
            .unwrap()
            .expect("schedule exists")
    }

    async fn outcomes(&self, id: &str) -> Vec<(i64, String)> {
        let mut runs: Vec<(i64, String)> = self
            .store
            .list_schedule_runs(id, 500)
            .await
            .unwrap()
            .into_iter()
            .map(|run| (run.fire_at_ms, run.outcome))
            .collect();
        runs.sort();
        runs
    }

    /// Finishes every queued job as a worker would: succeeded, or failed for good.
    async fn finish_jobs(&self, succeed: bool) -> usize {
        let jobs = self
            .store
            .claim_jobs("test-worker", i64::MAX / 2, 100)
            .await
            .unwrap();
        for job in &jobs {
            if succeed {
                assert!(
                    self.store
                        .complete_job(LeaseRef::of(job, "test-worker"), &json!({}))
                        .await
                        .unwrap()
                        .is_some()
                );
            } else {
                let failure = JobFailure {
                    code: "VALIDATION_FAILED".to_owned(),
                    message: "bad input".to_owned(),
                    retry_at_ms: None,
                    final_status: JobStatus::Failed,
                    refund_attempt: false,
                };
                assert!(
                    self.store
                        .fail_job(LeaseRef::of(job, "test-worker"), &failure)
                        .await
                        .unwrap()
                        .is_some()
                );
            }
        }
        jobs.len()
    }
}

fn spec(name: &str, trigger: ScheduleTrigger, next_fire_at_ms: i64) -> ScheduleSpec {
    ScheduleSpec {
        name: name.to_owned(),
        kind: "sentiment.analyze".to_owned(),
        payload: json!({"texts": ["scheduled"]}),
        trigger,
        status: ScheduleStatus::Active,
        misfire_policy: MisfirePolicy::Skip,
        catch_up_window_ms: 3 * MINUTE,
        overlap_policy: OverlapPolicy::Allow,
        max_consecutive_failures: 0,
        next_fire_at_ms: Some(next_fire_at_ms),
    }
}

fn interval(every_ms: i64) -> ScheduleTrigger {
    ScheduleTrigger::Interval {
        every_ms,
        anchor_ms: START_MS + every_ms,
    }
}

/// Proves an interval schedule fires each slot exactly once, as a job whose idempotency key
/// names the slot, and nothing between slots; on both backends.
#[tokio::test]
async fn interval_trigger_fires_each_slot_once() {
    for backend in [TestBackend::Sqlite, TestBackend::Postgres] {
        let harness = Harness::start(backend).await;
        let schedule = harness
            .create(spec(
                "every-10s",
                interval(10 * SECOND),
                START_MS + 10 * SECOND,
            ))
            .await;
        assert_eq!(harness.at(START_MS + 9 * SECOND).await.num_enqueued, 0);
        assert_eq!(harness.at(START_MS + 10 * SECOND).await.num_enqueued, 1);
        assert_eq!(harness.pass().await.num_enqueued, 0, "a slot fires once");
        assert_eq!(harness.at(START_MS + 21 * SECOND).await.num_enqueued, 1);
        let stored = harness.schedule(&schedule.id).await;
        assert_eq!(stored.num_runs, 2);
        assert_eq!(stored.next_fire_at_ms, Some(START_MS + 30 * SECOND));
        let job_id = stored.last_job_id.expect("last job recorded");
        let job = harness.store.get_job(&job_id).await.unwrap().unwrap();
        assert_eq!(
            job.idempotency_key.as_deref(),
            Some(slot_idempotency_key(&schedule.id, START_MS + 20 * SECOND).as_str())
        );
        assert_eq!(job.payload, json!({"texts": ["scheduled"]}));
    }
}

/// Proves a cron schedule fires at 09:00 in its own time zone (08:00 UTC in a Berlin winter)
/// and not at 09:00 UTC.
#[tokio::test]
async fn cron_trigger_fires_in_its_time_zone() {
    let harness = Harness::start(TestBackend::Sqlite).await;
    let trigger = ScheduleTrigger::Cron {
        expression: "0 9 * * *".to_owned(),
        timezone: "Europe/Berlin".to_owned(),
    };
    let first = bulwark_actors::first_slot(&trigger, START_MS)
        .unwrap()
        .unwrap();
    assert_eq!(first, parse_rfc3339_ms("2026-01-10T08:00:00Z").unwrap());
    let schedule = harness.create(spec("berlin-nine", trigger, first)).await;
    let before = parse_rfc3339_ms("2026-01-10T07:59:59Z").unwrap();
    assert_eq!(harness.at(before).await.num_enqueued, 0);
    assert_eq!(harness.at(first + 200).await.num_enqueued, 1);
    let stored = harness.schedule(&schedule.id).await;
    assert_eq!(stored.last_fire_at_ms, Some(first));
    assert_eq!(
        stored.next_fire_at_ms,
        Some(parse_rfc3339_ms("2026-01-11T08:00:00Z").unwrap())
    );
}

/// Proves a one-time schedule fires once and then reads `completed`.
#[tokio::test]
async fn once_trigger_fires_once_and_completes() {
    let harness = Harness::start(TestBackend::Sqlite).await;
    let at_ms = START_MS + MINUTE;
    let schedule = harness
        .create(spec("once", ScheduleTrigger::Once { at_ms }, at_ms))
        .await;
    assert_eq!(harness.at(at_ms - 1).await.num_enqueued, 0);
    assert_eq!(harness.at(at_ms + 1_000).await.num_enqueued, 1);
    assert_eq!(harness.at(at_ms + 10 * MINUTE).await.num_enqueued, 0);
    let stored = harness.schedule(&schedule.id).await;
    assert_eq!(stored.status, ScheduleStatus::Completed);
    assert_eq!(stored.next_fire_at_ms, None);
    assert_eq!(stored.num_runs, 1);
}

/// Proves the misfire policies after ten and a half minutes of downtime over a one-minute
/// interval: `skip` fires nothing and records ten missed slots, `fire_once` fires one
/// catch-up run, `catch_up` fires the missed slots inside its window up to the bound (2).
#[tokio::test]
async fn misfire_policies_after_downtime() {
    let harness = Harness::start(TestBackend::Postgres).await;
    let mut ids = Vec::new();
    for policy in [
        MisfirePolicy::Skip,
        MisfirePolicy::FireOnce,
        MisfirePolicy::CatchUp,
    ] {
        let mut schedule_spec = spec(policy.as_str(), interval(MINUTE), START_MS + MINUTE);
        schedule_spec.misfire_policy = policy;
        ids.push(harness.create(schedule_spec).await.id);
    }
    let report = harness.at(START_MS + 10 * MINUTE + 30 * SECOND).await;
    assert_eq!(report.num_enqueued, 3, "{report:?}");
    let skip = harness.schedule(&ids[0]).await;
    assert_eq!((skip.num_runs, skip.num_missed), (0, 10));
    let missed = harness.outcomes(&ids[0]).await;
    assert_eq!(missed.len(), 10);
    assert!(missed.iter().all(|(_, outcome)| outcome == "missed"));
    let fire_once = harness.schedule(&ids[1]).await;
    assert_eq!((fire_once.num_runs, fire_once.num_missed), (1, 9));
    assert_eq!(fire_once.last_fire_at_ms, Some(START_MS + 10 * MINUTE));
    let catch_up = harness.schedule(&ids[2]).await;
    assert_eq!((catch_up.num_runs, catch_up.num_missed), (2, 8));
    for schedule in [skip, fire_once, catch_up] {
        assert_eq!(schedule.next_fire_at_ms, Some(START_MS + 11 * MINUTE));
    }
}

/// Proves the overlap policies while the first run's job is still queued: `allow` fires,
/// `skip` records the slot as skipped, `queue_one` defers one slot (skipping the next) and
/// fires it once the first run finished.
#[tokio::test]
async fn overlap_policies_while_a_run_is_active() {
    let harness = Harness::start(TestBackend::Sqlite).await;
    let mut ids = Vec::new();
    for policy in [
        OverlapPolicy::Allow,
        OverlapPolicy::Skip,
        OverlapPolicy::QueueOne,
    ] {
        let mut schedule_spec = spec(
            policy.as_str(),
            interval(10 * SECOND),
            START_MS + 10 * SECOND,
        );
        schedule_spec.overlap_policy = policy;
        ids.push(harness.create(schedule_spec).await.id);
    }
    assert_eq!(harness.at(START_MS + 10 * SECOND).await.num_enqueued, 3);
    // The first jobs are still queued (no runner) when the next slots come.
    let second = harness.at(START_MS + 20 * SECOND).await;
    assert_eq!(
        (second.num_enqueued, second.num_skipped, second.num_deferred),
        (1, 1, 1)
    );
    let third = harness.at(START_MS + 30 * SECOND).await;
    assert_eq!(
        (third.num_enqueued, third.num_skipped, third.num_deferred),
        (1, 2, 0)
    );
    let queue_one = harness.schedule(&ids[2]).await;
    assert_eq!(queue_one.pending_fire_at_ms, Some(START_MS + 20 * SECOND));
    assert_eq!(queue_one.num_runs, 1);

    harness.finish_jobs(true).await;
    let after = harness.pass().await;
    assert_eq!(after.num_enqueued, 1, "the deferred slot fires: {after:?}");
    let queue_one = harness.schedule(&ids[2]).await;
    assert_eq!(queue_one.pending_fire_at_ms, None);
    assert_eq!(queue_one.num_runs, 2);
    assert_eq!(
        harness.outcomes(&ids[2]).await,
        vec![
            (START_MS + 10 * SECOND, "succeeded".to_owned()),
            (START_MS + 20 * SECOND, "enqueued".to_owned()),
            (START_MS + 30 * SECOND, "skipped".to_owned()),
        ]
    );
    assert_eq!(harness.schedule(&ids[0]).await.num_runs, 3);
    let skip_outcomes = harness.outcomes(&ids[1]).await;
    assert_eq!(skip_outcomes[1].1, "skipped");
    assert_eq!(skip_outcomes[2].1, "skipped");
}

/// Proves a schedule pauses itself after its maximum of consecutive failed runs, and that
/// a success in between resets the count.
#[tokio::test]
async fn schedule_pauses_after_consecutive_failures() {
    let harness = Harness::start(TestBackend::Postgres).await;
    let mut schedule_spec = spec("flaky", interval(10 * SECOND), START_MS + 10 * SECOND);
    schedule_spec.max_consecutive_failures = 2;
    let schedule = harness.create(schedule_spec).await;
    let mut now_ms = START_MS;
    for succeed in [false, true, false, false] {
        now_ms += 10 * SECOND;
        assert_eq!(harness.at(now_ms).await.num_enqueued, 1);
        assert_eq!(harness.finish_jobs(succeed).await, 1);
        assert_eq!(harness.pass().await.num_settled, 1);
    }
    let stored = harness.schedule(&schedule.id).await;
    assert_eq!(stored.status, ScheduleStatus::Paused);
    assert_eq!(
        stored.paused_reason.as_deref(),
        Some("max_consecutive_failures")
    );
    assert_eq!((stored.num_runs, stored.num_failures), (4, 3));
    assert_eq!(
        harness.at(now_ms + MINUTE).await.num_enqueued,
        0,
        "paused: nothing fires"
    );
}

/// Proves two schedulers (two nodes) sharing one PostgreSQL database, passing at the same
/// time over 40 due schedules, create exactly one job per slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_schedulers_fire_each_slot_once() {
    let harness = Harness::start(TestBackend::Postgres).await;
    let other = spawn_scheduler(params(&harness.store, harness.scheduler_clock(), "node-b")).await;
    other.run_pass().await.expect("first pass");
    let mut ids = Vec::new();
    for index in 0..40 {
        let schedule_spec = spec(
            &format!("shared-{index}"),
            interval(10 * SECOND),
            START_MS + 10 * SECOND,
        );
        ids.push(harness.create(schedule_spec).await.id);
    }
    for slot in 1..=3 {
        harness.clock.set(START_MS + slot * 10 * SECOND);
        let (left, right) = tokio::join!(harness.scheduler.run_pass(), other.run_pass());
        let total = left.unwrap().num_enqueued + right.unwrap().num_enqueued;
        assert_eq!(total, 40, "slot {slot}: one job per schedule");
    }
    let counts = harness.store.count_jobs().await.unwrap();
    let num_jobs: i64 = counts.iter().map(|count| count.count).sum();
    assert_eq!(num_jobs, 120);
    for id in &ids {
        let outcomes = harness.outcomes(id).await;
        assert_eq!(outcomes.len(), 3);
    }
}

/// Waits until `schedule_id` has at least `num_runs` recorded slots; returns them, oldest first.
async fn wait_for_runs(store: &Store, schedule_id: &str, num_runs: usize) -> Vec<ScheduleRun> {
    eventually(DEADLINE, || async {
        let mut runs = store.list_schedule_runs(schedule_id, 100).await.unwrap();
        runs.sort_by_key(|run| run.fire_at_ms);
        (runs.len() >= num_runs).then_some(runs)
    })
    .await
}

/// Proves the scheduler sleeps until the earliest due slot and fires it when the clock reaches
/// it, on its own (no pass asked for, and the longest wait is an hour): each slot fires with no
/// lag at all on the clock, and the scheduler sleeps again until the next one; on both
/// backends.
#[tokio::test]
async fn due_slot_fires_when_the_clock_reaches_it() {
    for backend in [TestBackend::Sqlite, TestBackend::Postgres] {
        let harness = Harness::start_with(backend, Passes::OnWakeUp).await;
        let first_slot_ms = START_MS + 10 * SECOND;
        let schedule = harness
            .create(spec("every-10s", interval(10 * SECOND), first_slot_ms))
            .await;
        // A pass after the change (what the API's notification starts) learns of the slot.
        assert_eq!(harness.pass().await.num_enqueued, 0);

        harness.clock.set(first_slot_ms);
        let runs = wait_for_runs(&harness.store, &schedule.id, 1).await;
        assert_eq!(runs[0].fire_at_ms, first_slot_ms);
        assert_eq!(runs[0].outcome, "enqueued");
        assert_eq!(
            runs[0].lag_ms,
            Some(0),
            "fired at the slot, not a tick later"
        );

        // The wake-up pass armed the next one.
        harness.clock.set(first_slot_ms + 10 * SECOND);
        let runs = wait_for_runs(&harness.store, &schedule.id, 2).await;
        assert_eq!(runs[1].fire_at_ms, first_slot_ms + 10 * SECOND);
        assert_eq!(runs[1].lag_ms, Some(0));
        // The run row is written before the schedule's own write-back of the same pass.
        let stored = eventually(Duration::from_secs(5), || async {
            let stored = harness.schedule(&schedule.id).await;
            (stored.num_runs == 2).then_some(stored)
        })
        .await;
        assert_eq!(stored.next_fire_at_ms, Some(first_slot_ms + 20 * SECOND));
    }
}

/// Proves nothing fires before its slot while the scheduler is awake: with the clock a
/// millisecond short of the slot, neither the scheduler's wake-ups nor a pass fire it, and no
/// job exists; a millisecond later it fires once.
#[tokio::test]
async fn nothing_fires_before_its_slot() {
    let harness = Harness::start_with(TestBackend::Sqlite, Passes::OnWakeUp).await;
    let slot_ms = START_MS + MINUTE;
    let schedule = harness
        .create(spec(
            "once",
            ScheduleTrigger::Once { at_ms: slot_ms },
            slot_ms,
        ))
        .await;
    for now_ms in [START_MS + SECOND, slot_ms - SECOND, slot_ms - 1] {
        // The pass queues behind any wake-up the new time started, so both have run.
        assert_eq!(harness.at(now_ms).await.num_enqueued, 0, "at {now_ms}");
        assert!(harness.outcomes(&schedule.id).await.is_empty());
        let counts = harness.store.count_jobs().await.unwrap();
        assert_eq!(counts.iter().map(|count| count.count).sum::<i64>(), 0);
    }
    harness.clock.set(slot_ms);
    let runs = wait_for_runs(&harness.store, &schedule.id, 1).await;
    assert_eq!((runs[0].fire_at_ms, runs[0].lag_ms), (slot_ms, Some(0)));
    assert_eq!(harness.pass().await.num_enqueued, 0, "a slot fires once");
}

/// Proves a schedule created while the scheduler sleeps (its longest wait an hour) fires at its
/// slot on the wall clock, a few hundred milliseconds later, once the scheduler is told of the
/// change as the API tells it; and not before the slot.
#[tokio::test]
async fn new_schedule_fires_without_waiting_for_the_longest_wait() {
    for backend in [TestBackend::Sqlite, TestBackend::Postgres] {
        let database = TestDatabase::create(backend).await;
        let store = database.open().await;
        let scheduler = spawn_scheduler(params(&store, Arc::new(SystemClock), "node-a")).await;
        // Nothing is due: after this pass the scheduler sleeps for the longest wait.
        scheduler.run_pass().await.expect("first pass");

        let slot_ms = SystemClock.now_ms() + 300;
        let schedule_spec = spec("soon", ScheduleTrigger::Once { at_ms: slot_ms }, slot_ms);
        let ScheduleWrite::Stored(schedule) = store
            .insert_schedule(&schedule_spec, SystemClock.now_ms())
            .await
            .unwrap()
        else {
            panic!("schedule not stored");
        };
        scheduler.notify();

        let runs = wait_for_runs(&store, &schedule.id, 1).await;
        let lag_ms = runs[0].lag_ms.expect("an enqueued run has a lag");
        assert!(lag_ms >= 0, "fired {}ms early", -lag_ms);
        // Typically a few milliseconds; the bound leaves room for a loaded machine.
        assert!(lag_ms < 500, "fired {lag_ms}ms after its slot");
        assert!(runs[0].created_at_ms >= slot_ms);
        let job_id = runs[0].job_id.as_deref().expect("the run's job");
        let job = store.get_job(job_id).await.unwrap().expect("job exists");
        assert!(
            job.created_at_ms >= slot_ms,
            "the job exists before its slot"
        );
    }
}
