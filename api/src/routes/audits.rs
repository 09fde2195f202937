use std::sync::Arc;

use bulwark_audit::analysis::{AuditSummary, CompetitorSummary, SummaryBlock};
use bulwark_audit::request::AuditRequest;
use bulwark_audit::summary_from_rows;
use bulwark_core::{TraceContext, format_rfc3339_ms};
use bulwark_store::{
    Audit, AuditItem, AuditItemStatus, AuditMention, InsertOutcome, NewAudit, NewJob,
};
use poem::web::Data;
use poem_openapi::param::{Header, Path, Query};
use poem_openapi::payload::{Html, Json, PlainText};
use poem_openapi::{ApiResponse, Enum, Object, OpenApi};

use crate::ApiTags;
use crate::auth::{ReadKey, SubmitKey};
use crate::error::{ApiError, ApiResult};
use crate::middleware::RequestId;
use crate::state::ApiState;
use crate::strict_json::StrictJson;
use bulwark_audit::report::{ReportData, html_page, items_csv, summary_csv};

const AUDIT_JOB_KIND: &str = "audit.run";

/// An AI-visibility audit to run: every prompt is asked of every provider
/// `samples_per_prompt` times, and each answer is searched for the brand and its competitors.
#[derive(Debug, Clone, Object)]
#[oai(deny_unknown_fields)]
pub struct AuditSubmission {
    /// The brand to look for, 1 to 200 characters, not blank.
    #[oai(validator(max_length = 200, pattern = r"\S"))]
    pub brand: String,
    /// Other names of the brand (at most 20); a mention of one counts for the brand.
    #[oai(validator(max_items = 20, max_length = 200, pattern = r"\S"))]
    pub aliases: Option<Vec<String>>,
    /// Competitors to measure the brand against (at most 50); none may repeat another, the
    /// brand or an alias.
    #[oai(validator(max_items = 50, max_length = 200, pattern = r"\S"))]
    pub competitors: Option<Vec<String>>,
    /// Questions to ask, 1 to 100, each at most 4,000 characters.
    #[oai(validator(min_items = 1, max_items = 100, max_length = 4000, pattern = r"\S"))]
    pub prompts: Vec<String>,
    /// Configured provider names (`422` for one that is not configured), 1 to 10.
    #[oai(validator(min_items = 1, max_items = 10, max_length = 200, pattern = r"\S"))]
    pub providers: Vec<String>,
    /// Times each prompt is asked of each provider, 1 to 10 (default 1). Prompts × providers
    /// × samples is at most 1,000.
    #[oai(validator(minimum(value = "1"), maximum(value = "10")))]
    pub samples_per_prompt: Option<u32>,
    /// Submitting again with the same key returns the same audit, never a second one.
    #[oai(validator(min_length = 1, max_length = 255))]
    pub idempotency_key: Option<String>,
}

/// An error code and what it means.
#[derive(Debug, Clone, Object)]
pub struct AuditErrorView {
    pub code: String,
    pub message: String,
}

/// One competitor's numbers.
#[derive(Debug, Clone, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct CompetitorView {
    pub name: String,
    pub num_mentions: u64,
    /// Answers naming the competitor over all answers.
    pub mention_rate: f64,
    /// The competitor's mentions over all mentions of the brand and the competitors.
    pub share_of_voice: Option<f64>,
}

/// An audit's numbers over a set of answers.
#[derive(Debug, Clone, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct SummaryView {
    pub num_items: u64,
    pub num_answers: u64,
    pub num_failed: u64,
    pub num_brand_answers: u64,
    /// Answers mentioning the brand over all answers.
    pub mention_rate: f64,
    pub num_brand_mentions: u64,
    pub num_competitor_mentions: u64,
    /// Brand mentions over all mentions of the brand and the competitors.
    pub share_of_voice: Option<f64>,
    /// Mean tone, in `[-1, 1]`, of the sentences mentioning the brand.
    pub average_sentiment: Option<f64>,
    /// Mean rank of the brand's first mention: its list rank when the answer is a list,
    /// otherwise its order among the entities named (1 is best).
    pub average_first_mention_rank: Option<f64>,
    pub competitors: Vec<CompetitorView>,
}

/// One provider's numbers.
#[derive(Debug, Clone, Object)]
pub struct ProviderSummaryView {
    pub provider: String,
    pub summary: SummaryView,
}

/// Overall and per-provider numbers.
#[derive(Debug, Clone, Object)]
pub struct AuditSummaryView {
    pub overall: SummaryView,
    pub providers: Vec<ProviderSummaryView>,
}

/// One mention of the brand or a competitor.
#[derive(Debug, Clone, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct MentionView {
    pub entity: String,
    pub is_brand: bool,
    pub matched_text: String,
    /// Offset in characters from the start of the answer.
    pub char_offset: i64,
    pub list_rank: Option<i64>,
    pub sentence: String,
    /// Tone of the sentence in `[-1, 1]`, for brand mentions.
    pub sentiment: Option<f64>,
    pub sentiment_label: Option<String>,
}

