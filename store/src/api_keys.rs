//! The `api_keys`, `api_key_usage` and `auth_secret` tables: API keys kept as keyed digests,
//! provider calls charged per key and day, and the generated server secret.

use bulwark_core::now_ms;
use serde::Serialize;

use crate::db::with_pool;
use crate::{Store, StoreError};

/// One API key as stored: never the token, only its keyed digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct ApiKeyRow {
    pub id: String,
    pub name: String,
    /// The visible start of the token, e.g. `bwk_Xy12ab9Q`.
    pub prefix: String,
    /// Hex HMAC-SHA-256 of the token under the server secret.
    #[serde(skip)]
    pub digest: String,
    /// Comma-separated scopes.
    pub scopes: String,
    pub created_at_ms: i64,
    pub expires_at_ms: Option<i64>,
    pub last_used_at_ms: Option<i64>,
    pub revoked_at_ms: Option<i64>,
    pub rotated_from: Option<String>,
    pub daily_provider_calls: Option<i64>,
}

/// What [`Store::insert_api_key`] writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewApiKeyRow {
    pub id: String,
    pub name: String,
    pub prefix: String,
    pub digest: String,
    pub scopes: String,
    pub expires_at_ms: Option<i64>,
    pub rotated_from: Option<String>,
    pub daily_provider_calls: Option<i64>,
}

/// Whether a charge of provider calls fit in the key's daily budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsageCharge {
    /// Charged; the key's total for the day is now this.
    Charged { used_today: i64 },
    /// Not charged: the day's total would pass the budget.
    OverBudget { used_today: i64 },
}

/// The columns of [`ApiKeyRow`], for statements built with `concat!` (sqlx takes only static SQL).
macro_rules! key_columns {
    () => {
        "id, name, prefix, digest, scopes, created_at_ms, expires_at_ms, last_used_at_ms, \
         revoked_at_ms, rotated_from, daily_provider_calls"
    };
}

impl Store {
    /// Stores a new key and returns the row.
    pub async fn insert_api_key(&self, key: &NewApiKeyRow) -> Result<ApiKeyRow, StoreError> {
        const INSERT: &str = concat!(
            "INSERT INTO api_keys (id, name, prefix, digest, scopes, created_at_ms, \
             expires_at_ms, rotated_from, daily_provider_calls) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING ",
            key_columns!(),
            ""
        );
        let created_at_ms = now_ms();
        let row: ApiKeyRow = with_pool!(self, pool => {
            sqlx::query_as(INSERT)
                .bind(&key.id)
                .bind(&key.name)
                .bind(&key.prefix)
                .bind(&key.digest)
                .bind(&key.scopes)
                .bind(created_at_ms)
                .bind(key.expires_at_ms)
                .bind(&key.rotated_from)
                .bind(key.daily_provider_calls)
                .fetch_one(pool)
                .await
        })?;
        Ok(row)
    }

    /// Returns every key, revoked ones included, newest first.
    pub async fn list_api_keys(&self) -> Result<Vec<ApiKeyRow>, StoreError> {
        const LIST: &str = concat!(
            "SELECT ",
            key_columns!(),
            " FROM api_keys ORDER BY created_at_ms DESC, id DESC"
        );
        let rows: Vec<ApiKeyRow> = with_pool!(self, pool => {
            sqlx::query_as(LIST).fetch_all(pool).await
        })?;
        Ok(rows)
    }

    /// Returns the keys that may still authenticate at `now_ms`: not revoked, not expired.
    pub async fn list_usable_api_keys(&self, at_ms: i64) -> Result<Vec<ApiKeyRow>, StoreError> {
        const LIST: &str = concat!(
            "SELECT ",
            key_columns!(),
            " FROM api_keys WHERE revoked_at_ms IS NULL \
             AND (expires_at_ms IS NULL OR expires_at_ms > $1)"
        );
        let rows: Vec<ApiKeyRow> = with_pool!(self, pool => {
            sqlx::query_as(LIST).bind(at_ms).fetch_all(pool).await
        })?;
        Ok(rows)
    }

    /// Returns one key by id.
    pub async fn get_api_key(&self, id: &str) -> Result<Option<ApiKeyRow>, StoreError> {
        const GET: &str = concat!("SELECT ", key_columns!(), " FROM api_keys WHERE id = $1");
        let row: Option<ApiKeyRow> = with_pool!(self, pool => {
            sqlx::query_as(GET).bind(id).fetch_optional(pool).await
        })?;
        Ok(row)
    }

    /// Returns the key whose token has this digest, revoked or not.
    pub async fn find_api_key_by_digest(
        &self,
        digest: &str,
    ) -> Result<Option<ApiKeyRow>, StoreError> {
        const FIND: &str = concat!(
            "SELECT ",
            key_columns!(),
            " FROM api_keys WHERE digest = $1"
        );
        let row: Option<ApiKeyRow> = with_pool!(self, pool => {
            sqlx::query_as(FIND).bind(digest).fetch_optional(pool).await
        })?;
        Ok(row)
    }

