use std::sync::Arc;
use std::time::Duration;

use bulwark_actors::validate_job;
use bulwark_core::{
    JobDefaults, JobKind, TraceContext, format_rfc3339_ms, now_ms, parse_rfc3339_ms,
};
use bulwark_store::{
    AttemptRecord, BatchInsertOutcome, InsertOutcome, Job, JobFilter, JobGraph, JobProgress,
    JobStatus, NewJob, ParentFailurePolicy, ParentRef, Store,
};
use futures::StreamExt;
use futures::stream::BoxStream;
use poem::web::Data;
use poem::web::sse::Event;
use poem_openapi::param::{Header, Path, Query};
use poem_openapi::payload::{EventStream, Json};
use poem_openapi::types::ToJSON;
use poem_openapi::{ApiResponse, Enum, Object, OpenApi};
use serde_json::Value;

use crate::ApiTags;
use crate::auth::{ReadKey, SubmitKey};
use crate::error::{ApiError, ApiResult};
use crate::middleware::RequestId;
use crate::routes::paging::{check_cursor, page_size};
use crate::state::ApiState;
use crate::strict_json::StrictJson;

/// A job kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
pub enum JobKindName {
    #[oai(rename = "sentiment.analyze")]
    SentimentAnalyze,
    #[oai(rename = "provider.complete")]
    ProviderComplete,
    #[oai(rename = "audit.run")]
    AuditRun,
    #[oai(rename = "sentiment.aggregate")]
    SentimentAggregate,
}

impl From<JobKindName> for JobKind {
    fn from(name: JobKindName) -> Self {
        match name {
            JobKindName::SentimentAnalyze => JobKind::SentimentAnalyze,
            JobKindName::ProviderComplete => JobKind::ProviderComplete,
            JobKindName::AuditRun => JobKind::AuditRun,
            JobKindName::SentimentAggregate => JobKind::SentimentAggregate,
        }
    }
}

/// What a job waiting for others does when one of them does not succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "lowercase")]
pub enum ParentFailureName {
    /// It ends `cancelled`, and so do the jobs waiting for it.
    Cancel,
    /// It runs anyway once every parent finished.
    Run,
}

impl From<ParentFailureName> for ParentFailurePolicy {
    fn from(name: ParentFailureName) -> Self {
        match name {
            ParentFailureName::Cancel => ParentFailurePolicy::Cancel,
            ParentFailureName::Run => ParentFailurePolicy::Run,
        }
    }
}

/// A job status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "lowercase")]
pub enum JobStatusName {
    Queued,
    Running,
    Succeeded,
    Failed,
    Dead,
    Cancelled,
}

impl From<JobStatusName> for JobStatus {
    fn from(name: JobStatusName) -> Self {
        match name {
            JobStatusName::Queued => JobStatus::Queued,
            JobStatusName::Running => JobStatus::Running,
            JobStatusName::Succeeded => JobStatus::Succeeded,
            JobStatusName::Failed => JobStatus::Failed,
            JobStatusName::Dead => JobStatus::Dead,
            JobStatusName::Cancelled => JobStatus::Cancelled,
        }
    }
}