/// One prompt asked of one provider once.
#[derive(Debug, Clone, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct AuditItemView {
    pub item_index: i64,
    pub prompt_index: i64,
    pub prompt: String,
    pub provider: String,
    pub sample: i64,
    /// `answered` or `failed`.
    pub status: String,
    /// The provider that answered: a fallback's name when one did.
    pub answered_by: Option<String>,
    pub model: Option<String>,
    pub latency_ms: Option<f64>,
    pub answer: Option<String>,
    pub brand_mentioned: bool,
    pub is_list: bool,
    pub first_mention_char: Option<i64>,
    pub first_mention_rank: Option<i64>,
    pub list_rank: Option<i64>,
    pub brand_sentiment: Option<f64>,
    pub error: Option<AuditErrorView>,
    pub mentions: Vec<MentionView>,
}

/// An item whose provider call failed after its retries.
#[derive(Debug, Clone, Object)]
pub struct AuditFailureView {
    pub item_index: i64,
    pub prompt_index: i64,
    pub provider: String,
    pub sample: i64,
    pub code: String,
    pub message: String,
}

/// An audit: its request, where it is, its numbers, every answer and every failure.
#[derive(Debug, Clone, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct AuditView {
    /// Also the id of the `audit.run` job that runs it.
    pub id: String,
    /// `queued`, `running`, `succeeded`, `partial` (some items failed) or `failed`.
    pub status: String,
    pub brand: String,
    pub aliases: Vec<String>,
    pub competitors: Vec<String>,
    pub prompts: Vec<String>,
    pub providers: Vec<String>,
    pub samples_per_prompt: u32,
    pub num_items: i64,
    /// Items answered or failed so far.
    pub num_recorded: usize,
    /// Why the audit failed as a whole.
    pub error: Option<AuditErrorView>,
    /// Computed from the items recorded so far; final once the status is.
    pub summary: AuditSummaryView,
    pub failures: Vec<AuditFailureView>,
    /// Absent when `include_items=false`.
    pub items: Option<Vec<AuditItemView>>,
    /// RFC 3339 times.
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub report_csv_url: String,
    pub report_html_url: String,
}

fn summary_view(block: &SummaryBlock) -> SummaryView {
    SummaryView {
        num_items: block.num_items,
        num_answers: block.num_answers,
        num_failed: block.num_failed,
        num_brand_answers: block.num_brand_answers,
        mention_rate: block.mention_rate,
        num_brand_mentions: block.num_brand_mentions,
        num_competitor_mentions: block.num_competitor_mentions,
        share_of_voice: block.share_of_voice,
        average_sentiment: block.average_sentiment,
        average_first_mention_rank: block.average_first_mention_rank,
        competitors: block
            .competitors
            .iter()
            .map(|competitor: &CompetitorSummary| CompetitorView {
                name: competitor.name.clone(),
                num_mentions: competitor.num_mentions,
                mention_rate: competitor.mention_rate,
                share_of_voice: competitor.share_of_voice,
            })
            .collect(),
    }
}

fn audit_summary_view(summary: &AuditSummary) -> AuditSummaryView {
    AuditSummaryView {
        overall: summary_view(&summary.overall),
        providers: summary
            .providers
            .iter()
            .map(|block| ProviderSummaryView {
                provider: block.provider.clone(),
                summary: summary_view(&block.summary),
            })
            .collect(),
    }
}

fn prompt_of(request: &AuditRequest, prompt_index: i64) -> String {
    usize::try_from(prompt_index)
        .ok()
        .and_then(|index| request.prompts.get(index))
        .cloned()
        .unwrap_or_default()
}

fn item_view(request: &AuditRequest, item: &AuditItem, mentions: &[AuditMention]) -> AuditItemView {
    let error = item.error_code.as_ref().map(|code| AuditErrorView {
        code: code.clone(),
        message: item.error_message.clone().unwrap_or_default(),
    });
    AuditItemView {
        item_index: item.item_index,
        prompt_index: item.prompt_index,
        prompt: prompt_of(request, item.prompt_index),
        provider: item.provider.clone(),
        sample: item.sample,
        status: item.status.as_str().to_owned(),
        answered_by: item.answered_by.clone(),
        model: item.model.clone(),
        latency_ms: item.latency_ms,
        answer: item.answer.clone(),
        brand_mentioned: item.brand_mentioned,
        is_list: item.is_list,
        first_mention_char: item.first_mention_char,
        first_mention_rank: item.first_mention_rank,
        list_rank: item.list_rank,
        brand_sentiment: item.brand_sentiment,
        error,
        mentions: mentions
            .iter()
            .filter(|mention| mention.item_index == item.item_index)
            .map(|mention| MentionView {
                entity: mention.entity.clone(),
                is_brand: mention.is_brand,
                matched_text: mention.matched_text.clone(),
                char_offset: mention.char_offset,
                list_rank: mention.list_rank,
                sentence: mention.sentence.clone(),
                sentiment: mention.sentiment,
                sentiment_label: mention.sentiment_label.clone(),
            })
            .collect(),
    }
}

