//! AI-visibility audits: the audit row, one row per item (prompt × provider × sample) and one
//! per mention found in an answer. Items are written whole and idempotently, keyed by
//! `(audit_id, item_index)`, so an audit job that runs again after a crash overwrites what it
//! redoes and never duplicates anything.

use std::fmt;
use std::str::FromStr;

use bulwark_core::now_ms;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::db::with_pool;
use crate::{BoxError, Store, StoreError};

/// The columns of `audits`, in [`AuditRow`] order.
macro_rules! audit_columns {
    () => {
        "id, status, request, summary, num_items, error_code, error_message, created_at_ms, \
         updated_at_ms, started_at_ms, finished_at_ms"
    };
}

/// Where an audit is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuditStatus {
    Queued,
    Running,
    /// Every item was answered.
    Succeeded,
    /// Some items failed after their retries; they are listed with their error codes.
    Partial,
    /// No item was answered, or the audit could not run.
    Failed,
}

impl AuditStatus {
    pub const ALL: [AuditStatus; 5] = [
        AuditStatus::Queued,
        AuditStatus::Running,
        AuditStatus::Succeeded,
        AuditStatus::Partial,
        AuditStatus::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AuditStatus::Queued => "queued",
            AuditStatus::Running => "running",
            AuditStatus::Succeeded => "succeeded",
            AuditStatus::Partial => "partial",
            AuditStatus::Failed => "failed",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            AuditStatus::Succeeded | AuditStatus::Partial | AuditStatus::Failed
        )
    }
}

impl fmt::Display for AuditStatus {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

impl FromStr for AuditStatus {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        AuditStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == text)
            .ok_or_else(|| format!("unknown audit status `{text}`"))
    }
}

/// One row of `audits`, decoded.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Audit {
    /// The id of the `audit.run` job that runs the audit.
    pub id: String,
    pub status: AuditStatus,
    /// The audit's request, as submitted.
    pub request: Value,
    /// The summary, once the audit finished.
    pub summary: Option<Value>,
    pub num_items: i64,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    pub started_at_ms: Option<i64>,
    pub finished_at_ms: Option<i64>,
}

#[derive(sqlx::FromRow)]
struct AuditRow {
    id: String,
    status: String,
    request: String,
    summary: Option<String>,
    num_items: i64,
    error_code: Option<String>,
    error_message: Option<String>,
    created_at_ms: i64,
    updated_at_ms: i64,
    started_at_ms: Option<i64>,
    finished_at_ms: Option<i64>,
}

impl TryFrom<AuditRow> for Audit {
    type Error = StoreError;

    fn try_from(row: AuditRow) -> Result<Self, Self::Error> {
        let corrupt = |what: &str, error: BoxError| {
            StoreError::corrupt(format!("audit {}: {what}", row.id), error)
        };
        let status = row
            .status
            .parse()
            .map_err(|error: String| corrupt("status", error.into()))?;
        let request =
            serde_json::from_str(&row.request).map_err(|error| corrupt("request", error.into()))?;
        let summary = match &row.summary {
            Some(text) => {
                Some(serde_json::from_str(text).map_err(|error| corrupt("summary", error.into()))?)
            }
            None => None,
        };
        Ok(Audit {
            status,
            request,
            summary,
            id: row.id,
            num_items: row.num_items,
            error_code: row.error_code,
            error_message: row.error_message,
            created_at_ms: row.created_at_ms,
            updated_at_ms: row.updated_at_ms,
            started_at_ms: row.started_at_ms,
            finished_at_ms: row.finished_at_ms,
        })
    }
}

/// An audit to create, under the id of the job that runs it.
#[derive(Debug, Clone)]
pub struct NewAudit {
    pub id: String,
    pub request: Value,
    pub num_items: u32,
}

/// How an audit ended.
#[derive(Debug, Clone)]
pub struct AuditFinish {
    pub status: AuditStatus,
    pub summary: Value,
    /// Why the audit failed as a whole, for [`AuditStatus::Failed`].
    pub error_opt: Option<(String, String)>,
}

/// Whether an item got an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuditItemStatus {
    Answered,
    /// The provider call failed after its retries; `error_code` says why.
    Failed,
}

impl AuditItemStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AuditItemStatus::Answered => "answered",
            AuditItemStatus::Failed => "failed",
        }
    }
}

