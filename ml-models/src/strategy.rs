use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::{InferenceError, SentimentLabel, SentimentModel, SentimentScore};

/// How the engines' opinions become one result.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// The primary engine (ONNX), or the lexicon when the primary is not loaded.
    #[default]
    Primary,
    /// A weighted average of the engines' positive-probabilities.
    Ensemble,
    /// The engines must agree; otherwise the text is neutral with low confidence.
    Consensus,
}

impl Strategy {
    pub const ALL: [Strategy; 3] = [Strategy::Primary, Strategy::Ensemble, Strategy::Consensus];

    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Primary => "primary",
            Strategy::Ensemble => "ensemble",
            Strategy::Consensus => "consensus",
        }
    }
}

impl FromStr for Strategy {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Strategy::ALL
            .into_iter()
            .find(|strategy| strategy.as_str() == text)
            .ok_or_else(|| {
                format!("unknown strategy `{text}`, expected primary, ensemble or consensus")
            })
    }
}

/// How one text is to be scored: the strategy, and the confidence below which the label is
/// reported as neutral (0 disables the band).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScoringOptions {
    pub strategy: Strategy,
    pub neutral_threshold: f32,
    /// Weight of the primary engine in an ensemble, in `[0, 1]`; the lexicon gets the rest.
    pub primary_weight: f32,
}

impl Default for ScoringOptions {
    fn default() -> Self {
        ScoringOptions {
            strategy: Strategy::Primary,
            neutral_threshold: 0.0,
            primary_weight: 0.7,
        }
    }
}

/// The engines an inference thread holds: the primary (ONNX) when it loaded, and the lexicon,
/// which always works. Texts in one batch may ask for different strategies.
pub struct EngineSet {
    primary_opt: Option<Box<dyn SentimentModel>>,
    fallback: Box<dyn SentimentModel>,
}

impl std::fmt::Debug for EngineSet {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("EngineSet")
            .field("engines", &self.describe())
            .finish()
    }
}

impl EngineSet {
    /// `primary_opt` is `None` when the primary engine could not be loaded (degraded).
    pub fn new(
        primary_opt: Option<Box<dyn SentimentModel>>,
        fallback: Box<dyn SentimentModel>,
    ) -> Self {
        EngineSet {
            primary_opt,
            fallback,
        }
    }

    /// Returns the engines held, e.g. `onnx+lexicon` or `lexicon`.
    pub fn describe(&self) -> String {
        match &self.primary_opt {
            Some(primary) => format!("{}+{}", primary.engine(), self.fallback.engine()),
            None => self.fallback.engine().to_owned(),
        }
    }

    /// Returns true when the primary engine is missing.
    pub fn is_degraded(&self) -> bool {
        self.primary_opt.is_none()
    }

    /// Scores each text with its own options; one result per text, in order.
    pub fn score(
        &mut self,
        texts: &[String],
        options: &[ScoringOptions],
    ) -> Result<Vec<SentimentScore>, InferenceError> {
        let has_primary = self.primary_opt.is_some();
        let uses_primary: Vec<bool> = options.iter().map(|_| has_primary).collect();
        let uses_fallback: Vec<bool> = options
            .iter()
            .map(|option| !has_primary || option.strategy != Strategy::Primary)
            .collect();
        let primary_scores = match &mut self.primary_opt {
            Some(primary) => run_subset(primary.as_mut(), texts, &uses_primary)?,
            None => vec![None; texts.len()],
        };
        let fallback_scores = run_subset(self.fallback.as_mut(), texts, &uses_fallback)?;
        let mut results = Vec::with_capacity(texts.len());
        for ((option, primary_opt), fallback_opt) in
            options.iter().zip(primary_scores).zip(fallback_scores)
        {
            let combined = match (primary_opt, fallback_opt) {
                (Some(primary), Some(fallback)) => combine(option, &primary, &fallback),
                (Some(single), None) | (None, Some(single)) => single,
                (None, None) => {
                    return Err(InferenceError::Failed("no engine scored a text".to_owned()));
                }
            };
            results.push(apply_neutral_band(combined, option.neutral_threshold));
        }
        Ok(results)
    }
}

