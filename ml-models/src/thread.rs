use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use bulwark_core::{HandledMessage, Liveness};
use tokio::sync::oneshot;
use tracing::{debug, error};

use crate::metrics::InferenceBatchFinished;
use crate::{BatchQueue, EngineSet, InferenceError};

/// Faults injected on purpose for tests and game days: a batch holding a text that contains a
/// marker panics or hangs on the inference thread, as a broken model would. Off by default;
/// a build without the `chaos` feature carries no injection code (the config refuses markers).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChaosKnobs {
    /// A batch with a text containing this panics inside the model call.
    pub panic_on_text: Option<String>,
    /// A batch with a text containing this hangs until the thread is asked to stop.
    pub hang_on_text: Option<String>,
}

#[cfg(feature = "chaos")]
impl ChaosKnobs {
    fn matches(marker_opt: Option<&String>, texts: &[String]) -> bool {
        marker_opt.is_some_and(|marker| {
            !marker.is_empty() && texts.iter().any(|text| text.contains(marker.as_str()))
        })
    }
}

/// What an [`InferenceThread`] is started with.
#[derive(Debug, Clone)]
pub struct InferenceThreadParams {
    /// OS thread name, visible in `top -H` and in panic messages.
    pub thread_name: String,
    /// Where batches come from; shared by every thread of a pool.
    pub queue: BatchQueue,
    /// Busy while a batch is being scored, so a supervisor can see a hang.
    pub liveness: Liveness,
    pub chaos: ChaosKnobs,
}

/// Why an inference thread ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ThreadExit {
    /// Asked to stop, or the queue closed.
    Stopped,
    /// The model panicked; the batch it was scoring got [`InferenceError::Panicked`].
    Panicked(String),
}

/// The engines of one worker on their own OS thread, scoring batches taken from a
/// [`BatchQueue`], so CPU-bound inference never blocks the async runtime.
///
/// A panic inside the model fails only the batch being scored; the thread then ends, because
/// the model may be broken, and [`InferenceThread::exited`] says why so its owner restarts it.
#[derive(Debug)]
pub struct InferenceThread {
    stop: Arc<AtomicBool>,
    exit_rx: Option<oneshot::Receiver<ThreadExit>>,
    engine: String,
}

impl InferenceThread {
    /// Starts the thread; the engines move onto it.
    pub fn spawn(
        engines: EngineSet,
        params: &InferenceThreadParams,
    ) -> std::io::Result<InferenceThread> {
        let stop = Arc::new(AtomicBool::new(false));
        let (exit_tx, exit_rx) = oneshot::channel();
        let engine = engines.describe();
        let thread_stop = stop.clone();
        let queue = params.queue.clone();
        let liveness = params.liveness.clone();
        let chaos = params.chaos.clone();
        std::thread::Builder::new()
            .name(params.thread_name.clone())
            .spawn(move || {
                let exit = serve(engines, &queue, &liveness, &chaos, &thread_stop);
                let _ = exit_tx.send(exit);
            })?;
        Ok(InferenceThread {
            stop,
            exit_rx: Some(exit_rx),
            engine,
        })
    }

    /// Returns the engines on this thread, e.g. `onnx+lexicon`.
    pub fn engine(&self) -> &str {
        &self.engine
    }

    /// Takes the receiver that resolves when the thread ends (once).
    pub fn exited(&mut self) -> Option<oneshot::Receiver<ThreadExit>> {
        self.exit_rx.take()
    }
}

