use serde::{Deserialize, Serialize};

/// The largest text, in characters, that any sentiment entry point accepts.
pub const MAX_TEXT_CHARS: usize = 10_000;

/// The most texts one request or job may carry.
pub const MAX_TEXTS_PER_REQUEST: usize = 1_000;

/// The class a model assigns to one text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SentimentLabel {
    Positive,
    Neutral,
    Negative,
}

impl SentimentLabel {
    /// Returns the lowercase name used in APIs, metrics and the eval data format.
    pub fn as_str(self) -> &'static str {
        match self {
            SentimentLabel::Positive => "positive",
            SentimentLabel::Neutral => "neutral",
            SentimentLabel::Negative => "negative",
        }
    }
}

/// What a model says about one text.
///
/// `score` is a signed polarity in `[-1, 1]` (VADER's compound score; `p(pos) - p(neg)` for a
/// classifier), `positive_probability` is in `[0, 1]` and is what ensembles average, and
/// `confidence` in `[0, 1]` is how sure the model is of `label`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SentimentScore {
    pub label: SentimentLabel,
    pub score: f32,
    pub confidence: f32,
    pub positive_probability: f32,
    pub engine: String,
    pub model_version: String,
}

/// Why a model could not score a batch.
#[derive(Debug, Clone, thiserror::Error)]
pub enum InferenceError {
    #[error("inference engine is overloaded")]
    Overloaded,
    #[error("inference thread stopped")]
    EngineStopped,
    #[error("inference failed: {0}")]
    Failed(String),
    #[error("model panicked: {0}")]
    Panicked(String),
}

impl InferenceError {
    /// Returns true when the same input may succeed if tried again later.
    pub fn is_retryable(&self) -> bool {
        match self {
            InferenceError::Overloaded | InferenceError::EngineStopped => true,
            InferenceError::Failed(_) | InferenceError::Panicked(_) => false,
        }
    }
}

/// A synchronous sentiment model. Implementations are CPU-bound and must only be called from a
/// dedicated thread (see [`crate::InferenceThread`]), never from async code.
pub trait SentimentModel: Send {
    /// Returns the engine name reported with every result (`lexicon`, `onnx`, ...).
    fn engine(&self) -> &str;

    /// Returns the model version reported with every result.
    fn version(&self) -> &str;

    /// Scores every text; the output has one entry per input, in order.
    fn predict(&mut self, texts: &[String]) -> Result<Vec<SentimentScore>, InferenceError>;
}

/// Why a list of texts is not acceptable input; `field` names the offending JSON field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct TextsError {
    pub field: String,
    pub message: String,
}

/// Checks the input limits shared by `POST /v1/sentiment` and `sentiment.analyze` jobs.
pub fn validate_texts(texts: &[String]) -> Result<(), TextsError> {
    if texts.is_empty() {
        return Err(TextsError {
            field: "texts".to_owned(),
            message: "must contain at least one text".to_owned(),
        });
    }
    if texts.len() > MAX_TEXTS_PER_REQUEST {
        return Err(TextsError {
            field: "texts".to_owned(),
            message: format!("must contain at most {MAX_TEXTS_PER_REQUEST} texts"),
        });
    }
    for (index, text) in texts.iter().enumerate() {
        let num_chars = text.chars().count();
        if num_chars > MAX_TEXT_CHARS {
            return Err(TextsError {
                field: format!("texts[{index}]"),
                message: format!("is {num_chars} characters long, the limit is {MAX_TEXT_CHARS}"),
            });
        }
        if text.trim().is_empty() {
            return Err(TextsError {
                field: format!("texts[{index}]"),
                message: "must not be blank".to_owned(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves the limits name the offending field and accept texts at the limit.
    #[test]
    fn validate_texts_names_the_offending_field() {
        assert_eq!(validate_texts(&[]).unwrap_err().field, "texts");
        let at_limit = "a".repeat(MAX_TEXT_CHARS);
        assert!(validate_texts(&[at_limit]).is_ok());
        let over_limit = vec!["fine".to_owned(), "é".repeat(MAX_TEXT_CHARS + 1)];
        let error = validate_texts(&over_limit).unwrap_err();
        assert_eq!(error.field, "texts[1]");
        assert!(error.message.contains("10001"), "{}", error.message);
        assert_eq!(
            validate_texts(&["  ".to_owned()]).unwrap_err().field,
            "texts[0]"
        );
        let too_many = vec!["x".to_owned(); MAX_TEXTS_PER_REQUEST + 1];
        assert_eq!(validate_texts(&too_many).unwrap_err().field, "texts");
    }
}
