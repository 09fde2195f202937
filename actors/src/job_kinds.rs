use bulwark_audit::AuditRunner;
use bulwark_audit::request::AuditRequest;
use bulwark_core::{ErrorCode, JobError, JobKind, decode_payload};
use bulwark_ml::{SentimentScore, Strategy, validate_texts};
use bulwark_providers::CompletionRequest;
use bulwark_store::{Job, Store};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::{ProviderRouter, ScoringChoice, SentimentPool};

/// The body of `POST /v1/sentiment` and the payload of `sentiment.analyze` jobs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SentimentRequest {
    pub texts: Vec<String>,
    /// `primary`, `ensemble` or `consensus`; the configured default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<Strategy>,
    /// Confidence in `[0, 1]` below which a label is reported neutral.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub neutral_threshold: Option<f32>,
}

impl SentimentRequest {
    /// Returns the request's scoring choices.
    pub fn choice(&self) -> ScoringChoice {
        ScoringChoice {
            strategy: self.strategy,
            neutral_threshold: self.neutral_threshold,
        }
    }
}

/// Checks that a neutral threshold is a probability.
pub fn validate_neutral_threshold(threshold_opt: Option<f32>) -> Result<(), String> {
    match threshold_opt {
        Some(threshold) if !(0.0..=1.0).contains(&threshold) => Err(format!(
            "neutral_threshold: must be between 0 and 1, got {threshold}"
        )),
        _ => Ok(()),
    }
}

/// The result of scoring a [`SentimentRequest`]: one entry per text, in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SentimentResponse {
    pub results: Vec<SentimentScore>,
}

/// Checks that `payload` is valid for `kind` before anything is stored. Error messages start
/// with the offending field (`payload.texts[3]: ...`).
pub fn validate_job(kind_name: &str, payload: &Value) -> Result<JobKind, JobError> {
    let kind = JobKind::parse(kind_name)?;
    match kind {
        JobKind::SentimentAnalyze => {
            parse_sentiment_payload(payload)?;
        }
        JobKind::ProviderComplete => {
            parse_provider_payload(payload)?;
        }
        JobKind::AuditRun => {
            let request = AuditRequest::from_payload(payload)?;
            request
                .validate(None)
                .map_err(|error| error.into_job_error("payload."))?;
        }
        JobKind::SentimentAggregate => {
            crate::sentiment_aggregate::parse_aggregate_payload(payload)?;
        }
    }
    Ok(kind)
}

/// Longest prompt (and system prompt) a `provider.complete` job accepts, in characters.
pub const MAX_PROMPT_CHARS: usize = 100_000;
/// Longest provider name a `provider.complete` job accepts, in characters.
pub const MAX_PROVIDER_NAME_CHARS: usize = 200;
/// Largest `max_tokens` a `provider.complete` job may ask for.
pub const MAX_COMPLETION_TOKENS: u32 = 32_768;

/// The payload of `provider.complete` jobs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderCompletePayload {
    /// A configured provider name.
    pub provider: String,
    pub prompt: String,
    #[serde(default)]
    pub params: CompletionParams,
}

/// Optional parameters of a `provider.complete` job; unset ones take the provider's defaults.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompletionParams {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
}

impl ProviderCompletePayload {
    /// Returns the completion request this job asks for, tagged with the job's id.
    pub fn to_request(&self, request_id: Option<String>) -> CompletionRequest {
        CompletionRequest {
            prompt: self.prompt.clone(),
            system: self.params.system.clone(),
            max_tokens: self.params.max_tokens,
            temperature: self.params.temperature,
            seed: self.params.seed,
            request_id,
        }
    }
}

fn invalid(message: String) -> JobError {
    JobError::new(ErrorCode::ValidationFailed, message)
}

fn parse_provider_payload(payload: &Value) -> Result<ProviderCompletePayload, JobError> {
    let request: ProviderCompletePayload = decode_payload(payload)?;
    if request.provider.trim().is_empty() {
        return Err(invalid("payload.provider: must not be empty".to_owned()));
    }
    let num_provider_chars = request.provider.chars().count();
    if num_provider_chars > MAX_PROVIDER_NAME_CHARS {
        return Err(invalid(format!(
            "payload.provider: {num_provider_chars} characters, at most \
             {MAX_PROVIDER_NAME_CHARS} allowed"
        )));
    }
    if request.prompt.trim().is_empty() {
        return Err(invalid("payload.prompt: must not be empty".to_owned()));
    }
    let num_chars = request.prompt.chars().count();
    if num_chars > MAX_PROMPT_CHARS {
        return Err(invalid(format!(
            "payload.prompt: {num_chars} characters, at most {MAX_PROMPT_CHARS} allowed"
        )));
    }
    if let Some(system) = &request.params.system {
        let num_system_chars = system.chars().count();
        if num_system_chars > MAX_PROMPT_CHARS {
            return Err(invalid(format!(
                "payload.params.system: {num_system_chars} characters, at most \
                 {MAX_PROMPT_CHARS} allowed"
            )));
        }
    }
    if let Some(max_tokens) = request.params.max_tokens
        && !(1..=MAX_COMPLETION_TOKENS).contains(&max_tokens)
    {
        return Err(invalid(format!(
            "payload.params.max_tokens: must be between 1 and {MAX_COMPLETION_TOKENS}, got \
             {max_tokens}"
        )));
    }
    if let Some(temperature) = request.params.temperature
        && !(0.0..=2.0).contains(&temperature)
    {
        return Err(invalid(format!(
            "payload.params.temperature: must be between 0 and 2, got {temperature}"
        )));
    }
    Ok(request)
}

