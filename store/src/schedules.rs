//! The `schedules` and `schedule_runs` tables. Every time here is Unix milliseconds passed in
//! by the caller, so the scheduler's clock can be injected in tests.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use crate::db::with_pool;
use crate::{BoxError, Store, StoreError};

/// The columns of `schedules`, in [`ScheduleRow`] order.
macro_rules! schedule_columns {
    () => {
        "id, name, kind, payload, trigger_type, cron_expression, timezone, interval_ms, \
         trigger_at_ms, status, paused_reason, misfire_policy, catch_up_window_ms, \
         overlap_policy, max_consecutive_failures, next_fire_at_ms, last_fire_at_ms, \
         pending_fire_at_ms, last_job_id, num_runs, num_failures, num_missed, \
         consecutive_failures, created_at_ms, updated_at_ms"
    };
}

/// The columns of `schedule_runs`, in [`ScheduleRun`] order.
macro_rules! run_columns {
    () => {
        "id, schedule_id, fire_at_ms, outcome, reason, job_id, lag_ms, created_at_ms, \
         updated_at_ms"
    };
}

/// Declares a string-backed enum with `as_str`, `ALL`, `Display` and `FromStr`.
macro_rules! text_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$variant_meta:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
        pub enum $name {
            $($(#[$variant_meta])* #[serde(rename = $text)] $variant),+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = String;

            fn from_str(text: &str) -> Result<Self, Self::Err> {
                $name::ALL
                    .iter()
                    .copied()
                    .find(|value| value.as_str() == text)
                    .ok_or_else(|| {
                        let known: Vec<&str> = $name::ALL.iter().map(|value| value.as_str()).collect();
                        format!("unknown value `{text}`, expected one of: {}", known.join(", "))
                    })
            }
        }
    };
}

text_enum! {
    /// Whether a schedule fires.
    ScheduleStatus {
        Active => "active",
        /// Paused by an operator or after too many consecutive failures.
        Paused => "paused",
        /// A one-time schedule that has fired.
        Completed => "completed",
    }
}

text_enum! {
    /// What to do with slots that passed while no node was firing (downtime, long pauses of
    /// the scheduler), i.e. slots later than the misfire grace.
    MisfirePolicy {
        /// Record missed slots and wait for the next one.
        Skip => "skip",
        /// One catch-up run for the latest missed slot.
        FireOnce => "fire_once",
        /// Each missed slot within the catch-up window, bounded.
        CatchUp => "catch_up",
    }
}

text_enum! {
    /// What to do when a slot is due while the previous run's job is still queued or running.
    OverlapPolicy {
        /// Record the slot as skipped.
        Skip => "skip",
        /// Hold one slot back until the previous run finishes; further slots are skipped.
        QueueOne => "queue_one",
        /// Fire regardless.
        Allow => "allow",
    }
}

text_enum! {
    /// What became of one slot of a schedule.
    RunOutcome {
        /// A job was created.
        Enqueued => "enqueued",
        /// Held back by `queue_one` until the previous run finishes.
        Deferred => "deferred",
        /// Not fired because of the overlap policy.
        Skipped => "skipped",
        /// Not fired because of the misfire policy.
        Missed => "missed",
        /// The run's job succeeded.
        Succeeded => "succeeded",
        /// The run's job failed or ran out of attempts.
        Failed => "failed",
    }
}

/// When a schedule fires.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ScheduleTrigger {
    /// A cron expression (5 fields, or 6 with seconds) evaluated in an IANA time zone.
    Cron {
        expression: String,
        timezone: String,
    },
    /// Every `every_ms`, at `anchor_ms + k * every_ms`.
    Interval { every_ms: i64, anchor_ms: i64 },
    /// Once, at `at_ms`.
    Once { at_ms: i64 },
}