/// An [`EngineSet`] with fixed options, usable wherever one [`SentimentModel`] is expected
/// (evaluation of a strategy, for instance).
#[derive(Debug)]
pub struct StrategyModel {
    engines: EngineSet,
    options: ScoringOptions,
    name: String,
}

impl StrategyModel {
    pub fn new(engines: EngineSet, options: ScoringOptions) -> Self {
        let name = format!("{}({})", options.strategy.as_str(), engines.describe());
        StrategyModel {
            engines,
            options,
            name,
        }
    }
}

impl SentimentModel for StrategyModel {
    fn engine(&self) -> &str {
        &self.name
    }

    fn version(&self) -> &str {
        self.options.strategy.as_str()
    }

    fn predict(&mut self, texts: &[String]) -> Result<Vec<SentimentScore>, InferenceError> {
        let options = vec![self.options; texts.len()];
        self.engines.score(texts, &options)
    }
}

/// Runs `model` on the texts whose flag is set; `None` for the others.
fn run_subset(
    model: &mut dyn SentimentModel,
    texts: &[String],
    selected: &[bool],
) -> Result<Vec<Option<SentimentScore>>, InferenceError> {
    let subset: Vec<String> = texts
        .iter()
        .zip(selected)
        .filter(|(_, keep)| **keep)
        .map(|(text, _)| text.clone())
        .collect();
    let mut scores = if subset.is_empty() {
        Vec::new()
    } else {
        model.predict(&subset)?
    }
    .into_iter();
    Ok(selected
        .iter()
        .map(|keep| if *keep { scores.next() } else { None })
        .collect())
}

fn combine(
    option: &ScoringOptions,
    primary: &SentimentScore,
    fallback: &SentimentScore,
) -> SentimentScore {
    let engine = format!(
        "{}({},{})",
        option.strategy.as_str(),
        primary.engine,
        fallback.engine
    );
    let model_version = format!("{};{}", primary.model_version, fallback.model_version);
    match option.strategy {
        // Primary with both engines loaded never asks the fallback.
        Strategy::Primary => primary.clone(),
        Strategy::Ensemble => {
            let weight = option.primary_weight.clamp(0.0, 1.0);
            let probability = weight * primary.positive_probability
                + (1.0 - weight) * fallback.positive_probability;
            let label = if probability >= 0.5 {
                SentimentLabel::Positive
            } else {
                SentimentLabel::Negative
            };
            SentimentScore {
                label,
                score: 2.0 * probability - 1.0,
                confidence: probability.max(1.0 - probability),
                positive_probability: probability,
                engine,
                model_version,
            }
        }
        Strategy::Consensus => {
            let probability = (primary.positive_probability + fallback.positive_probability) / 2.0;
            let (label, confidence) = if primary.label == fallback.label {
                (primary.label, primary.confidence.min(fallback.confidence))
            } else {
                // Disagreement: neutral, and the more sure the engines were, the less we are.
                (
                    SentimentLabel::Neutral,
                    1.0 - primary.confidence.max(fallback.confidence),
                )
            };
            SentimentScore {
                label,
                score: 2.0 * probability - 1.0,
                confidence,
                positive_probability: probability,
                engine,
                model_version,
            }
        }
    }
}

