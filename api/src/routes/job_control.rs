//! Cancelling jobs (one, or every job matching a filter) and pausing or resuming a kind on
//! every node. Both are stored, so they hold across nodes and restarts; operators' bulk
//! cancels and pauses are written to the operator audit log.

use std::sync::Arc;

use bulwark_core::{JobKind, format_rfc3339_ms};
use bulwark_store::{
    CancelCount, CancelFilter, CancelOutcome, JobStatus, NewOpsAuditEntry, PausedKind,
};
use poem::web::Data;
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::{Enum, Object, OpenApi};

use crate::ApiTags;
use crate::auth::{OperateKey, ReadKey, SubmitKey};
use crate::error::{ApiError, ApiResult};
use crate::middleware::RequestId;
use crate::routes::jobs::{JobKindName, JobView};
use crate::state::ApiState;
use crate::strict_json::StrictJson;

/// What a cancel did to its job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
pub enum CancelResultName {
    /// It was queued: it is `cancelled` and never runs.
    Cancelled,
    /// It is running: the node running it stops it within `jobs.control_interval_ms` plus
    /// `jobs.cancel_grace_ms`, and it ends `cancelled`.
    CancelRequested,
    /// It had already finished; nothing changed.
    AlreadyFinished,
}

/// A cancelled job.
#[derive(Debug, Clone, Object)]
pub struct CancelResult {
    pub outcome: CancelResultName,
    pub job: JobView,
}

/// The unfinished statuses a bulk cancel can be limited to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "lowercase")]
pub enum UnfinishedStatusName {
    Queued,
    Running,
}

/// The kind a bulk cancel selects: one kind, or `*` for every kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
pub enum KindSelector {
    #[oai(rename = "*")]
    Every,
    #[oai(rename = "sentiment.analyze")]
    SentimentAnalyze,
    #[oai(rename = "provider.complete")]
    ProviderComplete,
    #[oai(rename = "audit.run")]
    AuditRun,
    #[oai(rename = "sentiment.aggregate")]
    SentimentAggregate,
}

impl KindSelector {
    /// Returns the kind selected; `None` for every kind.
    fn kind(self) -> Option<JobKind> {
        match self {
            KindSelector::Every => None,
            KindSelector::SentimentAnalyze => Some(JobKind::SentimentAnalyze),
            KindSelector::ProviderComplete => Some(JobKind::ProviderComplete),
            KindSelector::AuditRun => Some(JobKind::AuditRun),
            KindSelector::SentimentAggregate => Some(JobKind::SentimentAggregate),
        }
    }
}

/// Which unfinished jobs to cancel. `kind` is required, so that cancelling every unfinished
/// job is asked for by name (`"*"`), never by an empty filter.
#[derive(Debug, Clone, Object)]
#[oai(deny_unknown_fields)]
pub struct BulkCancel {
    /// A job kind, or `*` for every kind.
    pub kind: KindSelector,
    /// Only jobs in this status; both when absent.
    pub status: Option<UnfinishedStatusName>,
    /// Counts what the cancel would touch without changing anything (a confirmation step).
    #[oai(default)]
    pub dry_run: bool,
}

/// What a bulk cancel did (or, with `dry_run`, would do).
#[derive(Debug, Clone, Object)]
pub struct BulkCancelResult {
    /// Queued jobs cancelled (that would be).
    pub num_cancelled: u64,
    /// Running jobs asked to stop (that would be).
    pub num_cancel_requested: u64,
    pub dry_run: bool,
}

/// A paused kind.
#[derive(Debug, Clone, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct PausedKindView {
    pub kind: String,
    /// RFC 3339.
    pub paused_at: String,
    /// The key that paused it.
    pub paused_by: Option<String>,
}

impl From<PausedKind> for PausedKindView {
    fn from(paused: PausedKind) -> Self {
        PausedKindView {
            kind: paused.kind,
            paused_at: format_rfc3339_ms(paused.paused_at_ms),
            paused_by: paused.paused_by,
        }
    }
}

/// The kinds paused now.
#[derive(Debug, Clone, Object)]
pub struct PausedKinds {
    pub paused: Vec<PausedKindView>,
}

/// A kind's pause state after a pause or resume.
#[derive(Debug, Clone, Object)]
pub struct KindPauseState {
    pub kind: String,
    pub paused: bool,
    /// False when it already was in that state.
    pub changed: bool,
}

pub struct JobControlApi {
    pub state: Arc<ApiState>,
}

/// An operator's control, as the audit log records it.
struct ControlRecord {
    action: &'static str,
    target: String,
    detail: String,
}

impl JobControlApi {
    /// Pauses or resumes `kind` on every node and records it in the audit log.
    async fn set_paused(
        &self,
        auth: &OperateKey,
        request_id: &RequestId,
        kind: JobKind,
        paused: bool,
    ) -> ApiResult<Json<KindPauseState>> {
        let store = &self.state.store;
        let kind = kind.as_str();
        let (changed, action, detail) = if paused {
            let by = format!("key:{}", auth.0.name);
            let changed = store.pause_kind(kind, Some(&by)).await?;
            (
                changed,
                "pause_kind",
                if changed { "paused" } else { "already paused" },
            )
        } else {
            let changed = store.resume_kind(kind).await?;
            (
                changed,
                "resume_kind",
                if changed { "resumed" } else { "was not paused" },
            )
        };
        let record = ControlRecord {
            action,
            target: kind.to_owned(),
            detail: detail.to_owned(),
        };
        self.audit(auth, request_id, record).await?;
        if changed && !paused {
            // This node's runner claims the kind's waiting jobs now, not at its next poll.
            self.state.job_runner.notify();
        }
        Ok(Json(KindPauseState {
            kind: kind.to_owned(),
            paused,
            changed,
        }))
    }