/// One row of `schedules`, decoded.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Schedule {
    pub id: String,
    pub name: String,
    pub kind: String,
    pub payload: Value,
    pub trigger: ScheduleTrigger,
    pub status: ScheduleStatus,
    pub paused_reason: Option<String>,
    pub misfire_policy: MisfirePolicy,
    pub catch_up_window_ms: i64,
    pub overlap_policy: OverlapPolicy,
    /// 0 means never pause on failures.
    pub max_consecutive_failures: i32,
    pub next_fire_at_ms: Option<i64>,
    pub last_fire_at_ms: Option<i64>,
    /// The slot held back by `queue_one`.
    pub pending_fire_at_ms: Option<i64>,
    pub last_job_id: Option<String>,
    pub num_runs: i64,
    pub num_failures: i64,
    pub num_missed: i64,
    pub consecutive_failures: i32,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

#[derive(sqlx::FromRow)]
struct ScheduleRow {
    id: String,
    name: String,
    kind: String,
    payload: String,
    trigger_type: String,
    cron_expression: Option<String>,
    timezone: Option<String>,
    interval_ms: Option<i64>,
    trigger_at_ms: Option<i64>,
    status: String,
    paused_reason: Option<String>,
    misfire_policy: String,
    catch_up_window_ms: i64,
    overlap_policy: String,
    max_consecutive_failures: i32,
    next_fire_at_ms: Option<i64>,
    last_fire_at_ms: Option<i64>,
    pending_fire_at_ms: Option<i64>,
    last_job_id: Option<String>,
    num_runs: i64,
    num_failures: i64,
    num_missed: i64,
    consecutive_failures: i32,
    created_at_ms: i64,
    updated_at_ms: i64,
}

impl TryFrom<ScheduleRow> for Schedule {
    type Error = StoreError;

    fn try_from(row: ScheduleRow) -> Result<Self, Self::Error> {
        let corrupt = |what: &str, error: BoxError| {
            StoreError::corrupt(format!("schedule {}: {what}", row.id), error)
        };
        let trigger = match (
            row.trigger_type.as_str(),
            row.cron_expression,
            row.timezone,
            row.interval_ms,
            row.trigger_at_ms,
        ) {
            ("cron", Some(expression), Some(timezone), _, _) => ScheduleTrigger::Cron {
                expression,
                timezone,
            },
            ("interval", _, _, Some(every_ms), Some(anchor_ms)) => ScheduleTrigger::Interval {
                every_ms,
                anchor_ms,
            },
            ("once", _, _, _, Some(at_ms)) => ScheduleTrigger::Once { at_ms },
            (other, ..) => {
                return Err(corrupt(
                    "trigger",
                    format!("unknown trigger `{other}`").into(),
                ));
            }
        };
        Ok(Schedule {
            payload: serde_json::from_str(&row.payload)
                .map_err(|error| corrupt("payload", error.into()))?,
            status: row
                .status
                .parse()
                .map_err(|error: String| corrupt("status", error.into()))?,
            misfire_policy: row
                .misfire_policy
                .parse()
                .map_err(|error: String| corrupt("misfire_policy", error.into()))?,
            overlap_policy: row
                .overlap_policy
                .parse()
                .map_err(|error: String| corrupt("overlap_policy", error.into()))?,
            trigger,
            id: row.id,
            name: row.name,
            kind: row.kind,
            paused_reason: row.paused_reason,
            catch_up_window_ms: row.catch_up_window_ms,
            max_consecutive_failures: row.max_consecutive_failures,
            next_fire_at_ms: row.next_fire_at_ms,
            last_fire_at_ms: row.last_fire_at_ms,
            pending_fire_at_ms: row.pending_fire_at_ms,
            last_job_id: row.last_job_id,
            num_runs: row.num_runs,
            num_failures: row.num_failures,
            num_missed: row.num_missed,
            consecutive_failures: row.consecutive_failures,
            created_at_ms: row.created_at_ms,
            updated_at_ms: row.updated_at_ms,
        })
    }
}

/// The fields an operator sets on a schedule; validated by the caller (the API validates the
/// job template, the cron expression and the time zone).
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleSpec {
    pub name: String,
    pub kind: String,
    pub payload: Value,
    pub trigger: ScheduleTrigger,
    pub status: ScheduleStatus,
    pub misfire_policy: MisfirePolicy,
    pub catch_up_window_ms: i64,
    pub overlap_policy: OverlapPolicy,
    pub max_consecutive_failures: i32,
    /// The first slot, computed by the caller from the trigger.
    pub next_fire_at_ms: Option<i64>,
}

