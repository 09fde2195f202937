use std::sync::Arc;

use bulwark_actors::{RequeueTarget, refresh_dead_letter_depth, requeue_dead_letter};
use bulwark_core::format_rfc3339_ms;
use bulwark_store::{DEAD_LETTER_STATUSES, DeadLetter, DeadLetterCount, DeadLetterFilter};
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{Enum, Object, OpenApi};
use serde_json::Value;

use crate::ApiTags;
use crate::auth::{OperateKey, ReadKey};
use crate::error::{ApiError, ApiResult};
use crate::routes::paging::{check_cursor, page_size};
use crate::state::ApiState;
use crate::strict_json::StrictJson;

/// Letters requeued by one bulk request at most.
const MAX_BULK: u32 = 10_000;
/// Statuses an operator may requeue from.
const REQUEUEABLE: [&str; 4] = ["pending", "retrying", "parked", "requeued"];

/// A job that could not be done. Times are RFC 3339; fields without a value are absent.
#[derive(Debug, Clone, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct DeadLetterView {
    pub id: String,
    /// `local` (the jobs table) or `broker` (a `<ns>.dlq.<kind>` queue).
    pub source: String,
    pub job_id: String,
    /// The queue it came from: `local` or the broker queue.
    pub queue: String,
    pub kind: String,
    /// The message as received: JSON when it parses, otherwise the text.
    pub message: Value,
    /// The broker message's properties and headers (`x-death` among them), when it came from
    /// the broker: `exchange`, `routing_key`, `content_type`, `message_id`, `correlation_id`,
    /// `reply_to`, `timestamp`, `body_encoding` (`utf8` or `base64`) and `headers`.
    pub headers: Option<Value>,
    pub error_code: String,
    pub error_message: String,
    pub retriable: bool,
    pub retry_count: i32,
    pub request_id: Option<String>,
    pub trace_id: Option<String>,
    /// `pending`, `retrying`, `parked`, `requeued` or `recovered`.
    pub status: String,
    pub next_retry_at: Option<String>,
    pub dead_at: String,
    pub updated_at: String,
}

fn json_or_text(text: String) -> Value {
    serde_json::from_str(&text).unwrap_or(Value::String(text))
}

impl From<DeadLetter> for DeadLetterView {
    fn from(letter: DeadLetter) -> Self {
        DeadLetterView {
            id: letter.id,
            source: letter.source,
            job_id: letter.job_id,
            queue: letter.queue,
            kind: letter.kind,
            message: json_or_text(letter.message),
            headers: letter.headers.map(json_or_text),
            error_code: letter.error_code,
            error_message: letter.error_message,
            retriable: letter.retriable,
            retry_count: letter.retry_count,
            request_id: letter.request_id,
            trace_id: letter.trace_id,
            status: letter.status,
            next_retry_at: letter.next_retry_at_ms.map(format_rfc3339_ms),
            dead_at: format_rfc3339_ms(letter.dead_at_ms),
            updated_at: format_rfc3339_ms(letter.updated_at_ms),
        }
    }
}

/// A page of dead letters, newest first.
#[derive(Debug, Clone, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct DeadLetterList {
    pub dead_letters: Vec<DeadLetterView>,
    pub next_cursor: Option<String>,
}

/// Dead letters per queue and status, and per error code.
#[derive(Debug, Clone, Object)]
pub struct DeadLetterStats {
    /// Letters not yet recovered (pending, retrying, parked).
    pub depth: i64,
    pub by_queue: Vec<QueueCount>,
    pub by_error_code: Vec<ErrorCodeCount>,
}

#[derive(Debug, Clone, Object)]
pub struct QueueCount {
    pub queue: String,
    pub status: String,
    pub count: i64,
}

#[derive(Debug, Clone, Object)]
pub struct ErrorCodeCount {
    pub error_code: String,
    pub count: i64,
}

/// Which letters a bulk operation selects; at least one field, or `all: true`.
#[derive(Debug, Clone, Object)]
#[oai(deny_unknown_fields)]
pub struct DeadLetterSelection {
    pub status: Option<DeadLetterStatusName>,
    pub queue: Option<String>,
    pub kind: Option<String>,
    pub error_code: Option<String>,
    /// Select every letter when no other field is given.
    pub all: Option<bool>,
    /// At most this many (default and maximum 10000).
    #[oai(validator(minimum(value = "1"), maximum(value = "10000")))]
    pub limit: Option<u32>,
}

/// A dead letter's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "lowercase")]
pub enum DeadLetterStatusName {
    Pending,
    Retrying,
    Parked,
    Requeued,
    Recovered,
}

impl DeadLetterStatusName {
    fn into_text(self) -> String {
        let text = match self {
            DeadLetterStatusName::Pending => "pending",
            DeadLetterStatusName::Retrying => "retrying",
            DeadLetterStatusName::Parked => "parked",
            DeadLetterStatusName::Requeued => "requeued",
            DeadLetterStatusName::Recovered => "recovered",
        };
        text.to_owned()
    }
}

