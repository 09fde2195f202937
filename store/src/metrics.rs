//! Metric names of the store and the events that emit them. Labels are bounded: statements are
//! the group-commit writers' fixed names, pool states a fixed pair.

use bulwark_core::{BATCH_SIZE_BUCKETS, MetricSpec, MetricUnit};

use crate::Store;
use crate::db::with_pool;

pub const GROUP_COMMIT_BATCH_SIZE: MetricSpec = MetricSpec::histogram(
    "bulwark_store_group_commit_batch_size",
    MetricUnit::Count,
    BATCH_SIZE_BUCKETS,
    "How many requests each group-commit statement carried",
)
.with_labels(&["statement"]);
pub const DB_POOL_CONNECTIONS: MetricSpec = MetricSpec::gauge(
    "bulwark_db_pool_connections",
    MetricUnit::Count,
    "Database connections of this node's pool, idle or in use (callers wait once in_use reaches the maximum)",
)
.with_labels(&["state"]);
pub const DB_POOL_MAX_CONNECTIONS: MetricSpec = MetricSpec::gauge(
    "bulwark_db_pool_max_connections",
    MetricUnit::Count,
    "The most connections this node's pool opens (database.max_connections)",
);

/// Every metric this crate emits, for the recorder's descriptions and `docs/metrics.md`.
pub const METRICS: &[MetricSpec] = &[
    GROUP_COMMIT_BATCH_SIZE,
    DB_POOL_CONNECTIONS,
    DB_POOL_MAX_CONNECTIONS,
];

/// The pool's connections at one moment, read when metrics are scraped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStatus {
    pub num_open: u32,
    pub num_idle: u32,
    pub max_connections: u32,
}

impl PoolStatus {
    /// Reads the store's pool (no database round trip).
    pub fn of(store: &Store) -> PoolStatus {
        let (num_open, num_idle, max_connections) = with_pool!(store, pool => (
            pool.size(),
            u32::try_from(pool.num_idle()).unwrap_or(u32::MAX),
            pool.options().get_max_connections(),
        ));
        PoolStatus {
            num_open,
            num_idle,
            max_connections,
        }
    }

    pub fn emit(&self) {
        let num_in_use = self.num_open.saturating_sub(self.num_idle);
        metrics::gauge!(DB_POOL_CONNECTIONS.name, "state" => "idle").set(f64::from(self.num_idle));
        metrics::gauge!(DB_POOL_CONNECTIONS.name, "state" => "in_use").set(f64::from(num_in_use));
        metrics::gauge!(DB_POOL_MAX_CONNECTIONS.name).set(f64::from(self.max_connections));
    }
}
