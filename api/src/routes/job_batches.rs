//! `POST /v1/jobs/batch`: up to [`MAX_BATCH_JOBS`] jobs in one request, each answered with its
//! own outcome. The batch as a whole is refused only when it cannot be read (not JSON, not
//! `{"jobs": [...]}`, empty, too many jobs, over the body limit); a job that breaks a rule is
//! answered `invalid` and never blocks the others.

use std::sync::Arc;

use bulwark_actors::validate_job;
use bulwark_core::{JobKind, TraceContext, now_ms};
use bulwark_store::{BatchInsertOutcome, NewJob, StoreError};
use poem::web::Data;
use poem::{FromRequest, Request, RequestBody};
use poem_openapi::param::Header;
use poem_openapi::payload::{Json, ParsePayload, Payload};
use poem_openapi::registry::{MetaSchemaRef, Registry};
use poem_openapi::types::{ParseFromJSON, Type};
use poem_openapi::{Enum, Object, OpenApi};
use serde_json::Value;

use crate::ApiTags;
use crate::auth::SubmitKey;
use crate::error::{ApiError, ApiResult};
use crate::metrics::JobBatchSubmitted;
use crate::middleware::RequestId;
use crate::routes::jobs::{JobSubmission, conflict_message, provider_calls_of};
use crate::state::ApiState;
use crate::strict_json::{check_body, check_each};

/// Most jobs one batch may hold.
pub const MAX_BATCH_JOBS: usize = 1000;

/// Jobs to run, submitted together.
#[derive(Debug, Clone, Object)]
#[oai(deny_unknown_fields)]
pub struct JobBatchSubmission {
    /// 1 to 1,000 jobs, each the body of `POST /v1/jobs`. An empty list is `400`, more than
    /// 1,000 jobs is `413`. A job that breaks the job schema or its kind's payload rules is
    /// answered `invalid` in its result; the others are still stored.
    #[oai(validator(min_items = 1, max_items = 1000))]
    pub jobs: Vec<JobSubmission>,
}

/// The batch as read before its jobs are checked: only its shape.
#[derive(Debug, Clone, Object)]
#[oai(deny_unknown_fields)]
struct JobBatchShape {
    jobs: Vec<Value>,
}

/// The body of `POST /v1/jobs/batch`: documented as [`JobBatchSubmission`], read job by job,
/// each job parsed or answered with why it is not one.
#[derive(Debug)]
pub struct JobBatchBody(pub Vec<Result<JobSubmission, String>>);

impl Payload for JobBatchBody {
    const CONTENT_TYPE: &'static str = "application/json; charset=utf-8";

    fn check_content_type(content_type: &str) -> bool {
        Json::<JobBatchSubmission>::check_content_type(content_type)
    }

    fn schema_ref() -> MetaSchemaRef {
        JobBatchSubmission::schema_ref()
    }

    fn register(registry: &mut Registry) {
        JobBatchSubmission::register(registry);
    }
}

impl ParsePayload for JobBatchBody {
    const IS_REQUIRED: bool = true;

    async fn from_request(request: &Request, body: &mut RequestBody) -> poem::Result<Self> {
        let data = Vec::<u8>::from_request(request, body).await?;
        // Up to a thousand jobs are parsed and checked: CPU work, off the async runtime.
        let parsed = tokio::task::spawn_blocking(move || read_batch(&data))
            .await
            .map_err(|error| ApiError::internal(format!("batch reader failed: {error}")))??;
        Ok(parsed)
    }
}

// The bounds form: the one-argument form calls the macro unqualified.
poem_openapi::impl_apirequest_for_payload!(JobBatchBody,);

