use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};

use tokio::sync::oneshot;
use tracing::{error, warn};

use crate::{InferenceError, SentimentModel, SentimentScore};

type Reply = oneshot::Sender<Result<Vec<SentimentScore>, InferenceError>>;

/// One batch for the inference thread, with the caller's span so its logs stay attributed.
struct Command {
    texts: Vec<String>,
    reply_tx: Reply,
    span: tracing::Span,
}

/// What an [`InferenceThread`] is started with.
#[derive(Debug, Clone)]
pub struct InferenceThreadParams {
    /// OS thread name, visible in `top -H` and panics.
    pub thread_name: String,
    /// Batches that may wait for the thread before callers get [`InferenceError::Overloaded`].
    pub queue_capacity: usize,
}

/// A model running on its own OS thread, so CPU-bound inference never blocks the async runtime.
///
/// A panic inside the model is caught: the batch being scored gets
/// [`InferenceError::Panicked`] and the thread stops, because the model may be left broken;
/// every later call gets [`InferenceError::EngineStopped`] so its owner knows to restart it.
#[derive(Debug)]
pub struct InferenceThread {
    commands_tx: SyncSender<Command>,
    engine: String,
}

impl InferenceThread {
    /// Starts the thread; the model moves onto it.
    pub fn spawn(
        model: Box<dyn SentimentModel>,
        params: &InferenceThreadParams,
    ) -> std::io::Result<InferenceThread> {
        let (commands_tx, commands_rx) = sync_channel(params.queue_capacity.max(1));
        let engine = model.engine().to_owned();
        std::thread::Builder::new()
            .name(params.thread_name.clone())
            .spawn(move || serve(model, &commands_rx))?;
        Ok(InferenceThread { commands_tx, engine })
    }

    /// Returns the engine name of the model on this thread.
    pub fn engine(&self) -> &str {
        &self.engine
    }

    /// Scores `texts` on the inference thread.
    pub async fn predict(&self, texts: Vec<String>) -> Result<Vec<SentimentScore>, InferenceError> {
        let (reply_tx, reply_rx) = oneshot::channel();
        let command = Command { texts, reply_tx, span: tracing::Span::current() };
        match self.commands_tx.try_send(command) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(InferenceError::Overloaded),
            Err(TrySendError::Disconnected(_)) => return Err(InferenceError::EngineStopped),
        }
        reply_rx.await.map_err(|_| InferenceError::EngineStopped)?
    }
}

fn serve(mut model: Box<dyn SentimentModel>, commands_rx: &Receiver<Command>) {
    while let Ok(command) = commands_rx.recv() {
        let _entered = command.span.enter();
        let outcome = catch_unwind(AssertUnwindSafe(|| model.predict(&command.texts)));
        match outcome {
            Ok(result) => {
                if command.reply_tx.send(result).is_err() {
                    warn!("inference caller went away before its result was ready");
                }
            }
            Err(panic) => {
                let message = panic_message(panic.as_ref());
                error!(engine = model.engine(), %message, "model panicked, stopping inference thread");
                let _ = command.reply_tx.send(Err(InferenceError::Panicked(message)));
                return;
            }
        }
    }
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
    use super::*;
    use crate::SentimentLabel;

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

    fn params() -> InferenceThreadParams {
        InferenceThreadParams { thread_name: "test-inference".to_owned(), queue_capacity: 4 }
    }

    /// Proves results come back in input order from the dedicated thread.
    #[tokio::test]
    async fn predicts_on_its_thread() {
        let thread = InferenceThread::spawn(Box::new(LengthModel), &params()).unwrap();
        let scores = thread.predict(vec!["a".into(), "abc".into()]).await.unwrap();
        assert_eq!(scores.iter().map(|score| score.score).collect::<Vec<_>>(), vec![1.0, 3.0]);
        assert_eq!(thread.engine(), "length");
    }

    /// Proves a panicking model fails only its batch, then reports itself stopped.
    #[tokio::test]
    async fn panic_fails_the_batch_and_stops_the_thread() {
        let thread = InferenceThread::spawn(Box::new(LengthModel), &params()).unwrap();
        let error = thread.predict(vec!["boom".into()]).await.unwrap_err();
        assert!(matches!(&error, InferenceError::Panicked(message) if message.contains("boom input")));
        assert!(!error.is_retryable());
        let after = thread.predict(vec!["fine".into()]).await.unwrap_err();
        assert!(matches!(after, InferenceError::EngineStopped));
    }
}
