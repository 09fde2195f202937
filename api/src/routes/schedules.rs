use std::str::FromStr;
use std::sync::Arc;

use bulwark_actors::{first_slot, validate_job, validate_trigger};
use bulwark_core::{JobKind, format_rfc3339_ms, now_ms, parse_rfc3339_ms};
use bulwark_store::{
    MisfirePolicy, OverlapPolicy, Schedule, ScheduleFilter, ScheduleRun, ScheduleSpec,
    ScheduleStatus, ScheduleTrigger, ScheduleWrite,
};
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Enum, Object, OpenApi};
use serde_json::Value;

use crate::ApiTags;
use crate::auth::{OperateKey, ReadKey};
use crate::error::{ApiError, ApiResult};
use crate::routes::jobs::JobKindName;
use crate::routes::paging::{check_cursor, page_size};
use crate::state::ApiState;
use crate::strict_json::StrictJson;

const MAX_NAME_LEN: usize = 200;
const DEFAULT_CATCH_UP_WINDOW_MS: i64 = 3_600_000;
const DEFAULT_MAX_CONSECUTIVE_FAILURES: i32 = 5;

/// When a schedule fires: `cron` (with `cron` and `timezone`), `interval` (with `every_ms`,
/// optionally `start_at`) or `once` (with `at`).
#[derive(Debug, Clone, Object)]
#[oai(deny_unknown_fields)]
pub struct TriggerBody {
    /// `cron`, `interval` or `once`.
    #[oai(rename = "type")]
    pub trigger_type: String,
    /// Cron expression: 5 fields, or 6 with leading seconds (e.g. `0 9 * * MON-FRI`).
    pub cron: Option<String>,
    /// IANA time zone the cron expression is read in (default `UTC`).
    pub timezone: Option<String>,
    /// Interval in milliseconds, at least 1000.
    pub every_ms: Option<i64>,
    /// RFC 3339 time of an interval's first slot (default: now + interval).
    pub start_at: Option<String>,
    /// RFC 3339 time a one-time schedule fires.
    pub at: Option<String>,
}

/// A schedule to create.
#[derive(Debug, Clone, Object)]
#[oai(deny_unknown_fields)]
pub struct ScheduleCreate {
    /// Unique name, 1 to 200 characters, not blank.
    #[oai(validator(max_length = 200, pattern = r"\S"))]
    pub name: String,
    /// The job kind each run creates.
    pub kind: JobKindName,
    /// The job payload each run creates, validated for its kind.
    pub payload: Value,
    pub trigger: TriggerBody,
    /// `skip`, `fire_once` (default) or `catch_up`: what to do with slots missed while no node
    /// was firing.
    pub misfire_policy: Option<String>,
    /// `catch_up` fires missed slots no older than this (default one hour).
    #[oai(validator(minimum(value = "0")))]
    pub catch_up_window_ms: Option<i64>,
    /// `allow` (default), `skip` or `queue_one`: what to do when a slot is due while the
    /// previous run's job is still queued or running.
    pub overlap_policy: Option<String>,
    /// Consecutive failed runs after which the schedule pauses itself (default 5, 0 = never).
    #[oai(validator(minimum(value = "0")))]
    pub max_consecutive_failures: Option<i32>,
    /// Create it paused.
    pub paused: Option<bool>,
}

/// Fields to change; absent fields keep their value. A new trigger starts from now.
#[derive(Debug, Clone, Object)]
#[oai(deny_unknown_fields)]
pub struct ScheduleUpdate {
    #[oai(validator(max_length = 200, pattern = r"\S"))]
    pub name: Option<String>,
    pub kind: Option<JobKindName>,
    pub payload: Option<Value>,
    pub trigger: Option<TriggerBody>,
    pub misfire_policy: Option<String>,
    #[oai(validator(minimum(value = "0")))]
    pub catch_up_window_ms: Option<i64>,
    pub overlap_policy: Option<String>,
    #[oai(validator(minimum(value = "0")))]
    pub max_consecutive_failures: Option<i32>,
}

