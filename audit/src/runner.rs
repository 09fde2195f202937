//! Runs one AI-visibility audit: asks every prompt of every provider `samples_per_prompt`
//! times through the provider actors, with at most `concurrency` calls in flight, analyzes each
//! answer, scores the tone of the sentences naming the brand on the sentiment pool, stores
//! every item as it finishes, and ends with the summary.
//!
//! Items are written one by one, keyed by their index, so an `audit.run` job that runs again
//! after a crash redoes only the items it has no answer for, and never counts one twice.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bulwark_core::{ErrorCode, JobError, now_ms};
use bulwark_providers::{Completion, CompletionRequest};
use bulwark_store::{
    Audit, AuditFinish, AuditItem, AuditItemStatus, AuditMention, AuditStatus, JobProgress,
    NewAudit, Store, StoreError,
};
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::analysis::{AnswerFacts, AuditSummary, MentionFacts, MentionMatcher, summarize};
use crate::metrics::{AuditFinished, AuditItemRecorded};
use crate::ports::{AnswerError, AnswerSource, ScoringError, TextScorer};
use crate::request::{AuditItemPlan, AuditRequest};

/// How often a sentiment call refused for capacity is tried before the attempt gives up.
const SENTIMENT_ATTEMPTS: u32 = 5;
const SENTIMENT_RETRY_DELAY: Duration = Duration::from_millis(200);

/// What an [`AuditRunner`] is built with.
#[derive(Debug, Clone)]
pub struct AuditRunnerParams {
    pub store: Store,
    /// Where prompts are asked: the configured providers, by name.
    pub providers: Arc<dyn AnswerSource>,
    /// Scores the tone of the sentences naming the brand.
    pub sentiment: Arc<dyn TextScorer>,
    /// Provider calls one audit has in flight at most.
    pub concurrency: usize,
}

/// What an `audit.run` job returns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditOutcome {
    pub audit_id: String,
    pub status: AuditStatus,
    pub num_items: usize,
    pub num_failed: usize,
    pub summary: AuditSummary,
}

/// Runs audits. Cheap to clone; the job executor holds one.
#[derive(Debug, Clone)]
pub struct AuditRunner {
    params: Arc<AuditRunnerParams>,
}

fn store_error(error: &StoreError) -> JobError {
    let code = if error.is_retryable() {
        ErrorCode::ServiceUnavailable
    } else {
        ErrorCode::InternalError
    };
    JobError::new(code, format!("audit store: {error}"))
}

/// The numbers the summary needs, read back from stored items and mentions.
pub fn answer_facts(items: &[AuditItem], mentions: &[AuditMention]) -> Vec<AnswerFacts> {
    items
        .iter()
        .filter(|item| item.status == AuditItemStatus::Answered)
        .map(|item| AnswerFacts {
            provider: item.provider.clone(),
            first_mention_rank: item
                .first_mention_rank
                .and_then(|rank| u32::try_from(rank).ok()),
            mentions: mentions
                .iter()
                .filter(|mention| mention.item_index == item.item_index)
                .map(|mention| MentionFacts {
                    entity: mention.entity.clone(),
                    is_brand: mention.is_brand,
                    sentiment: mention.sentiment.map(|score| score as f32),
                })
                .collect(),
        })
        .collect()
}

/// Returns the audit's summary computed from what is stored.
pub fn summary_from_rows(
    request: &AuditRequest,
    items: &[AuditItem],
    mentions: &[AuditMention],
) -> AuditSummary {
    let failed_providers: Vec<String> = items
        .iter()
        .filter(|item| item.status == AuditItemStatus::Failed)
        .map(|item| item.provider.clone())
        .collect();
    summarize(
        &request.subject(),
        &request.providers,
        &answer_facts(items, mentions),
        &failed_providers,
    )
}

impl AuditRunner {
    pub fn new(params: AuditRunnerParams) -> Self {
        AuditRunner {
            params: Arc::new(params),
        }
    }

    /// Returns the configured provider names, for validating requests.
    pub fn provider_names(&self) -> Vec<String> {
        self.params.providers.provider_names()
    }

