//! Sentiment models for Bulwark, independent of actors, transports and HTTP.
//!
//! A model is anything that implements the synchronous [`SentimentModel`] trait. Models are
//! CPU-bound, so callers never run them on the async runtime: [`InferenceThread`] owns a model
//! on a dedicated OS thread and is fed through a bounded command channel.
//!
//! # Layout
//! - `sentiment`: the [`SentimentModel`] trait, its result types, input limits and errors.
//! - `lexicon`: VADER, the lexicon-and-rules engine that needs no model files.
//! - `thread`: [`InferenceThread`], the dedicated thread a model runs on.

mod lexicon;
mod sentiment;
mod thread;

pub use lexicon::VaderModel;
pub use sentiment::{
    InferenceError, MAX_TEXT_CHARS, MAX_TEXTS_PER_REQUEST, SentimentLabel, SentimentModel,
    SentimentScore, TextsError, validate_texts,
};
pub use thread::{InferenceThread, InferenceThreadParams};