/// A trigger as stored.
#[derive(Debug, Clone, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct TriggerView {
    #[oai(rename = "type")]
    pub trigger_type: String,
    pub cron: Option<String>,
    pub timezone: Option<String>,
    pub every_ms: Option<i64>,
    pub start_at: Option<String>,
    pub at: Option<String>,
}

/// A schedule and its counters. Times are RFC 3339.
#[derive(Debug, Clone, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct ScheduleView {
    pub id: String,
    pub name: String,
    pub kind: String,
    pub payload: Value,
    pub trigger: TriggerView,
    /// `active`, `paused` or `completed` (a one-time schedule that fired).
    pub status: String,
    /// Why it is paused: `operator` or `max_consecutive_failures`.
    pub paused_reason: Option<String>,
    pub misfire_policy: String,
    pub catch_up_window_ms: i64,
    pub overlap_policy: String,
    pub max_consecutive_failures: i32,
    pub next_fire_at: Option<String>,
    pub last_fire_at: Option<String>,
    /// The slot `queue_one` holds back until the previous run finishes.
    pub pending_fire_at: Option<String>,
    pub last_job_id: Option<String>,
    /// Runs that created a job.
    pub num_runs: i64,
    /// Runs whose job failed or ran out of attempts.
    pub num_failures: i64,
    /// Slots missed under the misfire policy.
    pub num_missed: i64,
    pub consecutive_failures: i32,
    pub created_at: String,
    pub updated_at: String,
}

impl From<Schedule> for ScheduleView {
    fn from(schedule: Schedule) -> Self {
        let trigger = match schedule.trigger {
            ScheduleTrigger::Cron {
                expression,
                timezone,
            } => TriggerView {
                trigger_type: "cron".to_owned(),
                cron: Some(expression),
                timezone: Some(timezone),
                every_ms: None,
                start_at: None,
                at: None,
            },
            ScheduleTrigger::Interval {
                every_ms,
                anchor_ms,
            } => TriggerView {
                trigger_type: "interval".to_owned(),
                cron: None,
                timezone: None,
                every_ms: Some(every_ms),
                start_at: Some(format_rfc3339_ms(anchor_ms)),
                at: None,
            },
            ScheduleTrigger::Once { at_ms } => TriggerView {
                trigger_type: "once".to_owned(),
                cron: None,
                timezone: None,
                every_ms: None,
                start_at: None,
                at: Some(format_rfc3339_ms(at_ms)),
            },
        };
        ScheduleView {
            id: schedule.id,
            name: schedule.name,
            kind: schedule.kind,
            payload: schedule.payload,
            trigger,
            status: schedule.status.as_str().to_owned(),
            paused_reason: schedule.paused_reason,
            misfire_policy: schedule.misfire_policy.as_str().to_owned(),
            catch_up_window_ms: schedule.catch_up_window_ms,
            overlap_policy: schedule.overlap_policy.as_str().to_owned(),
            max_consecutive_failures: schedule.max_consecutive_failures,
            next_fire_at: schedule.next_fire_at_ms.map(format_rfc3339_ms),
            last_fire_at: schedule.last_fire_at_ms.map(format_rfc3339_ms),
            pending_fire_at: schedule.pending_fire_at_ms.map(format_rfc3339_ms),
            last_job_id: schedule.last_job_id,
            num_runs: schedule.num_runs,
            num_failures: schedule.num_failures,
            num_missed: schedule.num_missed,
            consecutive_failures: schedule.consecutive_failures,
            created_at: format_rfc3339_ms(schedule.created_at_ms),
            updated_at: format_rfc3339_ms(schedule.updated_at_ms),
        }
    }
}

/// A page of schedules, newest first.
#[derive(Debug, Clone, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct ScheduleList {
    pub schedules: Vec<ScheduleView>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// One slot of a schedule and what became of it.
