//! The scheduler, dead-letter, retention and control subsystems under their supervisors: the
//! real [`SchedulerActor`], [`DeadLetterActor`], [`JobPrunerActor`] and [`JobControlActor`] on a
//! real SQLite store, made to panic, return an error or hang through their game-day chaos
//! messages, prove that each fault is detected, counted and restarted, and that the restarted
//! actor still does its work: a due schedule fires exactly once, a dead job is still stored as
//! exactly one dead letter, an expired job is still pruned, a cancel and a pause still reach
//! the node.

use std::sync::Arc;
use std::time::Duration;

use bulwark_actors::{
    Clock, DeadLetterActor, DeadLetterHandle, DeadLetterMsg, DeadLetterParams, DeadLetterPolicy,
    Fault, JobControlActor, JobControlMsg, JobControlParams, JobControls, JobIntake,
    JobPrunerActor, JobPrunerHandle, JobPrunerMsg, JobPrunerParams, JobRunnerHandle, ManualClock,
    RetentionPolicy, RetryPolicy, SchedulerActor, SchedulerHandle, SchedulerMsg, SchedulerParams,
    slot_idempotency_key,
};
use bulwark_core::Liveness;
use bulwark_store::testsuite::{TestBackend, TestDatabase};
use bulwark_store::{
    JobFailure, JobStatus, LeaseRef, MisfirePolicy, NewJob, OverlapPolicy, ScheduleSpec,
    ScheduleStatus, ScheduleTrigger, ScheduleWrite, Store,
};
use bulwark_supervisors::{
    ChildSpec, ExitKind, RestartIntensity, SupervisionStrategy, SupervisorActor, SupervisorMsg,
    SupervisorParams, SupervisorSnapshot, actor_spec, install_panic_hook,
};
use bulwark_test_support::{eventually, wait_for_restart_after};
use ractor::{Actor, ActorRef};
use serde_json::json;

/// 2026-01-10T00:00:00Z.
const START_MS: i64 = 1_768_003_200_000;
/// Longer than any test: a hang lasts until the supervisor kills the actor.
const HANG: Duration = Duration::from_secs(600);
/// Longer than any test, so only the restarted actor's first pass (or an explicit one) runs.
const IDLE_INTERVAL: Duration = Duration::from_secs(3_600);
/// How long a restart, or the work of the restarted actor, may take before the test fails.
const DEADLINE: Duration = Duration::from_secs(10);

/// Starts `child` under a one-for-one supervisor named `name` with a short hang timeout.
async fn supervise(test: &str, name: &str, child: ChildSpec) -> ActorRef<SupervisorMsg> {
    let (supervisor, _handle) = Actor::spawn(
        Some(format!("{test}/{name}")),
        SupervisorActor,
        SupervisorParams {
            name: name.to_owned(),
            children: vec![child],
            strategy: SupervisionStrategy::OneForOne,
            intensity: RestartIntensity {
                max_restarts: 10,
                within: Duration::from_secs(10),
            },
            backoff_base: Duration::from_millis(5),
            backoff_max: Duration::from_millis(50),
            hang_timeout: Duration::from_millis(300),
            heartbeat: Duration::from_millis(20),
        },
    )
    .await
    .expect("supervisor starts");
    supervisor
}

/// Asserts the fault was counted under its own kind, once, and under no other.
fn assert_counted(snapshot: &SupervisorSnapshot, kind: ExitKind) {
    let counters = &snapshot.children[0].counters;
    let expected = |counted| u64::from(kind == counted);
    assert_eq!(counters.restarts, 1, "{snapshot:?}");
    assert_eq!(counters.panics, expected(ExitKind::Panic), "{snapshot:?}");
    assert_eq!(counters.errors, expected(ExitKind::Error), "{snapshot:?}");
    assert_eq!(counters.hangs, expected(ExitKind::Hang), "{snapshot:?}");
}

struct SchedulerSubsystem {
    supervisor: ActorRef<SupervisorMsg>,
    scheduler: SchedulerHandle,
    actor_name: String,
    store: Store,
    clock: ManualClock,
    _database: TestDatabase,
}

