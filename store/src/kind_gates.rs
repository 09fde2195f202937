//! The gates of limited kinds: how many of a kind's jobs may run or start, enforced in the
//! database for every node that shares it, whatever carried the jobs.
//!
//! A claim of a limited kind's jobs (by the database queue, [`Store::claim_gated_jobs`], or by
//! a broker delivery, [`Store::claim_gated_job`]) is one transaction that first takes the
//! kind's row in `kind_gates` (an upsert, so the first claim creates it): claimers of one kind
//! take turns, and each counts the kind's running jobs after the previous one committed. The
//! running jobs are those holding a live lease (claimed jobs waiting for a slot count too), so
//! a node that dies frees its share when its leases expire. The same row holds the kind's
//! start-rate bucket: `tokens` starts left as of `refilled_at_ms`, refilled at the rate up to
//! one second's worth (at least one start).

use bulwark_core::{KindGate, KindLimits, now_ms};

use crate::db::with_pool;
use crate::jobs::{
    JobRow, claim_sql, decode_rows, due_postgres, due_sqlite, in_claim_order, job_columns,
    relaxed_commit,
};
use crate::{Job, Store, StoreError};

/// Takes the kind's gate (created with a full bucket) and returns its bucket.
const OPEN_GATE: &str = "INSERT INTO kind_gates (kind, tokens, refilled_at_ms) VALUES ($1, $2, $3) \
     ON CONFLICT (kind) DO UPDATE SET refilled_at_ms = kind_gates.refilled_at_ms \
     RETURNING tokens, refilled_at_ms";

/// The kind's running jobs with a live lease: on every node, and on `$2`'s.
const COUNT_RUNNING: &str = "SELECT COUNT(*), \
     COALESCE(SUM(CASE WHEN lease_owner = $2 THEN 1 ELSE 0 END), 0) FROM jobs \
     WHERE status = 'running' AND kind = $1 AND lease_expires_at_ms >= $3";

const SETTLE_GATE: &str = "UPDATE kind_gates SET tokens = $1, refilled_at_ms = $2 WHERE kind = $3";

/// One kind, not paused (bound as `$5`).
macro_rules! gated_kind {
    () => {
        "kind = $5 AND kind NOT IN (SELECT kind FROM paused_kinds)"
    };
}

/// What [`Store::claim_gated_job`] found.
#[derive(Debug, Clone, PartialEq)]
pub enum GatedClaim {
    /// Claimed for the caller: it may run.
    Claimed(Job),
    /// Claimable, but the kind's gate is full: it waits.
    Full,
    /// Not claimable: finished, or running under another live lease.
    NotClaimable(Job),
}

/// What a gate lets through now.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Admission {
    /// How many may start.
    room: u32,
    /// The bucket's tokens now, before those starts.
    tokens: f64,
}

/// The bucket a gate starts with, and holds at most: one second's worth of starts, at least
/// one (none without a rate limit).
fn bucket_capacity(limits: &KindLimits) -> f64 {
    limits
        .max_starts_per_second
        .map_or(0.0, |rate| rate.max(1.0))
}

/// How many of `wanted` jobs may start now, given the kind's running jobs (`running` on every
/// node, `mine` on the claimer's) and its bucket as last stored.
fn admit(limits: &KindLimits, bucket: (f64, i64), running: (i64, i64), wanted: u32) -> Admission {
    admit_at(limits, bucket, running, (wanted, now_ms()))
}

/// [`admit`] at `now` (the second of `wanted_at`).
fn admit_at(
    limits: &KindLimits,
    (tokens, refilled_at_ms): (f64, i64),
    (running, mine): (i64, i64),
    (wanted, now): (u32, i64),
) -> Admission {
    let mut room = i64::from(wanted);
    if let Some(max_running) = limits.max_running {
        room = room.min(i64::from(max_running) - running);
    }
    if let Some(max_running) = limits.max_running_per_node {
        room = room.min(i64::from(max_running) - mine);
    }
    let tokens = match limits.max_starts_per_second {
        Some(rate) => {
            let elapsed_secs = (now - refilled_at_ms).max(0) as f64 / 1000.0;
            let tokens = (tokens + elapsed_secs * rate).min(bucket_capacity(limits));
            room = room.min(tokens.floor() as i64);
            tokens
        }
        None => tokens,
    };
    Admission {
        room: u32::try_from(room.max(0)).unwrap_or(0),
        tokens,
    }
}

