//! [`JobPrunerActor`]: deletes finished jobs once they are older than their status's retention,
//! or than their own result TTL, in small batches, so the jobs table holds the recent history
//! only.

use std::time::Duration;

use bulwark_core::{HandledMessage, Liveness, now_ms};
use bulwark_store::{JobStatus, Store, StoreError};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, registry};
use tracing::{debug, info, warn};

use crate::describe::DescribeMessage;
use crate::metrics::{JobResultsExpired, JobsPruned};

/// How long finished jobs are kept, by status; `None` keeps them for ever.
#[derive(Debug, Clone, PartialEq)]
pub struct RetentionPolicy {
    pub succeeded: Option<Duration>,
    pub failed: Option<Duration>,
    pub dead: Option<Duration>,
    pub cancelled: Option<Duration>,
    /// Rows deleted per statement: small, so a pass never holds many locks or a long
    /// transaction, and live work goes on between batches.
    pub batch_size: u32,
    /// Batches per status per pass at most; what is left waits for the next pass.
    pub max_batches_per_pass: u32,
}

impl RetentionPolicy {
    /// Returns each finished status with its retention, for the statuses that are pruned.
    fn ages(&self) -> impl Iterator<Item = (JobStatus, Duration)> + '_ {
        [
            (JobStatus::Succeeded, self.succeeded),
            (JobStatus::Failed, self.failed),
            (JobStatus::Dead, self.dead),
            (JobStatus::Cancelled, self.cancelled),
        ]
        .into_iter()
        .filter_map(|(status, age_opt)| age_opt.map(|age| (status, age)))
    }
}

#[derive(Debug, Default, Clone, Copy)]
pub struct JobPrunerActor;

#[derive(Debug, Clone)]
pub struct JobPrunerParams {
    pub store: Store,
    pub policy: RetentionPolicy,
    /// Time between passes; the first pass runs at start.
    pub interval: Duration,
    pub liveness: Liveness,
}

/// What one pass deleted, by status.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneReport {
    pub num_succeeded: u64,
    pub num_failed: u64,
    pub num_dead: u64,
    pub num_cancelled: u64,
    /// Jobs deleted because their result TTL ran out, whatever their status.
    pub num_expired: u64,
}

#[derive(Debug)]
pub enum JobPrunerMsg {
    Prune,
    /// Runs a pass now and reports what it deleted.
    RunPass(RpcReplyPort<Result<PruneReport, StoreError>>),
    /// Game-day fault (the `chaos` feature): panics, errors or hangs inside `handle`.
    #[cfg(feature = "chaos")]
    Chaos(crate::Fault),
}

impl DescribeMessage for JobPrunerMsg {
    fn describe(&self) -> HandledMessage {
        match self {
            JobPrunerMsg::Prune => {
                HandledMessage::new("JobPrunerMsg::Prune", "delete expired finished jobs")
            }
            JobPrunerMsg::RunPass(_) => HandledMessage::new("JobPrunerMsg::RunPass", "prune now"),
            #[cfg(feature = "chaos")]
            JobPrunerMsg::Chaos(fault) => fault.describe(),
        }
    }
}

impl Actor for JobPrunerActor {
    type Msg = JobPrunerMsg;
    type State = JobPrunerParams;
    type Arguments = JobPrunerParams;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        params: JobPrunerParams,
    ) -> Result<Self::State, ActorProcessingErr> {
        myself.send_interval(params.interval, || JobPrunerMsg::Prune);
        myself.send_message(JobPrunerMsg::Prune)?;
        info!(policy = ?params.policy, "job pruner started");
        Ok(params)
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        params: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let liveness = params.liveness.clone();
        let _busy = liveness.busy_with(message.describe());
        match message {
            JobPrunerMsg::Prune => {
                if let Err(error) = prune(params).await {
                    warn!(%error, "failed to prune finished jobs, trying again next pass");
                }
            }
            JobPrunerMsg::RunPass(reply) => {
                // The caller may have given up waiting; the pass is done either way.
                let _ = reply.send(prune(params).await);
            }
            #[cfg(feature = "chaos")]
            JobPrunerMsg::Chaos(fault) => fault.commit("job pruner").await?,
        }
        Ok(())
    }
}

/// Deletes every status's expired jobs in batches, up to the pass's limit.
async fn prune(params: &JobPrunerParams) -> Result<PruneReport, StoreError> {
    let policy = &params.policy;
    let mut report = PruneReport::default();
    for (status, age) in policy.ages() {
        let finished_before_ms = now_ms() - age.as_millis() as i64;
        let mut num_deleted = 0;
        for _ in 0..policy.max_batches_per_pass {
            let num_batch = params
                .store
                .prune_finished_jobs(status, finished_before_ms, policy.batch_size)
                .await?;
            num_deleted += num_batch;
            if num_batch < u64::from(policy.batch_size) {
                break;
            }
            // Lets live work take the database between batches.
            tokio::task::yield_now().await;
        }
        JobsPruned {
            status,
            num_deleted,
        }
        .emit();
        match status {
            JobStatus::Succeeded => report.num_succeeded = num_deleted,
            JobStatus::Failed => report.num_failed = num_deleted,
            JobStatus::Cancelled => report.num_cancelled = num_deleted,
            _ => report.num_dead = num_deleted,
        }
    }
    for _ in 0..policy.max_batches_per_pass {
        let num_batch = params
            .store
            .prune_expired_jobs(now_ms(), policy.batch_size)
            .await?;
        report.num_expired += num_batch;
        if num_batch < u64::from(policy.batch_size) {
            break;
        }
        tokio::task::yield_now().await;
    }
    JobResultsExpired {
        num_deleted: report.num_expired,
    }
    .emit();
    debug!(?report, "prune pass done");
    Ok(report)
}

/// Reaches the pruner by its registered name, across restarts.
#[derive(Debug, Clone)]
pub struct JobPrunerHandle {
    name: String,
}

impl JobPrunerHandle {
    pub fn new(name: impl Into<String>) -> Self {
        JobPrunerHandle { name: name.into() }
    }

    /// Runs a pass now and returns what it deleted; `None` when the pruner is not running or
    /// does not answer within `timeout`.
    pub async fn run_pass(&self, timeout: Duration) -> Option<Result<PruneReport, StoreError>> {
        let pruner: ActorRef<JobPrunerMsg> = registry::where_is(self.name.clone())?.into();
        match pruner.call(JobPrunerMsg::RunPass, Some(timeout)).await {
            Ok(ractor::rpc::CallResult::Success(result)) => Some(result),
            _ => None,
        }
    }
}