impl ScheduleSpec {
    /// Returns the operator-set fields of a stored schedule, for a partial update.
    pub fn of(schedule: &Schedule) -> ScheduleSpec {
        ScheduleSpec {
            name: schedule.name.clone(),
            kind: schedule.kind.clone(),
            payload: schedule.payload.clone(),
            trigger: schedule.trigger.clone(),
            status: schedule.status,
            misfire_policy: schedule.misfire_policy,
            catch_up_window_ms: schedule.catch_up_window_ms,
            overlap_policy: schedule.overlap_policy,
            max_consecutive_failures: schedule.max_consecutive_failures,
            next_fire_at_ms: schedule.next_fire_at_ms,
        }
    }
}

/// The trigger's columns: type, cron expression, time zone, interval, anchor or time.
type TriggerColumns<'a> = (
    &'static str,
    Option<&'a str>,
    Option<&'a str>,
    Option<i64>,
    Option<i64>,
);

fn trigger_columns(trigger: &ScheduleTrigger) -> TriggerColumns<'_> {
    match trigger {
        ScheduleTrigger::Cron {
            expression,
            timezone,
        } => ("cron", Some(expression), Some(timezone), None, None),
        ScheduleTrigger::Interval {
            every_ms,
            anchor_ms,
        } => ("interval", None, None, Some(*every_ms), Some(*anchor_ms)),
        ScheduleTrigger::Once { at_ms } => ("once", None, None, None, Some(*at_ms)),
    }
}

/// What a write that may collide on the unique name did.
#[derive(Debug, Clone, PartialEq)]
pub enum ScheduleWrite {
    Stored(Box<Schedule>),
    /// Another schedule already has this name.
    NameTaken,
    /// No schedule has this id.
    NotFound,
}

/// Filters for [`Store::list_schedules`].
#[derive(Debug, Clone, Default)]
pub struct ScheduleFilter {
    pub status: Option<ScheduleStatus>,
    pub kind: Option<String>,
    /// Only schedules older than this id (ids are time-ordered UUIDv7), for pagination.
    pub before_id: Option<String>,
    pub limit: u32,
}

/// A page of schedules, newest first.
#[derive(Debug, Clone)]
pub struct SchedulePage {
    pub schedules: Vec<Schedule>,
    pub next_cursor: Option<String>,
}

/// What the scheduler writes back after handling a claimed schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleAdvance {
    pub next_fire_at_ms: Option<i64>,
    pub last_fire_at_ms: Option<i64>,
    pub pending_fire_at_ms: Option<i64>,
    pub last_job_id: Option<String>,
    pub status: ScheduleStatus,
    pub num_new_runs: i64,
    pub num_new_missed: i64,
}

/// One row of `schedule_runs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct ScheduleRun {
    pub id: String,
    pub schedule_id: String,
    pub fire_at_ms: i64,
    pub outcome: String,
    pub reason: Option<String>,
    pub job_id: Option<String>,
    /// Fire time to job created.
    pub lag_ms: Option<i64>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

/// A slot to record.
#[derive(Debug, Clone)]
pub struct NewScheduleRun<'a> {
    pub schedule_id: &'a str,
    pub fire_at_ms: i64,
    pub outcome: RunOutcome,
    pub reason: Option<&'a str>,
    pub job_id: Option<&'a str>,
    pub lag_ms: Option<i64>,
    pub now_ms: i64,
}

/// A run whose job has reached a final status but whose outcome is not yet counted.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct FinishedRun {
    pub run_id: String,
    pub schedule_id: String,
    pub job_status: String,
}

/// What counting a finished run did to its schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunSettled {
    pub succeeded: bool,
    /// True when this failure paused the schedule.
    pub paused: bool,
}

fn is_unique_violation(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .is_some_and(|database_error| database_error.is_unique_violation())
}

