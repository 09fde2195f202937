use std::sync::Arc;

use bulwark_actors::{ScoringChoice, validate_neutral_threshold};
use bulwark_ml::{SentimentLabel, SentimentScore, Strategy, validate_texts};
use poem_openapi::payload::Json;
use poem_openapi::{Enum, Object, OpenApi};

use crate::ApiTags;
use crate::auth::SubmitKey;
use crate::error::{ApiError, ApiResult};
use crate::state::ApiState;
use crate::strict_json::StrictJson;

/// Texts to score; also the payload of `sentiment.analyze` jobs.
#[derive(Debug, Clone, Object)]
#[oai(deny_unknown_fields)]
pub struct SentimentBody {
    /// One to 1,000 non-blank texts of at most 10,000 characters each.
    #[oai(validator(min_items = 1, max_items = 1000, max_length = 10000, pattern = r"\S"))]
    pub texts: Vec<String>,
    /// `primary` (ONNX, or the lexicon when degraded), `ensemble` or `consensus`; the
    /// configured default when absent.
    pub strategy: Option<StrategyName>,
    /// Confidence in [0, 1] below which a label is reported `neutral`.
    #[oai(validator(minimum(value = "0"), maximum(value = "1")))]
    pub neutral_threshold: Option<f32>,
}

/// How the engines' opinions are combined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "lowercase")]
pub enum StrategyName {
    Primary,
    Ensemble,
    Consensus,
}

impl From<StrategyName> for Strategy {
    fn from(name: StrategyName) -> Self {
        match name {
            StrategyName::Primary => Strategy::Primary,
            StrategyName::Ensemble => Strategy::Ensemble,
            StrategyName::Consensus => Strategy::Consensus,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "lowercase")]
pub enum Label {
    Positive,
    Neutral,
    Negative,
}

impl From<SentimentLabel> for Label {
    fn from(label: SentimentLabel) -> Self {
        match label {
            SentimentLabel::Positive => Label::Positive,
            SentimentLabel::Neutral => Label::Neutral,
            SentimentLabel::Negative => Label::Negative,
        }
    }
}

/// The sentiment of one text.
#[derive(Debug, Clone, Object)]
pub struct SentimentResult {
    pub label: Label,
    /// Signed polarity in [-1, 1].
    pub score: f32,
    /// How sure the engine is of `label`, in [0, 1].
    pub confidence: f32,
    /// The engine that produced the result (`lexicon`, `onnx`...).
    pub engine: String,
    pub model_version: String,
}

impl From<SentimentScore> for SentimentResult {
    fn from(score: SentimentScore) -> Self {
        SentimentResult {
            label: score.label.into(),
            score: score.score,
            confidence: score.confidence,
            engine: score.engine,
            model_version: score.model_version,
        }
    }
}

/// One result per input text, in order.
#[derive(Debug, Clone, Object)]
pub struct SentimentResults {
    pub results: Vec<SentimentResult>,
}

pub struct SentimentApi {
    pub state: Arc<ApiState>,
}

#[OpenApi(tag = "ApiTags::Sentiment")]
impl SentimentApi {
    /// Scores texts now.
    ///
    /// Runs on the sentiment worker pool. When the pool is at capacity the answer is `503`
    /// with code `OVERLOADED` and `Retry-After`, rather than an unbounded wait.
    #[oai(
        path = "/v1/sentiment",
        method = "post",
        operation_id = "analyze_sentiment"
    )]
    async fn analyze(
        &self,
        _auth: SubmitKey,
        body: StrictJson<SentimentBody>,
    ) -> ApiResult<Json<SentimentResults>> {
        let body = body.0;
        validate_texts(&body.texts).map_err(|error| ApiError::invalid(error.to_string()))?;
        let strategy = body.strategy.map(Strategy::from);
        validate_neutral_threshold(body.neutral_threshold).map_err(ApiError::invalid)?;
        let choice = ScoringChoice {
            strategy,
            neutral_threshold: body.neutral_threshold,
        };
        let scores = self.state.sentiment.analyze(body.texts, choice).await?;
        Ok(Json(SentimentResults {
            results: scores.into_iter().map(Into::into).collect(),
        }))
    }
}
