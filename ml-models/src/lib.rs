//! Sentiment models for Bulwark, independent of actors, transports and HTTP.
//!
//! A model is anything that implements the synchronous [`SentimentModel`] trait. Models are
//! CPU-bound, so callers never run them on the async runtime: [`InferenceThread`] owns a model
//! on a dedicated OS thread and takes batches from a bounded [`BatchQueue`].
//!
//! # Layout
//! - `sentiment`: the [`SentimentModel`] trait, its result types, input limits and errors.
//! - `lexicon`: VADER, the lexicon-and-rules engine that needs no model files.
//! - `onnx`: [`OnnxModel`], the MiniLM SST-2 classifier on ONNX Runtime (loaded at run time).
//! - `model_load`: [`ModelLoadError`], checksum verification of model files, and
//!   [`locate_model_dir`] / [`locate_runtime`], where the model and the runtime are looked up.
//! - `eval`: [`read_labeled`] and [`evaluate`], accuracy and throughput on labeled data.
//! - `strategy`: [`EngineSet`] and [`Strategy`]: primary, ensemble and consensus scoring.
//! - `batching`: [`BatchQueue`], dynamic batching of texts from concurrent requests.
//! - `thread`: [`InferenceThread`], the dedicated thread a model runs on, fed by the queue.
//! - `metrics`: the inference batches' metrics ([`metrics::METRICS`]).

mod batching;
mod eval;
mod lexicon;
pub mod metrics;
mod model_load;
mod onnx;
mod sentiment;
mod strategy;
mod thread;

pub use batching::{Batch, BatchQueue, BatchingParams, CallerIds};
pub use eval::{ClassReport, EvalError, EvalReport, PerClassReport, evaluate, read_labeled};
pub use lexicon::{PolarityScores, VaderModel};
pub use model_load::{
    MODEL_DIR_ENV, ModelLoadError, RUNTIME_LIBRARY_NAME, RUNTIME_PATH_ENV, SENTIMENT_MODEL_NAME,
    locate_model_dir, locate_runtime,
};
pub use onnx::{MAX_SEQUENCE_TOKENS, ONNX_ENGINE, OnnxModel, OnnxModelParams};
pub use sentiment::{
    InferenceError, MAX_TEXT_CHARS, MAX_TEXTS_PER_REQUEST, SentimentLabel, SentimentModel,
    SentimentScore, TextsError, validate_texts,
};
pub use strategy::{EngineSet, ScoringOptions, Strategy, StrategyModel};
pub use thread::{ChaosKnobs, InferenceThread, InferenceThreadParams, ThreadExit};
