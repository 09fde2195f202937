use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::{InferenceError, ScoringOptions, SentimentScore};

/// How often an idle inference thread checks whether it was asked to stop.
const STOP_CHECK_INTERVAL: Duration = Duration::from_millis(100);

/// How batches are formed from queued texts (the same three limits TEI and Triton use).
#[derive(Debug, Clone, Copy)]
pub struct BatchingParams {
    /// A batch closes at this many texts.
    pub max_batch_texts: usize,
    /// ... or when `longest text × texts` would exceed this many (estimated) tokens.
    pub max_batch_tokens: usize,
    /// ... or when its oldest text has waited this long for company.
    pub max_wait: Duration,
    /// Texts queued across all requests before new requests are refused as overloaded.
    pub max_queued_texts: usize,
}

impl Default for BatchingParams {
    fn default() -> Self {
        BatchingParams {
            max_batch_texts: 32,
            max_batch_tokens: 32 * 128,
            max_wait: Duration::ZERO,
            max_queued_texts: 16_384,
        }
    }
}

/// Where a request's scores, or its first error, are sent.
type ScoresReply = oneshot::Sender<Result<Vec<SentimentScore>, InferenceError>>;

/// A request whose texts may be scored across several batches; it is answered when its last
/// text is scored, or at its first error.
#[derive(Debug)]
struct PendingRequest {
    caller: CallerIds,
    results: Mutex<Vec<Option<SentimentScore>>>,
    remaining: AtomicUsize,
    reply_tx: Mutex<Option<ScoresReply>>,
}

impl PendingRequest {
    fn fill(&self, index: usize, score: SentimentScore) {
        lock(&self.results)[index] = Some(score);
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            let scores = lock(&self.results).drain(..).flatten().collect();
            if let Some(reply_tx) = lock(&self.reply_tx).take() {
                let _ = reply_tx.send(Ok(scores));
            }
        }
    }

    fn fail(&self, error: InferenceError) {
        if let Some(reply_tx) = lock(&self.reply_tx).take() {
            let _ = reply_tx.send(Err(error));
        }
    }

    fn is_abandoned(&self) -> bool {
        lock(&self.reply_tx)
            .as_ref()
            .is_none_or(oneshot::Sender::is_closed)
    }
}

#[derive(Debug)]
struct Item {
    text: String,
    options: ScoringOptions,
    estimated_tokens: usize,
    request: Arc<PendingRequest>,
    index: usize,
    enqueued_at: Instant,
    /// Set when the text was in a batch that crashed its thread: it now runs in a batch of its
    /// own, so a poisonous text fails only its own request.
    solo: bool,
}

#[derive(Debug, Default)]
struct QueueState {
    items: VecDeque<Item>,
    closed: bool,
}

/// The queue in front of the inference threads. Requests from any caller are split into texts;
/// each inference thread takes the next batch. The queue belongs to the pool, not to a thread,
/// so queued work survives the restart of the thread that would have run it.
#[derive(Debug, Clone)]
pub struct BatchQueue {
    inner: Arc<(Mutex<QueueState>, Condvar)>,
    params: BatchingParams,
}

/// Who asked for a request's texts to be scored, so crash and hang reports can name them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallerIds {
    pub request_id: Option<String>,
    pub trace_id: Option<String>,
    /// The caller's span when OpenTelemetry traces it: the batch's span links to it.
    pub span_trace_opt: Option<bulwark_core::TraceContext>,
}

/// Texts taken from the queue together; score them and hand the scores back with
/// [`Batch::complete`], or fail them with [`Batch::fail`].
#[derive(Debug)]
pub struct Batch {
    items: Vec<Item>,
}

impl Batch {
    /// Returns the traced callers' span contexts, once each.
    pub fn caller_traces(&self) -> Vec<&bulwark_core::TraceContext> {
        let mut traces: Vec<&bulwark_core::TraceContext> = Vec::new();
        for item in &self.items {
            if let Some(trace) = &item.request.caller.span_trace_opt
                && !traces.contains(&trace)
            {
                traces.push(trace);
            }
        }
        traces
    }
}

