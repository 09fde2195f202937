use std::sync::Arc;
use std::time::Duration;

use bulwark_core::{HandledMessage, Liveness, TraceContext, now_ms};
use bulwark_store::{DeadLetter, Job, JobStatus, LOCAL_QUEUE, NewDeadLetter, Store, StoreError};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, registry};
use serde_json::json;
use tracing::{info, warn};

use crate::metrics::{DeadLetterEvent, DeadLetterEventKind, record_dead_letter_depth};
use crate::{
    DescribeMessage, JobPublisher, JobRunnerHandle, PublishError, RetryPolicy, publish_and_mark,
};

/// A job's finish time may be written slightly after another node's scan passed it; each scan
/// looks this far behind the newest finish it saw (the unique key makes re-reading harmless).
const SCAN_OVERLAP_MS: i64 = 60_000;

/// Owns every job that cannot be done.
///
/// It scans the jobs table for jobs that ended `dead` or `failed` and stores each once as a
/// dead letter (unique per job, so nodes scanning the same table store it once); the broker's
/// dead-letter consumers store the messages of `<ns>.dlq.<kind>` the same way, through
/// [`DeadLetterPolicy::admit`]. A recovery pass retries pending letters whose error is
/// retriable, with exponential backoff, up to `max_retries`: a local job goes back in the queue
/// under the same id, a broker message back to its original queue with its id. After that a
/// letter is parked until an operator requeues or purges it. Letters whose retried job
/// succeeded are marked recovered.
#[derive(Debug, Default, Clone, Copy)]
pub struct DeadLetterActor;

/// What a dead-letter actor is started with.
#[derive(Debug, Clone)]
pub struct DeadLetterParams {
    pub store: Store,
    pub scan_interval: Duration,
    pub recovery_interval: Duration,
    pub policy: DeadLetterPolicy,
    pub batch_size: u32,
    /// Told about requeued jobs so they start without waiting for its poll.
    pub job_runner: JobRunnerHandle,
    /// Sends requeued broker jobs and messages back to the broker; `None` without one.
    pub publisher: Option<Arc<dyn JobPublisher>>,
    pub liveness: Liveness,
}

/// How dead letters are retried automatically before they are parked.
#[derive(Debug, Clone, Copy)]
pub struct DeadLetterPolicy {
    /// Automatic retries before a letter is parked.
    pub max_retries: u32,
    /// Spacing of automatic retries.
    pub retry: RetryPolicy,
}

impl DeadLetterPolicy {
    /// Stores a dead letter (or brings back the letter of the same source key with the new
    /// error, keeping its retry count), deciding its status here: `pending` with its next
    /// retry time while it is retriable and has retries left, `parked` otherwise. Returns true
    /// when something was written.
    pub async fn admit(
        &self,
        store: &Store,
        mut letter: NewDeadLetter,
    ) -> Result<bool, StoreError> {
        let retry_count = store
            .get_dead_letter_by_key(&letter.source_key)
            .await?
            .map_or(0, |known| known.retry_count);
        let can_retry = letter.retriable && retry_count < self.max_retries as i32;
        letter.status = if can_retry { "pending" } else { "parked" };
        letter.next_retry_at_ms = can_retry.then(|| {
            let attempt = u32::try_from(retry_count + 1).unwrap_or(1);
            now_ms() + self.retry.delay_after(attempt).as_millis() as i64
        });
        let stored = store.upsert_dead_letter(&letter).await?;
        if stored {
            DeadLetterEvent {
                kind: DeadLetterEventKind::DeadLettered,
                queue: &letter.queue,
                job_id: &letter.job_id,
            }
            .emit();
            if !can_retry {
                DeadLetterEvent {
                    kind: DeadLetterEventKind::Parked,
                    queue: &letter.queue,
                    job_id: &letter.job_id,
                }
                .emit();
            }
        }
        Ok(stored)
    }
}

/// Why a dead letter could not be requeued.
#[derive(Debug, thiserror::Error)]
pub enum RequeueError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The broker did not confirm the message; the letter keeps its status.
    #[error("the broker did not take the message back: {0}")]
    Publish(#[from] PublishError),
    /// A broker letter on a node without a broker connection.
    #[error(
        "dead letter {id} came from the broker queue {queue}, and this node has no broker \
         configured (amqp.url)"
    )]
    NoBroker { id: String, queue: String },
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
    /// Game-day fault (the `chaos` feature): panics, errors or hangs inside `handle`.
    #[cfg(feature = "chaos")]
    Chaos(crate::Fault),
}