fn parse_sentiment_payload(payload: &Value) -> Result<SentimentRequest, JobError> {
    let request: SentimentRequest = decode_payload(payload)?;
    validate_texts(&request.texts)
        .map_err(|error| JobError::new(ErrorCode::ValidationFailed, format!("payload.{error}")))?;
    Ok(request)
}

/// Runs one job of any kind to a result. Built with the sentiment pool, then given the other
/// subsystems it can reach: `JobExecutor::new(sentiment).with_providers(router)`.
#[derive(Debug, Clone)]
pub struct JobExecutor {
    sentiment: SentimentPool,
    providers_opt: Option<ProviderRouter>,
    audits_opt: Option<AuditRunner>,
    store_opt: Option<Store>,
}

impl JobExecutor {
    /// Returns an executor that runs sentiment jobs; other kinds fail until their subsystem is
    /// given.
    pub fn new(sentiment: SentimentPool) -> Self {
        JobExecutor {
            sentiment,
            providers_opt: None,
            audits_opt: None,
            store_opt: None,
        }
    }

    /// Lets the executor read other jobs: a `sentiment.aggregate` job reads its parents.
    pub fn with_store(mut self, store: Store) -> Self {
        self.store_opt = Some(store);
        self
    }

    /// Lets the executor run `provider.complete` jobs through `router`.
    pub fn with_providers(mut self, router: ProviderRouter) -> Self {
        self.providers_opt = Some(router);
        self
    }

    /// Lets the executor run `audit.run` jobs with `runner`.
    pub fn with_audits(mut self, runner: AuditRunner) -> Self {
        self.audits_opt = Some(runner);
        self
    }

    pub fn sentiment(&self) -> &SentimentPool {
        &self.sentiment
    }

    pub fn providers(&self) -> Option<&ProviderRouter> {
        self.providers_opt.as_ref()
    }

    /// Executes the job's payload. Errors say whether a retry can help.
    /// Runs the job's code. `cancel` fires when the job's cancel reaches this node: code that
    /// can stop cleanly (an audit between items) watches it; the rest is aborted after the
    /// grace by the attempt core.
    pub async fn execute(&self, job: &Job, cancel: &CancellationToken) -> Result<Value, JobError> {
        let caller = crate::CallerIds {
            request_id: job.request_id.clone(),
            trace_id: job.trace_id.clone(),
            span_trace_opt: None,
        };
        crate::with_caller(caller, self.execute_kind(job, cancel)).await
    }

    async fn execute_kind(&self, job: &Job, cancel: &CancellationToken) -> Result<Value, JobError> {
        match JobKind::parse(&job.kind)? {
            JobKind::AuditRun => {
                let Some(runner) = &self.audits_opt else {
                    return Err(invalid(
                        "kind: audits are not enabled on this node (no providers configured)"
                            .to_owned(),
                    ));
                };
                let outcome = runner
                    .run_until_cancelled(&job.id, &job.payload, cancel)
                    .await?;
                encode_result(&outcome)
            }
            JobKind::ProviderComplete => {
                let payload = parse_provider_payload(&job.payload)?;
                let Some(router) = &self.providers_opt else {
                    return Err(invalid(
                        "payload.provider: no providers are configured on this node".to_owned(),
                    ));
                };
                if !router.contains(&payload.provider) {
                    return Err(invalid(format!(
                        "payload.provider: unknown provider `{}`, configured: {}",
                        payload.provider,
                        router.provider_names().join(", ")
                    )));
                }
                let request = payload.to_request(Some(job.id.clone()));
                let completion = router.complete(&payload.provider, request).await?;
                encode_result(&completion)
            }
            JobKind::SentimentAnalyze => {
                let request = parse_sentiment_payload(&job.payload)?;
                let choice = request.choice();
                let results = self.sentiment.analyze(request.texts, choice).await?;
                let response = SentimentResponse { results };
                encode_result(&response)
            }
            JobKind::SentimentAggregate => {
                crate::sentiment_aggregate::parse_aggregate_payload(&job.payload)?;
                let Some(store) = &self.store_opt else {
                    return Err(JobError::new(
                        ErrorCode::InternalError,
                        "this node's executor cannot read jobs".to_owned(),
                    ));
                };
                let parents = store.parent_jobs(&job.id).await.map_err(|error| {
                    JobError::new(
                        ErrorCode::ServiceUnavailable,
                        format!("failed to read the job's parents: {error}"),
                    )
                })?;
                encode_result(&crate::sentiment_aggregate::aggregate(&parents))
            }
        }
    }
}

