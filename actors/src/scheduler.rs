use std::sync::Arc;
use std::time::Duration;

use bulwark_core::{HandledMessage, Liveness, TraceContext};
use bulwark_store::{
    JobStatus, NewJob, NewScheduleRun, OverlapPolicy, RunOutcome, Schedule, ScheduleAdvance,
    ScheduleStatus, ScheduleTrigger, Store, StoreError,
};
use futures::StreamExt;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, registry};
use tokio::task::JoinHandle;
use tracing::{Instrument, debug, info, warn};

use crate::DescribeMessage;
use crate::JobIntake;
use crate::metrics::{ScheduleLag, ScheduleRunRecorded};
use crate::schedule_trigger::{Clock, PlanParams, plan_fires};

/// At most this many claim batches per pass, so one pass cannot hold the actor for long; a
/// backlog beyond it is picked up by the next pass, sent at once.
const MAX_BATCHES_PER_PASS: usize = 20;
/// Missed slots recorded as rows per schedule and pass; beyond it they are only counted.
const MAX_RECORDED_MISSED: usize = 100;

/// Fires due schedule slots as jobs.
///
/// It sleeps until the earliest due slot of any active schedule (read from the store after each
/// pass), at most `max_wait`, and is woken at once when a schedule changes through the API.
/// Every pass claims due schedules (row claims with `SKIP LOCKED` on PostgreSQL and a claim
/// lease, so nodes never handle one schedule at once), plans their due slots under the
/// misfire and overlap policies, creates one job per fired slot with the idempotency key
/// `schedule:<id>:<slot>` (so even a node that lost its claim cannot create a second job for
/// a slot), records each slot in `schedule_runs` (unique per slot), and writes the next slot
/// back. It also counts finished runs into their schedules, pausing those that fail too often.
#[derive(Debug, Default, Clone, Copy)]
pub struct SchedulerActor;

/// What a scheduler is started with.
#[derive(Debug, Clone)]
pub struct SchedulerParams {
    pub store: Store,
    pub clock: Arc<dyn Clock>,
    /// This node's name in `claim_owner`.
    pub owner: String,
    /// The longest sleep between passes. The scheduler wakes earlier, when the earliest slot
    /// of an active schedule is due or a schedule changes through this node's API; this bound
    /// is how it learns of schedules changed through other nodes, slots held back by
    /// `queue_one` whose previous run finished, and claims that expired.
    pub max_wait: Duration,
    pub claim_batch: u32,
    /// How long a claim lasts if the node dies while handling it.
    pub claim_lease: Duration,
    /// A slot later than this is a misfire.
    pub misfire_grace: Duration,
    /// `catch_up` fires at most this many missed slots per schedule and pass.
    pub max_catch_up: usize,
    /// Schedules handled concurrently within a batch.
    pub concurrency: usize,
    /// Attempts, priority and timeout of the jobs schedules create, by kind.
    pub job_defaults: bulwark_core::JobDefaults,
    /// Creates the slots' jobs (stored, then published when a broker carries jobs).
    pub intake: JobIntake,
    pub liveness: Liveness,
}

#[derive(Debug)]
pub struct SchedulerState {
    params: SchedulerParams,
    /// The armed wake-up: a task that sends `Tick` once the next pass is due.
    wake_opt: Option<JoinHandle<()>>,
    /// Clock time finished runs were last counted; passes on a wake-up count them at most
    /// once per `max_wait`, as a fixed tick did, instead of once per due slot.
    last_settled_ms_opt: Option<i64>,
}

#[derive(Debug)]
pub enum SchedulerMsg {
    /// Runs a pass (sent when the next slot is due, after `max_wait` at the latest, and when
    /// schedules change).
    Tick,
    /// Runs a pass now and reports what it did.
    RunPass(RpcReplyPort<Result<PassReport, SchedulerError>>),
    /// Fires a schedule now, outside its slots, regardless of its policies.
    Trigger {
        schedule_id: String,
        reply: RpcReplyPort<Result<TriggeredRun, SchedulerError>>,
    },
    /// Game-day fault (the `chaos` feature): panics, errors or hangs inside `handle`.
    #[cfg(feature = "chaos")]
    Chaos(crate::Fault),
}