impl Store {
    /// Creates a schedule; [`ScheduleWrite::NameTaken`] when the name is in use.
    pub async fn insert_schedule(
        &self,
        spec: &ScheduleSpec,
        now_ms: i64,
    ) -> Result<ScheduleWrite, StoreError> {
        const INSERT: &str = concat!(
            "INSERT INTO schedules (id, name, kind, payload, trigger_type, cron_expression, \
             timezone, interval_ms, trigger_at_ms, status, misfire_policy, catch_up_window_ms, \
             overlap_policy, max_consecutive_failures, next_fire_at_ms, created_at_ms, \
             updated_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, \
             $14, $15, $16, $16) ON CONFLICT (name) DO NOTHING RETURNING ",
            schedule_columns!()
        );
        let id = Uuid::now_v7().to_string();
        let payload = spec.payload.to_string();
        let (trigger_type, expression, timezone, interval_ms, trigger_at_ms) =
            trigger_columns(&spec.trigger);
        let row: Option<ScheduleRow> = with_pool!(self, pool => {
            sqlx::query_as(INSERT)
                .bind(&id)
                .bind(&spec.name)
                .bind(&spec.kind)
                .bind(&payload)
                .bind(trigger_type)
                .bind(expression)
                .bind(timezone)
                .bind(interval_ms)
                .bind(trigger_at_ms)
                .bind(spec.status.as_str())
                .bind(spec.misfire_policy.as_str())
                .bind(spec.catch_up_window_ms)
                .bind(spec.overlap_policy.as_str())
                .bind(spec.max_consecutive_failures)
                .bind(spec.next_fire_at_ms)
                .bind(now_ms)
                .fetch_optional(pool)
                .await
        })?;
        match row {
            Some(row) => Ok(ScheduleWrite::Stored(Box::new(row.try_into()?))),
            None => Ok(ScheduleWrite::NameTaken),
        }
    }

    /// Returns the schedule with this id, if any.
    pub async fn get_schedule(&self, id: &str) -> Result<Option<Schedule>, StoreError> {
        const BY_ID: &str = concat!(
            "SELECT ",
            schedule_columns!(),
            " FROM schedules WHERE id = $1"
        );
        let row: Option<ScheduleRow> =
            with_pool!(self, pool => sqlx::query_as(BY_ID).bind(id).fetch_optional(pool).await)?;
        row.map(Schedule::try_from).transpose()
    }

    /// Returns one page of schedules, newest first.
    pub async fn list_schedules(
        &self,
        filter: &ScheduleFilter,
    ) -> Result<SchedulePage, StoreError> {
        const LIST: &str = concat!(
            "SELECT ",
            schedule_columns!(),
            " FROM schedules WHERE ($1 IS NULL OR status = $1) AND ($2 IS NULL OR kind = $2) \
             AND ($3 IS NULL OR id < $3) ORDER BY id DESC LIMIT $4"
        );
        let limit = i64::from(filter.limit.max(1));
        let rows: Vec<ScheduleRow> = with_pool!(self, pool => {
            sqlx::query_as(LIST)
                .bind(filter.status.map(ScheduleStatus::as_str))
                .bind(&filter.kind)
                .bind(&filter.before_id)
                .bind(limit + 1)
                .fetch_all(pool)
                .await
        })?;
        let mut schedules = rows
            .into_iter()
            .map(Schedule::try_from)
            .collect::<Result<Vec<_>, _>>()?;
        let next_cursor = if schedules.len() as i64 > limit {
            schedules.truncate(limit as usize);
            schedules.last().map(|schedule| schedule.id.clone())
        } else {
            None
        };
        Ok(SchedulePage {
            schedules,
            next_cursor,
        })
    }