impl DescribeMessage for DeadLetterMsg {
    fn describe(&self) -> HandledMessage {
        match self {
            DeadLetterMsg::Scan => HandledMessage::new("DeadLetterMsg::Scan", "store dead jobs"),
            DeadLetterMsg::Recover => {
                HandledMessage::new("DeadLetterMsg::Recover", "retry due dead letters")
            }
            DeadLetterMsg::RunPass(_) => {
                HandledMessage::new("DeadLetterMsg::RunPass", "scan and recover now")
            }
            #[cfg(feature = "chaos")]
            DeadLetterMsg::Chaos(fault) => fault.describe(),
        }
    }
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
            max_retries = params.policy.max_retries,
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
        let _busy = liveness.busy_with(message.describe());
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
                // Every pass, whatever it did or failed to do: the broker's dead-letter
                // consumers refresh the gauge at most once a second, so the last letters of a
                // burst show up here.
                refresh_depth(&state.params.store).await;
            }
            DeadLetterMsg::RunPass(reply) => {
                let result = async {
                    let num_stored = scan(state).await?;
                    let mut report = recover(&state.params).await?;
                    refresh_depth(&state.params.store).await;
                    report.num_stored = num_stored;
                    Ok(report)
                }
                .await;
                let _ = reply.send(result);
            }
            #[cfg(feature = "chaos")]
            DeadLetterMsg::Chaos(fault) => fault.commit("dead-letter actor").await?,
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
    let letter = NewDeadLetter {
        source: "local",
        source_key: format!("job:{}", job.id),
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
        // `dead`: retriable errors until the attempts ran out; `failed`: an error retrying
        // cannot fix.
        retriable: job.status == JobStatus::Dead,
        request_id: job.request_id.clone(),
        trace_id: job.trace_id.clone(),
        status: "pending",
        next_retry_at_ms: None,
        dead_at_ms: job.finished_at_ms.unwrap_or_else(now_ms),
    };
    params.policy.admit(&params.store, letter).await
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
        if letter.retry_count >= params.policy.max_retries as i32 {
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
        let target = RequeueTarget {
            store: &params.store,
            job_runner: &params.job_runner,
            publisher: params.publisher.as_deref(),
        };
        match requeue(&target, &letter, &["pending"], "retrying").await {
            Ok(true) => report.num_retried += 1,
            Ok(false) => {}
            Err(RequeueError::Store(error)) => return Err(error),
            // The letter stays pending and is tried again on a later pass.
            Err(error) => warn!(%error, dead_letter_id = letter.id, "automatic retry failed"),
        }
    }
    Ok(report)
}

/// Where requeued dead letters go.
#[derive(Debug, Clone, Copy)]
pub struct RequeueTarget<'a> {
    pub store: &'a Store,
    /// Told about requeued local jobs so they start without waiting for its poll.
    pub job_runner: &'a JobRunnerHandle,
    /// Publishes requeued broker jobs and messages; `None` on a node without a broker.
    pub publisher: Option<&'a dyn JobPublisher>,
}

/// Sends a dead letter's job again under its original id, moving the letter from one of
/// `from_statuses` to `to_status` (`retrying` for automatic retries, counted; `requeued` for
/// an operator). Returns false when another caller moved it first.
///
/// A local letter's job goes back in the queue; when the broker carries it, it is published
/// again (or left in the outbox for a republisher when this node cannot). A broker letter's
/// message is published back to its original queue with its message id, so the job's
/// idempotency holds; if the broker does not confirm, the letter keeps its status.
pub async fn requeue(
    target: &RequeueTarget<'_>,
    letter: &DeadLetter,
    from_statuses: &[&str],
    to_status: &str,
) -> Result<bool, RequeueError> {
    let is_broker = letter.source != "local";
    if is_broker && target.publisher.is_none() {
        return Err(RequeueError::NoBroker {
            id: letter.id.clone(),
            queue: letter.queue.clone(),
        });
    }
    let retry_increment = i32::from(to_status == "retrying");
    let store = target.store;
    if !store
        .transition_dead_letter(&letter.id, from_statuses, to_status, retry_increment)
        .await?
    {
        return Ok(false);
    }
    if let (true, Some(publisher)) = (is_broker, target.publisher) {
        if let Err(error) = publisher.publish_dead_letter(letter).await {
            // Back to where it was, so it is neither lost nor counted as a retry.
            store
                .transition_dead_letter(&letter.id, &[to_status], &letter.status, -retry_increment)
                .await?;
            return Err(error.into());
        }
        info!(
            dead_letter_id = letter.id,
            queue = letter.queue,
            status = to_status,
            "broker dead letter published back to its queue"
        );
        return Ok(true);
    }
    let requeued = store.requeue_failed_job(&letter.job_id).await?;
    match (&requeued, target.publisher) {
        (Some(requeued), Some(publisher)) if requeued.broker_routed => {
            // Unconfirmed, it stays in the outbox for the republisher.
            publish_and_mark(store, publisher, &requeued.job, &TraceContext::default()).await;
        }
        (Some(_), _) => target.job_runner.notify(),
        (None, _) => {}
    }
    info!(
        dead_letter_id = letter.id,
        job_id = letter.job_id,
        status = to_status,
        requeued = requeued.is_some(),
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