/// A job to run.
#[derive(Debug, Clone, Object)]
#[oai(deny_unknown_fields)]
pub struct JobSubmission {
    /// The job kind.
    pub kind: JobKindName,
    /// The kind's input, validated for it: `sentiment.analyze` takes the body of
    /// `POST /v1/sentiment`; `provider.complete` takes `{ "provider", "prompt", "params"? }`
    /// (`params`: `system`, `max_tokens` 1 to 32,768, `temperature` 0 to 2, `seed`);
    /// `audit.run` takes the body of `POST /v1/audits`; `sentiment.aggregate` takes `{}` and
    /// sums up the results of the `sentiment.analyze` jobs it depends on (`depends_on`). A
    /// payload breaking its kind's rules is `422` naming the field (`payload.texts[0]: ...`).
    pub payload: Value,
    /// Submitting again with the same key returns the same job, never a second one.
    #[oai(validator(min_length = 1, max_length = 255))]
    pub idempotency_key: Option<String>,
    /// 0 (lowest) to 9 (highest), default 5: due jobs run highest priority first, then in the
    /// order they became due.
    #[oai(validator(minimum(value = "0"), maximum(value = "9")))]
    pub priority: Option<u8>,
    /// RFC 3339 time before which the job does not run (a time already past runs it now); at
    /// most a year ahead. Not with `delay_ms`.
    pub run_at: Option<String>,
    /// Milliseconds to wait before the job may run, at most a year (31,622,400,000). Not with
    /// `run_at`.
    #[oai(validator(minimum(value = "0"), maximum(value = "31622400000")))]
    pub delay_ms: Option<i64>,
    /// Milliseconds one attempt may run, 1 to 86,400,000 (a day): an attempt running longer
    /// is aborted (its provider calls and inference waits are dropped) and counted as a
    /// retryable `JOB_TIMEOUT`. Unset: no limit.
    #[oai(validator(minimum(value = "1"), maximum(value = "86400000")))]
    pub timeout_ms: Option<i64>,
    /// Milliseconds the job and its result are kept once it finished, 1,000 (a second) to
    /// 31,622,400,000 (a year): the job pruner deletes it then, whatever its status's retention
    /// (`[jobs.retention]`, which may delete it sooner). Unset: the retention alone.
    #[oai(validator(minimum(value = "1000"), maximum(value = "31622400000")))]
    pub result_ttl_ms: Option<i64>,
    /// Ids of stored jobs this job waits for (at most 1,000): it runs once every one of them
    /// succeeded. Not with `run_at` or `delay_ms`, and not in a batch (`POST /v1/jobs/graph`
    /// submits jobs that wait for each other). An unknown id is `422`.
    #[oai(validator(max_items = 1000, unique_items = true))]
    pub depends_on: Option<Vec<String>>,
    /// When a job it waits for ends `failed`, `dead` or `cancelled`: `cancel` (the default)
    /// cancels this job too, `run` runs it anyway once they all finished.
    pub on_parent_failure: Option<ParentFailureName>,
}

/// The furthest ahead `run_at` may be: a year (366 days), as `delay_ms`'s validator says.
/// Further is almost always a unit mistake (seconds taken for milliseconds).
const MAX_DELAY_MS: i64 = 366 * 24 * 60 * 60 * 1000;

impl JobSubmission {
    /// Returns the job's priority, when it may first run, its timeout and its attempts (what
    /// the submission does not say comes from `defaults`: its kind's, else the node's), or a
    /// message naming the field that is wrong. The ranges of `priority`, `delay_ms` and
    /// `timeout_ms` are the document's validators, already enforced wherever a submission is
    /// read (single or batch); this checks what they cannot say.
    pub fn schedule(&self, now_ms: i64, defaults: &JobDefaults) -> Result<JobSchedule, String> {
        let kind = JobKind::from(self.kind).as_str();
        let waits = self.depends_on.as_ref().is_some_and(|ids| !ids.is_empty());
        if waits && (self.run_at.is_some() || self.delay_ms.is_some()) {
            return Err(
                "depends_on: a job that waits for others runs once they succeed; \
                 give no run_at or delay_ms"
                    .to_owned(),
            );
        }
        if !waits && self.on_parent_failure.is_some() {
            return Err("on_parent_failure: only with depends_on".to_owned());
        }
        if !waits && self.kind == JobKindName::SentimentAggregate {
            return Err(
                "depends_on: a sentiment.aggregate job sums up the jobs it depends on; \
                 give at least one"
                    .to_owned(),
            );
        }
        let run_at_ms = match (&self.run_at, self.delay_ms) {
            (Some(_), Some(_)) => {
                return Err("run_at: give run_at or delay_ms, not both".to_owned());
            }
            (Some(text), None) => {
                let run_at_ms = parse_rfc3339_ms(text)
                    .map_err(|error| format!("run_at: not an RFC 3339 time: {error}"))?;
                if run_at_ms - now_ms > MAX_DELAY_MS {
                    return Err(format!("run_at: {text} is more than a year ahead"));
                }
                Some(run_at_ms)
            }
            (None, Some(delay_ms)) => Some(now_ms + delay_ms),
            (None, None) => None,
        };
        Ok(JobSchedule {
            priority: self.priority.unwrap_or(defaults.priority_of(kind)),
            run_at_ms,
            timeout_ms: self.timeout_ms.or(defaults.timeout_ms_of(kind)),
            max_attempts: defaults.max_attempts_of(kind),
        })
    }
}