    /// Replaces the operator-set fields of a schedule. Counters and history stay; a paused
    /// schedule set active again starts with no consecutive failures.
    pub async fn update_schedule(
        &self,
        id: &str,
        spec: &ScheduleSpec,
        now_ms: i64,
    ) -> Result<ScheduleWrite, StoreError> {
        const UPDATE: &str = concat!(
            "UPDATE schedules SET name = $2, kind = $3, payload = $4, trigger_type = $5, \
             cron_expression = $6, timezone = $7, interval_ms = $8, trigger_at_ms = $9, \
             consecutive_failures = CASE WHEN status <> $10 THEN 0 ELSE consecutive_failures END, \
             paused_reason = CASE WHEN $10 = 'paused' THEN paused_reason ELSE NULL END, \
             status = $10, misfire_policy = $11, catch_up_window_ms = $12, overlap_policy = $13, \
             max_consecutive_failures = $14, next_fire_at_ms = $15, \
             pending_fire_at_ms = CASE WHEN $10 = 'active' THEN pending_fire_at_ms ELSE NULL END, \
             updated_at_ms = $16 WHERE id = $1 RETURNING ",
            schedule_columns!()
        );
        let payload = spec.payload.to_string();
        let (trigger_type, expression, timezone, interval_ms, trigger_at_ms) =
            trigger_columns(&spec.trigger);
        let result: Result<Option<ScheduleRow>, sqlx::Error> = with_pool!(self, pool => {
            sqlx::query_as(UPDATE)
                .bind(id)
                .bind(&spec.name)
                .bind(&spec.kind)
                .bind(&payload)
                .bind(trigger_type)
                .bind(expression)
                .bind(timezone)
                .bind(interval_ms)
                .bind(trigger_at_ms)
                .bind(spec.status.as_str())
                .bind(spec.misfire_policy.as_str())
                .bind(spec.catch_up_window_ms)
                .bind(spec.overlap_policy.as_str())
                .bind(spec.max_consecutive_failures)
                .bind(spec.next_fire_at_ms)
                .bind(now_ms)
                .fetch_optional(pool)
                .await
        });
        match result {
            Ok(Some(row)) => Ok(ScheduleWrite::Stored(Box::new(row.try_into()?))),
            Ok(None) => Ok(ScheduleWrite::NotFound),
            Err(error) if is_unique_violation(&error) => Ok(ScheduleWrite::NameTaken),
            Err(error) => Err(error.into()),
        }
    }

    /// Pauses a schedule with a reason; returns it, or `None` if unknown.
    pub async fn pause_schedule(
        &self,
        id: &str,
        reason: &str,
        now_ms: i64,
    ) -> Result<Option<Schedule>, StoreError> {
        const PAUSE: &str = concat!(
            "UPDATE schedules SET status = CASE WHEN status = 'active' THEN 'paused' ELSE status END, \
             paused_reason = CASE WHEN status = 'active' THEN $2 ELSE paused_reason END, \
             pending_fire_at_ms = NULL, updated_at_ms = $3 WHERE id = $1 RETURNING ",
            schedule_columns!()
        );
        let row: Option<ScheduleRow> = with_pool!(self, pool => {
            sqlx::query_as(PAUSE).bind(id).bind(reason).bind(now_ms).fetch_optional(pool).await
        })?;
        row.map(Schedule::try_from).transpose()
    }

    /// Deletes a schedule and its run history; false if it did not exist.
    pub async fn delete_schedule(&self, id: &str) -> Result<bool, StoreError> {
        const DELETE_RUNS: &str = "DELETE FROM schedule_runs WHERE schedule_id = $1";
        const DELETE: &str = "DELETE FROM schedules WHERE id = $1";
        with_pool!(self, pool => sqlx::query(DELETE_RUNS).bind(id).execute(pool).await.map(|_| ()))?;
        let deleted = with_pool!(self, pool => {
            sqlx::query(DELETE).bind(id).execute(pool).await.map(|done| done.rows_affected())
        })?;
        Ok(deleted == 1)
    }