/// An audit with everything recorded for it so far.
struct LoadedAudit {
    audit: Audit,
    request: AuditRequest,
    items: Vec<AuditItem>,
    mentions: Vec<AuditMention>,
    summary: AuditSummary,
}

impl LoadedAudit {
    fn report(&self) -> ReportData<'_> {
        ReportData {
            audit: &self.audit,
            request: &self.request,
            items: &self.items,
            mentions: &self.mentions,
            summary: &self.summary,
        }
    }

    fn view(&self, include_items: bool) -> AuditView {
        let request = &self.request;
        let failures = self
            .items
            .iter()
            .filter(|item| item.status == AuditItemStatus::Failed)
            .map(|item| AuditFailureView {
                item_index: item.item_index,
                prompt_index: item.prompt_index,
                provider: item.provider.clone(),
                sample: item.sample,
                code: item.error_code.clone().unwrap_or_default(),
                message: item.error_message.clone().unwrap_or_default(),
            })
            .collect();
        let items = include_items.then(|| {
            self.items
                .iter()
                .map(|item| item_view(request, item, &self.mentions))
                .collect()
        });
        let error = self.audit.error_code.as_ref().map(|code| AuditErrorView {
            code: code.clone(),
            message: self.audit.error_message.clone().unwrap_or_default(),
        });
        AuditView {
            id: self.audit.id.clone(),
            status: self.audit.status.as_str().to_owned(),
            brand: request.brand.clone(),
            aliases: request.aliases.clone(),
            competitors: request.competitors.clone(),
            prompts: request.prompts.clone(),
            providers: request.providers.clone(),
            samples_per_prompt: request.samples_per_prompt,
            num_items: self.audit.num_items,
            num_recorded: self.items.len(),
            error,
            summary: audit_summary_view(&self.summary),
            failures,
            items,
            created_at: format_rfc3339_ms(self.audit.created_at_ms),
            started_at: self.audit.started_at_ms.map(format_rfc3339_ms),
            finished_at: self.audit.finished_at_ms.map(format_rfc3339_ms),
            report_csv_url: format!("/v1/audits/{}/report.csv", self.audit.id),
            report_html_url: format!("/v1/audits/{}/report.html", self.audit.id),
        }
    }
}

#[derive(ApiResponse)]
enum SubmitAuditResponse {
    /// The audit was stored and its `audit.run` job queued.
    #[oai(status = 202)]
    Created(Json<AuditView>),
    /// An audit with this idempotency key already exists; it is returned as it is now.
    #[oai(status = 200)]
    Existing(
        Json<AuditView>,
        #[oai(header = "Idempotent-Replayed")] String,
    ),
}

/// What a CSV report has a row for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "lowercase")]
pub enum CsvView {
    /// One row per item.
    Items,
    /// One row per provider, and `overall`.
    Summary,
}

#[derive(ApiResponse)]
enum CsvResponse {
    /// The report as CSV (RFC 4180).
    #[oai(status = 200, content_type = "text/csv; charset=utf-8")]
    Csv(PlainText<String>),
}

pub struct AuditsApi {
    pub state: Arc<ApiState>,
}

impl AuditsApi {
    async fn load(&self, id: &str) -> ApiResult<LoadedAudit> {
        let store = &self.state.store;
        let Some(audit) = store.get_audit(id).await? else {
            return Err(ApiError::not_found(format!("audit {id} does not exist")));
        };
        let request: AuditRequest = serde_json::from_value(audit.request.clone())
            .map_err(|error| ApiError::internal(format!("audit {id}: stored request: {error}")))?;
        let items = store.list_audit_items(id).await?;
        let mentions = store.list_audit_mentions(id).await?;
        let summary = summary_from_rows(&request, &items, &mentions);
        Ok(LoadedAudit {
            audit,
            request,
            items,
            mentions,
            summary,
        })
    }
}