    /// Records an operator's control in the audit log.
    async fn audit(
        &self,
        auth: &OperateKey,
        request_id: &RequestId,
        record: ControlRecord,
    ) -> ApiResult<()> {
        let entry = NewOpsAuditEntry {
            actor: format!("key:{}", auth.0.name),
            action: record.action.to_owned(),
            target: record.target,
            outcome: "succeeded".to_owned(),
            detail: Some(record.detail),
            request_id: Some(request_id.0.clone()),
        };
        self.state.store.record_ops_action(&entry).await?;
        Ok(())
    }
}

#[OpenApi(tag = "ApiTags::Jobs")]
impl JobControlApi {
    /// Cancels a job.
    ///
    /// A queued job ends `cancelled` at once and never runs (over RabbitMQ its message is
    /// acked without running). A running job is asked to stop: the node running it signals
    /// its attempt within `jobs.control_interval_ms`, gives it `jobs.cancel_grace_ms` to stop
    /// by itself, then aborts it (its provider calls and inference waits are dropped); it
    /// ends `cancelled`. A finished job is returned unchanged.
    #[oai(
        path = "/v1/jobs/:id/cancel",
        method = "post",
        operation_id = "cancel_job"
    )]
    async fn cancel(&self, _auth: SubmitKey, id: Path<String>) -> ApiResult<Json<CancelResult>> {
        let Some(outcome) = self.state.store.cancel_job(&id.0).await? else {
            return Err(ApiError::not_found(format!("job {} does not exist", id.0)));
        };
        let name = match &outcome {
            CancelOutcome::Cancelled(_) => CancelResultName::Cancelled,
            CancelOutcome::Requested(_) => CancelResultName::CancelRequested,
            CancelOutcome::Finished(_) => CancelResultName::AlreadyFinished,
        };
        let job = match outcome {
            CancelOutcome::Cancelled(job)
            | CancelOutcome::Requested(job)
            | CancelOutcome::Finished(job) => job,
        };
        Ok(Json(CancelResult {
            outcome: name,
            job: job.into(),
        }))
    }

    /// Cancels every unfinished job of a kind (or of every kind, `*`), optionally in one status.
    ///
    /// Queued jobs end `cancelled`; running ones are asked to stop (see `cancel_job`). With
    /// `dry_run`, returns the counts without changing anything. Needs the `operate` scope;
    /// recorded in the operator audit log.
    #[oai(
        path = "/v1/jobs/cancel",
        method = "post",
        operation_id = "cancel_jobs"
    )]
    async fn cancel_many(
        &self,
        auth: OperateKey,
        body: StrictJson<BulkCancel>,
        request_id: Data<&RequestId>,
    ) -> ApiResult<Json<BulkCancelResult>> {
        let request = body.0;
        let filter = CancelFilter {
            kind: request.kind.kind().map(|kind| kind.as_str().to_owned()),
            status: request.status.map(|status| match status {
                UnfinishedStatusName::Queued => JobStatus::Queued,
                UnfinishedStatusName::Running => JobStatus::Running,
            }),
        };
        let count: CancelCount = if request.dry_run {
            self.state.store.count_cancellable_jobs(&filter).await?
        } else {
            let count = self.state.store.cancel_jobs(&filter).await?;
            let target = format!(
                "jobs kind={} status={}",
                filter.kind.as_deref().unwrap_or("*"),
                filter.status.map_or("*", JobStatus::as_str)
            );
            let detail = format!(
                "{} cancelled, {} asked to stop",
                count.num_cancelled, count.num_requested
            );
            self.audit(
                &auth,
                &request_id,
                ControlRecord {
                    action: "cancel_jobs",
                    target,
                    detail,
                },
            )
            .await?;
            count
        };
        Ok(Json(BulkCancelResult {
            num_cancelled: count.num_cancelled,
            num_cancel_requested: count.num_requested,
            dry_run: request.dry_run,
        }))
    }

    /// Lists the paused kinds.
    #[oai(
        path = "/v1/kinds/paused",
        method = "get",
        operation_id = "list_paused_kinds"
    )]
    async fn paused(&self, _auth: ReadKey) -> ApiResult<Json<PausedKinds>> {
        let paused = self.state.store.paused_kinds().await?;
        Ok(Json(PausedKinds {
            paused: paused.into_iter().map(Into::into).collect(),
        }))
    }

    /// Pauses a kind on every node.
    ///
    /// Its jobs wait, none is lost: the database queue stops claiming them, and over RabbitMQ
    /// each node parks the kind's deliveries in the outbox (acked, stored queued) until it is
    /// resumed. Running jobs finish. Reaches every node within `jobs.control_interval_ms`;
    /// survives restarts. Needs the `operate` scope; recorded in the operator audit log.
    #[oai(
        path = "/v1/kinds/:kind/pause",
        method = "post",
        operation_id = "pause_kind"
    )]
    async fn pause(
        &self,
        auth: OperateKey,
        kind: Path<JobKindName>,
        request_id: Data<&RequestId>,
    ) -> ApiResult<Json<KindPauseState>> {
        self.set_paused(&auth, &request_id, JobKind::from(kind.0), true)
            .await
    }

    /// Resumes a paused kind on every node: its waiting jobs run again (over RabbitMQ, the
    /// republisher publishes the parked ones). Needs the `operate` scope.
    #[oai(
        path = "/v1/kinds/:kind/resume",
        method = "post",
        operation_id = "resume_kind"
    )]
    async fn resume(
        &self,
        auth: OperateKey,
        kind: Path<JobKindName>,
        request_id: Data<&RequestId>,
    ) -> ApiResult<Json<KindPauseState>> {
        self.set_paused(&auth, &request_id, JobKind::from(kind.0), false)
            .await
    }
}