    /// Claims up to `limit` active schedules that have a slot due at `now_ms` (or a slot held
    /// back by `queue_one`) for `owner` until `claim_until_ms`. On PostgreSQL, rows another
    /// node is claiming are skipped, so two nodes never handle the same schedule at once.
    pub async fn claim_due_schedules(
        &self,
        owner: &str,
        now_ms: i64,
        claim_until_ms: i64,
        limit: u32,
    ) -> Result<Vec<Schedule>, StoreError> {
        // Both statements pick the same rows; each is shaped for its planner to serve the two
        // arms (due slot, held-back slot) from the partial indexes over active schedules
        // instead of walking all of them: PostgreSQL ORs two bitmap scans, SQLite needs the
        // arms spelled out as a union.
        const CLAIM_SQLITE: &str = concat!(
            "UPDATE schedules SET claim_owner = $1, claim_expires_at_ms = $3 \
             WHERE id IN (SELECT id FROM (\
             SELECT id, next_fire_at_ms FROM schedules WHERE status = 'active' \
             AND next_fire_at_ms <= $2 AND (claim_owner IS NULL OR claim_expires_at_ms < $2) \
             UNION SELECT id, next_fire_at_ms FROM schedules WHERE status = 'active' \
             AND pending_fire_at_ms IS NOT NULL \
             AND (claim_owner IS NULL OR claim_expires_at_ms < $2)) \
             ORDER BY next_fire_at_ms LIMIT $4) RETURNING ",
            schedule_columns!()
        );
        const CLAIM_POSTGRES: &str = concat!(
            "UPDATE schedules SET claim_owner = $1, claim_expires_at_ms = $3 \
             WHERE id IN (SELECT id FROM schedules WHERE status = 'active' \
             AND ((next_fire_at_ms IS NOT NULL AND next_fire_at_ms <= $2) \
             OR pending_fire_at_ms IS NOT NULL) \
             AND (claim_owner IS NULL OR claim_expires_at_ms < $2) \
             ORDER BY next_fire_at_ms LIMIT $4 FOR UPDATE SKIP LOCKED) RETURNING ",
            schedule_columns!()
        );
        let limit = i64::from(limit);
        // Not a cached statement: PostgreSQL then plans it with its parameters each time. A
        // cached generic plan cannot tell how few schedules `next_fire_at_ms <= $2` selects and
        // walks all of them, ~4 ms at 10,000 schedules, once per due slot.
        let rows: Vec<ScheduleRow> = with_pool!(self, pool, claim = [CLAIM_SQLITE, CLAIM_POSTGRES] => {
            sqlx::query_as(claim)
                .persistent(false)
                .bind(owner)
                .bind(now_ms)
                .bind(claim_until_ms)
                .bind(limit)
                .fetch_all(pool)
                .await
        })?;
        let mut schedules = rows
            .into_iter()
            .map(Schedule::try_from)
            .collect::<Result<Vec<_>, _>>()?;
        schedules.sort_by_key(|schedule| schedule.next_fire_at_ms);
        Ok(schedules)
    }

    /// Returns the earliest slot of an active schedule later than `after_ms`, or `None` when
    /// no active schedule has one; the scheduler sleeps until then. One read of the
    /// `schedules_active_due` index on either backend.
    pub async fn next_schedule_slot_after(&self, after_ms: i64) -> Result<Option<i64>, StoreError> {
        const NEXT: &str = "SELECT MIN(next_fire_at_ms) FROM schedules \
             WHERE status = 'active' AND next_fire_at_ms > $1";
        let (next_slot_ms_opt,): (Option<i64>,) = with_pool!(self, pool => {
            sqlx::query_as(NEXT).bind(after_ms).fetch_one(pool).await
        })?;
        Ok(next_slot_ms_opt)
    }

