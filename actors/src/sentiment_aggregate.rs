//! `sentiment.aggregate`: the fan-in of a workflow. The job reads the results of its parents
//! (the jobs it depends on), `sentiment.analyze` jobs, and sums them up: how many texts, the
//! mean score, how many of each label. A parent that did not succeed (a dependant may run
//! anyway, with the `run` policy) or is of another kind is listed as skipped, with why.

use std::collections::BTreeMap;

use bulwark_core::{JobError, JobKind, decode_payload};
use bulwark_store::{Job, JobStatus};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The payload of `sentiment.aggregate` jobs: nothing but its parents, given on submission.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SentimentAggregatePayload {}

/// Checks a `sentiment.aggregate` payload.
pub fn parse_aggregate_payload(payload: &Value) -> Result<SentimentAggregatePayload, JobError> {
    decode_payload(payload)
}

/// The result of a `sentiment.aggregate` job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SentimentAggregate {
    pub num_parents: usize,
    /// Parents whose results were summed.
    pub num_used: usize,
    pub num_texts: usize,
    /// The mean of every text's score, in [-1, 1]; absent without texts.
    pub mean_score: Option<f64>,
    /// Texts per label.
    pub labels: BTreeMap<String, usize>,
    pub skipped: Vec<SkippedParent>,
}

/// A parent whose result was not summed, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkippedParent {
    pub job_id: String,
    pub reason: String,
}

/// Sums up the sentiment results of `parents`.
pub fn aggregate(parents: &[Job]) -> SentimentAggregate {
    let mut summary = SentimentAggregate {
        num_parents: parents.len(),
        num_used: 0,
        num_texts: 0,
        mean_score: None,
        labels: BTreeMap::new(),
        skipped: Vec::new(),
    };
    let mut score_sum = 0.0;
    for parent in parents {
        let skip = |reason: String| SkippedParent {
            job_id: parent.id.clone(),
            reason,
        };
        if parent.kind != JobKind::SentimentAnalyze.as_str() {
            summary.skipped.push(skip(format!(
                "kind `{}`, not sentiment.analyze",
                parent.kind
            )));
            continue;
        }
        if parent.status != JobStatus::Succeeded {
            summary
                .skipped
                .push(skip(format!("ended {}", parent.status)));
            continue;
        }
        let scores = parent
            .result
            .as_ref()
            .and_then(|result| result.get("results"))
            .and_then(Value::as_array);
        let Some(scores) = scores else {
            summary
                .skipped
                .push(skip("no sentiment results".to_owned()));
            continue;
        };
        summary.num_used += 1;
        for score in scores {
            let label = score.get("label").and_then(Value::as_str);
            let value = score.get("score").and_then(Value::as_f64);
            if let (Some(label), Some(value)) = (label, value) {
                *summary.labels.entry(label.to_owned()).or_default() += 1;
                score_sum += value;
                summary.num_texts += 1;
            }
        }
    }
    if summary.num_texts > 0 {
        summary.mean_score = Some(score_sum / summary.num_texts as f64);
    }
    summary
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn parent(id: &str, kind: &str, status: JobStatus, result: Option<Value>) -> Job {
        Job {
            id: id.to_owned(),
            kind: kind.to_owned(),
            status,
            attempts: 1,
            max_attempts: 3,
            payload: json!({}),
            result,
            error_code: None,
            error_message: None,
            request_id: None,
            idempotency_key: None,
            created_at_ms: 0,
            updated_at_ms: 0,
            run_at_ms: 0,
            started_at_ms: None,
            finished_at_ms: None,
            lease_owner: None,
            lease_expires_at_ms: None,
            trace_id: None,
            priority: bulwark_store::DEFAULT_PRIORITY,
            timeout_ms: None,
            cancel_requested_at_ms: None,
            parked_at_ms: None,
            attempt_started_at_ms: None,
            attempt_node: None,
            progress: None,
            result_ttl_ms: None,
        }
    }

    /// Proves the scores and labels of succeeded sentiment parents are summed, and parents of
    /// another kind, not succeeded or without results are skipped with the reason.
    #[test]
    fn sums_succeeded_sentiment_parents_and_skips_the_rest() {
        let scored = |scores: &[(&str, f64)]| {
            let results: Vec<Value> = scores
                .iter()
                .map(|(label, score)| json!({"label": label, "score": score}))
                .collect();
            Some(json!({ "results": results }))
        };
        let parents = [
            parent(
                "a",
                "sentiment.analyze",
                JobStatus::Succeeded,
                scored(&[("positive", 0.5), ("negative", -0.25)]),
            ),
            parent(
                "b",
                "sentiment.analyze",
                JobStatus::Succeeded,
                scored(&[("positive", 1.0)]),
            ),
            parent("c", "sentiment.analyze", JobStatus::Failed, None),
            parent(
                "d",
                "provider.complete",
                JobStatus::Succeeded,
                Some(json!({})),
            ),
            parent(
                "e",
                "sentiment.analyze",
                JobStatus::Succeeded,
                Some(json!({"other": 1})),
            ),
        ];
        let summary = aggregate(&parents);
        assert_eq!(summary.num_parents, 5);
        assert_eq!(summary.num_used, 2);
        assert_eq!(summary.num_texts, 3);
        assert_eq!(summary.mean_score, Some(1.25 / 3.0));
        assert_eq!(summary.labels["positive"], 2);
        assert_eq!(summary.labels["negative"], 1);
        let skipped: Vec<&str> = summary
            .skipped
            .iter()
            .map(|skip| skip.job_id.as_str())
            .collect();
        assert_eq!(skipped, ["c", "d", "e"]);
        assert!(summary.skipped[0].reason.contains("failed"));
        assert_eq!(aggregate(&[]).mean_score, None);
    }
}