/// Reads a batch: the envelope strictly (its errors refuse the request), each job on its own.
fn read_batch(data: &[u8]) -> Result<JobBatchBody, ApiError> {
    let value: Value = serde_json::from_slice(data)
        .map_err(|error| ApiError::malformed(format!("body: invalid JSON: {error}")))?;
    check_body::<JobBatchShape>(&value).map_err(ApiError::invalid)?;
    let shape = JobBatchShape::parse_from_json(Some(value))
        .map_err(|error| ApiError::invalid(format!("body: {}", error.into_message())))?;
    check_batch_size(shape.jobs.len())?;
    let checks = check_each::<JobSubmission>(&shape.jobs, "job");
    let submissions = shape
        .jobs
        .into_iter()
        .zip(checks)
        .map(|(job, check)| {
            check?;
            JobSubmission::parse_from_json(Some(job)).map_err(|error| error.into_message())
        })
        .collect();
    Ok(JobBatchBody(submissions))
}

/// Refuses an empty batch (`400`) and one over [`MAX_BATCH_JOBS`] (`413`), naming the limit.
fn check_batch_size(num_jobs: usize) -> Result<(), ApiError> {
    if num_jobs == 0 {
        return Err(ApiError::malformed(format!(
            "jobs: at least 1 job required (1 to {MAX_BATCH_JOBS} per batch)"
        )));
    }
    if num_jobs > MAX_BATCH_JOBS {
        return Err(ApiError::payload_too_large(format!(
            "jobs: {num_jobs} jobs, at most {MAX_BATCH_JOBS} per batch: split them into \
             several batches"
        )));
    }
    Ok(())
}

/// What happened to one job of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "lowercase")]
pub enum JobBatchItemStatus {
    /// Stored and queued by this batch.
    Created,
    /// Its idempotency key names a job of the same kind and payload (stored before, or by an
    /// earlier job of this batch); nothing new was stored.
    Existing,
    /// Its idempotency key names a job of another kind or payload (the single submission's
    /// `409`); nothing was stored.
    Conflict,
    /// It breaks the job schema or its kind's payload rules (the single submission's `422`);
    /// nothing was stored.
    Invalid,
}

/// The outcome of one job of a batch. Fields without a value are absent.
#[derive(Debug, Clone, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct JobBatchItemResult {
    /// The job's position in `jobs`, from 0.
    pub index: u32,
    pub status: JobBatchItemStatus,
    /// The job created (`created`) or found under the idempotency key (`existing`).
    pub job_id: Option<String>,
    /// Why nothing was stored (`conflict`, `invalid`); names the field at fault.
    pub error: Option<String>,
}

/// How many jobs of a batch ended in each status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Object)]
pub struct JobBatchCounts {
    pub created: u32,
    pub existing: u32,
    pub conflict: u32,
    pub invalid: u32,
}

/// The outcome of every job of a batch.
#[derive(Debug, Clone, Object)]
pub struct JobBatchResults {
    /// One result per submitted job, in the order submitted.
    pub results: Vec<JobBatchItemResult>,
    pub counts: JobBatchCounts,
}

/// A batch after validation: the jobs to store, and why each invalid job is not one.
struct Plan {
    /// The valid jobs, in order.
    new_jobs: Vec<NewJob>,
    /// One entry per submitted job: `Some(why)` for an invalid one, `None` for a valid one
    /// (the next of `new_jobs`).
    invalid: Vec<Option<String>>,
}

pub struct JobBatchesApi {
    pub state: Arc<ApiState>,
}

/// Charges `principal`'s daily provider-call budget for the `provider.complete` jobs of
/// `new_jobs` (`429`, nothing stored, when it would pass it), awaits `store`, which stores
/// them, and refunds the calls of the jobs it did not create (all of them if it failed).
pub(crate) async fn charged_store(
    state: &ApiState,
    principal: &Arc<bulwark_auth::Principal>,
    new_jobs: &[NewJob],
    store: impl std::future::Future<Output = Result<Vec<BatchInsertOutcome>, StoreError>>,
) -> ApiResult<Vec<BatchInsertOutcome>> {
    let num_calls: u64 = new_jobs
        .iter()
        .map(|new_job| provider_calls_of(&new_job.kind))
        .sum();
    let charge_opt = state
        .auth
        .charge_provider_calls_opt(principal, num_calls)
        .await?;
    let stored = store.await;
    if let Some(charge) = charge_opt {
        let num_created_calls: u64 = match &stored {
            Ok(outcomes) => outcomes
                .iter()
                .filter(|outcome| outcome.is_created())
                .map(|outcome| provider_calls_of(&outcome.job().kind))
                .sum(),
            Err(_) => 0,
        };
        charge.refund_unused(num_calls - num_created_calls).await;
    }
    Ok(stored?)
}

