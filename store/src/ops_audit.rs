//! The `ops_audit_log` table: one row per operator action, with who, what, when and the
//! outcome.

use bulwark_core::now_ms;
use serde::Serialize;
use uuid::Uuid;

use crate::db::with_pool;
use crate::{Store, StoreError};

/// One operator action as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct OpsAuditEntry {
    pub id: String,
    /// Who asked: the operator's identity as the API knows it.
    pub actor: String,
    /// `stop`, `start` or `restart`.
    pub action: String,
    /// The supervision path acted on, e.g. `root/jobs`.
    pub target: String,
    /// `succeeded`, `failed` or `denied`.
    pub outcome: String,
    pub detail: Option<String>,
    pub request_id: Option<String>,
    pub created_at_ms: i64,
}

/// What [`Store::record_ops_action`] writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOpsAuditEntry {
    pub actor: String,
    pub action: String,
    pub target: String,
    pub outcome: String,
    pub detail: Option<String>,
    pub request_id: Option<String>,
}

impl Store {
    /// Appends an operator action to the audit log and returns the stored row.
    pub async fn record_ops_action(
        &self,
        entry: &NewOpsAuditEntry,
    ) -> Result<OpsAuditEntry, StoreError> {
        const INSERT: &str = "INSERT INTO ops_audit_log \
             (id, actor, action, target, outcome, detail, request_id, created_at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";
        let row = OpsAuditEntry {
            id: Uuid::now_v7().to_string(),
            actor: entry.actor.clone(),
            action: entry.action.clone(),
            target: entry.target.clone(),
            outcome: entry.outcome.clone(),
            detail: entry.detail.clone(),
            request_id: entry.request_id.clone(),
            created_at_ms: now_ms(),
        };
        with_pool!(self, pool => {
            sqlx::query(INSERT)
                .bind(&row.id)
                .bind(&row.actor)
                .bind(&row.action)
                .bind(&row.target)
                .bind(&row.outcome)
                .bind(&row.detail)
                .bind(&row.request_id)
                .bind(row.created_at_ms)
                .execute(pool)
                .await
                .map(|_| ())
        })?;
        Ok(row)
    }

    /// Returns the newest `limit` operator actions, newest first.
    pub async fn list_ops_actions(&self, limit: u32) -> Result<Vec<OpsAuditEntry>, StoreError> {
        const LIST: &str = "SELECT id, actor, action, target, outcome, detail, request_id, \
             created_at_ms FROM ops_audit_log ORDER BY created_at_ms DESC, id DESC LIMIT $1";
        let rows: Vec<OpsAuditEntry> = with_pool!(self, pool => {
            sqlx::query_as(LIST).bind(i64::from(limit)).fetch_all(pool).await
        })?;
        Ok(rows)
    }
}