async fn start_scheduler(test: &str) -> SchedulerSubsystem {
    install_panic_hook();
    let database = TestDatabase::create(TestBackend::Sqlite).await;
    let store = database.open().await;
    let clock = ManualClock::new(START_MS);
    let liveness = Liveness::default();
    let params = SchedulerParams {
        store: store.clone(),
        clock: Arc::new(clock.clone()),
        owner: format!("{test}-node"),
        max_wait: IDLE_INTERVAL,
        claim_batch: 50,
        claim_lease: Duration::from_secs(30),
        misfire_grace: Duration::from_secs(60),
        max_catch_up: 2,
        concurrency: 4,
        job_defaults: bulwark_core::JobDefaults::new(3),
        intake: JobIntake::local(store.clone(), JobRunnerHandle::new(format!("{test}/none"))),
        liveness: liveness.clone(),
    };
    let actor_name = format!("{test}/scheduler-actor");
    let child = actor_spec(&actor_name, SchedulerActor, params, Some(liveness));
    let supervisor = supervise(test, "scheduler", child).await;
    let scheduler = SchedulerHandle::new(actor_name.clone());
    // The first pass runs at start; wait for it so the fault meets a quiet actor.
    scheduler.run_pass().await.expect("first pass");
    SchedulerSubsystem {
        supervisor,
        scheduler,
        actor_name,
        store,
        clock,
        _database: database,
    }
}

impl SchedulerSubsystem {
    fn send(&self, message: SchedulerMsg) {
        let actor: ActorRef<SchedulerMsg> = ractor::registry::where_is(self.actor_name.clone())
            .expect("scheduler registered")
            .into();
        actor.send_message(message).expect("message sent");
    }

    /// Stores an interval schedule whose first slot is 10 s after the start.
    async fn create_schedule(&self) -> String {
        let spec = ScheduleSpec {
            name: "every-10s".to_owned(),
            kind: "sentiment.analyze".to_owned(),
            payload: json!({"texts": ["scheduled"]}),
            trigger: ScheduleTrigger::Interval {
                every_ms: 10_000,
                anchor_ms: START_MS + 10_000,
            },
            status: ScheduleStatus::Active,
            misfire_policy: MisfirePolicy::Skip,
            catch_up_window_ms: 60_000,
            overlap_policy: OverlapPolicy::Allow,
            max_consecutive_failures: 0,
            next_fire_at_ms: Some(START_MS + 10_000),
        };
        match self
            .store
            .insert_schedule(&spec, self.clock.now_ms())
            .await
            .expect("schedule stored")
        {
            ScheduleWrite::Stored(schedule) => schedule.id,
            other => panic!("schedule not stored: {other:?}"),
        }
    }

    /// Injects `fault` with a schedule coming due meanwhile, waits for the restart, and proves
    /// the restarted scheduler fires the due slot exactly once.
    async fn fault_then_fire_once(&self, fault: SchedulerMsg, kind: ExitKind) {
        let schedule_id = self.create_schedule().await;
        self.send(fault);
        self.clock.set(START_MS + 10_000);
        let snapshot = wait_for_restart_after(&self.supervisor, kind, DEADLINE).await;
        assert_counted(&snapshot, kind);

        // The restarted actor's first pass fires the slot on its own.
        // The due slot fires.
        eventually(DEADLINE, || async {
            let runs = self
                .store
                .list_schedule_runs(&schedule_id, 100)
                .await
                .expect("runs read");
            (!runs.is_empty()).then_some(())
        })
        .await;
        let again = self.scheduler.run_pass().await.expect("pass runs");
        assert_eq!(again.num_enqueued, 0, "a slot fires once");

        let runs = self
            .store
            .list_schedule_runs(&schedule_id, 100)
            .await
            .expect("runs read");
        assert_eq!(runs.len(), 1, "{runs:?}");
        assert_eq!(runs[0].fire_at_ms, START_MS + 10_000);
        let schedule = self
            .store
            .get_schedule(&schedule_id)
            .await
            .expect("schedule read")
            .expect("schedule exists");
        assert_eq!(schedule.num_runs, 1);
        let job_id = schedule.last_job_id.expect("the slot's job recorded");
        let job = self
            .store
            .get_job(&job_id)
            .await
            .expect("job read")
            .expect("job exists");
        assert_eq!(
            job.idempotency_key.as_deref(),
            Some(slot_idempotency_key(&schedule_id, START_MS + 10_000).as_str())
        );
        assert_eq!(job.status, JobStatus::Queued);
        self.supervisor.stop(None);
    }
}