#[OpenApi(tag = "ApiTags::Jobs")]
impl JobBatchesApi {
    /// Submits up to 1,000 jobs at once.
    ///
    /// Each job is the body of `POST /v1/jobs` and is answered on its own, in `results`, in
    /// the order submitted: `created`, `existing` (its `idempotency_key` names the same job,
    /// which is returned), `conflict` (the key names a job of another kind or payload) or
    /// `invalid` (the job breaks the schema or its kind's payload rules; `error` names the
    /// field). A key used twice in one batch behaves as if the jobs were submitted one after
    /// the other. Invalid and conflicting jobs never block the others, and nothing is stored
    /// for them. The answer is `200` whenever the batch was read, whatever its jobs' outcomes:
    /// read `counts` or each result's `status`. The batch as a whole is refused when it is not
    /// `{"jobs": [...]}` (`422`), is empty (`400`), holds more than 1,000 jobs or is larger
    /// than the body limit (`413`), or its `provider.complete` jobs would pass the key's daily
    /// provider-call budget (`429`, nothing stored). The jobs are stored in one statement and,
    /// with RabbitMQ, published with pipelined confirms (a job not confirmed waits in the
    /// outbox and is published when the broker is back).
    #[oai(
        path = "/v1/jobs/batch",
        method = "post",
        operation_id = "submit_job_batch"
    )]
    async fn submit_batch(
        &self,
        auth: SubmitKey,
        body: JobBatchBody,
        request_id: Data<&RequestId>,
        /// W3C trace context; every job of the batch continues it.
        traceparent: Header<Option<String>>,
    ) -> ApiResult<Json<JobBatchResults>> {
        let trace = TraceContext::continue_or_start(traceparent.0);
        let defaults = NewJobDefaults {
            request_id: request_id.0.0.clone(),
            trace_id: trace.trace_id(),
            job_defaults: self.state.job_defaults.clone(),
            now_ms: now_ms(),
        };
        let Plan { new_jobs, invalid } =
            tokio::task::spawn_blocking(move || plan(body.0, &defaults))
                .await
                .map_err(|error| ApiError::internal(format!("batch validation failed: {error}")))?;
        let stored = charged_store(
            &self.state,
            &auth.0,
            &new_jobs,
            self.state.intake.submit_batch(&new_jobs, &trace),
        )
        .await;
        let results = answer(invalid, stored?)?;
        JobBatchSubmitted {
            counts: &results.counts,
        }
        .emit();
        Ok(Json(results))
    }
}

/// What every job of one request is created with.
struct NewJobDefaults {
    request_id: String,
    trace_id: Option<String>,
    job_defaults: bulwark_core::JobDefaults,
    /// The time `delay_ms` counts from.
    now_ms: i64,
}

