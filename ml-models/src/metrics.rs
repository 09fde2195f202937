//! Metric names of the inference threads and the event that emits them. Labels are bounded:
//! outcomes are a fixed set.

use std::time::Duration;

use bulwark_core::{BATCH_SIZE_BUCKETS, FAST_SECONDS_BUCKETS, MetricSpec, MetricUnit};

pub const INFERENCE_BATCH_TEXTS: MetricSpec = MetricSpec::histogram(
    "bulwark_inference_batch_texts",
    MetricUnit::Count,
    BATCH_SIZE_BUCKETS,
    "How many texts each inference batch scored together (dynamic batching)",
)
.with_labels(&["outcome"]);
pub const INFERENCE_BATCH_SECONDS: MetricSpec = MetricSpec::histogram(
    "bulwark_inference_batch_duration_seconds",
    MetricUnit::Seconds,
    FAST_SECONDS_BUCKETS,
    "How long an inference thread took to score one batch (tokenizing included, queueing not)",
)
.with_labels(&["outcome"]);

/// Every metric this crate emits, for the recorder's descriptions and `docs/metrics.md`.
pub const METRICS: &[MetricSpec] = &[INFERENCE_BATCH_TEXTS, INFERENCE_BATCH_SECONDS];

/// An inference thread finished a batch: `scored`, `failed` or `crashed`.
#[derive(Debug)]
pub struct InferenceBatchFinished {
    pub outcome: &'static str,
    pub num_texts: usize,
    pub duration: Duration,
}

impl InferenceBatchFinished {
    pub fn emit(&self) {
        metrics::histogram!(INFERENCE_BATCH_TEXTS.name, "outcome" => self.outcome)
            .record(self.num_texts as f64);
        metrics::histogram!(INFERENCE_BATCH_SECONDS.name, "outcome" => self.outcome)
            .record(self.duration.as_secs_f64());
    }
}