/// How many letters a bulk operation touched.
#[derive(Debug, Clone, Object)]
pub struct BulkResult {
    pub num_selected: u64,
    pub num_changed: u64,
}

fn check_status(status: Option<&str>) -> Result<(), ApiError> {
    match status {
        Some(text) if !DEAD_LETTER_STATUSES.contains(&text) => Err(ApiError::invalid(format!(
            "status: unknown value `{text}`, expected one of: {}",
            DEAD_LETTER_STATUSES.join(", ")
        ))),
        _ => Ok(()),
    }
}

fn selection_filter(
    status: Option<String>,
    queue: Option<String>,
    kind: Option<String>,
    error_code: Option<String>,
    all: bool,
) -> Result<DeadLetterFilter, ApiError> {
    check_status(status.as_deref())?;
    let filter = DeadLetterFilter {
        status,
        queue,
        kind,
        error_code,
        before_id: None,
        limit: MAX_BULK,
    };
    if filter.is_empty() && !all {
        return Err(ApiError::invalid(
            "all: an empty filter selects every dead letter; pass status, queue, kind or \
             error_code, or all=true",
        ));
    }
    Ok(filter)
}

fn stats_of(counts: Vec<DeadLetterCount>) -> DeadLetterStats {
    let mut by_queue: Vec<QueueCount> = Vec::new();
    let mut by_error_code: Vec<ErrorCodeCount> = Vec::new();
    let mut depth = 0;
    for count in counts {
        let open = matches!(count.status.as_str(), "pending" | "retrying" | "parked");
        if open {
            depth += count.count;
            match by_error_code
                .iter_mut()
                .find(|known| known.error_code == count.error_code)
            {
                Some(known) => known.count += count.count,
                None => by_error_code.push(ErrorCodeCount {
                    error_code: count.error_code.clone(),
                    count: count.count,
                }),
            }
        }
        match by_queue
            .iter_mut()
            .find(|known| known.queue == count.queue && known.status == count.status)
        {
            Some(known) => known.count += count.count,
            None => by_queue.push(QueueCount {
                queue: count.queue,
                status: count.status,
                count: count.count,
            }),
        }
    }
    DeadLetterStats {
        depth,
        by_queue,
        by_error_code,
    }
}

pub struct DeadLettersApi {
    pub state: Arc<ApiState>,
}

impl DeadLettersApi {
    async fn load(&self, id: &str) -> ApiResult<DeadLetter> {
        self.state
            .store
            .get_dead_letter(id)
            .await?
            .ok_or_else(|| ApiError::not_found(format!("dead letter {id} does not exist")))
    }

    /// Requeues one letter: a local job back in its queue, a broker message back to its
    /// original queue. `503` when the broker does not take it (the letter keeps its status).
    async fn requeue_one(&self, letter: &DeadLetter) -> ApiResult<bool> {
        let target = RequeueTarget {
            store: &self.state.store,
            job_runner: &self.state.job_runner,
            publisher: self
                .state
                .intake
                .publisher()
                .map(|publisher| publisher.as_ref()),
        };
        requeue_dead_letter(&target, letter, &REQUEUEABLE, "requeued")
            .await
            .map_err(ApiError::from)
    }
}