    /// Runs the audit stored (or to be stored) under `audit_id` to its end. Provider failures
    /// become failed items; an `Err` means the attempt could not finish (store down,
    /// sentiment pool unavailable, invalid request) and says whether a retry can help.
    pub async fn run(&self, audit_id: &str, payload: &Value) -> Result<AuditOutcome, JobError> {
        self.run_until_cancelled(audit_id, payload, &CancellationToken::new())
            .await
    }

    /// Runs the audit as [`AuditRunner::run`] does until `cancel` fires: then no item is
    /// started any more, the items in flight finish and are stored, and the audit ends
    /// `failed` with `CANCELLED` and the summary of what was done; the job gets the error.
    pub async fn run_until_cancelled(
        &self,
        audit_id: &str,
        payload: &Value,
        cancel: &CancellationToken,
    ) -> Result<AuditOutcome, JobError> {
        let request = AuditRequest::from_payload(payload)?;
        let store = &self.params.store;
        let new_audit = NewAudit {
            id: audit_id.to_owned(),
            request: payload.clone(),
            num_items: u32::try_from(request.num_items()).unwrap_or(u32::MAX),
        };
        let audit = store
            .create_audit(&new_audit)
            .await
            .map_err(|error| store_error(&error))?;
        if audit.status.is_terminal() {
            return self.outcome_of(&audit, &request).await;
        }
        let known = self.params.providers.provider_names();
        if let Err(field_error) = request.validate(Some(&known)) {
            let error = field_error.into_job_error("payload.");
            let finish = AuditFinish {
                status: AuditStatus::Failed,
                summary: serde_json::to_value(summary_from_rows(&request, &[], &[]))
                    .unwrap_or_default(),
                error_opt: Some((error.code.as_str().to_owned(), error.message.clone())),
            };
            store
                .finish_audit(audit_id, &finish)
                .await
                .map_err(|error| store_error(&error))?;
            return Err(error);
        }
        store
            .start_audit(audit_id)
            .await
            .map_err(|error| store_error(&error))?;

        let done = store
            .list_audit_items(audit_id)
            .await
            .map_err(|error| store_error(&error))?;
        let pending: Vec<AuditItemPlan> = request
            .plan()
            .into_iter()
            .filter(|plan| {
                !done.iter().any(|item| {
                    item.item_index == plan.item_index as i64
                        && item.status == AuditItemStatus::Answered
                })
            })
            .collect();
        info!(
            audit_id,
            num_items = request.num_items(),
            num_pending = pending.len(),
            "audit running"
        );
        let matcher = MentionMatcher::new(&request.subject());
        let context = ItemContext {
            audit_id,
            request: &request,
            matcher: &matcher,
        };
        let num_pending = pending.len();
        let num_items = request.num_items() as u64;
        let num_done = AtomicU64::new((request.num_items() - num_pending) as u64);
        futures::stream::iter(pending.into_iter().map(Ok))
            .take_until(cancel.cancelled())
            .try_for_each_concurrent(self.params.concurrency.max(1), |plan| {
                let context = &context;
                let num_done = &num_done;
                async move {
                    self.run_item(context, plan).await?;
                    let done = num_done.fetch_add(1, Ordering::SeqCst) + 1;
                    self.report_progress(audit_id, done, num_items).await;
                    Ok(())
                }
            })
            .await?;

        let audit = store
            .get_audit(audit_id)
            .await
            .map_err(|error| store_error(&error))?
            .ok_or_else(|| JobError::new(ErrorCode::InternalError, "audit row vanished"))?;
        let items = store
            .list_audit_items(audit_id)
            .await
            .map_err(|error| store_error(&error))?;
        let mentions = store
            .list_audit_mentions(audit_id)
            .await
            .map_err(|error| store_error(&error))?;
        let summary = summary_from_rows(&request, &items, &mentions);
        let failed: Vec<&AuditItem> = items
            .iter()
            .filter(|item| item.status == AuditItemStatus::Failed)
            .collect();
        let cancelled_opt = cancel.is_cancelled().then(|| {
            let message = format!(
                "audit cancelled with {} of {} items done ({num_pending} were left to do)",
                items.len(),
                request.num_items()
            );
            JobError::new(ErrorCode::Cancelled, message)
        });
        let (status, error_opt) = if let Some(error) = &cancelled_opt {
            (
                AuditStatus::Failed,
                Some((error.code.as_str().to_owned(), error.message.clone())),
            )
        } else if failed.is_empty() {
            (AuditStatus::Succeeded, None)
        } else if failed.len() < items.len() {
            (AuditStatus::Partial, None)
        } else {
            let code = failed[0].error_code.clone().unwrap_or_default();
            let message = format!("all {} items failed; the first with {code}", items.len());
            (AuditStatus::Failed, Some((code, message)))
        };
        let finish = AuditFinish {
            status,
            summary: serde_json::to_value(&summary).map_err(|error| {
                JobError::new(ErrorCode::InternalError, format!("summary: {error}"))
            })?,
            error_opt,
        };
        store
            .finish_audit(&audit.id, &finish)
            .await
            .map_err(|error| store_error(&error))?;
        AuditFinished {
            audit_id,
            status: status.as_str(),
            num_items: items.len(),
            num_failed: failed.len(),
        }
        .emit();
        if let Some(error) = cancelled_opt {
            return Err(error);
        }
        Ok(AuditOutcome {
            audit_id: audit.id,
            status,
            num_items: items.len(),
            num_failed: failed.len(),
            summary,
        })
    }

