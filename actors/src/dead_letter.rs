use std::time::Duration;

use bulwark_store::{
    DeadLetter, Job, JobStatus, LOCAL_QUEUE, NewDeadLetter, Store, StoreError, now_ms,
};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, registry};
use serde_json::json;
use tracing::{info, warn};

use crate::metrics::{DeadLetterEvent, DeadLetterEventKind, record_dead_letter_depth};
use crate::{JobRunnerHandle, Liveness, RetryPolicy};

/// A job's finish time may be written slightly after another node's scan passed it; each scan
/// looks this far behind the newest finish it saw (the unique key makes re-reading harmless).
const SCAN_OVERLAP_MS: i64 = 60_000;

/// Owns every job that cannot be done.
///
/// It scans the jobs table for jobs that ended `dead` or `failed` and stores each once as a
/// dead letter (unique per job, so nodes scanning the same table store it once). A recovery
/// pass retries pending letters whose error is retriable, with exponential backoff, up to
/// `max_retries`, by putting the job back in the queue under the same id; after that a letter
/// is parked until an operator requeues or purges it. Letters whose retried job succeeded are
/// marked recovered.
#[derive(Debug, Default, Clone, Copy)]
pub struct DeadLetterActor;

/// What a dead-letter actor is started with.
#[derive(Debug, Clone)]
pub struct DeadLetterParams {
    pub store: Store,
    pub scan_interval: Duration,
    pub recovery_interval: Duration,
    /// Automatic retries before a letter is parked.
    pub max_retries: u32,
    /// Spacing of automatic retries.
    pub retry: RetryPolicy,
    pub batch_size: u32,
    /// Told about requeued jobs so they start without waiting for its poll.
    pub job_runner: JobRunnerHandle,
    pub liveness: Liveness,
}

#[derive(Debug)]
pub struct DeadLetterState {
    params: DeadLetterParams,
    /// The newest job finish time stored; scans start a little before it.
    scanned_until_ms: i64,
}

#[derive(Debug)]
pub enum DeadLetterMsg {
    Scan,
    Recover,
    /// Runs a scan and a recovery pass now and reports what they did.
    RunPass(RpcReplyPort<Result<DeadLetterReport, StoreError>>),
    /// Game-day fault: panics inside `handle`, so supervision can be shown to restart it.
    ChaosPanic,
    /// Game-day fault: returns an error from `handle`.
    ChaosFail,
    /// Game-day fault: blocks `handle` (marked busy) for this long, as a wedged actor would.
    ChaosHang(Duration),
}

/// What a scan and a recovery pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeadLetterReport {
    pub num_stored: usize,
    pub num_retried: usize,
    pub num_parked: usize,
    pub num_recovered: usize,
}

