use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::{ErrorCode, JobError};

/// Decodes a job payload into its kind's request type; a payload of the wrong shape is a
/// validation error naming the offending field under `payload.` (e.g. `payload.texts[2]: …`).
pub fn decode_payload<T: DeserializeOwned>(payload: &Value) -> Result<T, JobError> {
    serde_path_to_error::deserialize(payload).map_err(|error| {
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
    })
}

/// The kinds of job Bulwark runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobKind {
    /// `{ "texts": [...] }`, scored by the sentiment pool.
    SentimentAnalyze,
    /// `{ "provider", "prompt", "params"? }`, one completion through the provider path.
    ProviderComplete,
    /// An AI-visibility audit (`AuditRequest`), run by the `AuditRunner`.
    AuditRun,
    /// `{}`: the sentiment of its parents (`depends_on`), `sentiment.analyze` jobs, summed
    /// up: the fan-in of a workflow.
    SentimentAggregate,
}

impl JobKind {
    pub const ALL: [JobKind; 4] = [
        JobKind::SentimentAnalyze,
        JobKind::ProviderComplete,
        JobKind::AuditRun,
        JobKind::SentimentAggregate,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::SentimentAnalyze => "sentiment.analyze",
            JobKind::ProviderComplete => "provider.complete",
            JobKind::AuditRun => "audit.run",
            JobKind::SentimentAggregate => "sentiment.aggregate",
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

#[cfg(test)]
mod tests {
    use serde::Deserialize;
    use serde_json::json;

    use super::*;

    #[derive(Debug, Deserialize)]
    struct Texts {
        texts: Vec<String>,
    }

    /// Proves a payload of the wrong shape is a validation error naming the offending field,
    /// and a payload that is not an object names `payload` itself.
    #[test]
    fn decode_payload_names_the_field() {
        assert_eq!(
            decode_payload::<Texts>(&json!({"texts": ["a"]}))
                .unwrap()
                .texts,
            vec!["a".to_owned()]
        );
        let error = decode_payload::<Texts>(&json!({"texts": ["a", 2]})).unwrap_err();
        assert_eq!(error.code, ErrorCode::ValidationFailed);
        assert!(
            error.message.starts_with("payload.texts[1]: "),
            "{}",
            error.message
        );
        let error = decode_payload::<Texts>(&json!("text")).unwrap_err();
        assert!(error.message.starts_with("payload: "), "{}", error.message);
    }
}
