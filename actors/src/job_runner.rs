use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBuilder};
use bulwark_store::{Job, JobFailure, JobStatus, JobTransport, Store, now_ms};
use futures::FutureExt;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, registry};
use serde_json::Value;
use tracing::{Instrument, error, info, info_span, warn};

use crate::metrics::{JobAttemptFinished, JobOutcome, record_queue_depth};
use crate::{ErrorCode, HandledMessage, InFlightJobs, JobError, JobExecutor, Liveness};

/// How failed attempts are spaced: exponential from `base`, capped at `max`, with full jitter.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub base: Duration,
    pub max: Duration,
}

impl RetryPolicy {
    /// Returns the delay before retrying after attempt number `attempt` (1-based).
    pub fn delay_after(&self, attempt: u32) -> Duration {
        let mut delays = ExponentialBuilder::default()
            .with_min_delay(self.base)
            .with_max_delay(self.max)
            .with_factor(2.0)
            .with_jitter()
            .without_max_times()
            .build();
        delays
            .nth(attempt.saturating_sub(1) as usize)
            .unwrap_or(self.max)
            .min(self.max)
    }
}

/// Claims jobs from the transport and runs each as a task, up to `concurrency` at once.
///
/// The actor itself only claims, renews leases and drains; the job tasks record their own
/// outcomes through the transport, so a runner restart never loses a finished result, and the
/// [`InFlightJobs`] set outlives the actor.
#[derive(Debug, Default, Clone, Copy)]
pub struct JobRunnerActor;

/// What a job runner is started with. Cloned on every restart: the shared parts
/// (`in_flight`, `draining`, `liveness`) are the same across restarts.
#[derive(Debug, Clone)]
pub struct JobRunnerParams {
    pub transport: Arc<dyn JobTransport>,
    /// Used for queue-depth metrics.
    pub store: Store,
    pub executor: JobExecutor,
    pub concurrency: usize,
    pub poll_interval: Duration,
    pub lease: Duration,
    pub retry: RetryPolicy,
    pub in_flight: InFlightJobs,
    pub draining: Arc<AtomicBool>,
    pub liveness: Liveness,
}

#[derive(Debug)]
pub struct JobRunnerState {
    params: JobRunnerParams,
}

#[derive(Debug)]
pub enum JobRunnerMsg {
    /// Looks for runnable jobs now (sent on a timer, on submit and when a job finishes).
    Poll,
    RenewLeases,
    RefreshQueueDepth,
    /// Stops claiming, waits up to `timeout` for running jobs, releases the rest.
    Drain {
        timeout: Duration,
        reply: RpcReplyPort<DrainReport>,
    },
}

impl JobRunnerMsg {
    /// Describes the message for hang and crash reports.
    fn describe(&self) -> HandledMessage {
        let (message_type, summary) = match self {
            JobRunnerMsg::Poll => ("JobRunnerMsg::Poll", "look for runnable jobs".to_owned()),
            JobRunnerMsg::RenewLeases => ("JobRunnerMsg::RenewLeases", "renew leases".to_owned()),
            JobRunnerMsg::RefreshQueueDepth => (
                "JobRunnerMsg::RefreshQueueDepth",
                "count jobs for queue depth".to_owned(),
            ),
            JobRunnerMsg::Drain { timeout, .. } => (
                "JobRunnerMsg::Drain",
                format!("drain within {} ms", timeout.as_millis()),
            ),
        };
        HandledMessage::new(message_type, summary)
    }
}

/// What a drain did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrainReport {
    /// Jobs that finished during the drain.
    pub num_finished: usize,
    /// Jobs handed back to the queue because they did not finish in time.
    pub num_released: usize,
}

impl Actor for JobRunnerActor {
    type Msg = JobRunnerMsg;
    type State = JobRunnerState;
    type Arguments = JobRunnerParams;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        params: JobRunnerParams,
    ) -> Result<Self::State, ActorProcessingErr> {
        // A runner started again after an operator's drain-and-restart claims work again.
        params.draining.store(false, Ordering::SeqCst);
        myself.send_interval(params.poll_interval, || JobRunnerMsg::Poll);
        myself.send_interval(params.lease / 3, || JobRunnerMsg::RenewLeases);
        myself.send_interval(Duration::from_secs(5), || JobRunnerMsg::RefreshQueueDepth);
        myself.send_message(JobRunnerMsg::Poll)?;
        myself.send_message(JobRunnerMsg::RefreshQueueDepth)?;
        info!(
            owner = params.transport.owner(),
            concurrency = params.concurrency,
            "job runner started"
        );
        Ok(JobRunnerState { params })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let params = &state.params;
        let _busy = params.liveness.busy_with(message.describe());
        match message {
            JobRunnerMsg::Poll => poll(&myself, params).await,
            JobRunnerMsg::RenewLeases => renew_leases(params).await,
            JobRunnerMsg::RefreshQueueDepth => refresh_queue_depth(params).await,
            JobRunnerMsg::Drain { timeout, reply } => {
                params.draining.store(true, Ordering::SeqCst);
                let in_flight = params.in_flight.clone();
                let transport = params.transport.clone();
                // Waiting happens off the actor so leases keep being renewed meanwhile.
                tokio::spawn(async move {
                    let report = drain(&in_flight, transport.as_ref(), timeout).await;
                    let _ = reply.send(report);
                });
            }
        }
        Ok(())
    }
}

