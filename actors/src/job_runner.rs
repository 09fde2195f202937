use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bulwark_core::{HandledMessage, Liveness, TraceContext};
use bulwark_store::{Job, JobTransport, Store};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, registry};
use tracing::{Instrument, debug, error, info, info_span, warn};

use crate::attempt::{AttemptCore, RetryPolicy};
use crate::metrics::{NodeHeartbeat, QueueDepthRead};
use crate::{DescribeMessage, InFlightJobs, JobExecutor};

/// Claims jobs from the transport in batches, up to twice `concurrency` ahead (one batch runs
/// while the next waits for a slot), and runs each as a task through the [`AttemptCore`], at
/// most `concurrency` executing at once (the slots of [`InFlightJobs::slots`]).
///
/// The actor itself only claims, renews leases and drains; the job tasks record their own
/// outcomes through the transport, so a runner restart never loses a finished result, and the
/// [`InFlightJobs`] set outlives the actor. A job's slot is free as soon as its code returns;
/// its outcome is then group-committed with its neighbours' while the slot runs the next job.
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
    /// Where cancels reach this node's attempts.
    pub controls: crate::JobControls,
}

#[derive(Debug)]
pub struct JobRunnerState {
    params: JobRunnerParams,
    core: Arc<AttemptCore>,
}

/// Jobs claimed ahead, as a multiple of `concurrency`: while one batch runs, the next waits for
/// its slots, so a slot never idles for a claim's round trip.
const PREFETCH_FACTOR: usize = 2;

/// A job progressed: claim more once a quarter of `concurrency` can be claimed.
const MIN_CLAIM_FRACTION: usize = 4;

/// At most this many times `concurrency` jobs wait for their outcome's write before the runner
/// stops claiming (the store is slower than the jobs).
const MAX_RECORDING_FACTOR: usize = 4;

#[derive(Debug)]
pub enum JobRunnerMsg {
    /// Looks for runnable jobs now (sent on a timer, on submit and on a database notification).
    Poll,
    /// A job's code returned, or its outcome was stored: claims more when a batch's worth of
    /// room is free.
    JobProgressed,
    RenewLeases,
    RefreshQueueDepth,
    /// Stops claiming, waits up to `timeout` for running jobs, releases the rest.
    Drain {
        timeout: Duration,
        reply: RpcReplyPort<DrainReport>,
    },
}

impl DescribeMessage for JobRunnerMsg {
    fn describe(&self) -> HandledMessage {
        let (message_type, summary) = match self {
            JobRunnerMsg::Poll => ("JobRunnerMsg::Poll", "look for runnable jobs".to_owned()),
            JobRunnerMsg::JobProgressed => (
                "JobRunnerMsg::JobProgressed",
                "claim after a job ran".to_owned(),
            ),
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
        let core = Arc::new(AttemptCore {
            executor: params.executor.clone(),
            retry: params.retry,
            record_deadline: params.lease / 2,
            controls: params.controls.clone(),
        });
        Ok(JobRunnerState { params, core })
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
            JobRunnerMsg::Poll => poll(&myself, state, 1).await,
            JobRunnerMsg::JobProgressed => {
                let min_batch = (state.params.concurrency / MIN_CLAIM_FRACTION).max(1);
                poll(&myself, state, min_batch).await;
            }
            JobRunnerMsg::RenewLeases => renew_leases(&state.params).await,
            JobRunnerMsg::RefreshQueueDepth => refresh_queue_depth(state).await,
            JobRunnerMsg::Drain { timeout, reply } => {
                let params = &state.params;
                params.draining.store(true, Ordering::SeqCst);
                // Claimed jobs still waiting for a slot go back to the queue at once.
                params.in_flight.close_slots();
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

/// Claims as many jobs as there are free slots, when at least `min_batch` are free, and starts
/// each as a task.
async fn poll(myself: &ActorRef<JobRunnerMsg>, state: &JobRunnerState, min_batch: usize) {
    let params = &state.params;
    if params.draining.load(Ordering::SeqCst) {
        return;
    }
    let free_slots =
        (params.concurrency * PREFETCH_FACTOR).saturating_sub(params.in_flight.num_executing());
    let free_room =
        (params.concurrency * MAX_RECORDING_FACTOR).saturating_sub(params.in_flight.len());
    let free = free_slots.min(free_room);
    if free == 0 || free < min_batch {
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
    debug!(free, num_claimed = jobs.len(), "claimed jobs");
    for job in jobs {
        let job_id = job.id.clone();
        params.in_flight.spawn(
            &job_id,
            run_job(params.clone(), state.core.clone(), myself.clone(), job),
        );
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

/// Reports queued and running jobs per kind and the oldest due job's wait (read from the
/// index of live rows), and this node's heartbeat.
async fn refresh_queue_depth(state: &JobRunnerState) {
    let now_ms = bulwark_core::now_ms();
    NodeHeartbeat { now_ms }.emit();
    match state.params.store.count_live_jobs(now_ms).await {
        Ok(counts) => QueueDepthRead {
            counts: &counts,
            now_ms,
        }
        .emit(),
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
    if tokio::time::timeout(timeout, in_flight.wait_finished())
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

/// Runs one claimed job to a recorded outcome through the attempt core, once one of the node's
/// slots is free; the runner is told as soon as the job's code returned, so it can claim the
/// next while the outcome is written. A job still waiting when a drain closes the slots goes
/// back to the queue without counting the attempt.
async fn run_job(
    params: JobRunnerParams,
    core: Arc<AttemptCore>,
    runner: ActorRef<JobRunnerMsg>,
    job: Job,
) {
    let span = info_span!(
        "job",
        job_id = %job.id,
        kind = %job.kind,
        attempt = job.attempts,
        request_id = job.request_id.as_deref().unwrap_or(""),
        trace_id = job.trace_id.as_deref().unwrap_or(""),
    );
    // The row keeps the submission's trace id, not its span: the attempt joins the job's
    // trace under a parent span the store does not record.
    if let Some(trace_id) = &job.trace_id {
        TraceContext {
            traceparent: Some(bulwark_core::traceparent_in(trace_id)),
            tracestate: None,
        }
        .adopt_as_parent(&span);
    }
    let slots = params.in_flight.slots(params.concurrency);
    let Ok(slot) = slots.acquire_owned().await else {
        if let Err(error) = params
            .transport
            .release(std::slice::from_ref(&job.id))
            .await
        {
            warn!(%error, job_id = %job.id, "failed to release a job that never started, its lease will expire");
        }
        params.in_flight.remove(&job.id);
        return;
    };
    let on_executed = || {
        drop(slot);
        params.in_flight.executed(&job.id);
        if !params.draining.load(Ordering::SeqCst) {
            let _ = runner.send_message(JobRunnerMsg::JobProgressed);
        }
    };
    core.run(params.transport.as_ref(), &job, on_executed)
        .instrument(span)
        .await;
    params.in_flight.remove(&job.id);
    // The runner may have stopped claiming while too many outcomes waited for their write.
    if !params.draining.load(Ordering::SeqCst) {
        let _ = runner.send_message(JobRunnerMsg::JobProgressed);
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