/// Proves a scheduler that panics is counted as a panic and restarted, and the restarted
/// scheduler fires the slot that came due meanwhile exactly once.
#[tokio::test]
async fn scheduler_panic_is_restarted_and_fires_due_slot_once() {
    let subsystem = start_scheduler("scheduler_panic_is_restarted_and_fires_due_slot_once").await;
    subsystem
        .fault_then_fire_once(SchedulerMsg::Chaos(Fault::Panic), ExitKind::Panic)
        .await;
}

/// Proves a scheduler whose handler returns an error is counted as an error and restarted,
/// and the restarted scheduler fires the slot that came due meanwhile exactly once.
#[tokio::test]
async fn scheduler_error_is_restarted_and_fires_due_slot_once() {
    let subsystem = start_scheduler("scheduler_error_is_restarted_and_fires_due_slot_once").await;
    subsystem
        .fault_then_fire_once(SchedulerMsg::Chaos(Fault::Error), ExitKind::Error)
        .await;
}

/// Proves a wedged scheduler is detected as hung through its liveness, killed, counted as a
/// hang and restarted, and the restarted scheduler fires the slot that came due meanwhile
/// exactly once.
#[tokio::test]
async fn scheduler_hang_is_killed_and_fires_due_slot_once() {
    let subsystem = start_scheduler("scheduler_hang_is_killed_and_fires_due_slot_once").await;
    subsystem
        .fault_then_fire_once(SchedulerMsg::Chaos(Fault::Hang(HANG)), ExitKind::Hang)
        .await;
}

struct DeadLetterSubsystem {
    supervisor: ActorRef<SupervisorMsg>,
    dead_letters: DeadLetterHandle,
    actor_name: String,
    store: Store,
    _database: TestDatabase,
}

async fn start_dead_letters(test: &str) -> DeadLetterSubsystem {
    install_panic_hook();
    let database = TestDatabase::create(TestBackend::Sqlite).await;
    let store = database.open().await;
    let liveness = Liveness::default();
    let params = DeadLetterParams {
        store: store.clone(),
        scan_interval: IDLE_INTERVAL,
        recovery_interval: IDLE_INTERVAL,
        policy: DeadLetterPolicy {
            max_retries: 0,
            retry: RetryPolicy {
                base: Duration::from_millis(5),
                max: Duration::from_millis(20),
            },
        },
        batch_size: 100,
        job_runner: JobRunnerHandle::new(format!("{test}/none")),
        publisher: None,
        liveness: liveness.clone(),
    };
    let actor_name = format!("{test}/dead-letter-actor");
    let child = actor_spec(&actor_name, DeadLetterActor, params, Some(liveness));
    let supervisor = supervise(test, "dead-letter", child).await;
    let dead_letters = DeadLetterHandle::new(actor_name.clone());
    // The first scan runs at start; wait for it so the fault meets a quiet actor.
    dead_letters
        .run_pass()
        .await
        .expect("actor running")
        .expect("first pass");
    DeadLetterSubsystem {
        supervisor,
        dead_letters,
        actor_name,
        store,
        _database: database,
    }
}

impl DeadLetterSubsystem {
    fn send(&self, message: DeadLetterMsg) {
        let actor: ActorRef<DeadLetterMsg> = ractor::registry::where_is(self.actor_name.clone())
            .expect("dead-letter actor registered")
            .into();
        actor.send_message(message).expect("message sent");
    }