/// Validates each readable job's payload for its kind, as the single submission does.
fn plan(submissions: Vec<Result<JobSubmission, String>>, defaults: &NewJobDefaults) -> Plan {
    let mut plan = Plan {
        new_jobs: Vec::with_capacity(submissions.len()),
        invalid: Vec::with_capacity(submissions.len()),
    };
    for submission in submissions {
        let submission = match submission {
            Ok(submission) => submission,
            Err(message) => {
                plan.invalid.push(Some(message));
                continue;
            }
        };
        let kind = JobKind::from(submission.kind).as_str();
        if let Err(error) = validate_job(kind, &submission.payload) {
            plan.invalid.push(Some(error.message));
            continue;
        }
        if submission.depends_on.is_some() || submission.on_parent_failure.is_some() {
            plan.invalid.push(Some(
                "depends_on: jobs that wait for others are submitted with POST /v1/jobs or \
                 POST /v1/jobs/graph, not in a batch"
                    .to_owned(),
            ));
            continue;
        }
        let schedule = match submission.schedule(defaults.now_ms, &defaults.job_defaults) {
            Ok(schedule) => schedule,
            Err(message) => {
                plan.invalid.push(Some(message));
                continue;
            }
        };
        plan.invalid.push(None);
        plan.new_jobs.push(NewJob {
            kind: kind.to_owned(),
            payload: submission.payload,
            idempotency_key: submission.idempotency_key,
            request_id: Some(defaults.request_id.clone()),
            trace_id: defaults.trace_id.clone(),
            max_attempts: schedule.max_attempts,
            priority: schedule.priority,
            run_at_ms: schedule.run_at_ms,
            timeout_ms: schedule.timeout_ms,
            result_ttl_ms: submission.result_ttl_ms,
        });
    }
    plan
}

/// Returns the result of every job, in order: the invalid ones as planned, the valid ones
/// from the store's outcomes (one per valid job, in order).
fn answer(
    invalid: Vec<Option<String>>,
    outcomes: Vec<BatchInsertOutcome>,
) -> Result<JobBatchResults, ApiError> {
    let mut outcomes = outcomes.into_iter();
    let mut counts = JobBatchCounts::default();
    let mut results = Vec::with_capacity(invalid.len());
    for (index, invalid_opt) in invalid.into_iter().enumerate() {
        let (status, job_id, error) = match invalid_opt {
            Some(message) => (JobBatchItemStatus::Invalid, None, Some(message)),
            None => match outcomes.next() {
                Some(BatchInsertOutcome::Created(job)) => {
                    (JobBatchItemStatus::Created, Some(job.id), None)
                }
                Some(BatchInsertOutcome::Existing(job)) => {
                    (JobBatchItemStatus::Existing, Some(job.id), None)
                }
                Some(BatchInsertOutcome::Conflict(job)) => (
                    JobBatchItemStatus::Conflict,
                    None,
                    Some(conflict_message(&job.id)),
                ),
                None => {
                    return Err(ApiError::internal(format!(
                        "the store answered fewer jobs than the batch's valid ones (job {index})"
                    )));
                }
            },
        };
        let count = match status {
            JobBatchItemStatus::Created => &mut counts.created,
            JobBatchItemStatus::Existing => &mut counts.existing,
            JobBatchItemStatus::Conflict => &mut counts.conflict,
            JobBatchItemStatus::Invalid => &mut counts.invalid,
        };
        *count += 1;
        results.push(JobBatchItemResult {
            index: u32::try_from(index).unwrap_or(u32::MAX),
            status,
            job_id,
            error,
        });
    }
    Ok(JobBatchResults { results, counts })
}

#[cfg(test)]
mod tests {
    use poem::http::StatusCode;
    use serde_json::json;

    use super::*;

    fn read(body: &Value) -> Result<Vec<Result<JobSubmission, String>>, ApiError> {
        read_batch(body.to_string().as_bytes()).map(|batch| batch.0)
    }