#[derive(Debug, Clone, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct ScheduleRunView {
    pub fire_at: String,
    /// `enqueued`, `deferred`, `skipped`, `missed`, `succeeded` or `failed`.
    pub outcome: String,
    /// `misfire`, `overlap` or `manual`.
    pub reason: Option<String>,
    pub job_id: Option<String>,
    /// Slot time to job created, in milliseconds.
    pub lag_ms: Option<i64>,
}

impl From<ScheduleRun> for ScheduleRunView {
    fn from(run: ScheduleRun) -> Self {
        ScheduleRunView {
            fire_at: format_rfc3339_ms(run.fire_at_ms),
            outcome: run.outcome,
            reason: run.reason,
            job_id: run.job_id,
            lag_ms: run.lag_ms,
        }
    }
}

/// A schedule's most recent slots.
#[derive(Debug, Clone, Object)]
pub struct ScheduleRunList {
    pub runs: Vec<ScheduleRunView>,
}

/// A run fired by hand.
#[derive(Debug, Clone, Object)]
pub struct TriggeredView {
    pub job_id: String,
    pub fire_at: String,
}

/// A schedule status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "lowercase")]
pub enum ScheduleStatusName {
    Active,
    Paused,
    Completed,
}

impl From<ScheduleStatusName> for ScheduleStatus {
    fn from(name: ScheduleStatusName) -> Self {
        match name {
            ScheduleStatusName::Active => ScheduleStatus::Active,
            ScheduleStatusName::Paused => ScheduleStatus::Paused,
            ScheduleStatusName::Completed => ScheduleStatus::Completed,
        }
    }
}

#[derive(ApiResponse)]
enum CreatedResponse {
    #[oai(status = 201)]
    Created(Json<ScheduleView>),
}

#[derive(ApiResponse)]
enum DeletedResponse {
    #[oai(status = 204)]
    Deleted,
}

#[derive(ApiResponse)]
enum TriggeredResponse {
    #[oai(status = 202)]
    Accepted(Json<TriggeredView>),
}

fn parse_field<T: FromStr<Err = String>>(field: &str, text: &str) -> Result<T, ApiError> {
    text.parse()
        .map_err(|error| ApiError::invalid(format!("{field}: {error}")))
}

fn parse_trigger(body: &TriggerBody, now_ms: i64) -> Result<ScheduleTrigger, ApiError> {
    let time = |field: &str, text: &str| {
        parse_rfc3339_ms(text).map_err(|error| ApiError::invalid(format!("{field}: {error}")))
    };
    let trigger = match body.trigger_type.as_str() {
        "cron" => ScheduleTrigger::Cron {
            expression: body
                .cron
                .clone()
                .ok_or_else(|| ApiError::invalid("trigger.cron: required for a cron trigger"))?,
            timezone: body.timezone.clone().unwrap_or_else(|| "UTC".to_owned()),
        },
        "interval" => {
            let every_ms = body.every_ms.ok_or_else(|| {
                ApiError::invalid("trigger.every_ms: required for an interval trigger")
            })?;
            let anchor_ms = match &body.start_at {
                Some(text) => time("trigger.start_at", text)?,
                None => now_ms.saturating_add(every_ms),
            };
            ScheduleTrigger::Interval {
                every_ms,
                anchor_ms,
            }
        }
        "once" => {
            let text = body
                .at
                .as_deref()
                .ok_or_else(|| ApiError::invalid("trigger.at: required for a once trigger"))?;
            ScheduleTrigger::Once {
                at_ms: time("trigger.at", text)?,
            }
        }
        other => {
            return Err(ApiError::invalid(format!(
                "trigger.type: unknown value `{other}`, expected one of: cron, interval, once"
            )));
        }
    };
    validate_trigger(&trigger).map_err(|error| ApiError::invalid(error.to_string()))?;
    Ok(trigger)
}

