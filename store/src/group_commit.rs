//! Group commit: callers that write the same kind of row at about the same time share one
//! statement (and one commit) instead of paying a round trip each.
//!
//! A [`GroupCommit`] owns one task. Each caller hands it a request and awaits its own answer;
//! the task takes every request waiting (up to the batch bound), writes them with one call of
//! the [`BatchWrite`], and answers each caller. Nothing waits for a batch to fill: a request
//! that arrives alone is written at once, and requests arriving while a batch is being written
//! make up the next one, so batches grow with load and latency does not.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use bulwark_core::TraceContext;
use futures::FutureExt;
use tokio::sync::{Mutex, mpsc, oneshot};
use tracing::{Instrument, warn};

use crate::StoreError;
use crate::metrics::GROUP_COMMIT_BATCH_SIZE;

/// One statement that writes (or reads) many rows at once.
pub trait BatchWrite: Send + Sync + 'static {
    type Request: Send + Sync + 'static;
    type Response: Send + 'static;

    /// Names the statement in logs and metrics.
    const NAME: &'static str;

    /// Writes every request in one statement (or one transaction) and returns one response per
    /// request, in the requests' order.
    fn write(
        &self,
        requests: &[Self::Request],
    ) -> impl Future<Output = Result<Vec<Self::Response>, StoreError>> + Send;
}

/// The handle callers submit to; cheap to clone. The task ends when the last handle is dropped.
#[derive(Debug)]
pub struct GroupCommit<W: BatchWrite> {
    requests_tx: mpsc::Sender<Pending<W>>,
}

impl<W: BatchWrite> Clone for GroupCommit<W> {
    fn clone(&self) -> Self {
        GroupCommit {
            requests_tx: self.requests_tx.clone(),
        }
    }
}

type Reply<W> = oneshot::Sender<Result<<W as BatchWrite>::Response, StoreError>>;

struct Pending<W: BatchWrite> {
    request: W::Request,
    reply_tx: Reply<W>,
    /// The submitter's trace, which the batch's span links to (`None` when not traced).
    trace_opt: Option<TraceContext>,
}

/// How a [`GroupCommit`] batches.
#[derive(Debug, Clone, Copy)]
pub struct GroupCommitParams {
    /// The most requests one statement carries; as many more may queue before submitters wait.
    pub max_batch: usize,
    /// Statements in flight at once. With two, a request that arrives while a statement runs
    /// is written at once by the other writer instead of waiting for the first to finish.
    pub num_writers: usize,
}

impl<W: BatchWrite> GroupCommit<W> {
    /// Starts the writer tasks on the current tokio runtime.
    pub fn spawn(writer: W, params: GroupCommitParams) -> Self {
        let max_batch = params.max_batch.max(1);
        let (requests_tx, requests_rx) = mpsc::channel(max_batch);
        let writer = Arc::new(writer);
        let requests_rx = Arc::new(Mutex::new(requests_rx));
        for _ in 0..params.num_writers.max(1) {
            tokio::spawn(run_writer(writer.clone(), requests_rx.clone(), max_batch));
        }
        GroupCommit { requests_tx }
    }

    /// Queues `request` for the next statement and returns its response.
    pub async fn submit(&self, request: W::Request) -> Result<W::Response, StoreError> {
        let (reply_tx, reply_rx) = oneshot::channel();
        let stopped = || StoreError::Invariant(format!("group commit `{}` stopped", W::NAME));
        let pending = Pending {
            request,
            reply_tx,
            trace_opt: TraceContext::of_span(&tracing::Span::current()),
        };
        self.requests_tx
            .send(pending)
            .await
            .map_err(|_| stopped())?;
        reply_rx.await.map_err(|_| stopped())?
    }
}

/// One writer: takes the requests waiting (the writers take turns at the queue), writes them,
/// answers, and goes back for more.
async fn run_writer<W: BatchWrite>(
    writer: Arc<W>,
    requests_rx: Arc<Mutex<mpsc::Receiver<Pending<W>>>>,
    max_batch: usize,
) {
    let mut batch = Vec::with_capacity(max_batch);
    loop {
        let num_received = requests_rx
            .lock()
            .await
            .recv_many(&mut batch, max_batch)
            .await;
        if num_received == 0 {
            return;
        }
        metrics::histogram!(GROUP_COMMIT_BATCH_SIZE.name, "statement" => W::NAME)
            .record(batch.len() as f64);
        // One span per statement, linked to the spans of the callers it wrote for.
        let span = tracing::debug_span!(
            "store.batch",
            otel.name = W::NAME,
            otel.kind = "client",
            db.operation.name = W::NAME,
            db.operation.batch.size = batch.len(),
        );
        for trace in batch
            .iter()
            .filter_map(|pending| pending.trace_opt.as_ref())
        {
            trace.link_from(&span);
        }
        let (requests, replies): (Vec<_>, Vec<_>) = batch
            .drain(..)
            .map(|pending| (pending.request, pending.reply_tx))
            .unzip();
        write_batch(writer.as_ref(), requests, replies)
            .instrument(span)
            .await;
    }
}

