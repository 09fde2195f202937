use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::{InferenceError, SentimentLabel, SentimentModel};

/// Why a labeled data set could not be read or evaluated.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("cannot read {path}: {source}", path = .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line_number}: {message}", path = .path.display())]
    Malformed {
        path: PathBuf,
        line_number: usize,
        message: String,
    },
    #[error("there are no labeled examples to evaluate")]
    Empty,
    #[error("batch_size must be at least 1")]
    ZeroBatchSize,
    #[error("the model failed on the batch starting at example {first_index}: {source}")]
    Inference {
        first_index: usize,
        #[source]
        source: InferenceError,
    },
    #[error("the model returned {num_scores} scores for {num_texts} texts")]
    WrongScoreCount { num_texts: usize, num_scores: usize },
}

/// How well a model did on a labeled data set.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EvalReport {
    pub engine: String,
    pub model_version: String,
    /// Examples scored.
    pub count: usize,
    /// Share of examples whose predicted label is the gold label (on binary data a neutral
    /// prediction is always wrong).
    pub accuracy: f64,
    /// Examples the model called neutral (the data sets are binary, so each one is an error).
    pub num_neutral: usize,
    pub per_class: PerClassReport,
    /// Throughput of `predict`, tokenization included.
    pub sentences_per_second: f64,
}

/// Precision and recall of the two classes of a binary data set.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PerClassReport {
    pub positive: ClassReport,
    pub negative: ClassReport,
}

/// How one class fared. Precision is 0 when the model never predicted the class.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassReport {
    pub precision: f64,
    pub recall: f64,
    /// Examples whose gold label is this class.
    pub count: usize,
}

/// Reads a labeled file in the SST-2 format: one example a line, `0` (negative) or `1`
/// (positive), a space, then the text. Blank lines are skipped.
pub fn read_labeled(path: &Path) -> Result<Vec<(SentimentLabel, String)>, EvalError> {
    let text = std::fs::read_to_string(path).map_err(|source| EvalError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse_labeled(&text).map_err(|(line_number, message)| EvalError::Malformed {
        path: path.to_path_buf(),
        line_number,
        message,
    })
}

/// Parses the text of a labeled file; an error carries the 1-based line number.
fn parse_labeled(text: &str) -> Result<Vec<(SentimentLabel, String)>, (usize, String)> {
    let mut examples = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line_number = index + 1;
        if line.trim().is_empty() {
            continue;
        }
        let Some((label_text, sentence)) = line.split_once(' ') else {
            return Err((line_number, "expected `<label> <text>`".to_owned()));
        };
        let label = match label_text {
            "0" => SentimentLabel::Negative,
            "1" => SentimentLabel::Positive,
            other => {
                return Err((line_number, format!("label must be 0 or 1, not {other:?}")));
            }
        };
        let sentence = sentence.trim();
        if sentence.is_empty() {
            return Err((line_number, "the text is empty".to_owned()));
        }
        examples.push((label, sentence.to_owned()));
    }
    Ok(examples)
}

/// Scores `data` in batches of `batch_size` and compares each prediction with its gold label.
pub fn evaluate(
    model: &mut dyn SentimentModel,
    data: &[(SentimentLabel, String)],
    batch_size: usize,
) -> Result<EvalReport, EvalError> {
    if data.is_empty() {
        return Err(EvalError::Empty);
    }
    if batch_size == 0 {
        return Err(EvalError::ZeroBatchSize);
    }
    let mut predicted = Vec::with_capacity(data.len());
    let mut time_in_predict = Duration::ZERO;
    for (batch_index, batch) in data.chunks(batch_size).enumerate() {
        let texts: Vec<String> = batch.iter().map(|(_, text)| text.clone()).collect();
        let started = Instant::now();
        let scores = model
            .predict(&texts)
            .map_err(|source| EvalError::Inference {
                first_index: batch_index * batch_size,
                source,
            })?;
        time_in_predict += started.elapsed();
        if scores.len() != texts.len() {
            return Err(EvalError::WrongScoreCount {
                num_texts: texts.len(),
                num_scores: scores.len(),
            });
        }
        predicted.extend(scores.iter().map(|score| score.label));
    }
    let gold: Vec<SentimentLabel> = data.iter().map(|(label, _)| *label).collect();
    let tally = Tally::count(&gold, &predicted);
    Ok(EvalReport {
        engine: model.engine().to_owned(),
        model_version: model.version().to_owned(),
        count: data.len(),
        accuracy: ratio(tally.num_correct, data.len()),
        num_neutral: tally.num_neutral,
        per_class: PerClassReport {
            positive: tally.class_report(SentimentLabel::Positive),
            negative: tally.class_report(SentimentLabel::Negative),
        },
        sentences_per_second: data.len() as f64 / time_in_predict.as_secs_f64().max(1e-9),
    })
}

/// Counts of gold and predicted labels, enough for accuracy, precision and recall.
#[derive(Debug, Default)]
struct Tally {
    num_correct: usize,
    num_neutral: usize,
    num_gold_positive: usize,
    num_gold_negative: usize,
    num_predicted_positive: usize,
    num_predicted_negative: usize,
    num_true_positive: usize,
    num_true_negative: usize,
}