impl DescribeMessage for SchedulerMsg {
    fn describe(&self) -> HandledMessage {
        match self {
            SchedulerMsg::Tick => HandledMessage::new("SchedulerMsg::Tick", "fire due slots"),
            SchedulerMsg::RunPass(_) => {
                HandledMessage::new("SchedulerMsg::RunPass", "fire due slots now")
            }
            SchedulerMsg::Trigger { schedule_id, .. } => HandledMessage::new(
                "SchedulerMsg::Trigger",
                format!("fire schedule {schedule_id} now"),
            ),
            #[cfg(feature = "chaos")]
            SchedulerMsg::Chaos(fault) => fault.describe(),
        }
    }
}

/// Why a scheduler request failed.
#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    #[error("schedule {0} does not exist")]
    NotFound(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the scheduler is not running")]
    Unavailable,
}

impl SchedulerError {
    pub fn is_retryable(&self) -> bool {
        match self {
            SchedulerError::NotFound(_) => false,
            SchedulerError::Store(error) => error.is_retryable(),
            SchedulerError::Unavailable => true,
        }
    }
}

/// What one pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PassReport {
    pub num_claimed: usize,
    pub num_enqueued: usize,
    pub num_missed: u64,
    pub num_skipped: usize,
    pub num_deferred: usize,
    pub num_settled: usize,
}

impl PassReport {
    fn add(&mut self, other: &PassReport) {
        self.num_claimed += other.num_claimed;
        self.num_enqueued += other.num_enqueued;
        self.num_missed += other.num_missed;
        self.num_skipped += other.num_skipped;
        self.num_deferred += other.num_deferred;
        self.num_settled += other.num_settled;
    }
}

/// What a pass leaves for the next one.
#[derive(Debug, Clone)]
struct PassOutcome {
    report: PassReport,
    /// The batch bound was reached: more schedules may be due now.
    more_due: bool,
    /// The time of the last claim: every due slot up to it was claimed by this pass or is
    /// held by another node, so the next wake-up is for a slot after it.
    claimed_through_ms: i64,
}

/// A run fired by hand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TriggeredRun {
    pub job_id: String,
    pub fire_at_ms: i64,
}