#[OpenApi(tag = "ApiTags::Audits")]
impl AuditsApi {
    /// Starts an AI-visibility audit.
    ///
    /// The request is validated (`422` naming the field; unknown providers are refused)
    /// before anything is stored. The audit runs as an `audit.run` job whose id is the
    /// audit's. With an `idempotency_key`, a repeated submission returns the stored audit
    /// (`200`), and a different audit under the same key is refused (`409`).
    #[oai(path = "/v1/audits", method = "post", operation_id = "submit_audit")]
    async fn submit(
        &self,
        auth: SubmitKey,
        body: StrictJson<AuditSubmission>,
        request_id: Data<&RequestId>,
        /// W3C trace context; travels with the job over the broker.
        traceparent: Header<Option<String>>,
    ) -> ApiResult<SubmitAuditResponse> {
        let submission = body.0;
        let request = AuditRequest {
            brand: submission.brand,
            aliases: submission.aliases.unwrap_or_default(),
            competitors: submission.competitors.unwrap_or_default(),
            prompts: submission.prompts,
            providers: submission.providers,
            samples_per_prompt: submission.samples_per_prompt.unwrap_or(1),
        };
        request
            .validate(Some(&self.state.audit_providers))
            .map_err(|error| ApiError::invalid(format!("{}: {}", error.field, error.message)))?;
        let payload = serde_json::to_value(&request)
            .map_err(|error| ApiError::internal(format!("failed to encode the audit: {error}")))?;
        let trace = TraceContext::continue_or_start(traceparent.0);
        let new_job = NewJob {
            kind: AUDIT_JOB_KIND.to_owned(),
            payload: payload.clone(),
            idempotency_key: submission.idempotency_key,
            request_id: Some(request_id.0.0.clone()),
            trace_id: trace.trace_id(),
            max_attempts: self.state.job_defaults.max_attempts_of(AUDIT_JOB_KIND),
            priority: self.state.job_defaults.priority_of(AUDIT_JOB_KIND),
            run_at_ms: None,
            timeout_ms: self.state.job_defaults.timeout_ms_of(AUDIT_JOB_KIND),
            result_ttl_ms: None,
        };
        let num_calls = u64::try_from(request.num_items()).unwrap_or(u64::MAX);
        let charge = self
            .state
            .auth
            .charge_provider_calls(&auth.0, num_calls)
            .await?;
        let outcome = match self.state.intake.submit_traced(&new_job, &trace).await {
            Ok(InsertOutcome::Created(job)) => InsertOutcome::Created(job),
            other => {
                charge.refund().await;
                other?
            }
        };
        let job = outcome.job();
        if new_job.conflicts_with(job) {
            return Err(ApiError::conflict(crate::routes::jobs::conflict_message(
                &job.id,
            )));
        }
        // The job may already be running and have created the row; both writes are the same.
        let new_audit = NewAudit {
            id: job.id.clone(),
            request: payload,
            num_items: u32::try_from(request.num_items()).unwrap_or(u32::MAX),
        };
        self.state.store.create_audit(&new_audit).await?;
        let view = self.load(&job.id).await?.view(false);
        match outcome {
            InsertOutcome::Created(_) => Ok(SubmitAuditResponse::Created(Json(view))),
            InsertOutcome::Existing(_) => {
                Ok(SubmitAuditResponse::Existing(Json(view), "true".to_owned()))
            }
        }
    }

    /// Returns an audit: status, summary per provider and overall, failures and items.
    #[oai(path = "/v1/audits/:id", method = "get", operation_id = "get_audit")]
    async fn get(
        &self,
        _auth: ReadKey,
        id: Path<String>,
        /// Include every item with its answer and mentions (default true).
        include_items: Query<Option<bool>>,
    ) -> ApiResult<Json<AuditView>> {
        let loaded = self.load(&id.0).await?;
        Ok(Json(loaded.view(include_items.0.unwrap_or(true))))
    }

    /// Returns the audit as CSV: one row per item (`view=items`, default) or one row per
    /// provider plus `overall` (`view=summary`).
    #[oai(
        path = "/v1/audits/:id/report.csv",
        method = "get",
        operation_id = "get_audit_csv"
    )]
    async fn report_csv(
        &self,
        _auth: ReadKey,
        id: Path<String>,
        /// `items` (default) or `summary`.
        view: Query<Option<CsvView>>,
    ) -> ApiResult<CsvResponse> {
        let render = match view.0.unwrap_or(CsvView::Items) {
            CsvView::Items => items_csv,
            CsvView::Summary => summary_csv,
        };
        let loaded = self.load(&id.0).await?;
        let text = render(&loaded.report())
            .map_err(|error| ApiError::internal(format!("failed to render the csv: {error}")))?;
        Ok(CsvResponse::Csv(PlainText(text)))
    }

    /// Returns the audit as a self-contained HTML page: summary table, chart (inline SVG),
    /// competitors, failures and answers.
    #[oai(
        path = "/v1/audits/:id/report.html",
        method = "get",
        operation_id = "get_audit_html"
    )]
    async fn report_html(&self, _auth: ReadKey, id: Path<String>) -> ApiResult<Html<String>> {
        let loaded = self.load(&id.0).await?;
        Ok(Html(html_page(&loaded.report())))
    }
}
