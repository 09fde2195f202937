//! Workflows over HTTP: jobs that wait for each other submitted in one call
//! (`POST /v1/jobs/graph`, a DAG with client-side keys), and the graph around a job with the
//! state of each (`GET /v1/jobs/{id}/graph`).

use std::collections::HashMap;
use std::sync::Arc;

use bulwark_actors::validate_job;
use bulwark_core::{JobKind, TraceContext};
use bulwark_store::{BatchInsertOutcome, JobGraph, NewJob, ParentRef};
use poem::web::Data;
use poem_openapi::param::{Header, Path};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};
use serde_json::Value;

use crate::ApiTags;
use crate::auth::{ReadKey, SubmitKey};
use crate::error::{ApiError, ApiResult};
use crate::middleware::RequestId;
use crate::routes::job_batches::charged_store;
use crate::routes::jobs::{JobKindName, JobView, ParentFailureName, conflict_message};
use crate::state::ApiState;
use crate::strict_json::StrictJson;

/// The most jobs a graph view reads.
const MAX_GRAPH_VIEW_JOBS: usize = 1_000;

/// One job of a graph.
#[derive(Debug, Clone, Object)]
#[oai(deny_unknown_fields)]
pub struct GraphJobSubmission {
    /// The job's name in this graph, unique in it: what other jobs' `depends_on` name.
    #[oai(validator(min_length = 1, max_length = 100))]
    pub key: String,
    pub kind: JobKindName,
    /// The kind's input, as for `POST /v1/jobs`.
    pub payload: Value,
    /// Keys of jobs of this graph, or ids of stored jobs, this job waits for: it runs once
    /// every one of them succeeded.
    #[oai(validator(max_items = 1000, unique_items = true))]
    pub depends_on: Option<Vec<String>>,
    /// As for `POST /v1/jobs`: submitting the graph again returns the stored jobs.
    #[oai(validator(min_length = 1, max_length = 255))]
    pub idempotency_key: Option<String>,
    /// 0 (lowest) to 9 (highest); unset: the kind's default.
    #[oai(validator(minimum(value = "0"), maximum(value = "9")))]
    pub priority: Option<u8>,
    /// 1 to 86,400,000 ms per attempt; unset: the kind's default.
    #[oai(validator(minimum(value = "1"), maximum(value = "86400000")))]
    pub timeout_ms: Option<i64>,
    /// As for `POST /v1/jobs`: how long the job and its result are kept once it finished.
    #[oai(validator(minimum(value = "1000"), maximum(value = "31622400000")))]
    pub result_ttl_ms: Option<i64>,
}

/// Jobs that wait for each other (a directed acyclic graph), stored together.
#[derive(Debug, Clone, Object)]
#[oai(deny_unknown_fields)]
pub struct GraphSubmission {
    #[oai(validator(min_items = 1, max_items = 1000))]
    pub jobs: Vec<GraphJobSubmission>,
    /// When a job waited for ends `failed`, `dead` or `cancelled`: `cancel` (the default)
    /// cancels the jobs waiting for it, in turn; `run` runs them anyway once all they wait
    /// for finished.
    pub on_parent_failure: Option<ParentFailureName>,
}

/// A stored job of a graph, under its key.
#[derive(Debug, Clone, Object)]
pub struct GraphJobStored {
    pub key: String,
    pub job: JobView,
}

/// The jobs of a stored graph, in the order submitted.
#[derive(Debug, Clone, Object)]
pub struct GraphStored {
    pub jobs: Vec<GraphJobStored>,
}

#[derive(ApiResponse)]
enum GraphResponse {
    /// The graph was stored: jobs without parents are queued, the rest wait.
    #[oai(status = 202)]
    Created(Json<GraphStored>),
}

/// A job in a graph view.
#[derive(Debug, Clone, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct GraphNodeView {
    pub id: String,
    pub kind: String,
    pub status: String,
    /// True while it waits for the jobs it depends on.
    pub waiting_on_parents: Option<bool>,
}

/// `job` depends on `parent`.
#[derive(Debug, Clone, Object)]
pub struct GraphEdgeView {
    pub parent: String,
    pub job: String,
}

/// A job and every job it is connected to through dependencies.
#[derive(Debug, Clone, Object)]
pub struct JobGraphBody {
    pub job_id: String,
    pub jobs: Vec<GraphNodeView>,
    pub edges: Vec<GraphEdgeView>,
    /// True when the graph holds more than the 1,000 jobs shown.
    pub truncated: bool,
}

pub struct JobGraphsApi {
    pub state: Arc<ApiState>,
}