/// When and how a submitted job runs, checked (see [`JobSubmission::schedule`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct JobSchedule {
    pub priority: u8,
    pub run_at_ms: Option<i64>,
    pub timeout_ms: Option<i64>,
    pub max_attempts: u32,
}

/// Why the last attempt failed.
#[derive(Debug, Clone, Object)]
pub struct JobErrorView {
    pub code: String,
    pub message: String,
}

/// A job and where it is in its life. Fields without a value are absent.
#[derive(Debug, Clone, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct JobView {
    pub id: String,
    pub kind: String,
    /// `queued`, `running`, `succeeded`, `failed`, `dead` or `cancelled`.
    pub status: String,
    pub attempts: i32,
    pub max_attempts: i32,
    pub payload: Value,
    pub result: Option<Value>,
    /// The last attempt's error; kept on a job queued again for a retry.
    pub error: Option<JobErrorView>,
    pub request_id: Option<String>,
    /// The W3C trace id of the request or message that created it (the caller's
    /// `traceparent`, or a new trace).
    pub trace_id: Option<String>,
    pub idempotency_key: Option<String>,
    /// 0 (lowest) to 9 (highest).
    pub priority: u8,
    /// How long one attempt may run; absent: no limit.
    pub timeout_ms: Option<i64>,
    /// How long it is kept once finished; absent: its status's retention.
    pub result_ttl_ms: Option<i64>,
    /// When a cancel of the running job was asked for (RFC 3339); it is being stopped.
    pub cancel_requested_at: Option<String>,
    /// How far the job is, as it last reported (an audit: its items done).
    pub progress: Option<JobProgressView>,
    /// True while it waits for the jobs it depends on (its `run_at` is then the year 9999).
    pub waiting_on_parents: Option<bool>,
    /// RFC 3339 times; `run_at` is when the job is (or was) due.
    pub created_at: String,
    pub updated_at: String,
    pub run_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
}

impl From<Job> for JobView {
    fn from(job: Job) -> Self {
        let waiting_on_parents = job.is_waiting_on_parents().then_some(true);
        let error = match (job.error_code, job.error_message) {
            (Some(code), message) => Some(JobErrorView {
                code,
                message: message.unwrap_or_default(),
            }),
            (None, _) => None,
        };
        JobView {
            id: job.id,
            kind: job.kind,
            status: job.status.as_str().to_owned(),
            attempts: job.attempts,
            max_attempts: job.max_attempts,
            payload: job.payload,
            result: job.result,
            error,
            request_id: job.request_id,
            trace_id: job.trace_id,
            idempotency_key: job.idempotency_key,
            priority: job.priority,
            timeout_ms: job.timeout_ms,
            result_ttl_ms: job.result_ttl_ms,
            cancel_requested_at: job.cancel_requested_at_ms.map(format_rfc3339_ms),
            progress: job.progress.map(Into::into),
            waiting_on_parents,
            created_at: format_rfc3339_ms(job.created_at_ms),
            updated_at: format_rfc3339_ms(job.updated_at_ms),
            run_at: format_rfc3339_ms(job.run_at_ms),
            started_at: job.started_at_ms.map(format_rfc3339_ms),
            finished_at: job.finished_at_ms.map(format_rfc3339_ms),
        }
    }
}

/// How far a job is: `done` of `total` (when known).
#[derive(Debug, Clone, PartialEq, Eq, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct JobProgressView {
    pub done: u64,
    pub total: Option<u64>,
    pub message: Option<String>,
    /// RFC 3339.
    pub updated_at: String,
}

impl From<JobProgress> for JobProgressView {
    fn from(progress: JobProgress) -> Self {
        JobProgressView {
            done: progress.done,
            total: progress.total,
            message: progress.message,
            updated_at: format_rfc3339_ms(progress.updated_at_ms),
        }
    }
}