/// Runs `$claim` (which reads `$room`, the starts the gate allows, and yields the claimed
/// rows) inside the gate of `$gate` for `$owner`, who wants `$wanted` starts, and takes the
/// claimed starts from the bucket; one transaction. `$pool` is the backend's pool.
macro_rules! through_gate {
    ($pool:expr, ($gate:expr, $owner:expr, $wanted:expr), |$tx:ident, $room:ident| $claim:block) => {{
        let now = now_ms();
        let mut $tx = $pool.begin().await?;
        let bucket: (f64, i64) = sqlx::query_as(OPEN_GATE)
            .bind(&$gate.kind)
            .bind(bucket_capacity(&$gate.limits))
            .bind(now)
            .fetch_one(&mut *$tx)
            .await?;
        let running: (i64, i64) = sqlx::query_as(COUNT_RUNNING)
            .bind(&$gate.kind)
            .bind($owner)
            .bind(now)
            .fetch_one(&mut *$tx)
            .await?;
        let admission = admit(&$gate.limits, bucket, running, $wanted);
        let $room = admission.room;
        let rows: Vec<JobRow> = if $room == 0 { Vec::new() } else { $claim };
        sqlx::query(SETTLE_GATE)
            .bind(admission.tokens - rows.len() as f64)
            .bind(now)
            .bind(&$gate.kind)
            .execute(&mut *$tx)
            .await?;
        $tx.commit().await?;
        Ok::<Vec<JobRow>, StoreError>(rows)
    }};
}

impl Store {
    /// Claims up to `limit` of the gated kind's runnable jobs from the database queue for
    /// `owner`, as many as its gate lets through (see the module): expired leases first, then
    /// due jobs by priority and age, as [`Store::claim_jobs`] does. Nothing while it is paused.
    pub async fn claim_gated_jobs(
        &self,
        owner: &str,
        lease_until_ms: i64,
        gate: &KindGate,
        limit: u32,
    ) -> Result<Vec<Job>, StoreError> {
        const CLAIM_SQLITE: &str = claim_sql!("", "", due_sqlite!(gated_kind!()), gated_kind!());
        const CLAIM_POSTGRES: &str = claim_sql!(
            concat!("FROM ", relaxed_commit!()),
            " FOR UPDATE SKIP LOCKED",
            due_postgres!(gated_kind!()),
            gated_kind!()
        );
        if limit == 0 {
            return Ok(Vec::new());
        }
        let rows = with_pool!(self, pool, claim = [CLAIM_SQLITE, CLAIM_POSTGRES] => {
            through_gate!(pool, (gate, owner, limit), |transaction, room| {
                sqlx::query_as(claim)
                    .bind(owner)
                    .bind(lease_until_ms)
                    .bind(now_ms())
                    .bind(i64::from(room))
                    .bind(&gate.kind)
                    .fetch_all(&mut *transaction)
                    .await?
            })
        })?;
        Ok(in_claim_order(decode_rows(rows)?))
    }