    /// Reports the audit's job progress: `done` of `num_items` items. A failed write is only
    /// logged: progress is for people watching, the items themselves are stored.
    async fn report_progress(&self, audit_id: &str, done: u64, num_items: u64) {
        let progress = JobProgress {
            done,
            total: Some(num_items),
            message: Some(format!("{done} of {num_items} items done")),
            updated_at_ms: now_ms(),
        };
        if let Err(error) = self
            .params
            .store
            .report_job_progress(audit_id, &progress)
            .await
        {
            warn!(%error, audit_id, "failed to report the audit's progress");
        }
    }

    /// Returns the outcome of an audit that already finished (a job run again after it did).
    async fn outcome_of(
        &self,
        audit: &Audit,
        request: &AuditRequest,
    ) -> Result<AuditOutcome, JobError> {
        let store = &self.params.store;
        let items = store
            .list_audit_items(&audit.id)
            .await
            .map_err(|error| store_error(&error))?;
        let mentions = store
            .list_audit_mentions(&audit.id)
            .await
            .map_err(|error| store_error(&error))?;
        let num_failed = items
            .iter()
            .filter(|item| item.status == AuditItemStatus::Failed)
            .count();
        Ok(AuditOutcome {
            audit_id: audit.id.clone(),
            status: audit.status,
            num_items: items.len(),
            num_failed,
            summary: summary_from_rows(request, &items, &mentions),
        })
    }

    /// Asks one item, analyzes and scores the answer, and stores it (or its failure).
    async fn run_item(
        &self,
        context: &ItemContext<'_>,
        plan: AuditItemPlan,
    ) -> Result<(), JobError> {
        let provider = &context.request.providers[plan.provider_index];
        let completion_request = CompletionRequest {
            prompt: context.request.prompts[plan.prompt_index].clone(),
            seed: Some(u64::from(plan.sample)),
            request_id: Some(format!("{}/{}", context.audit_id, plan.item_index)),
            ..CompletionRequest::default()
        };
        let base = AuditItem {
            item_index: plan.item_index as i64,
            prompt_index: plan.prompt_index as i64,
            provider: provider.clone(),
            sample: i64::from(plan.sample),
            status: AuditItemStatus::Failed,
            answer: None,
            answered_by: None,
            model: None,
            latency_ms: None,
            input_tokens: None,
            output_tokens: None,
            brand_mentioned: false,
            is_list: false,
            first_mention_char: None,
            first_mention_rank: None,
            list_rank: None,
            brand_sentiment: None,
            error_code: None,
            error_message: None,
            recorded_at_ms: now_ms(),
        };
        let (item, mentions) = match self
            .params
            .providers
            .complete(provider, completion_request)
            .await
        {
            Ok(completion) => self.answered_item(context, base, completion).await?,
            Err(error) => (failed_item(base, &error), Vec::new()),
        };
        self.params
            .store
            .record_audit_item(context.audit_id, &item, &mentions)
            .await
            .map_err(|error| store_error(&error))?;
        AuditItemRecorded {
            provider,
            code_opt: item.error_code.as_deref(),
        }
        .emit();
        Ok(())
    }