/// Reports a non-neutral label whose confidence is under the threshold as neutral.
fn apply_neutral_band(mut score: SentimentScore, neutral_threshold: f32) -> SentimentScore {
    if score.label != SentimentLabel::Neutral && score.confidence < neutral_threshold {
        score.label = SentimentLabel::Neutral;
    }
    score
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A model that answers a fixed positive-probability for every text.
    struct FixedModel {
        engine: &'static str,
        probability: f32,
        label: SentimentLabel,
        calls: usize,
    }

    impl SentimentModel for FixedModel {
        fn engine(&self) -> &str {
            self.engine
        }

        fn version(&self) -> &str {
            "1"
        }

        fn predict(&mut self, texts: &[String]) -> Result<Vec<SentimentScore>, InferenceError> {
            self.calls += 1;
            let probability = self.probability;
            Ok(texts
                .iter()
                .map(|_| SentimentScore {
                    label: self.label,
                    score: 2.0 * probability - 1.0,
                    confidence: probability.max(1.0 - probability),
                    positive_probability: probability,
                    engine: self.engine.to_owned(),
                    model_version: "1".to_owned(),
                })
                .collect())
        }
    }

    fn engines(primary_probability: Option<f32>, fallback_label: SentimentLabel) -> EngineSet {
        let primary = primary_probability.map(|probability| {
            let label = if probability >= 0.5 {
                SentimentLabel::Positive
            } else {
                SentimentLabel::Negative
            };
            Box::new(FixedModel {
                engine: "onnx",
                probability,
                label,
                calls: 0,
            }) as Box<dyn SentimentModel>
        });
        let fallback_probability = if fallback_label == SentimentLabel::Positive {
            0.8
        } else {
            0.3
        };
        let fallback = FixedModel {
            engine: "lexicon",
            probability: fallback_probability,
            label: fallback_label,
            calls: 0,
        };
        EngineSet::new(primary, Box::new(fallback))
    }

    fn options(strategy: Strategy) -> ScoringOptions {
        ScoringOptions {
            strategy,
            ..ScoringOptions::default()
        }
    }

    fn texts(count: usize) -> Vec<String> {
        (0..count).map(|index| format!("text {index}")).collect()
    }

    /// Proves primary uses the primary engine, and falls back to the lexicon when degraded.
    #[test]
    fn primary_uses_onnx_or_falls_back() {
        let mut full = engines(Some(0.9), SentimentLabel::Negative);
        let scores = full
            .score(&texts(2), &[options(Strategy::Primary); 2])
            .unwrap();
        assert!(
            scores
                .iter()
                .all(|score| score.engine == "onnx" && score.label == SentimentLabel::Positive)
        );
        let mut degraded = engines(None, SentimentLabel::Negative);
        assert!(degraded.is_degraded());
        let scores = degraded
            .score(&texts(1), &[options(Strategy::Primary)])
            .unwrap();
        assert_eq!(scores[0].engine, "lexicon");
    }

    /// Proves the ensemble averages positive-probabilities with the configured weight.
    #[test]
    fn ensemble_weights_probabilities() {
        let mut set = engines(Some(0.9), SentimentLabel::Negative);
        let score = set
            .score(&texts(1), &[options(Strategy::Ensemble)])
            .unwrap()
            .remove(0);
        let expected = 0.7 * 0.9 + 0.3 * 0.3;
        assert!((score.positive_probability - expected).abs() < 1e-6);
        assert_eq!(score.label, SentimentLabel::Positive);
        assert_eq!(score.engine, "ensemble(onnx,lexicon)");
        assert_eq!(score.model_version, "1;1");
    }

    /// Proves consensus keeps an agreed label and turns disagreement into a low-confidence
    /// neutral.
    #[test]
    fn consensus_needs_agreement() {
        let mut agree = engines(Some(0.9), SentimentLabel::Positive);
        let score = agree
            .score(&texts(1), &[options(Strategy::Consensus)])
            .unwrap()
            .remove(0);
        assert_eq!(score.label, SentimentLabel::Positive);
        let mut disagree = engines(Some(0.95), SentimentLabel::Negative);
        let score = disagree
            .score(&texts(1), &[options(Strategy::Consensus)])
            .unwrap()
            .remove(0);
        assert_eq!(score.label, SentimentLabel::Neutral);
        assert!(score.confidence < 0.1, "{}", score.confidence);
    }

    /// Proves the neutral band relabels unsure results, and that a mixed batch scores each text
    /// with its own strategy in one call per engine.
    #[test]
    fn neutral_band_and_mixed_batches() {
        let mut set = engines(Some(0.55), SentimentLabel::Negative);
        let unsure = ScoringOptions {
            neutral_threshold: 0.6,
            ..options(Strategy::Primary)
        };
        let mixed = [
            unsure,
            options(Strategy::Ensemble),
            options(Strategy::Primary),
        ];
        let scores = set.score(&texts(3), &mixed).unwrap();
        assert_eq!(scores[0].label, SentimentLabel::Neutral);
        assert!(scores[1].engine.starts_with("ensemble"));
        assert_eq!(scores[2].label, SentimentLabel::Positive);
        assert_eq!(
            Strategy::from_str("consensus").unwrap(),
            Strategy::Consensus
        );
        assert!(Strategy::from_str("vote").is_err());
    }
}