impl Tally {
    fn count(gold: &[SentimentLabel], predicted: &[SentimentLabel]) -> Tally {
        let mut tally = Tally::default();
        for (gold_label, predicted_label) in gold.iter().zip(predicted) {
            match gold_label {
                SentimentLabel::Positive => tally.num_gold_positive += 1,
                SentimentLabel::Negative => tally.num_gold_negative += 1,
                SentimentLabel::Neutral => {}
            }
            match predicted_label {
                SentimentLabel::Positive => tally.num_predicted_positive += 1,
                SentimentLabel::Negative => tally.num_predicted_negative += 1,
                SentimentLabel::Neutral => tally.num_neutral += 1,
            }
            if gold_label == predicted_label {
                tally.num_correct += 1;
                match gold_label {
                    SentimentLabel::Positive => tally.num_true_positive += 1,
                    SentimentLabel::Negative => tally.num_true_negative += 1,
                    SentimentLabel::Neutral => {}
                }
            }
        }
        tally
    }

    fn class_report(&self, label: SentimentLabel) -> ClassReport {
        let (num_true, num_predicted, num_gold) = match label {
            SentimentLabel::Positive => (
                self.num_true_positive,
                self.num_predicted_positive,
                self.num_gold_positive,
            ),
            SentimentLabel::Negative | SentimentLabel::Neutral => (
                self.num_true_negative,
                self.num_predicted_negative,
                self.num_gold_negative,
            ),
        };
        ClassReport {
            precision: ratio(num_true, num_predicted),
            recall: ratio(num_true, num_gold),
            count: num_gold,
        }
    }
}

/// Returns `part / whole`, or 0 when `whole` is 0.
fn ratio(part: usize, whole: usize) -> f64 {
    if whole == 0 {
        return 0.0;
    }
    part as f64 / whole as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{InferenceError, SentimentScore};

    /// Replays fixed labels, whatever the texts.
    struct ScriptedModel {
        labels: Vec<SentimentLabel>,
        num_calls: usize,
    }

    impl SentimentModel for ScriptedModel {
        fn engine(&self) -> &str {
            "scripted"
        }

        fn version(&self) -> &str {
            "1"
        }

        fn predict(&mut self, texts: &[String]) -> Result<Vec<SentimentScore>, InferenceError> {
            let start = self.num_calls;
            self.num_calls += texts.len();
            Ok(self.labels[start..start + texts.len()]
                .iter()
                .map(|label| SentimentScore {
                    label: *label,
                    score: 0.0,
                    confidence: 1.0,
                    positive_probability: 0.5,
                    engine: "scripted".to_owned(),
                    model_version: "1".to_owned(),
                })
                .collect())
        }
    }

    /// Proves the SST-2 format parses, blank lines are skipped and text keeps inner spacing.
    #[test]
    fn parse_labeled_reads_the_sst2_format() {
        let examples = parse_labeled("1 a gem .\n\n0 it 's  dull\n").unwrap();
        assert_eq!(
            examples,
            vec![
                (SentimentLabel::Positive, "a gem .".to_owned()),
                (SentimentLabel::Negative, "it 's  dull".to_owned()),
            ]
        );
    }

    /// Proves a bad label, a missing text and a line without a separator are reported with
    /// their line numbers.
    #[test]
    fn parse_labeled_names_the_bad_line() {
        assert_eq!(parse_labeled("1 fine\n2 odd").unwrap_err().0, 2);
        assert!(
            parse_labeled("positive fine")
                .unwrap_err()
                .1
                .contains("0 or 1")
        );
        assert_eq!(parse_labeled("1 fine\n0  \n").unwrap_err().0, 2);
        assert_eq!(parse_labeled("1").unwrap_err().0, 1);
    }

    /// Proves accuracy, per-class precision and recall, and the neutral count, on a case
    /// worked out by hand: gold + + + - -, predicted + - ~ - +.
    #[test]
    fn evaluate_counts_neutral_as_wrong() {
        use SentimentLabel::{Negative, Neutral, Positive};
        let data: Vec<(SentimentLabel, String)> =
            [Positive, Positive, Positive, Negative, Negative]
                .into_iter()
                .enumerate()
                .map(|(index, label)| (label, format!("text {index}")))
                .collect();
        let mut model = ScriptedModel {
            labels: vec![Positive, Negative, Neutral, Negative, Positive],
            num_calls: 0,
        };
        let report = evaluate(&mut model, &data, 2).unwrap();
        assert_eq!(report.count, 5);
        assert_eq!(report.num_neutral, 1);
        assert!((report.accuracy - 0.4).abs() < 1e-12);
        assert_eq!(
            report.per_class.positive,
            ClassReport {
                precision: 0.5,
                recall: 1.0 / 3.0,
                count: 3
            }
        );
        assert_eq!(
            report.per_class.negative,
            ClassReport {
                precision: 0.5,
                recall: 0.5,
                count: 2
            }
        );
        assert_eq!(report.engine, "scripted");
        assert!(report.sentences_per_second > 0.0);
    }

    /// Proves empty data and a zero batch size are errors, not a division by zero.
    #[test]
    fn evaluate_rejects_empty_data_and_zero_batches() {
        let mut model = ScriptedModel {
            labels: vec![SentimentLabel::Positive],
            num_calls: 0,
        };
        assert!(matches!(
            evaluate(&mut model, &[], 8),
            Err(EvalError::Empty)
        ));
        let data = vec![(SentimentLabel::Positive, "fine".to_owned())];
        assert!(matches!(
            evaluate(&mut model, &data, 0),
            Err(EvalError::ZeroBatchSize)
        ));
    }
}