/// Checks the fields shared by create and update.
fn validate_spec(spec: &ScheduleSpec) -> Result<(), ApiError> {
    if spec.name.trim().is_empty() || spec.name.len() > MAX_NAME_LEN {
        return Err(ApiError::invalid(format!(
            "name: must be 1 to {MAX_NAME_LEN} bytes long and not blank"
        )));
    }
    validate_job(&spec.kind, &spec.payload).map_err(|error| ApiError::invalid(error.message))?;
    if spec.catch_up_window_ms < 0 {
        return Err(ApiError::invalid(
            "catch_up_window_ms: must not be negative",
        ));
    }
    if spec.max_consecutive_failures < 0 {
        return Err(ApiError::invalid(
            "max_consecutive_failures: must not be negative",
        ));
    }
    Ok(())
}

fn next_slot(trigger: &ScheduleTrigger, now_ms: i64) -> Result<Option<i64>, ApiError> {
    first_slot(trigger, now_ms).map_err(|error| ApiError::invalid(error.to_string()))
}

pub struct SchedulesApi {
    pub state: Arc<ApiState>,
}

impl SchedulesApi {
    fn notify_scheduler(&self) {
        if let Some(scheduler) = &self.state.scheduler {
            scheduler.notify();
        }
    }

    async fn load(&self, id: &str) -> ApiResult<Schedule> {
        self.state
            .store
            .get_schedule(id)
            .await?
            .ok_or_else(|| ApiError::not_found(format!("schedule {id} does not exist")))
    }

    fn written(&self, write: ScheduleWrite, name: &str, id: &str) -> ApiResult<Schedule> {
        match write {
            ScheduleWrite::Stored(schedule) => {
                self.notify_scheduler();
                Ok(*schedule)
            }
            ScheduleWrite::NameTaken => Err(ApiError::conflict(format!(
                "name: a schedule named `{name}` already exists"
            ))),
            ScheduleWrite::NotFound => {
                Err(ApiError::not_found(format!("schedule {id} does not exist")))
            }
        }
    }
}