    async fn answered_item(
        &self,
        context: &ItemContext<'_>,
        base: AuditItem,
        completion: Completion,
    ) -> Result<(AuditItem, Vec<AuditMention>), JobError> {
        let analysis = context.matcher.analyze(&completion.text);
        let sentence_indices = analysis.brand_sentence_indices();
        let scores = if sentence_indices.is_empty() {
            Vec::new()
        } else {
            self.score(analysis.brand_sentences()).await?
        };
        let score_of = |sentence_index: usize| {
            sentence_indices
                .iter()
                .position(|index| *index == sentence_index)
                .and_then(|position| scores.get(position))
        };
        let mentions: Vec<AuditMention> = analysis
            .mentions
            .iter()
            .enumerate()
            .map(|(mention_index, mention)| {
                let score_opt = mention
                    .is_brand
                    .then(|| score_of(mention.sentence_index))
                    .flatten();
                AuditMention {
                    item_index: base.item_index,
                    mention_index: mention_index as i64,
                    entity: mention.entity.clone(),
                    is_brand: mention.is_brand,
                    matched_text: mention.matched_text.clone(),
                    char_offset: mention.char_offset as i64,
                    sentence_index: mention.sentence_index as i64,
                    list_rank: mention.list_rank.map(i64::from),
                    sentence: analysis.sentences[mention.sentence_index].clone(),
                    sentiment: score_opt.map(|score| f64::from(score.score)),
                    sentiment_label: score_opt.map(|score| score.label.as_str().to_owned()),
                }
            })
            .collect();
        let brand_sentiment = (!scores.is_empty()).then(|| {
            scores
                .iter()
                .map(|score| f64::from(score.score))
                .sum::<f64>()
                / scores.len() as f64
        });
        let item = AuditItem {
            status: AuditItemStatus::Answered,
            answered_by: Some(completion.provider.clone()),
            model: Some(completion.model.clone()),
            latency_ms: Some(completion.latency.as_secs_f64() * 1_000.0),
            input_tokens: Some(i64::from(completion.usage.input_tokens)),
            output_tokens: Some(i64::from(completion.usage.output_tokens)),
            brand_mentioned: analysis.mentions_brand(),
            is_list: analysis.is_list,
            first_mention_char: analysis.brand_first_char.map(|offset| offset as i64),
            first_mention_rank: analysis.brand_first_mention_rank().map(i64::from),
            list_rank: analysis.brand_list_rank.map(i64::from),
            brand_sentiment,
            answer: Some(completion.text),
            recorded_at_ms: now_ms(),
            ..base
        };
        Ok((item, mentions))
    }

    /// Scores sentences, waiting briefly while the pool is at capacity.
    async fn score(
        &self,
        sentences: Vec<String>,
    ) -> Result<Vec<bulwark_ml::SentimentScore>, JobError> {
        let mut attempt = 1;
        loop {
            match self.params.sentiment.score(sentences.clone()).await {
                Ok(scores) => return Ok(scores),
                Err(error @ ScoringError::AtCapacity(_)) if attempt < SENTIMENT_ATTEMPTS => {
                    warn!(%error, attempt, "sentiment pool full, retrying audit scoring");
                    tokio::time::sleep(SENTIMENT_RETRY_DELAY * attempt).await;
                    attempt += 1;
                }
                Err(ScoringError::AtCapacity(job_error) | ScoringError::Failed(job_error)) => {
                    return Err(job_error);
                }
            }
        }
    }
}

/// What every item of one audit run shares.
struct ItemContext<'a> {
    audit_id: &'a str,
    request: &'a AuditRequest,
    matcher: &'a MentionMatcher,
}

fn failed_item(base: AuditItem, error: &AnswerError) -> AuditItem {
    AuditItem {
        status: AuditItemStatus::Failed,
        error_code: Some(error.code.clone()),
        error_message: Some(error.message.clone()),
        ..base
    }
}