fn encode_result(result: &impl Serialize) -> Result<Value, JobError> {
    serde_json::to_value(result).map_err(|error| {
        JobError::new(
            ErrorCode::InternalError,
            format!("failed to encode result: {error}"),
        )
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// Proves unknown kinds and bad payloads are rejected with the field named.
    #[test]
    fn validation_names_fields() {
        assert_eq!(
            validate_job("sentiment.analyze", &json!({"texts": ["hi"]})).unwrap(),
            JobKind::SentimentAnalyze
        );
        let unknown = validate_job("video.render", &json!({})).unwrap_err();
        assert_eq!(unknown.code, ErrorCode::ValidationFailed);
        assert!(unknown.message.starts_with("kind:"), "{}", unknown.message);
        let cases = [
            (json!({"texts": []}), "payload.texts:"),
            (
                json!({"texts": ["ok", "x".repeat(10_001)]}),
                "payload.texts[1]:",
            ),
            (json!({"texts": [1]}), "payload.texts[0]:"),
            (json!({"texts": [true]}), "payload.texts[0]:"),
            (
                json!({"texts": ["a"], "neutral_threshold": "0.5"}),
                "payload.neutral_threshold:",
            ),
            (json!({"texts": ["a"], "strategy": 1}), "payload.strategy:"),
            (json!({"text": ["a"]}), "payload.text:"),
            (json!("nope"), "payload:"),
        ];
        for (payload, prefix) in cases {
            let error = validate_job("sentiment.analyze", &payload).unwrap_err();
            assert!(
                error.message.starts_with(prefix),
                "{payload}: {}",
                error.message
            );
            assert!(!error.is_retryable());
        }
    }

    /// Proves `provider.complete` payloads are checked field by field before anything runs.
    #[test]
    fn provider_payload_validation_names_fields() {
        let valid = json!({"provider": "sim", "prompt": "best tools?", "params": {"seed": 7}});
        assert_eq!(
            validate_job("provider.complete", &valid).unwrap(),
            JobKind::ProviderComplete
        );
        let cases = [
            (json!({"prompt": "hi"}), "payload:"),
            (json!({"provider": "", "prompt": "hi"}), "payload.provider:"),
            (json!({"provider": "sim", "prompt": " "}), "payload.prompt:"),
            (json!({"provider": "sim", "prompt": 3}), "payload.prompt:"),
            (
                json!({"provider": "sim", "prompt": "x".repeat(MAX_PROMPT_CHARS + 1)}),
                "payload.prompt:",
            ),
            (
                json!({"provider": "sim", "prompt": "hi", "params": {"temperature": 9.0}}),
                "payload.params.temperature:",
            ),
            (
                json!({"provider": "sim", "prompt": "hi", "params": {"max_tokens": 0}}),
                "payload.params.max_tokens:",
            ),
            (
                json!({"provider": "sim", "prompt": "hi", "params": {"max_tokens": 32_769}}),
                "payload.params.max_tokens:",
            ),
            (
                json!({"provider": "sim", "prompt": "hi", "params": {"max_tokens": "5"}}),
                "payload.params.max_tokens:",
            ),
            (
                json!({"provider": "sim", "prompt": "hi", "params": {"max_tokens": 5.5}}),
                "payload.params.max_tokens:",
            ),
            (
                json!({"provider": "sim", "prompt": "hi", "params": {"seed": true}}),
                "payload.params.seed:",
            ),
            (
                json!({"provider": "x".repeat(MAX_PROVIDER_NAME_CHARS + 1), "prompt": "hi"}),
                "payload.provider:",
            ),
            (
                json!({"provider": "sim", "prompt": "hi",
                    "params": {"system": "x".repeat(MAX_PROMPT_CHARS + 1)}}),
                "payload.params.system:",
            ),
            (
                json!({"provider": "sim", "prompt": "hi", "params": {"top_k": 3}}),
                "payload.params.top_k:",
            ),
        ];
        for (payload, prefix) in cases {
            let error = validate_job("provider.complete", &payload).unwrap_err();
            assert!(
                error.message.starts_with(prefix),
                "{payload}: {}",
                error.message
            );
            assert_eq!(error.code, ErrorCode::ValidationFailed);
        }
    }
}