#[OpenApi(tag = "ApiTags::Schedules")]
impl SchedulesApi {
    /// Creates a schedule.
    ///
    /// The job template is validated like `POST /v1/jobs`; an invalid cron expression, time
    /// zone or policy is `422` naming the field; a name in use is `409`.
    #[oai(
        path = "/v1/schedules",
        method = "post",
        operation_id = "create_schedule"
    )]
    async fn create(
        &self,
        _auth: OperateKey,
        body: StrictJson<ScheduleCreate>,
    ) -> ApiResult<CreatedResponse> {
        let create = body.0;
        let now_ms = now_ms();
        let trigger = parse_trigger(&create.trigger, now_ms)?;
        let status = if create.paused.unwrap_or(false) {
            ScheduleStatus::Paused
        } else {
            ScheduleStatus::Active
        };
        let spec = ScheduleSpec {
            next_fire_at_ms: next_slot(&trigger, now_ms)?,
            name: create.name,
            kind: JobKind::from(create.kind).as_str().to_owned(),
            payload: create.payload,
            trigger,
            status,
            misfire_policy: match &create.misfire_policy {
                Some(text) => parse_field::<MisfirePolicy>("misfire_policy", text)?,
                None => MisfirePolicy::FireOnce,
            },
            catch_up_window_ms: create
                .catch_up_window_ms
                .unwrap_or(DEFAULT_CATCH_UP_WINDOW_MS),
            overlap_policy: match &create.overlap_policy {
                Some(text) => parse_field::<OverlapPolicy>("overlap_policy", text)?,
                None => OverlapPolicy::Allow,
            },
            max_consecutive_failures: create
                .max_consecutive_failures
                .unwrap_or(DEFAULT_MAX_CONSECUTIVE_FAILURES),
        };
        validate_spec(&spec)?;
        let write = self.state.store.insert_schedule(&spec, now_ms).await?;
        let schedule = self.written(write, &spec.name, "")?;
        Ok(CreatedResponse::Created(Json(schedule.into())))
    }

    /// Lists schedules, newest first, with cursor pagination.
    #[oai(
        path = "/v1/schedules",
        method = "get",
        operation_id = "list_schedules"
    )]
    // Each argument is the key or one query parameter of the operation.
    #[allow(clippy::too_many_arguments)]
    async fn list(
        &self,
        _auth: ReadKey,
        /// Only schedules in this status: `active`, `paused` or `completed`.
        status: Query<Option<ScheduleStatusName>>,
        /// Only schedules creating jobs of this kind.
        kind: Query<Option<String>>,
        /// Page size, 1 to 500 (default 50).
        #[oai(validator(minimum(value = "1"), maximum(value = "500")))]
        limit: Query<Option<u32>>,
        /// The `next_cursor` of the previous page.
        #[oai(validator(
            pattern = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
        ))]
        cursor: Query<Option<String>>,
    ) -> ApiResult<Json<ScheduleList>> {
        let status = status.0.map(ScheduleStatus::from);
        let limit = page_size(limit.0)?;
        check_cursor(cursor.0.as_deref())?;
        let filter = ScheduleFilter {
            status,
            kind: kind.0,
            before_id: cursor.0,
            limit,
        };
        let page = self.state.store.list_schedules(&filter).await?;
        Ok(Json(ScheduleList {
            schedules: page.schedules.into_iter().map(Into::into).collect(),
            next_cursor: page.next_cursor,
        }))
    }

    /// Returns one schedule.
    #[oai(
        path = "/v1/schedules/:id",
        method = "get",
        operation_id = "get_schedule"
    )]
    async fn get(&self, _auth: ReadKey, id: Path<String>) -> ApiResult<Json<ScheduleView>> {
        Ok(Json(self.load(&id.0).await?.into()))
    }

    /// Changes a schedule; takes effect at once, without a restart.
    #[oai(
        path = "/v1/schedules/:id",
        method = "patch",
        operation_id = "update_schedule"
    )]
    async fn update(
        &self,
        _auth: OperateKey,
        id: Path<String>,
        body: StrictJson<ScheduleUpdate>,
    ) -> ApiResult<Json<ScheduleView>> {
        let update = body.0;
        let schedule = self.load(&id.0).await?;
        let now_ms = now_ms();
        let mut spec = ScheduleSpec::of(&schedule);
        if let Some(trigger) = &update.trigger {
            spec.trigger = parse_trigger(trigger, now_ms)?;
            spec.next_fire_at_ms = next_slot(&spec.trigger, now_ms)?;
            if spec.status == ScheduleStatus::Completed {
                spec.status = ScheduleStatus::Active;
            }
        }
        if let Some(name) = update.name {
            spec.name = name;
        }
        if let Some(kind) = update.kind {
            spec.kind = JobKind::from(kind).as_str().to_owned();
        }
        if let Some(payload) = update.payload {
            spec.payload = payload;
        }
        if let Some(text) = &update.misfire_policy {
            spec.misfire_policy = parse_field("misfire_policy", text)?;
        }
        if let Some(window_ms) = update.catch_up_window_ms {
            spec.catch_up_window_ms = window_ms;
        }
        if let Some(text) = &update.overlap_policy {
            spec.overlap_policy = parse_field("overlap_policy", text)?;
        }
        if let Some(max_failures) = update.max_consecutive_failures {
            spec.max_consecutive_failures = max_failures;
        }
        validate_spec(&spec)?;
        let write = self
            .state
            .store
            .update_schedule(&schedule.id, &spec, now_ms)
            .await?;
        Ok(Json(self.written(write, &spec.name, &schedule.id)?.into()))
    }

    /// Deletes a schedule and its run history; jobs it created stay.
    #[oai(
        path = "/v1/schedules/:id",
        method = "delete",
        operation_id = "delete_schedule"
    )]
    async fn delete(&self, _auth: OperateKey, id: Path<String>) -> ApiResult<DeletedResponse> {
        if !self.state.store.delete_schedule(&id.0).await? {
            return Err(ApiError::not_found(format!(
                "schedule {} does not exist",
                id.0
            )));
        }
        self.notify_scheduler();
        Ok(DeletedResponse::Deleted)
    }

    /// Pauses a schedule: no slot fires until it is resumed.
    #[oai(
        path = "/v1/schedules/:id/pause",
        method = "post",
        operation_id = "pause_schedule"
    )]
    async fn pause(&self, _auth: OperateKey, id: Path<String>) -> ApiResult<Json<ScheduleView>> {
        match self
            .state
            .store
            .pause_schedule(&id.0, "operator", now_ms())
            .await?
        {
            Some(schedule) => {
                self.notify_scheduler();
                Ok(Json(schedule.into()))
            }
            None => Err(ApiError::not_found(format!(
                "schedule {} does not exist",
                id.0
            ))),
        }
    }

    /// Resumes a paused schedule from now: slots that passed while it was paused do not fire,
    /// and its consecutive failures start from zero.
    #[oai(
        path = "/v1/schedules/:id/resume",
        method = "post",
        operation_id = "resume_schedule"
    )]
    async fn resume(&self, _auth: OperateKey, id: Path<String>) -> ApiResult<Json<ScheduleView>> {
        let schedule = self.load(&id.0).await?;
        match schedule.status {
            ScheduleStatus::Active => return Ok(Json(schedule.into())),
            ScheduleStatus::Completed => {
                return Err(ApiError::conflict(format!(
                    "status: schedule {} has completed; give it a new trigger to run again",
                    schedule.id
                )));
            }
            ScheduleStatus::Paused => {}
        }
        let now_ms = now_ms();
        let mut spec = ScheduleSpec::of(&schedule);
        spec.status = ScheduleStatus::Active;
        spec.next_fire_at_ms = match &schedule.trigger {
            // A one-time slot that passed during the pause still fires once.
            ScheduleTrigger::Once { at_ms } => Some(*at_ms),
            trigger => bulwark_actors::next_slot_after(trigger, now_ms)
                .map_err(|error| ApiError::invalid(error.to_string()))?,
        };
        let write = self
            .state
            .store
            .update_schedule(&schedule.id, &spec, now_ms)
            .await?;
        Ok(Json(self.written(write, &spec.name, &schedule.id)?.into()))
    }

    /// Fires a schedule once now, whatever its status and policies; returns the job.
    #[oai(
        path = "/v1/schedules/:id/trigger",
        method = "post",
        operation_id = "trigger_schedule"
    )]
    async fn trigger(&self, _auth: OperateKey, id: Path<String>) -> ApiResult<TriggeredResponse> {
        let Some(scheduler) = &self.state.scheduler else {
            return Err(ApiError::unavailable(
                "the scheduler is not running on this node (scheduler.enabled = false)",
            ));
        };
        let run = scheduler.trigger(&id.0).await?;
        Ok(TriggeredResponse::Accepted(Json(TriggeredView {
            job_id: run.job_id,
            fire_at: format_rfc3339_ms(run.fire_at_ms),
        })))
    }

    /// Returns a schedule's most recent slots (fired, deferred, skipped, missed), newest first.
    #[oai(
        path = "/v1/schedules/:id/runs",
        method = "get",
        operation_id = "list_schedule_runs"
    )]
    async fn runs(
        &self,
        _auth: ReadKey,
        id: Path<String>,
        /// How many, 1 to 500 (default 50).
        #[oai(validator(minimum(value = "1"), maximum(value = "500")))]
        limit: Query<Option<u32>>,
    ) -> ApiResult<Json<ScheduleRunList>> {
        let limit = page_size(limit.0)?;
        let schedule = self.load(&id.0).await?;
        let runs = self
            .state
            .store
            .list_schedule_runs(&schedule.id, limit)
            .await?;
        Ok(Json(ScheduleRunList {
            runs: runs.into_iter().map(Into::into).collect(),
        }))
    }
}