/// One item of an audit: a prompt asked of a provider once, and what came back.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct AuditItem {
    pub item_index: i64,
    pub prompt_index: i64,
    pub provider: String,
    pub sample: i64,
    #[sqlx(try_from = "String")]
    pub status: AuditItemStatus,
    pub answer: Option<String>,
    /// The provider that answered: a fallback's name when one did.
    pub answered_by: Option<String>,
    pub model: Option<String>,
    pub latency_ms: Option<f64>,
    pub input_tokens: Option<i64>,
    pub output_tokens: Option<i64>,
    pub brand_mentioned: bool,
    pub is_list: bool,
    /// Character offset of the brand's first mention.
    pub first_mention_char: Option<i64>,
    /// The brand's list rank, or its order among the entities named (see the analysis docs).
    pub first_mention_rank: Option<i64>,
    pub list_rank: Option<i64>,
    /// Mean tone of the sentences mentioning the brand, in `[-1, 1]`.
    pub brand_sentiment: Option<f64>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub recorded_at_ms: i64,
}

impl TryFrom<String> for AuditItemStatus {
    type Error = String;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        match text.as_str() {
            "answered" => Ok(AuditItemStatus::Answered),
            "failed" => Ok(AuditItemStatus::Failed),
            other => Err(format!("unknown audit item status `{other}`")),
        }
    }
}

/// One mention of the brand or a competitor in an item's answer.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct AuditMention {
    pub item_index: i64,
    pub mention_index: i64,
    pub entity: String,
    pub is_brand: bool,
    pub matched_text: String,
    pub char_offset: i64,
    pub sentence_index: i64,
    pub list_rank: Option<i64>,
    /// The sentence the mention is in.
    pub sentence: String,
    /// The sentence's tone in `[-1, 1]`; set for brand mentions.
    pub sentiment: Option<f64>,
    pub sentiment_label: Option<String>,
}

impl Store {
    /// Creates the audit, or returns the one already stored under this id unchanged.
    pub async fn create_audit(&self, new_audit: &NewAudit) -> Result<Audit, StoreError> {
        const INSERT: &str = "INSERT INTO audits (id, status, request, num_items, created_at_ms, \
             updated_at_ms) VALUES ($1, 'queued', $2, $3, $4, $4) ON CONFLICT (id) DO NOTHING";
        let now = now_ms();
        let request = new_audit.request.to_string();
        let num_items = i64::from(new_audit.num_items);
        with_pool!(self, pool => {
            sqlx::query(INSERT)
                .bind(&new_audit.id)
                .bind(&request)
                .bind(num_items)
                .bind(now)
                .execute(pool)
                .await
                .map(|_| ())
        })?;
        self.get_audit(&new_audit.id)
            .await?
            .ok_or_else(|| StoreError::Invariant(format!("audit {} vanished", new_audit.id)))
    }

    /// Returns the audit with this id, if any.
    pub async fn get_audit(&self, id: &str) -> Result<Option<Audit>, StoreError> {
        const BY_ID: &str = concat!("SELECT ", audit_columns!(), " FROM audits WHERE id = $1");
        let row: Option<AuditRow> = with_pool!(self, pool => {
            sqlx::query_as(BY_ID).bind(id).fetch_optional(pool).await
        })?;
        row.map(Audit::try_from).transpose()
    }

    /// Marks the audit running (again, after a crash); the first start time is kept.
    pub async fn start_audit(&self, id: &str) -> Result<(), StoreError> {
        const START: &str = "UPDATE audits SET status = 'running', updated_at_ms = $1, \
             started_at_ms = COALESCE(started_at_ms, $1), finished_at_ms = NULL \
             WHERE id = $2";
        let now = now_ms();
        with_pool!(self, pool => sqlx::query(START).bind(now).bind(id).execute(pool).await.map(|_| ()))?;
        Ok(())
    }

    /// Records the audit's final status and summary.
    pub async fn finish_audit(&self, id: &str, finish: &AuditFinish) -> Result<(), StoreError> {
        const FINISH: &str = "UPDATE audits SET status = $1, summary = $2, error_code = $3, \
             error_message = $4, updated_at_ms = $5, finished_at_ms = $5 WHERE id = $6";
        let now = now_ms();
        let summary = finish.summary.to_string();
        let (code_opt, message_opt) = match &finish.error_opt {
            Some((code, message)) => (Some(code.as_str()), Some(message.as_str())),
            None => (None, None),
        };
        with_pool!(self, pool => {
            sqlx::query(FINISH)
                .bind(finish.status.as_str())
                .bind(&summary)
                .bind(code_opt)
                .bind(message_opt)
                .bind(now)
                .bind(id)
                .execute(pool)
                .await
                .map(|_| ())
        })?;
        Ok(())
    }

