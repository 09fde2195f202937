//! Node membership: heartbeats, fencing of silent nodes, and early reclaim of their leases.
//!
//! Every node registers under its `node_id` (its name in `lease_owner`) with a fresh
//! `incarnation`, then writes a heartbeat every few hundred milliseconds. A live node that finds
//! another silent past the dead-after interval *fences* it (`state = 'fenced'`) and expires its
//! leases in the same pass, so the claimers of both transports (the local queue's claim and the
//! broker's claim by id) take its jobs at once instead of after the lease. A node that was only
//! slow learns it was fenced at its next heartbeat (its row no longer says `alive` with its
//! incarnation), stops its attempts and registers again; its late writes are refused by the
//! lease owner and attempt checks of every outcome statement.
//!
//! Heartbeats are stamped and compared with the database's clock, so nodes whose clocks
//! disagree never fence each other.

use crate::db::with_pool;
use crate::{Store, StoreError};

/// The database's clock in Unix milliseconds, per backend.
macro_rules! db_now_ms {
    (sqlite) => {
        "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)"
    };
    (postgres) => {
        "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)"
    };
}

/// What a node registers with.
#[derive(Debug, Clone)]
pub struct NodeRegistration {
    pub node_id: String,
    /// Unique per registration: a restarted or re-registered node gets a new one.
    pub incarnation: String,
    pub version: String,
}

/// What [`Store::register_node`] found of an earlier registration under the same name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registered {
    /// Jobs the node's previous incarnation still held, whose leases were expired so they run
    /// again at once (a process restarted under the same name cannot be running them).
    pub num_jobs_reclaimed: u64,
}

/// The answer to a heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Heartbeat {
    /// Written: the node is alive with this incarnation.
    Alive,
    /// Refused: another node fenced this incarnation (or it left, or a newer incarnation
    /// registered under the same name). Its leases may already be someone else's.
    Fenced { fenced_by_opt: Option<String> },
}

/// A node fenced by [`Store::fence_silent_nodes`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FencedNode {
    pub node_id: String,
    /// How long it had been silent when fenced.
    pub silent_for_ms: i64,
    /// Its running jobs whose leases were expired.
    pub num_jobs_reclaimed: u64,
}

/// A row of `nodes`, as operators see it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct NodeRow {
    pub node_id: String,
    pub incarnation: String,
    /// `alive`, `fenced` or `left`.
    pub state: String,
    pub version: String,
    pub started_at_ms: i64,
    pub heartbeat_at_ms: i64,
    pub fenced_at_ms: Option<i64>,
    pub fenced_by: Option<String>,
    pub num_jobs_reclaimed: i64,
}

/// Expires the leases of one node's running jobs (binds `$1` the node id).
const EXPIRE_LEASES: &str = "UPDATE jobs SET lease_expires_at_ms = 0 \
     WHERE status = 'running' AND lease_owner = $1 AND lease_expires_at_ms > 0";

impl Store {
    /// Registers a node: alive, with its incarnation and a fresh heartbeat. When an earlier
    /// incarnation of the same name had not left, its running jobs' leases are expired: the
    /// process that held them is gone, or was fenced and gave them up (two live processes never
    /// share a name). Registering the live incarnation again changes nothing else.
    pub async fn register_node(
        &self,
        registration: &NodeRegistration,
    ) -> Result<Registered, StoreError> {
        macro_rules! register_sql {
            ($now:expr) => {
                concat!(
                    "INSERT INTO nodes (node_id, incarnation, state, version, started_at_ms, \
                     heartbeat_at_ms) VALUES ($1, $2, 'alive', $3, ",
                    $now,
                    ", ",
                    $now,
                    ") ON CONFLICT (node_id) DO UPDATE SET incarnation = excluded.incarnation, \
                     state = 'alive', version = excluded.version, \
                     started_at_ms = excluded.started_at_ms, \
                     heartbeat_at_ms = excluded.heartbeat_at_ms, fenced_at_ms = NULL, \
                     fenced_by = NULL"
                )
            };
        }
        const REGISTER_SQLITE: &str = register_sql!(db_now_ms!(sqlite));
        const REGISTER_POSTGRES: &str = register_sql!(db_now_ms!(postgres));
        const PREVIOUS: &str = "SELECT state, incarnation FROM nodes WHERE node_id = $1";
        let previous_opt: Option<(String, String)> = with_pool!(self, pool => {
            sqlx::query_as(PREVIOUS)
                .bind(&registration.node_id)
                .fetch_optional(pool)
                .await
        })?;
        let predecessor_held_jobs = previous_opt.is_some_and(|(state, incarnation)| {
            state != "left" && incarnation != registration.incarnation
        });
        let num_jobs_reclaimed = if predecessor_held_jobs {
            with_pool!(self, pool => {
                sqlx::query(EXPIRE_LEASES)
                    .bind(&registration.node_id)
                    .execute(pool)
                    .await
                    .map(|done| done.rows_affected())
            })?
        } else {
            0
        };
        with_pool!(self, pool, register = [REGISTER_SQLITE, REGISTER_POSTGRES] => {
            sqlx::query(register)
                .bind(&registration.node_id)
                .bind(&registration.incarnation)
                .bind(&registration.version)
                .execute(pool)
                .await
                .map(|_| ())
        })?;
        Ok(Registered { num_jobs_reclaimed })
    }