    /// Writes what the scheduler did with a claimed schedule and releases the claim. Returns
    /// false when `owner` no longer holds the claim (nothing is written). A schedule paused or
    /// edited meanwhile keeps the operator's status and trigger.
    pub async fn advance_schedule(
        &self,
        id: &str,
        owner: &str,
        advance: &ScheduleAdvance,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        const ADVANCE: &str = "UPDATE schedules SET \
             next_fire_at_ms = CASE WHEN status = 'active' THEN $3 ELSE next_fire_at_ms END, \
             last_fire_at_ms = COALESCE($4, last_fire_at_ms), \
             pending_fire_at_ms = CASE WHEN status = 'active' THEN $5 ELSE NULL END, \
             last_job_id = COALESCE($6, last_job_id), \
             status = CASE WHEN status = 'active' THEN $7 ELSE status END, \
             num_runs = num_runs + $8, num_missed = num_missed + $9, \
             claim_owner = NULL, claim_expires_at_ms = NULL, updated_at_ms = $10 \
             WHERE id = $1 AND claim_owner = $2";
        let rows_affected = with_pool!(self, pool => {
            sqlx::query(ADVANCE)
                .bind(id)
                .bind(owner)
                .bind(advance.next_fire_at_ms)
                .bind(advance.last_fire_at_ms)
                .bind(advance.pending_fire_at_ms)
                .bind(&advance.last_job_id)
                .bind(advance.status.as_str())
                .bind(advance.num_new_runs)
                .bind(advance.num_new_missed)
                .bind(now_ms)
                .execute(pool)
                .await
                .map(|done| done.rows_affected())
        })?;
        Ok(rows_affected == 1)
    }

    /// Records a slot; false when the slot was recorded already (by this or another node).
    pub async fn insert_schedule_run(&self, run: &NewScheduleRun<'_>) -> Result<bool, StoreError> {
        const INSERT: &str = "INSERT INTO schedule_runs (id, schedule_id, fire_at_ms, outcome, \
             reason, job_id, lag_ms, created_at_ms, updated_at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8) \
             ON CONFLICT (schedule_id, fire_at_ms) DO NOTHING";
        let id = Uuid::now_v7().to_string();
        let rows_affected = with_pool!(self, pool => {
            sqlx::query(INSERT)
                .bind(&id)
                .bind(run.schedule_id)
                .bind(run.fire_at_ms)
                .bind(run.outcome.as_str())
                .bind(run.reason)
                .bind(run.job_id)
                .bind(run.lag_ms)
                .bind(run.now_ms)
                .execute(pool)
                .await
                .map(|done| done.rows_affected())
        })?;
        Ok(rows_affected == 1)
    }

    /// Turns a deferred slot into an enqueued run with its job; false if it was not deferred.
    pub async fn enqueue_deferred_run(&self, run: &NewScheduleRun<'_>) -> Result<bool, StoreError> {
        const ENQUEUE: &str = "UPDATE schedule_runs SET outcome = 'enqueued', job_id = $3, \
             lag_ms = $4, updated_at_ms = $5 \
             WHERE schedule_id = $1 AND fire_at_ms = $2 AND outcome = 'deferred'";
        let rows_affected = with_pool!(self, pool => {
            sqlx::query(ENQUEUE)
                .bind(run.schedule_id)
                .bind(run.fire_at_ms)
                .bind(run.job_id)
                .bind(run.lag_ms)
                .bind(run.now_ms)
                .execute(pool)
                .await
                .map(|done| done.rows_affected())
        })?;
        Ok(rows_affected == 1)
    }

    /// Returns a schedule's runs, newest slot first.
    pub async fn list_schedule_runs(
        &self,
        schedule_id: &str,
        limit: u32,
    ) -> Result<Vec<ScheduleRun>, StoreError> {
        const LIST: &str = concat!(
            "SELECT ",
            run_columns!(),
            " FROM schedule_runs WHERE schedule_id = $1 ORDER BY fire_at_ms DESC LIMIT $2"
        );
        let runs = with_pool!(self, pool => {
            sqlx::query_as(LIST)
                .bind(schedule_id)
                .bind(i64::from(limit.max(1)))
                .fetch_all(pool)
                .await
        })?;
        Ok(runs)
    }

    /// Returns enqueued runs whose jobs have reached a final status, oldest slot first.
    pub async fn finished_schedule_runs(&self, limit: u32) -> Result<Vec<FinishedRun>, StoreError> {
        const FINISHED: &str = "SELECT r.id AS run_id, r.schedule_id, j.status AS job_status \
             FROM schedule_runs r JOIN jobs j ON j.id = r.job_id \
             WHERE r.outcome = 'enqueued' AND j.status IN ('succeeded', 'failed', 'dead') \
             ORDER BY r.fire_at_ms LIMIT $1";
        let runs = with_pool!(self, pool => {
            sqlx::query_as(FINISHED).bind(i64::from(limit.max(1))).fetch_all(pool).await
        })?;
        Ok(runs)
    }