#[OpenApi(tag = "ApiTags::Jobs")]
impl JobGraphsApi {
    /// Submits jobs that wait for each other.
    ///
    /// A workflow in one call: each job has a `key`, and `depends_on` names the keys (or the
    /// ids of stored jobs) it waits for. Every job is validated first, and the graph is
    /// refused with `422` naming the field when a payload is wrong, a key is used twice, a
    /// parent is unknown, or the jobs wait for each other in a cycle (`jobs[2].depends_on: a
    /// cycle (b -> c -> b)`); nothing is stored then. Otherwise every job is stored in one
    /// transaction: jobs without parents are queued at once, the others wait and are released
    /// (within `jobs.control_interval_ms`) when every parent succeeded, or cancelled when one
    /// did not (see `on_parent_failure`). `sentiment.aggregate` jobs sum up their parents'
    /// sentiment results.
    #[oai(
        path = "/v1/jobs/graph",
        method = "post",
        operation_id = "submit_job_graph"
    )]
    async fn submit_graph(
        &self,
        auth: SubmitKey,
        body: StrictJson<GraphSubmission>,
        request_id: Data<&RequestId>,
        /// W3C trace context; every job of the graph continues it.
        traceparent: Header<Option<String>>,
    ) -> ApiResult<GraphResponse> {
        let submission = body.0;
        let trace = TraceContext::continue_or_start(traceparent.0);
        let mut positions: HashMap<&str, usize> = HashMap::new();
        for (index, job) in submission.jobs.iter().enumerate() {
            if let Some(first) = positions.insert(job.key.as_str(), index) {
                return Err(ApiError::invalid(format!(
                    "jobs[{index}].key: `{}` is the key of jobs[{first}] too",
                    job.key
                )));
            }
        }
        let defaults = &self.state.job_defaults;
        let mut graph = JobGraph {
            jobs: Vec::with_capacity(submission.jobs.len()),
            parents: Vec::with_capacity(submission.jobs.len()),
            on_parent_failure: submission
                .on_parent_failure
                .map(Into::into)
                .unwrap_or_default(),
        };
        for (index, job) in submission.jobs.iter().enumerate() {
            let kind = JobKind::from(job.kind).as_str();
            validate_job(kind, &job.payload)
                .map_err(|error| ApiError::invalid(format!("jobs[{index}].{}", error.message)))?;
            let depends_on = job.depends_on.clone().unwrap_or_default();
            if depends_on.is_empty() && job.kind == JobKindName::SentimentAggregate {
                return Err(ApiError::invalid(format!(
                    "jobs[{index}].depends_on: a sentiment.aggregate job sums up the jobs it \
                     depends on; give at least one"
                )));
            }
            let mut parents = Vec::with_capacity(depends_on.len());
            for (parent_index, name) in depends_on.into_iter().enumerate() {
                if let Some(position) = positions.get(name.as_str()) {
                    parents.push(ParentRef::Node(*position));
                } else if self.state.store.get_job(&name).await?.is_some() {
                    parents.push(ParentRef::Job(name));
                } else {
                    return Err(ApiError::invalid(format!(
                        "jobs[{index}].depends_on[{parent_index}]: no key of this graph and no \
                         stored job is `{name}`"
                    )));
                }
            }
            graph.parents.push(parents);
            graph.jobs.push(NewJob {
                kind: kind.to_owned(),
                payload: job.payload.clone(),
                idempotency_key: job.idempotency_key.clone(),
                request_id: Some(request_id.0.0.clone()),
                trace_id: trace.trace_id(),
                max_attempts: defaults.max_attempts_of(kind),
                priority: job.priority.unwrap_or(defaults.priority_of(kind)),
                run_at_ms: None,
                timeout_ms: job.timeout_ms.or(defaults.timeout_ms_of(kind)),
                result_ttl_ms: job.result_ttl_ms,
            });
        }
        if let Err(error) = graph.check() {
            let key_of = |position: usize| submission.jobs[position].key.as_str();
            let message = if error.cycle.is_empty() {
                "a job cannot depend on itself".to_owned()
            } else {
                let path: Vec<&str> = error
                    .cycle
                    .iter()
                    .map(|position| key_of(*position))
                    .collect();
                format!("a cycle ({})", path.join(" -> "))
            };
            return Err(ApiError::invalid(format!(
                "jobs[{}].depends_on: {message}",
                error.index
            )));
        }
        let outcomes = charged_store(
            &self.state,
            &auth.0,
            &graph.jobs,
            self.state.intake.submit_graph(&graph, &trace),
        )
        .await?;
        let mut jobs = Vec::with_capacity(outcomes.len());
        for (index, (outcome, job)) in outcomes.into_iter().zip(&submission.jobs).enumerate() {
            let stored_job = match outcome {
                BatchInsertOutcome::Created(stored) | BatchInsertOutcome::Existing(stored) => {
                    stored
                }
                BatchInsertOutcome::Conflict(stored) => {
                    return Err(ApiError::conflict(format!(
                        "jobs[{index}].{}",
                        conflict_message(&stored.id)
                    )));
                }
            };
            jobs.push(GraphJobStored {
                key: job.key.clone(),
                job: stored_job.into(),
            });
        }
        Ok(GraphResponse::Created(Json(GraphStored { jobs })))
    }

    /// Returns the graph around a job.
    ///
    /// Every job connected to it through dependencies (its parents, their parents, the jobs
    /// waiting for it...), with its status, and every edge; at most 1,000 jobs (`truncated`
    /// says when there are more). A job without dependencies is a graph of one.
    #[oai(
        path = "/v1/jobs/:id/graph",
        method = "get",
        operation_id = "get_job_graph"
    )]
    async fn graph(&self, _auth: ReadKey, id: Path<String>) -> ApiResult<Json<JobGraphBody>> {
        let Some(view) = self
            .state
            .store
            .job_graph(&id.0, MAX_GRAPH_VIEW_JOBS)
            .await?
        else {
            return Err(ApiError::not_found(format!("job {} does not exist", id.0)));
        };
        Ok(Json(JobGraphBody {
            job_id: id.0,
            jobs: view
                .jobs
                .into_iter()
                .map(|job| GraphNodeView {
                    waiting_on_parents: job.is_waiting_on_parents().then_some(true),
                    id: job.id,
                    kind: job.kind,
                    status: job.status.as_str().to_owned(),
                })
                .collect(),
            edges: view
                .edges
                .into_iter()
                .map(|(parent, job)| GraphEdgeView { parent, job })
                .collect(),
            truncated: view.truncated,
        }))
    }
}