    /// Proves the batch as a whole is refused only for its envelope: not JSON (400), not
    /// `{"jobs": [...]}` (422 naming the field), empty (400) or over 1,000 jobs (413), each
    /// message naming the limit.
    #[test]
    fn the_envelope_is_checked_strictly() {
        let not_json = read_batch(b"{\"jobs\": [").unwrap_err();
        assert_eq!(not_json.status, StatusCode::BAD_REQUEST);
        for (body, message) in [
            (json!([]), "body: expected object, found an array"),
            (json!({}), "jobs: is required"),
            (json!({"jobs": {}}), "jobs: expected array, found an object"),
            (json!({"jobs": [], "extra": 1}), "extra: unknown field"),
        ] {
            let error = read(&body).unwrap_err();
            assert_eq!(error.status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
            assert_eq!(error.message, message);
        }
        let empty = read(&json!({"jobs": []})).unwrap_err();
        assert_eq!(empty.status, StatusCode::BAD_REQUEST);
        assert!(
            empty.message.contains("at least 1 job"),
            "{}",
            empty.message
        );
        let jobs = vec![json!({"kind": "sentiment.analyze", "payload": {}}); MAX_BATCH_JOBS + 1];
        let too_many = read(&json!({ "jobs": jobs })).unwrap_err();
        assert_eq!(too_many.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(
            too_many
                .message
                .contains("1001 jobs, at most 1000 per batch"),
            "{}",
            too_many.message
        );
        let full = vec![json!({"kind": "sentiment.analyze", "payload": {}}); MAX_BATCH_JOBS];
        assert_eq!(
            read(&json!({ "jobs": full })).unwrap().len(),
            MAX_BATCH_JOBS
        );
    }

    /// Proves each job is read on its own: a job breaking the job schema is answered with the
    /// field at fault, and the jobs around it are still parsed.
    #[test]
    fn each_job_is_read_on_its_own() {
        let body = json!({"jobs": [
            {"kind": "sentiment.analyze", "payload": {"texts": ["good"]}, "idempotency_key": "k"},
            {"kind": "video.render", "payload": {}},
            {"kind": "sentiment.analyze"},
            {"kind": "sentiment.analyze", "payload": {}, "queue": "fast"},
            {"kind": "sentiment.analyze", "payload": {}, "idempotency_key": 7},
            "not an object",
            {"kind": "sentiment.analyze", "payload": {}, "idempotency_key": ""},
        ]});
        let items = read(&body).unwrap();
        let submission = items[0].as_ref().unwrap();
        assert_eq!(submission.idempotency_key.as_deref(), Some("k"));
        assert_eq!(submission.payload, json!({"texts": ["good"]}));
        let errors: Vec<&str> = items[1..]
            .iter()
            .map(|item| item.as_ref().unwrap_err().as_str())
            .collect();
        assert!(
            errors[0].starts_with("kind: must be one of"),
            "{}",
            errors[0]
        );
        assert_eq!(errors[1], "payload: is required");
        assert_eq!(errors[2], "queue: unknown field");
        assert_eq!(
            errors[3],
            "idempotency_key: expected string, found a number"
        );
        assert_eq!(errors[4], "job: expected object, found a string");
        assert_eq!(errors[5], "idempotency_key: at least 1 characters required");
    }

    /// Proves payloads are validated for their kind as the single submission does, naming
    /// the field, and valid jobs carry the request's id, trace and attempts.
    #[test]
    fn payloads_are_validated_for_their_kind() {
        let items = read(&json!({"jobs": [
            {"kind": "sentiment.analyze", "payload": {"texts": []}},
            {"kind": "sentiment.analyze", "payload": {"texts": ["fine"]}},
        ]}))
        .unwrap();
        let defaults = NewJobDefaults {
            request_id: "req-7".to_owned(),
            trace_id: Some("4bf92f3577b34da6a3ce929d0e0e4736".to_owned()),
            job_defaults: bulwark_core::JobDefaults::new(4),
            now_ms: 1_000,
        };
        let plan = plan(items, &defaults);
        let message = plan.invalid[0]
            .as_deref()
            .expect("an empty texts list is invalid");
        assert!(message.starts_with("payload.texts"), "{message}");
        assert_eq!(plan.invalid[1], None, "a good job is valid");
        assert_eq!(plan.new_jobs.len(), 1);
        let new_job = &plan.new_jobs[0];
        assert_eq!(new_job.kind, "sentiment.analyze");
        assert_eq!(new_job.request_id.as_deref(), Some("req-7"));
        assert_eq!(new_job.trace_id, defaults.trace_id);
        assert_eq!(new_job.max_attempts, 4);
    }
}