    /// Counts a finished run once (the first caller wins across nodes) into its schedule's
    /// counters, pausing the schedule when its consecutive failures reach the maximum.
    /// Returns `None` when another caller already counted it.
    pub async fn settle_schedule_run(
        &self,
        run: &FinishedRun,
        now_ms: i64,
    ) -> Result<Option<RunSettled>, StoreError> {
        const SETTLE: &str = "UPDATE schedule_runs SET outcome = $2, updated_at_ms = $3 \
             WHERE id = $1 AND outcome = 'enqueued'";
        const COUNT: &str = "UPDATE schedules SET \
             num_failures = num_failures + CASE WHEN $2 THEN 0 ELSE 1 END, \
             consecutive_failures = CASE WHEN $2 THEN 0 ELSE consecutive_failures + 1 END, \
             paused_reason = CASE WHEN NOT $2 AND status = 'active' \
                 AND max_consecutive_failures > 0 \
                 AND consecutive_failures + 1 >= max_consecutive_failures \
                 THEN 'max_consecutive_failures' ELSE paused_reason END, \
             status = CASE WHEN NOT $2 AND status = 'active' AND max_consecutive_failures > 0 \
                 AND consecutive_failures + 1 >= max_consecutive_failures \
                 THEN 'paused' ELSE status END, \
             updated_at_ms = $3 WHERE id = $1 RETURNING status, paused_reason";
        let succeeded = run.job_status == "succeeded";
        let outcome = if succeeded {
            RunOutcome::Succeeded
        } else {
            RunOutcome::Failed
        };
        let settled = with_pool!(self, pool => {
            sqlx::query(SETTLE)
                .bind(&run.run_id)
                .bind(outcome.as_str())
                .bind(now_ms)
                .execute(pool)
                .await
                .map(|done| done.rows_affected())
        })?;
        if settled != 1 {
            return Ok(None);
        }
        let row: Option<(String, Option<String>)> = with_pool!(self, pool => {
            sqlx::query_as(COUNT)
                .bind(&run.schedule_id)
                .bind(succeeded)
                .bind(now_ms)
                .fetch_optional(pool)
                .await
        })?;
        let paused = matches!(
            &row,
            Some((status, Some(reason))) if status == "paused" && reason == "max_consecutive_failures"
        ) && !succeeded;
        Ok(Some(RunSettled { succeeded, paused }))
    }
}

impl Store {
    /// Counts a run fired by hand (outside the slots) on its schedule.
    pub async fn note_manual_fire(
        &self,
        id: &str,
        job_id: &str,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        const NOTE: &str = "UPDATE schedules SET num_runs = num_runs + 1, last_job_id = $2, \
             last_fire_at_ms = $3, updated_at_ms = $3 WHERE id = $1";
        let rows_affected = with_pool!(self, pool => {
            sqlx::query(NOTE)
                .bind(id)
                .bind(job_id)
                .bind(now_ms)
                .execute(pool)
                .await
                .map(|done| done.rows_affected())
        })?;
        Ok(rows_affected == 1)
    }
}

impl Store {
    /// Returns the lag (slot time to job created) of every run enqueued for a slot at or after
    /// `since_ms`, for benchmarks.
    pub async fn schedule_run_lags_ms(&self, since_ms: i64) -> Result<Vec<i64>, StoreError> {
        const LAGS: &str = "SELECT lag_ms FROM schedule_runs WHERE fire_at_ms >= $1 \
             AND lag_ms IS NOT NULL AND (reason IS NULL OR reason <> 'manual')";
        let rows: Vec<(i64,)> = with_pool!(self, pool => {
            sqlx::query_as(LAGS).bind(since_ms).fetch_all(pool).await
        })?;
        Ok(rows.into_iter().map(|(lag_ms,)| lag_ms).collect())
    }
}