async fn poll(myself: &ActorRef<JobRunnerMsg>, params: &JobRunnerParams) {
    if params.draining.load(Ordering::SeqCst) {
        return;
    }
    let free = params.concurrency.saturating_sub(params.in_flight.len());
    if free == 0 {
        return;
    }
    let jobs = match params.transport.claim(free).await {
        Ok(jobs) => jobs,
        Err(error) => {
            warn!(%error, retryable = error.is_retryable(), "failed to claim jobs");
            return;
        }
    };
    let claimed_all = jobs.len() == free;
    for job in jobs {
        let job_id = job.id.clone();
        let task = tokio::spawn(run_job(params.clone(), myself.clone(), job));
        params.in_flight.insert(job_id, task.abort_handle());
    }
    // A full claim suggests more work is waiting: look again at once instead of on the timer.
    if claimed_all {
        let _ = myself.send_message(JobRunnerMsg::Poll);
    }
}

async fn renew_leases(params: &JobRunnerParams) {
    let job_ids = params.in_flight.ids();
    if job_ids.is_empty() {
        return;
    }
    if let Err(error) = params.transport.renew(&job_ids).await {
        warn!(%error, num_jobs = job_ids.len(), "failed to renew job leases");
    }
}

async fn refresh_queue_depth(params: &JobRunnerParams) {
    match params.store.count_jobs().await {
        Ok(counts) => {
            for count in counts {
                record_queue_depth(&count.kind, &count.status, count.count);
            }
        }
        Err(error) => warn!(%error, "failed to count jobs for queue depth"),
    }
}

async fn drain(
    in_flight: &InFlightJobs,
    transport: &dyn JobTransport,
    timeout: Duration,
) -> DrainReport {
    let num_running = in_flight.len();
    info!(
        num_running,
        timeout_ms = timeout.as_millis() as u64,
        "draining job runner"
    );
    if tokio::time::timeout(timeout, in_flight.wait_empty())
        .await
        .is_ok()
    {
        return DrainReport {
            num_finished: num_running,
            num_released: 0,
        };
    }
    let unfinished = in_flight.abort_all();
    let num_released = match transport.release(&unfinished).await {
        Ok(num_released) => num_released as usize,
        Err(error) => {
            error!(%error, num_jobs = unfinished.len(), "failed to release unfinished jobs, their leases will expire");
            0
        }
    };
    warn!(
        num_released,
        "released jobs that did not finish before the shutdown timeout"
    );
    DrainReport {
        num_finished: num_running.saturating_sub(unfinished.len()),
        num_released,
    }
}

/// Runs one claimed job to a recorded outcome, then asks the runner for more work.
async fn run_job(params: JobRunnerParams, runner: ActorRef<JobRunnerMsg>, job: Job) {
    let span = info_span!(
        "job",
        job_id = %job.id,
        kind = %job.kind,
        attempt = job.attempts,
        request_id = job.request_id.as_deref().unwrap_or(""),
    );
    async {
        let started = Instant::now();
        let outcome = if job.attempts > job.max_attempts {
            // Claimed again after lease expiries until attempts ran out: its worker keeps dying.
            Err(JobError::new(
                ErrorCode::InternalError,
                "attempts exhausted by expired leases",
            ))
        } else {
            match AssertUnwindSafe(params.executor.execute(&job))
                .catch_unwind()
                .await
            {
                Ok(result) => result,
                Err(_) => Err(JobError::new(
                    ErrorCode::InternalError,
                    "job execution panicked",
                )),
            }
        };
        let recorded = record_outcome(&params, &job, outcome).await;
        JobAttemptFinished {
            kind: &job.kind,
            outcome: recorded,
            duration: started.elapsed(),
        }
        .emit();
    }
    .instrument(span)
    .await;
    params.in_flight.remove(&job.id);
    if !params.draining.load(Ordering::SeqCst) {
        let _ = runner.send_message(JobRunnerMsg::Poll);
    }
}