/// Writes one batch and answers its callers.
async fn write_batch<W: BatchWrite>(writer: &W, requests: Vec<W::Request>, replies: Vec<Reply<W>>) {
    match write_guarded(writer, &requests).await {
        Ok(responses) => answer_each(replies, responses),
        // One bad row must not fail its neighbours: write them one by one. A retryable
        // error (the database is down) would fail them all alike, so it is shared instead.
        Err(error) if requests.len() > 1 && !error.is_retryable() => {
            warn!(%error, statement = W::NAME, size = requests.len(), "group commit failed, writing its rows one by one");
            for (request, reply_tx) in requests.iter().zip(replies) {
                let outcome = write_guarded(writer, std::slice::from_ref(request)).await;
                let _ = reply_tx.send(outcome.map(|mut responses| responses.remove(0)));
            }
        }
        Err(error) => {
            let shared = Arc::new(error);
            for reply_tx in replies {
                let _ = reply_tx.send(Err(StoreError::Shared(shared.clone())));
            }
        }
    }
}

/// Runs one write, turning a panic or a wrong number of responses into an error, so the task
/// outlives a bad batch.
async fn write_guarded<W: BatchWrite>(
    writer: &W,
    requests: &[W::Request],
) -> Result<Vec<W::Response>, StoreError> {
    let responses = AssertUnwindSafe(writer.write(requests))
        .catch_unwind()
        .await
        .map_err(|_| StoreError::Invariant(format!("group commit `{}` panicked", W::NAME)))??;
    if responses.len() != requests.len() {
        return Err(StoreError::Invariant(format!(
            "group commit `{}` answered {} of {} requests",
            W::NAME,
            responses.len(),
            requests.len()
        )));
    }
    Ok(responses)
}