/// A change of a job, as `GET /v1/jobs/{id}/events` streams it.
#[derive(Debug, Clone, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct JobChange {
    /// `status` (the first event, and each change of status) or `progress`.
    pub event: String,
    pub job_id: String,
    pub status: String,
    pub attempts: i32,
    pub progress: Option<JobProgressView>,
    /// The error of a finished job that failed.
    pub error: Option<JobErrorView>,
}

/// One attempt of a job.
#[derive(Debug, Clone, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct AttemptView {
    /// 1-based.
    pub attempt: i32,
    /// `retried`, `running`, `succeeded`, `failed`, `dead`, `cancelled`, or `lost` (the node
    /// running it stopped; the job was claimed again after its lease expired).
    pub outcome: String,
    /// The node that ran it (its `jobs.node_id`).
    pub node: Option<String>,
    /// RFC 3339.
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub error: Option<JobErrorView>,
}

impl From<AttemptRecord> for AttemptView {
    fn from(record: AttemptRecord) -> Self {
        let error = record.error_code.map(|code| JobErrorView {
            code,
            message: record.error_message.unwrap_or_default(),
        });
        AttemptView {
            attempt: record.attempt,
            outcome: record.outcome,
            node: record.node,
            started_at: record.started_at_ms.map(format_rfc3339_ms),
            finished_at: record.finished_at_ms.map(format_rfc3339_ms),
            error,
        }
    }
}

/// A job's attempts, first to last.
#[derive(Debug, Clone, Object)]
pub struct AttemptList {
    pub job_id: String,
    pub attempts: Vec<AttemptView>,
}

/// A page of jobs, newest first.
#[derive(Debug, Clone, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct JobList {
    pub jobs: Vec<JobView>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

#[derive(ApiResponse)]
enum SubmitResponse {
    /// The job was stored and queued.
    #[oai(status = 202)]
    Created(Json<JobView>),
    /// A job with this idempotency key already exists; it is returned unchanged.
    #[oai(status = 200)]
    Existing(Json<JobView>, #[oai(header = "Idempotent-Replayed")] String),
}

pub struct JobsApi {
    pub state: Arc<ApiState>,
}

/// Provider calls a job of `kind` starts, charged to the submitting key's daily budget.
pub(crate) fn provider_calls_of(kind: &str) -> u64 {
    u64::from(kind == "provider.complete")
}

/// Checks that every id of `parents` names a stored job; the error names `field[index]`.
pub(crate) async fn check_parents_exist(
    store: &Store,
    parents: &[String],
    field: &str,
) -> ApiResult<()> {
    for (index, id) in parents.iter().enumerate() {
        if store.get_job(id).await?.is_none() {
            return Err(ApiError::invalid(format!(
                "{field}[{index}]: no job `{id}`"
            )));
        }
    }
    Ok(())
}

/// Why a submission reusing the idempotency key of job `job_id` for another job is refused.
pub(crate) fn conflict_message(job_id: &str) -> String {
    format!("idempotency_key: already used by job {job_id} with a different kind or payload")
}

#[OpenApi(tag = "ApiTags::Jobs")]
impl JobsApi {
    /// Submits a job.
    ///
    /// The payload is validated for its kind before anything is stored. With an
    /// `idempotency_key`, a repeated submission returns the stored job (`200`), and a
    /// submission that reuses the key for a different job is refused (`409`). With RabbitMQ,
    /// the stored job is published with confirms; if the broker is unreachable the job waits
    /// in the outbox and is published when it comes back (still `202`).
    #[oai(path = "/v1/jobs", method = "post", operation_id = "submit_job")]
    async fn submit(
        &self,
        auth: SubmitKey,
        body: StrictJson<JobSubmission>,
        request_id: Data<&RequestId>,
        /// W3C trace context; travels with the job over the broker.
        traceparent: Header<Option<String>>,
    ) -> ApiResult<SubmitResponse> {
        let submission = body.0;
        let kind = JobKind::from(submission.kind).as_str();
        validate_job(kind, &submission.payload)
            .map_err(|error| ApiError::invalid(error.message))?;
        let schedule = submission
            .schedule(now_ms(), &self.state.job_defaults)
            .map_err(ApiError::invalid)?;
        let trace = TraceContext::continue_or_start(traceparent.0);
        let new_job = NewJob {
            kind: kind.to_owned(),
            payload: submission.payload,
            idempotency_key: submission.idempotency_key,
            request_id: Some(request_id.0.0.clone()),
            trace_id: trace.trace_id(),
            max_attempts: schedule.max_attempts,
            priority: schedule.priority,
            run_at_ms: schedule.run_at_ms,
            timeout_ms: schedule.timeout_ms,
            result_ttl_ms: submission.result_ttl_ms,
        };
        let parents = submission.depends_on.unwrap_or_default();
        check_parents_exist(&self.state.store, &parents, "depends_on").await?;
        let charge_opt = self
            .state
            .auth
            .charge_provider_calls_opt(&auth.0, provider_calls_of(kind))
            .await?;
        let outcome = if parents.is_empty() {
            self.state.intake.submit_traced(&new_job, &trace).await
        } else {
            let graph = JobGraph {
                jobs: vec![new_job.clone()],
                parents: vec![parents.into_iter().map(ParentRef::Job).collect()],
                on_parent_failure: submission
                    .on_parent_failure
                    .map(Into::into)
                    .unwrap_or_default(),
            };
            self.state
                .intake
                .submit_graph(&graph, &trace)
                .await
                .and_then(BatchInsertOutcome::single)
        };
        if !matches!(outcome, Ok(InsertOutcome::Created(_)))
            && let Some(charge) = charge_opt
        {
            charge.refund().await;
        }
        match outcome? {
            InsertOutcome::Created(job) => Ok(SubmitResponse::Created(Json(job.into()))),
            InsertOutcome::Existing(job) => {
                if new_job.conflicts_with(&job) {
                    return Err(ApiError::conflict(conflict_message(&job.id)));
                }
                Ok(SubmitResponse::Existing(
                    Json(job.into()),
                    "true".to_owned(),
                ))
            }
        }
    }