    /// Stores a job and fails it for good, as a broken worker would.
    async fn job_dies(&self) -> String {
        let outcome = self
            .store
            .insert_job(&NewJob {
                kind: "sentiment.analyze".to_owned(),
                payload: json!({"texts": ["doomed"]}),
                idempotency_key: None,
                request_id: None,
                trace_id: None,
                max_attempts: 3,
                priority: bulwark_store::DEFAULT_PRIORITY,
                run_at_ms: None,
                timeout_ms: None,
                result_ttl_ms: None,
            })
            .await
            .expect("job stored");
        let job_id = outcome.job().id.clone();
        let claimed = self
            .store
            .claim_jobs("broken-node", i64::MAX / 2, 100)
            .await
            .expect("claimed");
        assert!(claimed.iter().any(|job| job.id == job_id));
        let failure = JobFailure {
            code: "VALIDATION_FAILED".to_owned(),
            message: "the broken node could not do it".to_owned(),
            retry_at_ms: None,
            final_status: JobStatus::Failed,
            refund_attempt: false,
        };
        assert!(
            self.store
                .fail_job(
                    LeaseRef {
                        job_id: &job_id,
                        owner: "broken-node",
                        attempt: 1,
                    },
                    &failure,
                )
                .await
                .expect("failed")
                .is_some()
        );
        job_id
    }

    /// Injects `fault` with a job dying meanwhile, waits for the restart, and proves the
    /// restarted actor stores that job as exactly one dead letter.
    async fn fault_then_record(&self, fault: DeadLetterMsg, kind: ExitKind) {
        // The job dies first: the actor scans on start and then once an hour, so only the
        // restarted actor's first scan can store it (dying after the fault raced the restart).
        let job_id = self.job_dies().await;
        self.send(fault);
        let snapshot = wait_for_restart_after(&self.supervisor, kind, DEADLINE).await;
        assert_counted(&snapshot, kind);

        // The restarted actor's first scan stores the letter on its own.
        let source_key = format!("job:{job_id}");
        let letter = eventually(DEADLINE, || async {
            self.store
                .get_dead_letter_by_key(&source_key)
                .await
                .expect("letter read")
        })
        .await;
        assert_eq!(letter.job_id, job_id);
        assert_eq!(letter.error_code, "VALIDATION_FAILED");
        assert_eq!(letter.status, "parked", "not retriable: parked at once");

        let again = self
            .dead_letters
            .run_pass()
            .await
            .expect("actor running")
            .expect("pass runs");
        assert_eq!(again.num_stored, 0, "a dead job is stored once");
        let counts = self.store.count_dead_letters().await.expect("counted");
        let total: i64 = counts.iter().map(|count| count.count).sum();
        assert_eq!(total, 1, "{counts:?}");
        self.supervisor.stop(None);
    }
}

/// Proves a dead-letter actor that panics is counted as a panic and restarted, and the
/// restarted actor records the job that died meanwhile as exactly one dead letter.
#[tokio::test]
async fn dead_letter_panic_is_restarted_and_records_dead_job() {
    let subsystem = start_dead_letters("dead_letter_panic_is_restarted_and_records_dead_job").await;
    subsystem
        .fault_then_record(DeadLetterMsg::Chaos(Fault::Panic), ExitKind::Panic)
        .await;
}

/// Proves a dead-letter actor whose handler returns an error is counted as an error and
/// restarted, and the restarted actor records the job that died meanwhile as one dead letter.
#[tokio::test]
async fn dead_letter_error_is_restarted_and_records_dead_job() {
    let subsystem = start_dead_letters("dead_letter_error_is_restarted_and_records_dead_job").await;
    subsystem
        .fault_then_record(DeadLetterMsg::Chaos(Fault::Error), ExitKind::Error)
        .await;
}

/// Proves a wedged dead-letter actor is detected as hung through its liveness, killed,
/// counted as a hang and restarted, and the restarted actor records the job that died
/// meanwhile as exactly one dead letter.
#[tokio::test]
async fn dead_letter_hang_is_killed_and_records_dead_job() {
    let subsystem = start_dead_letters("dead_letter_hang_is_killed_and_records_dead_job").await;
    subsystem
        .fault_then_record(DeadLetterMsg::Chaos(Fault::Hang(HANG)), ExitKind::Hang)
        .await;
}

struct RetentionSubsystem {
    supervisor: ActorRef<SupervisorMsg>,
    pruner: JobPrunerHandle,
    actor_name: String,
    store: Store,
    _database: TestDatabase,
}