impl Actor for SchedulerActor {
    type Msg = SchedulerMsg;
    type State = SchedulerState;
    type Arguments = SchedulerParams;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        params: SchedulerParams,
    ) -> Result<Self::State, ActorProcessingErr> {
        myself.send_message(SchedulerMsg::Tick)?;
        ScheduleRunRecorded::register_all();
        info!(
            owner = params.owner,
            max_wait_ms = params.max_wait.as_millis() as u64,
            "scheduler started"
        );
        Ok(SchedulerState {
            params,
            wake_opt: None,
            last_settled_ms_opt: None,
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(wake) = state.wake_opt.take() {
            wake.abort();
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let liveness = state.params.liveness.clone();
        let _busy = liveness.busy_with(message.describe());
        match message {
            SchedulerMsg::Tick => {
                let result = state.run_pass(SettleRuns::WhenDue).await;
                if let Err(error) = &result {
                    warn!(%error, retryable = error.is_retryable(), "scheduler pass failed");
                }
                state.arm_wake(&myself, result.ok().as_ref()).await;
            }
            SchedulerMsg::RunPass(reply) => {
                let result = state.run_pass(SettleRuns::Now).await;
                // Armed before the reply, so a caller sees the scheduler asleep until its next slot.
                state.arm_wake(&myself, result.as_ref().ok()).await;
                let report = result.map(|outcome| outcome.report);
                let _ = reply.send(report.map_err(SchedulerError::from));
            }
            SchedulerMsg::Trigger { schedule_id, reply } => {
                let _ = reply.send(trigger_now(&state.params, &schedule_id).await);
            }
            #[cfg(feature = "chaos")]
            SchedulerMsg::Chaos(fault) => fault.commit("scheduler").await?,
        }
        Ok(())
    }
}

/// Whether a pass counts finished runs into their schedules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SettleRuns {
    /// Always (a pass asked for by `RunPass`).
    Now,
    /// When `max_wait` has passed since they were last counted.
    WhenDue,
}

impl SchedulerState {
    /// Settles finished runs (see [`SettleRuns`]), then fires due schedules.
    async fn run_pass(&mut self, settle: SettleRuns) -> Result<PassOutcome, StoreError> {
        let now_ms = self.params.clock.now_ms();
        let max_wait_ms = self.params.max_wait.as_millis() as i64;
        let settle_due = settle == SettleRuns::Now
            || self
                .last_settled_ms_opt
                .is_none_or(|last_settled_ms| now_ms - last_settled_ms >= max_wait_ms);
        let num_settled = if settle_due {
            let num_settled = settle_finished_runs(&self.params).await?;
            self.last_settled_ms_opt = Some(now_ms);
            num_settled
        } else {
            0
        };
        let mut outcome = fire_due_schedules(&self.params).await?;
        outcome.report.num_settled = num_settled;
        Ok(outcome)
    }

    /// Arms the wake-up for the next pass, replacing the one armed before: at once when the
    /// pass stopped at its batch bound, else at the earliest slot still ahead, but after
    /// `max_wait` at the latest (and after a failed pass, which is then retried).
    async fn arm_wake(
        &mut self,
        myself: &ActorRef<SchedulerMsg>,
        outcome_opt: Option<&PassOutcome>,
    ) {
        if let Some(wake) = self.wake_opt.take() {
            wake.abort();
        }
        if outcome_opt.is_some_and(|outcome| outcome.more_due) {
            let _ = myself.send_message(SchedulerMsg::Tick);
            return;
        }
        let params = &self.params;
        let latest_ms = params.clock.now_ms() + params.max_wait.as_millis() as i64;
        let deadline_ms = match outcome_opt {
            Some(outcome) => match params
                .store
                .next_schedule_slot_after(outcome.claimed_through_ms)
                .await
            {
                Ok(next_slot_ms_opt) => {
                    next_slot_ms_opt.map_or(latest_ms, |next_slot_ms| next_slot_ms.min(latest_ms))
                }
                Err(error) => {
                    warn!(%error, "failed to read the next due slot, sleeping the longest wait");
                    latest_ms
                }
            },
            None => latest_ms,
        };
        let clock = Arc::clone(&params.clock);
        let scheduler = myself.clone();
        self.wake_opt = Some(tokio::spawn(async move {
            clock.sleep_until(deadline_ms).await;
            // Fails only when the scheduler has stopped, and then nobody is waiting.
            let _ = scheduler.send_message(SchedulerMsg::Tick);
        }));
    }
}

/// Fires due schedules batch by batch; `num_settled` is left at zero.
async fn fire_due_schedules(params: &SchedulerParams) -> Result<PassOutcome, StoreError> {
    let mut report = PassReport::default();
    let mut claimed_through_ms = params.clock.now_ms();
    for _ in 0..MAX_BATCHES_PER_PASS {
        let now_ms = params.clock.now_ms();
        claimed_through_ms = now_ms;
        let claim_until_ms = now_ms + params.claim_lease.as_millis() as i64;
        let schedules = params
            .store
            .claim_due_schedules(&params.owner, now_ms, claim_until_ms, params.claim_batch)
            .await?;
        let num_claimed = schedules.len();
        let outcomes: Vec<Result<PassReport, StoreError>> = futures::stream::iter(schedules)
            .map(|schedule| handle_schedule(params, schedule))
            .buffer_unordered(params.concurrency.max(1))
            .collect()
            .await;
        for outcome in outcomes {
            match outcome {
                Ok(schedule_report) => report.add(&schedule_report),
                // The claim expires and the schedule is handled again; slots are idempotent.
                Err(error) => warn!(%error, "failed to fire a schedule, its claim will expire"),
            }
        }
        report.num_claimed += num_claimed;
        if num_claimed < params.claim_batch as usize {
            return Ok(PassOutcome {
                report,
                more_due: false,
                claimed_through_ms,
            });
        }
    }
    Ok(PassOutcome {
        report,
        more_due: true,
        claimed_through_ms,
    })
}

/// Counts runs whose jobs finished into their schedules (once across nodes).
async fn settle_finished_runs(params: &SchedulerParams) -> Result<usize, StoreError> {
    let finished = params.store.finished_schedule_runs(500).await?;
    let mut num_settled = 0;
    for run in finished {
        let Some(settled) = params
            .store
            .settle_schedule_run(&run, params.clock.now_ms())
            .await?
        else {
            continue;
        };
        num_settled += 1;
        let outcome = if settled.succeeded {
            RunOutcome::Succeeded
        } else {
            RunOutcome::Failed
        };
        ScheduleRunRecorded { outcome }.emit();
        if settled.paused {
            warn!(
                schedule_id = run.schedule_id,
                "schedule paused after reaching its maximum of consecutive failures"
            );
        }
    }
    Ok(num_settled)
}

/// Returns true while the job is still waiting or running.
async fn job_is_active(store: &Store, job_id_opt: Option<&str>) -> Result<bool, StoreError> {
    let Some(job_id) = job_id_opt else {
        return Ok(false);
    };
    Ok(store
        .get_job(job_id)
        .await?
        .is_some_and(|job| matches!(job.status, JobStatus::Queued | JobStatus::Running)))
}

/// Fires one claimed schedule's due slots and writes the schedule back.
async fn handle_schedule(
    params: &SchedulerParams,
    schedule: Schedule,
) -> Result<PassReport, StoreError> {
    let store = &params.store;
    let mut report = PassReport::default();
    let mut last_job_id = schedule.last_job_id.clone();
    let mut previous_active = schedule.overlap_policy != OverlapPolicy::Allow
        && job_is_active(store, last_job_id.as_deref()).await?;
    let mut advance = ScheduleAdvance {
        next_fire_at_ms: schedule.next_fire_at_ms,
        last_fire_at_ms: None,
        pending_fire_at_ms: schedule.pending_fire_at_ms,
        last_job_id: None,
        status: schedule.status,
        num_new_runs: 0,
        num_new_missed: 0,
    };

    // A slot held back by `queue_one` goes first, once the run before it has finished.
    if let Some(pending_ms) = schedule.pending_fire_at_ms
        && !previous_active
    {
        let job_id = enqueue(params, &schedule, pending_ms).await?;
        let lag_ms = params.clock.now_ms() - pending_ms;
        if store
            .enqueue_deferred_run(&NewScheduleRun {
                schedule_id: &schedule.id,
                fire_at_ms: pending_ms,
                outcome: RunOutcome::Enqueued,
                reason: Some("overlap"),
                job_id: Some(&job_id),
                lag_ms: Some(lag_ms),
                now_ms: params.clock.now_ms(),
            })
            .await?
        {
            advance.num_new_runs += 1;
            report.num_enqueued += 1;
            ScheduleRunRecorded {
                outcome: RunOutcome::Enqueued,
            }
            .emit();
        }
        advance.pending_fire_at_ms = None;
        advance.last_fire_at_ms = Some(pending_ms);
        last_job_id = Some(job_id.clone());
        advance.last_job_id = Some(job_id);
        previous_active = schedule.overlap_policy != OverlapPolicy::Allow;
    }

    let now_ms = params.clock.now_ms();
    if let Some(next_fire_at_ms) = schedule.next_fire_at_ms
        && next_fire_at_ms <= now_ms
    {
        let plan = plan_fires(&PlanParams {
            trigger: &schedule.trigger,
            policy: schedule.misfire_policy,
            next_fire_at_ms,
            now_ms,
            misfire_grace_ms: params.misfire_grace.as_millis() as i64,
            catch_up_window_ms: schedule.catch_up_window_ms,
            max_catch_up: params.max_catch_up,
        })
        .map_err(|error| {
            StoreError::corrupt(format!("schedule {}: trigger", schedule.id), error)
        })?;
        let first_recorded = plan.missed.len().saturating_sub(MAX_RECORDED_MISSED);
        for missed_ms in &plan.missed[first_recorded..] {
            record_run(
                params,
                SlotRecord {
                    schedule_id: &schedule.id,
                    fire_at_ms: *missed_ms,
                    outcome: RunOutcome::Missed,
                    reason: Some("misfire"),
                    job: None,
                },
            )
            .await?;
        }
        if plan.num_missed > 0 {
            info!(
                schedule_id = schedule.id,
                num_missed = plan.num_missed,
                policy = %schedule.misfire_policy,
                "schedule slots missed"
            );
            ScheduleRunRecorded {
                outcome: RunOutcome::Missed,
            }
            .emit_many(plan.num_missed);
        }
        report.num_missed += plan.num_missed;
        advance.num_new_missed += plan.num_missed as i64;
        for slot_ms in plan.fire {
            if previous_active {
                match schedule.overlap_policy {
                    OverlapPolicy::QueueOne if advance.pending_fire_at_ms.is_none() => {
                        record_run(
                            params,
                            SlotRecord {
                                schedule_id: &schedule.id,
                                fire_at_ms: slot_ms,
                                outcome: RunOutcome::Deferred,
                                reason: Some("overlap"),
                                job: None,
                            },
                        )
                        .await?;
                        advance.pending_fire_at_ms = Some(slot_ms);
                        report.num_deferred += 1;
                        ScheduleRunRecorded {
                            outcome: RunOutcome::Deferred,
                        }
                        .emit();
                        continue;
                    }
                    OverlapPolicy::QueueOne | OverlapPolicy::Skip => {
                        record_run(
                            params,
                            SlotRecord {
                                schedule_id: &schedule.id,
                                fire_at_ms: slot_ms,
                                outcome: RunOutcome::Skipped,
                                reason: Some("overlap"),
                                job: None,
                            },
                        )
                        .await?;
                        report.num_skipped += 1;
                        ScheduleRunRecorded {
                            outcome: RunOutcome::Skipped,
                        }
                        .emit();
                        continue;
                    }
                    OverlapPolicy::Allow => {}
                }
            }
            let job_id = enqueue(params, &schedule, slot_ms).await?;
            let lag_ms = params.clock.now_ms() - slot_ms;
            let recorded = record_run(
                params,
                SlotRecord {
                    schedule_id: &schedule.id,
                    fire_at_ms: slot_ms,
                    outcome: RunOutcome::Enqueued,
                    reason: None,
                    job: Some((&job_id, lag_ms)),
                },
            )
            .await?;
            if recorded {
                advance.num_new_runs += 1;
                report.num_enqueued += 1;
                ScheduleRunRecorded {
                    outcome: RunOutcome::Enqueued,
                }
                .emit();
                ScheduleLag {
                    lag: Duration::from_millis(lag_ms.max(0) as u64),
                }
                .emit();
            }
            advance.last_fire_at_ms = Some(slot_ms);
            last_job_id = Some(job_id.clone());
            advance.last_job_id = Some(job_id);
            previous_active = schedule.overlap_policy != OverlapPolicy::Allow;
        }
        advance.next_fire_at_ms = plan.next_fire_at_ms;
    }
    if advance.next_fire_at_ms.is_none()
        && advance.pending_fire_at_ms.is_none()
        && matches!(schedule.trigger, ScheduleTrigger::Once { .. })
    {
        advance.status = ScheduleStatus::Completed;
    }
    debug!(schedule_id = schedule.id, last_job_id = ?last_job_id, "schedule handled");
    let now_ms = params.clock.now_ms();
    if !store
        .advance_schedule(&schedule.id, &params.owner, &advance, now_ms)
        .await?
    {
        warn!(
            schedule_id = schedule.id,
            "lost the claim on a schedule before writing it back"
        );
    }
    Ok(report)
}

/// One slot to record: its outcome, why, and its job with the lag when one was created.
struct SlotRecord<'a> {
    schedule_id: &'a str,
    fire_at_ms: i64,
    outcome: RunOutcome,
    reason: Option<&'a str>,
    job: Option<(&'a str, i64)>,
}

/// Records one slot; returns false when it was recorded before (by this or another node).
async fn record_run(params: &SchedulerParams, slot: SlotRecord<'_>) -> Result<bool, StoreError> {
    params
        .store
        .insert_schedule_run(&NewScheduleRun {
            schedule_id: slot.schedule_id,
            fire_at_ms: slot.fire_at_ms,
            outcome: slot.outcome,
            reason: slot.reason,
            job_id: slot.job.map(|(job_id, _)| job_id),
            lag_ms: slot.job.map(|(_, lag_ms)| lag_ms),
            now_ms: params.clock.now_ms(),
        })
        .await
}

/// Returns the idempotency key of a schedule's slot: the same slot always names one job.
pub fn slot_idempotency_key(schedule_id: &str, fire_at_ms: i64) -> String {
    format!("schedule:{schedule_id}:{fire_at_ms}")
}

/// Creates the slot's job (or finds the one created before) and returns its id.
async fn enqueue(
    params: &SchedulerParams,
    schedule: &Schedule,
    fire_at_ms: i64,
) -> Result<String, StoreError> {
    // Each fired slot starts a trace of its own: its job carries the trace id, and with
    // OpenTelemetry on the fire is the root span of the job's trace.
    let span = tracing::debug_span!(
        "schedule.fire",
        otel.name = %format_args!("{} fire", schedule.kind),
        otel.kind = "internal",
        schedule.id = %schedule.id,
        schedule.fire_at_ms = fire_at_ms,
    );
    async {
        let trace = TraceContext::continue_or_start(None);
        let new_job = NewJob {
            kind: schedule.kind.clone(),
            payload: schedule.payload.clone(),
            idempotency_key: Some(slot_idempotency_key(&schedule.id, fire_at_ms)),
            request_id: Some(format!("schedule-{}-{fire_at_ms}", schedule.id)),
            trace_id: trace.trace_id(),
            max_attempts: params.job_defaults.max_attempts_of(&schedule.kind),
            priority: params.job_defaults.priority_of(&schedule.kind),
            run_at_ms: None,
            timeout_ms: params.job_defaults.timeout_ms_of(&schedule.kind),
            result_ttl_ms: None,
        };
        let outcome = params.intake.submit_traced(&new_job, &trace).await?;
        Ok(outcome.job().id.clone())
    }
    .instrument(span)
    .await
}

/// Fires a schedule once now, whatever its status and policies (an operator asked).
async fn trigger_now(
    params: &SchedulerParams,
    schedule_id: &str,
) -> Result<TriggeredRun, SchedulerError> {
    let store = &params.store;
    let Some(schedule) = store.get_schedule(schedule_id).await? else {
        return Err(SchedulerError::NotFound(schedule_id.to_owned()));
    };
    let fire_at_ms = params.clock.now_ms();
    let job_id = enqueue(params, &schedule, fire_at_ms).await?;
    record_run(
        params,
        SlotRecord {
            schedule_id: &schedule.id,
            fire_at_ms,
            outcome: RunOutcome::Enqueued,
            reason: Some("manual"),
            job: Some((&job_id, 0)),
        },
    )
    .await?;
    store
        .note_manual_fire(&schedule.id, &job_id, fire_at_ms)
        .await?;
    ScheduleRunRecorded {
        outcome: RunOutcome::Enqueued,
    }
    .emit();
    Ok(TriggeredRun { job_id, fire_at_ms })
}

/// Reaches the scheduler by its registered name, so it stays valid across restarts.
#[derive(Debug, Clone)]
pub struct SchedulerHandle {
    name: String,
}

impl SchedulerHandle {
    pub fn new(name: impl Into<String>) -> Self {
        SchedulerHandle { name: name.into() }
    }

    fn actor(&self) -> Option<ActorRef<SchedulerMsg>> {
        registry::where_is(self.name.clone()).map(ActorRef::from)
    }

    /// Asks for a pass now (after a schedule changed); a no-op while it restarts.
    pub fn notify(&self) {
        if let Some(actor) = self.actor() {
            let _ = actor.send_message(SchedulerMsg::Tick);
        }
    }

    /// Runs a pass and waits for its report.
    pub async fn run_pass(&self) -> Result<PassReport, SchedulerError> {
        let actor = self.actor().ok_or(SchedulerError::Unavailable)?;
        match actor
            .call(SchedulerMsg::RunPass, Some(Duration::from_secs(60)))
            .await
        {
            Ok(ractor::rpc::CallResult::Success(result)) => result,
            _ => Err(SchedulerError::Unavailable),
        }
    }

    /// Fires a schedule now.
    pub async fn trigger(&self, schedule_id: &str) -> Result<TriggeredRun, SchedulerError> {
        let actor = self.actor().ok_or(SchedulerError::Unavailable)?;
        let schedule_id = schedule_id.to_owned();
        match actor
            .call(
                |reply| SchedulerMsg::Trigger { schedule_id, reply },
                Some(Duration::from_secs(30)),
            )
            .await
        {
            Ok(ractor::rpc::CallResult::Success(result)) => result,
            _ => Err(SchedulerError::Unavailable),
        }
    }
}
