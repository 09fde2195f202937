//! Sentiment models for Bulwark, independent of actors, transports and HTTP.
//!
//! A model is anything that implements the synchronous [`SentimentModel`] trait. Models are
//! CPU-bound, so callers never run them on the async runtime: [`InferenceThread`] owns a model
//! on a dedicated OS thread and takes batches from a bounded [`BatchQueue`].
//!
//! # Layout
//! - `sentiment`: the [`SentimentModel`] trait, its result types, input limits and errors.
//! - `lexicon`: VADER, the lexicon-and-rules engine that needs no model files.
//! - `batching`: [`BatchQueue`], dynamic batching of texts from concurrent requests.
//! - `thread`: [`InferenceThread`], the dedicated thread a model runs on, fed by the queue.
//! - `liveness`: [`Liveness`], the busy marker supervisors use to detect hangs.

mod batching;
mod lexicon;
mod liveness;
mod sentiment;
mod thread;

pub use batching::{Batch, BatchQueue, BatchingParams};
pub use lexicon::{PolarityScores, VaderModel};
pub use liveness::{BusyGuard, Liveness};
pub use sentiment::{
    InferenceError, MAX_TEXT_CHARS, MAX_TEXTS_PER_REQUEST, SentimentLabel, SentimentModel,
    SentimentScore, TextsError, validate_texts,
};
pub use thread::{InferenceThread, InferenceThreadParams, ThreadExit};