    /// Claims the broker job `id` of the gated kind for `owner` until `lease_until_ms` when
    /// its gate lets one more start (see the module), counting an attempt: only when it is
    /// queued, or running under an expired lease. A job of a paused kind is not claimed.
    pub async fn claim_gated_job(
        &self,
        id: &str,
        owner: &str,
        lease_until_ms: i64,
        gate: &KindGate,
    ) -> Result<GatedClaim, StoreError> {
        const READ: &str = concat!("SELECT ", job_columns!(), " FROM jobs WHERE id = $1");
        macro_rules! claim_one_sql {
            ($relaxed:expr) => {
                concat!(
                    "UPDATE jobs SET status = 'running', attempts = attempts + 1, \
                     lease_owner = $1, lease_expires_at_ms = $2, updated_at_ms = $3, \
                     started_at_ms = COALESCE(started_at_ms, $3), attempt_started_at_ms = $3 ",
                    $relaxed,
                    " WHERE id = $4 AND ",
                    gated_kind!(),
                    " AND (status = 'queued' \
                     OR (status = 'running' AND lease_expires_at_ms < $3)) RETURNING ",
                    job_columns!()
                )
            };
        }
        const CLAIM_SQLITE: &str = claim_one_sql!("");
        const CLAIM_POSTGRES: &str = claim_one_sql!(concat!("FROM ", relaxed_commit!()));
        let missing = || StoreError::Invariant(format!("job {id} of a delivery vanished"));
        let row: Option<JobRow> = with_pool!(self, pool => {
            sqlx::query_as(READ).bind(id).fetch_optional(pool).await
        })?;
        let job = Job::try_from(row.ok_or_else(missing)?)?;
        let claimable = job.status == crate::JobStatus::Queued
            || (job.status == crate::JobStatus::Running
                && job
                    .lease_expires_at_ms
                    .is_some_and(|expires| expires < now_ms()));
        if !claimable || job.kind != gate.kind {
            return Ok(GatedClaim::NotClaimable(job));
        }
        let rows = with_pool!(self, pool, claim = [CLAIM_SQLITE, CLAIM_POSTGRES] => {
            through_gate!(pool, (gate, owner, 1), |transaction, room| {
                sqlx::query_as(claim)
                    .bind(owner)
                    .bind(lease_until_ms)
                    .bind(now_ms())
                    .bind(id)
                    .bind(&gate.kind)
                    .fetch_all(&mut *transaction)
                    .await?
            })
        })?;
        if let Some(claimed) = decode_rows(rows)?.pop() {
            return Ok(GatedClaim::Claimed(claimed));
        }
        // The gate was full, or the job changed since it was read (claimed elsewhere,
        // cancelled, or its kind paused).
        let row: Option<JobRow> = with_pool!(self, pool => {
            sqlx::query_as(READ).bind(id).fetch_optional(pool).await
        })?;
        let now_job = Job::try_from(row.ok_or_else(missing)?)?;
        Ok(if now_job.status == crate::JobStatus::Queued {
            GatedClaim::Full
        } else {
            GatedClaim::NotClaimable(now_job)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_000_000;

    fn limits(
        max_running: Option<u32>,
        max_running_per_node: Option<u32>,
        max_starts_per_second: Option<f64>,
    ) -> KindLimits {
        KindLimits {
            max_running,
            max_running_per_node,
            max_starts_per_second,
        }
    }

    /// Proves the cluster-wide and per-node limits each cap the room, and a full gate lets
    /// none through (never a negative room).
    #[test]
    fn running_limits_cap_the_room() {
        let cluster = limits(Some(2), None, None);
        assert_eq!(admit_at(&cluster, (0.0, NOW), (0, 0), (10, NOW)).room, 2);
        assert_eq!(admit_at(&cluster, (0.0, NOW), (1, 0), (10, NOW)).room, 1);
        assert_eq!(admit_at(&cluster, (0.0, NOW), (3, 3), (10, NOW)).room, 0);
        let both = limits(Some(5), Some(1), None);
        assert_eq!(admit_at(&both, (0.0, NOW), (2, 0), (10, NOW)).room, 1);
        assert_eq!(admit_at(&both, (0.0, NOW), (2, 1), (10, NOW)).room, 0);
        assert_eq!(admit_at(&both, (0.0, NOW), (0, 0), (0, NOW)).room, 0);
    }

    /// Proves the start rate refills its bucket with time, up to one second's worth (at least
    /// one start), and allows whole starts only.
    #[test]
    fn the_start_rate_refills_its_bucket() {
        let rate = limits(None, None, Some(4.0));
        let empty_now = admit_at(&rate, (0.0, NOW), (0, 0), (10, NOW));
        assert_eq!(empty_now.room, 0);
        let half_second = admit_at(&rate, (0.0, NOW), (0, 0), (10, NOW + 500));
        assert_eq!(half_second.room, 2);
        let long_idle = admit_at(&rate, (0.0, NOW), (0, 0), (10, NOW + 60_000));
        assert_eq!(long_idle.room, 4, "a burst is one second's worth");
        assert_eq!(long_idle.tokens, 4.0);
        let slow = limits(None, None, Some(0.5));
        assert_eq!(
            admit_at(&slow, (0.0, NOW), (0, 0), (10, NOW + 1_000)).room,
            0
        );
        assert_eq!(
            admit_at(&slow, (0.0, NOW), (0, 0), (10, NOW + 2_000)).room,
            1
        );
        assert_eq!(
            admit_at(&slow, (0.0, NOW), (0, 0), (10, NOW + 60_000)).room,
            1,
            "at least one start"
        );
        assert_eq!(bucket_capacity(&limits(Some(2), None, None)), 0.0);
    }
}