    /// Writes one item and its mentions in one transaction, replacing whatever an earlier run
    /// wrote for the same item.
    pub async fn record_audit_item(
        &self,
        audit_id: &str,
        item: &AuditItem,
        mentions: &[AuditMention],
    ) -> Result<(), StoreError> {
        const DELETE_MENTIONS: &str =
            "DELETE FROM audit_mentions WHERE audit_id = $1 AND item_index = $2";
        const UPSERT_ITEM: &str = "INSERT INTO audit_items (audit_id, item_index, \
             prompt_index, provider, sample, status, answer, answered_by, model, latency_ms, \
             input_tokens, output_tokens, brand_mentioned, is_list, first_mention_char, \
             first_mention_rank, list_rank, brand_sentiment, error_code, error_message, \
             recorded_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, \
             $14, $15, $16, $17, $18, $19, $20, $21) \
             ON CONFLICT (audit_id, item_index) DO UPDATE SET prompt_index = excluded.prompt_index, \
             provider = excluded.provider, sample = excluded.sample, status = excluded.status, \
             answer = excluded.answer, answered_by = excluded.answered_by, model = excluded.model, \
             latency_ms = excluded.latency_ms, input_tokens = excluded.input_tokens, \
             output_tokens = excluded.output_tokens, brand_mentioned = excluded.brand_mentioned, \
             is_list = excluded.is_list, first_mention_char = excluded.first_mention_char, \
             first_mention_rank = excluded.first_mention_rank, list_rank = excluded.list_rank, \
             brand_sentiment = excluded.brand_sentiment, error_code = excluded.error_code, \
             error_message = excluded.error_message, recorded_at_ms = excluded.recorded_at_ms";
        const INSERT_MENTION: &str = "INSERT INTO audit_mentions (audit_id, item_index, \
             mention_index, entity, is_brand, matched_text, char_offset, sentence_index, \
             list_rank, sentence, sentiment, sentiment_label) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)";
        with_pool!(self, pool => async {
            let mut transaction = pool.begin().await?;
            sqlx::query(DELETE_MENTIONS)
                .bind(audit_id)
                .bind(item.item_index)
                .execute(&mut *transaction)
                .await?;
            sqlx::query(UPSERT_ITEM)
                .bind(audit_id)
                .bind(item.item_index)
                .bind(item.prompt_index)
                .bind(&item.provider)
                .bind(item.sample)
                .bind(item.status.as_str())
                .bind(&item.answer)
                .bind(&item.answered_by)
                .bind(&item.model)
                .bind(item.latency_ms)
                .bind(item.input_tokens)
                .bind(item.output_tokens)
                .bind(item.brand_mentioned)
                .bind(item.is_list)
                .bind(item.first_mention_char)
                .bind(item.first_mention_rank)
                .bind(item.list_rank)
                .bind(item.brand_sentiment)
                .bind(&item.error_code)
                .bind(&item.error_message)
                .bind(item.recorded_at_ms)
                .execute(&mut *transaction)
                .await?;
            for mention in mentions {
                sqlx::query(INSERT_MENTION)
                    .bind(audit_id)
                    .bind(item.item_index)
                    .bind(mention.mention_index)
                    .bind(&mention.entity)
                    .bind(mention.is_brand)
                    .bind(&mention.matched_text)
                    .bind(mention.char_offset)
                    .bind(mention.sentence_index)
                    .bind(mention.list_rank)
                    .bind(&mention.sentence)
                    .bind(mention.sentiment)
                    .bind(&mention.sentiment_label)
                    .execute(&mut *transaction)
                    .await?;
            }
            transaction.commit().await
        }
        .await)?;
        Ok(())
    }

    /// Returns the audit's items in item order.
    pub async fn list_audit_items(&self, audit_id: &str) -> Result<Vec<AuditItem>, StoreError> {
        const SELECT: &str = "SELECT item_index, prompt_index, provider, sample, status, answer, \
             answered_by, model, latency_ms, input_tokens, output_tokens, brand_mentioned, \
             is_list, first_mention_char, first_mention_rank, list_rank, brand_sentiment, \
             error_code, error_message, recorded_at_ms FROM audit_items WHERE audit_id = $1 \
             ORDER BY item_index";
        let items = with_pool!(self, pool => {
            sqlx::query_as(SELECT).bind(audit_id).fetch_all(pool).await
        })?;
        Ok(items)
    }

    /// Returns the audit's mentions in item, then text order.
    pub async fn list_audit_mentions(
        &self,
        audit_id: &str,
    ) -> Result<Vec<AuditMention>, StoreError> {
        const SELECT: &str = "SELECT item_index, mention_index, entity, is_brand, matched_text, \
             char_offset, sentence_index, list_rank, sentence, sentiment, sentiment_label \
             FROM audit_mentions WHERE audit_id = $1 ORDER BY item_index, mention_index";
        let mentions = with_pool!(self, pool => {
            sqlx::query_as(SELECT).bind(audit_id).fetch_all(pool).await
        })?;
        Ok(mentions)
    }
}