/// Estimates WordPiece tokens from characters without tokenizing: about four characters a
/// token plus the two special tokens, capped at the model's 128.
fn estimate_tokens(text: &str) -> usize {
    (text.len() / 4 + 2).min(128)
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl BatchQueue {
    pub fn new(params: BatchingParams) -> BatchQueue {
        BatchQueue {
            inner: Arc::new((Mutex::new(QueueState::default()), Condvar::new())),
            params,
        }
    }

    /// Returns how many texts are waiting.
    pub fn queued_texts(&self) -> usize {
        lock(&self.inner.0).items.len()
    }

    /// Queues the texts of one request; the receiver yields their scores in order. Refuses at
    /// once with [`InferenceError::Overloaded`] when the queue is full.
    pub fn submit(
        &self,
        texts: Vec<String>,
        options: ScoringOptions,
        caller: CallerIds,
    ) -> Result<oneshot::Receiver<Result<Vec<SentimentScore>, InferenceError>>, InferenceError>
    {
        let (reply_tx, reply_rx) = oneshot::channel();
        if texts.is_empty() {
            let _ = reply_tx.send(Ok(Vec::new()));
            return Ok(reply_rx);
        }
        let request = Arc::new(PendingRequest {
            caller,
            results: Mutex::new(vec![None; texts.len()]),
            remaining: AtomicUsize::new(texts.len()),
            reply_tx: Mutex::new(Some(reply_tx)),
        });
        let (state_mutex, ready) = &*self.inner;
        let mut state = lock(state_mutex);
        if state.closed {
            return Err(InferenceError::EngineStopped);
        }
        if state.items.len() + texts.len() > self.params.max_queued_texts {
            return Err(InferenceError::Overloaded);
        }
        let now = Instant::now();
        for (index, text) in texts.into_iter().enumerate() {
            let estimated_tokens = estimate_tokens(&text);
            state.items.push_back(Item {
                text,
                options,
                estimated_tokens,
                request: request.clone(),
                index,
                enqueued_at: now,
                solo: false,
            });
        }
        drop(state);
        ready.notify_one();
        Ok(reply_rx)
    }

    /// Blocks the calling (inference) thread until a batch is ready; `None` once the queue is
    /// closed and empty, or `stop` is set. A batch closes at the size or token limit, or when
    /// its oldest text has waited `max_wait`.
    pub fn next_batch(&self, stop: &AtomicBool) -> Option<Batch> {
        let (state_mutex, ready) = &*self.inner;
        let mut state = lock(state_mutex);
        loop {
            if stop.load(Ordering::Acquire) {
                return None;
            }
            state.items.retain(|item| !item.request.is_abandoned());
            if let Some(oldest) = state.items.front() {
                let waited = oldest.enqueued_at.elapsed();
                let full = state.items.len() >= self.params.max_batch_texts;
                if full || waited >= self.params.max_wait || state.closed {
                    let batch = self.take_batch(&mut state);
                    let more = !state.items.is_empty();
                    drop(state);
                    if more {
                        ready.notify_one();
                    }
                    return Some(batch);
                }
                let timeout = self.params.max_wait - waited;
                state = ready
                    .wait_timeout(state, timeout)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            } else if state.closed {
                return None;
            } else {
                // Wakes up now and then to notice `stop` even when no work arrives.
                state = ready
                    .wait_timeout(state, STOP_CHECK_INTERVAL)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
        }
    }

    /// Takes texts in arrival order while the padded batch stays within both limits.
    fn take_batch(&self, state: &mut QueueState) -> Batch {
        let mut items = Vec::with_capacity(self.params.max_batch_texts.min(state.items.len()));
        let mut longest = 0;
        while let Some(next) = state.items.front() {
            let candidate_longest = longest.max(next.estimated_tokens);
            let padded = candidate_longest * (items.len() + 1);
            if !items.is_empty()
                && (next.solo
                    || items.len() >= self.params.max_batch_texts
                    || padded > self.params.max_batch_tokens)
            {
                break;
            }
            longest = candidate_longest;
            let Some(item) = state.items.pop_front() else {
                break;
            };
            let solo = item.solo;
            items.push(item);
            if solo {
                break;
            }
        }
        Batch { items }
    }

    /// Puts the texts of a batch that crashed its thread back at the head of the queue, each to
    /// run alone, so the text that caused the crash fails only its own request.
    fn requeue_solo(&self, items: Vec<Item>) {
        let mut state = lock(&self.inner.0);
        for mut item in items.into_iter().rev() {
            item.solo = true;
            state.items.push_front(item);
        }
        drop(state);
        self.inner.1.notify_all();
    }

    /// Refuses new requests and lets threads finish what is queued.
    pub fn close(&self) {
        lock(&self.inner.0).closed = true;
        self.inner.1.notify_all();
    }
}

impl Batch {
    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Returns the texts, in batch order.
    pub fn texts(&self) -> Vec<String> {
        self.items.iter().map(|item| item.text.clone()).collect()
    }

    /// Returns the distinct callers of the batch's texts, in batch order.
    pub fn callers(&self) -> Vec<&CallerIds> {
        let mut callers: Vec<&CallerIds> = Vec::new();
        for item in &self.items {
            if !callers.contains(&&item.request.caller) {
                callers.push(&item.request.caller);
            }
        }
        callers
    }

    /// Returns each text's scoring options, in batch order.
    pub fn options(&self) -> Vec<ScoringOptions> {
        self.items.iter().map(|item| item.options).collect()
    }

    /// Hands each score to its request; `scores` is in batch order.
    pub fn complete(self, scores: Vec<SentimentScore>) {
        if scores.len() != self.items.len() {
            let message = format!(
                "model returned {} scores for {} texts",
                scores.len(),
                self.items.len()
            );
            self.fail(&InferenceError::Failed(message));
            return;
        }
        for (item, score) in self.items.into_iter().zip(scores) {
            item.request.fill(item.index, score);
        }
    }

    /// After the model crashed on this batch: a batch of one text fails its request; the texts
    /// of a larger batch go back to `queue`, each to be scored alone, so one poisonous text
    /// does not fail its batch-mates (nor cost their jobs an attempt).
    pub fn isolate_crash(self, queue: &BatchQueue, error: &InferenceError) {
        if self.items.len() > 1 {
            queue.requeue_solo(self.items);
        } else {
            self.fail(error);
        }
    }

    /// Fails every request with a text in this batch.
    pub fn fail(self, error: &InferenceError) {
        for item in self.items {
            item.request.fail(error.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SentimentLabel;

    fn params(max_batch_texts: usize, max_batch_tokens: usize) -> BatchingParams {
        BatchingParams {
            max_batch_texts,
            max_batch_tokens,
            max_wait: Duration::from_millis(1),
            max_queued_texts: 8,
        }
    }

    fn score(value: f32) -> SentimentScore {
        SentimentScore {
            label: SentimentLabel::Positive,
            score: value,
            confidence: 1.0,
            positive_probability: 1.0,
            engine: "test".to_owned(),
            model_version: "1".to_owned(),
        }
    }

    /// Proves a batch closes at the text limit and takes texts across requests in order.
    #[test]
    fn batch_closes_at_size_limit() {
        let queue = BatchQueue::new(params(3, 10_000));
        let _first = queue
            .submit(
                vec!["a".into(), "b".into()],
                ScoringOptions::default(),
                CallerIds::default(),
            )
            .unwrap();
        let _second = queue
            .submit(
                vec!["c".into(), "d".into()],
                ScoringOptions::default(),
                CallerIds::default(),
            )
            .unwrap();
        let stop = AtomicBool::new(false);
        assert_eq!(queue.next_batch(&stop).unwrap().texts(), ["a", "b", "c"]);
        assert_eq!(queue.next_batch(&stop).unwrap().texts(), ["d"]);
    }

    /// Proves a batch closes before its padded size passes the token budget, and that one text
    /// over the budget still goes alone rather than never.
    #[test]
    fn batch_closes_at_token_budget() {
        let queue = BatchQueue::new(params(32, 40));
        let long = "x".repeat(100); // about 27 tokens
        let _request = queue
            .submit(
                vec!["short".into(), long.clone(), "tiny".into()],
                ScoringOptions::default(),
                CallerIds::default(),
            )
            .unwrap();
        let stop = AtomicBool::new(false);
        assert_eq!(queue.next_batch(&stop).unwrap().texts(), ["short"]);
        assert_eq!(queue.next_batch(&stop).unwrap().texts(), [long]);
        assert_eq!(queue.next_batch(&stop).unwrap().texts(), ["tiny"]);
    }

    /// Proves a full queue refuses new requests and a closed or stopped queue yields nothing.
    #[test]
    fn overload_and_stop() {
        let queue = BatchQueue::new(params(32, 10_000));
        let _held = queue
            .submit(
                vec!["x".into(); 6],
                ScoringOptions::default(),
                CallerIds::default(),
            )
            .unwrap();
        assert!(matches!(
            queue.submit(
                vec!["y".into(); 3],
                ScoringOptions::default(),
                CallerIds::default()
            ),
            Err(InferenceError::Overloaded)
        ));
        let stop = AtomicBool::new(true);
        assert!(queue.next_batch(&stop).is_none());
        queue.close();
        assert!(matches!(
            queue.submit(
                vec!["z".into()],
                ScoringOptions::default(),
                CallerIds::default()
            ),
            Err(InferenceError::EngineStopped)
        ));
    }

    /// Proves scores reach each request in its own order even when its texts were split
    /// across batches, and that texts of abandoned requests are dropped unscored.
    #[tokio::test]
    async fn results_reassemble_across_batches() {
        let queue = BatchQueue::new(params(2, 10_000));
        let request = queue
            .submit(
                vec!["a".into(), "b".into(), "c".into()],
                ScoringOptions::default(),
                CallerIds::default(),
            )
            .unwrap();
        let abandoned = queue
            .submit(
                vec!["gone".into()],
                ScoringOptions::default(),
                CallerIds::default(),
            )
            .unwrap();
        drop(abandoned);
        let stop = AtomicBool::new(false);
        let first = queue.next_batch(&stop).unwrap();
        assert_eq!(first.len(), 2);
        first.complete(vec![score(1.0), score(2.0)]);
        let second = queue.next_batch(&stop).unwrap();
        assert_eq!(second.texts(), ["c"]);
        second.complete(vec![score(3.0)]);
        let scores = request.await.unwrap().unwrap();
        assert_eq!(
            scores.iter().map(|s| s.score).collect::<Vec<_>>(),
            [1.0, 2.0, 3.0]
        );
        assert_eq!(queue.queued_texts(), 0);
    }

    /// Proves a batch that crashed its thread does not fail its batch-mates: its texts come
    /// back one batch each, the poisonous one alone fails its request, and the others are
    /// scored.
    #[tokio::test]
    async fn crashed_batch_is_requeued_one_text_per_batch() {
        let queue = BatchQueue::new(params(8, 4_096));
        let healthy_rx = queue
            .submit(
                vec!["fine".to_owned()],
                ScoringOptions::default(),
                CallerIds::default(),
            )
            .unwrap();
        let poison_rx = queue
            .submit(
                vec!["poison".to_owned()],
                ScoringOptions::default(),
                CallerIds::default(),
            )
            .unwrap();
        let stop = AtomicBool::new(false);
        let crashed = queue.next_batch(&stop).unwrap();
        assert_eq!(crashed.texts(), ["fine", "poison"]);
        crashed.isolate_crash(&queue, &InferenceError::Panicked("boom".to_owned()));
        let first = queue.next_batch(&stop).unwrap();
        assert_eq!(first.texts(), ["fine"]);
        first.complete(vec![score(0.9)]);
        let second = queue.next_batch(&stop).unwrap();
        assert_eq!(second.texts(), ["poison"]);
        second.isolate_crash(&queue, &InferenceError::Panicked("boom".to_owned()));
        assert_eq!(queue.queued_texts(), 0);
        assert_eq!(healthy_rx.await.unwrap().unwrap().len(), 1);
        assert!(matches!(
            poison_rx.await.unwrap(),
            Err(InferenceError::Panicked(_))
        ));
    }
}