/// Starts the job pruner under its supervisor on a fresh SQLite store, pruning succeeded jobs
/// as soon as they finish and passing once an hour (so only a start's pass runs on its own).
async fn start_retention(test: &str) -> RetentionSubsystem {
    install_panic_hook();
    let database = TestDatabase::create(TestBackend::Sqlite).await;
    let store = database.open().await;
    let liveness = Liveness::default();
    let params = JobPrunerParams {
        store: store.clone(),
        policy: RetentionPolicy {
            succeeded: Some(Duration::ZERO),
            failed: None,
            dead: None,
            cancelled: None,
            batch_size: 100,
            max_batches_per_pass: 10,
        },
        interval: IDLE_INTERVAL,
        liveness: liveness.clone(),
    };
    let actor_name = format!("{test}/job-pruner");
    let child = actor_spec(&actor_name, JobPrunerActor, params, Some(liveness));
    let supervisor = supervise(test, "retention", child).await;
    let pruner = JobPrunerHandle::new(actor_name.clone());
    pruner
        .run_pass(DEADLINE)
        .await
        .expect("pruner running")
        .expect("first pass");
    RetentionSubsystem {
        supervisor,
        pruner,
        actor_name,
        store,
        _database: database,
    }
}

impl RetentionSubsystem {
    /// Stores a job and finishes it successfully; returns its id.
    async fn job_succeeds(&self) -> String {
        let outcome = self
            .store
            .insert_job(&NewJob {
                kind: "sentiment.analyze".to_owned(),
                payload: json!({"texts": ["done"]}),
                idempotency_key: None,
                request_id: None,
                trace_id: None,
                max_attempts: 3,
                priority: bulwark_store::DEFAULT_PRIORITY,
                run_at_ms: None,
                timeout_ms: None,
                result_ttl_ms: None,
            })
            .await
            .expect("job stored");
        let job_id = outcome.job().id.clone();
        self.store
            .claim_jobs("node", i64::MAX / 2, 100)
            .await
            .expect("claimed");
        self.store
            .complete_job(
                LeaseRef {
                    job_id: &job_id,
                    owner: "node",
                    attempt: 1,
                },
                &json!({"ok": true}),
            )
            .await
            .expect("completed")
            .expect("lease held");
        job_id
    }

    /// Injects `fault` with a job finished meanwhile, waits for the restart, and proves the
    /// restarted pruner deletes that job on its own, once.
    async fn fault_then_prune(&self, fault: JobPrunerMsg, kind: ExitKind) {
        let job_id = self.job_succeeds().await;
        let actor: ActorRef<JobPrunerMsg> = ractor::registry::where_is(self.actor_name.clone())
            .expect("pruner registered")
            .into();
        actor.send_message(fault).expect("message sent");
        let snapshot = wait_for_restart_after(&self.supervisor, kind, DEADLINE).await;
        assert_counted(&snapshot, kind);
        eventually(DEADLINE, || async {
            let job = self.store.get_job(&job_id).await.expect("job read");
            job.is_none().then_some(())
        })
        .await;
        let again = self
            .pruner
            .run_pass(DEADLINE)
            .await
            .expect("pruner running")
            .expect("pass runs");
        assert_eq!(again.num_succeeded, 0, "nothing left to prune");
        self.supervisor.stop(None);
    }
}

/// Proves a job pruner that panics is counted as a panic and restarted, and the restarted
/// pruner deletes the job that expired meanwhile.
#[tokio::test]
async fn pruner_panic_is_restarted_and_prunes() {
    let subsystem = start_retention("pruner_panic_is_restarted_and_prunes").await;
    subsystem
        .fault_then_prune(JobPrunerMsg::Chaos(Fault::Panic), ExitKind::Panic)
        .await;
}

/// Proves a job pruner whose handler returns an error is counted as an error and restarted,
/// and the restarted pruner deletes the job that expired meanwhile.
#[tokio::test]
async fn pruner_error_is_restarted_and_prunes() {
    let subsystem = start_retention("pruner_error_is_restarted_and_prunes").await;
    subsystem
        .fault_then_prune(JobPrunerMsg::Chaos(Fault::Error), ExitKind::Error)
        .await;
}

/// Proves a wedged job pruner is detected as hung through its liveness, killed, counted as a
/// hang and restarted, and the restarted pruner deletes the job that expired meanwhile.
#[tokio::test]
async fn pruner_hang_is_killed_and_prunes() {
    let subsystem = start_retention("pruner_hang_is_killed_and_prunes").await;
    subsystem
        .fault_then_prune(JobPrunerMsg::Chaos(Fault::Hang(HANG)), ExitKind::Hang)
        .await;
}