    /// Writes a node's heartbeat, if its incarnation is still the live one.
    pub async fn heartbeat_node(
        &self,
        node_id: &str,
        incarnation: &str,
    ) -> Result<Heartbeat, StoreError> {
        macro_rules! heartbeat_sql {
            ($now:expr) => {
                concat!(
                    "UPDATE nodes SET heartbeat_at_ms = ",
                    $now,
                    " WHERE node_id = $1 AND incarnation = $2 AND state = 'alive'"
                )
            };
        }
        const HEARTBEAT_SQLITE: &str = heartbeat_sql!(db_now_ms!(sqlite));
        const HEARTBEAT_POSTGRES: &str = heartbeat_sql!(db_now_ms!(postgres));
        const FENCED_BY: &str = "SELECT fenced_by FROM nodes WHERE node_id = $1";
        let written = with_pool!(self, pool, heartbeat = [HEARTBEAT_SQLITE, HEARTBEAT_POSTGRES] => {
            sqlx::query(heartbeat)
                .bind(node_id)
                .bind(incarnation)
                .execute(pool)
                .await
                .map(|done| done.rows_affected())
        })?;
        if written > 0 {
            return Ok(Heartbeat::Alive);
        }
        let fenced_by_opt: Option<Option<String>> = with_pool!(self, pool => {
            sqlx::query_scalar(FENCED_BY)
                .bind(node_id)
                .fetch_optional(pool)
                .await
        })?;
        Ok(Heartbeat::Fenced {
            fenced_by_opt: fenced_by_opt.flatten(),
        })
    }

    /// Fences every live node but `by` whose last heartbeat is older than `dead_after_ms` (by the
    /// database's clock) and expires its running jobs' leases, so they are claimed again at
    /// once. Concurrent sweeps by several nodes fence each node once. Returns the fenced nodes.
    pub async fn fence_silent_nodes(
        &self,
        by: &str,
        dead_after_ms: i64,
    ) -> Result<Vec<FencedNode>, StoreError> {
        macro_rules! fence_sql {
            ($now:expr) => {
                concat!(
                    "UPDATE nodes SET state = 'fenced', fenced_at_ms = ",
                    $now,
                    ", fenced_by = $1 WHERE state = 'alive' AND node_id <> $1 \
                     AND heartbeat_at_ms < ",
                    $now,
                    " - $2 RETURNING node_id, fenced_at_ms - heartbeat_at_ms"
                )
            };
        }
        const FENCE_SQLITE: &str = fence_sql!(db_now_ms!(sqlite));
        const FENCE_POSTGRES: &str = fence_sql!(db_now_ms!(postgres));
        const COUNT_RECLAIMED: &str =
            "UPDATE nodes SET num_jobs_reclaimed = num_jobs_reclaimed + $2 WHERE node_id = $1";
        let fenced: Vec<(String, i64)> = with_pool!(self, pool, fence = [FENCE_SQLITE, FENCE_POSTGRES] => {
            sqlx::query_as(fence)
                .bind(by)
                .bind(dead_after_ms)
                .fetch_all(pool)
                .await
        })?;
        let mut nodes = Vec::with_capacity(fenced.len());
        // A sweeper that dies here leaves the rest of the fenced node's jobs to their leases.
        for (node_id, silent_for_ms) in fenced {
            let num_jobs_reclaimed = with_pool!(self, pool => {
                sqlx::query(EXPIRE_LEASES)
                    .bind(&node_id)
                    .execute(pool)
                    .await
                    .map(|done| done.rows_affected())
            })?;
            with_pool!(self, pool => {
                sqlx::query(COUNT_RECLAIMED)
                    .bind(&node_id)
                    .bind(i64::try_from(num_jobs_reclaimed).unwrap_or(i64::MAX))
                    .execute(pool)
                    .await
                    .map(|_| ())
            })?;
            nodes.push(FencedNode {
                node_id,
                silent_for_ms,
                num_jobs_reclaimed,
            });
        }
        Ok(nodes)
    }

    /// Marks a node's incarnation as gone after a clean shutdown (its jobs were finished or
    /// released), so no one fences it later.
    pub async fn leave_node(&self, node_id: &str, incarnation: &str) -> Result<bool, StoreError> {
        const LEAVE: &str =
            "UPDATE nodes SET state = 'left' WHERE node_id = $1 AND incarnation = $2";
        let left = with_pool!(self, pool => {
            sqlx::query(LEAVE)
                .bind(node_id)
                .bind(incarnation)
                .execute(pool)
                .await
                .map(|done| done.rows_affected())
        })?;
        Ok(left > 0)
    }

    /// Returns the database's clock in Unix milliseconds: the clock every node follows.
    pub async fn database_time_ms(&self) -> Result<i64, StoreError> {
        const NOW_SQLITE: &str = concat!("SELECT ", db_now_ms!(sqlite));
        const NOW_POSTGRES: &str = concat!("SELECT ", db_now_ms!(postgres));
        let now_ms = with_pool!(self, pool, now = [NOW_SQLITE, NOW_POSTGRES] => {
            sqlx::query_scalar(now).fetch_one(pool).await
        })?;
        Ok(now_ms)
    }

    /// Returns every node that ever registered, live ones first, then by name.
    pub async fn list_nodes(&self) -> Result<Vec<NodeRow>, StoreError> {
        const LIST: &str = "SELECT node_id, incarnation, state, version, started_at_ms, \
             heartbeat_at_ms, fenced_at_ms, fenced_by, num_jobs_reclaimed FROM nodes \
             ORDER BY CASE state WHEN 'alive' THEN 0 ELSE 1 END, node_id";
        let rows = with_pool!(self, pool => { sqlx::query_as(LIST).fetch_all(pool).await })?;
        Ok(rows)
    }
}