/// What to write for an attempt.
enum Record {
    Complete(Value),
    Fail(JobFailure),
}

/// Decides what an attempt's outcome means for the job: done, retried later, or final.
fn classify(
    params: &JobRunnerParams,
    job: &Job,
    outcome: Result<Value, JobError>,
) -> (Record, JobOutcome) {
    let error = match outcome {
        Ok(result) => return (Record::Complete(result), JobOutcome::Succeeded),
        Err(error) => error,
    };
    // A node out of capacity never ran the job: it waits in the queue without losing an attempt.
    let refund_attempt = error.code == ErrorCode::Overloaded;
    let (retry_at_ms, final_status, job_outcome) = if !error.is_retryable() {
        (None, JobStatus::Failed, JobOutcome::Failed)
    } else if job.attempts >= job.max_attempts && !refund_attempt {
        (None, JobStatus::Dead, JobOutcome::Dead)
    } else {
        let delay = params
            .retry
            .delay_after(u32::try_from(job.attempts).unwrap_or(1));
        (
            Some(now_ms() + delay.as_millis() as i64),
            JobStatus::Dead,
            JobOutcome::Retried,
        )
    };
    let failure = JobFailure {
        code: error.code.as_str().to_owned(),
        message: error.message,
        retry_at_ms,
        final_status,
        refund_attempt,
    };
    (Record::Fail(failure), job_outcome)
}

/// Stores the outcome, retrying the store briefly when it is unavailable. If it stays down, the
/// lease expires and another attempt runs the job: at-least-once, never lost.
async fn record_outcome(
    params: &JobRunnerParams,
    job: &Job,
    outcome: Result<Value, JobError>,
) -> JobOutcome {
    let (record, job_outcome) = classify(params, job, outcome);
    let mut delay = Duration::from_millis(100);
    let deadline = Instant::now() + params.lease / 2;
    loop {
        let stored = match &record {
            Record::Complete(result) => params.transport.complete(job, result).await,
            Record::Fail(failure) => params.transport.fail(job, failure).await,
        };
        match stored {
            Ok(true) => return job_outcome,
            Ok(false) => return JobOutcome::LeaseLost,
            Err(error) if error.is_retryable() && Instant::now() + delay < deadline => {
                warn!(%error, "failed to store job outcome, retrying");
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            Err(error) => {
                error!(%error, "failed to store job outcome, the job will run again when its lease expires");
                return JobOutcome::LeaseLost;
            }
        }
    }
}

/// Reaches the job runner by its registered name, so it stays valid across restarts.
#[derive(Debug, Clone)]
pub struct JobRunnerHandle {
    name: String,
}

impl JobRunnerHandle {
    pub fn new(name: impl Into<String>) -> Self {
        JobRunnerHandle { name: name.into() }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn actor(&self) -> Option<ActorRef<JobRunnerMsg>> {
        registry::where_is(self.name.clone()).map(ActorRef::from)
    }

    /// Returns true when the runner is registered (running, not between restarts).
    pub fn is_running(&self) -> bool {
        self.actor().is_some()
    }

    /// Asks the runner to look for work now; a no-op if it is restarting (its timer will).
    pub fn notify(&self) {
        if let Some(actor) = self.actor() {
            let _ = actor.send_message(JobRunnerMsg::Poll);
        }
    }

    /// Drains the runner; returns `None` if no runner is alive to drain.
    pub async fn drain(&self, timeout: Duration) -> Option<DrainReport> {
        let actor = self.actor()?;
        let call_timeout = timeout + Duration::from_secs(10);
        match actor
            .call(
                |reply| JobRunnerMsg::Drain { timeout, reply },
                Some(call_timeout),
            )
            .await
        {
            Ok(ractor::rpc::CallResult::Success(report)) => Some(report),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves retry delays stay within the cap and grow with the attempt number on average.
    #[test]
    fn retry_delays_are_bounded_and_grow() {
        let policy = RetryPolicy {
            base: Duration::from_millis(100),
            max: Duration::from_secs(2),
        };
        for attempt in 1..20 {
            assert!(policy.delay_after(attempt) <= Duration::from_secs(2));
        }
        let average = |attempt| {
            (0..200)
                .map(|_| policy.delay_after(attempt).as_secs_f64())
                .sum::<f64>()
                / 200.0
        };
        assert!(average(4) > average(1), "later attempts wait longer");
    }
}