fn answer_each<Response>(
    replies: Vec<oneshot::Sender<Result<Response, StoreError>>>,
    responses: Vec<Response>,
) {
    for (reply_tx, response) in replies.into_iter().zip(responses) {
        // A caller that gave up (its delivery was cancelled) is not waiting any more.
        let _ = reply_tx.send(Ok(response));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// Doubles numbers, records each batch's size, and fails on request.
    #[derive(Debug, Default)]
    struct Doubler {
        batch_sizes: std::sync::Mutex<Vec<usize>>,
        num_calls: AtomicUsize,
        num_in_flight: AtomicUsize,
        max_in_flight: AtomicUsize,
    }

    fn one_writer(max_batch: usize) -> GroupCommitParams {
        GroupCommitParams {
            max_batch,
            num_writers: 1,
        }
    }

    /// Submits 1 and, while the writer is busy with it, `numbers` together (so they queue up
    /// as one batch); checks 1's answer and returns the others'.
    async fn submit_behind_a_busy_writer(
        group: &GroupCommit<Arc<Doubler>>,
        doubler: &Doubler,
        numbers: &[i64],
    ) -> Vec<Result<i64, StoreError>> {
        let first = tokio::spawn({
            let group = group.clone();
            async move { group.submit(1).await }
        });
        doubler.wait_for_calls(1).await;
        let answers = futures::future::join_all(numbers.iter().map(|&number| {
            let group = group.clone();
            async move { group.submit(number).await }
        }))
        .await;
        assert_eq!(first.await.unwrap().unwrap(), 2);
        answers
    }

    impl Doubler {
        /// Yields until the writer has started `num_calls` batches.
        async fn wait_for_calls(&self, num_calls: usize) {
            while self.num_calls.load(Ordering::SeqCst) < num_calls {
                tokio::task::yield_now().await;
            }
        }
    }

    impl BatchWrite for Arc<Doubler> {
        type Request = i64;
        type Response = i64;
        const NAME: &'static str = "double";

        async fn write(&self, requests: &[i64]) -> Result<Vec<i64>, StoreError> {
            self.num_calls.fetch_add(1, Ordering::SeqCst);
            self.batch_sizes.lock().unwrap().push(requests.len());
            let num_in_flight = self.num_in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            self.max_in_flight
                .fetch_max(num_in_flight, Ordering::SeqCst);
            // Long enough for the other submitters to queue behind the first batch.
            tokio::task::yield_now().await;
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            self.num_in_flight.fetch_sub(1, Ordering::SeqCst);
            if requests.contains(&-1) {
                return Err(StoreError::Invariant("minus one".to_owned()));
            }
            if requests.contains(&-2) {
                panic!("minus two");
            }
            if requests.contains(&-3) {
                return Ok(Vec::new());
            }
            if requests.contains(&-4) {
                return Err(StoreError::Unavailable(sqlx::Error::PoolTimedOut));
            }
            Ok(requests.iter().map(|number| number * 2).collect())
        }
    }

    /// Proves concurrent submitters share statements, each gets its own answer, and no batch
    /// exceeds the bound.
    #[tokio::test]
    async fn concurrent_requests_share_statements_and_get_their_own_answers() {
        let doubler = Arc::new(Doubler::default());
        let group = GroupCommit::spawn(doubler.clone(), one_writer(16));
        let answers = futures::future::join_all((0..100).map(|number| {
            let group = group.clone();
            async move { group.submit(number).await.unwrap() }
        }))
        .await;
        assert_eq!(
            answers,
            (0..100).map(|number| number * 2).collect::<Vec<_>>()
        );
        let batch_sizes = doubler.batch_sizes.lock().unwrap().clone();
        assert_eq!(batch_sizes.iter().sum::<usize>(), 100);
        assert!(
            batch_sizes.iter().all(|&size| size <= 16),
            "{batch_sizes:?}"
        );
        assert!(batch_sizes.len() < 20, "batched: {batch_sizes:?}");
        assert_eq!(doubler.max_in_flight.load(Ordering::SeqCst), 1);
    }

    /// Proves that with two writers a request arriving while a statement runs is written at
    /// once, beside it, rather than after it.
    #[tokio::test]
    async fn a_second_writer_takes_what_arrives_during_a_statement() {
        let doubler = Arc::new(Doubler::default());
        let params = GroupCommitParams {
            max_batch: 8,
            num_writers: 2,
        };
        let group = GroupCommit::spawn(doubler.clone(), params);
        let first = tokio::spawn({
            let group = group.clone();
            async move { group.submit(1).await }
        });
        doubler.wait_for_calls(1).await;
        assert_eq!(group.submit(2).await.unwrap(), 4);
        assert_eq!(first.await.unwrap().unwrap(), 2);
        assert_eq!(doubler.max_in_flight.load(Ordering::SeqCst), 2);
        assert_eq!(*doubler.batch_sizes.lock().unwrap(), vec![1, 1]);
    }

    /// Proves a lone request is written at once, without waiting for company.
    #[tokio::test(start_paused = true)]
    async fn a_lone_request_does_not_wait_for_a_batch_to_fill() {
        let doubler = Arc::new(Doubler::default());
        let group = GroupCommit::spawn(doubler.clone(), one_writer(64));
        let started = tokio::time::Instant::now();
        assert_eq!(group.submit(21).await.unwrap(), 42);
        // The writer's own 5 ms is the only time that passed.
        assert!(started.elapsed() < std::time::Duration::from_millis(6));
        assert_eq!(*doubler.batch_sizes.lock().unwrap(), vec![1]);
    }

    /// Proves a batch that fails for good is written again row by row, so only the bad row's
    /// caller sees the error; a panic and a short answer are errors too, and the task survives.
    #[tokio::test]
    async fn a_bad_row_fails_alone_and_the_writer_survives_panics() {
        let doubler = Arc::new(Doubler::default());
        let group = GroupCommit::spawn(doubler.clone(), one_writer(8));
        let answers = submit_behind_a_busy_writer(&group, &doubler, &[3, -1, 5]).await;
        assert_eq!(answers[0].as_ref().unwrap(), &6);
        assert!(matches!(answers[1], Err(StoreError::Invariant(_))));
        assert_eq!(answers[2].as_ref().unwrap(), &10);
        let batch_sizes = doubler.batch_sizes.lock().unwrap().clone();
        assert_eq!(
            batch_sizes,
            vec![1, 3, 1, 1, 1],
            "one batch, then its rows alone"
        );

        let panicked = group.submit(-2).await.unwrap_err();
        assert!(panicked.to_string().contains("panicked"), "{panicked}");
        let short = group.submit(-3).await.unwrap_err();
        assert!(short.to_string().contains("answered 0 of 1"), "{short}");
        assert_eq!(group.submit(7).await.unwrap(), 14, "the writer still runs");
    }

    /// Proves an outage error is shared by every caller of the batch, still retryable, without
    /// writing the rows one by one (they would all fail alike).
    #[tokio::test]
    async fn an_outage_fails_the_whole_batch_as_retryable() {
        let doubler = Arc::new(Doubler::default());
        let group = GroupCommit::spawn(doubler.clone(), one_writer(8));
        let answers = submit_behind_a_busy_writer(&group, &doubler, &[-4, 5]).await;
        for answer in answers {
            let error = answer.unwrap_err();
            assert!(error.is_retryable(), "{error}");
        }
        assert_eq!(*doubler.batch_sizes.lock().unwrap(), vec![1, 2]);
    }
}