impl Actor for DeadLetterActor {
    type Msg = DeadLetterMsg;
    type State = DeadLetterState;
    type Arguments = DeadLetterParams;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        params: DeadLetterParams,
    ) -> Result<Self::State, ActorProcessingErr> {
        myself.send_interval(params.scan_interval, || DeadLetterMsg::Scan);
        myself.send_interval(params.recovery_interval, || DeadLetterMsg::Recover);
        myself.send_message(DeadLetterMsg::Scan)?;
        info!(
            max_retries = params.max_retries,
            "dead-letter actor started"
        );
        Ok(DeadLetterState {
            params,
            scanned_until_ms: 0,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let liveness = state.params.liveness.clone();
        let _busy = liveness.busy();
        match message {
            DeadLetterMsg::Scan => {
                if let Err(error) = scan(state).await {
                    warn!(%error, "failed to scan for dead jobs");
                }
            }
            DeadLetterMsg::Recover => {
                if let Err(error) = recover(&state.params).await {
                    warn!(%error, "dead-letter recovery pass failed");
                }
            }
            DeadLetterMsg::RunPass(reply) => {
                let result = async {
                    let num_stored = scan(state).await?;
                    let mut report = recover(&state.params).await?;
                    report.num_stored = num_stored;
                    Ok(report)
                }
                .await;
                let _ = reply.send(result);
            }
            DeadLetterMsg::ChaosPanic => panic!("dead-letter actor panicked on purpose (chaos)"),
            DeadLetterMsg::ChaosFail => {
                return Err("dead-letter actor failed on purpose (chaos)".into());
            }
            DeadLetterMsg::ChaosHang(duration) => tokio::time::sleep(duration).await,
        }
        Ok(())
    }
}

/// Stores a dead letter for every job that ended dead or failed since the last scan.
async fn scan(state: &mut DeadLetterState) -> Result<usize, StoreError> {
    let params = &state.params;
    let mut num_stored = 0;
    loop {
        let since_ms = state.scanned_until_ms.saturating_sub(SCAN_OVERLAP_MS);
        let jobs = params
            .store
            .jobs_to_dead_letter(since_ms, params.batch_size)
            .await?;
        let num_jobs = jobs.len();
        for job in jobs {
            if store_local_letter(params, &job).await? {
                num_stored += 1;
            }
            if let Some(finished_at_ms) = job.finished_at_ms {
                state.scanned_until_ms = state.scanned_until_ms.max(finished_at_ms);
            }
        }
        if num_jobs < params.batch_size as usize {
            break;
        }
    }
    if num_stored > 0 {
        refresh_depth(&params.store).await;
    }
    Ok(num_stored)
}

/// Returns the job as it was submitted: what requeueing sends again.
fn local_message(job: &Job) -> String {
    json!({
        "id": job.id,
        "kind": job.kind,
        "payload": job.payload,
        "idempotency_key": job.idempotency_key,
        "request_id": job.request_id,
        "attempts": job.attempts,
        "max_attempts": job.max_attempts,
    })
    .to_string()
}

async fn store_local_letter(params: &DeadLetterParams, job: &Job) -> Result<bool, StoreError> {
    let source_key = format!("job:{}", job.id);
    let retry_count = params
        .store
        .get_dead_letter_by_key(&source_key)
        .await?
        .map_or(0, |letter| letter.retry_count);
    // `dead`: retriable errors until the attempts ran out; `failed`: an error retrying cannot fix.
    let retriable = job.status == JobStatus::Dead;
    let can_retry = retriable && retry_count < params.max_retries as i32;
    let now_ms = now_ms();
    let letter = NewDeadLetter {
        source: "local",
        source_key,
        job_id: job.id.clone(),
        queue: LOCAL_QUEUE.to_owned(),
        kind: job.kind.clone(),
        message: local_message(job),
        headers: None,
        error_code: job
            .error_code
            .clone()
            .unwrap_or_else(|| "INTERNAL_ERROR".to_owned()),
        error_message: job.error_message.clone().unwrap_or_default(),
        retriable,
        request_id: job.request_id.clone(),
        trace_id: None,
        status: if can_retry { "pending" } else { "parked" },
        next_retry_at_ms: can_retry.then(|| {
            let attempt = u32::try_from(retry_count + 1).unwrap_or(1);
            now_ms + params.retry.delay_after(attempt).as_millis() as i64
        }),
        dead_at_ms: job.finished_at_ms.unwrap_or(now_ms),
    };
    let stored = params.store.upsert_dead_letter(&letter).await?;
    if stored {
        DeadLetterEvent {
            kind: DeadLetterEventKind::DeadLettered,
            queue: LOCAL_QUEUE,
            job_id: &job.id,
        }
        .emit();
        if !can_retry {
            DeadLetterEvent {
                kind: DeadLetterEventKind::Parked,
                queue: LOCAL_QUEUE,
                job_id: &job.id,
            }
            .emit();
        }
    }
    Ok(stored)
}

/// Marks recovered letters, then retries due ones or parks those out of retries.
async fn recover(params: &DeadLetterParams) -> Result<DeadLetterReport, StoreError> {
    let mut report = DeadLetterReport::default();
    for (queue, num_recovered) in params.store.mark_recovered_dead_letters().await? {
        report.num_recovered += num_recovered as usize;
        DeadLetterEvent::recovered(&queue, num_recovered as u64);
    }
    let due = params
        .store
        .due_dead_letters(now_ms(), params.batch_size)
        .await?;
    for letter in due {
        if letter.retry_count >= params.max_retries as i32 {
            if params
                .store
                .transition_dead_letter(&letter.id, &["pending"], "parked", 0)
                .await?
            {
                report.num_parked += 1;
                DeadLetterEvent {
                    kind: DeadLetterEventKind::Parked,
                    queue: &letter.queue,
                    job_id: &letter.job_id,
                }
                .emit();
            }
            continue;
        }
        if requeue(
            params.store.clone(),
            &params.job_runner,
            &letter,
            &["pending"],
            "retrying",
        )
        .await?
        {
            report.num_retried += 1;
        }
    }
    if report != DeadLetterReport::default() {
        refresh_depth(&params.store).await;
    }
    Ok(report)
}

/// Sends a dead letter's job again under its original id, moving the letter from one of
/// `from_statuses` to `to_status` (`retrying` for automatic retries, counted; `requeued` for
/// an operator). Returns false when another caller moved it first or it cannot be requeued.
pub async fn requeue(
    store: Store,
    job_runner: &JobRunnerHandle,
    letter: &DeadLetter,
    from_statuses: &[&str],
    to_status: &str,
) -> Result<bool, StoreError> {
    if letter.source != "local" {
        // Broker letters go back through the broker; this node has no publisher for them.
        warn!(
            dead_letter_id = letter.id,
            queue = letter.queue,
            "cannot requeue a broker dead letter on this node"
        );
        return Ok(false);
    }
    let retry_increment = i32::from(to_status == "retrying");
    if !store
        .transition_dead_letter(&letter.id, from_statuses, to_status, retry_increment)
        .await?
    {
        return Ok(false);
    }
    let requeued = store.requeue_failed_job(&letter.job_id).await?;
    if requeued {
        job_runner.notify();
    }
    info!(
        dead_letter_id = letter.id,
        job_id = letter.job_id,
        status = to_status,
        requeued,
        "dead letter requeued"
    );
    Ok(true)
}

/// Publishes the dead-letter depth per queue (letters not yet recovered).
pub async fn refresh_depth(store: &Store) {
    match store.count_dead_letters().await {
        Ok(counts) => {
            let mut depth: Vec<(String, i64)> = Vec::new();
            for count in counts {
                let open = matches!(count.status.as_str(), "pending" | "retrying" | "parked");
                let open_count = if open { count.count } else { 0 };
                match depth.iter_mut().find(|(queue, _)| *queue == count.queue) {
                    Some((_, total)) => *total += open_count,
                    None => depth.push((count.queue, open_count)),
                }
            }
            for (queue, total) in depth {
                record_dead_letter_depth(&queue, total);
            }
        }
        Err(error) => warn!(%error, "failed to count dead letters"),
    }
}

/// Reaches the dead-letter actor by its registered name.
#[derive(Debug, Clone)]
pub struct DeadLetterHandle {
    name: String,
}

impl DeadLetterHandle {
    pub fn new(name: impl Into<String>) -> Self {
        DeadLetterHandle { name: name.into() }
    }

    fn actor(&self) -> Option<ActorRef<DeadLetterMsg>> {
        registry::where_is(self.name.clone()).map(ActorRef::from)
    }

    /// Runs a scan and recovery pass now; `None` when the actor is not running.
    pub async fn run_pass(&self) -> Option<Result<DeadLetterReport, StoreError>> {
        let actor = self.actor()?;
        match actor
            .call(DeadLetterMsg::RunPass, Some(Duration::from_secs(60)))
            .await
        {
            Ok(ractor::rpc::CallResult::Success(result)) => Some(result),
            _ => None,
        }
    }
}