    /// Revokes a key now; returns the row, or `None` for an unknown id. Revoking a revoked key
    /// keeps its first revocation time.
    pub async fn revoke_api_key(&self, id: &str) -> Result<Option<ApiKeyRow>, StoreError> {
        const REVOKE: &str = concat!(
            "UPDATE api_keys SET revoked_at_ms = COALESCE(revoked_at_ms, $2) WHERE id = $1 \
             RETURNING ",
            key_columns!(),
            ""
        );
        let row: Option<ApiKeyRow> = with_pool!(self, pool => {
            sqlx::query_as(REVOKE).bind(id).bind(now_ms()).fetch_optional(pool).await
        })?;
        Ok(row)
    }

    /// Brings a key's expiry forward to `expires_at_ms` (never later than it already was).
    pub async fn expire_api_key_by(
        &self,
        id: &str,
        expires_at_ms: i64,
    ) -> Result<Option<ApiKeyRow>, StoreError> {
        const EXPIRE: &str = concat!(
            "UPDATE api_keys SET expires_at_ms = CASE \
             WHEN expires_at_ms IS NULL OR expires_at_ms > $2 THEN $2 ELSE expires_at_ms END \
             WHERE id = $1 RETURNING ",
            key_columns!(),
            ""
        );
        let row: Option<ApiKeyRow> = with_pool!(self, pool => {
            sqlx::query_as(EXPIRE).bind(id).bind(expires_at_ms).fetch_optional(pool).await
        })?;
        Ok(row)
    }

    /// Records that keys were used: `(id, last used at)` pairs; never moves a time backwards.
    pub async fn touch_api_keys(&self, used: &[(String, i64)]) -> Result<(), StoreError> {
        const TOUCH: &str = "UPDATE api_keys SET last_used_at_ms = $2 WHERE id = $1 \
             AND (last_used_at_ms IS NULL OR last_used_at_ms < $2)";
        for (id, at_ms) in used {
            with_pool!(self, pool => {
                sqlx::query(TOUCH).bind(id).bind(*at_ms).execute(pool).await.map(|_| ())
            })?;
        }
        Ok(())
    }

    /// Charges `calls` provider calls to a key for `day` if its total stays within `budget`;
    /// one statement, so concurrent charges on any number of nodes never pass the budget.
    pub async fn charge_provider_calls(
        &self,
        key_id: &str,
        day: &str,
        calls: i64,
        budget: i64,
    ) -> Result<UsageCharge, StoreError> {
        const CHARGE: &str = "INSERT INTO api_key_usage (key_id, day, provider_calls) \
             SELECT $1, $2, $3 WHERE $3 <= $4 \
             ON CONFLICT (key_id, day) DO UPDATE \
             SET provider_calls = api_key_usage.provider_calls + excluded.provider_calls \
             WHERE api_key_usage.provider_calls + excluded.provider_calls <= $4 \
             RETURNING provider_calls";
        let charged: Option<i64> = with_pool!(self, pool => {
            sqlx::query_scalar(CHARGE)
                .bind(key_id)
                .bind(day)
                .bind(calls)
                .bind(budget)
                .fetch_optional(pool)
                .await
        })?;
        match charged {
            Some(used_today) => Ok(UsageCharge::Charged { used_today }),
            None => Ok(UsageCharge::OverBudget {
                used_today: self.provider_calls_on(key_id, day).await?,
            }),
        }
    }

    /// Gives back calls charged for work that was not created (an idempotent replay).
    pub async fn refund_provider_calls(
        &self,
        key_id: &str,
        day: &str,
        calls: i64,
    ) -> Result<(), StoreError> {
        const REFUND: &str = "UPDATE api_key_usage \
             SET provider_calls = CASE WHEN provider_calls > $3 THEN provider_calls - $3 ELSE 0 END \
             WHERE key_id = $1 AND day = $2";
        with_pool!(self, pool => {
            sqlx::query(REFUND).bind(key_id).bind(day).bind(calls).execute(pool).await.map(|_| ())
        })?;
        Ok(())
    }

    /// Returns the provider calls charged to a key on `day`.
    pub async fn provider_calls_on(&self, key_id: &str, day: &str) -> Result<i64, StoreError> {
        const USED: &str =
            "SELECT provider_calls FROM api_key_usage WHERE key_id = $1 AND day = $2";
        let used: Option<i64> = with_pool!(self, pool => {
            sqlx::query_scalar(USED).bind(key_id).bind(day).fetch_optional(pool).await
        })?;
        Ok(used.unwrap_or(0))
    }

    /// Returns the stored server secret, storing `generated` first when there is none; every
    /// node of a database gets the same secret, whichever generated it.
    pub async fn auth_secret_or_insert(&self, generated: &str) -> Result<String, StoreError> {
        const INSERT: &str = "INSERT INTO auth_secret (id, secret, created_at_ms) \
             VALUES (1, $1, $2) ON CONFLICT (id) DO NOTHING";
        const SELECT: &str = "SELECT secret FROM auth_secret WHERE id = 1";
        let created_at_ms = now_ms();
        let secret: String = with_pool!(self, pool => {
            async {
                sqlx::query(INSERT).bind(generated).bind(created_at_ms).execute(pool).await?;
                sqlx::query_scalar(SELECT).fetch_one(pool).await
            }
            .await
        })?;
        Ok(secret)
    }
}