impl Drop for InferenceThread {
    /// Asks the thread to stop after its current batch; it never outlives its owner by more.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

fn serve(
    mut engines: EngineSet,
    queue: &BatchQueue,
    liveness: &Liveness,
    chaos: &ChaosKnobs,
    stop: &AtomicBool,
) -> ThreadExit {
    while let Some(batch) = queue.next_batch(stop) {
        let texts = batch.texts();
        let options = batch.options();
        let _busy = liveness.busy_with(describe_batch(&batch, &texts));
        // One span per batch on the inference thread, linked to the spans of its callers.
        let span = tracing::debug_span!(
            "inference.batch",
            otel.kind = "internal",
            inference.batch.size = texts.len(),
            inference.engines = engines.describe(),
        );
        for trace in batch.caller_traces() {
            trace.link_from(&span);
        }
        let _entered = span.enter();
        let started = Instant::now();
        let scored = catch_unwind(AssertUnwindSafe(|| {
            inject_faults(chaos, &texts, stop)?;
            engines.score(&texts, &options)
        }));
        InferenceBatchFinished {
            outcome: match &scored {
                Ok(Ok(_)) => "scored",
                Ok(Err(_)) => "failed",
                Err(_) => "crashed",
            },
            num_texts: texts.len(),
            duration: started.elapsed(),
        }
        .emit();
        match scored {
            Ok(Ok(scores)) => batch.complete(scores),
            // The thread was stopped mid-batch (its worker was killed as hung): like a crash,
            // the batch-mates of the text that hung are scored again, alone.
            Ok(Err(inference_error @ InferenceError::EngineStopped)) => {
                batch.isolate_crash(queue, &inference_error);
            }
            Ok(Err(inference_error)) => {
                debug!(error = %inference_error, num_texts = texts.len(), "batch failed");
                batch.fail(&inference_error);
            }
            Err(panic) => {
                let message = panic_message(panic.as_ref());
                error!(engines = engines.describe(), %message, "model panicked, stopping inference thread");
                batch.isolate_crash(queue, &InferenceError::Panicked(message.clone()));
                return ThreadExit::Panicked(message);
            }
        }
    }
    ThreadExit::Stopped
}

/// Requests named in a batch's summary at most.
const MAX_NAMED_REQUESTS: usize = 10;

/// Describes a batch for crash and hang reports; the payload is the texts, as replay needs them.
/// A batch of one caller's texts (always so once a crash isolates texts) carries its request and
/// trace id; a mixed batch names its callers' request ids in the summary.
fn describe_batch(batch: &crate::Batch, texts: &[String]) -> HandledMessage {
    let callers = batch.callers();
    let (request_id, trace_id) = match callers.as_slice() {
        [only] => (only.request_id.clone(), only.trace_id.clone()),
        _ => (None, None),
    };
    let request_ids: Vec<&str> = callers
        .iter()
        .filter_map(|caller| caller.request_id.as_deref())
        .collect();
    let mut summary = format!("{} texts", texts.len());
    if callers.len() > 1 && !request_ids.is_empty() {
        let named = request_ids.len().min(MAX_NAMED_REQUESTS);
        summary.push_str(&format!(
            " from {} requests: {}{}",
            callers.len(),
            request_ids[..named].join(", "),
            if request_ids.len() > named {
                ", …"
            } else {
                ""
            }
        ));
    }
    HandledMessage {
        payload: serde_json::to_string(&serde_json::json!({ "texts": texts })).ok(),
        request_id,
        trace_id,
        ..HandledMessage::new("sentiment.batch", summary)
    }
}

/// Panics or hangs when a chaos marker is in the batch. The hang ends when the thread is asked
/// to stop (its worker was killed), so a game day leaks no thread, and the batch then fails as
/// a killed worker's would.
#[cfg(feature = "chaos")]
fn inject_faults(
    chaos: &ChaosKnobs,
    texts: &[String],
    stop: &AtomicBool,
) -> Result<(), InferenceError> {
    if ChaosKnobs::matches(chaos.panic_on_text.as_ref(), texts) {
        panic!("chaos: panic_on_text marker in the batch");
    }
    if ChaosKnobs::matches(chaos.hang_on_text.as_ref(), texts) {
        error!("chaos: hang_on_text marker in the batch, hanging until stopped");
        while !stop.load(Ordering::Acquire) {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        return Err(InferenceError::EngineStopped);
    }
    Ok(())
}

/// Without the `chaos` feature no fault is injected.
#[cfg(not(feature = "chaos"))]
fn inject_faults(
    _chaos: &ChaosKnobs,
    _texts: &[String],
    _stop: &AtomicBool,
) -> Result<(), InferenceError> {
    Ok(())
}

/// Returns the text of a panic payload.
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(text) = panic.downcast_ref::<&str>() {
        return (*text).to_owned();
    }
    if let Some(text) = panic.downcast_ref::<String>() {
        return text.clone();
    }
    "non-string panic payload".to_owned()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::{BatchingParams, ScoringOptions, SentimentLabel, SentimentModel, SentimentScore};

    /// A model that scores by text length and panics on the text "boom".
    struct LengthModel;

    impl SentimentModel for LengthModel {
        fn engine(&self) -> &str {
            "length"
        }

        fn version(&self) -> &str {
            "1"
        }

        fn predict(&mut self, texts: &[String]) -> Result<Vec<SentimentScore>, InferenceError> {
            assert!(!texts.iter().any(|text| text == "boom"), "boom input");
            Ok(texts
                .iter()
                .map(|text| SentimentScore {
                    label: SentimentLabel::Positive,
                    score: text.len() as f32,
                    confidence: 1.0,
                    positive_probability: 1.0,
                    engine: "length".to_owned(),
                    model_version: "1".to_owned(),
                })
                .collect())
        }
    }

    fn start(queue: &BatchQueue) -> InferenceThread {
        let params = InferenceThreadParams {
            thread_name: "test-inference".to_owned(),
            queue: queue.clone(),
            liveness: Liveness::default(),
            chaos: ChaosKnobs::default(),
        };
        InferenceThread::spawn(EngineSet::new(None, Box::new(LengthModel)), &params).unwrap()
    }

    fn queue() -> BatchQueue {
        BatchQueue::new(BatchingParams {
            max_wait: Duration::from_micros(200),
            ..BatchingParams::default()
        })
    }

    fn caller(request_id: &str) -> crate::CallerIds {
        crate::CallerIds {
            request_id: Some(request_id.to_owned()),
            trace_id: Some(format!("trace-of-{request_id}")),
            span_trace_opt: None,
        }
    }

    /// Proves a batch of one caller's texts names that caller's request and trace id, and a
    /// mixed batch names its callers' request ids in the summary but claims no single one.
    #[test]
    fn batch_descriptions_name_their_callers() {
        let queue = queue();
        let _one = queue
            .submit(
                vec!["a".into(), "b".into()],
                ScoringOptions::default(),
                caller("req-1"),
            )
            .unwrap();
        let stop = AtomicBool::new(false);
        let batch = queue.next_batch(&stop).unwrap();
        let described = describe_batch(&batch, &batch.texts());
        assert_eq!(described.request_id.as_deref(), Some("req-1"));
        assert_eq!(described.trace_id.as_deref(), Some("trace-of-req-1"));
        assert_eq!(described.summary, "2 texts");

        let _two = queue
            .submit(vec!["c".into()], ScoringOptions::default(), caller("req-2"))
            .unwrap();
        let _three = queue
            .submit(vec!["d".into()], ScoringOptions::default(), caller("req-3"))
            .unwrap();
        std::thread::sleep(Duration::from_millis(2));
        let batch = queue.next_batch(&stop).unwrap();
        let described = describe_batch(&batch, &batch.texts());
        assert_eq!(described.request_id, None);
        assert_eq!(described.summary, "2 texts from 2 requests: req-2, req-3");
    }

    /// Proves results come back in input order, across requests sharing batches.
    #[tokio::test]
    async fn scores_requests_in_order() {
        let queue = queue();
        let thread = start(&queue);
        let first = queue
            .submit(
                vec!["a".into(), "abc".into()],
                ScoringOptions::default(),
                crate::CallerIds::default(),
            )
            .unwrap();
        let second = queue
            .submit(
                vec!["abcde".into()],
                ScoringOptions::default(),
                crate::CallerIds::default(),
            )
            .unwrap();
        let scores = first.await.unwrap().unwrap();
        assert_eq!(
            scores.iter().map(|score| score.score).collect::<Vec<_>>(),
            vec![1.0, 3.0]
        );
        assert_eq!(second.await.unwrap().unwrap()[0].score, 5.0);
        assert_eq!(thread.engine(), "length");
    }

    /// Proves a panicking model fails only the requests in its batch, then the thread reports
    /// its exit, while requests queued later wait for a new thread and are served by it.
    #[tokio::test]
    async fn panic_fails_the_batch_and_ends_the_thread() {
        let queue = queue();
        let mut thread = start(&queue);
        let exited = thread.exited().unwrap();
        let doomed = queue
            .submit(
                vec!["boom".into()],
                ScoringOptions::default(),
                crate::CallerIds::default(),
            )
            .unwrap();
        let error = doomed.await.unwrap().unwrap_err();
        assert!(
            matches!(&error, InferenceError::Panicked(message) if message.contains("boom input"))
        );
        assert!(!error.is_retryable());
        assert_eq!(
            exited.await.unwrap(),
            ThreadExit::Panicked("boom input".to_owned())
        );
        let later = queue
            .submit(
                vec!["fine".into()],
                ScoringOptions::default(),
                crate::CallerIds::default(),
            )
            .unwrap();
        let _replacement = start(&queue);
        assert_eq!(later.await.unwrap().unwrap()[0].score, 4.0);
    }

    /// Proves dropping the handle stops the thread.
    #[tokio::test]
    async fn drop_stops_the_thread() {
        let queue = queue();
        let mut thread = start(&queue);
        let exited = thread.exited().unwrap();
        drop(thread);
        let exit = tokio::time::timeout(Duration::from_secs(5), exited)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(exit, ThreadExit::Stopped);
    }
}