#[OpenApi(tag = "ApiTags::DeadLetters")]
impl DeadLettersApi {
    /// Lists dead letters, newest first, with cursor pagination.
    // Each argument is one query parameter of the operation.
    #[allow(clippy::too_many_arguments)]
    #[oai(
        path = "/v1/dead-letters",
        method = "get",
        operation_id = "list_dead_letters"
    )]
    async fn list(
        &self,
        _auth: ReadKey,
        /// `pending`, `retrying`, `parked`, `requeued` or `recovered`.
        status: Query<Option<DeadLetterStatusName>>,
        /// The original queue: `local` or a broker queue.
        queue: Query<Option<String>>,
        kind: Query<Option<String>>,
        error_code: Query<Option<String>>,
        /// Page size, 1 to 500 (default 50).
        #[oai(validator(minimum(value = "1"), maximum(value = "500")))]
        limit: Query<Option<u32>>,
        /// The `next_cursor` of the previous page.
        #[oai(validator(
            pattern = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
        ))]
        cursor: Query<Option<String>>,
    ) -> ApiResult<Json<DeadLetterList>> {
        let limit = page_size(limit.0)?;
        check_cursor(cursor.0.as_deref())?;
        let filter = DeadLetterFilter {
            status: status.0.map(DeadLetterStatusName::into_text),
            queue: queue.0,
            kind: kind.0,
            error_code: error_code.0,
            before_id: cursor.0,
            limit,
        };
        let page = self.state.store.list_dead_letters(&filter).await?;
        Ok(Json(DeadLetterList {
            dead_letters: page.dead_letters.into_iter().map(Into::into).collect(),
            next_cursor: page.next_cursor,
        }))
    }

    /// Returns the depth by queue and status, and by error code.
    #[oai(
        path = "/v1/dead-letters/stats",
        method = "get",
        operation_id = "dead_letter_stats"
    )]
    async fn stats(&self, _auth: ReadKey) -> ApiResult<Json<DeadLetterStats>> {
        Ok(Json(stats_of(self.state.store.count_dead_letters().await?)))
    }

    /// Returns one dead letter with its original message.
    #[oai(
        path = "/v1/dead-letters/:id",
        method = "get",
        operation_id = "get_dead_letter"
    )]
    async fn get(&self, _auth: ReadKey, id: Path<String>) -> ApiResult<Json<DeadLetterView>> {
        Ok(Json(self.load(&id.0).await?.into()))
    }

    /// Puts the letter's job back on its original queue with its original id (the job's
    /// idempotency holds); `409` when it is already recovered.
    #[oai(
        path = "/v1/dead-letters/:id/requeue",
        method = "post",
        operation_id = "requeue_dead_letter"
    )]
    async fn requeue(
        &self,
        _auth: OperateKey,
        id: Path<String>,
    ) -> ApiResult<Json<DeadLetterView>> {
        let letter = self.load(&id.0).await?;
        if !REQUEUEABLE.contains(&letter.status.as_str()) {
            return Err(ApiError::conflict(format!(
                "status: dead letter {} is {} and cannot be requeued",
                letter.id, letter.status
            )));
        }
        self.requeue_one(&letter).await?;
        refresh_dead_letter_depth(&self.state.store).await;
        Ok(Json(self.load(&letter.id).await?.into()))
    }

    /// Requeues every letter the selection matches (not `recovered` ones).
    #[oai(
        path = "/v1/dead-letters/requeue",
        method = "post",
        operation_id = "requeue_dead_letters"
    )]
    async fn requeue_bulk(
        &self,
        _auth: OperateKey,
        body: StrictJson<DeadLetterSelection>,
    ) -> ApiResult<Json<BulkResult>> {
        let selection = body.0;
        let limit = selection.limit.unwrap_or(MAX_BULK);
        if !(1..=MAX_BULK).contains(&limit) {
            return Err(ApiError::invalid(format!(
                "limit: must be between 1 and {MAX_BULK}"
            )));
        }
        let mut filter = selection_filter(
            selection.status.map(DeadLetterStatusName::into_text),
            selection.queue,
            selection.kind,
            selection.error_code,
            selection.all.unwrap_or(false),
        )?;
        filter.limit = limit;
        let page = self.state.store.list_dead_letters(&filter).await?;
        let mut result = BulkResult {
            num_selected: 0,
            num_changed: 0,
        };
        for letter in page.dead_letters {
            if !REQUEUEABLE.contains(&letter.status.as_str()) {
                continue;
            }
            result.num_selected += 1;
            if self.requeue_one(&letter).await? {
                result.num_changed += 1;
            }
        }
        refresh_dead_letter_depth(&self.state.store).await;
        Ok(Json(result))
    }

    /// Parks a letter: no automatic retry until an operator requeues it.
    #[oai(
        path = "/v1/dead-letters/:id/park",
        method = "post",
        operation_id = "park_dead_letter"
    )]
    async fn park(&self, _auth: OperateKey, id: Path<String>) -> ApiResult<Json<DeadLetterView>> {
        let letter = self.load(&id.0).await?;
        if letter.status != "parked"
            && !self
                .state
                .store
                .transition_dead_letter(
                    &letter.id,
                    &["pending", "retrying", "requeued"],
                    "parked",
                    0,
                )
                .await?
        {
            return Err(ApiError::conflict(format!(
                "status: dead letter {} is {} and cannot be parked",
                letter.id, letter.status
            )));
        }
        refresh_dead_letter_depth(&self.state.store).await;
        Ok(Json(self.load(&letter.id).await?.into()))
    }

    /// Deletes the letters the filter selects. An empty filter is refused unless `all=true`.
    // Each argument is one query parameter of the operation.
    #[allow(clippy::too_many_arguments)]
    #[oai(
        path = "/v1/dead-letters",
        method = "delete",
        operation_id = "purge_dead_letters"
    )]
    async fn purge(
        &self,
        _auth: OperateKey,
        status: Query<Option<DeadLetterStatusName>>,
        queue: Query<Option<String>>,
        kind: Query<Option<String>>,
        error_code: Query<Option<String>>,
        /// Required to purge with no other filter.
        all: Query<Option<bool>>,
    ) -> ApiResult<Json<BulkResult>> {
        let filter = selection_filter(
            status.0.map(DeadLetterStatusName::into_text),
            queue.0,
            kind.0,
            error_code.0,
            all.0.unwrap_or(false),
        )?;
        let num_purged = self.state.store.purge_dead_letters(&filter).await?;
        refresh_dead_letter_depth(&self.state.store).await;
        Ok(Json(BulkResult {
            num_selected: num_purged,
            num_changed: num_purged,
        }))
    }
}