struct ControlSubsystem {
    supervisor: ActorRef<SupervisorMsg>,
    actor_name: String,
    controls: JobControls,
    store: Store,
    _database: TestDatabase,
}

/// Starts the job control actor under its supervisor on a fresh SQLite store, polling every
/// 20 ms.
async fn start_control(test: &str) -> ControlSubsystem {
    install_panic_hook();
    let database = TestDatabase::create(TestBackend::Sqlite).await;
    let store = database.open().await;
    let liveness = Liveness::default();
    let controls = JobControls::default();
    let params = JobControlParams {
        store: store.clone(),
        controls: controls.clone(),
        interval: Duration::from_millis(20),
        liveness: liveness.clone(),
    };
    let actor_name = format!("{test}/job-control");
    let child = actor_spec(&actor_name, JobControlActor, params, Some(liveness));
    let supervisor = supervise(test, "control", child).await;
    ControlSubsystem {
        supervisor,
        actor_name,
        controls,
        store,
        _database: database,
    }
}

impl ControlSubsystem {
    /// Injects `fault`, waits for the restart, and proves the restarted actor still brings a
    /// pause and a cancel asked for meanwhile to the node: the kind shows paused, and the
    /// running job's attempt gets its signal.
    async fn fault_then_control(&self, fault: JobControlMsg, kind: ExitKind) {
        let job_id = self
            .store
            .insert_job(&NewJob {
                kind: "sentiment.analyze".to_owned(),
                payload: json!({"texts": ["running"]}),
                idempotency_key: None,
                request_id: None,
                trace_id: None,
                max_attempts: 3,
                priority: bulwark_store::DEFAULT_PRIORITY,
                run_at_ms: None,
                timeout_ms: None,
                result_ttl_ms: None,
            })
            .await
            .expect("job stored")
            .job()
            .id
            .clone();
        self.store
            .claim_jobs("node", i64::MAX / 2, 1)
            .await
            .expect("claimed");
        let attempt = self.controls.cancels.register(&job_id);
        let actor: ActorRef<JobControlMsg> = ractor::registry::where_is(self.actor_name.clone())
            .expect("job control registered")
            .into();
        actor.send_message(fault).expect("message sent");
        self.store
            .pause_kind("audit.run", None)
            .await
            .expect("paused");
        self.store.cancel_job(&job_id).await.expect("cancel asked");
        let snapshot = wait_for_restart_after(&self.supervisor, kind, DEADLINE).await;
        assert_counted(&snapshot, kind);
        eventually(DEADLINE, || async {
            (attempt.token.is_cancelled() && self.controls.paused.contains("audit.run"))
                .then_some(())
        })
        .await;
        self.supervisor.stop(None);
    }
}

/// Proves a job control actor that panics is counted as a panic and restarted, and the
/// restarted actor signals a cancel and shows a pause asked for meanwhile.
#[tokio::test]
async fn job_control_panic_is_restarted_and_controls() {
    let subsystem = start_control("job_control_panic_is_restarted_and_controls").await;
    subsystem
        .fault_then_control(JobControlMsg::Chaos(Fault::Panic), ExitKind::Panic)
        .await;
}

/// Proves a job control actor whose handler returns an error is counted as an error and
/// restarted, and the restarted actor signals a cancel and shows a pause asked for meanwhile.
#[tokio::test]
async fn job_control_error_is_restarted_and_controls() {
    let subsystem = start_control("job_control_error_is_restarted_and_controls").await;
    subsystem
        .fault_then_control(JobControlMsg::Chaos(Fault::Error), ExitKind::Error)
        .await;
}

/// Proves a wedged job control actor is detected as hung through its liveness, killed,
/// counted as a hang and restarted, and the restarted actor signals a cancel and shows a pause
/// asked for meanwhile.
#[tokio::test]
async fn job_control_hang_is_killed_and_controls() {
    let subsystem = start_control("job_control_hang_is_killed_and_controls").await;
    subsystem
        .fault_then_control(JobControlMsg::Chaos(Fault::Hang(HANG)), ExitKind::Hang)
        .await;
}