    /// Returns one job.
    #[oai(path = "/v1/jobs/:id", method = "get", operation_id = "get_job")]
    async fn get(&self, _auth: ReadKey, id: Path<String>) -> ApiResult<Json<JobView>> {
        match self.state.store.get_job(&id.0).await? {
            Some(job) => Ok(Json(job.into())),
            None => Err(ApiError::not_found(format!("job {} does not exist", id.0))),
        }
    }

    /// Streams a job's changes as Server-Sent Events: its state first (`status`), then each
    /// change of status and each progress report (`progress`), until it finishes (the last
    /// event) or ten minutes passed (reconnect to go on). Changes are read every 250 ms.
    #[oai(
        path = "/v1/jobs/:id/events",
        method = "get",
        operation_id = "stream_job_events"
    )]
    async fn events(
        &self,
        _auth: ReadKey,
        id: Path<String>,
    ) -> ApiResult<EventStream<BoxStream<'static, JobChange>>> {
        let Some(job) = self.state.store.get_job(&id.0).await? else {
            return Err(ApiError::not_found(format!("job {} does not exist", id.0)));
        };
        let stream = job_changes(self.state.store.clone(), job);
        Ok(EventStream::new(stream)
            .keep_alive(Duration::from_secs(15))
            .to_event(|change| {
                let event_type = change.event.clone();
                Event::message(change.to_json_string()).event_type(event_type)
            }))
    }

    /// Returns a job's attempts, first to last: when and where each ran, how it ended and with
    /// which error.
    #[oai(
        path = "/v1/jobs/:id/attempts",
        method = "get",
        operation_id = "list_job_attempts"
    )]
    async fn attempts(&self, _auth: ReadKey, id: Path<String>) -> ApiResult<Json<AttemptList>> {
        let Some(job) = self.state.store.get_job(&id.0).await? else {
            return Err(ApiError::not_found(format!("job {} does not exist", id.0)));
        };
        let attempts = self.state.store.job_attempts(&job).await?;
        Ok(Json(AttemptList {
            job_id: job.id,
            attempts: attempts.into_iter().map(Into::into).collect(),
        }))
    }

    /// Lists jobs, newest first, with cursor pagination.
    #[oai(path = "/v1/jobs", method = "get", operation_id = "list_jobs")]
    // Each argument is the key or one query parameter of the operation.
    #[allow(clippy::too_many_arguments)]
    async fn list(
        &self,
        _auth: ReadKey,
        /// Only jobs in this status.
        status: Query<Option<JobStatusName>>,
        /// Only jobs of this kind.
        kind: Query<Option<String>>,
        /// Page size, 1 to 500 (default 50).
        #[oai(validator(minimum(value = "1"), maximum(value = "500")))]
        limit: Query<Option<u32>>,
        /// The `next_cursor` of the previous page.
        #[oai(validator(
            pattern = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
        ))]
        cursor: Query<Option<String>>,
    ) -> ApiResult<Json<JobList>> {
        let status = status.0.map(JobStatus::from);
        let limit = page_size(limit.0)?;
        check_cursor(cursor.0.as_deref())?;
        let filter = JobFilter {
            status,
            kind: kind.0,
            before_id: cursor.0,
            limit,
        };
        let page = self.state.store.list_jobs(&filter).await?;
        Ok(Json(JobList {
            jobs: page.jobs.into_iter().map(Into::into).collect(),
            next_cursor: page.next_cursor,
        }))
    }
}

