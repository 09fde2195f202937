use bulwark_ml::{SentimentScore, Strategy, validate_texts};
use bulwark_store::Job;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{ErrorCode, JobError, ScoringChoice, SentimentPool};

/// The kinds of job Bulwark runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobKind {
    /// `{ "texts": [...] }`, scored by the sentiment pool.
    SentimentAnalyze,
}

impl JobKind {
    pub const ALL: [JobKind; 1] = [JobKind::SentimentAnalyze];

    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::SentimentAnalyze => "sentiment.analyze",
        }
    }

    /// Returns the kind named `name`, or a validation error listing the known kinds.
    pub fn parse(name: &str) -> Result<JobKind, JobError> {
        JobKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == name)
            .ok_or_else(|| {
                let known: Vec<&str> = JobKind::ALL.iter().map(|kind| kind.as_str()).collect();
                JobError::new(
                    ErrorCode::ValidationFailed,
                    format!(
                        "kind: unknown job kind `{name}`, expected one of: {}",
                        known.join(", ")
                    ),
                )
            })
    }
}

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
    }
    Ok(kind)
}

fn parse_sentiment_payload(payload: &Value) -> Result<SentimentRequest, JobError> {
    let request: SentimentRequest = serde_path_to_error::deserialize(payload).map_err(|error| {
        let path = error.path().to_string();
        let field = if path == "." {
            "payload".to_owned()
        } else {
            format!("payload.{path}")
        };
        JobError::new(
            ErrorCode::ValidationFailed,
            format!("{field}: {}", error.inner()),
        )
    })?;
    validate_texts(&request.texts)
        .map_err(|error| JobError::new(ErrorCode::ValidationFailed, format!("payload.{error}")))?;
    Ok(request)
}

/// Runs one job of any kind to a result.
#[derive(Debug, Clone)]
pub struct JobExecutor {
    pub sentiment: SentimentPool,
}

impl JobExecutor {
    /// Executes the job's payload. Errors say whether a retry can help.
    pub async fn execute(&self, job: &Job) -> Result<Value, JobError> {
        match JobKind::parse(&job.kind)? {
            JobKind::SentimentAnalyze => {
                let request = parse_sentiment_payload(&job.payload)?;
                let choice = request.choice();
                let results = self.sentiment.analyze(request.texts, choice).await?;
                let response = SentimentResponse { results };
                serde_json::to_value(&response).map_err(|error| {
                    JobError::new(
                        ErrorCode::InternalError,
                        format!("failed to encode result: {error}"),
                    )
                })
            }
        }
    }
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
}