/// How often a job's event stream reads the job, and how long one stream lasts at most.
const CHANGE_POLL: Duration = Duration::from_millis(250);
const MAX_STREAM: Duration = Duration::from_secs(600);

/// Returns the stream of `job`'s changes: its state now, then what changed at each read, until
/// it is finished or the stream's time is up. A read that fails ends the stream (the client
/// reconnects).
fn job_changes(store: Store, job: Job) -> BoxStream<'static, JobChange> {
    let first = change_of("status", &job);
    let deadline = tokio::time::Instant::now() + MAX_STREAM;
    let later = futures::stream::unfold(Some(job), move |last_opt| {
        let store = store.clone();
        async move {
            let mut last = last_opt?;
            loop {
                if last.status.is_terminal() || tokio::time::Instant::now() >= deadline {
                    return None;
                }
                tokio::time::sleep(CHANGE_POLL).await;
                let current = store.get_job(&last.id).await.ok().flatten()?;
                let event = if current.status != last.status {
                    "status"
                } else if current.progress != last.progress {
                    "progress"
                } else {
                    continue;
                };
                let change = change_of(event, &current);
                last = current;
                return Some((change, Some(last)));
            }
        }
    });
    futures::stream::once(async move { first })
        .chain(later)
        .boxed()
}

/// Returns the event `event` for the job as it is now.
fn change_of(event: &str, job: &Job) -> JobChange {
    let error = job
        .status
        .is_terminal()
        .then(|| {
            job.error_code.clone().map(|code| JobErrorView {
                code,
                message: job.error_message.clone().unwrap_or_default(),
            })
        })
        .flatten();
    JobChange {
        event: event.to_owned(),
        job_id: job.id.clone(),
        status: job.status.as_str().to_owned(),
        attempts: job.attempts,
        progress: job.progress.clone().map(Into::into),
        error,
    }
}

#[cfg(test)]
mod tests {
    use poem_openapi::types::{ParseFromJSON, ToJSON};
    use serde_json::json;

    use super::*;

    /// Proves every kind the executor runs is a documented `kind`, under its own name, so a new
    /// kind cannot be left out of the document.
    #[test]
    fn every_job_kind_is_documented() {
        for kind in JobKind::ALL {
            let name = JobKindName::parse_from_json(Some(json!(kind.as_str())))
                .unwrap_or_else(|_| panic!("{} is documented", kind.as_str()));
            assert_eq!(JobKind::from(name), kind);
            assert_eq!(name.to_json(), Some(json!(kind.as_str())));
        }
        assert!(JobKindName::parse_from_json(Some(json!("video.render"))).is_err());
    }
}
